#!/usr/bin/env python3
"""Where the pipeline bubbles are: Llama-3.1-8B (bf16) on up to 4 x RTX PRO 6000.

Runs pp=1, pp=2, pp=3 (32 layers over 3 stages: uneven), pp=4 and tp=2 x pp=2 at a light and a
heavy request rate on the same generated workload (ShareGPT prompt/output lengths, Poisson
arrivals, fixed seed), with vLLM's defaults (--max-num-seqs 128 --max-num-batched-tokens 2048,
batch formation by vLLM's batch queue). Timing comes from the measured RTX PRO 6000 profiles
(profiles/RTXPRO6000/meta-llama/Llama-3.1-8B/bf16/tp1, tp2).

Prints, as markdown: per rate, one table of every stage's wall time (busy compute, busy
communication, each idle cause that is non-zero somewhere, bubble fraction) and one table of
request metrics. Draws two timelines (matplotlib, Agg): tp=2 x pp=2 and pp=3 at the heavy rate.

    python scripts/pipeline_study.py                 # tables on stdout, PNGs in docs/img/
    python scripts/pipeline_study.py --img-dir /tmp  # PNGs elsewhere
    python scripts/pipeline_study.py --no-plots

Deterministic: the same tables and pictures every run. About 20 s on 2 cores.
"""
from __future__ import annotations

import argparse
import copy
import json
import math
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from llmsim.accounting import CAUSES  # noqa: E402
from llmsim.api import cluster_from_dict  # noqa: E402
from llmsim.config.engine import EngineArgs  # noqa: E402
from llmsim.metrics import summary_stats  # noqa: E402
from llmsim.simulate import make_backend, prepare, run  # noqa: E402
from llmsim.workload import load_workload, requests_from_records  # noqa: E402
from llmsim.workload_gen import Spec, generate  # noqa: E402

TRACE = ROOT / "workloads" / "sharegpt-llama-3.1-8b-300-sps10.jsonl"
NUM_REQUESTS = 600
SEED = 1
RATES = {"light": 1.0, "heavy": 20.0}  # req/s; probed: every layout saturates by ~8 req/s
LAYOUTS = [("pp=1", 1, 1), ("pp=2", 1, 2), ("pp=3", 1, 3), ("pp=4", 1, 4), ("tp=2 x pp=2", 2, 2)]
ENGINE = EngineArgs(dtype="bfloat16", max_num_seqs=128, max_num_batched_tokens=2048)
WINDOW_MS = 40.0
# the cluster schema of configs/cluster/single_node_pp_instance.json
BASE_CLUSTER = {
    "num_nodes": 1, "link_bw": 16, "link_latency": 20000,
    "nodes": [{"num_instances": 1, "cpu_mem": {"mem_size": 512, "mem_bw": 256, "mem_latency": 0},
               "instances": [{"model_name": "meta-llama/Llama-3.1-8B", "hardware": "RTXPRO6000",
                              "npu_mem": {"mem_size": 96, "mem_bw": 1597, "mem_latency": 0},
                              "num_npus": 1, "tp_size": 1, "pp_size": 1, "pd_type": None}]}],
}
SHORT = {"fill_drain": "fill/drain", "starved": "starved", "inflight_cap": "in-flight cap",
         "batch_queue": "batch queue", "admission": "admission", "upstream": "upstream", "transfer": "transfer"}


def cluster(tp: int, pp: int) -> dict:
    c = copy.deepcopy(BASE_CLUSTER)
    c["nodes"][0]["instances"][0].update(tp_size=tp, pp_size=pp, num_npus=tp * pp)
    return c


def workload(rate: float) -> list[dict]:
    """NUM_REQUESTS Poisson arrivals at `rate`, (prompt, output) pairs drawn from the ShareGPT trace
    (what `llmsim workload generate --from-trace TRACE --rate RATE --num-requests 600 --seed 1` writes)."""
    pairs = tuple((r.prompt_len, r.output_len) for r in load_workload(str(TRACE), 0))
    spec = Spec(num=NUM_REQUESTS, rate_per_s=rate, seed=SEED, resample=pairs)
    return [json.loads(line) for line in generate(spec)]


