"""`llmsim validate` on the shipped RTX 4090 run (vLLM 0.19, 300 ShareGPT requests)."""
import csv
import json
from pathlib import Path

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


def _copy_run(tmp_path, layout="reference"):
    """The shipped run in another layout: flat (meta.json beside config.json, as the reference's
    example folder), no logged block count, or with a mem_util in the cluster config."""
    import shutil

    src = f"{RUN}/vllm"
    run = tmp_path / "run"
    run.mkdir()
    for f in ("meta.json", "requests.jsonl", "timeseries.csv"):
        shutil.copy(f"{src}/{f}", run / f)
    cfg = json.loads(Path(f"{RUN}/cluster.json").read_text())
    if layout == "mem_util":
        cfg["nodes"][0]["instances"][0]["npu_mem"]["mem_util"] = 0.833919
    (run / ("config.json" if layout == "reference" else "cluster.json")).write_text(json.dumps(cfg))
    meta = json.loads(Path(run / "meta.json").read_text())
    meta["dataset_path"] = "/elsewhere/" + meta["dataset_path"].split("/")[-1]  # not where it was recorded
    if layout == "no_blocks":
        meta.get("kv_cache", {}).pop("num_gpu_blocks", None)
    if layout == "tiny_tick":
        meta["tick_seconds"] = 1e-9
    (run / "meta.json").write_text(json.dumps(meta))
    return run


def test_reference_layout_with_config_json_and_a_moved_dataset(tmp_path):
    res = run_cli("validate", "--vllm-run", _copy_run(tmp_path), "--out", tmp_path / "o")
    assert res.exit_code == 0, res.output
    assert "config.json (the run folder)" in res.output and "KV cache 2588 blocks" in res.output
    assert "sharegpt-llama-3.1-8b-300-sps10.jsonl (meta.json dataset_path)" in res.output


def test_no_logged_block_count_uses_the_capacity_model_and_says_so(tmp_path):
    res = run_cli("validate", "--vllm-run", _copy_run(tmp_path, "no_blocks"), "--out", tmp_path / "o")
    assert res.exit_code == 0, res.output
    assert "no num_gpu_blocks logged" in res.output and "KV cache 2629 blocks" in res.output


def test_a_config_mem_util_overriding_the_run_is_warned(tmp_path):
    res = run_cli("validate", "--vllm-run", _copy_run(tmp_path, "mem_util"), "--out", tmp_path / "o")
    assert res.exit_code == 0, res.output
    assert ("[WARNING] " in res.output and "npu_mem.mem_util 0.833919 overrides npu_memory_utilization=0.9 "
            "(meta.json)" in res.output)


def test_default_output_folder_depends_on_the_kv_blocks_mode(tmp_path, monkeypatch):
    from conftest import ROOT

    monkeypatch.chdir(tmp_path)  # outputs/ goes here; the run's dataset is found among the shipped workloads
    for mode in ("run", "model"):
        res = run_cli("validate", "--vllm-run", ROOT / RUN, "--kv-blocks", mode)
        assert res.exit_code == 0, res.output
        assert (tmp_path / "outputs/validate/RTX4090-Llama-3.1-8B" / mode / "table.csv").is_file()


def test_a_tick_interval_out_of_range_stops_before_simulating(tmp_path):
    res = run_cli("validate", "--vllm-run", _copy_run(tmp_path, "tiny_tick"), "--out", tmp_path / "o")
    assert res.exit_code == 2
    assert res.output.strip().splitlines()[-1] == (f"error: {tmp_path / 'run' / 'meta.json'}: tick_seconds: expected "
                                                   "seconds within [0.001, 3600], got 1e-09")
    assert not (tmp_path / "o").exists()
