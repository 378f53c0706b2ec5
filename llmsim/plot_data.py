"""What `llmsim plot` draws, as numbers: the run's files read and checked (load_run) and the pure
transforms behind each figure (cdf, throughput, stage_shares), kept apart from matplotlib so
they are testable and cheap to import."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from .errors import InputError

REQUEST_COLUMNS = ["instance id", "input", "output", "arrival", "end_time", "latency", "TTFT", "TPOT"]
TIMESERIES_COLUMNS = ["t_s", "instance", "running", "waiting", "kv_blocks_used", "kv_blocks_total",
                      "prompt_tokens", "generated_tokens"]
BUSY = {"busy_compute_ns": "busy: compute", "busy_comm_ns": "busy: communication"}
IDLE = {
    "idle_fill_drain_ns": "idle: pipeline fill/drain",
    "idle_starved_ns": "idle: starved (no work)",
    "idle_inflight_cap_ns": "idle: in-flight cap",
    "idle_batch_queue_ns": "idle: batch queue (engine blocked on its oldest batch)",
    "idle_admission_ns": "idle: admission (KV / max_num_seqs)",
    "idle_upstream_ns": "idle: waiting for upstream stage",
    "idle_transfer_ns": "idle: stage transfer",
    "idle_dp_peer_ns": "idle: waiting for the DP group's slowest rank",
    "idle_dp_dummy_ns": "idle: DP dummy batch (nothing scheduled on the rank)",
}
CAUSES = {**BUSY, **IDLE}
DP_COLUMNS = ("idle_dp_peer_ns", "idle_dp_dummy_ns")  # absent from files written before them: read as 0
STAGES_COLUMNS = ["instance", "stage", "wall_ns", *(c for c in CAUSES if c not in DP_COLUMNS)]
UNACCOUNTED = "unaccounted"


@dataclass
class RunData:
    """A run's output files as DataFrames; None for an optional file that is absent."""
    output: Path
    requests: pd.DataFrame
    timeseries: pd.DataFrame | None = None
    stages: pd.DataFrame | None = None
    notes: list = field(default_factory=list)  # one line each: what was skipped and why


def _read(path: Path, required: list, usecols_only: bool) -> pd.DataFrame:
    """A CSV with `required` numeric columns, or one InputError line naming the file and the fault."""
    try:
        # usecols skips converting the ITL lists, most of the per-request CSV's bytes
        df = pd.read_csv(path, usecols=(lambda c: c in required) if usecols_only else None)
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, OSError) as e:
        raise InputError(f"{path}: not a readable CSV ({' '.join(str(e).split())})") from None
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise InputError(f"{path}: missing column(s) {', '.join(map(repr, missing))}")
    for c in required:
        if not pd.api.types.is_numeric_dtype(df[c]):
            bad = pd.to_numeric(df[c], errors="coerce").isna() & df[c].notna()
            row = int(np.argmax(bad.to_numpy()))
            raise InputError(f"{path}: column '{c}' line {row + 2}: not a number: {df[c].iloc[row]!r}")
    return df


def load_run(output_path) -> RunData:
    """The per-request CSV `output_path` and, when present, `<output>.timeseries.csv` and
    `<output>.stages.csv` written beside it."""
    out = Path(output_path)
    data = RunData(out, _read(out, REQUEST_COLUMNS, usecols_only=True))
    if data.requests.empty:
        data.notes.append(f"{out} has no finished requests: latency CDFs skipped")
    ts = Path(f"{out}.timeseries.csv")
    if ts.exists():
        data.timeseries = _read(ts, TIMESERIES_COLUMNS, usecols_only=False).sort_values(["instance", "t_s"])
        if data.timeseries.empty:
            data.notes.append(f"{ts.name} has no rows: throughput, queue and KV plots skipped")
    else:
        data.notes.append(f"no {ts.name} (a run with --log-interval 0?): throughput, queue and KV plots skipped")
    st = Path(f"{out}.stages.csv")
    if st.exists():
        data.stages = _read(st, STAGES_COLUMNS, usecols_only=False)
        for c in DP_COLUMNS:
            if c not in data.stages.columns:
                data.stages[c] = 0
        if run_rows(data.stages).empty:
            data.notes.append(f"{st.name} has no whole-run rows (window 'run'): stage utilisation plot skipped")
    else:
        data.notes.append(f"no {st.name}: stage utilisation plot skipped")
    return data


