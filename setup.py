"""The compiled lane of `rawfin analyze` (rawfin/capture/_engine.c); everything else is in pyproject.toml.

The extension is optional: where it cannot be built, rawfin runs its pure-Python reference
implementation, which gives the same output (tests/test_engine.py compares the two).
"""
import glob

from setuptools import Extension, setup

setup(ext_modules=[Extension("rawfin.capture._engine", ["rawfin/capture/_engine.c"], optional=True,
                             depends=sorted(glob.glob("rawfin/capture/lane/*.c")),
                             extra_compile_args=["-O2", "-std=gnu99", "-Wall", "-Wno-unused-function"])])
