"""The compiled parts of rawfin; everything else is in pyproject.toml.

* rawfin/capture/_engine.c: the compiled lane of `rawfin analyze` (and check, annotate);
* rawfin/render/_writer.c: the table, --summary and csv writers at the lane's speed.

Both are optional: where they cannot be built, rawfin runs its pure-Python reference
implementation, which gives the same output (tests/test_engine.py and tests/test_writers.py
compare them).

Each is built with the sha256 of its C sources (RAWFIN_SOURCES, the module's SOURCES): a checkout
updated without a rebuild then runs the Python reference instead of a lane that no longer fits it
(rawfin/wire/native.py).
"""
import glob
import hashlib

from setuptools import Extension, setup

FLAGS = ["-O2", "-std=gnu99", "-Wall", "-Wno-unused-function"]
LANE = ["rawfin/capture/_engine.c"] + sorted(glob.glob("rawfin/capture/lane/*.c"))   # as rawfin.wire.native.LANE
WRITER = ["rawfin/render/_writer.c"]                                                  # ... and WRITER


def stamped(paths: list[str]) -> list[tuple[str, str]]:
    """the macro naming what a module is built from (rawfin.wire.native.digest: the same bytes, in this order)"""
    h = hashlib.sha256()
    for p in paths:
        with open(p, "rb") as f:
            h.update(f.read())
    return [("RAWFIN_SOURCES", f'"{h.hexdigest()}"')]


setup(ext_modules=[Extension("rawfin.capture._engine", LANE[:1], optional=True, depends=LANE[1:],
                             define_macros=stamped(LANE), extra_compile_args=FLAGS),
                   Extension("rawfin.render._writer", WRITER, optional=True,
                             define_macros=stamped(WRITER), extra_compile_args=FLAGS)])
