"""The ASTRA-Sim fork stand-in (tests/astra_standin.py): protocol and analytical timing, hand-worked."""
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from astra_bridge.chakra.codec import (CollectiveCommType, coll_node, comp_node, global_metadata, mem_node,
                                       recv_node, send_node, write_et)
from astra_bridge.process import AstraProcess, BackendError

ROOT = Path(__file__).resolve().parents[1]
STANDIN = ROOT / "tests" / "astra_standin.py"  # run by path; imports astra_bridge via PYTHONPATH
FL = "llmservingsim"
REPORT = re.compile(r"sys\[(\d+)\] iteration (\d+) finished, (\d+) cycles, exposed communication (\d+) cycles")


def configs(tmp: Path, dims=(2,)) -> dict:
    """network.yml / system.json / memory json in the shape astra_bridge.inputs writes."""
    n = len(dims)
    (tmp / "network.yml").write_text(
        f"topology: [{', '.join(['FullyConnected'] * n)}]\nnpus_count: {list(dims)}\n"
        f"bandwidth: {[16.0] * n}\nlatency: {[20000.0] * n}\n")
    (tmp / "system.json").write_text(
        '{"scheduling-policy": "LIFO", "endpoint-delay": 10, "active-chunks-per-dimension": 1, '
        '"preferred-dataset-splits": 1, "all-reduce-implementation": ["ring"], '
        '"collective-optimization": "localBWAware", "local-mem-bw": 1597, "boost-mode": 0}')
    (tmp / "memory.json").write_text('{"remote_mem": {"memory-type": "PER_NODE_MEMORY_EXPANSION", '
                                     '"mem-bw": 256, "mem-latency": 0, "num-devices": 1}}')
    return {"system": tmp / "system.json", "network": tmp / "network.yml", "memory": tmp / "memory.json"}


def write(prefix: Path, per_npu: dict) -> Path:
    prefix.parent.mkdir(parents=True, exist_ok=True)
    for npu, nodes in per_npu.items():
        write_et(f"{prefix}.{npu}.et", global_metadata(), nodes)
    return prefix


def pp2_batch(prefix: Path) -> Path:
    """NPU0: COMP 1000 ns -> SEND 8192 B; NPU1: RECV -> COMP 500 ns (D(8192) = 20476 ns)."""
    return write(prefix, {
        0: [comp_node(FL, 0, "c0", 1000), send_node(FL, 1, "s", 0, 1, 8192, 7, data_deps=[0])],
        1: [recv_node(FL, 0, "r", 0, 1, 8192, 7), comp_node(FL, 1, "c1", 500, data_deps=[0])]})


def cmd(first: Path, cfg: dict, starts="0,", ends="1,") -> list[str]:
    return [sys.executable, str(STANDIN), f"--workload-configuration={first}",
            f"--system-configuration={cfg['system']}", f"--network-configuration={cfg['network']}",
            f"--memory-configuration={cfg['memory']}", f"--start-npu-ids={starts}", f"--end-npu-ids={ends}",
            "--unknown-flag=ignored"]


def run(args, answers, env=None):
    """Answers are known in advance (the stand-in is deterministic): one stdin line per report."""
    env = {**os.environ, **(env or {}), "PYTHONPATH": str(ROOT)}
    p = subprocess.run(args, input="".join(a + "\n" for a in answers), capture_output=True, text=True,
                       timeout=30, cwd=ROOT, env=env)
    reports = [tuple(map(int, m.groups())) for m in REPORT.finditer(p.stdout)]
    return p, reports


