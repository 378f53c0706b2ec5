"""Where shipped data (profiles, model configs) is found."""
import os
from pathlib import Path

_SOURCE_ROOT = Path(__file__).resolve().parents[1]


def data_root() -> Path:
    """LLMSIM_HOME, else the current directory if it holds profiles/, else the source tree."""
    env = os.environ.get("LLMSIM_HOME")
    if env:
        return Path(env)
    cwd = Path.cwd()
    if (cwd / "profiles").is_dir() and (cwd / "configs" / "model").is_dir():
        return cwd
    return _SOURCE_ROOT
