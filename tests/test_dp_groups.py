"""Data-parallel groups (dp_group, llmsim/dp.py): config checks, the MoE collectives by hand, CUDA-graph
padding, vLLM's DP load balancer, and the lockstep of a two-rank group (docs/moe.md, "Data parallelism")."""
import copy
import json
from pathlib import Path

import pytest

from llmsim import simulate
from llmsim.backends.fabric import dp_collective_ns, dp_link, instance_links
from llmsim.backends.network import Link, reduction_ns, ring_reducescatter_ns
from llmsim.config.cluster import cluster_from_dict
from llmsim.config.engine import EngineArgs
from llmsim.dp import DPBalancer, PUBLISH_NS, cuda_graph_max_tokens, dp_tokens
from llmsim.errors import InputError
from llmsim.graph.iteration import OpKind
from llmsim.perf.routing import ExpertRouter, Routing
from llmsim.request import Request

ROOT = Path(__file__).resolve().parents[1]
DP2 = ROOT / "configs/cluster/rtxpro6000_qwen3_30b_a3b_dp2_ep2.json"


def _raw():
    return json.loads(DP2.read_text())


def _error(raw) -> str:
    with pytest.raises(InputError) as e:
        cluster_from_dict(raw, "c.json")
    msg = str(e.value)
    assert "\n" not in msg
    return msg


def test_the_reference_config_is_accepted():
    c = cluster_from_dict(_raw(), "c.json")
    assert [(i.dp_group, i.dp_rank, i.dp_size, i.ep_size) for i in c.instances] == [("A", 0, 2, 2), ("A", 1, 2, 2)]


@pytest.mark.parametrize("change, where", [
    ({"tp_size": 2, "num_npus": 2}, "nodes[0].instances[1].tp_size: dp_group 'A' members disagree"),
    ({"model_name": "Qwen/Qwen3-32B"}, "nodes[0].instances[1].model_name: dp_group 'A' members disagree"),
    ({"pd_type": "decode"}, "nodes[0].instances[1].pd_type: dp_group 'A' members disagree"),
])
def test_inconsistent_groups_name_the_field(change, where):
    raw = _raw()
    raw["nodes"][0]["instances"][1].update(change)
    assert _error(raw).startswith(f"c.json: {where}")


def test_ep_size_must_span_tp_times_dp():
    raw = _raw()
    for inst in raw["nodes"][0]["instances"]:
        inst["ep_size"] = 4
    assert _error(raw) == ("c.json: ep_size: dp_group 'A': ep_size 4 must be 1 (no expert parallelism) or tp_size x "
                           "the group's size = 1 x 2 = 2 (vLLM's expert parallelism spans TP x DP)")


def _with(raw, extra):
    """raw's instances plus `extra` (a list of instance dicts) on its one node."""
    raw = copy.deepcopy(raw)
    raw["nodes"][0]["instances"] += extra
    raw["nodes"][0]["num_instances"] = len(raw["nodes"][0]["instances"])
    return raw


def _ends(res, instances):
    return {r.id: r.end_ns for i in instances for r in res.finished[i]}


def test_two_groups_step_apart_behind_the_router():
    # groups A (instances 0, 1) and B (2, 3): the run's router picks a group (LOAD: A, B, A, B for
    # four requests at once), the group's DP balancer a rank (its first request to rank 0, the
    # second to rank 1). Each group then steps as it would alone: the same completion times as a
    # run of that group alone with its requests (up to the one host-memory queue the groups share:
    # a few ns).
    raw = _raw()
    b = [dict(i, dp_group="B") for i in copy.deepcopy(raw["nodes"][0]["instances"])]
    reqs = lambda ids: [Request(id=i, arrival_ns=0, prompt_len=40 + 16 * i, output_len=4 + i) for i in ids]
    res = simulate.run(simulate.prepare(cluster_from_dict(_with(raw, b), "c.json"), EngineArgs(), reqs(range(4))))
    assert [d["group"] for d in res.dp] == ["A", "B"] and all(d["lockstep"] for d in res.dp)
    assert [sorted(r.id for r in f) for f in res.finished] == [[0], [2], [1], [3]]
    alone_a = simulate.run(simulate.prepare(str(DP2), EngineArgs(), reqs([0, 2])))
    alone_b = simulate.run(simulate.prepare(str(DP2), EngineArgs(), reqs([1, 3])))
    for got, ref in ((_ends(res, [0, 1]), _ends(alone_a, [0, 1])), (_ends(res, [2, 3]), _ends(alone_b, [0, 1]))):
        assert got.keys() == ref.keys() and all(abs(got[k] - ref[k]) <= 100 for k in got)
    assert res.dp[0]["steps"] == alone_a.dp[0]["steps"] and res.dp[1]["steps"] == alone_b.dp[0]["steps"]


