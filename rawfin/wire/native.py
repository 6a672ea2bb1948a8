"""Whether a compiled module (the lane, the writers) was built from the C sources beside it.

setup.py builds each with the sha256 of its sources (the module's ``SOURCES``). In a checkout
updated without a rebuild (``git pull`` after ``pip install -e .``), the old module no longer fits
the Python that drives it; rawfin then runs the pure-Python reference, which gives the same output,
and says why (``--engine c`` names it). An installed wheel carries no C sources: its build is trusted.
"""

from __future__ import annotations

import glob
import hashlib
import os

_PKG = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))     # rawfin/

#: the sources of each module, in setup.py's order (its LANE and WRITER)
LANE = [os.path.join(_PKG, "capture", "_engine.c")] + sorted(glob.glob(os.path.join(_PKG, "capture", "lane", "*.c")))
WRITER = [os.path.join(_PKG, "render", "_writer.c")]


def digest(paths: list[str]) -> str:
    h = hashlib.sha256()
    for p in paths:
        with open(p, "rb") as f:
            h.update(f.read())
    return h.hexdigest()


def stale(module, paths: list[str]) -> str:
    """Why ``module`` does not fit these sources ("" when it does, or when the sources are not here)."""
    if not os.path.exists(paths[0]):
        return ""
    if getattr(module, "SOURCES", None) == digest(paths):
        return ""
    return (f"{module.__name__} was built from other sources than {os.path.relpath(paths[0])} (updated without a "
            f"rebuild): run `make venv` or `pip install -e .` again")
