"""The per-stage accounting and the per-interval time series as a table and CSV files (pure text)."""
import csv
import io

from .accounting import CAUSES, DP_CAUSES

STAGE_COLUMNS = ["window", "window_start_s", "window_end_s", "instance", "stage", "npus", "layers", "weight_bytes",
                 "wall_ns", "busy_compute_ns", "busy_comm_ns", *(f"idle_{c}_ns" for c in CAUSES), "busy_pct",
                 "bubble_fraction"]
TIMESERIES_COLUMNS = ["t_s", "instance", "running", "waiting", "kv_blocks_used", "kv_blocks_total", "prompt_tokens",
                      "generated_tokens"]
_SHORT = {"fill_drain": "fill/drain", "starved": "starved", "inflight_cap": "cap", "batch_queue": "queue",
          "admission": "admit", "upstream": "upstream", "transfer": "transfer", "dp_peer": "dp wait",
          "dp_dummy": "dummy"}


def _csv(header, rows) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    w.writerows(rows)
    return buf.getvalue()


def stages_csv(rows: list[dict]) -> str:
    return _csv(STAGE_COLUMNS, ([r[c] for c in STAGE_COLUMNS] for r in rows))


def timeseries_csv(heartbeats) -> str:
    """One row per log interval per instance; tokens are those computed in the interval."""
    return _csv(TIMESERIES_COLUMNS, ([hb.t_ns / 1e9, i, b.running, b.waiting, b.kv_blocks_used, b.kv_blocks_total,
                                      b.prompt_tokens, b.generated_tokens]
                                     for hb in heartbeats for i, b in enumerate(hb.instances)))


def pipeline_table(rows: list[dict]) -> str:
    """The whole run per stage: layers, weights, busy, each idle cause, as % of the run's wall time."""
    run = [r for r in rows if r["window"] == "run"]
    if not run:
        return ""
    # the data-parallel columns only when a rank has them (they are 0 for every other run)
    causes = [c for c in CAUSES if c not in DP_CAUSES or any(r[f"idle_{c}_ns"] for r in run)]
    head = ["inst", "stage", "layers", "weights GiB", "compute %", "comm %", *(f"{_SHORT[c]} %" for c in causes),
            "bubble"]
    body = []
    for r in run:
        pct = lambda ns: f"{100 * ns / r['wall_ns']:.1f}" if r["wall_ns"] else "0.0"
        body.append([str(r["instance"]), str(r["stage"]), str(r["layers"]), f"{r['weight_bytes'] / 2**30:.2f}",
                     pct(r["busy_compute_ns"]), pct(r["busy_comm_ns"]), *(pct(r[f"idle_{c}_ns"]) for c in causes),
                     f"{r['bubble_fraction']:.3f}"])
    widths = [max(len(h), *(len(b[k]) for b in body)) for k, h in enumerate(head)]
    fmt = lambda cells: "  " + "  ".join(c.rjust(w) for c, w in zip(cells, widths))
    return "\n".join(["Pipeline stages (share of the run's wall time; idle causes: docs/pipeline.md)",
                      fmt(head), *(fmt(b) for b in body)])
