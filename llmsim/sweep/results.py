"""A point's figures (from llmsim.run's Results), its own output files, and the sweep's tidy table
(DIR/results.csv and DIR/results.parquet), written atomically."""
from __future__ import annotations

import json
import math
from pathlib import Path

from ..errors import InputError
from ..metrics import requests_csv_lines, summary_json, unfinished_csv
from ..outputs import reserve

PERCENTILES = ("mean", "p50", "p90", "p99")
LATENCIES = ("ttft", "tpot", "itl", "latency")
METRICS = (["request_throughput_per_s", "output_tok_per_s", "total_tok_per_s", "goodput_req_per_s", "slo_attainment"]
           + [f"{m}_{s}_ms" for m in LATENCIES for s in PERCENTILES]
           + ["peak_mem_bytes", "preemptions", "requests_finished", "requests_unfinished", "simulated_s",
              "bubble_fraction_mean", "bubble_fraction_max"])
POINT_FILES = ("requests.csv", "unfinished.csv", "summary.json", "workload.jsonl", "cluster.json", "point.json")
_INTS = {"peak_mem_bytes", "preemptions", "requests_finished", "requests_unfinished"}  # nullable: error rows
RESULT_FILE = "result.json"  # written last: its presence means the point's folder is complete


def point_metrics(res, slo: dict) -> dict:
    """One point's figures. Throughputs, percentiles and preemptions are Results.summary's;
    total tokens/s and goodput are worked out from Results.requests; the peak per-device memory is
    the largest heartbeat sample (weights alone when the run is shorter than one sample)."""
    s = res.summary.iloc[0]
    secs = s["simulated_ns"] / 1e9
    reqs = res.requests
    met = reqs.ttft_ns <= slo.get("ttft_ms", math.inf) * 1e6
    met &= reqs.tpot_ns <= slo.get("tpot_ms", math.inf) * 1e6
    asked = int(s["requests_finished"]) + int(s["requests_unfinished"])
    weights = max(i.memory.used_bytes(0) for i in res.sim.instances)
    sampled = int(res.heartbeats.npu_mem_bytes.max()) if len(res.heartbeats) else 0
    row = {
        "request_throughput_per_s": float(s["request_throughput_per_s"]),
        "output_tok_per_s": float(s["gen_throughput_tok_per_s"]),
        "total_tok_per_s": (int(s["input_tokens"]) + int(s["generated_tokens"])) / secs if secs > 0 else 0.0,
        "goodput_req_per_s": int(met.sum()) / secs if secs > 0 else 0.0,
        "slo_attainment": int(met.sum()) / asked if asked else math.nan,
    }
    for m in LATENCIES:
        for stat in PERCENTILES:
            row[f"{m}_{stat}_ms"] = float(s[f"{m}_{'median' if stat == 'p50' else stat}_ms"])
    row.update(peak_mem_bytes=max(weights, sampled), preemptions=int(s["preemptions"]),
               requests_finished=int(s["requests_finished"]), requests_unfinished=int(s["requests_unfinished"]),
               simulated_s=secs)
    # pipeline bubbles (llmsim/accounting.py): the stages' mean and the worst stage's
    bubbles = [r["bubble_fraction"] for r in res.raw.stages or () if r["window"] == "run"]
    row.update(bubble_fraction_mean=sum(bubbles) / len(bubbles) if bubbles else math.nan,
               bubble_fraction_max=max(bubbles) if bubbles else math.nan)
    return row


def point_files(res) -> dict:
    """The point's own outputs, as text: per-request CSV, unfinished requests, summary."""
    stats = res.summary.iloc[0].drop("backend").to_dict()
    stats = {k: (v.item() if hasattr(v, "item") else v) for k, v in stats.items()}
    return {"requests.csv": "".join(requests_csv_lines(res.raw, res.sim.instances)),
            "unfinished.csv": unfinished_csv(res.raw), "summary.json": summary_json(stats)}


def _json(obj) -> str:
    clean = {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in obj.items()}
    return json.dumps(clean, indent=1, sort_keys=False) + "\n"


def write_point(folder: Path, files: dict, result: dict) -> None:
    """Write a point's folder; result.json last, so a folder holding it is complete."""
    paths = {str(folder / name): text for name, text in files.items()}
    with reserve([(p, "point output") for p in paths], {}) as out:
        out.write(paths)
    with reserve([(folder / RESULT_FILE, "point result")], {}) as out:
        out.write({str(folder / RESULT_FILE): _json(result)})


def read_result(folder: Path) -> dict | None:
    """A finished point's stored result, or None (no folder, incomplete, or unreadable)."""
    try:
        doc = json.loads((folder / RESULT_FILE).read_text())
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) and doc.get("status") in ("ok", "error") else None


def table(points, results: dict, layouts: dict):
    """The tidy table: one row per point in the spec's order; point id, the axes, the layout,
    status, error, the figures, wall time."""
    import pandas as pd

    axes = [a for a, _ in points[0].params] if points else []
    rows = []
    for p in points:
        r = results[p.id]
        params = {a: json.dumps(v) if isinstance(v, (list, dict)) else v for a, v in p.params}  # one cell each
        row = {"point_id": p.id, "index": p.index, **params, **layouts[p.id],
               "timing": r.get("timing", ""), "status": r["status"], "error": r.get("error", "")}
        row.update({m: r.get(m) for m in METRICS})
        row["wall_s"] = r.get("wall_s")
        rows.append(row)
    cols = ["point_id", "index", *axes, "layout", "num_npus", "timing", "status", "error", *METRICS, "wall_s"]
    df = pd.DataFrame(rows, columns=cols)
    for m in METRICS + ["wall_s"]:
        df[m] = pd.to_numeric(df[m], errors="coerce").astype(float if m not in _INTS else "Int64")
    return df


def write_table(df, out_dir: Path) -> list[str]:
    """results.csv and results.parquet, both renamed into place only once both are written."""
    import io

    csv_path, pq_path = out_dir / "results.csv", out_dir / "results.parquet"
    buf = io.BytesIO()
    try:
        # Axis columns may mix types (1 and "a"): parquet wants one type per column.
        flat = df.copy()
        for c in flat.columns:
            if flat[c].dtype == object and len({type(v) for v in flat[c].dropna()}) > 1:
                flat[c] = flat[c].astype(str)
        flat.to_parquet(buf, index=False)
    except ImportError:
        raise InputError("results.parquet needs pyarrow (pip install pyarrow)") from None
    with reserve([(csv_path, "results table"), (pq_path, "results table")], {}) as out:
        out.write({str(csv_path): df.to_csv(index=False, lineterminator="\n"), str(pq_path): buf.getvalue()})
    return [str(csv_path), str(pq_path)]


def read_table(out_dir: str):
    """A sweep folder's table (parquet, else CSV)."""
    import pandas as pd

    d = Path(out_dir)
    if (d / "results.parquet").is_file():
        try:
            return pd.read_parquet(d / "results.parquet")
        except ImportError:
            pass
    if (d / "results.csv").is_file():
        return pd.read_csv(d / "results.csv")
    raise InputError(f"{out_dir}: no results.csv or results.parquet (run `llmsim sweep run` first)")
