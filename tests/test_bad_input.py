"""The bad-input battery: each case stops with exit code 2 and one `error:` line naming the file,
field or option, leaves files that existed untouched, and leaves no temp file or ASTRA-Sim run
folder behind."""
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from conftest import ROOT, run_cli

BASE = json.loads((ROOT / "configs/cluster/single_node_single_instance.json").read_text())
EXAMPLE = ROOT / "workloads/example_trace.jsonl"


def _cfg(tmp, name, mutate=None, text=None):
    p = tmp / name
    if text is None:
        cfg = json.loads(json.dumps(BASE))
        mutate(cfg)
        text = json.dumps(cfg)
    p.write_text(text)
    return p


def _inst(c):
    return c["nodes"][0]["instances"][0]


def _jsonl(tmp, name, text):
    p = tmp / name
    p.write_text(text)
    return p


def _line(**fields):
    return json.dumps({"input_toks": 10, "output_toks": 5, "arrival_time_ns": 0, **fields}) + "\n"


# id -> (tmp -> (cluster config, dataset, extra args), substrings of the error line)
CASES = {
    "link_bw tiny": (lambda t: (_cfg(t, "c.json", lambda c: c.update(link_bw=1e-300)), EXAMPLE, []),
                     ["c.json", "link_bw", "1e-300"]),
    "link_latency huge": (lambda t: (_cfg(t, "c.json", lambda c: c.update(link_latency=1e30)), EXAMPLE, []),
                          ["c.json", "link_latency", "1e+30"]),
    "mem_size huge": (lambda t: (_cfg(t, "c.json", lambda c: _inst(c)["npu_mem"].update(mem_size=1e300)), EXAMPLE,
                                 []), ["nodes[0].instances[0].npu_mem.mem_size", "1e+300"]),
    "mem_latency inf": (lambda t: (_cfg(t, "c.json", text=json.dumps(BASE).replace(
        '"mem_latency": 0', '"mem_latency": 1e400', 1)), EXAMPLE, []), ["mem_latency", "finite"]),
    "tp 2**40": (lambda t: (_cfg(t, "c.json", lambda c: _inst(c).update(tp_size=2**40, num_npus=2**40)), EXAMPLE, []),
                 ["nodes[0].instances[0].tp_size", "1099511627776"]),
    # vLLM: "Total number of attention heads (32) must be divisible by tensor parallel size (3)"
    "tp not dividing heads": (lambda t: (_cfg(t, "c.json", lambda c: _inst(c).update(tp_size=3, num_npus=3)),
                                         EXAMPLE, []), ["tp_size", "attention heads (32)", "divisible"]),
    "nested config": (lambda t: (_cfg(t, "c.json", text="[" * 100_000), EXAMPLE, []), ["c.json", "nested too deeply"]),
    "nested workload line": (lambda t: (None, _jsonl(t, "w.jsonl", _line() + "[" * 100_000 + "\n"), []),
                             ["w.jsonl", "line 2", "nested too deeply"]),
    "arrival 1e30": (lambda t: (None, _jsonl(t, "w.jsonl", _line(arrival_time_ns=1e30)), []),
                     ["w.jsonl", "line 1", "arrival_time_ns"]),
    "arrival 10**30": (lambda t: (None, _jsonl(t, "w.jsonl", _line(arrival_time_ns=10**30)), []),
                       ["w.jsonl", "line 1", "arrival_time_ns", "<="]),
    "negative output": (lambda t: (None, _jsonl(t, "w.jsonl", _line(output_toks=-1)), []),
                        ["w.jsonl", "line 1", "output_toks"]),
    "dataset /dev/zero": (lambda t: (None, Path("/dev/zero"), []), ["/dev/zero", "regular file"]),
    "config a folder": (lambda t: (t, EXAMPLE, []), ["cluster config", "regular file"]),
    "log interval 1e-9": (lambda t: (None, EXAMPLE, ["--log-interval", "1e-9"]), ["--log-interval", "1e-06"]),
    "log interval nan": (lambda t: (None, EXAMPLE, ["--log-interval", "nan"]), ["--log-interval", "finite"]),
    "memory utilization nan": (lambda t: (None, EXAMPLE, ["--npu-memory-utilization", "nan"]),
                               ["--npu-memory-utilization", "finite"]),
    "astra timeout inf": (lambda t: (None, EXAMPLE, ["--astra-sim-timeout", "inf"]), ["--astra-sim-timeout", "finite"]),
    "gpu blocks 1e12": (lambda t: (None, EXAMPLE, ["--num-gpu-blocks", str(10**12)]), ["--num-gpu-blocks"]),
    "seed not an integer": (lambda t: (None, EXAMPLE, ["--seed", "x"]), ["--seed", "integer"]),
    "unknown option": (lambda t: (None, EXAMPLE, ["--bogus"]), ["--bogus"]),
    # outputs that would destroy an input or another output
    "output is the dataset": (lambda t: (None, _jsonl(t, "w.jsonl", _line()), ["--output", t / "w.jsonl"]),
                              ["w.jsonl", "would overwrite the dataset"]),
    "output is the config": (lambda t: (_cfg(t, "c.json", lambda c: None), EXAMPLE, ["--output", t / "c.json"]),
                             ["would overwrite the cluster config"]),
    "output via ..": (lambda t: (_cfg(t, "c.json", lambda c: None), EXAMPLE, ["--output", t / "new" / ".." / "c.json"]),
                      ["would overwrite the cluster config"]),
    "config is <output>.meta.json": (lambda t: (_cfg(t, "o.csv.meta.json", lambda c: None), EXAMPLE,
                                                ["--output", t / "o.csv"]), ["o.csv.meta.json", "cluster config"]),
    "output is the iteration log": (lambda t: (None, EXAMPLE, ["--output", t / "o.csv", "--iteration-log",
                                                               t / "o.csv"]), ["same file as the output"]),
    "iteration log is <output>.summary.json": (lambda t: (None, EXAMPLE, [
        "--output", t / "o.csv", "--iteration-log", t / "o.csv.summary.json"]), ["same file as the summary"]),
    "stdout twice": (lambda t: (None, EXAMPLE, ["--output", "-", "--iteration-log", "-"]), ["same file"]),
    "output a folder": (lambda t: (None, EXAMPLE, ["--output", t]), ["is a directory"]),
    "output in a new folder, bad config": (lambda t: (_cfg(t, "c.json", lambda c: c.update(link_bw=-1)), EXAMPLE,
                                                      ["--output", t / "new" / "deeper" / "o.csv"]), ["link_bw"]),
    "output under /proc": (lambda t: (None, EXAMPLE, ["--output", "/proc/llmsim-x.csv"]),
                           ["/proc/llmsim-x.csv", "cannot write output"]),
}


