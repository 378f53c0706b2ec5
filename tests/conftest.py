import csv
import os
import stat
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from llmsim.backends.base import BatchTiming, StageTimingBackend
from llmsim.backends.placement import Placement
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


def real_astra(flavor):
    """A real ASTRA-Sim build of the flavour, from LLMSIM_ASTRA_SIM_FORK / LLMSIM_ASTRA_SIM_UPSTREAM
    (or LLMSIM_ASTRA_SIM, by file name); None when there is none."""
    path = os.environ.get({"llmservingsim": "LLMSIM_ASTRA_SIM_FORK", "upstream": "LLMSIM_ASTRA_SIM_UPSTREAM"}[flavor])
    generic = os.environ.get("LLMSIM_ASTRA_SIM")
    names = {"llmservingsim": "AnalyticalAstra", "upstream": "AstraSim_Analytical_Congestion_Unaware"}
    if not path and generic and Path(generic).name == names[flavor]:
        path = generic
    return path


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



class FixedStages(StageTimingBackend):
    """Every stage of every batch is busy 100 ns, on two-stage tp=1 pipelines (split: each stage's
    (compute ns, SEND ns), for the accounting). Records what was submitted: (t, batch id, prefill
    tokens, decode tokens)."""
    name = "fixed"
    needs_graphs = False

    def __init__(self, cluster, split=None):
        self.placement = Placement(cluster)
        self.split = split
        self.submitted = []

    def submit(self, inst, batch, graph, t_ns, detail=False):
        self.submitted.append((t_ns, batch.id, batch.prefill_tokens, batch.decode_tokens))
        ev = self.placement.place(inst.index, inst.layout.first_npu, 1, batch.id, [(100, 0, 0)] * 2, t_ns, self.split)
        return BatchTiming(ev[0].end_ns, ev[-1].end_ns, ev if detail else None)
