"""Agreement with LLMServingSim 2.0's own recorded runs (same configs and workload).

Targets from the issue: mean latency and TPOT within 3 %, TTFT within 10 % (the reference polls an
idle system only every 1 ms, which inflates its short TTFTs).
"""
import pytest

from conftest import REF, read_rows, run_cli

CASES = {
    "single": ("single_node_single_instance", "example_single_run"),
    "pp2": ("single_node_pp2_instance", "example_pp2_run"),
    "pp4": ("single_node_pp_instance", "example_pp_run"),
    "tp2xpp2": ("single_node_tp_pp_instance", "example_tp_pp_run"),
    "two_instances": ("single_node_multi_instance", "example_multi_run"),
}
TOL = {"latency": 0.03, "TPOT": 0.03, "TTFT": 0.10}


def _mean(rows, col):
    return sum(int(r[col]) for r in rows) / len(rows)


@pytest.mark.parametrize("case", list(CASES))
def test_matches_reference_means(case, tmp_path):
    cfg, ref = CASES[case]
    out = tmp_path / "run.csv"
    res = run_cli("--cluster-config", REF / "configs" / f"{cfg}.json", "--dtype", "bfloat16", "--block-size", 16,
                  "--dataset", "workloads/example_trace.jsonl", "--num-reqs", 10, "--output", out, "--quiet",
                  "--compat", "llmservingsim")  # the reference's rules (docs/differences.md)
    assert res.exit_code == 0, res.output
    ours, theirs = read_rows(out), read_rows(REF / f"{ref}.csv")
    assert sorted(r["request id"] for r in ours) == sorted(r["request id"] for r in theirs)
    for col, tol in TOL.items():
        a, b = _mean(ours, col), _mean(theirs, col)
        assert abs(a - b) / b <= tol, f"{case} {col}: llmsim {a:.0f} ns vs reference {b:.0f} ns"


def test_single_gpu_reproduces_reference_to_the_nanosecond(tmp_path):
    # One GPU, no pipeline: same profile lookups and the same scheduling give identical rows.
    out = tmp_path / "run.csv"
    run_cli("--cluster-config", REF / "configs" / "single_node_single_instance.json", "--dtype", "bfloat16",
            "--dataset", "workloads/example_trace.jsonl", "--output", out, "--quiet", "--compat", "llmservingsim")
    ours = {r["request id"]: r for r in read_rows(out)}
    for ref in read_rows(REF / "example_single_run.csv"):
        mine = ours[ref["request id"]]
        for col in ("end_time", "latency", "TTFT", "TPOT", "ITL"):
            assert mine[col] == ref[col], (ref["request id"], col)
