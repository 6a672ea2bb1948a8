"""Fixtures shared by the test modules."""

import os
import sys

# the benchmark and its capture generator live outside the package (tools/), not shipped
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tools"))

from kernelcaps import no_leftovers  # noqa: E402,F401  (a fixture: pytest finds it here)
from unprivileged import as_nobody  # noqa: E402,F401  (a fixture too)
