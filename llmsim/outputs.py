"""Output files: reserved before a run, written all at once after it.

Reserving checks that no output resolves to an input or to another output and creates each
regular file's temp file beside it, so a bad destination fails in milliseconds, not after a
long simulation. Writing fills the temp files and renames them all: a failure or an interrupt
leaves nothing half-written. Character devices, FIFOs and `-` (stdout) are written through,
never renamed over; a symlink's target is replaced, the link kept.
"""
from __future__ import annotations

import os
import stat
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from .errors import InputError

STDOUT = "-"


def _stat(path: str):
    try:
        return os.stat(path)
    except OSError:
        return None


def is_stream(path: str) -> bool:
    """Written through rather than replaced: `-`, or an existing path that is not a regular file."""
    if path == STDOUT:
        return True
    st = _stat(path)
    return st is not None and not stat.S_ISREG(st.st_mode) and not stat.S_ISDIR(st.st_mode)


def is_stdout(path: str) -> bool:
    """`-`, or a path that is the process's own stdout (/dev/stdout, /proc/self/fd/1)."""
    if path == STDOUT:
        return True
    st = _stat(path)
    try:
        return st is not None and os.path.samestat(st, os.fstat(sys.stdout.fileno()))
    except (OSError, ValueError, AttributeError):
        return False


def _identity(path: str):
    """One key per file, however it is named (links, `..` over folders not yet made)."""
    real = os.path.realpath(path)
    st = _stat(real)
    return (st.st_dev, st.st_ino) if st is not None else real


@dataclass
class Reservation:
    """Outputs checked and staged; `write` fills them, `discard` undoes the staging."""
    staged: dict = field(default_factory=dict)  # user path -> (temp path, final path) for regular files
    streams: list = field(default_factory=list)  # user paths written through
    stdout: object = field(default_factory=lambda: sys.stdout)  # the real one, even under redirect_stdout
    made_dirs: list = field(default_factory=list)  # folders reserve() created, removed again on discard

    def write(self, files: dict) -> None:
        """data: str, bytes, or an iterable of str chunks (large outputs are streamed). A reserved
        regular file left out of `files` is removed if it exists (stale, from an earlier run)."""
        written = {str(p) for p in files}
        try:
            for path, data in files.items():
                path = str(path)
                if path in self.streams:
                    _write_through(path, data, self.stdout)
                else:
                    tmp, _ = self.staged[path]
                    with _open(tmp, "w", data) as f:
                        _fill(f, data)
        except BrokenPipeError:
            self.discard()
            raise  # a closed reader (`| head`): the CLI exits quietly
        except OSError as e:
            self.discard()
            raise InputError(f"{e.filename or path}: cannot write output ({e.strerror})") from None
        except BaseException:
            self.discard()
            raise
        for path, (tmp, final) in self.staged.items():
            if path in written:
                os.replace(tmp, final)
            else:
                os.unlink(tmp)
                if os.path.isfile(final):
                    os.unlink(final)
        self.staged.clear()
        self.made_dirs.clear()

    def discard(self) -> None:
        for tmp, _ in self.staged.values():
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
        self.staged.clear()
        for d in reversed(self.made_dirs):
            try:
                d.rmdir()
            except OSError:
                pass
        self.made_dirs.clear()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.discard()


def _open(path: str, mode: str, data):
    return open(path, mode + "b") if isinstance(data, bytes) else open(path, mode, newline="")


def _fill(f, data) -> None:
    if isinstance(data, (str, bytes)):
        f.write(data)
    else:
        f.writelines(data)


def _write_through(path: str, data, stdout) -> None:
    if path == STDOUT:
        out = stdout.buffer if isinstance(data, bytes) else stdout
        _fill(out, data)
        out.flush()
        return
    with _open(path, "a", data) as f:  # "a": never truncate what stdout's file already holds
        _fill(f, data)


def reserve(outputs: list, inputs: dict) -> Reservation:
    """outputs: (path, what it is) pairs; inputs: path -> what it is (for messages). Refuses an output that is an input,
    two outputs that are one file, and a destination that cannot be created."""
    seen_in = {_identity(str(p)): (p, what) for p, what in inputs.items() if p and str(p) != STDOUT}
    seen_out: dict = {}
    res = Reservation()
    try:
        for path, what in outputs:
            path = str(path)
            if path != STDOUT and os.path.isdir(path):
                raise InputError(f"{path}: {what} path is a directory")
            key = STDOUT if is_stdout(path) else _identity(path)
            if key in seen_in:
                p, w = seen_in[key]
                raise InputError(f"{path}: {what} would overwrite the {w} {p}; choose another path")
            stream = is_stream(path)
            if key in seen_out and (key == STDOUT or not stream):
                p, w = seen_out[key]
                raise InputError(f"{path}: {what} is the same file as the {w} {p}; choose another path")
            seen_out[key] = (path, what)
            if stream:
                res.streams.append(path)
                continue
            final = Path(os.path.realpath(path))  # a symlink's target is replaced, the link kept
            try:
                missing = [d for d in (final.parent, *final.parent.parents) if not d.exists()]
                final.parent.mkdir(parents=True, exist_ok=True)
                res.made_dirs += [d for d in reversed(missing) if d not in res.made_dirs]
                fd, tmp = tempfile.mkstemp(dir=final.parent, prefix=f".{final.name}.", suffix=".tmp")
            except OSError as e:
                raise InputError(f"{path}: cannot write {what} ({e.strerror or e})") from None
            os.close(fd)
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; outputs are ordinary files
            res.staged[path] = (tmp, final)
    except BaseException:
        res.discard()
        raise
    return res
