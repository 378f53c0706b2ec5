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