def simulate(records: list[dict], tp: int, pp: int, timeline: bool) -> dict:
    """One run; with timeline, also every stage event (with its compute and SEND time) and idle stretch."""
    requests = requests_from_records(records, with_token_ids=ENGINE.enable_prefix_caching)
    sim = prepare(cluster_from_dict(cluster(tp, pp)), ENGINE, requests)
    backend = make_backend(sim)
    events = {}  # (batch id, stage) -> StageEvent
    if timeline:
        submit = backend.submit

        def keep(inst, batch, graph, t_ns, detail=False):
            timing = submit(inst, batch, graph, t_ns, detail)
            for ev in timing.events or ():
                events[(ev.batch_id, ev.stage)] = ev
            return timing

        backend.submit = keep  # the engine reads backend.submit once per run
    raw = run(sim, backend, timeline=timeline, record_iterations=True)
    stats = summary_stats(raw, [i.scheduler.stats for i in sim.instances])
    for r in raw.stages:  # the accounting's guarantee: busy + every idle cause = wall, to the nanosecond
        parts = r["busy_compute_ns"] + r["busy_comm_ns"] + sum(r[f"idle_{c}_ns"] for c in CAUSES)
        assert parts == r["wall_ns"], (tp, pp, r)
    return {"sim": sim, "raw": raw, "stats": stats, "events": events,
            "stages": [r for r in raw.stages if r["window"] == "run"]}


# -- tables ------------------------------------------------------------------------------------------

def pct(ns: int, wall: int) -> str:
    return f"{100 * ns / wall:.1f}" if wall else "0.0"


