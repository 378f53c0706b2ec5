"""PNG figures of a finished run (`llmsim plot`, or draw_all from Python).

Figures are built as matplotlib.figure.Figure objects on an Agg canvas, never through pyplot:
no global figure registry to leak into or close, and no backend switch imposed on a caller
(a notebook keeps its own). Style settings live in an rc_context, so they end with the call."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import EngFormatter, PercentFormatter

from .errors import InputError
from .plot_data import CAUSES, DP_COLUMNS, UNACCOUNTED, RunData, cdf, downsample, load_run, per_instance, stage_shares, \
    throughput, time_unit

__all__ = ["draw_all", "load_run", "RunData", "cdf", "stage_shares", "throughput"]

STYLE = {"font.size": 9, "axes.titlesize": 10, "axes.grid": True, "grid.alpha": 0.3, "legend.fontsize": 8,
         "legend.framealpha": 0.8, "savefig.dpi": 110}
# busy in dark blues, idle causes in distinct lighter colours, unaccounted grey
COLOURS = ["#1f4e79", "#4a90c8", "#ff7f0e", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#bcbd22", "#17becf",
           "#2ca02c", "#98df8a", "#b0b0b0"]
MAX_LEGEND_LINES = 12  # beyond this, per-instance legends crowd out the data


def _figure(nrows=1, ncols=1, size=(8, 4.5), **kw):
    fig = Figure(figsize=size, layout="constrained")
    FigureCanvasAgg(fig)
    return fig, fig.subplots(nrows, ncols, squeeze=False, **kw)


def _save(fig: Figure, path: Path) -> Path:
    """Temp file in the same folder, then rename: a reader never sees half a PNG."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            fig.savefig(f, format="png")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _instance_label(inst: int, many: bool) -> str | None:
    return f"instance {inst}" if many else None


def _legend(ax, **kw):
    handles, labels = ax.get_legend_handles_labels()
    if labels and len(labels) <= MAX_LEGEND_LINES:
        ax.legend(**kw)


def _instance_legend(fig, ax):
    """Per-instance lines fill the whole time axis: their legend goes beside the plot, not on it."""
    handles, labels = ax.get_legend_handles_labels()
    if labels and len(labels) <= MAX_LEGEND_LINES:
        fig.legend(handles, labels, loc="outside right upper")


def draw_latency_cdfs(data: RunData, path: Path) -> Path:
    req = data.requests
    # TPOT is undefined for one-token outputs; the CSV writes 0 there, which is not a measurement
    panels = [("TTFT", "time to first token", req["TTFT"]),
              ("TPOT", "time per output token (outputs > 1 token)", req.loc[req["output"] > 1, "TPOT"]),
              ("latency", "end-to-end latency", req["latency"])]
    fig, axes = _figure(1, 3, size=(12, 4), sharey=True)
    for ax, (name, title, ns) in zip(axes[0], panels):
        vals = ns.to_numpy(dtype=float)
        div, unit = time_unit(vals)
        x, y = cdf(vals / div)
        ax.set_title(f"{name}: {title}")
        ax.set_xlabel(f"{name} ({unit})")
        if len(x):
            ax.plot(x, y, drawstyle="steps-post", color="#1f4e79")
            for q, style in ((0.5, "--"), (0.99, ":")):
                v = np.nanquantile(vals, q) / div  # from all values: x may be thinned
                ax.axvline(v, ls=style, color="#d62728", lw=1, label=f"p{round(q * 100)} = {v:.4g} {unit}")
            _legend(ax, loc="lower right")
        else:
            ax.text(0.5, 0.5, "no values", ha="center", transform=ax.transAxes)
        ax.set_xlim(left=0)
        ax.set_ylim(0, 1.02)
    axes[0][0].set_ylabel("fraction of requests")
    axes[0][0].yaxis.set_major_formatter(PercentFormatter(1.0))
    fig.suptitle(f"Latency distributions, {len(req):,} finished requests")
    return _save(fig, path)


def draw_throughput(data: RunData, path: Path) -> Path:
    tp = downsample(throughput(data.timeseries))
    fig, axes = _figure(2, 1, sharex=True)
    for ax, col, what, colour in ((axes[0][0], "generated_tps", "generated (decode)", "#1f4e79"),
                                  (axes[1][0], "prompt_tps", "prompt (prefill)", "#ff7f0e")):
        # a rate holds over its interval (t_prev, t]: steps-pre, with the first interval's start (0) added
        ax.plot(np.r_[0.0, tp["t_s"]], np.r_[tp[col].iloc[0], tp[col]], drawstyle="steps-pre", lw=1, color=colour)
        ax.set_ylabel(f"{what}\ntokens/s")
        ax.yaxis.set_major_formatter(EngFormatter(sep=""))
        ax.set_ylim(bottom=0)
    axes[1][0].set_xlabel("simulated time (s)")
    axes[1][0].set_xlim(left=0)
    fig.suptitle("Token throughput, all instances (tokens computed per log interval / interval length)")
    return _save(fig, path)