def test_p2p_chain_reports_absolute_finish_ticks(tmp_path):
    cfg = configs(tmp_path)
    first = pp2_batch(tmp_path / "b0" / "llm")  # run from t=0 as the start-up workload
    p, reports = run(cmd(first, cfg), ["pass", "pass", "pass", "exit"])
    assert p.returncode == 0, p.stderr
    assert reports == [
        (0, 0, 1000 + 20476, 20476),  # NPU0 is free once its SEND arrives; exposed = tick - comp
        (1, 0, 1000 + 20476 + 500, 1000 + 20476),  # NPU1: RECV done at the arrival, then 500 ns
        (0, 0, 21976, 20976),  # the idle start NPU is re-polled at every event tick
        (1, 0, 21976 + 1_000_000, 1021476),  # nothing pending: time steps 1 ms
    ]
    assert "Checking End NPU 1 ..." in p.stdout and "Checking Managed Systems for Controller NPU 0 ..." in p.stdout
    assert "All Request Has Been Exited" in p.stdout


def test_startup_is_iteration_0_then_batch_is_iteration_1(tmp_path):
    cfg = configs(tmp_path)
    handler = write(tmp_path / "event_handler" / "llm", {n: [comp_node(FL, 0, "wait", 5000)] for n in (0, 1)})
    batch = str(pp2_batch(tmp_path / "b0" / "llm"))
    # As the captured pp=2 run: sys[1] gets `pass` first, sys[0] the batch, sys[1] the batch on its next poll.
    p, reports = run(cmd(handler, cfg), ["pass", batch, batch, "pass", "pass", "exit"])
    assert p.returncode == 0, p.stderr
    assert [r[:3] for r in reports] == [
        (1, 0, 5000), (0, 0, 5000),
        (1, 0, 6000),  # next event tick: NPU0's COMP ends; NPU1 is handed the batch now
        (0, 1, 6000 + 20476),  # the RECV was posted at 6000, before the arrival
        (1, 1, 6000 + 20476 + 500), (0, 1, 26976)]
    assert "All Request Has Been Exited" in p.stdout


def test_allreduce_memory_and_unfinished_exit(tmp_path):
    cfg = configs(tmp_path)
    # tp=2 all-reduce of 81920 B (docs/astra-bridge.md, "Analytical timing"): 10 + 2*(22384+10) + 3*25
    # = 44873 ns; then a 1 GiB load each from 256 GB/s host memory (4194304 ns), queued FIFO on its one device.
    ar = 44873
    first = write(tmp_path / "ar" / "llm", {n: [coll_node(FL, 0, "ar", CollectiveCommType.ALL_REDUCE, 81920),
                                                mem_node(FL, 1, "ld", False, 1 << 30, data_deps=[0])]
                                            for n in (0, 1)})
    hang = str(write(tmp_path / "hang" / "llm", {1: [recv_node(FL, 0, "r", 0, 1, 64, 1)]}))  # no SEND
    p, reports = run(cmd(first, cfg), ["pass", hang, "exit"])
    assert p.returncode == 0, p.stderr
    assert [r[:3] for r in reports] == [(0, 0, ar + 4194304), (1, 0, ar + 2 * 4194304), (0, 0, ar + 2 * 4194304)]
    assert "sys[1]" in p.stdout.split("Checking Non-Exited Systems")[1]
    assert "ERROR: Some Requests Remain" in p.stdout


def test_done_sleeps_and_stall(tmp_path):
    cfg = configs(tmp_path)
    first = pp2_batch(tmp_path / "b0" / "llm")
    p, reports = run(cmd(first, cfg), ["done", "pass", "exit"])
    assert p.returncode == 0, p.stderr
    assert [r[:3] for r in reports] == [(0, 0, 21476), (1, 0, 21976), (1, 0, 1021976)]  # NPU0 never again
    assert "All Request Has Been Exited" in p.stdout
    # Everyone asleep and nothing pending: nothing can change; the stand-in goes quiet until stdin closes.
    p, reports = run(cmd(first, cfg), ["done", "done"])
    assert p.returncode == 1 and len(reports) == 2 and "stalled" in p.stderr


