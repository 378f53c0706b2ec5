"""The reference's 300-request ShareGPT runs, as its own summaries record them
(reference-behaviour section 9: total clocks, preemptions, recomputed tokens, prefix hits)."""
import re

import pytest

from conftest import run_cli

SHAREGPT = "workloads/sharegpt-llama-3.1-8b-300-sps10.jsonl"


def _summary(*args):
    res = run_cli("--dataset", SHAREGPT, "--dtype", "bfloat16", "--log-interval", 0, *args)
    assert res.exit_code == 0, res.output
    out = res.output
    grab = lambda pat: [int(x) for x in re.search(pat, out).groups()]
    return out, grab


def test_rtxpro6000_tp1_benchmark_final_tick_and_iterations():
    out, grab = _summary("--cluster-config", "configs/cluster/single_node_single_instance.json")
    assert grab(r"\((\d+) ns\)") == [64_679_407_283]
    assert grab(r"Iterations \(batches\):\s+(\d+)") == [2_406]
    assert "(7.59 %)" in out


def test_rtx4090_preemption_heavy_run():
    # KV cache calibrated to vLLM's 2,588 blocks (mem_util 0.833919 in the config), 256 seqs:
    # the cache saturates, so preemption and recompute decide the timeline.
    out, grab = _summary("--cluster-config", "configs/cluster/rtx4090_validation_instance.json",
                         "--max-num-seqs", 256)
    assert grab(r"\((\d+) ns\)") == [183_706_634_969]
    assert grab(r"Preemptions:\s+(\d+) \((\d+) tokens recomputed\)") == [194, 110_596]
    assert grab(r"Prefix cache hits:\s+(\d+) / (\d+)") == [4_848, 257_239]  # 1.88 %
