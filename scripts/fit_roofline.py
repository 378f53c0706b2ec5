"""Fit the roofline's per-category efficiency factors and overheads against the measured bundles.

    python scripts/fit_roofline.py [--out configs/hardware/roofline_fit.json] [--check]

Every bundle under profiles/ (dense.csv, per_sequence.csv, attention.csv rows) becomes sample
points (category, FLOPs, bytes, peak, bandwidth, measured ns). For each category the factors
minimise the mean |log(predicted / measured)|: once over all bundles ("default", used for
hardware without measurements) and once per hardware ("by_hardware"). Prints the error table
that docs/roofline.md carries. --check only prints the table for the stored fit.
"""
from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from llmsim.config.model import load_model_spec  # noqa: E402
from llmsim.perf.hardware import load_hardware  # noqa: E402
from llmsim.perf.roofline import (CATEGORIES, CATEGORY, FIT_FILE, MEMORY_BOUND, AttnShape,  # noqa: E402
                                  attention_exec, op_cost)

ATTN_STRIDE = 3  # attention.csv has ~19k rows per bundle; every 3rd is plenty for a few parameters
FIT_POINTS = 1500  # points per fit (the error table uses them all)
CHUNK = 256  # candidate parameter sets evaluated at once (bounds the candidates x samples array)


def bundles(profiles: Path):
    """(hardware, model name, tp, tp dir) of every measured bf16 bundle."""
    for meta in sorted(profiles.glob("*/*/*/bf16/meta.yaml")):
        m = yaml.safe_load(meta.read_text())
        hw, model = meta.parents[3].name, f"{meta.parents[2].name}/{meta.parents[1].name}"
        for tp in m.get("tp_degrees", []):
            yield hw, model, int(tp), meta.parent / f"tp{tp}"


def samples(profiles: Path, fp: int = 2) -> list[dict]:
    """One dict per measured point: hw, cat, meas (ns), peak, bw, the op's executed (fl, by);
    attention points also nd (decode requests) and span (longest context)."""
    out = []
    for hw_name, model_name, tp, d in bundles(profiles):
        hw = load_hardware(hw_name, ROOT / "configs" / "hardware")
        m = load_model_spec(ROOT / "configs" / "model", model_name)
        if m.moe is not None:  # the stored fit and docs/roofline.md's table are for the dense bundles
            continue
        base = dict(hw=hw_name, tp=tp, model=model_name, peak=hw.peak_flops("bfloat16"), bw=hw.mem_bw)
        for fname, key in (("dense.csv", "tokens"), ("per_sequence.csv", "sequences")):
            for r in csv.DictReader(open(d / fname)):
                if r["layer"] in CATEGORY:
                    n = int(r[key])
                    fl, by = op_cost(m, r["layer"], n, n, None, tp, fp)
                    out.append(dict(base, layer=r["layer"], cat=CATEGORY[r["layer"]], fl=fl, by=by,
                                    meas=float(r["time_us"]) * 1e3))
        for i, r in enumerate(csv.DictReader(open(d / "attention.csv"))):
            pc, kp, nd, kd = (int(r[k]) for k in ("prefill_chunk", "kv_prefill", "n_decode", "kv_decode"))
            if i % ATTN_STRIDE or not (pc or nd):
                continue
            a = AttnShape.of([(pc, kp)] if pc else [], [kd] * nd)
            fl, by = attention_exec(m, a, tp, fp, fp)
            out.append(dict(base, layer="attention", cat="attention_prefill" if pc else "attention_decode",
                            fl=fl, by=by, nd=nd, span=a.max_ctx, meas=float(r["time_us"]) * 1e3))
    return out


def arr(rows, key):
    return np.array([r[key] for r in rows], dtype=float)


def predict(rows, fit_table) -> np.ndarray:
    """As RooflineTimer does (roofline.op_time_ns / attention_time_ns), vectorised."""
    out = np.empty(len(rows))
    for cat in {r["cat"] for r in rows}:
        idx = [i for i, r in enumerate(rows) if r["cat"] == cat]
        sel, e = [rows[i] for i in idx], fit_table[cat]
        roof = np.maximum(arr(sel, "fl") / (arr(sel, "peak") * e["eff_compute"]),
                          arr(sel, "by") / (arr(sel, "bw") * e["eff_memory"])) * 1e9
        if cat == "attention_prefill":
            roof = np.maximum(roof, arr(sel, "span") * e["span_ns"])
        elif cat == "attention_decode":
            roof = roof + arr(sel, "nd") * e["per_seq_ns"]
        out[idx] = roof + e["overhead_ns"]
    return out


