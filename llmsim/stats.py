"""Latency statistics as the validation compares them (ms; linear-interpolation percentiles)."""
import math
from collections.abc import Sequence

STATS = ("mean", "median", "p90", "p95", "p99")


def percentile(values: Sequence[float], q: float) -> float:
    """Linear interpolation at rank q/100 * (n - 1) of the sorted values (numpy's default)."""
    xs = sorted(values)
    if not xs:
        return math.nan
    pos = q / 100 * (len(xs) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def summarize(values: Sequence[float]) -> dict[str, float]:
    if not values:
        return {s: math.nan for s in STATS}
    return {"mean": sum(values) / len(values), "median": percentile(values, 50), "p90": percentile(values, 90),
            "p95": percentile(values, 95), "p99": percentile(values, 99)}


def diff_pct(sim: float, ref: float) -> float:
    return (sim - ref) / ref * 100 if ref else math.nan
