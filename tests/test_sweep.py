"""`llmsim sweep`: axis expansion, point checks, results equal to llmsim.run, resume, failures,
the Dask engine, the Pareto plot."""
import json
import math

import pandas as pd
import pytest
import yaml

import llmsim
from conftest import ROOT, run_cli
from llmsim.errors import InputError
from llmsim.sweep import execute
from llmsim.sweep.plot import pareto, pareto_mask
from llmsim.sweep.spec import expand, load_spec
from llmsim.workload_gen import Spec, generate, parse_lengths

BASE = ROOT / "configs/cluster/single_node_single_instance.json"
WORKLOAD = {"num_requests": 10, "rate": 20, "input_len": "uniform:32:128", "output_len": "uniform:4:16", "seed": 3}
SLO = {"ttft_ms": 60, "tpot_ms": 20}


def _spec(tmp_path, **extra):
    doc = {"cluster": str(BASE), "engine": {"dtype": "float16"}, "workload": WORKLOAD, "slo": SLO,
           "grid": {"cluster.tp_size": [1, 2], "workload.rate": [10, 40]}, **extra}
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def _table(path):
    # pandas < 3 parses floats fast but not always to the nearest double; 3 always does
    exact = {"float_precision": "round_trip"} if int(pd.__version__.split(".")[0]) < 3 else {}
    return pd.read_csv(path, dtype={"error": str, "timing": str}, **exact).fillna({"error": "", "timing": ""})


# -- expansion ----------------------------------------------------------------------------------------------------


def test_grid_is_a_product_and_zip_advances_together():
    grid = {"cluster.tp_size": [1, 2, 4], "workload.rate": [1, 2]}
    zipped = {"cluster.pp_size": [1, 2], "engine.max_num_seqs": [8, 16]}
    axes, pts = expand(grid, {})
    assert axes == ("cluster.tp_size", "workload.rate") and len(pts) == 3 * 2
    assert pts[:3] == [(1, 1), (1, 2), (2, 1)]  # the last axis varies fastest
    axes, pts = expand({}, zipped)
    assert pts == [(1, 8), (2, 16)]  # zip: 2 points, not 4
    axes, pts = expand(grid, zipped)
    assert len(pts) == 3 * 2 * 2 and pts[0] == (1, 1, 1, 8) and pts[1] == (1, 1, 2, 16)
    assert expand({}, {}) == ((), [()])  # no axes: the base configuration alone
    with pytest.raises(InputError, match="same length"):
        expand({}, {"cluster.pp_size": [1, 2], "engine.max_num_seqs": [8]})


def test_unknown_field_is_named(tmp_path):
    path = _spec(tmp_path, grid={"cluster.tp_sise": [1, 2]})
    with pytest.raises(InputError, match=r"grid.cluster.tp_sise: unknown field 'cluster.tp_sise'"):
        load_spec(str(path))
    res = run_cli("sweep", "run", path, "--out", tmp_path / "out")
    assert res.exit_code == 2 and len(res.output.splitlines()) == 1 and "cluster.tp_sise" in res.output


def test_bad_point_is_named_and_nothing_runs(tmp_path):
    path = _spec(tmp_path, grid={"cluster.tp_size": [1, 0], "engine.max_num_seqs": [8]})
    out = tmp_path / "out"
    res = run_cli("sweep", "run", path, "--out", out)
    assert res.exit_code == 2 and len(res.output.splitlines()) == 1, res.output
    assert res.output.startswith(f"error: {path}: point ")
    assert "(tp_size=0, max_num_seqs=8): cluster: nodes[0].instances[0].tp_size: expected a value >= 1" in res.output
    assert not out.exists()


# -- results ------------------------------------------------------------------------------------------------------


def _expected(tp, rate):
    """The point worked out again with llmsim.run, not through the sweep's code."""
    cluster = json.loads(BASE.read_text())
    inst = cluster["nodes"][0]["instances"][0]
    inst.pop("num_npus", None)
    inst["tp_size"] = tp
    spec = Spec(num=10, rate_per_s=rate, input=parse_lengths("uniform:32:128", "i"),
                output=parse_lengths("uniform:4:16", "o"), seed=3)
    records = [json.loads(line) for line in generate(spec)]
    res = llmsim.run(cluster, records, engine={"dtype": "float16"})
    s = res.summary.iloc[0]
    secs = s.simulated_ns / 1e9
    met = ((res.requests.ttft_ns <= 60e6) & (res.requests.tpot_ns <= 20e6)).sum()
    peak = llmsim.run(cluster, records, engine={"dtype": "float16"}, log_interval_s=0.01).heartbeats.npu_mem_bytes.max()
    return {"request_throughput_per_s": s.request_throughput_per_s, "output_tok_per_s": s.gen_throughput_tok_per_s,
            "total_tok_per_s": (s.input_tokens + s.generated_tokens) / secs, "goodput_req_per_s": met / secs,
            "ttft_mean_ms": s.ttft_mean_ms, "ttft_p50_ms": s.ttft_median_ms, "ttft_p99_ms": s.ttft_p99_ms,
            "tpot_p90_ms": s.tpot_p90_ms, "itl_p99_ms": s.itl_p99_ms, "latency_p99_ms": s.latency_p99_ms,
            "preemptions": s.preemptions, "requests_finished": 10, "requests_unfinished": 0,
            "simulated_s": secs, "peak_mem_bytes": peak}