def cdf(values, max_points: int = 2000):
    """Empirical CDF as (x, y): x sorted, y[i] = fraction of values <= x[i] (NaN dropped).
    Over max_points values, evenly spaced ranks are kept (always the last): a 1e6-request CDF
    then draws as fast as a 2,000-request one and looks the same at figure resolution."""
    x = np.sort(np.asarray(values, dtype=float))
    x = x[~np.isnan(x)]
    n = len(x)
    y = np.arange(1, n + 1) / n if n else np.empty(0)
    if n > max_points:
        keep = np.unique(np.linspace(0, n - 1, max_points).round().astype(int))
        x, y = x[keep], y[keep]
    return x, y


def time_unit(values_ns) -> tuple:
    """(divisor, unit) so the median of values reads naturally: ms below 1 s, else s."""
    med = float(np.nanmedian(values_ns)) if len(values_ns) else 0.0
    return (1e6, "ms") if med < 1e9 else (1e9, "s")


def per_instance(ts: pd.DataFrame) -> dict:
    """{instance: its rows sorted by time}."""
    return {int(k): g.sort_values("t_s") for k, g in ts.groupby("instance", sort=True)}


def throughput(ts: pd.DataFrame) -> pd.DataFrame:
    """Cluster tokens/s per interval: columns t_s (interval end), prompt_tps, generated_tps.
    Each instance's rate is its tokens / its interval length (the first interval starts at 0);
    rates are summed on the union of all instances' interval ends, so instances logging on
    different grids still add up to the right token totals."""
    grid = np.unique(ts["t_s"].to_numpy(dtype=float))
    out = {"t_s": grid, "prompt_tps": np.zeros(len(grid)), "generated_tps": np.zeros(len(grid))}
    for g in per_instance(ts).values():
        t = g["t_s"].to_numpy(dtype=float)
        dt = np.diff(t, prepend=0.0)
        idx = np.searchsorted(t, grid, side="left")  # the instance's interval holding each grid interval
        inside = idx < len(t)
        for col, key in (("prompt_tokens", "prompt_tps"), ("generated_tokens", "generated_tps")):
            with np.errstate(divide="ignore", invalid="ignore"):
                rate = np.where(dt > 0, g[col].to_numpy(dtype=float) / dt, 0.0)
            out[key][inside] += rate[idx[inside]]
    return pd.DataFrame(out)


def downsample(df: pd.DataFrame, max_points: int = 2000) -> pd.DataFrame:
    """At most ~max_points rows: consecutive rows averaged in equal groups, time = the group's last
    (a mean keeps a rate's area and a queue's level; plain striding would alias spikes away)."""
    n = len(df)
    if n <= max_points:
        return df
    k = -(-n // max_points)
    groups = np.arange(n) // k
    agg = df.groupby(groups).mean(numeric_only=True)
    agg["t_s"] = df["t_s"].to_numpy()[np.minimum((agg.index.to_numpy() + 1) * k, n) - 1]
    return agg.reset_index(drop=True)


def run_rows(stages: pd.DataFrame) -> pd.DataFrame:
    """The whole-run rows: window == "run" (or, without that column, those spanning 0 .. run end)."""
    if "window" in stages.columns:
        return stages[stages["window"].astype(str) == "run"]
    end = stages["window_end_s"].max()
    return stages[(stages["window_start_s"] == 0) & (stages["window_end_s"] == end)]


def stage_shares(stages: pd.DataFrame) -> pd.DataFrame:
    """Per (instance, stage), each busy/idle cause as % of the stage's wall time, from the
    whole-run rows; an `unaccounted` column holds what the causes leave of wall (0 when they
    sum to it, as they should; shown only when not, so a gap is visible rather than hidden)."""
    rows = run_rows(stages).sort_values(["instance", "stage"])
    wall = rows["wall_ns"].to_numpy(dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        pct = {c: np.where(wall > 0, rows[c].to_numpy(dtype=float) / wall * 100, 0.0) for c in CAUSES}
    out = pd.DataFrame(pct, index=pd.MultiIndex.from_arrays(
        [rows["instance"].astype(int), rows["stage"].astype(int)], names=["instance", "stage"]))
    out[UNACCOUNTED] = (100 - out[list(CAUSES)].sum(axis=1)).clip(lower=0).where(wall > 0, 0.0)
    return out
