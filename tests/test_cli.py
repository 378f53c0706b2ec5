"""The command line as a user and a script rely on it: one-line errors, help, version, the
machine-readable summary, the seed, where outputs go (devices, stdout, links, FIFOs), signals."""
import csv
import json
import os
import signal
import statistics
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from conftest import ROOT, read_rows, run_cli
from llmsim.version import __version__

SINGLE = ROOT / "configs/cluster/single_node_single_instance.json"
MULTI = ROOT / "configs/cluster/single_node_multi_instance.json"
EXAMPLE = ROOT / "workloads/example_trace.jsonl"
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}


def _llmsim(*args, cwd, timeout=120, **kw):
    return subprocess.run([sys.executable, "-m", "llmsim", *map(str, args)], cwd=cwd, env=ENV, capture_output=True,
                          text=True, timeout=timeout, **kw)


def test_version():
    res = run_cli("--version")
    assert res.exit_code == 0 and res.output == f"llmsim {__version__}\n"


@pytest.mark.parametrize("command", [[], ["validate"], ["doctor"], ["trace"], ["trace", "dump"], ["workload"],
                                     ["workload", "generate"]])
def test_dash_h_on_every_command(command):
    res = run_cli(*command, "-h")
    assert res.exit_code == 0 and res.output.startswith("Usage: "), res.output


def test_help_states_the_synthetic_workload_and_run_announces_it(tmp_path):
    assert "16 requests per instance, 64 prompt / 64 output tokens" in " ".join(run_cli("--help").output.split())
    res = run_cli("--cluster-config", SINGLE, "--log-interval", 0)
    assert "[INFO] no --dataset: synthetic workload, 16 requests per instance" in res.output
    assert "Requests finished:        16" in res.output
    assert res.output.rstrip().endswith("Written:                  nothing (no --output or --iteration-log)")


def test_trace_dump_of_a_corrupt_file_is_exit_2(tmp_path):
    bad = tmp_path / "bad.et"
    bad.write_bytes(b"\xff\xff\xff\xff not a trace")
    res = run_cli("trace", "dump", bad)
    assert res.exit_code == 2
    assert res.output.startswith(f"error: {bad}") and len(res.output.splitlines()) == 1


def test_summary_json_matches_the_csv(tmp_path):
    """The statistics scripts read, worked out again from the per-request CSV."""
    out = tmp_path / "o.csv"
    res = run_cli("--cluster-config", SINGLE, "--dataset", EXAMPLE, "--output", out, "--log-interval", 0)
    assert res.exit_code == 0
    assert res.output.rstrip().endswith(f"Written:                  {out}, {out}.meta.json, {out}.summary.json, "
                                        f"{out}.stages.csv")
    s = json.loads(Path(f"{out}.summary.json").read_text())
    rows = read_rows(out)
    ttft = [int(r["TTFT"]) / 1e6 for r in rows]
    lat = [int(r["latency"]) / 1e6 for r in rows]
    itl = [x / 1e6 for r in rows for x in json.loads(r["ITL"])]
    p = lambda xs, q: statistics.quantiles(xs, n=100, method="inclusive")[q - 1]  # linear, as numpy's default
    assert s["requests_finished"] == len(rows) == 10 and s["requests_unfinished"] == 0
    assert s["ttft_mean_ms"] == pytest.approx(statistics.mean(ttft), rel=1e-12)
    assert s["ttft_median_ms"] == pytest.approx(statistics.median(ttft), rel=1e-12)
    assert s["latency_p99_ms"] == pytest.approx(p(lat, 99), rel=1e-12)
    assert s["itl_p90_ms"] == pytest.approx(p(itl, 90), rel=1e-12)
    assert s["generated_tokens"] == sum(int(r["output"]) for r in rows)
    assert s["simulated_ns"] == max(int(r["end_time"]) for r in rows)
    assert s["request_throughput_per_s"] == pytest.approx(10 / (s["simulated_ns"] / 1e9), rel=1e-12)


