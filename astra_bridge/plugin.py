"""The bridge's entry points (setup.cfg): the `astra-sim` backend and the `chakra` trace writer."""
import fcntl
import math
import os
import secrets
import shutil
import tempfile
from pathlib import Path

from llmsim.errors import InputError

from .binary import find_binary
from .fork_driver import ForkBackend
from .run_folder import PARENT
from .inputs import topology_dims
from .traces import write_graph
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
    wd = Path(workdir) if workdir else _temp_run_folder()
    try:
        wd.mkdir(parents=True, exist_ok=True)
        lock = open(wd / ".llmsim.lock", "w")
    except OSError as e:
        raise InputError(f"{wd}: cannot use as the ASTRA-Sim run folder ({e.strerror})") from None
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        lock.close()
        raise InputError(f"{wd}: the ASTRA-Sim run folder is in use by another llmsim run; "
                         f"give each run its own --astra-sim-workdir") from None
    cls = ForkBackend if flavor == "llmservingsim" else UpstreamBackend
    try:
        backend = cls(sim.cluster, found.path, wd, timeout_s, remove_workdir=not workdir)
    except BaseException:
        lock.close()
        if not workdir:
            shutil.rmtree(wd, ignore_errors=True)
        raise
    backend._workdir_lock = lock  # held (flock) for the run's lifetime; released when the file closes
    return backend


def _temp_run_folder() -> Path:
    """A fresh folder under tempfile.gettempdir()/llmsim-astra/<pid>-<random>; folders left by runs
    whose process is gone (e.g. SIGKILLed) are removed first."""
    parent = Path(tempfile.gettempdir()) / PARENT
    parent.mkdir(parents=True, exist_ok=True)
    for old in parent.iterdir():
        pid = old.name.split("-", 1)[0]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(old, ignore_errors=True)
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


def trace_dumper(cluster, folder: str, flavor: str):
    """llmsim.trace_writers `chakra`: an on_graph callback writing every iteration's per-NPU .et
    files under folder/instance<i>_batch<b>/."""
    multi = len(topology_dims(cluster)) > 1
    root = Path(folder)
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise InputError(f"{root}: cannot write traces there ({e.strerror})") from None

    def dump(graph):
        write_graph(graph, root / f"instance{graph.instance}_batch{graph.batch_id}" / "llm", flavor, multi)
    return dump