@pytest.fixture(scope="module")
def tiny_sweep(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("sweep")
    path = _spec(tmp)
    res = run_cli("sweep", "run", path, "--out", tmp / "out", "--workers", "2", "--quiet")
    assert res.exit_code == 0, res.output
    return path, tmp / "out"


def test_rows_equal_llmsim_run(tiny_sweep):
    _, out = tiny_sweep
    df = _table(out / "results.csv")
    assert len(df) == 4 and list(df["index"]) == [0, 1, 2, 3] and set(df.status) == {"ok"}
    assert list(df.columns[:7]) == ["point_id", "index", "cluster.tp_size", "workload.rate", "layout", "num_npus",
                                    "timing"]
    assert list(df.layout) == ["tp1xpp1", "tp1xpp1", "tp2xpp1", "tp2xpp1"]
    for _, row in df.iterrows():
        want = _expected(int(row["cluster.tp_size"]), row["workload.rate"])
        for col, v in want.items():
            assert row[col] == pytest.approx(v, rel=1e-12), col
        point = out / "points" / row.point_id
        assert sorted(p.name for p in point.iterdir()) == ["cluster.json", "point.json", "requests.csv", "result.json",
                                                           "summary.json", "unfinished.csv", "workload.jsonl"]
        assert len((point / "requests.csv").read_text().splitlines()) == 11
    pd.testing.assert_frame_equal(df, pd.read_parquet(out / "results.parquet"), check_dtype=False)


def test_resume_skips_finished_points_and_results_are_deterministic(tiny_sweep, tmp_path):
    path, out = tiny_sweep
    before = (out / "results.csv").read_bytes()
    mtimes = {p: p.stat().st_mtime_ns for p in (out / "points").rglob("*")}
    res = run_cli("sweep", "run", path, "--out", out)
    assert res.exit_code == 0 and "0 run, 4 already done" in res.output
    assert (out / "results.csv").read_bytes() == before
    assert {p: p.stat().st_mtime_ns for p in (out / "points").rglob("*")} == mtimes
    # a fresh run of the same spec: the same table but for wall time
    res = run_cli("sweep", "run", path, "--out", tmp_path / "again", "--workers", "1", "--quiet")
    assert res.exit_code == 0
    fresh = _table(tmp_path / "again" / "results.csv").drop(columns="wall_s")
    assert fresh.equals(_table(out / "results.csv").drop(columns="wall_s"))


def test_a_failing_point_is_recorded_and_the_others_run(tmp_path, monkeypatch):
    real = llmsim.api.run

    def flaky(cluster, workload, engine=None, **kw):
        if cluster["nodes"][0]["instances"][0]["tp_size"] == 2:
            raise RuntimeError("simulated\nfailure")
        return real(cluster, workload, engine, **kw)

    monkeypatch.setattr(llmsim.api, "run", flaky)
    # in process, so the patch applies whatever the pool's start method
    monkeypatch.setattr(execute, "_local", lambda tasks, workers: ((t, execute.run_point(t)) for t in tasks))
    out = tmp_path / "out"
    res = run_cli("sweep", "run", _spec(tmp_path), "--out", out)
    assert res.exit_code == 2, res.output  # two failed points
    df = _table(out / "results.csv")
    assert list(df.status) == ["ok", "ok", "error", "error"]
    assert list(df.error[2:]) == ["RuntimeError: simulated failure"] * 2
    assert df.request_throughput_per_s[2:].isna().all() and (df.requests_finished[:2] == 10).all()
    assert (out / "points" / df.point_id[2] / "error.txt").is_file()


def test_dask_engine_gives_the_same_table(tiny_sweep, tmp_path):
    pytest.importorskip("dask.distributed")
    path, out = tiny_sweep
    res = run_cli("sweep", "run", path, "--out", tmp_path / "dask", "--engine", "dask", "--workers", "1", "--quiet")
    assert res.exit_code == 0, res.output
    got = _table(tmp_path / "dask" / "results.csv").drop(columns="wall_s")
    assert got.equals(_table(out / "results.csv").drop(columns="wall_s"))


# -- plot ---------------------------------------------------------------------------------------------------------


def test_pareto_front_of_a_hand_made_table(tmp_path):
    df = pd.DataFrame({
        "point_id": list("abcdefg"), "status": ["ok"] * 6 + ["error"], "layout": ["tp1xpp1", "tp2xpp1"] * 3 + ["x"],
        "latency_p99_ms": [10.0, 20.0, 15.0, 30.0, 20.0, math.nan, 1.0],
        "output_tok_per_s": [100.0, 300.0, 90.0, 400.0, 250.0, 999.0, 9999.0],
    })
    # a (10, 100) front; b (20, 300) front; c (15, 90) beaten by a; d (30, 400) front;
    # e (20, 250) beaten by b; f has no latency; g failed
    assert list(pareto(df).point_id) == ["a", "b", "d"]
    assert pareto_mask([1.0, 1.0], [5.0, 5.0]) == [True, False]  # identical points: the first
    out = tmp_path / "sweep"
    out.mkdir()
    df.to_csv(out / "results.csv", index=False)
    res = run_cli("sweep", "plot", out, "--output", tmp_path / "p.png")
    assert res.exit_code == 0, res.output
    assert (tmp_path / "p.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    lines = res.output.splitlines()
    assert lines[0].startswith("Pareto-optimal points (3 of 6 ok)")
    assert [ln.split()[0] for ln in lines[2:5]] == ["a", "b", "d"]


def test_plot_of_a_folder_without_results_is_one_line(tmp_path):
    res = run_cli("sweep", "plot", tmp_path)
    assert res.exit_code == 2 and len(res.output.splitlines()) == 1 and "no results.csv" in res.output


@pytest.mark.parametrize("command", [["sweep"], ["sweep", "run"], ["sweep", "plot"]])
def test_dash_h(command):
    res = run_cli(*command, "-h")
    assert res.exit_code == 0 and res.output.startswith("Usage: "), res.output


def test_example_spec_is_valid():
    spec = load_spec(str(ROOT / "configs/sweeps/pp_tp_rates.yaml"))
    assert len(spec.values) == 18


def test_spec_first_form_runs_as_sweep_run(tmp_path):
    # `llmsim sweep SPEC.yaml --out DIR` is `llmsim sweep run SPEC.yaml --out DIR`
    spec = ROOT / "configs/sweeps/pp_tp_rates.yaml"
    a = run_cli("sweep", spec, "--out", tmp_path / "a", "--check-only")
    b = run_cli("sweep", "run", spec, "--out", tmp_path / "b", "--check-only")
    assert a.exit_code == b.exit_code == 0
    assert "18 points, all valid" in a.output and a.output == b.output


def test_data_parallel_axes(tmp_path):
    # a DP2 MoE group swept over expert parallelism (ep_size 2 = tp x dp, or 1: experts sliced) and
    # vLLM's all2all backends; a value the run would refuse is named before anything runs
    doc = {"cluster": str(ROOT / "configs/cluster/rtxpro6000_qwen3_30b_a3b_dp2_ep2.json"),
           "workload": {"num_requests": 4, "rate": 20, "input_len": "uniform:16:64", "output_len": "uniform:2:6",
                        "seed": 1},
           "grid": {"cluster.ep_size": [1, 2], "engine.all2all_backend": ["allgather_reducescatter", "naive"]}}
    path = tmp_path / "dp.yaml"
    path.write_text(yaml.safe_dump(doc))
    out = tmp_path / "out"
    res = run_cli("sweep", "run", path, "--out", out, "--quiet")
    assert res.exit_code == 0, res.output
    table = _table(out / "results.csv")
    assert len(table) == 4 and (table.requests_finished == 4).all() and (table.error == "").all()
    assert table.simulated_s.nunique() == 4  # each axis value changes the run
    doc["grid"] = {"engine.all2all_backend": ["allgather", "naive"]}
    path.write_text(yaml.safe_dump(doc))
    res = run_cli("sweep", "run", path, "--out", tmp_path / "out2")
    assert res.exit_code == 2 and len(res.output.splitlines()) == 1
    assert "engine.all2all_backend: expected one of allgather_reducescatter, deepep_high_throughput" in res.output
