"""Per-stage accounting (llmsim/accounting.py): where each stage's wall time went, worked by hand
on a two-stage pipeline with fixed stage times, and checked to partition wall time exactly on
real runs."""
import json

import pytest

from conftest import FixedStages

from llmsim.accounting import CAUSES
from llmsim.config.engine import EngineArgs
from llmsim.request import Request
from llmsim.simulate import prepare, run
from llmsim.timeline import timeline_json

PP2 = "configs/cluster/single_node_pp_instance.json"
SHAREGPT = "workloads/sharegpt-llama-3.1-8b-300-sps10.jsonl"


def Fixed(cluster):
    """Every stage is busy 100 ns: 80 computing, then (stage 0) a 20 ns send to stage 1."""
    return FixedStages(cluster, [(80, 20), (80, 0)])


def _accounts(rule):
    reqs = [Request(0, 0, prompt_len=10, output_len=3), Request(1, 50, prompt_len=5, output_len=2)]
    sim = prepare(PP2, EngineArgs(dtype="float16", enable_prefix_caching=False, batch_formation=rule), reqs)
    res = run(sim, Fixed(sim.cluster))
    assert res.end_ns == 601
    return {r["stage"]: {k: r[k] for k in ("busy_compute_ns", "busy_comm_ns", *(f"idle_{c}_ns" for c in CAUSES))
                         if r[k]} for r in res.stages}


def test_vllm_batch_queue_by_hand():
    # Batches (stage 0, stage 1): B0 formed at 1 (1-101, 101-201); r1 arrives at 50 while the
    # engine blocks on B0; B1 formed at 201 (201-301, 301-401); B2 at 401 (401-501, 501-601).
    # Stage 0 idles [0,1) starved, [101,201) batch queue (r1 waits), [301,401) and [501,601)
    # fill/drain (every running request in flight). Stage 1 waits for each batch in an empty
    # pipeline: 80 ns while stage 0 computes it (fill), 20 ns while it is sent (transfer).
    acc = _accounts("vllm")
    assert acc[0] == {"busy_compute_ns": 240, "busy_comm_ns": 60, "idle_starved_ns": 1, "idle_batch_queue_ns": 100,
                      "idle_fill_drain_ns": 200}
    assert acc[1] == {"busy_compute_ns": 240, "busy_comm_ns": 60, "idle_starved_ns": 1, "idle_fill_drain_ns": 240,
                      "idle_transfer_ns": 60}


def test_reference_rule_by_hand():
    # A batch whenever stage 0 frees: B0..B4 back to back on stage 0 (1-501), then stage 0 idles
    # [501,601) while r0's last step is in flight (fill/drain); stage 1 waits only for the first.
    acc = _accounts("reference")
    assert acc[0] == {"busy_compute_ns": 400, "busy_comm_ns": 100, "idle_starved_ns": 1, "idle_fill_drain_ns": 100}
    assert acc[1] == {"busy_compute_ns": 400, "busy_comm_ns": 100, "idle_starved_ns": 1, "idle_fill_drain_ns": 80,
                      "idle_transfer_ns": 20}


@pytest.mark.parametrize("cfg", ["single_node_pp_instance", "single_node_tp_pp_instance", "single_node_pp4_instance",
                                 "single_node_multi_instance"])
@pytest.mark.parametrize("rule", ["vllm", "reference"])
def test_busy_and_idle_partition_wall_time_exactly(cfg, rule):
    sim = prepare(f"configs/cluster/{cfg}.json", EngineArgs(dtype="bfloat16", batch_formation=rule), SHAREGPT,
                  num_reqs=150)
    res = run(sim, log_interval_ns=700_000_000)
    parts = ["busy_compute_ns", "busy_comm_ns", *(f"idle_{c}_ns" for c in CAUSES)]
    runs = [r for r in res.stages if r["window"] == "run"]
    assert len(runs) == sum(i.config.pp_size for i in sim.instances)
    for r in res.stages:
        assert all(r[p] >= 0 for p in parts)
        assert sum(r[p] for p in parts) == r["wall_ns"], r
    for r in runs:
        assert r["wall_ns"] == res.end_ns
        # the log intervals add up to the whole run, part by part
        mine = [x for x in res.stages if x["window"] == "interval" and (x["instance"], x["stage"]) == (r["instance"],
                                                                                                    r["stage"])]
        assert sum(x["wall_ns"] for x in mine) == res.end_ns
        for p in parts:
            assert sum(x[p] for x in mine) == r[p]


