"""The fast path (decode lanes, per-shape stage costs) must not change a single output byte:
each case runs the plain scheduler (--no-fast-path) and the fast path on the same inputs and
compares the per-request CSV, the iteration log and the printed summary."""
import json
import re
from pathlib import Path

import pytest

from conftest import run_cli

SHAREGPT = "workloads/sharegpt-llama-3.1-8b-300-sps10.jsonl"
NO_CACHE = ("--no-enable-prefix-caching",)  # no token ids are loaded: every decode may ride a lane


def _run(tmp_path, tag, args):
    out, it = tmp_path / f"{tag}.csv", tmp_path / f"{tag}.iter.csv"
    res = run_cli(*args, "--output", out, "--iteration-log", it, "--log-interval", 5)
    assert res.exit_code == 0, res.output
    return out.read_bytes(), it.read_bytes(), res.output.replace(str(tmp_path / tag), "<out>")  # paths written


def _same(tmp_path, *args):
    fast = _run(tmp_path, "fast", args)
    plain = _run(tmp_path, "plain", args + ("--no-fast-path",))
    assert fast[0] == plain[0], "per-request CSV differs"
    assert fast[1] == plain[1], "iteration log differs"
    assert fast[2] == plain[2], "summary or heartbeat lines differ"
    return fast[2]


def _grab(out, pattern):
    return [int(x) for x in re.search(pattern, out).groups()]


def test_single_instance(tmp_path):
    _same(tmp_path, "--cluster-config", "configs/cluster/single_node_single_instance.json", "--dataset", SHAREGPT,
          "--dtype", "bfloat16", *NO_CACHE)


def test_pipeline_two_stages(tmp_path):
    _same(tmp_path, "--cluster-config", "configs/cluster/single_node_pp_instance.json", "--dataset", SHAREGPT,
          "--dtype", "bfloat16", "--num-reqs", 200, *NO_CACHE)


def test_pipeline_four_stages_tp2(tmp_path):
    _same(tmp_path, "--cluster-config", "configs/cluster/single_node_pp4_instance.json", "--dataset", SHAREGPT,
          "--dtype", "bfloat16", "--num-reqs", 150, *NO_CACHE)
    _same(tmp_path, "--cluster-config", "configs/cluster/single_node_tp_pp_instance.json", "--dataset", SHAREGPT,
          "--dtype", "bfloat16", "--num-reqs", 100, *NO_CACHE)


def test_preemption_heavy(tmp_path):
    out = _same(tmp_path, "--cluster-config", "configs/cluster/rtx4090_validation_instance.json", "--dataset", SHAREGPT,
                "--dtype", "bfloat16", "--max-num-seqs", 256, *NO_CACHE)
    preemptions, recomputed = _grab(out, r"Preemptions:\s+(\d+) \((\d+) tokens recomputed\)")
    assert preemptions > 50 and recomputed > 10_000  # the case really preempts


def test_budget_truncation_and_threshold(tmp_path):
    # A small budget truncates steps (plain code) between runs of lane steps.
    _same(tmp_path, "--cluster-config", "configs/cluster/single_node_pp_instance.json", "--dataset", SHAREGPT,
          "--dtype", "bfloat16", "--num-reqs", 120, "--max-num-batched-tokens", 96,
          "--long-prefill-token-threshold", 40, *NO_CACHE)


def test_prefix_heavy_mixed_with_lanes(tmp_path):
    # Every other request keeps its token ids (prefix cache hits, hashed blocks), the rest ride lanes.
    lines = Path(SHAREGPT).read_text().splitlines()[:200]
    mixed = tmp_path / "mixed.jsonl"
    with open(mixed, "w") as f:
        for k, line in enumerate(lines):
            obj = json.loads(line)
            if k % 2:
                obj.pop("input_tok_ids", None)
                obj.pop("output_tok_ids", None)
            f.write(json.dumps(obj) + "\n")
    out = _same(tmp_path, "--cluster-config", "configs/cluster/single_node_pp_instance.json", "--dataset", mixed,
                "--dtype", "bfloat16")
    hits, _ = _grab(out, r"Prefix cache hits:\s+(\d+) / (\d+)")
    assert hits > 0
    # The first hashed request arrives while lanes hold blocks: the pool switches to hashing mid-run.
    late = tmp_path / "late.jsonl"
    with open(late, "w") as f:
        for k, line in enumerate(lines[:160]):
            obj = json.loads(line)
            if k < 60:
                obj.pop("input_tok_ids", None)
                obj.pop("output_tok_ids", None)
            f.write(json.dumps(obj) + "\n")
    out = _same(tmp_path, "--cluster-config", "configs/cluster/rtx4090_validation_instance.json", "--dataset", late,
                "--dtype", "bfloat16", "--max-num-seqs", 256)
    assert _grab(out, r"Prefix cache hits:\s+(\d+) / (\d+)")[0] > 0
    assert _grab(out, r"Preemptions:\s+(\d+)")[0] > 0
    _same(tmp_path, "--cluster-config", "configs/cluster/single_node_single_instance.json", "--dataset", SHAREGPT,
          "--dtype", "bfloat16", "--num-reqs", 150)


