"""The expert model on its own (docs/moe.md's example): per-GPU weights and one MoE layer's expert
time on H100 (roofline) for Mixtral-8x7B served on 8 GPUs, expert-parallel (data parallel 8 x EP 8,
whole experts per GPU) against tensor-parallel experts (TP 8, a slice of every expert per GPU).

    python scripts/moe_example.py [--model mistralai/Mixtral-8x7B-v0.1] [--hardware H100] [--gpus 8]

One layer, not a serving run (scripts/moe_serving_example.py serves a model in several layouts).
Tokens are per DP rank; with EP every rank's experts see the tokens of all ranks (vLLM's all-gather
dispatch), and the layer takes as long as its slowest rank.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from llmsim.config.model import load_model_spec  # noqa: E402
from llmsim.memory import stage_memory  # noqa: E402
from llmsim.perf.architecture import load_architecture  # noqa: E402
from llmsim.perf.hardware import load_hardware  # noqa: E402
from llmsim.perf.roofline import RooflineTimer  # noqa: E402
from llmsim.perf.routing import ExpertRouter, Routing  # noqa: E402
from llmsim.units import GIB  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="mistralai/Mixtral-8x7B-v0.1")
    ap.add_argument("--hardware", default="H100")
    ap.add_argument("--gpus", type=int, default=8)
    a = ap.parse_args()
    m = load_model_spec(ROOT / "configs" / "model", a.model)
    arch = load_architecture(ROOT / "profiles", m.model_type)
    hw = load_hardware(a.hardware, ROOT / "configs" / "hardware")
    e, g = m.moe, a.gpus
    ep_w = stage_memory(m, 1, 1, 2, 2, ep=g)[0].weight_bytes
    tp_w = stage_memory(m, g, 1, 2, 2)[0].weight_bytes
    print(f"{m.name} bf16 on {g} x {hw.name}: {e.num_experts} experts of {e.expert_intermediate_size}, top {e.top_k}")
    print(f"weights per GPU: DP{g} x EP{g} {ep_w / GIB:.2f} GiB (attention replicated, "
          f"{-(-e.num_experts // g)} expert(s) whole); TP{g} {tp_w / GIB:.2f} GiB\n")
    ep_t = RooflineTimer(m, arch, hw, 2, 1, ep=g)
    tp_t = RooflineTimer(m, arch, hw, 2, g)
    policies = [Routing("balanced"), Routing("expected"), Routing("uniform", seed=0),
                Routing("skewed", seed=0, zipf_exponent=1.0)]
    print("| tokens per DP rank | policy | EP: experts on the slowest rank | EP: expert layer us "
          "| TP: experts activated | TP: expert layer us |")
    print("|---|---|---|---|---|---|")
    for n in (1, 8, 32, 128, 512):
        for p in policies:
            ep_loads = ExpertRouter(e.num_experts, e.top_k, g, p).route(n * g)  # all ranks' tokens
            tp_loads = ExpertRouter(e.num_experts, e.top_k, 1, p).route(n * g)  # one batch of the same tokens
            worst = max(ep_loads, key=lambda l: (l.pairs, l.experts))
            print(f"| {n} | {p.describe()} | {worst.experts} ({worst.pairs} rows) | {ep_t.moe_ns(n, ep_loads) / 1e3:.1f} "
                  f"| {tp_loads[0].experts} | {tp_t.moe_ns(n * g, tp_loads) / 1e3:.1f} |")


if __name__ == "__main__":
    main()
