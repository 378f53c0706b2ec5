"""The bridge's entry points (setup.cfg): the `astra-sim` backend and the `chakra` trace writer."""
import math
from pathlib import Path

from llmsim.errors import InputError

from .binary import find_binary
from .fork_driver import ForkBackend
from .run_folder import RunFolder
from .inputs import astra_layout, topology_dims
from .traces import graph_folder, write_graph
from .upstream import UpstreamBackend


def make_backend(sim, options: dict):
    """llmsim.backends `astra-sim`: the fork (persistent process, owns the clock) or upstream
    (one run per distinct graph), found from --astra-sim-bin, $LLMSIM_ASTRA_SIM or third_party/."""
    flavor = options.get("astra_sim_flavor") or "llmservingsim"
    found = find_binary(options.get("astra_sim_bin"), flavor)
    workdir = options.get("astra_sim_workdir")
    raw = options.get("astra_sim_timeout")
    timeout_s = 120.0 if raw is None else float(raw)
    if not math.isfinite(timeout_s) or timeout_s <= 0:
        raise InputError(f"--astra-sim-timeout: must be a positive number of seconds, not {raw!r}")
    folder = RunFolder.claim(workdir)
    cls = ForkBackend if flavor == "llmservingsim" else UpstreamBackend
    try:
        return cls(sim.cluster, found.path, folder.path, timeout_s, run_folder=folder,
                   keep_traces=bool(options.get("keep_traces")))
    except BaseException:
        folder.release()
        raise


def trace_dumper(cluster, folder: str, flavor: str):
    """llmsim.trace_writers `chakra`: an on_graph callback writing every iteration's per-NPU .et
    files under folder/instance<i>_batch<b>/ (a data-parallel group's steps: folder/dp_step<k>/)."""
    multi = len(topology_dims(cluster)) > 1
    layout = astra_layout(cluster, flavor) if cluster.network is not None else None
    root = Path(folder)
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise InputError(f"{root}: cannot write traces there ({e.strerror})") from None

    def dump(graph):
        write_graph(graph, root / graph_folder(graph) / "llm", flavor, multi, layout=layout)
    return dump
