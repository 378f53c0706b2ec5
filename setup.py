"""Metadata lives in setup.cfg; this file only adds the shipped data to the built package."""
import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

DATA = ("profiles", "configs", "workloads")  # what the examples need: ~13 MB


class build_py_with_data(build_py):
    """Copy profiles/, configs/ and workloads/ into llmsim/_data/ of the build, so an installed
    llmsim (a wheel, a container) runs from any directory (llmsim/paths.py finds them there)."""

    def run(self):
        super().run()
        root = Path(__file__).resolve().parent
        target = Path(self.build_lib) / "llmsim" / "_data"
        for name in DATA:
            if (root / name).is_dir():
                shutil.copytree(root / name, target / name, dirs_exist_ok=True,
                                ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))


setup(cmdclass={"build_py": build_py_with_data})