def _astra_folders():
    parent = Path(tempfile.gettempdir())
    return set(parent.glob("llmsim-astra*")) | set((parent / "llmsim-astra").glob("*"))


def _snapshot(folder: Path) -> dict:
    return {p: p.read_bytes() if p.is_file() else "folder" for p in folder.rglob("*")}


@pytest.mark.parametrize("case", CASES, ids=list(CASES))
def test_bad_input_is_one_line_exit_2_and_touches_nothing(tmp_path, case):
    build, expect = CASES[case]
    work = tmp_path / "work"
    work.mkdir()
    (work / "precious.csv").write_text("kept\n")  # default output, present before the run
    cfg, dataset, extra = build(work)
    args = ["--cluster-config", cfg or ROOT / "configs/cluster/single_node_single_instance.json"]
    if dataset is not None:
        args += ["--dataset", dataset]
    if "--output" not in extra:
        extra = extra + ["--output", work / "precious.csv"]
    before, folders = _snapshot(work), _astra_folders()
    res = run_cli(*args, *extra, "--quiet")
    assert res.exit_code == 2, res.output
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), res.output
    for piece in expect:
        assert str(piece) in lines[0], lines[0]
    assert _snapshot(work) == before  # inputs and old outputs byte for byte, nothing new
    assert not list(work.rglob(".*.tmp"))
    assert _astra_folders() == folders


@pytest.mark.parametrize("which", ["--cluster-config", "--dataset"])
def test_fifo_input_is_refused_not_waited_on(tmp_path, which):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    args = {"--cluster-config": str(ROOT / "configs/cluster/single_node_single_instance.json"),
            "--dataset": str(EXAMPLE)}
    args[which] = str(fifo)
    cmd = [sys.executable, "-m", "llmsim", *[x for kv in args.items() for x in kv], "--quiet"]
    # nobody writes to the FIFO: opening it would block, so a hang here is the failure
    res = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=60,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert res.returncode == 2
    assert res.stderr.startswith(f"error: {fifo}") and "regular file" in res.stderr
    assert len(res.stderr.splitlines()) == 1