def test_errors(tmp_path):
    cfg = configs(tmp_path)
    p, _ = run(cmd(tmp_path / "missing" / "llm", cfg), [])
    assert p.returncode == 1 and f"workload file: {tmp_path}/missing/llm.0.et does not exist" in p.stdout
    first = pp2_batch(tmp_path / "b0" / "llm")
    (tmp_path / "bad.0.et").write_bytes(b"\xff\xff\xff")
    p, reports = run(cmd(first, cfg), [str(tmp_path / "bad")])
    assert p.returncode == 1 and len(reports) == 1 and "bad.0.et" in p.stdout
    p, reports = run(cmd(first, cfg), ["pass"])  # then EOF
    assert p.returncode == 1 and len(reports) == 2


def test_driver_and_failure_knobs(tmp_path, monkeypatch):
    cfg = configs(tmp_path)
    first = pp2_batch(tmp_path / "b0" / "llm")
    monkeypatch.setenv("PYTHONPATH", str(ROOT))  # the driver runs it in its own work directory
    proc = AstraProcess(cmd(first, cfg), str(tmp_path), timeout_s=10)
    try:
        r = proc.next_report("test")
        assert (r.npu, r.iteration, r.tick_ns) == (0, 0, 21476)
        proc.answer("pass")
        assert proc.next_report("test").tick_ns == 21976
        verdict = proc.finish()
    finally:
        proc.close()
    assert verdict == "All Request Has Been Exited"

    monkeypatch.setenv("STANDIN_EXIT_AFTER", "1")
    proc = AstraProcess(cmd(first, cfg), str(tmp_path), timeout_s=10)
    try:
        proc.next_report("test")
        proc.answer("pass")
        with pytest.raises(BackendError, match=r"exited \(code 3\)"):
            proc.next_report("test")
    finally:
        proc.close()
    monkeypatch.delenv("STANDIN_EXIT_AFTER")

    monkeypatch.setenv("STANDIN_HANG_AFTER", "0")
    proc = AstraProcess(cmd(first, cfg), str(tmp_path), timeout_s=1)
    try:
        with pytest.raises(BackendError, match="reported nothing"):
            proc.next_report("test")
    finally:
        proc.close()
    assert proc.proc.poll() is not None  # the hung process group was ended
    monkeypatch.delenv("STANDIN_HANG_AFTER")

    monkeypatch.setenv("STANDIN_GARBAGE", "1")
    proc = AstraProcess(cmd(first, cfg), str(tmp_path), timeout_s=10)
    try:
        with pytest.raises(BackendError, match="broke the protocol"):
            proc.next_report("test")
    finally:
        proc.close()


def test_fork_written_traces_match_captured_run(monkeypatch):
    """The fork converter's own pp=2 .et files (tests/data/chakra) give the captured ticks (docs/astra-bridge.md,
    "Analytical timing"): start-up 46926808, NPU0 done 52082706, NPU1 done 57949826."""
    et, inputs = ROOT / "tests" / "data" / "chakra", ROOT / "tests" / "data" / "astra-inputs" / "single_node_pp2_instance"
    if not (et / "et_pp2_batch0" / "llm.1.et").exists():
        pytest.skip("captured fork traces not present")
    cfg = {k: inputs / k / f for k, f in (("system", "system.json"), ("network", "network.yml"),
                                          ("memory", "memory_expansion.json"))}
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    batch = str(et / "et_pp2_batch0" / "llm")
    proc = AstraProcess(cmd(et / "et_event_handler" / "llm", cfg), str(ROOT), timeout_s=10)
    first_done, answers = {}, iter(["pass", batch, batch])
    try:
        while 1 not in first_done:
            r = proc.next_report("test")
            if r.iteration == 0:
                assert r.tick_ns == 46926808
            else:
                first_done.setdefault(r.npu, r.tick_ns)
            proc.answer(next(answers, "pass"))
        verdict = proc.finish()
    finally:
        proc.close()
    assert first_done == {0: 52082706, 1: 57949826}
    assert verdict == "All Request Has Been Exited"
