"""Percentiles and summaries, worked by hand."""
import math

from llmsim.stats import diff_pct, percentile, summarize


def test_percentile_linear_interpolation():
    xs = [10, 20, 30, 40]  # ranks 0..3
    assert percentile(xs, 50) == 25  # rank 1.5
    assert percentile(xs, 90) == 37  # rank 2.7: 30 + 0.7 x 10
    assert percentile(xs, 0) == 10 and percentile(xs, 100) == 40
    assert percentile([40, 10, 30, 20], 50) == 25  # order does not matter


def test_summary_of_five_values():
    s = summarize([1, 2, 3, 4, 100])
    assert s["mean"] == 22
    assert s["median"] == 3
    assert math.isclose(s["p90"], 4 + 0.6 * 96)  # rank 3.6
    assert math.isclose(s["p99"], 4 + 0.96 * 96)  # rank 3.96


def test_diff_pct():
    assert diff_pct(101, 100) == 1.0
    assert diff_pct(99, 100) == -1.0
