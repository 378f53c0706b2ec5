"""Pluggable parts found by name through entry points, so llmsim never imports them.

Groups (declared in setup.cfg by the bridge, or by any third-party package):
- `llmsim.backends`: name -> factory(sim, options: dict) -> Backend (backends/base.py)
- `llmsim.commands`: name -> a click command, added to `llmsim` as a subcommand
- `llmsim.trace_writers`: name -> factory(cluster, folder, flavor) -> on_graph callback
The embedded backend is built in, so a source checkout runs without any installed metadata.
"""
from .errors import InputError

BACKENDS, COMMANDS, TRACE_WRITERS = "llmsim.backends", "llmsim.commands", "llmsim.trace_writers"


def embedded_backend(sim, options):
    from .backends.embedded import EmbeddedBackend

    return EmbeddedBackend(sim.cluster)


_BUILT_IN = {BACKENDS: {"embedded": embedded_backend}}


def _entry_points(group: str):
    from importlib.metadata import entry_points  # on use: it costs ~20 ms of start-up

    return entry_points(group=group)


def names(group: str) -> list[str]:
    return sorted(set(_BUILT_IN.get(group, {})) | {ep.name for ep in _entry_points(group)})


def load(group: str, name: str):
    """The object an entry point names; a one-line error when nothing provides it."""
    built_in = _BUILT_IN.get(group, {}).get(name)
    if built_in is not None:
        return built_in
    for ep in _entry_points(group):
        if ep.name == name:
            return ep.load()
    have = ", ".join(names(group)) or "none"
    raise InputError(f"no {group.split('.')[-1][:-1].replace('_', ' ')} named '{name}' is installed "
                     f"(entry-point group {group}; available: {have}); install the package that provides it")
