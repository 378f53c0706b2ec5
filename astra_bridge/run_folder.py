"""ASTRA-Sim run folders: a user's --astra-sim-workdir, or a temporary one under one shared
parent (tempdir/llmsim-astra/<pid>-<random>) that the next run cleans if its process is gone.
A run holds its folder's lock (flock) from claim to release, so two runs never share one."""
from __future__ import annotations

import fcntl
import os
import secrets
import shutil
import tempfile
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
