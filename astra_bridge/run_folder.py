"""ASTRA-Sim run folders: a user's --astra-sim-workdir, or a temporary one under one shared
parent (tempdir/llmsim-astra/<pid>-<random>) that the next run cleans if its process is gone.
A run holds its folder's lock (flock) from claim to release, so two runs never share one."""
from __future__ import annotations

import fcntl
import os
import secrets
import shutil
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from llmsim.errors import InputError

PARENT = "llmsim-astra"
LOCK = ".llmsim.lock"


@dataclass
class RunFolder:
    path: Path
    temporary: bool  # removed on release
    lock: IO | None = None

    @classmethod
    def claim(cls, workdir: str | None) -> "RunFolder":
        folder = cls(Path(workdir), False) if workdir else cls(_temp_folder(), True)
        try:
            folder.path.mkdir(parents=True, exist_ok=True)
            folder.lock = open(folder.path / LOCK, "w")
        except OSError as e:
            folder.release()
            raise InputError(f"{folder.path}: cannot use as the ASTRA-Sim run folder ({e.strerror})") from None
        try:
            fcntl.flock(folder.lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            folder.release()
            raise InputError(f"{folder.path}: the ASTRA-Sim run folder is in use by another llmsim run; "
                             "give each run its own --astra-sim-workdir") from None
        return folder

    def release(self) -> None:
        """Unlock; a temporary folder goes, with the shared parent when no other run uses it.
        Releasing twice is harmless."""
        if self.lock is not None:
            self.lock.close()
            self.lock = None
        if self.temporary:
            self.temporary = False
            shutil.rmtree(self.path, ignore_errors=True)
            try:
                self.path.parent.rmdir()
            except OSError:
                pass


def _temp_folder() -> Path:
    parent = Path(tempfile.gettempdir()) / PARENT
    parent.mkdir(parents=True, exist_ok=True)
    for old in parent.iterdir():
        pid = old.name.split("-", 1)[0]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(old, ignore_errors=True)  # left by a run that was SIGKILLed
    wd = parent / f"{os.getpid()}-{secrets.token_hex(4)}"
    wd.mkdir(parents=True)  # parents: another run may have just removed the empty parent
    return wd


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


WARN_AT_BYTES = (1 << 30, 10 << 30, 100 << 30)


class TraceFiles:
    """The per-batch trace folders of a run. Without --keep-traces each goes as soon as ASTRA-Sim
    is done with it, so a long run needs the disk of the batches in flight, not of all of them.
    With it, the cost is said after the first batch and again as the folder passes 1, 10, 100 GiB."""

    def __init__(self, root: Path, keep: bool):
        self.root, self.keep = root, keep
        self.kept_bytes = 0
        self.kept_batches = 0
        self._next_warning = 0

    def written(self, prefix: Path) -> None:
        if not self.keep:
            return
        size = sum(p.stat().st_size for p in prefix.parent.iterdir())
        self.kept_bytes += size
        self.kept_batches += 1
        if self.kept_batches == 1:
            warnings.warn(f"--keep-traces: every batch's traces stay in {self.root}, about {size / 1024:.0f} KiB "
                          f"per batch on this cluster ({size * 10_000 / 2**30:.1f} GiB per 10,000 batches)")
        while self._next_warning < len(WARN_AT_BYTES) and self.kept_bytes >= WARN_AT_BYTES[self._next_warning]:
            warnings.warn(f"--keep-traces: {self.root} now holds {self.kept_bytes / 2**30:.1f} GiB of traces "
                          f"({self.kept_batches} batches)")
            self._next_warning += 1

    def done(self, prefix: Path) -> None:
        """ASTRA-Sim has finished the workload at prefix."""
        if not self.keep:
            shutil.rmtree(prefix.parent, ignore_errors=True)

    def same_as(self, prefix: Path, earlier: Path) -> None:
        """prefix's traces repeat earlier's byte for byte: a kept one becomes a link to it."""
        shutil.rmtree(prefix.parent, ignore_errors=True)
        if self.keep:
            prefix.parent.symlink_to(os.path.relpath(earlier.parent, prefix.parent.parent))
