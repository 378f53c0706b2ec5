"""A data-parallel group's MoE dispatch and combine in the Chakra traces, and ASTRA-Sim running them
(real builds where LLMSIM_ASTRA_SIM_FORK / LLMSIM_ASTRA_SIM_UPSTREAM point at them, the fork's
protocol stand-in otherwise)."""
import json
from pathlib import Path

import pytest

from astra_bridge.chakra.codec import attributes, node_type_name, read_et
from astra_bridge.chakra.et_def import CollectiveCommType
from astra_bridge.plugin import make_backend as bridge_backend
from astra_bridge.traces import write_graph
from llmsim import simulate
from llmsim.config.engine import EngineArgs
from llmsim.graph.iteration import IterationGraph, Op, OpKind, StageProgram
from llmsim.request import Request
from conftest import real_astra, standin_shim

DP2 = Path(__file__).resolve().parents[1] / "configs/cluster/rtxpro6000_qwen3_30b_a3b_dp2_ep2.json"
GATHER, SCATTER = 4 * (2048 + 128) * 2, 8 * 2048 * 2  # the one-request toy of tests/test_dp_groups.py


def _toy_graphs():
    graphs = []
    sim = simulate.prepare(str(DP2), EngineArgs(), [Request(id=0, arrival_ns=0, prompt_len=4, output_len=2)])
    simulate.run(sim, on_graph=graphs.append)
    return graphs[:2]  # the first step: rank 0's 4-token prefill, rank 1's dummy padded to 4 tokens


def _colls(prefix, npu, flavor):
    _, nodes = read_et(f"{prefix}.{npu}.et")
    return [(attributes(n)["comm_type"], attributes(n)["comm_size"], attributes(n).get("involved_dim"))
            for n in nodes if node_type_name(flavor, n.type) == "COMM_COLL_NODE"]


@pytest.mark.parametrize("flavor, involved", [("llmservingsim", [False, True]), ("upstream", None)])
def test_every_moe_layer_gathers_and_scatters_over_the_group(tmp_path, flavor, involved):
    # the fork's layout is [1, 2] (TP 1 x 2 instances): the group spans dimension 1; upstream drops
    # the size-1 dimension, so the group is its only one (involved_dim left unset: every dimension)
    graphs = _toy_graphs()
    prefix = tmp_path / "step" / "llm"
    for g in graphs:
        write_graph(g, prefix, flavor, multi_dim=flavor == "llmservingsim")
    layers = 48  # Qwen3-30B-A3B: every layer has experts
    for npu in (0, 1):
        colls = _colls(prefix, npu, flavor)
        assert colls == [(CollectiveCommType.ALL_GATHER, GATHER, involved),
                         (CollectiveCommType.REDUCE_SCATTER, SCATTER, involved)] * layers


def _binaries(tmp_path):
    out = [("llmservingsim", real_astra("llmservingsim") or str(standin_shim(tmp_path))),
           ("upstream", real_astra("upstream"))]
    return [(f, b) for f, b in out if b]


def test_astra_sim_runs_the_collectives_as_llmsim_times_them(tmp_path):
    """Two NPUs, each an all-gather of 17,408 B then a reduce-scatter of 32,768 B over the group, on
    the config's 16 GB/s, 20 us link: 21,033 + 21,003 = 42,036 ns by hand (tests/test_dp_groups.py)."""
    ops = (Op(OpKind.DP_ALLGATHER, "moe.dispatch", size_bytes=GATHER),
           Op(OpKind.DP_REDUCESCATTER, "moe.combine", size_bytes=SCATTER))
    ran = []
    for flavor, binary in _binaries(tmp_path):
        sim = simulate.prepare(str(DP2), EngineArgs(), [])
        backend = bridge_backend(sim, {"astra_sim_bin": binary, "astra_sim_flavor": flavor,
                                       "astra_sim_workdir": str(tmp_path / flavor)})
        with backend:
            graphs = [IterationGraph(-1, r, r, 1, (StageProgram(0, 0, (), ops, 1, ()),), dp_step=0) for r in (0, 1)]
            end, events = backend.submit_dp_step(sim.instances, [None, None], [4, 4], None, graphs, 0, detail=True)
        assert end == 42_036 and [e[0].end_ns for e in events] == [42_036, 42_036], flavor
        ran.append(flavor)
    assert "llmservingsim" in ran


