"""Inter-token latencies without one stored integer per token.

Requests decoding together in a lane (decode_lanes.py) see the same gaps between tokens, so the
lane logs each gap once (GapLog) and a member's list is its own values plus runs of that log.
Memory then grows with steps and requests, not with tokens (for the 100k-request benchmark,
65 million gaps: about 520 MB as flat lists, some 25 MB this way), and the CSV text of a shared
gap is made once.
"""
from array import array

from bisect import bisect_right
from itertools import accumulate


class GapLog:
    """Gaps between a lane's consecutive completions; gaps[0] is unused (no previous one)."""

    __slots__ = ("gaps", "_text")

    def __init__(self):
        self.gaps = array("q")
        self._text: list[str] = []

    def text(self, start: int, stop: int) -> list[str]:
        if len(self._text) < stop:
            self._text += map(str, self.gaps[len(self._text):stop])
        return self._text[start:stop]


class Itl:
    """One request's inter-token latencies (ns), in order: own values and shared runs."""

    __slots__ = ("parts",)

    def __init__(self):
        self.parts: list = []  # array('q') of own values, or (GapLog, start, stop)

    def append(self, gap_ns: int) -> None:
        parts = self.parts
        if parts and type(parts[-1]) is array:
            parts[-1].append(gap_ns)
        else:
            parts.append(array("q", (gap_ns,)))

    def extend_shared(self, log: GapLog, start: int, stop: int) -> None:
        if stop > start:
            self.parts.append((log, start, stop))

    def __len__(self) -> int:
        return sum(len(p) if type(p) is array else p[2] - p[1] for p in self.parts)

    def __iter__(self):
        for p in self.parts:
            yield from (p if type(p) is array else p[0].gaps[p[1]:p[2]])

    def text(self) -> str:
        """"[a, b, c]", as the reference writes the list."""
        return "[" + ", ".join([", ".join(map(str, p)) if type(p) is array else ", ".join(p[0].text(p[1], p[2]))
                                for p in self.parts]) + "]"


NUMPY_FROM = 200_000  # stored gaps above which the statistics are counted with numpy


def _order_stat(sorted_values, cum_counts, k: int) -> int:
    """The k-th (0-based) element of the expanded list, given values sorted and cumulative counts."""
    return sorted_values[bisect_right(cum_counts, k)]


def _lerp_ms(a_ns: int, b_ns: int, frac: float) -> float:
    a, b = a_ns / 1e6, b_ns / 1e6
    return a + (b - a) * frac


def itl_stats_ms(itls, quantiles=(50, 99)) -> tuple[float, ...] | None:
    """(mean, then each quantile: by default median, P99) in ms over every gap of these lists, or
    None when there is none.
    Exact integer counting and one float formula, so the pure-Python path (small runs: no numpy
    import) and the numpy path (large runs) print the same numbers."""
    own: list[int] = []
    logs: dict[int, tuple[GapLog, list[int]]] = {}  # coverage of each log, as a difference list
    for itl in itls:
        for p in itl.parts:
            if type(p) is array:
                own += p
                continue
            log, start, stop = p
            entry = logs.get(id(log))
            if entry is None:
                entry = logs[id(log)] = (log, [0] * (len(log.gaps) + 1))
            entry[1][start] += 1
            entry[1][stop] -= 1
    if len(own) + sum(len(log.gaps) for log, _ in logs.values()) > NUMPY_FROM:
        values, cum = _weighted_numpy(own, logs.values())
    else:
        counts: dict[int, int] = {}
        for v in own:
            counts[v] = counts.get(v, 0) + 1
        for log, diff in logs.values():
            for v, c in zip(log.gaps, accumulate(diff)):
                if c:
                    counts[v] = counts.get(v, 0) + c
        values = sorted(counts)
        cum = list(accumulate(counts[v] for v in values))
    if not len(values):
        return None
    n = int(cum[-1])
    total_ns = int(_weighted_sum(values, cum))
    out = [total_ns / n / 1e6]
    for q in quantiles:
        pos = q / 100 * (n - 1)
        lo = int(pos)
        hi = min(lo + 1, n - 1)
        out.append(_lerp_ms(int(_order_stat(values, cum, lo)), int(_order_stat(values, cum, hi)), pos - lo))
    return tuple(out)


def _weighted_sum(values, cum) -> int:
    prev, total = 0, 0
    for v, c in zip(values, cum):
        total += int(v) * (int(c) - prev)
        prev = int(c)
    return total


def _weighted_numpy(own: list[int], logs):
    """Distinct gap values, sorted, with cumulative multiplicities (numpy: for long runs)."""
    import numpy as np

    values = [np.array(own, dtype=np.int64)] + [np.frombuffer(log.gaps, dtype=np.int64) for log, _ in logs]
    counts = [np.ones(len(own), dtype=np.int64)] + [np.cumsum(np.array(d[:-1], dtype=np.int64)) for _, d in logs]
    values, counts = np.concatenate(values), np.concatenate(counts)
    keep = counts > 0
    values, counts = values[keep], counts[keep]
    order = np.argsort(values, kind="stable")
    values, counts = values[order], counts[order]
    distinct, first = np.unique(values, return_index=True)
    summed = np.add.reduceat(counts, first) if len(counts) else counts
    return distinct.tolist(), np.cumsum(summed).tolist()
