"""The public Python API: the README's example runs as written, and its tables are the CLI's outputs."""
import json
import re

import pytest

import llmsim
from conftest import ROOT, read_rows, run_cli

PP2 = "configs/cluster/single_node_pp_instance.json"
EXAMPLE = "workloads/example_trace.jsonl"


def test_readme_example_runs_as_written(capsys):
    code = re.search(r"## Python API.*?```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S).group(1)
    scope = {}
    exec(compile(code, "README.md", "exec"), scope)
    res = scope["res"]
    assert len(res.requests) == 10 and res.summary.requests_finished[0] == 10
    # 10 requests over 2 stages: two iteration-log rows per batch
    assert len(res.iterations) == 2 * res.summary.iterations[0]
    assert "mnbt" in capsys.readouterr().out


def test_tables_match_the_cli_outputs(tmp_path):
    out, log = tmp_path / "r.csv", tmp_path / "it.csv"
    assert run_cli("--cluster-config", PP2, "--dtype", "float16", "--dataset", EXAMPLE, "--output", out,
                   "--iteration-log", log, "--quiet").exit_code == 0
    res = llmsim.run(PP2, EXAMPLE, engine={"dtype": "float16"}, iterations=True)
    rows = read_rows(out)
    got = res.requests
    assert list(got.request_id) == [int(r["request id"]) for r in rows]
    for col, csv_col in (("ttft_ns", "TTFT"), ("tpot_ns", "TPOT"), ("latency_ns", "latency"),
                         ("queuing_delay_ns", "queuing_delay"), ("end_ns", "end_time")):
        assert list(got[col]) == [int(r[csv_col]) for r in rows], col
    assert list(got.itl_ns) == [json.loads(r["ITL"]) for r in rows]
    assert res.iterations.astype(str).values.tolist() == [list(r.values()) for r in read_rows(log)]
    meta = json.loads((tmp_path / "r.csv.meta.json").read_text())
    assert res.summary.simulated_ns[0] == meta["simulated_ns"] and res.summary.iterations[0] == meta["iterations"]


def test_cluster_as_a_dict_and_workload_as_records():
    cfg = json.loads((ROOT / PP2).read_text())
    work = [{"input_toks": 100, "output_toks": 4, "arrival_time_ns": 0},
            {"input_toks": 30, "output_toks": 2, "arrival_time_ns": 10}]
    res = llmsim.run(cfg, work, engine=llmsim.EngineArgs(dtype="float16"))
    by_id = res.requests.set_index("request_id")
    assert by_id.output_tokens.to_dict() == {0: 4, 1: 2} and by_id.input_tokens.to_dict() == {0: 100, 1: 30}
    # the same run from the file gives the same figures
    again = llmsim.run(PP2, work, engine={"dtype": "float16"})
    assert res.requests.equals(again.requests)


@pytest.mark.parametrize("kwargs, message", [
    ({"engine": {"max_num_seq": 3}}, "engine: unknown argument(s) max_num_seq"),
    ({"workload": [{"input_toks": 0, "output_toks": 1, "arrival_time_ns": 0}]},
     "workload: item 1: field 'input_toks' must be >= 1, got 0"),
    ({"backend": "ns3"}, "no backend named 'ns3' is installed"),
])
def test_bad_input_raises_the_one_line_error(kwargs, message):
    with pytest.raises(llmsim.InputError) as e:
        llmsim.run(PP2, **{"workload": EXAMPLE, "engine": {"dtype": "float16"}, **kwargs})
    assert message in str(e.value) and "\n" not in str(e.value)


def test_unfinished_requests_are_listed_with_their_reason():
    work = [{"input_toks": 10, "output_toks": 2, "arrival_time_ns": 0},
            {"input_toks": 200_000, "output_toks": 2, "arrival_time_ns": 0}]
    res = llmsim.run(PP2, work, engine={"dtype": "float16"})
    assert list(res.requests.request_id) == [0]
    assert list(res.unfinished.request_id) == [1] and "maximum model length" in res.unfinished.reason[0]