def _two_groups(tp=1):
    import copy
    import json

    from llmsim.config.cluster import cluster_from_dict

    raw = json.loads(DP2.read_text())
    for inst in raw["nodes"][0]["instances"]:
        inst.update(tp_size=tp, num_npus=tp, ep_size=2 * tp)
    raw["nodes"][0]["instances"] += [dict(i, dp_group="B") for i in copy.deepcopy(raw["nodes"][0]["instances"])]
    raw["nodes"][0]["num_instances"] = 4
    return cluster_from_dict(raw, "two.json")


def _three_requests():
    return [Request(id=0, arrival_ns=0, prompt_len=40, output_len=4),
            Request(id=1, arrival_ns=1_000_000, prompt_len=300, output_len=3),
            Request(id=2, arrival_ns=2_000_000, prompt_len=8, output_len=5)]


@pytest.mark.filterwarnings("ignore:--keep-traces")  # kept to read the comm-group file back
def test_two_groups_run_on_astra_sim_with_communicator_groups(tmp_path):
    """Beside another group, each step's ranks run with a --comm-group-configuration (the fork: the
    file's group; upstream: pg_name on every DP collective) while the other NPUs run nothing: every
    request ends as on the embedded backend (the stand-in: to the ns; real builds where set)."""
    ref = simulate.run(simulate.prepare(_two_groups(), EngineArgs(), _three_requests()))
    assert [sorted(r.id for r in f) for f in ref.finished] == [[0], [2], [1], []]
    want = {r.id: r.end_ns for f in ref.finished for r in f}
    for flavor, binary in _binaries(tmp_path):
        sim = simulate.prepare(_two_groups(), EngineArgs(), _three_requests())
        backend = bridge_backend(sim, {"astra_sim_bin": binary, "astra_sim_flavor": flavor,
                                       "astra_sim_workdir": str(tmp_path / flavor), "keep_traces": True})
        got = simulate.run(sim, backend)
        ends = {r.id: r.end_ns for f in got.finished for r in f}
        assert ends.keys() == want.keys(), flavor
        for k in want:  # upstream reads whole microseconds
            assert ends[k] == want[k] if flavor == "llmservingsim" else abs(ends[k] - want[k]) <= 2e-4 * want[k]
        assert got.dp == ref.dp
        cg = sorted((tmp_path / flavor).rglob("dp_step*/comm_group.json"))
        assert cg and {tuple(v) for v in json.loads(cg[0].read_text()).values()} in ({(0, 1)}, {(2, 3)})


def test_a_group_beside_others_with_tp_is_refused_on_the_fork_in_one_line(tmp_path):
    from llmsim.errors import InputError

    sim = simulate.prepare(_two_groups(tp=2), EngineArgs(), [])
    with pytest.raises(InputError, match=r"^two.json: dp_group: on astra-sim-fork a data-parallel group beside other "
                                         r"instances or groups needs tp_size 1") as e:
        bridge_backend(sim, {"astra_sim_bin": str(standin_shim(tmp_path)), "astra_sim_workdir": str(tmp_path / "w")})
    assert "\n" not in str(e.value)