@pytest.mark.parametrize("block_size", [1, 4])
def test_hashing_lanes_with_small_blocks(tmp_path, block_size):
    # Lane members hash their blocks as they fill; with one-token blocks a member takes a block
    # and fills it in the same step. Prefix caching on, the workload's token ids loaded.
    _same(tmp_path, "--cluster-config", "configs/cluster/single_node_pp_instance.json", "--dataset", SHAREGPT,
          "--dtype", "bfloat16", "--num-reqs", 60, "--block-size", block_size)


def _twins_workload(path):
    # Three families of identical requests (same prompt ids, same output ids; lengths differ):
    # members of a lane fill blocks with the same hashes in the same step, and takes evict
    # cached blocks that others are about to hash. Only running order gives the plain result.
    import random

    rng = random.Random(3)
    t = 0
    with open(path, "w") as f:
        for k in range(80):
            fam = k % 3
            n_out = rng.choice([30, 47, 64, 90])
            t += rng.randrange(0, 30_000_000)
            f.write(json.dumps({"input_toks": 40 + 8 * fam, "output_toks": n_out, "arrival_time_ns": t,
                                "input_tok_ids": list(range(1000 * fam, 1000 * fam + 40 + 8 * fam)),
                                "output_tok_ids": list(range(50000 + 1000 * fam, 50000 + 1000 * fam + n_out))})
                    + "\n")


@pytest.mark.parametrize("blocks, block_size", [(90, 16), (300, 4), (150, 1)])
def test_hashing_order_with_identical_requests(tmp_path, blocks, block_size):
    wl = tmp_path / "twins.jsonl"
    _twins_workload(wl)
    out = _same(tmp_path, "--cluster-config", "configs/cluster/single_node_pp_instance.json", "--dataset", wl,
                "--dtype", "bfloat16", "--num-gpu-blocks", blocks, "--block-size", block_size)
    assert _grab(out, r"Prefix cache hits:\s+(\d+) / (\d+)")[0] > 0


def test_requests_finishing_together_free_in_running_order(tmp_path):
    # Found by differential fuzzing: a lane member and a solo request finish in the same batch,
    # the solo one later in running order. Their blocks must return to the free list in running
    # order, or a later lookup finds a different cached block (4 vs 5 prefix-hit tokens here).
    out = _same(tmp_path, "--cluster-config", "configs/cluster/single_node_single_instance.json", "--dataset",
                "tests/data/fast_path/free_order.jsonl", "--dtype", "bfloat16", "--block-size", 1,
                "--num-gpu-blocks", 320, "--no-enable-chunked-prefill")
    assert _grab(out, r"Prefix cache hits:\s+(\d+) / (\d+)") == [4, 872]


def test_sessions_and_two_instances(tmp_path):
    lines = [json.loads(l) for l in Path(SHAREGPT).read_text().splitlines()[:90]]
    wl = tmp_path / "sessions.jsonl"
    with open(wl, "w") as f:
        for s in range(30):
            calls = [{"input_toks": c["input_toks"], "output_toks": c["output_toks"], "tool_duration_ns": 40_000_000}
                     for c in lines[3 * s:3 * s + 3]]
            f.write(json.dumps({"session_id": f"s{s}", "arrival_time_ns": s * 150_000_000, "sub_requests": calls}) + "\n")
    _same(tmp_path, "--cluster-config", "configs/cluster/single_node_multi_instance.json", "--dataset", wl,
          "--dtype", "bfloat16", *NO_CACHE)


