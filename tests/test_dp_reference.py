"""LLMServingSim 2.0's data-parallel MoE group (--dp-sync reference, set by --compat llmservingsim;
llmsim/dp_reference.py): ASTRA-Sim's collective meeting rule as measured on the fork, a group step
by hand, the idle group, and the reference's recorded run reproduced within 1 %."""
import csv
import json
from pathlib import Path

import pytest

from conftest import run_cli
from llmsim import simulate
from llmsim.backends.network import Link, ring_allgather_ns, ring_reducescatter_ns
from llmsim.config.cluster import cluster_from_dict
from llmsim.config.engine import EngineArgs
from llmsim.dp_reference import collective_ends, step_ends
from llmsim.errors import InputError
from llmsim.request import Request

ROOT = Path(__file__).resolve().parents[1]
DP2 = ROOT / "configs/cluster/rtxpro6000_qwen3_30b_a3b_dp2_ep2.json"
QWEN = ROOT / "workloads/sharegpt-qwen3-32b-300-sps10.jsonl"
REF = EngineArgs(kv_capacity="reference", moe_routing="reference", dp_sync="reference")


def test_collectives_meet_as_on_the_fork():
    # Measured on LLMServingSim's ASTRA-Sim fork (the reference's DP link: 16 GB/s, 20 us, two NPUs):
    # an ALL_GATHER of 2,228,224 B issued by both at 1 ns ends at 149,720 on both; NPU 1 issuing
    # at 100,000 (5,000) ends at 149,720 while NPU 0 ends at 249,719 (154,719). A REDUCE_SCATTER of
    # 4,194,304 B issued together ends at 146,030.
    link = Link(16.0, 20_000.0)
    ag = ring_allgather_ns(link, 2_228_224, 2)
    assert ag == 149_719
    assert ring_reducescatter_ns(link, 4_194_304, 2, local_mem_bw_gbps=1597) == 146_029
    assert collective_ends([1, 1], ag) == [149_720, 149_720]
    assert collective_ends([1, 100_000], ag) == [249_719, 149_720]
    assert collective_ends([1, 5_000], ag) == [154_719, 149_720]


def test_step_by_hand():
    # two ranks, starts 0 and 10; parts (first node, to the first collective, later layers' part
    # before it, after it, tail): rank 0 (-, 100, 50, 5, 20), rank 1 (-, 130, 80, 5, 30);
    # all-gather 40, experts 60, reduce-scatter 30; two layers.
    # layer 0: issue [100, 140] -> AG ends [max(100, 180), max(140, 140)] = [180, 140]; +60 -> [240, 200];
    #   RS ends [max(240, 230), max(200, 270)] = [240, 270]
    # layer 1: issue [240+5+50, 270+5+80] = [295, 355] -> AG [395, 355]; +60 -> [455, 415]; RS [455, 485]
    # tails: 455 + 5 + 20 = 480, 485 + 5 + 30 = 520
    parts = [(0, 100, 50, 5, 20), (0, 130, 80, 5, 30)]
    assert step_ends([0, 10], parts, (40, 60, 30), 2) == [480, 520]


def test_an_idle_group_runs_nothing_and_polls_each_millisecond():
    # one request arriving at 2.5 ms: nothing runs before it (no waves); the fork's idle loop steps
    # 1 ms from its start-up event at 1 ns, so the request is routed and scheduled at 3,000,001 ns.
    # Rank 0 takes it (LOAD, ties to the first), rank 1 runs a dummy at every step, and once the
    # request is done the group stops (no dummy-only steps).
    sim = simulate.prepare(str(DP2), REF, [Request(id=0, arrival_ns=2_500_000, prompt_len=4, output_len=3)])
    res = simulate.run(sim, record_iterations=True)
    req = res.finished[0][0]
    assert req.first_sched_ns == 3_000_001 and not res.finished[1]
    log = sorted(res.iteration_log, key=lambda r: r.start_ns)
    assert [r.instance for r in log] == [0, 0, 0] and log[0].prefill_tokens == 4
    assert res.dp[0]["steps"] == 3 and res.dp[0]["dummy_batches"] == 3
    # rank 1 (the dummy) joins last, so rank 0 starts when rank 1's first node (its input load) ends
    assert log[0].start_ns > 3_000_001
    assert res.end_ns == log[-1].end_ns


def test_tp_above_one_is_refused():
    raw = json.loads(DP2.read_text())
    for inst in raw["nodes"][0]["instances"]:
        inst.update(num_npus=2, tp_size=2, ep_size=4)
    sim = simulate.prepare(cluster_from_dict(raw, "c.json"), REF,
                           [Request(id=0, arrival_ns=0, prompt_len=4, output_len=2)])
    with pytest.raises(InputError, match=r"tp_size: --dp-sync reference .* is modelled with tp_size 1"):
        simulate.run(sim)


def test_the_reference_run_within_one_percent(tmp_path):
    # LLMServingSim 2.0's recorded run (../shared/docs/reference-behaviour.md sections 2 and 9): its
    # cluster config, the Qwen workload, --max-num-seqs 128 --max-num-batched-tokens 2048; final tick
    # 61,287,236,059 ns, TTFT / TPOT / latency means 938.6 / 46.5 / 31,649.1 ms; its log gives each
    # rank 38,590 KV blocks.
    out = tmp_path / "ref.csv"
    r = run_cli("--cluster-config", DP2, "--dataset", QWEN, "--max-num-seqs", "128", "--max-num-batched-tokens",
                "2048", "--compat", "llmservingsim", "--output", out, "--quiet")
    assert r.exit_code == 0, r.output
    with out.open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 300
    tick = json.loads((tmp_path / "ref.csv.summary.json").read_text())["simulated_ns"]
    assert tick == max(int(x["end_time"]) for x in rows)
    assert abs(tick - 61_287_236_059) <= 0.01 * 61_287_236_059
    mean = lambda col: sum(int(x[col]) for x in rows) / len(rows) / 1e6
    assert mean("TTFT") == pytest.approx(938.6, rel=0.01)
    assert mean("TPOT") == pytest.approx(46.5, rel=0.01)
    assert mean("latency") == pytest.approx(31_649.1, rel=0.01)
    meta = json.loads((tmp_path / "ref.csv.meta.json").read_text())
    assert [i["kv_blocks"] for i in meta["instances"]] == [38_590, 38_590]
    assert {i["dp_sync"] for i in meta["instances"]} == {"reference"}
