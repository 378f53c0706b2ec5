"""Temporary ASTRA-Sim run folders live under one shared parent (tempdir/llmsim-astra/)."""
import shutil
from pathlib import Path

PARENT = "llmsim-astra"


def remove_run_folder(workdir: Path) -> None:
    """Remove a temporary run folder, and the shared parent when no other run uses it."""
    shutil.rmtree(workdir, ignore_errors=True)
    if workdir.parent.name == PARENT:
        try:
            workdir.parent.rmdir()
        except OSError:
            pass