def test_a_plain_instance_beside_a_group():
    # instance 2 (no dp_group, one GPU holding every expert) is an endpoint of its own: it serves
    # its requests as it would alone, with per-stage accounting like the group's ranks
    raw = _raw()
    plain = dict(copy.deepcopy(raw["nodes"][0]["instances"][0]), dp_group=None, ep_size=1)
    reqs = lambda ids: [Request(id=i, arrival_ns=0, prompt_len=40 + 16 * i, output_len=4 + i) for i in ids]
    res = simulate.run(simulate.prepare(cluster_from_dict(_with(raw, [plain]), "c.json"), EngineArgs(),
                                        reqs(range(4))))
    mine = sorted(r.id for r in res.finished[2])
    assert mine and len(res.dp) == 1 and res.dp[0]["ranks"] == 2
    lone = copy.deepcopy(raw)
    lone["nodes"][0]["instances"] = [plain]
    lone["nodes"][0]["num_instances"] = 1
    alone = simulate.run(simulate.prepare(cluster_from_dict(lone, "l.json"), EngineArgs(), reqs(mine)))
    got, ref = _ends(res, [2]), _ends(alone, [0])
    assert got.keys() == ref.keys() and all(abs(got[k] - ref[k]) <= 100 for k in got)
    assert {r["instance"] for r in res.stages if r["window"] == "run"} == {0, 1, 2}


def test_reference_sync_takes_one_group_alone():
    raw = _raw()
    b = [dict(i, dp_group="B") for i in copy.deepcopy(raw["nodes"][0]["instances"])]
    sim = simulate.prepare(cluster_from_dict(_with(raw, b), "c.json"), EngineArgs(dp_sync="reference"), [])
    with pytest.raises(InputError, match=r"dp_group: --dp-sync reference models the reference's run: one MoE group "
                                         r"and nothing beside it; use --dp-sync vllm"):
        simulate.run(sim)


def test_dense_group_ranks_are_independent_engines():
    # vLLM runs a dense model's DP ranks as independent engine cores: no lockstep, no dummy batches;
    # only the routing is the DP load balancer's (four requests at once: 0, 1, 0, 1 by its local
    # increments). So the group serves exactly as the same two instances without dp_group under
    # round-robin routing (which also sends 0, 1, 0, 1; the host-memory queue is shared either way).
    raw = _raw()
    for inst in raw["nodes"][0]["instances"]:
        inst.update(model_name="meta-llama/Llama-3.1-8B", ep_size=1)
    reqs = lambda: [Request(id=i, arrival_ns=0, prompt_len=64 + 32 * i, output_len=5 + i) for i in range(4)]
    res = simulate.run(simulate.prepare(cluster_from_dict(copy.deepcopy(raw), "c.json"), EngineArgs(), reqs()))
    assert res.dp == [{"group": "A", "ranks": 2, "lockstep": False, "steps": 0, "dummy_batches": 0, "padded_tokens": 0}]
    for inst in raw["nodes"][0]["instances"]:
        inst["dp_group"] = None
    plain = simulate.run(simulate.prepare(cluster_from_dict(raw, "p.json"), EngineArgs(), reqs()), routing_policy="RR")
    assert plain.dp is None
    for rank, ids in ((0, [0, 2]), (1, [1, 3])):
        assert sorted(r.id for r in res.finished[rank]) == ids
        assert {r.id: r.end_ns for r in res.finished[rank]} == {r.id: r.end_ns for r in plain.finished[rank]}


