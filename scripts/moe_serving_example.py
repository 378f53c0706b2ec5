"""Qwen3-235B-A22B-Instruct-2507 served on 8 x H100 (roofline timing) in four layouts with expert
parallelism across the 8 GPUs or without it (docs/moe.md, "Example: Qwen3-235B-A22B on 8 x H100"):

- TP 8: every expert sliced over 8 GPUs
- TP 8, EP 8: 16 experts whole per GPU, no token dispatch (vLLM at DP 1)
- DP 2 x TP 4, EP 8: two engines in lockstep, MoE tokens all-gathered / reduce-scattered across them
- DP 8, EP 8: eight one-GPU engines in lockstep (attention replicated: little KV cache left)

    python scripts/moe_serving_example.py [--num-reqs 300] [--workload workloads/sharegpt-qwen3-32b-300-sps10.jsonl]

Timing is the roofline model (no H100 profile of this model exists): approximate, stated per run.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from llmsim import simulate  # noqa: E402
from llmsim.config.engine import EngineArgs  # noqa: E402
from llmsim.metrics import summary_stats  # noqa: E402
from llmsim.units import GIB  # noqa: E402

LAYOUTS = [("TP 8", "h100x8_qwen3_235b_tp8"), ("TP 8, EP 8", "h100x8_qwen3_235b_tp8_ep8"),
           ("DP 2 x TP 4, EP 8", "h100x8_qwen3_235b_dp2_tp4_ep8"), ("DP 8, EP 8", "h100x8_qwen3_235b_dp8_ep8")]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workload", default="workloads/sharegpt-qwen3-32b-300-sps10.jsonl")
    ap.add_argument("--num-reqs", type=int, default=300)
    a = ap.parse_args()
    print("| layout | weights per GPU GiB | KV blocks per engine | end s | TTFT mean / median ms | TPOT mean ms "
          "| output tok/s | DP dummy batches | rank busy % (min-max) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, cfg in LAYOUTS:
        sim = simulate.prepare(str(ROOT / "configs" / "cluster" / f"{cfg}.json"), EngineArgs(),
                               str(ROOT / a.workload), a.num_reqs)
        res = simulate.run(sim)
        st = summary_stats(res, [i.scheduler.stats for i in sim.instances])
        inst = sim.instances[0]
        rows = [r for r in res.stages if r["window"] == "run"]
        busy = [100 * (r["busy_compute_ns"] + r["busy_comm_ns"]) / r["wall_ns"] for r in rows]
        print(f"| {name} | {inst.memory.stages[0].weight_bytes / GIB:.2f} | {inst.memory.num_blocks:,} "
              f"| {res.end_ns / 1e9:.2f} | {st['ttft_mean_ms']:,.1f} / {st['ttft_median_ms']:,.1f} "
              f"| {st['tpot_mean_ms']:.2f} | {st['gen_throughput_tok_per_s']:,.0f} "
              f"| {st.get('dp_dummy_batches', 0):,} | {min(busy):.1f}-{max(busy):.1f} |")


if __name__ == "__main__":
    main()
