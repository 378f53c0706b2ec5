import csv
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