@pytest.mark.parametrize("cfg, extra, lane_share", [
    ("configs/cluster/single_node_pp_instance.json", {}, 0.99),  # steady decode: nearly every step in lanes
    ("configs/cluster/single_node_pp_instance.json", {"enable_prefix_caching": True}, 0.99),  # hashing lanes
    ("configs/cluster/rtx4090_validation_instance.json", {"max_num_seqs": 256}, 0.9),  # preemptions fall back
])
def test_fast_path_is_exercised(cfg, extra, lane_share):
    # The byte-identity cases above prove nothing if every step fell back to the plain code.
    from llmsim.config.engine import EngineArgs
    from llmsim.simulate import prepare, run

    args = EngineArgs(dtype="bfloat16", **{"enable_prefix_caching": False, **extra})
    sim = prepare(cfg, args, SHAREGPT, 200)
    result = run(sim)
    sched = sim.instances[0].scheduler
    assert result.iterations > 1000
    assert sched.plain_steps < (1 - lane_share) * result.iterations
    assert sched.plain_steps > 0


MOE = "configs/cluster/rtxpro6000_qwen3_30b_a3b_instance.json"  # Qwen3-30B-A3B, one RTX PRO 6000
QWEN_SHAREGPT = "workloads/sharegpt-qwen3-32b-300-sps10.jsonl"
MOE_EP = "configs/cluster/rtxpro6000_qwen3_30b_a3b_tp2_ep2_instance.json"  # tp 2 with ep 2 (experts whole)


def _moe_cluster(tmp_path, tp, pp):
    cfg = json.loads(Path(MOE).read_text())
    cfg["nodes"][0]["instances"][0].update(num_npus=tp * pp, tp_size=tp, pp_size=pp)
    path = tmp_path / f"moe_tp{tp}_pp{pp}.json"
    path.write_text(json.dumps(cfg))
    return str(path)


@pytest.mark.parametrize("routing", ["expected", "uniform"])
def test_moe_model(tmp_path, routing):
    # The MoE layer is a per-batch term (a random routing policy draws once per batch, in batch
    # order): both paths must draw the same loads for the same batches.
    _same(tmp_path, "--cluster-config", MOE, "--dataset", QWEN_SHAREGPT, "--num-reqs", 120, "--moe-routing", routing,
          "--moe-seed", 5, *NO_CACHE)
    _same(tmp_path, "--cluster-config", _moe_cluster(tmp_path, 2, 2), "--dataset", QWEN_SHAREGPT, "--num-reqs", 60,
          "--moe-routing", routing, *NO_CACHE)
    _same(tmp_path, "--cluster-config", MOE_EP, "--dataset", QWEN_SHAREGPT, "--num-reqs", 60,  # EP 2 inside TP 2
          "--moe-routing", routing, *NO_CACHE)


@pytest.mark.parametrize("cfg, timing", [
    ("configs/cluster/single_node_tp_pp_instance.json", "profile"),
    ("configs/cluster/rtxpro6000_qwen3_32b_tp2_instance.json", "profile"),
    ("configs/cluster/h100_llama70b_tp2_pp4.json", "roofline"),
    (MOE, "profile"),
    ("moe tp2 pp2", "profile"),  # measured layers, the expert block on the roofline
    ("moe tp2 pp2", "roofline"),
    (MOE_EP, "profile"),  # the expert block per EP rank from moe.csv
    (MOE_EP, "roofline"),
])
def test_stage_costs_equal_the_graph_path(cfg, timing, tmp_path):
    # The embedded loop times batches from cached per-shape parts; traces and ASTRA-Sim time the
    # built graph. Random batches (prefill chunks with histories, decode histories) must agree.
    import random

    from llmsim.backends.embedded import EmbeddedBackend
    from llmsim.batch import Batch, Entry
    from llmsim.config.engine import EngineArgs
    from llmsim.graph.builder import build_graph
    from llmsim.backends.stage_cost import StageCosts
    from llmsim.request import Request
    from llmsim.simulate import prepare

    if cfg == "moe tp2 pp2":
        cfg = _moe_cluster(tmp_path, 2, 2)
    sim = prepare(cfg, EngineArgs(dtype="bfloat16", timing=timing, moe_routing="uniform"), None)
    inst = sim.instances[0]
    backend = EmbeddedBackend(sim.cluster)
    costs = StageCosts(inst.layout, inst.timer, backend)
    rng = random.Random(7)
    for k in range(300):
        entries = []
        for _ in range(rng.randrange(1, 40)):
            req = Request(id=0, arrival_ns=0, prompt_len=1, output_len=1)
            entries.append(Entry(req, rng.choice([1, 1, 1, rng.randrange(2, 900)]), rng.randrange(0, 6000), 0))
        batch = Batch.build(k, 0, 0, entries)
        graph = build_graph(inst.layout, batch, inst.timer.durations(batch))
        assert costs.times(batch) == backend.stage_times(graph)
        assert costs.times_split(batch) == (backend.stage_times(graph), backend.stage_split(graph))
