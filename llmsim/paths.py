"""Where data (profiles, model / hardware / cluster configs, workloads) is found.

Each file is looked up in these roots, first match wins:
  1. $LLMSIM_HOME: a user's own bundles and configs (only what they add; the rest falls through),
  2. the current directory, when it holds profiles/ or configs/ (a checkout, or a project folder),
  3. the data installed with the package (llmsim/_data, shipped in the wheel),
  4. the source tree (a checkout used without installing).
"""
import os
from pathlib import Path

_PACKAGE_DATA = Path(__file__).resolve().parent / "_data"
_SOURCE_ROOT = Path(__file__).resolve().parents[1]


def data_roots() -> list[Path]:
    roots = []
    env = os.environ.get("LLMSIM_HOME")
    if env:
        roots.append(Path(env))
    cwd = Path.cwd()
    if (cwd / "profiles").is_dir() or (cwd / "configs").is_dir():
        roots.append(cwd)
    for p in (_PACKAGE_DATA, _SOURCE_ROOT):
        if (p / "profiles").is_dir() and p not in roots:
            roots.append(p)
    return roots


def locate_dir(folder: str, item: str = "") -> Path:
    """The `folder` (e.g. "configs/model") of the first root that holds folder/item; else the
    first root's folder that exists (for error messages listing what is there)."""
    roots = data_roots()
    for r in roots:
        if (r / folder / item).exists():
            return r / folder
    for r in roots:
        if (r / folder).is_dir():
            return r / folder
    return (roots[0] if roots else _SOURCE_ROOT) / folder


def searched(folder: str) -> str:
    """Where a lookup in `folder` looked, for one-line errors."""
    where = [str(r / folder) for r in data_roots()] or [str(_SOURCE_ROOT / folder)]
    return ", ".join(where) + " (add your own under $LLMSIM_HOME/" + folder + ")"


def resolve_input(path: str) -> str:
    """A relative input path (cluster config, workload) that does not exist here but is one of the
    shipped files (configs/cluster/..., workloads/...) resolves to the shipped copy."""
    p = Path(path)
    if p.is_absolute() or p.exists():
        return path
    for r in data_roots():
        if (r / p).exists():  # a file, or a shipped folder (a recorded vLLM run)
            return str(r / p)
    return path


def data_root() -> Path:
    """The first root holding profiles/ and configs/ (kept for callers that need one folder)."""
    for r in data_roots():
        if (r / "profiles").is_dir() and (r / "configs").is_dir():
            return r
    return _SOURCE_ROOT
