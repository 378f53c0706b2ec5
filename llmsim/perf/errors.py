"""The error of the profile package, in a module of its own so that its submodules can raise it
without importing the package __init__ (which imports them)."""
from llmsim.errors import InputError

__all__ = ["ProfileError"]


class ProfileError(InputError):
    """A profile bundle or architecture file is missing or malformed (one-line message)."""
