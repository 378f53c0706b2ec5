"""`llmsim sweep plot`: throughput against latency, the Pareto front, points coloured by layout."""
from __future__ import annotations

import math

from ..errors import InputError

THROUGHPUTS = ("output_tok_per_s", "total_tok_per_s", "request_throughput_per_s", "goodput_req_per_s")
LATENCY_DEFAULT = "latency_p99_ms"


def pareto_mask(latency, throughput) -> list[bool]:
    """True for the points no other point beats: lower-or-equal latency and higher-or-equal
    throughput, one of them strictly. Points with a missing value are never on the front; of
    identical points, the first is."""
    pts = [(lat, -thr, i) for i, (lat, thr) in enumerate(zip(latency, throughput))
           if not (lat is None or thr is None or math.isnan(lat) or math.isnan(thr))]
    best = -math.inf
    front = [False] * len(latency)
    for lat, neg_thr, i in sorted(pts):
        if -neg_thr > best:
            front[i] = True
            best = -neg_thr
    return front


def pareto(df, x: str = LATENCY_DEFAULT, y: str = THROUGHPUTS[0]):
    """The table's ok points on the Pareto front (low x, high y), by increasing x."""
    for col in (x, y):
        if col not in df.columns:
            raise InputError(f"results table: no column {col!r} (columns: {', '.join(map(str, df.columns))})")
    ok = df[df["status"] == "ok"] if "status" in df.columns else df
    mask = pareto_mask(ok[x].astype(float).tolist(), ok[y].astype(float).tolist())
    return ok[mask].sort_values(x, kind="stable")


def plot(df, x: str = LATENCY_DEFAULT, y: str = THROUGHPUTS[0]) -> bytes:
    """PNG bytes: y against x for the ok points, coloured by layout, the front drawn as a step line."""
    import io

    import matplotlib

    matplotlib.use("Agg")  # headless: no display, no GUI toolkit
    import matplotlib.pyplot as plt

    front = pareto(df, x, y)
    ok = df[df["status"] == "ok"] if "status" in df.columns else df
    fig, ax = plt.subplots(figsize=(7, 4.5))
    layouts = ok["layout"] if "layout" in ok.columns else ["all"] * len(ok)
    for name in sorted(set(layouts), key=str):
        sub = ok[layouts == name] if "layout" in ok.columns else ok
        ax.scatter(sub[x], sub[y], label=str(name).replace("x", " x ") if "layout" in ok.columns else None, s=28)
    ax.step(front[x], front[y], where="post", color="black", linewidth=1, label="Pareto front")
    ax.scatter(front[x], front[y], facecolors="none", edgecolors="black", s=80)
    ax.set_xlabel(x)
    ax.set_ylabel(y)
    ax.grid(True, alpha=0.3)
    ax.legend(title="layout", fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120)
    plt.close(fig)
    return buf.getvalue()
