"""`rawfin demo timewait-bind` on loopback: needs no privilege."""

from __future__ import annotations

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_timewait_bind_demo():
    r = subprocess.run([sys.executable, "-m", "rawfin", "demo", "timewait-bind"], capture_output=True, text=True,
                       timeout=30, cwd="/", env=dict(os.environ, PYTHONPATH=ROOT))
    assert r.returncode == 0, r.stdout + r.stderr
    out = r.stdout
    steps = out.split("\n\n")
    server_first = next(s for s in steps if s.startswith("1."))
    client_first = next(s for s in steps if s.startswith("2."))
    reuse = next(s for s in steps if s.startswith("3."))
    assert "1 TIME_WAIT socket(s) on the server's port" in server_first and "EADDRINUSE" in server_first
    assert "0 TIME_WAIT socket(s)" in client_first and ": listening" in client_first
    assert "with SO_REUSEADDR: listening" in reuse
    assert "UNEXPECTED" not in out


def test_proc_fallback_finds_time_wait(monkeypatch):
    import shutil
    import socket
    import time

    from rawfin.commands import demo

    monkeypatch.setattr(shutil, "which", lambda name: None)
    srv, _ = demo.start_server(0, False)
    port = srv.getsockname()[1]
    demo.one_connection(srv, "server")
    srv.close()
    time.sleep(0.05)
    shown, lines, n = demo.ss_time_wait(port)
    assert "/proc/net/tcp" in shown and n == 1
    del socket
