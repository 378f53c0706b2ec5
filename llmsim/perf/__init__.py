"""Time of each op: measured profile bundles (profiles/) looked up and interpolated."""
from llmsim.errors import InputError


class ProfileError(InputError):
    """A profile bundle or architecture file is missing or malformed (one-line message)."""


# Imported after ProfileError: the submodules import it from this package.
from llmsim.perf.architecture import Architecture, load_architecture  # noqa: E402
from llmsim.perf.profile import ProfileBundle  # noqa: E402

__all__ = ["Architecture", "ProfileBundle", "ProfileError", "load_architecture"]
