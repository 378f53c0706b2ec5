"""Typed field access for JSON configs; every failure names file and field path."""
import json
import math
import os
import stat
from typing import Any

from ..errors import InputError

_MISSING = object()


def _no_constant(name):
    raise ValueError(f"{name} is not a number here")


MAX_INPUT_BYTES = 64 << 20  # a config file, or one line of a dataset


def check_regular_file(path: str, what: str) -> None:
    """Refuse what is not a regular file (a FIFO blocks, a device never ends) before opening it."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise InputError(f"{path}: {what} file not found") from None
    except OSError as e:
        raise InputError(f"{path}: cannot read {what} ({e.strerror})") from None
    if not stat.S_ISREG(st.st_mode):
        kind = "a directory" if stat.S_ISDIR(st.st_mode) else "a FIFO" if stat.S_ISFIFO(st.st_mode) else \
            "a device" if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode) else "not a regular file"
        raise InputError(f"{path}: {what} must be a regular file, got {kind}")


def read_config_bytes(path: str, what: str) -> bytes:
    """A config file's bytes: a regular file of at most MAX_INPUT_BYTES; one-line errors."""
    check_regular_file(path, what)
    try:
        with open(path, "rb") as fh:
            data = fh.read(MAX_INPUT_BYTES + 1)
    except OSError as e:
        raise InputError(f"{path}: cannot read {what} ({e.strerror})") from None
    if len(data) > MAX_INPUT_BYTES:
        raise InputError(f"{path}: {what} is larger than {MAX_INPUT_BYTES >> 20} MB")
    return data


def parse_json(path: str, data: bytes):
    """JSON from a file's bytes; every failure is one InputError line naming the file."""
    try:
        return json.loads(data.decode("utf-8-sig"), parse_constant=_no_constant)
    except RecursionError:
        raise InputError(f"{path}: invalid JSON (nested too deeply)") from None
    except UnicodeDecodeError as e:
        raise InputError(f"{path}: not UTF-8 text (byte {e.start})") from None
    except json.JSONDecodeError as e:
        raise InputError(f"{path}: line {e.lineno}: invalid JSON ({e.msg})") from None
    except ValueError as e:
        raise InputError(f"{path}: invalid JSON ({e})") from None


class Fields:
    def __init__(self, file: str, obj: Any, path: str):
        self.file, self.obj, self.path = file, obj, path
        if not isinstance(obj, dict):
            self.fail(f"expected an object, got {type(obj).__name__}")

    def where(self, key: str | None = None) -> str:
        if key is None:
            return f"{self.file}: {self.path or '(top level)'}"
        return f"{self.file}: {self.path + '.' if self.path else ''}{key}"

    def fail(self, msg: str, key: str | None = None):
        raise InputError(f"{self.where(key)}: {msg}")

    def get(self, key: str, kinds, default=_MISSING, *, minimum=None, exclusive_min=False, maximum=None):
        if key not in self.obj:
            if default is _MISSING:
                self.fail("required field is missing", key)
            return default
        val = self.obj[key]
        kinds = kinds if isinstance(kinds, tuple) else (kinds,)
        ok = any(isinstance(val, k) and not (k in (int, float) and isinstance(val, bool)) for k in kinds)
        if not ok:
            names = " or ".join("number" if k is float else k.__name__ for k in kinds)
            self.fail(f"expected {names}, got {val!r}", key)
        if isinstance(val, float) and not math.isfinite(val):
            self.fail(f"expected a finite number, got {val!r}", key)
        if minimum is not None:
            if val < minimum or (exclusive_min and val == minimum):
                rel = ">" if exclusive_min else ">="
                self.fail(f"expected a value {rel} {minimum}, got {val!r}", key)
        if maximum is not None and val > maximum:
            self.fail(f"expected a value <= {maximum}, got {val!r}", key)
        return val

    def child(self, key: str) -> "Fields":
        return Fields(self.file, self.get(key, dict), f"{self.path + '.' if self.path else ''}{key}")

    def unknown(self, known: set[str]) -> list[str]:
        return [f"{self.where(k)}: unknown key ignored" for k in self.obj if k not in known]
