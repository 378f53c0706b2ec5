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


def test_capacity_model_without_the_logged_block_count(tmp_path):
    # KV blocks from llmsim's vLLM capacity model instead of meta.json's 2,588 (reference: 3,400 at its default)
    res = run_cli("validate", "--vllm-run", RUN, "--kv-blocks", "model", "--out", tmp_path)
    assert res.exit_code == 0, res.output
    assert "KV cache 2629 blocks" in res.output
    with open(tmp_path / "table.csv") as f:
        means = {r["metric"]: float(r["diff_pct"]) for r in csv.DictReader(f) if r["stat"] == "mean"}
    # the reference at its default capacity: -20.7 % / +12.9 % / -12.5 %
    assert abs(means["TTFT"]) < 2 and abs(means["TPOT"]) < 2 and abs(means["latency"]) < 2
