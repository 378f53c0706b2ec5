import csv
import stat
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from llmsim.cli import main

ROOT = Path(__file__).resolve().parents[1]
REF = ROOT / "tests" / "data" / "reference-runs"


@pytest.fixture(autouse=True)
def _in_repo(monkeypatch):
    monkeypatch.chdir(ROOT)


def run_cli(*args):
    """Run llmsim in process; returns the click Result."""
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def read_rows(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def standin_shim(tmp_path, name="AnalyticalAstra", env_line=""):
    """An executable named like an ASTRA-Sim binary that runs the fork's protocol stand-in
    (tests/astra_standin.py, a test double reading the .et files we write)."""
    exe = tmp_path / "bin" / name
    exe.parent.mkdir(parents=True, exist_ok=True)
    standin = ROOT / "tests" / "astra_standin.py"
    exe.write_text(f"#!/bin/sh\n{env_line}PYTHONPATH={ROOT} exec {sys.executable} {standin} \"$@\"\n")
    exe.chmod(exe.stat().st_mode | stat.S_IEXEC)
    return exe


def fake_upstream(monkeypatch, tmp_path):
    """Upstream's binary replaced: each stage's rank-0 NPU finishes where the embedded model's
    stage times, run back to back from 0, put it (what a congestion-unaware run reports).
    Returns an executable named like upstream's binary (never run: _run is faked)."""
    from astra_bridge.upstream import UpstreamBackend
    from llmsim.backends.embedded import EmbeddedBackend

    def fake_run(self, prefix, graph, ident):
        t, out = 0, {}
        for s, (busy, load, store) in enumerate(EmbeddedBackend(self.cluster).stage_times(graph)):
            t += busy + load + store
            out[ident(graph.npu(s, 0))] = t
        return out

    monkeypatch.setattr(UpstreamBackend, "_run", fake_run)
    exe = tmp_path / "bin" / "AstraSim_Analytical_Congestion_Unaware"
    exe.parent.mkdir(parents=True, exist_ok=True)
    exe.write_text("#!/bin/sh\nexit 9\n")
    exe.chmod(0o755)
    return exe
