"""Fixtures shared by the test modules."""

import os
import sys

# the benchmark and its capture generator live outside the package (tools/), not shipped
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tools"))

from kernelcaps import no_leftovers  # noqa: E402,F401  (a fixture: pytest finds it here)
from unprivileged import as_nobody  # noqa: E402,F401  (a fixture too)


import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _no_inherited_terminal_width():
    """Tables are laid out for COLUMNS when it is set; something in a pytest run puts COLUMNS=80
    into the process environment behind os.environ's back, which the commands the tests start
    would inherit. The tests see the documented default (100 columns when not a terminal), and
    set COLUMNS themselves where they test it."""
    os.environ.pop("COLUMNS", None)
    os.unsetenv("COLUMNS")
    yield