def fit(fl, by, peak, bw, meas, add=None, span=None, fit_compute=True):
    """Minimise mean |log(pred/meas)| over (eff_compute, eff_memory, overhead, x) where
    pred = max(roofline, x * span) + overhead + x * add (at most one of add, span): a coarse
    log grid, then three rounds of local refinement (no scipy needed)."""
    if len(meas) > FIT_POINTS:  # a fixed random subset keeps the grid search to seconds
        pick = np.random.default_rng(0).choice(len(meas), FIT_POINTS, replace=False)
        fl, by, peak, bw, meas = fl[pick], by[pick], peak[pick], bw[pick], meas[pick]
        add, span = (None if add is None else add[pick]), (None if span is None else span[pick])
    lm = np.log(meas)
    zero = np.zeros_like(meas)
    add, span = (zero if add is None else add), (zero if span is None else span)
    with_x = bool(add.any() or span.any())

    def search(ecs, ems, ohs, xs):
        g = np.array(np.meshgrid(ecs, ems, ohs, xs, indexing="ij")).reshape(4, -1)
        best, arg = np.inf, None
        for s in range(0, g.shape[1], CHUNK):
            ec, em, oh, x = (v[:, None] for v in g[:, s:s + CHUNK])
            pred = np.maximum(np.maximum(fl / (peak * ec), by / (bw * em)) * 1e9, x * span) + oh + x * add
            loss = np.abs(np.log(pred) - lm).mean(axis=1)
            i = int(np.argmin(loss))
            if loss[i] < best:
                best, arg = loss[i], g[:, s + i]
        return arg

    def around(v, span_, floor):
        return np.unique(np.concatenate([[0.0], max(v, floor) * np.geomspace(1 / span_, span_, 7)]))

    effs = np.geomspace(0.02, 4.0, 20)
    p = search(effs if fit_compute else [1.0], effs, np.concatenate([[0.0], np.geomspace(200, 2e5, 20)]),
               np.concatenate([[0.0], np.geomspace(1, 2000, 12)]) if with_x else [0.0])
    for s in (1.4, 1.12, 1.03):
        p = search(p[0] * np.geomspace(1 / s, s, 7) if fit_compute else [1.0], p[1] * np.geomspace(1 / s, s, 7),
                   around(p[2], s, 100), around(p[3], s, 1) if with_x else [0.0])
    return [round(float(p[0]), 4), round(float(p[1]), 4), round(float(p[2])), round(float(p[3]), 2)]


def fit_category(rows, c):
    sel = [r for r in rows if r["cat"] == c]
    x = dict(add=arr(sel, "nd")) if c == "attention_decode" else dict(span=arr(sel, "span")) \
        if c == "attention_prefill" else {}
    ec, em, oh, xv = fit(arr(sel, "fl"), arr(sel, "by"), arr(sel, "peak"), arr(sel, "bw"), arr(sel, "meas"),
                         fit_compute=c not in MEMORY_BOUND, **x)
    e = dict(eff_compute=ec, eff_memory=em, overhead_ns=oh)
    if c == "attention_decode":
        e["per_seq_ns"] = xv
    elif c == "attention_prefill":
        e["span_ns"] = xv
    return e


def fit_all(rows):
    doc = {"default": {c: fit_category(rows, c) for c in CATEGORIES}, "by_hardware": {}}
    for h in sorted({r["hw"] for r in rows}):
        own = [r for r in rows if r["hw"] == h]
        doc["by_hardware"][h] = {c: fit_category(own, c) for c in CATEGORIES}
    return doc


TABLE_CATS = ("gemm", "attention", "attention_prefill", "attention_decode", "norm", "elementwise", "embedding",
              "lm_head", "sampler")


def table(rows, doc) -> str:
    """Markdown: per hardware and category, |pred/meas - 1| median and mean, with the default fit
    (what hardware without bundles gets) and with the hardware's own fit."""
    lines = ["| hardware | category | points | default fit: median | mean | own fit: median | mean |",
             "|---|---|---|---|---|---|---|"]
    for h in sorted({r["hw"] for r in rows}):
        for c in TABLE_CATS:
            sel = [r for r in rows if r["hw"] == h and (r["cat"] == c or r["layer"] == c)]
            if not sel:
                continue
            meas, cells = arr(sel, "meas"), []
            for t in (doc["default"], doc["by_hardware"].get(h, doc["default"])):
                err = np.abs(predict(sel, t) / meas - 1) * 100
                cells += [f"{np.median(err):.1f} %", f"{err.mean():.1f} %"]
            lines.append(f"| {h} | {c} | {len(sel)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=ROOT / "configs" / "hardware" / FIT_FILE)
    ap.add_argument("--check", action="store_true", help="print the error table of the stored fit only")
    args = ap.parse_args()
    rows = samples(ROOT / "profiles")
    if args.check:
        doc = json.loads(args.out.read_text())
    else:
        doc = fit_all(rows)
        doc = {"note": "roofline efficiency factors per op category; written by scripts/fit_roofline.py "
                       "from the bf16 bundles under profiles/ (eager-mode vLLM 0.19)", **doc}
        args.out.write_text(json.dumps(doc, indent=2) + "\n")
        print(f"wrote {args.out}", file=sys.stderr)
    print(table(rows, doc))


if __name__ == "__main__":
    main()
