"""Agentic sessions in the reference's JSONL: each call is released when the previous one
finishes, after its tool time; ids are contiguous per session in file order."""
import json

from conftest import read_rows, run_cli


def test_session_calls_follow_each_other(tmp_path):
    ds = tmp_path / "agent.jsonl"
    lines = [
        {"input_toks": 8, "output_toks": 3, "arrival_time_ns": 0},
        {"session_id": "s", "arrival_time_ns": 1000, "sub_requests": [
            {"input_toks": 16, "output_toks": 4, "tool_duration_ns": 2_000_000},
            {"input_toks": 40, "output_toks": 2}]},
        {"input_toks": 5, "output_toks": 2, "arrival_time_ns": 500},
    ]
    ds.write_text("\n".join(json.dumps(l) for l in lines) + "\n")
    out = tmp_path / "o.csv"
    res = run_cli("--cluster-config", "configs/cluster/single_node_single_instance.json", "--dataset", ds,
                  "--output", out, "--quiet")
    assert res.exit_code == 0, res.output
    rows = {int(r["request id"]): r for r in read_rows(out)}
    assert sorted(rows) == [0, 1, 2, 3]  # session calls take ids 1 and 2, the next line id 3
    assert int(rows[3]["arrival"]) == 500
    assert int(rows[1]["arrival"]) == 1000
    assert int(rows[2]["arrival"]) == int(rows[1]["end_time"]) + 2_000_000


def test_num_reqs_counts_lines_not_calls(tmp_path):
    ds = tmp_path / "agent.jsonl"
    ds.write_text(json.dumps({"arrival_time_ns": 0, "sub_requests": [
        {"input_toks": 4, "output_toks": 2}, {"input_toks": 4, "output_toks": 2}]}) + "\n"
        + json.dumps({"input_toks": 4, "output_toks": 2, "arrival_time_ns": 0}) + "\n")
    out = tmp_path / "o.csv"
    run_cli("--cluster-config", "configs/cluster/single_node_single_instance.json", "--dataset", ds,
            "--num-reqs", 1, "--output", out, "--quiet")
    assert sorted(int(r["request id"]) for r in read_rows(out)) == [0, 1]


def test_call_without_tool_time_is_scheduled_at_the_completion_tick(tmp_path):
    # No tool time: the next call arrives the instant the previous one ends and, the instance
    # being idle, is scheduled at that same tick (queuing delay 0), not at a later event.
    ds = tmp_path / "agent.jsonl"
    ds.write_text(json.dumps({"session_id": "s", "arrival_time_ns": 0, "sub_requests": [
        {"input_toks": 16, "output_toks": 3}, {"input_toks": 24, "output_toks": 2}]}) + "\n")
    out = tmp_path / "o.csv"
    res = run_cli("--cluster-config", "configs/cluster/single_node_single_instance.json", "--dataset", ds,
                  "--output", out, "--quiet")
    assert res.exit_code == 0, res.output
    rows = {int(r["request id"]): r for r in read_rows(out)}
    assert int(rows[1]["arrival"]) == int(rows[0]["end_time"])
    assert int(rows[1]["queuing_delay"]) == 0
