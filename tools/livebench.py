"""Live capture benchmark: does `rawfin live` keep up with a burst of loopback connections,
and does it say so when it could not?

    sudo python tools/livebench.py                      # 5,000 connections; a paused 20,000 burst
    sudo python tools/livebench.py --connections 2000 --burst 0 --tcpdump

Everything happens on the loopback device of a network namespace this tool makes (and
that vanishes with it): a server process, a client process that makes N connections
back to back as fast as one Python client can (connect, send a request, read the
answer, close: about ten segments each), and the capture command a user would type,
``rawfin live -i lo -f 'tcp port P' --format jsonl`` and the default table, each as a
child process started before the burst and stopped with SIGTERM after it.

Runs, each reported as connections seen / made, segments, and the kernel's drop count
as rawfin reports it:

* ``jsonl`` and ``table``: the plain burst (the target: at least 99.5% of the
  connections seen);
* ``paused``: a burst of ``--burst`` connections during which rawfin is stopped
  (SIGSTOP) for ``--pause`` seconds, then continued (SIGCONT): the ring overflows, and
  rawfin must report the kernel's drops (the run fails if drops happened and rawfin
  reported none);
* ``tcpdump`` (``--tcpdump``, when installed): the same burst through
  ``tcpdump -i lo -w FILE``, its segments and drops as it reports them.

Nothing here asserts a time; the numbers are printed (``--json`` for a machine).
Needs root (a network namespace and an AF_PACKET socket).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

SERVER = r"""
import socket, sys
ls = socket.socket()
ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
ls.bind(("127.0.0.1", 0))
ls.listen(4096)
print(ls.getsockname()[1], flush=True)
while True:
    c, _ = ls.accept()
    c.recv(100)
    c.sendall(b"HTTP/1.0 200 OK\r\n\r\nok")
    c.recv(100)          # the client's FIN
    c.close()
"""

CLIENT = r"""
import socket, sys, time
port, n = int(sys.argv[1]), int(sys.argv[2])
t = time.perf_counter()
for _ in range(n):
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(b"GET / HTTP/1.0\r\n\r\n")
    s.recv(100)
    s.close()
print(time.perf_counter() - t, flush=True)
"""


def _rawfin() -> list[str]:
    exe = os.path.join(os.path.dirname(sys.executable), "rawfin")
    return [exe] if os.path.exists(exe) else [sys.executable, "-m", "rawfin"]


def _wait_for(stream, pattern: str, timeout: float = 20.0) -> str:
    """Read lines of a child's stderr until one matches (the capture has started)."""
    import select

    end = time.monotonic() + timeout
    seen = ""
    while time.monotonic() < end:
        r, _, _ = select.select([stream], [], [], 0.2)
        if r:
            line = stream.readline()
            if not line:
                break
            seen += line
            if re.search(pattern, line):
                return seen
    raise RuntimeError(f"the capture did not start: {seen!r}")


