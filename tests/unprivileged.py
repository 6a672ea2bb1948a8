"""Running rawfin's command line as an unprivileged user (uid 65534), wherever the checkout is.

The checkout (and its .venv) may sit where only root can read: a clone in a private
temporary directory or in root's home. So the unprivileged run does not use it: rawfin and
its runtime dependencies are copied once per test session into a directory anyone can read,
and run by an interpreter of the same Python version that the unprivileged user can start.
"""

from __future__ import annotations

import importlib.metadata
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

USER = 65534          # nobody
ROOT = Path(__file__).resolve().parents[1]
HAVE_SETPRIV = shutil.which("setpriv") is not None
needs_setpriv = pytest.mark.skipif(os.geteuid() != 0 or not HAVE_SETPRIV,
                                   reason="needs root to drop to an unprivileged user (setpriv)")


def _drop(cmd: list[str]) -> list[str]:
    return ["setpriv", f"--reuid={USER}", f"--regid={USER}", "--clear-groups", "--inh-caps=-all", *cmd]


def _interpreter() -> str | None:
    """A python of this version that uid 65534 can start (the venv's own may sit in a private place)."""
    want = f"{sys.version_info[0]}.{sys.version_info[1]}"
    seen = []
    for cand in (getattr(sys, "_base_executable", None), sys.executable,
                 shutil.which(f"python{want}", path="/usr/local/bin:/usr/bin:/bin"),
                 shutil.which("python3", path="/usr/local/bin:/usr/bin:/bin")):
        if not cand or cand in seen:
            continue
        seen.append(cand)
        r = subprocess.run(_drop([cand, "-I", "-c", "import sys; print('%d.%d' % sys.version_info[:2])"]),
                           capture_output=True, text=True, cwd="/")
        if r.returncode == 0 and r.stdout.strip() == want:
            return cand
    return None


def _runtime_requirements() -> list[str]:
    """The installed distributions rawfin needs at run time (from its metadata, extras left out)."""
    names = []
    for req in importlib.metadata.distribution("rawfin").requires or []:
        if "extra ==" in req:
            continue
        name = re.match(r"[A-Za-z0-9._-]+", req).group(0)
        try:
            importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            continue          # not needed on this Python (an environment marker), so not installed
        names.append(name)
    return names


def _copy_tree(dest: Path) -> None:
    shutil.copytree(ROOT / "rawfin", dest / "rawfin", ignore=shutil.ignore_patterns("__pycache__"))
    for name in _runtime_requirements():
        dist = importlib.metadata.distribution(name)
        for f in dist.files or []:
            if f.parts[0] == ".." or "__pycache__" in f.parts:
                continue
            src = Path(dist.locate_file(f))
            if src.is_file():
                (dest / f).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(src, dest / f)
    for d, dirs, files in os.walk(dest):
        os.chmod(d, 0o755)
        for x in files:
            os.chmod(os.path.join(d, x), 0o644)


@pytest.fixture(scope="session")
def as_nobody():
    """``run(*args)``: ``rawfin ARGS`` as uid 65534 from a readable copy; a CompletedProcess."""
    python = _interpreter()
    if python is None:
        pytest.skip(f"no python{sys.version_info[0]}.{sys.version_info[1]} that uid {USER} can start")
    dest = Path(tempfile.mkdtemp(prefix="rawfin-nobody-"))
    try:
        _copy_tree(dest)
        os.chmod(dest, 0o755)

        def run(*args: str, timeout: float = 30) -> subprocess.CompletedProcess:
            boot = f"import runpy, sys; sys.path.insert(0, {str(dest)!r}); runpy.run_module('rawfin', " \
                   "run_name='__main__', alter_sys=True)"
            return subprocess.run(_drop([python, "-I", "-c", boot, *args]), capture_output=True, text=True,
                                  timeout=timeout, cwd="/")
        yield run
    finally:
        shutil.rmtree(dest, ignore_errors=True)