def test_moe_group_without_expert_parallelism_slices_every_expert_over_tp_x_dp():
    # ep_size 1: vLLM without enable_expert_parallel flattens the experts' TP group over tp x dp, so
    # each GPU holds half of every expert: the same bytes as half the experts whole (ep 2)
    raw = _raw()
    for inst in raw["nodes"][0]["instances"]:
        inst["ep_size"] = 1
    sim = simulate.prepare(cluster_from_dict(raw, "c.json"), EngineArgs(), [])
    ep2 = simulate.prepare(str(DP2), EngineArgs(), [])
    a, b = sim.instances[0], ep2.instances[0]
    assert a.memory.stages[0].weight_bytes == b.memory.stages[0].weight_bytes
    # the expert block on the gathered tokens: one rank holding a 1/2 slice of every expert (the
    # roofline; moe.csv times whole experts), all 128 experts routed over one rank
    assert "each GPU holds a 1/2 slice of every expert" in a.profile_note and "roofline" in a.profile_note
    assert a.timer.moe_timer.expert_inter == 768 // 2  # moe_intermediate_size over tp x dp
    assert a.timer.moe_tokens_ns(8, ("x",)) == a.timer.moe_timer.moe_ns(8, ExpertRouter(128, 8, 1, Routing("expected")).route(8))
    res = simulate.run(simulate.prepare(cluster_from_dict(raw, "c.json"), EngineArgs(),
                                        [Request(id=0, arrival_ns=0, prompt_len=4, output_len=2)]))
    assert res.dp[0]["lockstep"] and res.dp[0]["dummy_batches"] == 32 + 30  # as the EP group's toy below


def test_reduce_scatter_and_moe_collectives_by_hand():
    link = Link(16, 20_000)  # 16 GB/s = 17.179869184 B/ns (2^30 B per GB), 20 us
    # reduce-scatter of 8 tokens x 2048 x 2 B over 2 ranks: 1 hand-off of 16,384 B and 1 reduction
    m = 8 * 2048 * 2 // 2
    assert int(20_000 + m / 17.179869184) == 20_953
    assert reduction_ns(m, 1597) == 3 * int(m / 1597e9 * 1e9) == 30
    assert ring_reducescatter_ns(link, 8 * 2048 * 2, 2, local_mem_bw_gbps=1597) == 10 + (20_953 + 10) + 30
    # all-gather of each rank's 4 tokens x (hidden 2048 + 128 router logits) x 2 B = 17,408 B: one hand-off
    assert int(20_000 + 17_408 / 17.179869184) == 21_013
    gather = 10 + (21_013 + 10)
    c = cluster_from_dict(_raw(), "c.json")
    assert dp_link(c, c.instances) == Link(16.0, 20_000.0)  # the flat network's instance dimension
    links = instance_links(c, c.instances[1])
    assert links.dp == (Link(16.0, 20_000.0), 2)
    assert dp_collective_ns(links, OpKind.DP_ALLGATHER, 4 * (2048 + 128) * 2, 1597) \
        + dp_collective_ns(links, OpKind.DP_REDUCESCATTER, 8 * 2048 * 2, 1597) \
        == gather + 10 + (20_953 + 10) + 30 == 42_036


class _B:
    def __init__(self, n):
        self.total_len = n


def test_cuda_graph_padding():
    cap = cuda_graph_max_tokens(128, 2048)
    assert cap == 256  # min(2 x max_num_seqs, 512, max_num_batched_tokens)
    assert dp_tokens([_B(4), None], cap) == [4, 4]  # the dummy is padded to the busy rank's 4
    assert dp_tokens([None, None], cap) == [1, 1]  # two dummies: 1 token each
    assert dp_tokens([_B(300), _B(2)], cap) == [300, 2]  # beyond the CUDA graphs: no padding


class _S:
    def __init__(self, waiting, running):
        self.waiting, self.running = [0] * waiting, [0] * running