def _reap(p: subprocess.Popen, timeout: float = 60.0) -> float | None:
    """Wait for a child; its CPU seconds (user + system), from wait4's rusage."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        pid, status, ru = os.wait4(p.pid, os.WNOHANG)
        if pid:
            p.returncode = os.waitstatus_to_exitcode(status)
            return round(ru.ru_utime + ru.ru_stime, 3)
        time.sleep(0.02)
    p.kill()
    p.wait()
    return None


class Bench:
    def __init__(self, args) -> None:
        self.args = args
        self.tmp = tempfile.mkdtemp(prefix="rawfin-livebench-")
        self.server = subprocess.Popen([sys.executable, "-c", SERVER], stdout=subprocess.PIPE, text=True)
        self.port = int(self.server.stdout.readline())

    def close(self) -> None:
        self.server.kill()
        self.server.wait()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def burst(self, n: int) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-c", CLIENT, str(self.port), str(n)], stdout=subprocess.PIPE,
                                text=True)

    def rawfin(self, fmt: str, n: int, pause: float = 0.0, pause_after: float = 0.3) -> dict:
        cmd = _rawfin() + ["live", "-i", "lo", "-f", f"tcp port {self.port}"]
        if fmt != "table":
            cmd += ["--format", fmt]
        cmd += self.args.extra
        out_path = os.path.join(self.tmp, f"out-{fmt}-{n}")
        with open(out_path, "w") as out:
            p = subprocess.Popen(cmd, stdout=out, stderr=subprocess.PIPE, text=True)
            _wait_for(p.stderr, r"capturing on")
            t0 = time.perf_counter()
            client = self.burst(n)
            if pause:
                time.sleep(pause_after)
                p.send_signal(signal.SIGSTOP)
                time.sleep(pause)
                p.send_signal(signal.SIGCONT)
            made_s = float(client.stdout.readline() or "nan")
            client.wait()
            burst_s = time.perf_counter() - t0
            time.sleep(self.args.settle)
            p.send_signal(signal.SIGTERM)
            err = p.stderr.read()
            cpu = _reap(p)
        with open(out_path) as fh:
            text = fh.read()
        res = {"command": " ".join(cmd), "format": fmt, "made": n, "client_s": round(made_s, 3),
               "burst_s": round(burst_s, 3), "paused_s": pause, "exit": p.returncode, "cpu_s": cpu}
        m = re.search(r"(\d+) segments received, (\d+) dropped by the kernel; (\d+) connections", err)
        res["segments"] = int(m.group(1)) if m else None
        res["dropped"] = int(m.group(2)) if m else None
        res["connections"] = int(m.group(3)) if m else None
        if fmt == "jsonl":
            recs = [json.loads(x) for x in text.splitlines() if x.startswith("{")]
            conns = [r for r in recs if r.get("type") == "connection"]
            res["connections"] = len(conns)
            res["complete"] = sum(1 for r in conns if r.get("close") in ("four_way", "three_way"))
            stats = [r for r in recs if r.get("type") == "stats"]
            if stats:
                res["stats_record"] = stats[-1]
        res["seen_pct"] = round(100.0 * (res["connections"] or 0) / n, 2)
        res["stderr_tail"] = err.strip().splitlines()[-3:]
        return res

    def tcpdump(self, n: int) -> dict:
        path = os.path.join(self.tmp, "tcpdump.pcap")
        cmd = ["tcpdump", "-i", "lo", "-w", path, f"tcp port {self.port}"]
        p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        _wait_for(p.stderr, r"listening on")
        client = self.burst(n)
        made_s = float(client.stdout.readline() or "nan")
        client.wait()
        time.sleep(self.args.settle)
        p.send_signal(signal.SIGTERM)
        err = p.stderr.read()
        cpu = _reap(p)
        res = {"command": " ".join(cmd), "format": "tcpdump", "made": n, "client_s": round(made_s, 3), "cpu_s": cpu}
        m = re.search(r"(\d+) packets captured", err)
        res["segments"] = int(m.group(1)) if m else None
        m = re.search(r"(\d+) packets dropped by kernel", err)
        res["dropped"] = int(m.group(1)) if m else None
        # connections: the SYNs tcpdump wrote, read back by rawfin's own analysis
        r = subprocess.run(_rawfin() + ["analyze", path, "--format", "jsonl", "--summary"], capture_output=True,
                           text=True)
        res["connections"] = sum(1 for x in r.stdout.splitlines() if '"type":"connection"' in x)
        res["seen_pct"] = round(100.0 * res["connections"] / n, 2)
        return res


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--connections", type=int, default=5000, help="connections in the plain burst (default 5000)")
    ap.add_argument("--burst", type=int, default=20000,
                    help="connections in the paused burst (default 20000; 0: no paused run)")
    ap.add_argument("--pause", type=float, default=3.0, help="seconds rawfin is stopped in the paused run")
    ap.add_argument("--formats", default="jsonl,table", help="formats of the plain burst (default jsonl,table)")
    ap.add_argument("--tcpdump", action="store_true", help="also run tcpdump on the plain burst")
    ap.add_argument("--settle", type=float, default=1.0, help="seconds after the burst before SIGTERM")
    ap.add_argument("--repeat", type=int, default=1, help="runs of each plain burst")
    ap.add_argument("--json", action="store_true", help="print the results as JSON")
    ap.add_argument("extra", nargs="*", help="more options for rawfin live (after --)")
    args = ap.parse_args(argv)
    if os.geteuid() != 0:
        print("livebench: skipped: needs root (a network namespace, an AF_PACKET socket)", file=sys.stderr)
        return 0
    from rawfin.linux.netns import NetNamespace

    results = []
    with NetNamespace() as ns, ns.inside():
        bench = Bench(args)
        try:
            for _ in range(args.repeat):
                for fmt in [f for f in args.formats.split(",") if f]:
                    results.append(bench.rawfin(fmt, args.connections))
                    _print(results[-1], args)
                if args.tcpdump and shutil.which("tcpdump"):
                    results.append(bench.tcpdump(args.connections))
                    _print(results[-1], args)
            if args.burst:
                r = bench.rawfin("jsonl", args.burst, pause=args.pause)
                r["format"] = "paused"
                results.append(r)
                _print(r, args)
        finally:
            bench.close()
    if args.json:
        print(json.dumps(results, indent=1))
    else:
        _verdict(results, args)
    bad = [r for r in results if r["format"] == "paused" and not r.get("dropped")]
    if bad:
        print("livebench: rawfin was paused during a burst and reported no kernel drops", file=sys.stderr)
        return 1
    return 0


def _verdict(results: list[dict], args) -> None:
    """The targets, as percentages of what was made."""
    print(f"\nconnections seen of {args.connections:,} made (target: 99.5%):", flush=True)
    for r in results:
        if r["format"] != "paused":
            print(f"  {r['format']:>8}: {r['seen_pct']}%  ({r.get('dropped')} dropped by the kernel)")
    for r in results:
        if r["format"] == "paused":
            st = r.get("stats_record") or {}
            got = (st.get("received") or 0) + (st.get("dropped") or 0)
            print(f"stopped {r['paused_s']} s during a {r['made']:,}-connection burst: rawfin reported "
                  f"{r.get('dropped')} dropped by the kernel; received + dropped = {got:,} segments "
                  f"(about {10 * r['made']:,} made)")


def _print(r: dict, args) -> None:
    if args.json:
        return
    drop = "-" if r.get("dropped") is None else r["dropped"]
    print(f"{r['format']:>8}: {r['connections']}/{r['made']} connections seen ({r['seen_pct']}%), "
          f"{r.get('segments')} segments, {drop} dropped by the kernel; client {r['client_s']} s"
          + (f", {'tcpdump' if r['format'] == 'tcpdump' else 'rawfin'} {r['cpu_s']} CPU s" if r.get("cpu_s") is not None else "")
          + (f", rawfin stopped {r['paused_s']} s" if r.get("paused_s") else ""), flush=True)
    if r["format"] != "tcpdump":
        print(f"          {r['command']}", flush=True)
        if r.get("connections") is None or r.get("exit"):
            print("          " + "\n          ".join(r.get("stderr_tail", [])), flush=True)


if __name__ == "__main__":
    sys.exit(main())
