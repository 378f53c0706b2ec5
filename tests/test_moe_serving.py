"""Serving a mixture-of-experts model on one instance (no data parallelism): Qwen3-30B-A3B on RTX
PRO 6000, timed from the measured bundle (tp1: moe.csv) or with the expert block on the roofline
(tp > 1: the table holds whole experts, a rank holds a 1/tp slice of each); with expert
parallelism inside the TP group (ep = tp) each rank's whole experts are looked up in moe.csv."""
import json

import pytest

from llmsim.batch import Batch, Entry
from llmsim.config.engine import EngineArgs
from llmsim.errors import InputError
from llmsim.graph.builder import build_graph
from llmsim.graph.iteration import OpKind
from llmsim.request import Request
from llmsim.simulate import prepare, run
from conftest import ROOT, run_cli

CFG = "configs/cluster/rtxpro6000_qwen3_30b_a3b_instance.json"
EXAMPLE = "workloads/example_trace.jsonl"
QWEN = "Qwen/Qwen3-30B-A3B-Instruct-2507"


def _cluster(tmp_path, tp=1, pp=1, **extra):
    cfg = json.loads((ROOT / CFG).read_text())
    inst = cfg["nodes"][0]["instances"][0]
    inst.update(num_npus=tp * pp, tp_size=tp, pp_size=pp, **extra)
    path = tmp_path / f"tp{tp}pp{pp}.json"
    path.write_text(json.dumps(cfg))
    return path


def _decode_batch(n: int, history: int = 100) -> Batch:
    return Batch.build(0, 0, 0, [Entry(Request(id=i, arrival_ns=0, prompt_len=history, output_len=10), 1, history, 0)
                                 for i in range(n)])


def test_example_workload_end_to_end(tmp_path):
    out = tmp_path / "moe.csv"
    res = run_cli("--cluster-config", CFG, "--dataset", EXAMPLE, "--output", out)
    assert res.exit_code == 0, res.output
    assert "timing: measured profile RTXPRO6000/bf16/tp1" in res.output and "[WARNING]" not in res.output
    rows = out.read_text().splitlines()
    assert len(rows) == 11  # header + the 10 requests, all finished
    meta = json.loads((tmp_path / "moe.csv.meta.json").read_text())
    # not given: the rule resolves to llmsim's default (the reference's under --compat llmservingsim)
    assert meta["instances"][0]["moe_routing"] == "expected" and meta["options"]["moe_routing"] is None
    assert meta["requests_unfinished"] == 0


def test_decode_step_moe_time_is_the_table_lookup():
    # 16 decode tokens, "expected" routing: 128 * (1 - (120/128)^16) = 82.4 -> 82 experts activated.
    # moe.csv at 16 tokens: 64 experts 424.116 us, 128 experts 817.612 us; linear in experts:
    # 424116 + (82 - 64) / 64 * (817612 - 424116) = 534786.75 ns -> 534786.
    sim = prepare(CFG, EngineArgs(), None)
    inst = sim.instances[0]
    batch = _decode_batch(16)
    assert inst.timer.moe_batch_ns(batch) == 534_786
    graph = build_graph(inst.layout, batch, inst.timer.durations(batch))
    (stage,) = graph.stages
    moe = [op for op in stage.block_ops if op.name == "moe"]
    assert len(moe) == 1 and moe[0].duration_ns == 534_786 and stage.n_blocks == 48
    assert not any(op.kind is OpKind.ALLREDUCE for op in stage.block_ops)  # tp = 1: no all-reduce
    # balanced routing activates min(128, 16 * 8) = 128 experts: the table's own row
    sim = prepare(CFG, EngineArgs(moe_routing="balanced"), None)
    assert sim.instances[0].timer.moe_batch_ns(batch) == 817_612


def test_tensor_parallel_moe_all_reduce_and_roofline_experts(tmp_path):
    sim = prepare(str(_cluster(tmp_path, tp=2)), EngineArgs(), None)
    inst = sim.instances[0]
    assert "roofline" in inst.profile_note and "1/2 slice" in inst.profile_note
    assert inst.timer.moe_timer is not None and inst.timer.moe_timer.expert_inter == 384  # 768 / tp
    batch = _decode_batch(16)
    graph = build_graph(inst.layout, batch, inst.timer.durations(batch))
    names = [op.name for op in graph.stages[0].block_ops]
    i = names.index("moe")
    assert names[i + 1] == "moe.allreduce"  # one all-reduce of the block's output over the TP group
    assert graph.stages[0].block_ops[i + 1].size_bytes == 16 * 2048 * 2