def _instances(tmp_path, seed, tag):
    out = tmp_path / f"{tag}.csv"
    res = run_cli("--cluster-config", MULTI, "--dataset", EXAMPLE, "--request-routing-policy", "RAND",
                  "--seed", seed, "--output", out, "--quiet")
    assert res.exit_code == 0, res.output
    assert json.loads(Path(f"{out}.meta.json").read_text())["options"]["seed"] == seed
    return out.read_bytes(), sorted((int(r["request id"]), int(r["instance id"])) for r in read_rows(out))


def test_seed_is_recorded_and_drives_rand_routing(tmp_path):
    a, routes_a = _instances(tmp_path, 7, "a")
    again, _ = _instances(tmp_path, 7, "again")
    _, routes_b = _instances(tmp_path, 8, "b")
    assert a == again  # same seed, byte-identical
    assert routes_a != routes_b
    assert {i for _, i in routes_a} == {0, 1}


def test_output_to_dev_null_keeps_the_device(tmp_path):
    res = run_cli("--cluster-config", SINGLE, "--dataset", EXAMPLE, "--output", "/dev/null", "--iteration-log",
                  "/dev/null", "--log-interval", 0)
    assert res.exit_code == 0, res.output
    assert Path("/dev/null").is_char_device()
    assert not Path("/dev/null.meta.json").exists()
    assert "no .meta.json, .summary.json or .unfinished.csv beside it" in res.output


def test_output_to_stdout_moves_the_summary_to_stderr(tmp_path):
    res = _llmsim("--cluster-config", SINGLE, "--dataset", EXAMPLE, "--output", "-", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    rows = list(csv.DictReader(res.stdout.splitlines()))
    assert len(rows) == 10 and rows[0]["request id"].isdigit()
    assert "Simulation results" in res.stderr and "Written:                  -" in res.stderr
    assert list(tmp_path.iterdir()) == []


def test_closed_stdout_reader_is_a_quiet_exit(tmp_path):
    proc = subprocess.Popen([sys.executable, "-m", "llmsim", "--cluster-config", SINGLE, "--dataset", EXAMPLE,
                             "--output", "-", "--quiet"], cwd=tmp_path, env=ENV, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    proc.stdout.close()  # as `| head` does
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 141 and err == b""


def test_symlink_output_is_written_through(tmp_path):
    target = tmp_path / "real.csv"
    target.write_text("old\n")
    link = tmp_path / "link.csv"
    link.symlink_to(target.name)
    res = run_cli("--cluster-config", SINGLE, "--dataset", EXAMPLE, "--output", link, "--quiet")
    assert res.exit_code == 0
    assert link.is_symlink() and os.readlink(link) == target.name
    assert len(read_rows(target)) == 10


def test_fifo_output_is_written_through(tmp_path):
    fifo = tmp_path / "out.csv"
    os.mkfifo(fifo)
    got = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_text()), daemon=True)
    reader.start()
    res = _llmsim("--cluster-config", SINGLE, "--dataset", EXAMPLE, "--output", fifo, "--quiet", cwd=tmp_path)
    reader.join(timeout=60)
    assert res.returncode == 0, res.stderr
    assert fifo.is_fifo() and len(got[0].splitlines()) == 11


def test_stale_unfinished_list_is_removed(tmp_path):
    out = tmp_path / "o.csv"
    Path(f"{out}.unfinished.csv").write_text("from an earlier run\n")
    assert run_cli("--cluster-config", SINGLE, "--dataset", EXAMPLE, "--output", out, "--quiet").exit_code == 0
    assert not Path(f"{out}.unfinished.csv").exists()


def test_utf8_bom_is_accepted(tmp_path):
    ds, cfg = tmp_path / "w.jsonl", tmp_path / "c.json"
    ds.write_bytes(b"\xef\xbb\xbf" + EXAMPLE.read_bytes())
    cfg.write_bytes(b"\xef\xbb\xbf" + SINGLE.read_bytes())
    for tag, c, d in (("bom", cfg, ds), ("plain", SINGLE, EXAMPLE)):
        assert run_cli("--cluster-config", c, "--dataset", d, "--output", tmp_path / f"{tag}.csv",
                       "--quiet").exit_code == 0
    assert (tmp_path / "bom.csv").read_bytes() == (tmp_path / "plain.csv").read_bytes()


