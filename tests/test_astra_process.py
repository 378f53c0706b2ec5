"""Nothing hangs, nothing leaks: misbehaving ASTRA-Sim binaries (plain /bin/sh scripts) end in one
`error:` line, exit code 2, within a bound, with no leftover process, temp run folder or output."""
import fcntl
import os
import stat
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from conftest import run_cli

CFG = "configs/cluster/single_node_pp_instance.json"
NAMES = {"llmservingsim": "AnalyticalAstra", "upstream": "AstraSim_Analytical_Congestion_Unaware"}


@pytest.fixture(autouse=True)
def _own_tempdir(tmp_path, monkeypatch):
    """Temporary run folders go under this test's own tempdir, so another llmsim or pytest running
    on the machine cannot add or remove folders the checks below count."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()


def _parent() -> Path:
    return Path(tempfile.gettempdir()) / "llmsim-astra"

SCRIPTS = {
    "background-child-then-exit": ("sleep 300 &\nexit 0\n", ["exited", "no result", "kept running"]),
    "close-stdout-and-sleep": ("exec 1>&-\nexec sleep 300\n", ["exited", "reported nothing", "no result",
                                                               "never finished"]),
    "invalid-utf8": ("printf '\\377\\376 garbage \\200\\n'\nexit 0\n", ["exited", "never finished",
                                                                         "broke the protocol"]),
    "flood-stdout": ("exec yes\n", ["reported nothing", "no result", "more than", "broke the protocol"]),
    "exit-3-with-stderr": ("echo 'boom: bad config' >&2\nexit 3\n", ["code 3"]),
}


def _script(tmp_path, flavor, body):
    exe = tmp_path / "bin" / NAMES[flavor]
    exe.parent.mkdir(parents=True, exist_ok=True)
    exe.write_text(f"#!/bin/sh\n# {tmp_path}\n{body}")
    exe.chmod(exe.stat().st_mode | stat.S_IEXEC)
    return exe


def _temp_folders():
    return set(_parent().iterdir()) if _parent().is_dir() else set()


def _leftover_processes(tmp_path):
    time.sleep(0.3)
    ps = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True).stdout
    return [l for l in ps.splitlines() if str(tmp_path) in l and "ps -eo" not in l]


@pytest.mark.parametrize("flavor", ["llmservingsim", "upstream"])
@pytest.mark.parametrize("case", sorted(SCRIPTS))
def test_misbehaving_binary(tmp_path, flavor, case):
    body, expect = SCRIPTS[case]
    # the background child gets tmp_path on its command line so that ps can find it
    exe = _script(tmp_path, flavor, body.replace("sleep 300", f"sh -c 'sleep 300' {tmp_path}"))
    out = tmp_path / "out.csv"
    before = _temp_folders()
    t0 = time.monotonic()
    res = run_cli("--cluster-config", CFG, "--dtype", "float16", "--dataset", "workloads/example_trace.jsonl",
                  "--output", out, "--quiet", "--backend", "astra-sim", "--astra-sim-bin", exe,
                  "--astra-sim-flavor", flavor, "--astra-sim-timeout", 2)
    elapsed = time.monotonic() - t0
    assert res.exit_code == 2, res.output
    (line,) = [l for l in res.output.splitlines() if l.startswith("error:")]
    assert any(e in line for e in expect), line
    assert len(line) < 1000
    assert elapsed < 20
    assert not out.exists()
    assert not _leftover_processes(tmp_path)
    assert _temp_folders() - before == set()


@pytest.mark.parametrize("value", ["nan", "inf", "0", "-1"])
def test_timeout_must_be_finite_and_positive(tmp_path, value):
    exe = _script(tmp_path, "llmservingsim", "exit 0\n")
    res = run_cli("--cluster-config", CFG, "--dtype", "float16", "--dataset", "workloads/example_trace.jsonl",
                  "--output", tmp_path / "o.csv", "--quiet", "--backend", "astra-sim", "--astra-sim-bin", exe,
                  "--astra-sim-timeout", value)
    assert res.exit_code == 2
    assert not (tmp_path / "o.csv").exists()


def test_workdir_in_use_is_one_line(tmp_path):
    wd = tmp_path / "wd"
    wd.mkdir()
    exe = _script(tmp_path, "llmservingsim", "exit 0\n")
    with open(wd / ".llmsim.lock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        res = run_cli("--cluster-config", CFG, "--dtype", "float16", "--dataset", "workloads/example_trace.jsonl",
                      "--output", tmp_path / "o.csv", "--quiet", "--backend", "astra-sim", "--astra-sim-bin", exe,
                      "--astra-sim-workdir", wd)
    assert res.exit_code == 2
    (line,) = [l for l in res.output.splitlines() if l.startswith("error:")]
    assert "in use" in line


def test_stale_temp_run_folder_is_removed(tmp_path):
    dead = subprocess.Popen(["true"])
    dead.wait()
    stale = _parent() / f"{dead.pid}-deadbeef"
    stale.mkdir(parents=True, exist_ok=True)
    (stale / "junk").write_text("x")
    exe = _script(tmp_path, "llmservingsim", "exit 3\n")
    res = run_cli("--cluster-config", CFG, "--dtype", "float16", "--dataset", "workloads/example_trace.jsonl",
                  "--output", tmp_path / "o.csv", "--quiet", "--backend", "astra-sim", "--astra-sim-bin", exe)
    assert res.exit_code == 2
    assert not stale.exists() or os.path.exists(f"/proc/{dead.pid}")