def stage_table(results: list[tuple[str, dict]]) -> str:
    used = [c for c in CAUSES if any(r[f"idle_{c}_ns"] for _, res in results for r in res["stages"])]
    head = ["layout", "stage", "layers", "compute %", "comm %", *(f"{SHORT[c]} %" for c in used), "bubble"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---:" if k > 1 else "---" for k in range(len(head))) + "|"]
    for name, res in results:
        for r in res["stages"]:
            w = r["wall_ns"]
            cells = [name, str(r["stage"]), str(r["layers"]), pct(r["busy_compute_ns"], w), pct(r["busy_comm_ns"], w),
                     *(pct(r[f"idle_{c}_ns"], w) for c in used), f"{r['bubble_fraction']:.3f}"]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def request_table(results: list[tuple[str, dict]]) -> str:
    head = ["layout", "GPUs", "finished", "sim. time s", "req/s", "gen tok/s", "TTFT mean ms", "TTFT P50 ms",
            "TTFT P99 ms", "TPOT mean ms", "TPOT P99 ms", "reqs/batch mean", "reqs/batch CV", "mean bubble"]
    lines = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
    for name, res in results:
        s, st = res["stats"], res["stages"]
        bubble = sum(r["bubble_fraction"] for r in st) / len(st)
        cfg = res["sim"].instances[0].config
        sizes = [rec.requests for rec in res["raw"].iteration_log if rec.stage == 0]
        m = sum(sizes) / len(sizes)
        cv = math.sqrt(sum((x - m) ** 2 for x in sizes) / len(sizes)) / m
        cells = [name, str(cfg.tp_size * cfg.pp_size), str(s["requests_finished"]), f"{s['simulated_ns'] / 1e9:.1f}",
                 f"{s['request_throughput_per_s']:.2f}", f"{s['gen_throughput_tok_per_s']:.0f}",
                 f"{s['ttft_mean_ms']:.1f}", f"{s['ttft_median_ms']:.1f}", f"{s['ttft_p99_ms']:.1f}",
                 f"{s['tpot_mean_ms']:.2f}", f"{s['tpot_p99_ms']:.2f}", f"{m:.1f}", f"{cv:.2f}", f"{bubble:.3f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def transfer_line(name: str, res: dict) -> str:
    """Mean SEND time per stage boundary vs the mean stage interval (timeline runs only)."""
    evs = [e for e in res["events"].values() if e.send_ns]
    if not evs:
        return ""
    send = sum(e.send_ns for e in evs) / len(evs)
    busy = sum(e.end_ns - e.start_ns for e in evs) / len(evs)
    top = max(e.send_ns for e in evs)
    return (f"{name}: stage-to-stage SEND mean {send / 1e3:.0f} us, max {top / 1e3:.0f} us, "
            f"vs mean sending-stage interval {busy / 1e6:.2f} ms ({100 * send / busy:.1f} %)")


# -- the timeline picture ----------------------------------------------------------------------------

BATCH_COLOURS = ["#1f77b4", "#2ca02c", "#9467bd", "#17becf"]  # cycled by batch id
CAUSE_STYLE = {  # idle cause -> (face colour, hatch)
    "fill_drain": ("#ffd8a8", "//"), "starved": ("#e8e8e8", ""), "inflight_cap": ("#ffadad", "xx"),
    "batch_queue": ("#ff7f0e", "\\\\"), "admission": ("#c49c94", ".."), "upstream": ("#d62728", "//"),
    "transfer": ("#f7b6d2", "||"),
}


def draw_timeline(res: dict, start_ns: int, end_ns: int, path: Path, title: str) -> dict:
    """One row per NPU over [start_ns, end_ns): batch slices (colour cycled by batch id, labelled
    where wide enough, the SEND that ends a stage darkened), idle slices by cause (colour and hatch),
    an arrow per stage-to-stage transfer. Returns what was drawn (counts, for the caller)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    sim, raw, events = res["sim"], res["raw"], res["events"]
    cfg = sim.instances[0].config
    tp, pp = cfg.tp_size, cfg.pp_size
    row = lambda s, r: s * tp + r  # NPU index = row, top to bottom
    n_rows = tp * pp
    ms = lambda t: (t - start_ns) / 1e6
    span_ms = (end_ns - start_ns) / 1e6

    fig = Figure(figsize=(14, 1.0 + 0.85 * n_rows + 0.9), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    h = 0.72
    drawn = {"batches": 0, "idle": 0, "arrows": 0, "causes": set()}
    min_label_ms = span_ms * 0.028
    tokens = {(rec.batch_id, rec.stage): (rec.prefill_tokens, rec.decode_tokens) for rec in raw.iteration_log
              if rec.end_ns > start_ns and rec.start_ns < end_ns}
    for (bid, s), ev in sorted(events.items()):
        if ev.end_ns <= start_ns or ev.start_ns >= end_ns:
            continue
        x0, x1 = max(ev.start_ns, start_ns), min(ev.end_ns, end_ns)
        colour = BATCH_COLOURS[bid % len(BATCH_COLOURS)]
        send_from = ev.end_ns - ev.send_ns if ev.send_ns else ev.end_ns
        for r in range(tp):
            y = row(s, r)
            ax.broken_barh([(ms(x0), ms(x1) - ms(x0))], (y - h / 2, h), facecolors=colour, edgecolors="white",
                           linewidth=0.6)
            if ev.send_ns and send_from < end_ns and ev.end_ns > start_ns:
                a = max(send_from, start_ns)
                ax.broken_barh([(ms(a), ms(x1) - ms(a))], (y - h / 2, h), facecolors="black", alpha=0.55,
                               linewidth=0)
            wide = ms(x1) - ms(x0)
            if wide >= min_label_ms:
                text = str(bid)
                if wide >= 2.5 * min_label_ms and (bid, s) in tokens:
                    p, d = tokens[(bid, s)]
                    text += f"\n{p}+{d}" if p else f"\n{d} dec"
                ax.text((ms(x0) + ms(x1)) / 2, y, text, ha="center", va="center", fontsize=8, color="white",
                        fontweight="bold", clip_on=True)
        drawn["batches"] += 1
    for i, s, x, y_, cause in raw.idle_segments or ():
        if y_ <= start_ns or x >= end_ns:
            continue
        name = CAUSES[cause]
        face, hatch = CAUSE_STYLE[name]
        a, b = max(x, start_ns), min(y_, end_ns)
        for r in range(tp):
            ax.broken_barh([(ms(a), ms(b) - ms(a))], (row(s, r) - h / 2, h), facecolors=face, hatch=hatch,
                           edgecolors="#555555", linewidth=0.3)
        drawn["idle"] += 1
        drawn["causes"].add(name)
    # transfers: from the end of the sending slice (its SEND) to the start of the next stage's slice
    for (bid, s), ev in events.items():
        nxt = events.get((bid, s + 1))
        if nxt is None or ev.end_ns < start_ns or nxt.start_ns > end_ns:
            continue
        for r in range(tp):
            ax.annotate("", xy=(ms(nxt.start_ns), row(s + 1, r) - h / 2), xytext=(ms(ev.end_ns), row(s, r) + h / 2),
                        arrowprops={"arrowstyle": "-|>", "color": "black", "lw": 0.9, "mutation_scale": 9,
                                    "shrinkA": 0, "shrinkB": 0})
            drawn["arrows"] += 1
    ax.set_xlim(0, span_ms)
    ax.set_ylim(n_rows - 0.5, -0.5)
    ax.set_yticks(range(n_rows), [f"NPU {row(s, r)}\nstage {s}" + (f" rank {r}" if tp > 1 else "") +
                                  f"\n{sim.instances[0].memory.stages[s].layers} layers"
                                  for s in range(pp) for r in range(tp)])
    ax.set_xlabel(f"simulated time (ms) from t = {start_ns / 1e9:.3f} s")
    ax.grid(axis="x", alpha=0.3)
    ax.set_axisbelow(True)
    ax.set_title(title, fontsize=11)
    handles = [Patch(facecolor=BATCH_COLOURS[0], label="batch: id, then tokens (prefill+decode, or N dec); colour cycles by id"),
               Patch(facecolor="#333333", alpha=0.8, label="SEND to the next stage (end of the slice)")]
    handles += [Patch(facecolor=CAUSE_STYLE[c][0], hatch=CAUSE_STYLE[c][1], edgecolor="#555555",
                      label=f"idle: {SHORT[c]}") for c in CAUSES if c in drawn["causes"]]
    fig.legend(handles=handles, loc="outside lower center", ncol=min(len(handles), 5), fontsize=9, frameon=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    return drawn


def middle_window(res: dict) -> tuple[int, int]:
    """WINDOW_MS from the first batch start at or after the middle of the run."""
    mid = res["raw"].end_ns // 2
    t0 = min(e.start_ns for e in res["events"].values() if e.stage == 0 and e.start_ns >= mid)
    return t0, t0 + int(WINDOW_MS * 1e6)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--img-dir", default=str(ROOT / "docs" / "img"), help="where the timeline PNGs go")
    ap.add_argument("--no-plots", action="store_true", help="tables only")
    o = ap.parse_args(argv)
    t_start = time.perf_counter()
    print(f"Llama-3.1-8B bf16 on RTX PRO 6000 (measured profiles); {NUM_REQUESTS} requests, Poisson arrivals, "
          f"ShareGPT lengths from {TRACE.relative_to(ROOT)}, seed {SEED}; max_num_seqs {ENGINE.max_num_seqs}, "
          f"max_num_batched_tokens {ENGINE.max_num_batched_tokens}, batch formation {ENGINE.batch_formation}.\n")
    pictures = {("heavy", "tp=2 x pp=2"): "timeline_tp2pp2.png", ("heavy", "pp=3"): "timeline_pp3.png"}
    notes = []
    for label, rate in RATES.items():
        records = workload(rate)
        results = []
        for name, tp, pp in LAYOUTS:
            want = not o.no_plots and (label, name) in pictures
            res = simulate(records, tp, pp, timeline=want)
            results.append((name, res))
            if want:
                a, b = middle_window(res)
                path = Path(o.img_dir) / pictures[(label, name)]
                d = draw_timeline(res, a, b, path, f"{name}, Llama-3.1-8B bf16 on RTX PRO 6000, {rate:g} req/s: "
                                  f"{WINDOW_MS:g} ms from t = {a / 1e9:.3f} s")
                notes.append(f"{path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}: {d['batches']} "
                             f"stage slices, {d['idle']} idle stretches, {d['arrows']} transfer arrows")
                notes.append(transfer_line(f"{name} @ {rate:g} req/s", res))
        print(f"## {label} load: {rate:g} req/s\n")
        print("Per stage, % of the run's wall time (bubble = fill/drain + in-flight cap + batch queue + upstream + "
              "transfer, as a fraction):\n")
        print(stage_table(results) + "\n")
        print("Requests:\n")
        print(request_table(results) + "\n")
    for n in notes:
        print(n)
    print(f"\n(wall time {time.perf_counter() - t_start:.1f} s)")


if __name__ == "__main__":
    main()
