"""The multi-node examples side by side (docs/multinode.md): Llama-3.1-70B on 2 x 8 H100 (roofline
timing) as tp=8 x pp=2 and tp=4 x pp=4 with the node boundary where the configs put it, and the
same tp=4 x pp=4 with the node boundary moved (every stage boundary across nodes, or none).
Prints markdown tables; deterministic.

    python scripts/multinode_study.py [--requests 400]
"""
import copy
import json
import sys
from pathlib import Path

import click

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import llmsim  # noqa: E402
from llmsim.backends.embedded import EmbeddedBackend  # noqa: E402
from llmsim.config.engine import EngineArgs  # noqa: E402
from llmsim.graph.builder import build_graph  # noqa: E402
from llmsim.request import Request  # noqa: E402
from llmsim.simulate import prepare  # noqa: E402
from llmsim.workload import load_workload  # noqa: E402
from llmsim.workload_gen import Spec, generate  # noqa: E402

CFG = ROOT / "configs" / "cluster"
TRACE = ROOT / "workloads" / "sharegpt-llama-3.1-8b-300-sps10.jsonl"


def _layouts() -> dict:
    tp8 = json.loads((CFG / "h100x16_llama70b_tp8_pp2.json").read_text())
    tp4 = json.loads((CFG / "h100x16_llama70b_tp4_pp4.json").read_text())
    # the node boundary moved: 4 nodes of 4 GPUs (every stage boundary crosses InfiniBand), or one
    # 16-GPU NVSwitch domain (none does)
    four = copy.deepcopy(tp4)
    four["num_nodes"], four["network"]["gpus_per_node"] = 4, 4
    four["nodes"] = [tp4["nodes"][0]] + [dict(tp4["nodes"][1]) for _ in range(3)]
    one = copy.deepcopy(tp4)
    one["num_nodes"], one["network"]["gpus_per_node"] = 1, 16
    one["nodes"] = [tp4["nodes"][0]]
    pd = json.loads((CFG / "h100x16_llama70b_pd_1p1d.json").read_text())
    return {"tp8 x pp2 (boundary across nodes)": tp8, "tp4 x pp4 (1 of 3 boundaries across)": tp4,
            "tp4 x pp4, 4 x 4 GPUs (3 of 3 across)": four, "tp4 x pp4, one 16-GPU node (0 across)": one,
            "1 prefill + 1 decode, tp8 each (KV across nodes)": pd}


def _sends(cfg: dict) -> list[str]:
    """Each stage boundary's SEND (hidden states + residual, per rank) for a 2,048-token prefill
    chunk and a 64-request decode batch, in us."""
    out = []
    for tokens in (2048, 64):
        sim = prepare(llmsim.cluster_from_dict(cfg), EngineArgs(dtype="bfloat16"),
                      [Request(0, 0, prompt_len=tokens, output_len=1)])
        inst = sim.instances[0]

        class _B:  # the batch shape the graph builder reads
            id, total_len = 0, tokens
        g = build_graph(inst.layout, _B, {})
        be = EmbeddedBackend(sim.cluster)
        out.append(" / ".join(f"{be.send_ns(p, 0) / 1000:.1f}" for p in g.stages[:-1]))
    return out


@click.command()
@click.option("--requests", default=400, show_default=True)
def main(requests):
    layouts = _layouts()
    print("| layout | SEND per boundary, 2,048-token chunk (us) | 64-token decode batch (us) |\n|---|---|---|")
    for name, cfg in layouts.items():
        if any(i.get("pd_type") for n in cfg["nodes"] for i in n["instances"]):
            continue  # no stage boundary: its KV transfers are in the tables below
        chunk, dec = _sends(cfg)
        print(f"| {name} | {chunk} | {dec} |")
    for rate in (2.0, 8.0):
        pairs = tuple((r.prompt_len, r.output_len) for r in load_workload(str(TRACE)))
        spec = Spec(num=requests, rate_per_s=rate, seed=7, resample=pairs)
        records = [json.loads(line) for line in generate(spec)]
        print(f"\n**{rate:g} req/s**, {requests} requests\n")
        print("| layout | req/s | out tok/s | TTFT mean / P99 (ms) | TPOT mean / P99 (ms) | bubble (mean of stages) | "
              "transfer idle % (mean) | KV transfer mean (ms) |\n|---|---|---|---|---|---|---|---|")
        for name, cfg in layouts.items():
            res = llmsim.run(cfg, records, {"dtype": "bfloat16"})
            s = res.summary.iloc[0]
            st = res.stages[res.stages.window == "run"]
            tr = (st.idle_transfer_ns / st.wall_ns).mean() * 100
            print(f"| {name} | {s.request_throughput_per_s:.2f} | {s.gen_throughput_tok_per_s:,.0f} | "
                  f"{s.ttft_mean_ms:.1f} / {s.ttft_p99_ms:.1f} | {s.tpot_mean_ms:.2f} / {s.tpot_p99_ms:.2f} | "
                  f"{st.bubble_fraction.mean():.3f} | {tr:.2f} | "
                  f"{f'{s.pd_transfer_mean_ms:.3f}' if 'pd_transfer_mean_ms' in s else '-'} |")


if __name__ == "__main__":
    main()
