"""A compiled module built from other C sources than those beside it is not used (rawfin.wire.native)."""

from __future__ import annotations

import os
import subprocess
import sys
import types

import pytest

from rawfin.capture import engine
from rawfin.render import sinks
from rawfin.wire import native


def test_the_built_modules_carry_the_digest_of_their_sources():
    """setup.py and native.py hash the same files in the same order: a fresh build is current."""
    try:
        from rawfin.capture import _engine
        from rawfin.render import _writer
    except ImportError:
        pytest.skip("the compiled modules are not built here (no C compiler)")
    assert _engine.SOURCES == native.digest(native.LANE) and len(native.LANE) > 10
    assert _writer.SOURCES == native.digest(native.WRITER)
    assert engine.available() and engine.STALE == "" and sinks._writer is _writer


def test_a_module_from_other_sources_is_stale(tmp_path):
    src = tmp_path / "a.c"
    src.write_text("int x;\n")
    old = types.ModuleType("rawfin._engine")                      # built before the digest existed
    assert "built from other sources" in native.stale(old, [str(src)])
    old.SOURCES = native.digest([str(src)])
    assert native.stale(old, [str(src)]) == ""
    src.write_text("int x, y;\n")                                 # the source changed, the module did not
    assert "make venv" in native.stale(old, [str(src)])
    assert native.stale(old, [str(tmp_path / "absent.c")]) == ""  # a wheel without sources: trusted


def test_a_stale_lane_falls_back_to_the_reference_and_says_so():
    """The lane is replaced by a module without the digest: analyze runs the Python engine, says why once on
    stderr, and --engine c is a usage error naming the reason."""
    code = ("import sys, types; from rawfin.capture import _engine as real\n"
            "m = types.ModuleType('rawfin._engine'); m.__dict__.update({k: v for k, v in vars(real).items() "
            "if k != 'SOURCES'})\n"
            "import rawfin.capture; sys.modules['rawfin.capture._engine'] = rawfin.capture._engine = m\n"
            "from rawfin.cli import main; sys.exit(main(sys.argv[1:]))\n")
    if not engine.available():
        pytest.skip("the compiled lane is not built here (no C compiler)")
    cap = os.path.join(os.path.dirname(__file__), os.pardir, "captures", "normal-close.pcap")
    run = subprocess.run([sys.executable, "-c", code, "analyze", cap, "--format", "jsonl"], capture_output=True,
                         text=True)
    ref = subprocess.run([sys.executable, "-m", "rawfin", "analyze", cap, "--format", "jsonl", "--engine", "python"],
                         capture_output=True, text=True)
    assert run.returncode == 0 and run.stdout == ref.stdout
    assert run.stderr.count("built from other sources") == 1 and "Python engine runs instead" in run.stderr
    run = subprocess.run([sys.executable, "-c", code, "analyze", cap, "--engine", "c"], capture_output=True, text=True)
    assert run.returncode == 2 and "--engine c: " in run.stderr and "make venv" in run.stderr
