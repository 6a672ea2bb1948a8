#!/usr/bin/env python3
"""Record a real pile-up: the Linux kernel on loopback, in a network namespace of its own.

Three servers on 127.0.0.1, each sent one connection after another (needs root):

* :8080 closes first (it answers, then close()s): TIME_WAIT piles up on the server's port;
* :8081 never closes what the client closed (the application leaks): CLOSE_WAIT piles up;
* :8082 is the healthy case: the client closes first, the server then.

The frames on the namespace's loopback are captured (an AF_PACKET socket, kernel time stamps)
and written as a pcap; at the end the kernel's own socket states are read from the namespace's
/proc/net/tcp, to be compared with what ``rawfin analyze --by server`` infers from the capture.

    sudo .venv/bin/python tools/pileup_capture.py captures/pileup-kernel.pcap --seconds 6

Nothing leaves the namespace, which goes away with the process.
"""

from __future__ import annotations

import argparse
import json
import os
import select
import socket
import sys
import time
from collections import Counter

TIME_WAIT_PORT, CLOSE_WAIT_PORT, HEALTHY_PORT = 8080, 8081, 8082
HOST = "127.0.0.1"
_TCP_STATES = {"06": "TIME_WAIT", "08": "CLOSE_WAIT", "05": "FIN_WAIT2", "01": "ESTABLISHED", "0A": "LISTEN",
               "07": "CLOSE", "09": "LAST_ACK", "04": "FIN_WAIT1", "0B": "CLOSING"}


def kernel_states(proc_net_tcp: str) -> Counter:
    """(local port, state name) -> sockets, from /proc/net/tcp text."""
    out: Counter = Counter()
    for line in proc_net_tcp.splitlines()[1:]:
        f = line.split()
        if len(f) < 4:
            continue
        port = int(f[1].split(":")[1], 16)
        out[(port, _TCP_STATES.get(f[3], f[3]))] += 1
    return out


def record(path: str, *, seconds: float = 3.0, per_server: int = 12, leak_after: int = 0) -> dict:
    """Run the three servers for about ``seconds`` with ``per_server`` connections each, write the
    capture to ``path``; returns {"frames": n, "kernel": {"PORT STATE": count}} (the kernel's states
    at the end, listening sockets left out)."""
    from rawfin.linux.live import LINKTYPE_RAW, compile_filter
    from rawfin.linux.ring import PacketRing
    from rawfin.linux.netns import NetNamespace
    from rawfin.wire.pcapio import PcapWriter

    frames = 0
    with NetNamespace() as ns:
        with ns.inside():
            sniffer = PacketRing("lo", program=compile_filter("tcp"))
            listeners = {}
            for port in (TIME_WAIT_PORT, CLOSE_WAIT_PORT, HEALTHY_PORT):
                ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                ls.bind((HOST, port))
                ls.listen(128)
                ls.setblocking(False)
                listeners[ls] = port
            clients = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(3 * per_server)]
        try:
            writer = PcapWriter(path, linktype=LINKTYPE_RAW, nanosecond=True)
            kept: list[socket.socket] = []        # the leaking application's sockets: never closed
            pending: dict[socket.socket, tuple[int, socket.socket | None]] = {}
            step = seconds / max(per_server, 1)
            start = time.monotonic()
            plan = []
            for i in range(per_server):
                for k, port in enumerate((TIME_WAIT_PORT, CLOSE_WAIT_PORT, HEALTHY_PORT)):
                    plan.append((start + i * step + k * step / 3, port, clients[3 * i + k]))
            todo = list(plan)

            def drain() -> None:
                nonlocal frames
                for off, _n, _losing in sniffer.blocks():
                    for data, orig_len, ts, *_sll in sniffer.frames(off):
                        writer.write(data, ts, orig_len)
                        frames += 1

            give_up = start + seconds + 5.0
            while time.monotonic() < give_up:
                now = time.monotonic()
                while todo and todo[0][0] <= now:
                    _, port, c = todo.pop(0)
                    c.connect((HOST, port))
                    c.sendall(b"GET / HTTP/1.0\r\n\r\n")
                    if port == CLOSE_WAIT_PORT:
                        c.close()                  # the client is done; the server's application never is
                    else:
                        pending[c] = (port, None)
                rd = [*listeners, sniffer, *[s for s in pending if s.fileno() >= 0]]
                wait = max(0.0, min(0.05, (todo[0][0] - now) if todo else 0.05))
                ready, _, _ = select.select(rd, [], [], wait)
                for s in ready:
                    if s is sniffer:
                        drain()
                    elif s in listeners:
                        try:
                            conn, _ = s.accept()
                        except BlockingIOError:
                            continue
                        port = listeners[s]
                        conn.recv(4096)
                        if port == TIME_WAIT_PORT:
                            conn.sendall(b"HTTP/1.0 200 OK\r\n\r\nbye")
                            conn.close()           # the server closes first
                        elif port == CLOSE_WAIT_PORT:
                            kept.append(conn)      # read, never closed
                        else:
                            conn.sendall(b"HTTP/1.0 200 OK\r\n\r\nok")
                            kept.append(conn)      # closed when the client has closed (below)
                    else:
                        port, _ = pending[s]
                        if port == HEALTHY_PORT:
                            s.recv(4096)
                            s.close()              # the client closes first
                            del pending[s]
                        else:
                            if not s.recv(4096):   # the server closed: close too
                                s.close()
                                del pending[s]
                # the healthy server closes what its clients closed
                for conn in list(kept):
                    if conn.getsockname()[1] == HEALTHY_PORT:
                        r, _, _ = select.select([conn], [], [], 0)
                        if r and not conn.recv(4096):
                            conn.close()
                            kept.remove(conn)
                if not todo and not pending and all(c.getsockname()[1] != HEALTHY_PORT for c in kept):
                    break
            end = time.monotonic() + 0.3
            while time.monotonic() < end:
                r, _, _ = select.select([sniffer], [], [], 0.05)
                if r:
                    drain()
            drain()
            writer.close()
            states = kernel_states(ns.proc_net("tcp"))
        finally:
            sniffer.close()
            for s in [*listeners, *clients, *kept]:
                s.close()
    return {"frames": frames,
            "kernel": {f"{p} {st}": n for (p, st), n in sorted(states.items()) if st != "LISTEN"}}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("output", help="the capture to write (pcap)")
    p.add_argument("--seconds", type=float, default=6.0, help="how long to run (default: %(default)s)")
    p.add_argument("--per-server", type=int, default=30, help="connections per server (default: %(default)s)")
    args = p.parse_args(argv)
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
    res = record(args.output, seconds=args.seconds, per_server=args.per_server)
    print(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