def test_a_billion_pinned_blocks_cost_nothing_up_front(tmp_path):
    """The block pool keeps blocks never handed out implicit: a billion would be 8 GB as a list."""
    out = tmp_path / "o.csv"
    res = _llmsim("--cluster-config", SINGLE, "--dataset", EXAMPLE, "--num-gpu-blocks", 10**9, "--output", out,
                  "--quiet", cwd=tmp_path, timeout=60)
    assert res.returncode == 0, res.stderr
    assert json.loads(Path(f"{out}.meta.json").read_text())["instances"][0]["kv_blocks"] == 10**9


def test_epoch_arrivals_start_at_zero_with_a_note(tmp_path):
    """Unix-epoch timestamps: the run is the same as the workload moved to t=0, with no heartbeat per idle second."""
    epoch = 1_700_000_000_000_000_000
    lines = EXAMPLE.read_text().splitlines()
    first = json.loads(lines[0])["arrival_time_ns"]
    moved, late = tmp_path / "moved.jsonl", tmp_path / "late.jsonl"
    for path, add in ((moved, -first), (late, epoch - first)):
        objs = [json.loads(ln) for ln in lines]
        for o in objs:
            o["arrival_time_ns"] += add
        path.write_text("".join(json.dumps(o) + "\n" for o in objs))
    res = run_cli("--cluster-config", SINGLE, "--dataset", late, "--output", tmp_path / "late.csv")
    assert res.exit_code == 0
    assert f"[INFO] the first request arrives at {epoch} ns" in res.output
    assert sum("step=" in ln for ln in res.output.splitlines()) < 5
    assert json.loads((tmp_path / "late.csv.meta.json").read_text())["arrival_shift_ns"] == epoch
    run_cli("--cluster-config", SINGLE, "--dataset", moved, "--output", tmp_path / "moved.csv", "--quiet")
    assert (tmp_path / "late.csv").read_bytes() == (tmp_path / "moved.csv").read_bytes()


def _long_workload(path: Path, n=40_000):
    path.write_text("".join(json.dumps({"input_toks": 200 + i % 300, "output_toks": 100 + i % 200,
                                        "arrival_time_ns": i * 20_000_000}) + "\n" for i in range(n)))


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_mid_run_writes_nothing(tmp_path, sig, code):
    ds, out = tmp_path / "w.jsonl", tmp_path / "o.csv"
    _long_workload(ds)
    out.write_text("old\n")
    proc = subprocess.Popen([sys.executable, "-m", "llmsim", "--cluster-config", str(SINGLE), "--dataset", str(ds),
                             "--output", str(out), "--log-interval", "1"], cwd=tmp_path, env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for line in proc.stdout:  # heartbeats: the simulation is under way
        if "step=" in line:
            break
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == code, err
    if sig == signal.SIGINT:
        assert err.strip().endswith("interrupted: no output file was written (outputs are written only at the end, "
                                    "atomically)")
    assert out.read_text() == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o.csv", "w.jsonl"]


@pytest.mark.parametrize("flags, want", [
    ([], ("vllm", "vllm", "vllm")),
    (["--compat", "llmservingsim"], ("reference", "reference", "reference")),
    # a rule given explicitly wins over --compat
    (["--compat", "llmservingsim", "--batch-formation", "vllm"], ("reference", "vllm", "reference")),
    (["--stage-transfer", "reference"], ("vllm", "vllm", "reference")),
])
def test_compat_selects_the_reference_rules_each_switchable(tmp_path, flags, want):
    out = tmp_path / "o.csv"
    res = run_cli("--cluster-config", ROOT / "configs/cluster/single_node_pp_instance.json", "--dataset", EXAMPLE,
                  "--num-reqs", 2, "--output", out, "--quiet", *flags)
    assert res.exit_code == 0, res.output
    inst, = json.loads(Path(f"{out}.meta.json").read_text())["instances"]
    assert (inst["kv_capacity"], inst["batch_formation"], inst["stage_transfer"]) == want


def test_validate_finds_the_shipped_run_from_any_folder(tmp_path):
    # the README's command, run outside the source tree (as in the container): the shipped run resolves
    res = _llmsim("validate", "--vllm-run", "configs/validation/RTX4090-Llama-3.1-8B", "--out", tmp_path / "v",
                  cwd=tmp_path, timeout=300)
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "v" / "table.csv").is_file()
