"""Typed field access for JSON configs; every failure names file and field path."""
import json
from typing import Any

from ..errors import InputError

_MISSING = object()


def _no_constant(name):
    raise ValueError(f"{name} is not a number here")


def parse_json(path: str, data: bytes):
    """JSON from a file's bytes; every failure is one InputError line naming the file."""
    try:
        return json.loads(data.decode("utf-8"), parse_constant=_no_constant)
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
