"""llmsim plot: loading a run's files, the numbers behind each figure, the PNGs, the CLI's errors."""
import csv
import sys

import numpy as np
import pandas as pd
import pytest
from conftest import run_cli

from llmsim.errors import InputError
from llmsim.metrics import CSV_HEADER
from llmsim.plot_data import CAUSES, UNACCOUNTED, cdf, downsample, load_run, stage_shares, throughput
from llmsim.plots import draw_all

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
ALL_PLOTS = ["latency_cdfs.png", "throughput.png", "queues.png", "kv_usage.png", "stage_utilisation.png"]
STAGE_HEADER = ["window_start_s", "window_end_s", "window", "instance", "stage", "npus", "layers", "weight_bytes",
                "wall_ns", *CAUSES, "busy_pct", "bubble_fraction"]


def write_requests(path, n=50, instances=2, seed=0):
    rng = np.random.default_rng(seed)
    with open(path, "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(CSV_HEADER)
        for i in range(n):
            out = int(rng.integers(1, 40))
            arrival = int(rng.integers(0, 10**9))
            ttft = int(rng.integers(10**7, 10**8))
            itl = [int(x) for x in rng.integers(10**7, 2 * 10**7, out - 1)]
            lat = ttft + sum(itl)
            tpot = (lat - ttft) // (out - 1) if out > 1 else 0
            w.writerow([i % instances, i, "m", int(rng.integers(4, 500)), out, arrival, arrival + lat, lat, 0, ttft,
                        tpot, str(itl)])


def write_timeseries(path, intervals=20, instances=2, dt=0.5):
    with open(path, "w") as f:
        f.write("t_s,instance,running,waiting,kv_blocks_used,kv_blocks_total,prompt_tokens,generated_tokens\n")
        for k in range(1, intervals + 1):
            for inst in range(instances):
                f.write(f"{k * dt},{inst},{k % 7},{k % 3},{10 * k},1000,{100 * inst},{50 + k}\n")


def stage_row(inst, stage, wall, causes, window="run", start=0.0, end=2.0):
    row = {"window_start_s": start, "window_end_s": end, "window": window, "instance": inst, "stage": stage,
           "npus": 1, "layers": 16, "weight_bytes": 10**9, "wall_ns": wall, "busy_pct": 0, "bubble_fraction": 0}
    row.update({c: causes.get(c, 0) for c in CAUSES})
    return row


def write_stages(path):
    rows = [stage_row(0, 0, 1000, {"busy_compute_ns": 600, "busy_comm_ns": 100, "idle_fill_drain_ns": 300}),
            stage_row(0, 1, 1000, {"busy_compute_ns": 500, "idle_upstream_ns": 250, "idle_transfer_ns": 250}),
            stage_row(0, 0, 500, {"busy_compute_ns": 500}, window="interval", end=1.0)]
    pd.DataFrame(rows, columns=STAGE_HEADER).to_csv(path, index=False)


@pytest.fixture
def run(tmp_path):
    out = tmp_path / "run.csv"
    write_requests(out)
    write_timeseries(f"{out}.timeseries.csv")
    write_stages(f"{out}.stages.csv")
    return out


def test_cdf_hand_example():
    x, y = cdf([3, 1, np.nan, 2, 2])
    assert x.tolist() == [1, 2, 2, 3]
    assert y.tolist() == [0.25, 0.5, 0.75, 1.0]
    assert [a.tolist() for a in cdf([])] == [[], []]
    # thinned: evenly spaced ranks, the first and last kept, so y still ends at 1
    x, y = cdf(np.arange(10_000), max_points=101)
    assert len(x) == 101 and (x[0], y[0]) == (0, 1e-4) and (x[-1], y[-1]) == (9999, 1.0)
    assert np.allclose(y, (x + 1) / 10_000)


def test_stage_shares_hand_example(run):
    shares = stage_shares(pd.read_csv(f"{run}.stages.csv"))
    assert list(shares.index) == [(0, 0), (0, 1)]  # the interval row is not a whole-run row
    assert shares.loc[(0, 0), "busy_compute_ns"] == 60 and shares.loc[(0, 0), "busy_comm_ns"] == 10
    assert shares.loc[(0, 0), "idle_fill_drain_ns"] == 30
    assert shares.loc[(0, 1), "idle_upstream_ns"] == 25 and shares.loc[(0, 1), "idle_transfer_ns"] == 25
    assert shares.loc[(0, 1), "busy_compute_ns"] == 50 and shares.loc[(0, 1), "busy_comm_ns"] == 0
    assert (shares[UNACCOUNTED] == 0).all()
    # causes short of wall: the gap shows as unaccounted, not spread over the causes
    gap = stage_shares(pd.DataFrame([stage_row(1, 0, 200, {"busy_compute_ns": 150})]))
    assert gap.loc[(1, 0), "busy_compute_ns"] == 75 and gap.loc[(1, 0), UNACCOUNTED] == 25


def test_throughput_sums_instances_and_divides_by_interval():
    ts = pd.DataFrame({"t_s": [0.5, 1.0, 0.5, 1.0], "instance": [0, 0, 1, 1], "prompt_tokens": [100, 0, 50, 10],
                       "generated_tokens": [10, 20, 0, 5]})
    tp = throughput(ts)
    assert tp["t_s"].tolist() == [0.5, 1.0]
    assert tp["prompt_tps"].tolist() == [300, 20] and tp["generated_tps"].tolist() == [20, 50]
    # an instance logging half as often: its rate covers both finer intervals; totals are kept
    ts = pd.DataFrame({"t_s": [0.5, 1.0, 1.0], "instance": [0, 0, 1], "prompt_tokens": [10, 10, 40],
                       "generated_tokens": [0, 0, 0]})
    assert throughput(ts)["prompt_tps"].tolist() == [60, 60]


def test_downsample_keeps_means_and_last_time():
    df = pd.DataFrame({"t_s": np.arange(1, 11, dtype=float), "v": np.arange(10, dtype=float)})
    d = downsample(df, max_points=5)
    assert d["t_s"].tolist() == [2, 4, 6, 8, 10] and d["v"].tolist() == [0.5, 2.5, 4.5, 6.5, 8.5]
    assert downsample(df, max_points=10) is df


def test_load_run_reads_all_three(run):
    data = load_run(run)
    assert len(data.requests) == 50 and "ITL" not in data.requests  # the ITL lists are not needed
    assert len(data.timeseries) == 40 and len(data.stages) == 3 and data.notes == []


def test_draw_all_writes_pngs(run, tmp_path):
    written = draw_all(load_run(run), tmp_path / "plots")
    assert [p.name for p in written] == ALL_PLOTS
    for p in written:
        assert p.read_bytes()[:8] == PNG_MAGIC and p.stat().st_size > 5000
    assert sorted(p.name for p in (tmp_path / "plots").iterdir()) == sorted(ALL_PLOTS)  # no temp files left
    plt = sys.modules.get("matplotlib.pyplot")  # figures are never registered with pyplot
    assert plt is None or plt.get_fignums() == []


def test_missing_timeseries_and_stages_are_skipped(tmp_path):
    out = tmp_path / "run.csv"
    write_requests(out, instances=1)
    data = load_run(out)
    assert data.timeseries is None and data.stages is None
    assert len(data.notes) == 2 and "timeseries" in data.notes[0] and "stages" in data.notes[1]
    res = run_cli("plot", out, "--out", tmp_path / "p")
    assert res.exit_code == 0
    assert res.stdout.split() == [str(tmp_path / "p" / "latency_cdfs.png")]
    assert res.stderr.splitlines() == [f"[INFO] {n}" for n in data.notes]


def test_cli_plot(run, tmp_path):
    res = run_cli("plot", run)
    assert res.exit_code == 0, res.output
    assert res.output.split() == [str(tmp_path / "run.csv.plots" / n) for n in ALL_PLOTS]


@pytest.mark.parametrize("content, fault", [
    (None, "no such file"),
    ("instance id,request id\n0,1\n", "missing column(s) 'input'"),
    (",".join(CSV_HEADER) + "\n0,0,m,4,12,x,2,2,0,1,1,[1]\n", "column 'arrival' line 2: not a number: 'x'"),
    ("", "not a readable CSV"),
])
def test_cli_bad_input_is_one_error_line(tmp_path, content, fault):
    out = tmp_path / "bad.csv"
    if content is not None:
        out.write_text(content)
    res = run_cli("plot", out)
    assert res.exit_code == 2
    assert res.output.startswith(f"error: {out}: {fault}") and len(res.output.splitlines()) == 1


def test_malformed_timeseries_names_that_file(run):
    bad = f"{run}.timeseries.csv"
    with open(bad, "w") as f:
        f.write("t_s,instance\n1,0\n")
    with pytest.raises(InputError, match=f"{bad}: missing column"):
        load_run(run)


def test_data_parallel_causes_are_shares_and_older_files_read_as_zero(tmp_path):
    out = tmp_path / "run.csv"
    write_requests(out)
    dp = stage_row(0, 0, 1000, {"busy_compute_ns": 700, "busy_comm_ns": 100, "idle_dp_peer_ns": 150,
                                "idle_dp_dummy_ns": 50})
    pd.DataFrame([dp], columns=STAGE_HEADER).to_csv(f"{out}.stages.csv", index=False)
    shares = stage_shares(load_run(out).stages)
    assert shares.loc[(0, 0), "idle_dp_peer_ns"] == 15 and shares.loc[(0, 0), "idle_dp_dummy_ns"] == 5
    assert shares.loc[(0, 0), UNACCOUNTED] == 0
    # a stages.csv written before the data-parallel causes existed: they read as 0
    older = [c for c in STAGE_HEADER if c not in ("idle_dp_peer_ns", "idle_dp_dummy_ns")]
    pd.DataFrame([stage_row(0, 0, 1000, {"busy_compute_ns": 1000})], columns=older).to_csv(f"{out}.stages.csv",
                                                                                          index=False)
    data = load_run(out)
    assert (data.stages["idle_dp_peer_ns"] == 0).all() and stage_shares(data.stages).loc[(0, 0), UNACCOUNTED] == 0
    assert (tmp_path / "p" / "stage_utilisation.png") in draw_all(data, tmp_path / "p")