def test_timeline_tracks_slices_and_flows_match_the_iteration_log(tmp_path):
    sim = prepare("configs/cluster/single_node_tp_pp_instance.json", EngineArgs(dtype="bfloat16"),
                  "workloads/example_trace.jsonl")
    res = run(sim, timeline=True)
    doc = json.loads(timeline_json(sim.instances, res.iteration_log, res.idle_segments, res.samples))
    ev = doc["traceEvents"]
    tracks = {e["tid"]: e["args"]["name"] for e in ev if e["ph"] == "M" and e["name"] == "thread_name"}
    assert tracks == {0: "NPU 0 (stage 0, rank 0)", 1: "NPU 1 (stage 0, rank 1)", 2: "NPU 2 (stage 1, rank 0)",
                      3: "NPU 3 (stage 1, rank 1)"}
    for npu in range(4):
        stage = npu // 2
        batches = sorted((e["ts"], e["dur"], e["args"]["batch"]) for e in ev
                         if e["ph"] == "X" and e["cat"] == "batch" and e["tid"] == npu)
        log = sorted((r.start_ns / 1000, (r.end_ns - r.start_ns) / 1000, r.batch_id) for r in res.iteration_log
                     if r.stage == stage)
        assert batches == log
        # batch and idle slices tile the NPU's timeline from 0 to the end of the run
        spans = sorted((e["ts"], e["ts"] + e["dur"]) for e in ev if e["ph"] == "X" and e["tid"] == npu)
        assert spans[0][0] == 0 and spans[-1][1] == pytest.approx(res.end_ns / 1000)
        assert all(a[1] == pytest.approx(b[0]) for a, b in zip(spans, spans[1:]))
    starts = [e for e in ev if e["ph"] == "s"]
    ends = [e for e in ev if e["ph"] == "f"]
    assert len(starts) == len(ends) == 2 * res.iterations  # one arrow per TP rank per boundary per batch
    assert all(s["tid"] + 2 == f["tid"] for s, f in zip(starts, ends))
    assert {e["name"] for e in ev if e["ph"] == "C"} == {"requests", "KV blocks in use"}


def test_cli_writes_the_stage_report_timeline_window_and_summary(tmp_path):
    from conftest import read_rows, run_cli

    out, rep, tl = tmp_path / "o.csv", tmp_path / "stages.csv", tmp_path / "t.json"
    res = run_cli("--cluster-config", PP2, "--dataset", "workloads/example_trace.jsonl", "--output", out,
                  "--stage-report", rep, "--timeline", tl, "--timeline-window", "0.01:0.03", "--log-interval", 0.05)
    assert res.exit_code == 0, res.output
    assert "Pipeline stages" in res.output and "bubble" in res.output
    rows = read_rows(rep)
    assert rows == read_rows(f"{out}.stages.csv")
    summary = json.loads((tmp_path / "o.csv.summary.json").read_text())
    assert [s["stage"] for s in summary["stages"]] == [0, 1]
    assert [int(r["wall_ns"]) for r in rows if r["window"] == "run"] == [summary["simulated_ns"]] * 2
    ev = json.loads(tl.read_text())["traceEvents"]
    slices = [e for e in ev if e["ph"] == "X"]
    assert slices and all(e["ts"] <= 30_000 and e["ts"] + e["dur"] >= 10_000 for e in slices)  # us
    assert read_rows(f"{out}.timeseries.csv")[0]["t_s"] == "0.05"


@pytest.mark.parametrize("args, msg", [
    (["--timeline-window", "1:2"], "--timeline-window: needs --timeline"),
    (["--timeline", "T", "--timeline-window", "2:1"], "--timeline-window: expected 0 <= START < END"),
    (["--timeline", "T", "--timeline-window", "abc"], "--timeline-window: expected START:END"),
])
def test_bad_timeline_window_is_one_line(tmp_path, args, msg):
    from conftest import run_cli

    args = [str(tmp_path / a) if a == "T" else a for a in args]
    res = run_cli("--cluster-config", PP2, "--dataset", "workloads/example_trace.jsonl", *args)
    assert res.exit_code == 2 and res.output.strip().splitlines()[-1].startswith(f"error: {msg}")
    assert not list(tmp_path.iterdir())


def test_progress_bar_only_on_a_terminal_and_not_quiet(monkeypatch, capsys):
    import sys

    from llmsim.progress import Progress

    assert Progress(100, True).bar is None  # stderr is not a terminal under pytest
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True, raising=False)
    assert Progress(100, False).bar is None  # --quiet
    p = Progress(100, True)
    assert p.bar is not None and p.bar.total == 100
    for k in range(128):
        p(k // 2, k * 10**9)
    assert p.bar.n == 63  # redrawn every 64 completions, with the latest count
    p.echo("[INFO] a line")  # through the bar, onto stdout
    p.close()
    assert "[INFO] a line" in capsys.readouterr().out
