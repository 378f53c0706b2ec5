"""`llmsim validate` on the shipped RTX 4090 run (vLLM 0.19, 300 ShareGPT requests)."""
import csv
import json

from conftest import run_cli

RUN = "configs/validation/RTX4090-Llama-3.1-8B"


def test_validate_prints_and_writes_the_table(tmp_path):
    res = run_cli("validate", "--vllm-run", RUN, "--out", tmp_path)
    assert res.exit_code == 0, res.output
    assert "num_gpu_blocks=2588" in res.output and "max_num_seqs=256" in res.output
    with open(tmp_path / "table.csv") as f:
        rows = {(r["metric"], r["stat"]): r for r in csv.DictReader(f)}
    assert len(rows) == 15
    # vLLM side, recomputed here from requests.jsonl by the definitions (first - queued etc.)
    with open(f"{RUN}/vllm/requests.jsonl") as f:
        reqs = [json.loads(l) for l in f]
    ttft = [(r["first_token_ts"] - r["queued_ts"]) * 1e3 for r in reqs]
    assert abs(float(rows[("TTFT", "mean")]["vllm_ms"]) - sum(ttft) / len(ttft)) < 1e-3
    # targets: every mean within 1 %, every percentile within 5 %
    for (metric, stat), r in rows.items():
        assert abs(float(r["diff_pct"])) <= (1.0 if stat == "mean" else 5.0), (metric, stat, r["diff_pct"])
    assert (tmp_path / "latency_cdf.png").read_bytes()[:4] == b"\x89PNG"
    assert (tmp_path / "throughput.png").stat().st_size > 10_000


def test_missing_run_folder_is_a_one_line_error(tmp_path):
    res = run_cli("validate", "--vllm-run", tmp_path / "nope")
    assert res.exit_code == 2
    assert "meta.json: not found" in res.output
