"""ITL lists stored as own values plus runs of a shared gap log must read back, print and
summarise exactly as the flat lists they stand for."""
import numpy as np

import llmsim.itl as itl_mod
from llmsim.itl import GapLog, Itl, itl_stats_ms


def _log(*gaps):
    log = GapLog()
    log.gaps.extend(gaps)
    return log


def test_mixed_list_reads_and_prints_as_flat():
    log = _log(0, 30, 31, 32, 33)
    itl = Itl()
    itl.append(7)
    itl.extend_shared(log, 2, 4)  # 31, 32
    itl.append(9)
    itl.append(10)
    itl.extend_shared(log, 4, 4)  # empty run: nothing
    assert list(itl) == [7, 31, 32, 9, 10] and len(itl) == 5
    assert itl.text() == "[7, 31, 32, 9, 10]"
    assert Itl().text() == "[]"


def _random_lists(seed):
    rng = np.random.default_rng(seed)
    log = _log(0, *rng.integers(1_000_000, 90_000_000, size=200).tolist())
    itls, flat = [], []
    for k in range(40):
        itl = Itl()
        own = rng.integers(1_000_000, 300_000_000, size=k % 3).tolist()
        for v in own:
            itl.append(v)
        start = int(rng.integers(1, 150))
        stop = start + int(rng.integers(0, 50))
        itl.extend_shared(log, start, stop)
        itls.append(itl)
        flat += own + log.gaps[start:stop].tolist()
    return itls, flat


def test_summary_statistics_equal_the_expanded_list():
    for seed in range(5):
        itls, flat = _random_lists(seed)
        mean, median, p99 = itl_stats_ms(itls)
        ms = np.array(flat, dtype=np.float64) / 1e6
        assert mean == sum(flat) / len(flat) / 1e6
        assert abs(median - np.percentile(ms, 50)) < 1e-9 and abs(p99 - np.percentile(ms, 99)) < 1e-9
    assert itl_stats_ms([Itl()]) is None


def test_numpy_counting_path_prints_the_same(monkeypatch):
    # Long runs count with numpy, short ones without importing it: same numbers either way.
    for seed in range(5):
        itls, _ = _random_lists(seed)
        plain = itl_stats_ms(itls)
        monkeypatch.setattr(itl_mod, "NUMPY_FROM", 0)
        assert itl_stats_ms(itls) == plain
        monkeypatch.setattr(itl_mod, "NUMPY_FROM", 200_000)
