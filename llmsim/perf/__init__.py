"""Time of each op: measured profile bundles (profiles/) looked up and interpolated."""
from llmsim.perf.architecture import Architecture, load_architecture
from llmsim.perf.errors import ProfileError
from llmsim.perf.profile import ProfileBundle

__all__ = ["Architecture", "ProfileBundle", "ProfileError", "load_architecture"]