def test_prefill_and_decode_groups_run_on_astra_sim(tmp_path):
    """A prefill group and a decode group (4 NPUs): each group's steps run with their communicator
    groups, the KV transfers in runs of their own; completion times as on the embedded backend."""
    import copy

    from llmsim.config.cluster import cluster_from_dict

    raw = json.loads(DP2.read_text())
    for inst in raw["nodes"][0]["instances"]:
        inst.update(dp_group="P", pd_type="prefill")
    raw["nodes"][0]["instances"] += [dict(i, dp_group="D", pd_type="decode")
                                     for i in copy.deepcopy(raw["nodes"][0]["instances"])]
    raw["nodes"][0]["num_instances"] = 4
    reqs = lambda: [Request(id=0, arrival_ns=0, prompt_len=40, output_len=3),
                    Request(id=1, arrival_ns=500_000, prompt_len=300, output_len=2)]
    ref = simulate.run(simulate.prepare(cluster_from_dict(copy.deepcopy(raw), "pd.json"), EngineArgs(), reqs()))
    want = {r.id: (r.prefill_instance, r.instance, r.end_ns) for f in ref.finished for r in f}
    assert want[0][:2] == (0, 2) and want[1][:2] == (1, 3)  # each group's balancer: rank 0, then rank 1
    for flavor, binary in _binaries(tmp_path):
        sim = simulate.prepare(cluster_from_dict(copy.deepcopy(raw), "pd.json"), EngineArgs(), reqs())
        got = simulate.run(sim, bridge_backend(sim, {"astra_sim_bin": binary, "astra_sim_flavor": flavor,
                                                     "astra_sim_workdir": str(tmp_path / flavor)}))
        ends = {r.id: (r.prefill_instance, r.instance, r.end_ns) for f in got.finished for r in f}
        assert ends.keys() == want.keys() and got.disagg["transfers"] == 2, flavor
        for k in want:  # upstream reads whole microseconds: up to half of one per step (these requests: 45-77 ms)
            assert ends[k][:2] == want[k][:2]
            assert ends[k][2] == want[k][2] if flavor == "llmservingsim" else abs(ends[k][2] - want[k][2]) <= 1e-3 * want[k][2]


def test_all_to_all_backends_in_the_traces_and_on_astra_sim(tmp_path):
    """--all2all-backend deepep_*/pplx: each MoE layer's dispatch and combine are ALL_TO_ALL (upstream
    has the collective; the fork runs it too). Two NPUs, 4 tokens each to the peer: 32,768 B per
    rank, size/2 to each: 10 + (20,953 + 10) = 20,973 ns each way, 41,946 ns the pair by hand."""
    graphs = []
    sim = simulate.prepare(str(DP2), EngineArgs(all2all_backend="deepep_low_latency"),
                           [Request(id=0, arrival_ns=0, prompt_len=4, output_len=2)])
    simulate.run(sim, on_graph=graphs.append)
    for flavor in ("llmservingsim", "upstream"):
        prefix = tmp_path / flavor / "llm"
        for g in graphs[:2]:
            write_graph(g, prefix, flavor, multi_dim=flavor == "llmservingsim")
        kinds = {(c[0], c[1]) for c in _colls(prefix, 0, flavor)}
        assert kinds == {(CollectiveCommType.ALL_TO_ALL, 32_768)}
    assert 10 + int(20_000 + 16_384 / 17.179869184) + 10 == 20_973
    ops = (Op(OpKind.DP_ALLTOALL, "moe.dispatch", size_bytes=32_768), Op(OpKind.DP_ALLTOALL, "moe.combine",
                                                                         size_bytes=32_768))
    for flavor, binary in _binaries(tmp_path):
        sim = simulate.prepare(str(DP2), EngineArgs(), [])
        with bridge_backend(sim, {"astra_sim_bin": binary, "astra_sim_flavor": flavor,
                                  "astra_sim_workdir": str(tmp_path / f"run_{flavor}")}) as backend:
            step = [IterationGraph(-1, r, r, 1, (StageProgram(0, 0, (), ops, 1, ()),), dp_step=0) for r in (0, 1)]
            end, _ = backend.submit_dp_step(sim.instances, [None, None], [4, 4], None, step, 0)
        assert end == 2 * 20_973, flavor
