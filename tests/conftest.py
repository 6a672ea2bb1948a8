"""Fixtures shared by the test modules."""

from kernelcaps import no_leftovers  # noqa: F401  (a fixture: pytest finds it here)