def draw_queues(data: RunData, path: Path) -> Path:
    groups = per_instance(data.timeseries)
    many = len(groups) > 1
    fig, axes = _figure(2, 1, sharex=True)
    for inst, g in groups.items():
        g = downsample(g)
        for ax, col in ((axes[0][0], "running"), (axes[1][0], "waiting")):
            # a snapshot at each interval end, so points joined by lines, not steps
            ax.plot(g["t_s"], g[col], lw=1, label=_instance_label(inst, many))
    for ax, col in ((axes[0][0], "running"), (axes[1][0], "waiting")):
        ax.set_ylabel(f"{col} requests")
        ax.set_ylim(bottom=0)
        ax.yaxis.get_major_locator().set_params(integer=True)
    _instance_legend(fig, axes[0][0])
    axes[1][0].set_xlabel("simulated time (s)")
    axes[1][0].set_xlim(left=0)
    fig.suptitle("Scheduler queues at the end of each log interval" + (", per instance" if many else ""))
    return _save(fig, path)


def draw_kv_usage(data: RunData, path: Path) -> Path:
    fig, axes = _figure()
    ax = axes[0][0]
    for inst, g in per_instance(data.timeseries).items():
        total = g["kv_blocks_total"].to_numpy(dtype=float)
        with np.errstate(divide="ignore", invalid="ignore"):
            g = g.assign(pct=np.where(total > 0, g["kv_blocks_used"] / total * 100, np.nan))
        g = downsample(g)
        ax.plot(g["t_s"], g["pct"], lw=1,
                label=f"instance {inst} ({int(total.max()) if len(total) else 0:,} blocks)")
    ax.set_ylim(0, 102)
    ax.yaxis.set_major_formatter(PercentFormatter(100))
    ax.set_ylabel("KV cache blocks used (% of total)")
    ax.set_xlabel("simulated time (s)")
    ax.set_xlim(left=0)
    _instance_legend(fig, ax)
    ax.set_title("KV cache usage per instance")
    return _save(fig, path)


def draw_stage_utilisation(data: RunData, path: Path) -> Path:
    shares = stage_shares(data.stages)
    # one colour per cause, fixed (the last, grey, for what is not accounted for); the data-parallel
    # causes only when some rank has them
    colour = dict(zip([*CAUSES, UNACCOUNTED], COLOURS))
    cols = [c for c in CAUSES if c not in DP_COLUMNS or (shares[c] > 0).any()]
    cols += [UNACCOUNTED] if (shares[UNACCOUNTED] > 0.1).any() else []
    names = {**CAUSES, UNACCOUNTED: "not accounted for"}
    labels = [f"instance {i} / stage {s}" for i, s in shares.index]
    fig, axes = _figure(size=(10, 1.6 + 0.35 * max(len(labels), 2) + 0.1 * len(cols)))
    ax = axes[0][0]
    ypos = np.arange(len(labels))
    left = np.zeros(len(labels))
    for col in cols:
        vals = shares[col].to_numpy()
        ax.barh(ypos, vals, left=left, color=colour[col], label=names[col], height=0.7)
        left += vals
    busy = shares[list(cols[:2])].sum(axis=1).to_numpy()
    for y, b in zip(ypos, busy):
        ax.text(101, y, f"busy {b:.1f}%", va="center", fontsize=8)
    ax.set_yticks(ypos, labels)
    ax.invert_yaxis()  # instance 0 / stage 0 on top, as a pipeline is usually drawn
    ax.set_xlim(0, 115)
    ax.set_xticks(np.arange(0, 101, 10))
    ax.xaxis.set_major_formatter(PercentFormatter(100))
    ax.set_xlabel("share of the stage's wall time over the whole run (%)")
    ax.grid(axis="y", visible=False)
    fig.legend(loc="outside lower center", ncol=2, frameon=False)
    ax.set_title("Pipeline stage utilisation: busy time and why each stage sat idle")
    return _save(fig, path)


def draw_all(data: RunData, out_dir) -> list[Path]:
    """Every figure the data allows, as PNGs in out_dir (created); returns the written paths."""
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise InputError(f"{out}: cannot create the plot folder ({e.strerror or e})") from None
    jobs = []
    if not data.requests.empty:
        jobs.append((draw_latency_cdfs, "latency_cdfs.png"))
    if data.timeseries is not None and not data.timeseries.empty:
        jobs += [(draw_throughput, "throughput.png"), (draw_queues, "queues.png"), (draw_kv_usage, "kv_usage.png")]
    if data.stages is not None and not stage_shares(data.stages).empty:
        jobs.append((draw_stage_utilisation, "stage_utilisation.png"))
    written = []
    with matplotlib.rc_context(STYLE):
        for draw, name in jobs:
            try:
                written.append(draw(data, out / name))
            except OSError as e:
                raise InputError(f"{out / name}: cannot write ({e.strerror or e})") from None
    return written
