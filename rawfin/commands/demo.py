"""`rawfin demo timewait-bind`: why a server should not be the one that closes first.

On loopback: a server that closes its connection first leaves TIME_WAIT on its
own port, and starting it again without SO_REUSEADDR fails with EADDRINUSE;
when the client closes first, or with SO_REUSEADDR, it starts. Every step shows
`ss` as evidence (or /proc/net/tcp when ss is not installed). Needs no
privilege. Exit 0 when the kernel behaved as described, 1 otherwise.
"""

from __future__ import annotations

import errno
import shutil
import socket
import subprocess
import sys
import time

HOST = "127.0.0.1"


def ss_time_wait(port: int) -> tuple[str, list[str], int]:
    """(command shown, output lines, TIME_WAIT sockets on local port ``port``)."""
    ss = shutil.which("ss")
    if ss:
        cmd = [ss, "-tan", "state", "time-wait", f"( sport = :{port} )"]
        shown = f"ss -tan state time-wait '( sport = :{port} )'"
        try:
            out = subprocess.run(cmd, capture_output=True, text=True, timeout=5).stdout
            lines = [ln for ln in out.splitlines() if ln.strip()]
            return shown, lines, max(0, len(lines) - 1)
        except (OSError, subprocess.SubprocessError):
            pass
    from rawfin.linux.kernel import proc_tcp
    rows = [(l, r, st) for l, r, st, tw in proc_tcp() if l[1] == port and st == "TIME_WAIT"]
    lines = ["State      Local Address:Port   Peer Address:Port"] + \
        [f"TIME-WAIT  {l[0]}:{l[1]}   {r[0]}:{r[1]}" for l, r, _ in rows]
    return f"/proc/net/tcp, state 06 on local port {port}", lines, len(rows)


def start_server(port: int, reuseaddr: bool) -> tuple[socket.socket | None, str]:
    s = socket.socket()
    if reuseaddr:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        s.bind((HOST, port))
        s.listen()
    except OSError as e:
        s.close()
        return None, errno.errorcode.get(e.errno, str(e.errno))
    return s, "listening"


def one_connection(server: socket.socket, closer: str) -> None:
    c = socket.create_connection(server.getsockname())
    a, _ = server.accept()
    first, second = (a, c) if closer == "server" else (c, a)
    first.sendall(b"bye")
    first.close()                        # the active close: FIN first, TIME_WAIT later
    second.settimeout(3)
    while second.recv(100):
        pass                             # EOF: the passive side has seen the FIN
    second.close()
    time.sleep(0.05)


def step(out, n: int, closer: str, reuse_old: bool, reuse_new: bool, expect: str) -> bool:
    w = out.write
    srv, how = start_server(0, reuse_old)
    assert srv is not None, how
    port = srv.getsockname()[1]
    flags = "with SO_REUSEADDR" if reuse_old else "without SO_REUSEADDR"
    w(f"\n{n}. server on {HOST}:{port} ({flags}); the {closer.upper()} closes first\n")
    one_connection(srv, closer)
    srv.close()
    w(f"   connection closed ({closer} sent the first FIN); server stopped (listening socket closed)\n")
    shown, lines, tw = ss_time_wait(port)
    w(f"   $ {shown}\n")
    for ln in lines:
        w(f"     {ln}\n")
    w(f"   -> {tw} TIME_WAIT socket(s) on the server's port {port}\n")
    again, result = start_server(port, reuse_new)
    if again is not None:
        again.close()
    flags = "with SO_REUSEADDR" if reuse_new else "without SO_REUSEADDR"
    w(f"   starting the server again on port {port} {flags}: {result}\n")
    ok = result == expect
    w(f"   {'as expected' if ok else 'UNEXPECTED, expected ' + expect}\n")
    return ok


def run(args) -> int:
    out = sys.stdout
    out.write("timewait-bind: TIME_WAIT stays with whoever closes first, so a server should not be the one "
              "that closes first.\nLinux keeps it 60 s (2*MSL); every step uses a fresh port.\n")
    results = [
        step(out, 1, "server", False, False, "EADDRINUSE"),
        step(out, 2, "client", False, False, "listening"),
        step(out, 3, "server", True, True, "listening"),
        step(out, 4, "server", False, True, "EADDRINUSE"),
    ]
    out.write("\nstep 4 is Linux's fine print: the TIME_WAIT socket keeps the old socket's SO_REUSEADDR, and a\n"
              "new bind over it succeeds only when both the old and the new socket set it.\n")
    out.write("\nsummary: a server that closes first cannot restart on its port for 60 s unless it (and the\n"
              "server before it) sets SO_REUSEADDR; let the client close first, or set SO_REUSEADDR.\n")
    out.flush()
    return 0 if all(results) else 1
