"""Inter-token latencies without one stored integer per token.

Requests decoding together in a lane (decode_lanes.py) see the same gaps between tokens, so the
lane logs each gap once (GapLog) and a member's list is its own values plus runs of that log.
Memory then grows with steps and requests, not with tokens (the 100k-request benchmark keeps
about a tenth of what flat lists took), and the CSV text of a shared gap is made once.
"""
from array import array

import numpy as np


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

    def values(self) -> np.ndarray:
        return np.array(list(self), dtype=np.int64)

    def text(self) -> str:
        """"[a, b, c]", as the reference writes the list."""
        out = []
        for p in self.parts:
            out += map(str, p) if type(p) is array else p[0].text(p[1], p[2])
        return "[" + ", ".join(out) + "]"


def itl_weighted(itls) -> tuple[np.ndarray, np.ndarray]:
    """Every distinct stored gap once with its multiplicity over these lists: (values ns, counts)."""
    own = [np.frombuffer(p, dtype=np.int64) for itl in itls for p in itl.parts if type(p) is array]
    cover: dict[int, tuple[GapLog, np.ndarray]] = {}
    for itl in itls:
        for p in itl.parts:
            if type(p) is not array:
                log, start, stop = p
                entry = cover.get(id(log))
                if entry is None:
                    entry = cover[id(log)] = (log, np.zeros(len(log.gaps) + 1, dtype=np.int64))
                entry[1][start] += 1
                entry[1][stop] -= 1
    values = own + [np.frombuffer(log.gaps, dtype=np.int64) for log, _ in cover.values()]
    counts = [np.ones(len(v), dtype=np.int64) for v in own]
    counts += [np.cumsum(diff)[:len(log.gaps)] for log, diff in cover.values()]
    if not values:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    return np.concatenate(values), np.concatenate(counts)


def weighted_percentile(values: np.ndarray, counts: np.ndarray, q: float) -> float:
    """The linear-interpolation percentile (numpy's default method, stats.percentile's rule) of
    the list holding each value counts times, without building that list."""
    keep = counts > 0
    values, counts = values[keep], counts[keep]
    order = np.argsort(values, kind="stable")
    values, cum = values[order], np.cumsum(counts[order])
    n = int(cum[-1])
    pos = q / 100 * (n - 1)
    lo = int(pos)
    hi = min(lo + 1, n - 1)
    a, b = (float(values[np.searchsorted(cum, k, side="right")]) for k in (lo, hi))
    return a + (b - a) * (pos - lo)


def itl_stats_ms(itls) -> tuple[float, float, float] | None:
    """(mean, median, P99) in ms over every gap of these lists, or None when there is none."""
    values, counts = itl_weighted(itls)
    n = int(counts.sum())
    if n == 0:
        return None
    total_ns = int(np.dot(values, counts))
    ms = values.astype(np.float64) / 1e6
    return total_ns / n / 1e6, weighted_percentile(ms, counts, 50), weighted_percentile(ms, counts, 99)