def test_load_balancer_stale_counts_and_local_increments():
    scheds = [_S(0, 0), _S(0, 0)]
    lb = DPBalancer(scheds)
    # no counts published yet: the local increments alone spread a burst (ties to the lower rank)
    assert [lb.pick(0) for _ in range(3)] == [0, 1, 0]
    assert lb.counts == [[2, 0], [1, 0]]
    # the engines report (rank 0: 6 running; rank 1: 1 waiting, 1 running); published at the next 100 ms tick
    scheds[0].running, scheds[1].waiting, scheds[1].running = [0] * 6, [0], [0]
    lb.observe(PUBLISH_NS // 2)
    assert lb.pick(PUBLISH_NS - 1) == 1  # still the old counts: 2 x 4 against 1 x 4
    assert lb.pick(PUBLISH_NS) == 1 and lb.counts == [[0, 6], [2, 1]]  # 6 against 1 x 4 + 1; then +1 waiting
    assert lb.pick(PUBLISH_NS) == 0  # 6 against 2 x 4 + 1


def _sim(requests):
    sim = simulate.prepare(str(DP2), EngineArgs(), requests)
    return sim, simulate.run(sim, record_iterations=True)


def test_two_rank_lockstep_by_hand():
    # one request: rank 0 serves it, rank 1 runs 1-token dummy batches padded to rank 0's tokens
    sim, res = _sim([Request(id=0, arrival_ns=0, prompt_len=4, output_len=2)])
    assert res.dp[0]["ranks"] == 2 and res.dp[0]["steps"] >= 2 and res.dp[0]["dummy_batches"] >= 2
    steps = sorted(res.iteration_log, key=lambda r: r.start_ns)
    assert {r.instance for r in steps} == {0}  # only rank 0 has batches
    first = steps[0]
    assert first.start_ns == 1 and first.prefill_tokens == 4
    # the step by hand: each rank's layers on 4 tokens, every MoE layer the 8 gathered tokens' expert block
    # plus the all-gather and reduce-scatter; the group takes the slowest rank (the real one)
    a, b = sim.instances
    backend_costs = simulate.make_backend(sim)
    _, _, _, _, ca = backend_costs._costs(a)
    _, _, _, _, cb = backend_costs._costs(b)
    moe = a.timer.moe_tokens_ns(8, ("x",)) + 42_036  # the collectives by hand, above
    busy_a = ca.dp_times(_first_batch(sim), 4, moe)[0]
    busy_b = cb.dp_times(None, 4, moe)[0]
    assert busy_b[1:] == (0, 0)  # the dummy loads and stores nothing
    step_a = busy_a[0] + busy_a[1] + busy_a[2]
    assert step_a > busy_b[0]
    assert first.end_ns - first.start_ns == step_a
    # after the request, dummy steps run to the 32-step wave boundary, then the group pauses
    assert res.dp[0]["steps"] == 32 and res.dp[0]["dummy_batches"] == 32 + 30


def _first_batch(sim):
    """The first batch rank 0 forms for the lone request (a fresh instance from the same config)."""
    fresh = simulate.prepare(str(DP2), EngineArgs(), [Request(id=0, arrival_ns=0, prompt_len=4, output_len=2)])
    sched = fresh.instances[0].scheduler
    sched.add_request(fresh.requests[0])
    return sched.schedule(1)


def test_requests_spread_over_ranks():
    reqs = [Request(id=i, arrival_ns=i, prompt_len=16, output_len=4) for i in range(4)]
    _, res = _sim(reqs)
    assert sorted(r.id for r in res.finished[0]) == [0, 2] and sorted(r.id for r in res.finished[1]) == [1, 3]
    assert res.dp[0]["dummy_batches"] >= 30  # the wave's tail after the last request


def test_a_groups_graphs_carry_its_collectives_and_time_as_its_shapes():
    # the graphs of each step (what --dump-traces writes and the ASTRA-Sim backends run) against the
    # fast path's per-shape times, on the one-request toy above
    reqs = lambda: [Request(id=0, arrival_ns=0, prompt_len=4, output_len=2)]
    graphs = []
    sim = simulate.prepare(str(DP2), EngineArgs(), reqs())
    res = simulate.run(sim, on_graph=graphs.append, record_iterations=True)
    plain = simulate.run(simulate.prepare(str(DP2), EngineArgs(), reqs()), record_iterations=True)
    assert res.iteration_log == plain.iteration_log and res.end_ns == plain.end_ns  # dumping changes nothing
    assert len(graphs) == 2 * res.dp[0]["steps"]  # one graph per rank per step
    g0, g1 = graphs[0], graphs[1]
    assert (g0.dp_step, g1.dp_step, g0.instance, g1.instance, g1.batch_id) == (0, 0, 0, 1, -1)
    kinds = lambda g: [(o.kind, o.size_bytes) for o in g.stages[0].block_ops if o.kind is not OpKind.COMPUTE]
    # per MoE layer: the all-gather of 4 tokens x (2048 + 128) x 2 B, the reduce-scatter of 8 x 2048 x 2 B
    assert kinds(g0) == kinds(g1) == [(OpKind.DP_ALLGATHER, 17_408), (OpKind.DP_REDUCESCATTER, 32_768)]
    names = lambda g: {o.name for o in g.stages[0].ops()}
    assert {"attention", "lm_head", "sampler", "input", "output"} <= names(g0)
    assert not {"attention", "lm_head", "sampler", "input", "output"} & names(g1)  # the dummy: none of them
    backend = simulate.make_backend(sim)
    a, b = sim.instances
    moe = a.timer.moe_tokens_ns(8, ("x",)) + 42_036  # the collectives by hand (above)
    assert backend.stage_times(g0) == backend._costs(a)[4].dp_times(_first_batch(sim), 4, moe)
    assert backend.stage_times(g1) == backend._costs(b)[4].dp_times(None, 4, moe)


def test_reference_sync_writes_no_traces_in_one_line():
    sim = simulate.prepare(str(DP2), EngineArgs(dp_sync="reference"), [Request(id=0, arrival_ns=0, prompt_len=4,
                                                                                output_len=2)])
    with pytest.raises(InputError, match=r"dp_group: --dp-sync reference writes no traces") as e:
        simulate.run(sim, on_graph=lambda g: None)
    assert "\n" not in str(e.value)


def test_seeded_random_routing_is_reproducible_in_a_group():
    reqs = lambda: [Request(id=i, arrival_ns=i * 1000, prompt_len=32, output_len=8) for i in range(6)]
    ends = []
    for _ in range(2):
        sim = simulate.prepare(str(DP2), EngineArgs(moe_routing="uniform", moe_seed=3), reqs())
        res = simulate.run(sim)
        ends.append((res.end_ns, [(r.id, r.end_ns) for f in res.finished for r in f]))
    assert ends[0] == ends[1]


def _run_rows(res):
    return {r["instance"]: r for r in res.stages if r["window"] == "run"}


def test_accounting_of_a_group_partitions_each_ranks_time():
    # the one-request toy: rank 0 runs the request's two steps, then dummies to the wave's 32nd step;
    # rank 1 runs 32 dummies. A dummy step is `dp_dummy` on its rank, and a rank done before the
    # group's slowest waits as `dp_peer`; before the first step and after the wave: `starved`.
    sim, res = _sim([Request(id=0, arrival_ns=0, prompt_len=4, output_len=2)])
    rows = _run_rows(res)
    steps = sorted(res.iteration_log, key=lambda r: r.start_ns)  # rank 0's two real steps
    wave_start, wave_end = steps[0].start_ns, res.end_ns
    for r in rows.values():
        idle = sum(v for k, v in r.items() if k.startswith("idle_"))
        assert r["busy_compute_ns"] + r["busy_comm_ns"] + idle == r["wall_ns"] == res.end_ns
    own = sum(s.end_ns - s.start_ns for s in steps)
    assert rows[0]["busy_compute_ns"] + rows[0]["busy_comm_ns"] == own
    assert rows[0]["idle_dp_peer_ns"] == 0  # the busy rank is the slowest (the dummy has no attention, lm_head)
    assert rows[0]["idle_dp_dummy_ns"] == wave_end - steps[-1].end_ns
    assert rows[1]["idle_dp_dummy_ns"] == wave_end - wave_start and rows[1]["busy_compute_ns"] == 0
    assert rows[0]["idle_starved_ns"] == rows[1]["idle_starved_ns"] == wave_start
    assert 0 < rows[0]["busy_comm_ns"] < rows[0]["busy_compute_ns"]  # the collectives are communication


def test_accounting_charges_the_faster_rank_its_wait():
    # two requests at once, one per rank, of different prompt lengths: the shorter rank's steps end
    # first and it waits for the longer one each step (dp_peer = the group's end - its own)
    sim, res = _sim([Request(id=0, arrival_ns=0, prompt_len=600, output_len=3),
                     Request(id=1, arrival_ns=0, prompt_len=8, output_len=3)])
    rows = _run_rows(res)
    by_step = {}
    for rec in res.iteration_log:
        by_step.setdefault(rec.start_ns, {})[rec.instance] = rec.end_ns
    wait = {0: 0, 1: 0}
    for ends in by_step.values():
        if len(ends) == 2:
            for i, e in ends.items():
                wait[i] += max(ends.values()) - e
    assert wait[1] > 0 and rows[1]["idle_dp_peer_ns"] == wait[1] and rows[0]["idle_dp_peer_ns"] == wait[0]


def test_disaggregated_pools_of_dp_groups():
    # a prefill group P (instances 0, 1) and a decode group D (2, 3): one request is prefilled by P's
    # rank 0 (rank 1 runs dummies), its KV moves to D's rank 0, which decodes it beside D's dummies.
    # The decode side's first step starts when the KV has arrived: the prefill step's end plus
    # latency + prompt x one rank's KV shard / bandwidth on the instance link (16 GB/s, 20 us).
    raw = _raw()
    for inst in raw["nodes"][0]["instances"]:
        inst.update(dp_group="P", pd_type="prefill")
    raw = _with(raw, [dict(i, dp_group="D", pd_type="decode") for i in copy.deepcopy(raw["nodes"][0]["instances"])])
    sim = simulate.prepare(cluster_from_dict(raw, "pd.json"), EngineArgs(), [Request(id=0, arrival_ns=0, prompt_len=64,
                                                                                     output_len=3)])
    res = simulate.run(sim, record_iterations=True)
    (req,) = res.finished[2]
    assert req.prefill_instance == 0 and [len(f) for f in res.finished] == [0, 0, 1, 0]
    assert [(d["group"], d["lockstep"]) for d in res.dp] == [("P", True), ("D", True)]
    assert res.dp[0]["dummy_batches"] >= 1 and res.dp[1]["dummy_batches"] >= 3
    log = sorted(res.iteration_log, key=lambda r: r.start_ns)
    prefill = [r for r in log if r.instance == 0]
    decode = [r for r in log if r.instance == 2]
    assert len(prefill) == 1 and prefill[0].prefill_tokens == 64
    shard = 64 * 2 * 4 * 128 * 48 * 2  # K and V, 4 KV heads of 128, 48 layers, bf16: one rank holds all of it
    transfer = int(20_000 + shard / (16 * 2**30 / 1e9))
    group_end = max(r.end_ns for r in log if r.start_ns == prefill[0].start_ns)  # the P group's step
    assert decode[0].start_ns == group_end + transfer
    assert res.disagg["transfers"] == 1


@pytest.mark.parametrize("backend, dispatch, combine", [
    # the toy's 4 + 4 tokens, hidden 2048, 128 experts, bf16
    ("allgather_reducescatter", (OpKind.DP_ALLGATHER, 4 * (2048 + 128) * 2), (OpKind.DP_REDUCESCATTER, 2 * 4 * 2048 * 2)),
    ("naive", (OpKind.DP_ALLGATHER, 4 * (2048 + 128) * 2), (OpKind.DP_ALLREDUCE, 8 * 2048 * 2)),
    # each token reaches the peer's 64 experts unless all 8 of its experts are local:
    # round(4 x (1 - C(64, 8) / C(128, 8))) = round(3.986) = 4 tokens to the peer, size/N to each of 2
    ("deepep_high_throughput", (OpKind.DP_ALLTOALL, 2 * 4 * 2048 * 2), (OpKind.DP_ALLTOALL, 2 * 4 * 2048 * 2)),
])
def test_all2all_backends_move_the_tokens_as_vllm_does(backend, dispatch, combine):
    from math import comb

    from llmsim.graph.dp_step import dp_step

    assert round(4 * (1 - comb(64, 8) / comb(128, 8))) == 4
    sim = simulate.prepare(str(DP2), EngineArgs(all2all_backend=backend), [])
    step = dp_step(sim.instances, [4, 4], 0)
    assert step.collectives == (dispatch, combine)


def test_uneven_ranks_gather_and_scatter_by_the_largest():
    # vLLM's all_gatherv / reduce_scatterv with uneven sizes are one NCCL broadcast / reduce per rank
    # in a group: the largest rank's part sets the time, so both are sized by it (300 tokens, not 302)
    from llmsim.graph.dp_step import dp_step

    sim = simulate.prepare(str(DP2), EngineArgs(), [])
    step = dp_step(sim.instances, [300, 2], 0)
    assert step.collectives == ((OpKind.DP_ALLGATHER, 300 * 2176 * 2), (OpKind.DP_REDUCESCATTER, 2 * 300 * 2048 * 2))


def test_all2all_backend_refusals_name_the_option():
    sim = simulate.prepare(str(DP2), EngineArgs(all2all_backend="naive", dp_sync="reference"), [])
    with pytest.raises(InputError, match=r"^--all2all-backend naive: --dp-sync reference runs the reference's own "
                                         r"collectives"):
        simulate.run(sim)
    raw = _raw()
    for inst in raw["nodes"][0]["instances"]:
        inst.update(tp_size=2, num_npus=2, ep_size=4)
    sim = simulate.prepare(cluster_from_dict(raw, "tp2.json"), EngineArgs(all2all_backend="pplx"), [])
    with pytest.raises(InputError, match=r"^tp2.json: tp_size: --all2all-backend pplx is modelled for data-parallel "
                                         r"groups of tp_size 1"):
        simulate.run(sim)
