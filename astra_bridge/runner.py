"""Running a prepared simulation on an external ASTRA-Sim build (either flavour)."""
import shutil
import tempfile
from pathlib import Path

from llmsim.engine import Engine
from llmsim.errors import InputError

from .binary import find_binary
from .fork_engine import ForkEngine
from .inputs import topology_dims
from .traces import write_graph
from .upstream import UpstreamBackend


def astra_engine(sim, *, flavor: str, binary: str | None, workdir: str | None, timeout_s: float, **engine_kw):
    """An engine whose iteration timing comes from ASTRA-Sim; returns (engine, cleanup)."""
    found = find_binary(binary, flavor)
    tmp = None if workdir else tempfile.mkdtemp(prefix="llmsim-astra-")
    wd = Path(workdir or tmp)
    try:
        wd.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise InputError(f"{wd}: cannot use as the ASTRA-Sim run folder ({e.strerror})") from None
    if flavor == "llmservingsim":
        engine = ForkEngine(sim.instances, sim.cluster, sim.requests, binary=found.path, workdir=wd,
                            timeout_s=timeout_s, **engine_kw)
    else:
        engine = Engine(sim.instances, UpstreamBackend(sim.cluster, found.path, wd, timeout_s), sim.requests,
                        **engine_kw)
    cleanup = (lambda: shutil.rmtree(tmp, ignore_errors=True)) if tmp else (lambda: None)
    return engine, cleanup


def trace_dumper(cluster, folder: str, flavor: str):
    """on_graph callback: every iteration's per-NPU .et files under folder/instance<i>_batch<b>/."""
    multi = len(topology_dims(cluster)) > 1
    root = Path(folder)
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise InputError(f"{root}: cannot write traces there ({e.strerror})") from None

    def dump(graph):
        write_graph(graph, root / f"instance{graph.instance}_batch{graph.batch_id}" / "llm", flavor, multi)
    return dump