def test_stage_weights_match_the_hand_worked_numbers(tmp_path):
    # per layer (tp1, params): attention 2*2048 + 2048*(4096 + 2*512) + 4096*2048 = 18,878,464;
    # router 2048*128 = 262,144; experts 128 * 3 * 2048 * 768 = 603,979,776 -> 623,120,384;
    # embedding = lm_head = 151,936 * 2048 = 311,164,928; final norm 2048.
    layer, vocab = 623_120_384, 311_164_928
    sim = prepare(CFG, EngineArgs(), None)
    (st,) = sim.instances[0].memory.stages
    assert st.weight_bytes == 2 * (48 * layer + 2 * vocab + 2048) == 2 * 30_532_110_336
    sim = prepare(str(_cluster(tmp_path, pp=2)), EngineArgs(), None)
    s0, s1 = sim.instances[0].memory.stages
    assert (s0.layers, s1.layers) == (24, 24)
    assert s0.weight_bytes == 2 * (24 * layer + vocab) and s1.weight_bytes == 2 * (24 * layer + vocab + 2048)
    # tp2, experts sliced (expert_tp = tp): attention 4096 + 2048*2560 + 2048*2048 = 9,441,280;
    # router 262,144; experts 128 * 3 * 2048 * 384 = 301,989,888; vocab halves.
    sim = prepare(str(_cluster(tmp_path, tp=2)), EngineArgs(), None)
    (st,) = sim.instances[0].memory.stages
    assert st.weight_bytes == 2 * (48 * (9_441_280 + 262_144 + 301_989_888) + 2 * vocab // 2 + 2048)


def test_seeded_random_routing_is_reproducible(tmp_path):
    outs = []
    for tag, seed in (("a", 3), ("b", 3), ("c", 4)):
        out = tmp_path / f"{tag}.csv"
        res = run_cli("--cluster-config", CFG, "--dataset", EXAMPLE, "--output", out, "--moe-routing", "uniform",
                      "--moe-seed", seed, "--iteration-log", tmp_path / f"{tag}.iter.csv")
        assert res.exit_code == 0, res.output
        outs.append((out.read_bytes(), (tmp_path / f"{tag}.iter.csv").read_bytes()))
    assert outs[0] == outs[1]
    assert outs[0][0] != outs[2][0]  # the draw matters: another seed, other times
    meta = json.loads((tmp_path / "a.csv.meta.json").read_text())
    assert meta["instances"][0]["moe_routing"] == "uniform (seed 3)"


def test_pipeline_and_tensor_parallel_run(tmp_path):
    for tp, pp in ((2, 1), (1, 2), (2, 2)):
        sim = prepare(str(_cluster(tmp_path, tp=tp, pp=pp)), EngineArgs(), EXAMPLE)
        result = run(sim)
        assert sum(len(d) for d in result.finished) == 10 and not result.unfinished


def test_unknown_routing_policy_is_refused():
    with pytest.raises(InputError, match="moe_routing 'zipf'"):
        prepare(CFG, EngineArgs(moe_routing="zipf"), None)


def test_mixed_dense_and_moe_layers_are_refused(tmp_path, monkeypatch):
    raw = json.loads((ROOT / "configs" / "model" / f"{QWEN}.json").read_text())
    raw["mlp_only_layers"] = [0]
    (tmp_path / "configs" / "model" / "org").mkdir(parents=True)
    (tmp_path / "configs" / "model" / "org" / "mixed.json").write_text(json.dumps(raw))
    monkeypatch.setenv("LLMSIM_HOME", str(tmp_path))
    cfg = _cluster(tmp_path, model_name="org/mixed")
    res = run_cli("--cluster-config", cfg, "--dataset", EXAMPLE)
    assert res.exit_code == 2
    assert "mixes dense and mixture-of-experts decoder layers (47 of 48" in res.output


def test_chakra_traces_carry_the_expert_block(tmp_path):
    from astra_bridge.chakra.codec import read_et

    res = run_cli("--cluster-config", _cluster(tmp_path, tp=2), "--dataset", EXAMPLE, "--num-reqs", 1,
                  "--dump-traces", tmp_path / "tr", "--output", tmp_path / "t.csv")
    assert res.exit_code == 0, res.output
    _, nodes = read_et(tmp_path / "tr" / "instance0_batch0" / "llm.0.et")
    names = [n.name for n in nodes]
    assert sum(n.startswith("moe_") for n in names) == 48 and names.count("moe.allreduce") == 48


def test_kv_capacity_activation_peak_for_experts():
    from llmsim.capacity import activation_peak_bytes, moe_activation_bytes
    from llmsim.config.model import load_model_spec

    m = load_model_spec(ROOT / "configs" / "model", QWEN)
    # 2048 tokens, tp 1: router logits 2048*128*2 + top-k ids/weights 16384*8 + rows 16384 x
    # (w13 2*768 + act 768 + w2 2048) x 2 bytes
    assert moe_activation_bytes(m, 1, 2, 2048) == 524_288 + 131_072 + 142_606_336
    # a middle stage: residual stream 2*2048*2048*2 + the expert block (larger than attention's)
    assert activation_peak_bytes(m, 1, 2, 2048, 128, last_stage=False) == 16_777_216 + 143_261_696
    # the last stage: the sampler's 128 rows of full-vocabulary logits dominate
    assert activation_peak_bytes(m, 1, 2, 2048, 128) == 128 * 151_936 * 10 + 2048 * 2048 * 2


# ---- expert parallelism inside the TP group (ep = tp, no data parallelism)

EP_CFG = "configs/cluster/rtxpro6000_qwen3_30b_a3b_tp2_ep2_instance.json"


def test_ep_within_tp_runs_the_example_trace(tmp_path):
    out = tmp_path / "ep.csv"
    res = run_cli("--cluster-config", EP_CFG, "--dataset", EXAMPLE, "--output", out)
    assert res.exit_code == 0, res.output
    assert "[WARNING]" not in res.output  # moe.csv fits an EP rank: no roofline stand-in
    assert "expert parallelism ep=2 inside the tp=2 group: 64 of 128 experts whole per rank" in res.output
    assert "each EP rank's expert block from tp1/moe.csv" in res.output
    assert "measured profile RTXPRO6000/bf16/tp2, expert block per EP rank from tp1/moe.csv" in res.output
    assert len(out.read_text().splitlines()) == 11
    meta = json.loads((tmp_path / "ep.csv.meta.json").read_text())
    assert meta["requests_unfinished"] == 0 and meta["instances"][0]["tp_size"] == 2


def test_ep_weights_per_rank_hold_half_the_experts_whole():
    # tp2 attention 4096 + 2048*2560 + 2048*2048 = 9,441,280; router 2048*128 = 262,144 (replicated);
    # experts 64 of 128 whole: 64 * 3 * 2048 * 768 = 301,989,888; vocab halves (311,164,928 / 2 each
    # for embedding and lm_head); final norm 2048. bf16: x 2 bytes.
    sim = prepare(EP_CFG, EngineArgs(), None)
    (st,) = sim.instances[0].memory.stages
    per_layer = 9_441_280 + 262_144 + 64 * 3 * 2048 * 768
    assert st.weight_bytes == 2 * (48 * per_layer + 311_164_928 + 2048) == 30_544_891_904
    from llmsim.memory import moe_mlp_weight_bytes

    m = sim.instances[0].model
    assert moe_mlp_weight_bytes(m, 2, 2, ep=2, expert_tp=1) == 2 * (262_144 + 301_989_888)


def test_ep_decode_step_moe_time_is_the_per_rank_table_lookup():
    # 16 decode tokens, "expected" routing, 2 EP ranks of 64 experts each (both ranks alike):
    # experts 64 * (1 - (120/128)^16) = 41.2 -> 41; rows 16 * 8 * 64 / 128 = 64 -> looked up at
    # ceil(64 / 8) = 8 tokens. moe.csv at 8 tokens: 32 experts 225.589 us, 64 experts 423.073 us;
    # 225589 + (41 - 32) / 32 * (423073 - 225589) = 281131.375 ns -> 281131 (the slowest rank).
    sim = prepare(EP_CFG, EngineArgs(), None)
    inst = sim.instances[0]
    batch = _decode_batch(16)
    assert inst.timer.moe_batch_ns(batch) == 281_131
    graph = build_graph(inst.layout, batch, inst.timer.durations(batch))
    ops = graph.stages[0].block_ops
    names = [op.name for op in ops]
    i = names.index("moe")
    assert ops[i].duration_ns == 281_131
    assert names[i + 1] == "moe.allreduce" and ops[i + 1].size_bytes == 16 * 2048 * 2  # over the TP(=EP) group
    # attention and dense layers come from the tp2 bundle, as for the sliced-experts tp2 instance
    assert inst.timer.bundle.tp == 2 and inst.timer.moe_timer is None


def test_ep_size_other_than_tp_size_is_refused(tmp_path):
    res = run_cli("--cluster-config", _cluster(tmp_path, tp=2, ep_size=3), "--dataset", EXAMPLE)
    assert res.exit_code == 2
    line = next(l for l in res.output.splitlines() if "ep_size" in l)
    assert "nodes[0].instances[0].ep_size: ep_size must equal tp_size without data parallelism (with dp_group: " \
           "tp_size x the group's size) (ep_size 3, tp_size 2)" in line


def test_ep_size_on_a_dense_model_is_refused(tmp_path):
    cfg = json.loads((ROOT / "configs/cluster/rtxpro6000_qwen3_32b_tp2_instance.json").read_text())
    cfg["nodes"][0]["instances"][0]["ep_size"] = 2
    path = tmp_path / "dense_ep.json"
    path.write_text(json.dumps(cfg))
    with pytest.raises(InputError, match="ep_size: .* has no experts"):
        prepare(str(path), EngineArgs(), None)


def test_ep_on_the_roofline_times_whole_experts_per_rank():
    sim = prepare(EP_CFG, EngineArgs(timing="roofline"), None)
    inst = sim.instances[0]
    assert inst.timer.expert_inter == 768  # whole experts, not 768 / tp
    loads = inst.timer._router.route(16)
    assert len(loads) == 2 and loads[0].experts == 41  # the router is built for the 2 EP ranks
    # the KV capacity model sizes the expert workspace with whole experts too (vLLM's fused_experts)
    from llmsim.capacity import moe_activation_bytes

    assert moe_activation_bytes(inst.model, 2, 2, 2048, 1) == moe_activation_bytes(inst.model, 1, 2, 2048)
