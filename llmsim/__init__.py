"""llmsim: a simulator of LLM serving on GPU clusters. The Python API is llmsim.api (also reachable
as llmsim.run, llmsim.EngineArgs, ...), imported on first use so the CLI starts fast."""
from .version import __version__  # noqa: F401

_API = {"run", "Results", "EngineArgs", "InputError", "cluster_from_dict", "load_cluster_config", "load_workload",
        "requests_from_records"}


def __getattr__(name):
    if name in _API:
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module 'llmsim' has no attribute {name!r}")
