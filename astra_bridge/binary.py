"""Finding the user's ASTRA-Sim build and telling which flavour it is.

Order: the --astra-sim-bin flag, then $LLMSIM_ASTRA_SIM, then third_party/ (the build folders of an
astra-sim checkout placed there). Every problem is a one-line InputError before the run starts.
"""
import os
from dataclasses import dataclass
from pathlib import Path

from llmsim.errors import InputError
from llmsim.paths import data_root

FLAVOR_OF_NAME = {
    "AnalyticalAstra": "llmservingsim",
    "AstraSim_Analytical_Congestion_Unaware": "upstream",
    "AstraSim_Analytical_Congestion_Aware": "upstream",
}
ENV = "LLMSIM_ASTRA_SIM"


@dataclass(frozen=True)
class AstraBinary:
    path: Path
    flavor: str | None  # from the binary's name; None when the name says nothing
    found_by: str


def candidates_in(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    found = []
    for name in FLAVOR_OF_NAME:
        found += sorted(p for p in folder.rglob(name) if p.is_file())
    return found


def discover(flag: str | None = None) -> list[AstraBinary]:
    """Every binary the search order finds, first one first."""
    out = []
    if flag:
        out.append(AstraBinary(Path(flag), FLAVOR_OF_NAME.get(Path(flag).name), "--astra-sim-bin"))
    if os.environ.get(ENV):
        p = Path(os.environ[ENV])
        out.append(AstraBinary(p, FLAVOR_OF_NAME.get(p.name), f"${ENV}"))
    for p in candidates_in(data_root() / "third_party"):
        out.append(AstraBinary(p, FLAVOR_OF_NAME[p.name], "third_party/"))
    return out


def find_binary(flag: str | None, flavor: str) -> AstraBinary:
    found = discover(flag)
    if not found:
        raise InputError(f"no ASTRA-Sim binary: pass --astra-sim-bin PATH, set ${ENV}, or build one under "
                         f"third_party/ (see third_party/README.md)")
    b = found[0]
    if not b.path.is_file():
        raise InputError(f"{b.path} (from {b.found_by}): ASTRA-Sim binary not found")
    if not os.access(b.path, os.X_OK):
        raise InputError(f"{b.path} (from {b.found_by}): not executable")
    if b.flavor and b.flavor != flavor:
        raise InputError(f"{b.path} (from {b.found_by}): this is the {b.flavor} flavour's binary but "
                         f"--astra-sim-flavor is {flavor}")
    return b
