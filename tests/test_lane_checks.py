"""The lane built with its self-checks on, over real captures: the same output as the normal build, and no check
fired (a check that fires aborts the process).

* ``LANE_CHECK_AHEAD`` (loop.c): the key made ahead for a frame (decode.c look_ahead) is made again from the frame as
  on_frame read it, and must be the same bytes and hash;
* ``LANE_CHECK_SIT`` (interp.c): the situation the interpreter keeps up to date by parts after each row is computed
  again whole, and must be the same.

The checked build goes into a copy of the package in a temporary directory; the normal build is the one installed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from rawfin.wire import native
from shared_corpus import FILES as CORPUS

REPO = Path(__file__).resolve().parents[1]
SHIPPED = sorted((REPO / "captures").glob("*.pcap*"))
CC = shutil.which(os.environ.get("CC", "cc")) or shutil.which("gcc")
INCLUDE = sysconfig.get_paths()["include"]


@pytest.fixture(scope="module")
def checked(tmp_path_factory) -> Path:
    """A copy of rawfin whose lane is built with both checks; the directory to put on PYTHONPATH."""
    if not CC:
        pytest.skip("no C compiler (cc, gcc): the checked lane cannot be built")
    if not os.path.exists(os.path.join(INCLUDE, "Python.h")):
        pytest.skip(f"no Python.h in {INCLUDE}: the checked lane cannot be built")
    from rawfin.capture import engine
    if not engine.available():
        pytest.skip("the lane is not built here: nothing to compare the checked build with")
    root = tmp_path_factory.mktemp("checked")
    pkg = root / "rawfin"
    installed = Path(native.__file__).resolve().parents[1]          # (the rawfin whose LANE lists the sources)
    shutil.copytree(installed, pkg, ignore=shutil.ignore_patterns("__pycache__", "_engine*.so"))
    sources = [str(pkg / Path(p).relative_to(installed)) for p in native.LANE]     # (setup.py's order)
    out = pkg / "capture" / ("_engine" + sysconfig.get_config_var("EXT_SUFFIX"))
    cmd = [CC, "-shared", "-fPIC", "-O2", "-std=gnu99", "-fwrapv", "-DLANE_CHECK_AHEAD", "-DLANE_CHECK_SIT",
           f'-DRAWFIN_SOURCES="{native.digest(sources)}"', f"-I{INCLUDE}", sources[0], "-o", str(out)]
    r = subprocess.run(cmd, capture_output=True, text=True)
    assert r.returncode == 0, f"building the checked lane failed: {' '.join(cmd)}\n{r.stderr[-2000:]}"
    return root


def analyze(path: Path, pythonpath: str | None) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    return subprocess.run([sys.executable, "-m", "rawfin", "analyze", str(path), "--format", "jsonl", "--engine", "c"],
                          capture_output=True, env=env, cwd=pythonpath or REPO, timeout=300)


@pytest.mark.parametrize("path", SHIPPED + CORPUS, ids=lambda p: p.name)
def test_the_checked_lane_agrees_and_no_check_fires(checked, path):
    plain = analyze(path, None)
    if plain.returncode == 2 and b"--engine c" in plain.stderr:
        pytest.skip(f"the lane does not take {path.name}: {plain.stderr.decode(errors='replace').strip()[:200]}")
    got = analyze(path, str(checked))
    assert got.returncode == plain.returncode, \
        f"{path.name}: exit {got.returncode} (checked) vs {plain.returncode}: {got.stderr.decode(errors='replace')[-800:]}"
    assert got.stdout == plain.stdout, f"{path.name}: the checked lane's output differs"
    assert got.stderr == plain.stderr
