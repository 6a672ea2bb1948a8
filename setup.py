"""The compiled parts of rawfin; everything else is in pyproject.toml.

* rawfin/capture/_engine.c: the compiled lane of `rawfin analyze` (and check, annotate);
* rawfin/render/_writer.c: the table, --summary and csv writers at the lane's speed.

Both are optional: where they cannot be built, rawfin runs its pure-Python reference
implementation, which gives the same output (tests/test_engine.py and tests/test_writers.py
compare them).
"""
import glob

from setuptools import Extension, setup

FLAGS = ["-O2", "-std=gnu99", "-Wall", "-Wno-unused-function"]

setup(ext_modules=[Extension("rawfin.capture._engine", ["rawfin/capture/_engine.c"], optional=True,
                             depends=sorted(glob.glob("rawfin/capture/lane/*.c")), extra_compile_args=FLAGS),
                   Extension("rawfin.render._writer", ["rawfin/render/_writer.c"], optional=True,
                             extra_compile_args=FLAGS)])
