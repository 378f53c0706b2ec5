"""Profile CSV rows and the reference's interpolation rules on them.

Floating-point expressions keep the reference's (LLMServingSim 2.0 trace generator) operation
order on purpose: a different but algebraically equal order can move a truncated result by 1 ns.
"""
from __future__ import annotations

import bisect
import csv
from pathlib import Path

from llmsim.perf.errors import ProfileError

CACHE_CAP = 1 << 16  # entries per lookup cache; cleared wholesale when full


# ---------------------------------------------------------------- loading

def us_to_ns(text: str) -> int:
    # Same as the reference's pandas (x*1000).round() (half-even); checked equal on every
    # bundled row.
    return max(1, round(float(text) * 1000.0))


def read_rows(path: Path) -> tuple[dict[str, int], list[list[str]]] | None:
    """(column index by name, non-empty rows), or None when the file or its header is absent."""
    if not path.is_file():
        return None
    with open(path, newline="") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None:
            return None
        rows = [r for r in reader if r]
    return {name.strip(): i for i, name in enumerate(header)}, rows


def column(cols: dict[str, int], name: str, path: Path) -> int:
    if name not in cols:
        raise ProfileError(f"{path}: missing column '{name}' (has: {', '.join(cols)})")
    return cols[name]


def load_1d(path: Path, key_col: str) -> dict[str, tuple[list[int], list[int]]]:
    """layer -> (sorted keys, ns values); duplicate keys resolve last-wins like the reference."""
    data = read_rows(path)
    if data is None:
        return {}
    cols, rows = data
    il, ik, it = column(cols, "layer", path), column(cols, key_col, path), column(cols, "time_us", path)
    grouped: dict[str, dict[int, int]] = {}
    for r in rows:
        grouped.setdefault(r[il], {})[int(r[ik])] = us_to_ns(r[it])
    return {layer: (sorted(d), [d[k] for k in sorted(d)]) for layer, d in grouped.items()}


def load_skew_alphas(path: Path) -> dict[str, float] | None:
    """Skew alpha by bucket key (skew_fit.csv), or None when the table is absent."""
    data = read_rows(path)
    if data is None:
        return None
    cols, rows = data
    alphas = {}
    for r in rows:
        raw = r[cols["raw_key"]] if "raw_key" in cols else ""
        if raw:
            key = raw
        else:
            key = "pc={}|{}|{}|{}|{}".format(
                int(float(r[cols["pc"]])), r[cols["n_label"]], r[cols["skew_rate_label"]],
                r[cols["kv_big_label"]], r[cols["kp_label"]])
        alphas[key] = float(r[cols["alpha"]])
    return alphas


# ---------------------------------------------------------------- interpolation rules

def bounds(keys: list[int], q: int) -> tuple[int, int]:
    """Bracketing indices; (0, 0) below the first key, the last two above the last."""
    idx = bisect.bisect_right(keys, q)
    if idx == 0:
        return 0, 0
    if idx >= len(keys):
        return (0, 0) if len(keys) < 2 else (len(keys) - 2, len(keys) - 1)
    return idx - 1, idx


def linear(x0: int, y0: float, x1: int, y1: float, q: int) -> float:
    if x1 == x0:
        return y0
    t = (q - x0) / (x1 - x0)
    return y0 + t * (y1 - y0)


def interp_1d(keys: list[int], values: list[int], q: int) -> float:
    """Clamp below the first key, linear inside, extrapolate from the last two above."""
    if not keys:
        return 0
    if len(keys) == 1:
        return values[0]
    lo, hi = bounds(keys, q)
    if lo == hi:
        return values[lo]
    return linear(keys[lo], values[lo], keys[hi], values[hi], q)


def bracket(values: list[int], q: int) -> tuple[int, int, float]:
    """(lo, hi, t) on a sorted axis; q <= min or a single value pins the lower sample."""
    n = len(values)
    if n == 1 or q <= values[0]:
        return 0, 0, 0.0
    idx = bisect.bisect_right(values, q)
    lo, hi = (n - 2, n - 1) if idx >= n else (idx - 1, idx)
    x0, x1 = values[lo], values[hi]
    if x1 == x0:
        return lo, hi, 0.0
    return lo, hi, (q - x0) / (x1 - x0)


def row_at(keys: list[int], vals: list, q: int) -> float:
    """A profile row at q: bracket and the linear step in one call (it runs per decode step)."""
    n = len(keys)
    if n == 1:
        return vals[0]
    if q <= keys[0]:
        lo = hi = 0
        u = 0.0
    else:
        idx = bisect.bisect_right(keys, q)
        lo, hi = (n - 2, n - 1) if idx >= n else (idx - 1, idx)
        x0, x1 = keys[lo], keys[hi]
        u = 0.0 if x1 == x0 else (q - x0) / (x1 - x0)
    return vals[lo] + u * (vals[hi] - vals[lo])


def bucket_label(bins, labels, val) -> str:
    # Intervals (bins[i], bins[i+1]]; anything beyond the last edge takes the last label.
    i = bisect.bisect_left(bins, val, 1) - 1  # the first i with val <= bins[i + 1]
    return labels[i] if i < len(labels) else labels[-1]
