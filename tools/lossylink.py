"""A lossy link between two real Linux kernels, and rawfin's reading of it against theirs.

    python tools/lossylink.py                      # every mix of issue 14, 50 connections each
    python tools/lossylink.py --mix loss12 --seed 7 --conns 20
    python tools/lossylink.py --mix loss12 --seed 7 --conn 13 --keep /tmp/run   # one connection again
    python tools/lossylink.py --list
    python tools/lossylink.py --reanalyze runs.jsonl     # stored runs (--json, --keep) read by this rawfin again

Two network namespaces of this process's own, each with a TUN device: the client's
(198.51.100.1) and the server's (198.51.100.2). A relay thread moves the IP packets from one
TUN file descriptor to the other, with seeded faults: drop with probability p (every segment,
or only FIN-carrying ones, only pure ACKs of a FIN, only RSTs), duplicate, and delay each
packet by 0..D ms (which reorders). Real sockets on both sides run a mix of closes (client
first, server first, simultaneous, half-close with data, abort with linger 0, close with
unread data). The tracepoint ``sock:inet_sock_set_state`` records both kernels (the client's
sockets have the client's address, the server's the server's), and two captures are written:

* ``before``: every packet as its sender's kernel handed it to the link, before the faults
  (a capture point next to the senders: every loss happens after it);
* ``after``: every packet as it reached the receiver's kernel, after the faults (a capture
  point next to the receivers: every loss happens before it).

rawfin analyzes each capture as ``rawfin analyze`` does (the compiled lane where it applies),
and each endpoint's history (the states it entered from ESTABLISHED on) is compared with the
kernel's. Linux hands a closing socket to a timewait socket and the tracepoint says
``FIN_WAIT2 → CLOSE``: that counts as TIME_WAIT (``rawfin.linux.kernel.Interpreter``); an
orphan handed off in substate FIN_WAIT2 is followed through ``/proc/net/tcp`` of its own
namespace at the end.

The faults are decided per packet from the seed, the connection's index and what the packet
is (direction, flags, sequence and acknowledgment numbers relative to the ISNs, length, which
copy), not from the order packets happen to cross the relay, so a seed replays the same
faults for the same packets: ``--conn I`` runs connection I of a mix alone, with its own close
and its own faults. The kernels' timing (delayed ACKs, tail loss probes) is their own, so a
replay is close to, not always exactly, the first run.

Needs root (namespaces, TUN, tracefs). Only addresses inside the two namespaces are used.
``tests/test_lossylink.py`` runs a small mix in the suite; this script runs the big ones.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import heapq
import json
import os
import random
import re
import select
import socket
import struct
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

CLIENT_IP = "198.51.100.1"
SERVER_IP = "198.51.100.2"
CLIENT_PORT_BASE = 20000          # connection i's client port is CLIENT_PORT_BASE + i
KINDS = ("client_first", "server_first", "simultaneous", "half_close", "abort", "unread")
APP_TIMEOUT_S = 15.0              # how long a side waits for data or EOF the link lost and retransmits
SETTLE_MAX_S = 60.0               # how long the end waits for every socket to finish closing
TIME_WAIT_NS = 60 * 10**9         # Linux's TCP_TIMEWAIT_LEN: a timewait socket gone after this expired
FIN_WAIT2_NS = 60 * 10**9         # ... and tcp_fin_timeout's default: one in substate FIN_WAIT2


# -- faults -------------------------------------------------------------------------

@dataclass(frozen=True)
class Faults:
    """What the link does to each packet. ``only``: which packets ``drop`` applies to:
    ``all``, ``fin`` (FIN-carrying), ``finack`` (pure ACKs of a FIN), ``rst``."""

    drop: float = 0.0
    only: str = "all"
    dup: float = 0.0
    delay_ms: float = 0.0

    def __post_init__(self) -> None:
        if self.only not in ("all", "fin", "finack", "rst"):
            raise ValueError(f"Faults.only must be all, fin, finack or rst, not {self.only!r}")

    def describe(self) -> str:
        parts = []
        if self.drop:
            what = {"all": "", "fin": " of FIN segments", "finack": " of pure ACKs of a FIN",
                    "rst": " of RSTs"}[self.only]
            parts.append(f"{self.drop:.0%} loss{what}")
        if self.dup:
            parts.append(f"{self.dup:.0%} duplicated")
        if self.delay_ms:
            parts.append(f"delay 0-{self.delay_ms:g} ms")
        return ", ".join(parts) or "no faults"


@dataclass(frozen=True)
class Mix:
    name: str
    faults: Faults
    kinds: tuple[str, ...] = KINDS
    conns: int = 50


#: the mixes issue 14 lists (its "done means"), plus a clean one
MIXES = {m.name: m for m in (
    Mix("clean", Faults()),
    Mix("loss3", Faults(drop=0.03)),
    Mix("loss12", Faults(drop=0.12)),
    Mix("fin30", Faults(drop=0.30, only="fin")),
    Mix("finack40", Faults(drop=0.40, only="finack")),
    Mix("reorder", Faults(delay_ms=30)),
    Mix("simul10", Faults(drop=0.10), kinds=("simultaneous",)),
    Mix("rst50", Faults(drop=0.50, only="rst"), kinds=("abort", "unread", "abort", "unread", "client_first")),
    # not in the issue's list: everything at once
    Mix("messy", Faults(drop=0.08, dup=0.05, delay_ms=20)),
)}
ISSUE_MIXES = ("loss3", "loss12", "fin30", "finack40", "reorder", "simul10", "rst50")

#: other mixes by name, a fault and a number: lossN (N% loss), finN, finackN, rstN (N% loss of those segments; rstN
#: with rst50's closes), dupN (N% duplicated), reorderN (delay 0-N ms), simulN (simultaneous closes, N% loss)
_PARAM_MIX = re.compile(r"(loss|finack|fin|rst|dup|reorder|simul)(\d+)")


def mix_named(name: str) -> Mix | None:
    """The mix of this name: one of MIXES, or one its name describes (_PARAM_MIX); None if neither."""
    if name in MIXES:
        return MIXES[name]
    m = _PARAM_MIX.fullmatch(name)
    if not m or not 0 < int(m[2]) <= 100:
        return None
    what, n = m[1], int(m[2])
    if what == "dup":
        return Mix(name, Faults(dup=n / 100))
    if what == "reorder":
        return Mix(name, Faults(delay_ms=n))
    if what == "simul":
        return Mix(name, Faults(drop=n / 100), kinds=("simultaneous",))
    if what == "rst":
        return Mix(name, Faults(drop=n / 100, only="rst"), kinds=MIXES["rst50"].kinds)
    return Mix(name, Faults(drop=n / 100, only="all" if what == "loss" else what))


def _rng(*key) -> random.Random:
    """A generator seeded by ``key`` (stable across processes, unlike hash())."""
    return random.Random(int.from_bytes(hashlib.blake2b(repr(key).encode(), digest_size=8).digest(), "big"))


@dataclass
class Packet:
    """One packet the relay saw (for the log a failure is read from)."""

    time_ns: int
    conn: int
    direction: str          # "c>s" or "s>c"
    flags: str
    rel_seq: int
    rel_ack: int
    data_len: int
    copy: int
    fate: str               # "sent", "dropped", "dup"
    delay_ns: int = 0

    def line(self) -> str:
        return (f"{self.time_ns / 1e9:.6f} conn {self.conn:2d} {self.direction} {self.flags:<8} "
                f"seq=+{self.rel_seq} ack=+{self.rel_ack} len={self.data_len} copy={self.copy} "
                f"{self.fate}{f' +{self.delay_ns / 1e6:.1f}ms' if self.delay_ns else ''}")


_FLAG_NAMES = ((0x02, "SYN"), (0x01, "FIN"), (0x04, "RST"), (0x08, "PSH"), (0x10, "ACK"))


def _flag_str(flags: int) -> str:
    return ",".join(n for b, n in _FLAG_NAMES if flags & b) or "-"


class Relay(threading.Thread):
    """Moves packets between the two TUN devices, with the faults, writing both captures."""

    def __init__(self, tun_c, tun_s, faults: Faults, seed: int, before, after, server_port: int) -> None:
        super().__init__(name="lossylink-relay", daemon=True)
        self.tun = {"c": tun_c, "s": tun_s}
        self.faults = faults
        self.seed = seed
        self.before = before
        self.after = after
        self.server_port = server_port
        self.stop_event = threading.Event()
        self.heap: list = []
        self.order = 0
        self.isn: dict[tuple[int, str], int] = {}       # (conn, direction) -> ISN
        self.fin: dict[tuple[int, str], int] = {}       # (conn, direction) -> FIN's sequence number
        self.copies: Counter = Counter()
        self.log: list[Packet] = []
        self.error: BaseException | None = None
        self.lock = threading.Lock()

    def run(self) -> None:
        try:
            self._loop()
        except BaseException as e:     # reported by the harness
            self.error = e

    def _loop(self) -> None:
        fds = {self.tun["c"].fileno(): "c", self.tun["s"].fileno(): "s"}
        while not self.stop_event.is_set():
            now = time.time_ns()
            timeout = 0.02
            if self.heap:
                timeout = max(0.0, min(timeout, (self.heap[0][0] - now) / 1e9))
            ready, _, _ = select.select(list(fds), [], [], timeout)
            for fd in ready:
                side = fds[fd]
                while True:
                    pkt = self.tun[side].read()
                    if pkt is None:
                        break
                    self._arrive(side, pkt)
            self._deliver(time.time_ns())

    def _deliver(self, now: int) -> None:
        while self.heap and self.heap[0][0] <= now:
            _, _, to, pkt = heapq.heappop(self.heap)
            t = time.time_ns()
            with self.lock:
                self.after.write(pkt, t)
            try:
                self.tun[to].write(pkt)
            except OSError:
                pass                   # the device is going away at the end

    def _arrive(self, side: str, pkt: bytes) -> None:
        now = time.time_ns()
        with self.lock:
            self.before.write(pkt, now)
        to = "s" if side == "c" else "c"
        info = self._classify(side, pkt)
        if info is None:             # not one of ours: passed on as it is
            self._push(now, to, pkt)
            return
        conn, direction, flags, rel_seq, rel_ack, dlen, kind = info
        ident = (conn, direction, flags, rel_seq, rel_ack, dlen)
        copy = self.copies[ident]
        self.copies[ident] += 1
        r = _rng(self.seed, "packet", *ident, copy)
        f = self.faults
        applies = {"all": True, "fin": bool(flags & 1), "finack": kind == "finack", "rst": bool(flags & 4)}[f.only]
        drop = applies and r.random() < f.drop
        delay = int(r.uniform(0, f.delay_ms) * 1e6) if f.delay_ms else 0
        dup = (not drop) and f.dup and r.random() < f.dup
        self.log.append(Packet(now, conn, direction, _flag_str(flags), rel_seq, rel_ack, dlen, copy,
                               "dropped" if drop else "dup" if dup else "sent", delay))
        if drop:
            return
        self._push(now + delay, to, pkt)
        if dup:
            self._push(now + delay + int(r.uniform(0, max(f.delay_ms, 1.0)) * 1e6), to, pkt)

    def _push(self, when: int, to: str, pkt: bytes) -> None:
        self.order += 1
        heapq.heappush(self.heap, (when, self.order, to, pkt))

    def _classify(self, side: str, pkt: bytes):
        """(conn, direction, flags, rel_seq, rel_ack, data_len, kind) for a TCP segment of the mix."""
        if len(pkt) < 40 or pkt[0] >> 4 != 4 or pkt[9] != 6:
            return None
        ihl = (pkt[0] & 15) * 4
        total = struct.unpack_from("!H", pkt, 2)[0]
        sport, dport, seqno, ackno, off, flags = struct.unpack_from("!HHIIBB", pkt, ihl)
        dlen = total - ihl - (off >> 4) * 4
        cport = sport if side == "c" else dport
        sport_srv = dport if side == "c" else sport
        if sport_srv != self.server_port:
            return None
        conn = cport - CLIENT_PORT_BASE
        direction = "c>s" if side == "c" else "s>c"
        other = "s>c" if side == "c" else "c>s"
        if flags & 0x02:
            self.isn.setdefault((conn, direction), seqno)
        isn = self.isn.get((conn, direction), seqno)
        peer_isn = self.isn.get((conn, other))
        rel_seq = (seqno - isn) % 2**32
        rel_ack = (ackno - peer_isn) % 2**32 if (flags & 0x10 and peer_isn is not None) else 0
        kind = ""
        if flags & 0x01:
            fin_seq = (seqno + dlen + (1 if flags & 0x02 else 0)) % 2**32
            self.fin.setdefault((conn, direction), fin_seq)
        peer_fin = self.fin.get((conn, other))
        if flags & 0x1F == 0x10 and dlen == 0 and peer_fin is not None and ackno == (peer_fin + 1) % 2**32:
            kind = "finack"
        return conn, direction, flags, rel_seq, rel_ack, dlen, kind

    def stop(self) -> None:
        self.stop_event.set()
        self.join(5)


# -- the applications -----------------------------------------------------------------

@dataclass
class ConnPlan:
    """What connection ``index`` does, decided by the seed."""

    index: int
    kind: str
    request: int
    response: int
    extra: int
    first: str              # which side acts first where the kind leaves it open: "c" or "s"
    shutdown: bool          # the first closer calls shutdown(SHUT_WR) (not orphaned) instead of close()
    wait_s: float           # how long the other side of an abort waits before it closes
    start_s: float

    @classmethod
    def make(cls, seed: int, index: int, mix: Mix, spread_s: float) -> "ConnPlan":
        r = _rng(seed, "plan", mix.name, index)
        return cls(index=index, kind=r.choice(mix.kinds), request=r.randrange(1, 3000),
                   response=r.randrange(0, 6000), extra=r.randrange(1, 4000), first=r.choice("cs"),
                   shutdown=r.random() < 0.3, wait_s=r.uniform(0.1, 0.8),
                   start_s=r.uniform(0, spread_s))


def _recv_exact(s: socket.socket, n: int, deadline: float) -> bool:
    got = 0
    while got < n:
        s.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            b = s.recv(min(65536, n - got))
        except (socket.timeout, OSError):
            return False
        if not b:
            return False
        got += len(b)
    return True


def _recv_eof(s: socket.socket, deadline: float) -> str:
    """Read until EOF: 'eof', 'reset' or 'timeout'."""
    while True:
        s.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            b = s.recv(65536)
        except socket.timeout:
            return "timeout"
        except ConnectionResetError:
            return "reset"
        except OSError:
            return "error"
        if not b:
            return "eof"


def _linger0(s: socket.socket) -> None:
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


def _close(s: socket.socket) -> None:
    with contextlib.suppress(OSError):
        s.close()


def run_plan(p: ConnPlan, c: socket.socket, s: socket.socket) -> list[str]:
    """Both applications of one connection, in one thread, from the moment the client has
    sent its request and the server has accepted; returns what went wrong for them."""
    notes = []
    dl = lambda: time.monotonic() + APP_TIMEOUT_S  # noqa: E731
    if not _recv_exact(s, p.request, dl()):
        notes.append("request not received")
    if p.response:
        s.sendall(b"r" * p.response)
        if not _recv_exact(c, p.response, dl()):
            notes.append("response not received")
    a, b = (c, s) if p.first == "c" else (s, c)
    if p.kind in ("client_first", "server_first"):
        a, b = (c, s) if p.kind == "client_first" else (s, c)
        if p.shutdown:
            a.shutdown(socket.SHUT_WR)
        else:
            a.close()
        how = _recv_eof(b, dl())
        if how != "eof":
            notes.append(f"passive side: {how}")
        b.close()
        if p.shutdown:
            _recv_eof(a, dl())
            a.close()
    elif p.kind == "simultaneous":
        if p.shutdown:
            a.shutdown(socket.SHUT_WR)
            b.shutdown(socket.SHUT_WR)
            for x in (a, b):
                _recv_eof(x, dl())
        a.close()
        b.close()
    elif p.kind == "half_close":
        a.shutdown(socket.SHUT_WR)
        how = _recv_eof(b, dl())
        if how != "eof":
            notes.append(f"half-closed side: {how}")
        with contextlib.suppress(OSError):
            b.sendall(b"h" * p.extra)
        b.close()
        if not _recv_exact(a, p.extra, dl()):
            notes.append("data after half-close not received")
        _recv_eof(a, dl())
        a.close()
    elif p.kind == "abort":
        _linger0(a)
        a.close()
        _recv_eof(b, time.monotonic() + p.wait_s)
        _close(b)
    elif p.kind == "unread":
        with contextlib.suppress(OSError):
            b.sendall(b"u" * p.extra)
        # wait until the data is there, unread, so close() has something to throw away
        select.select([a], [], [], APP_TIMEOUT_S)
        a.close()
        _recv_eof(b, time.monotonic() + p.wait_s)
        _close(b)
    else:
        raise ValueError(p.kind)
    return notes


# -- one run ------------------------------------------------------------------------------

@dataclass
class Endpoint:
    conn: int
    kind: str
    side: str                # "client" or "server"
    name: str                # "198.51.100.1:20003"
    kernel: list[str]
    before: list[str]
    after: list[str]
    kernel_raw: list[str] = field(default_factory=list)
    settled: bool = True     # False: a socket of its connection was still closing when the run ended
    marks: dict = field(default_factory=dict)   # "before"/"after" -> [(state entered, alternative states)]

    def covered(self, which: str) -> bool:
        """A miss rawfin said it could not decide: the kernel's state where the two histories part is
        among the alternatives of a transition rawfin marked inferred."""
        got = getattr(self, which)
        if got == self.kernel:
            return True
        i = next((i for i, (a, b) in enumerate(zip(got, self.kernel)) if a != b), min(len(got), len(self.kernel)))
        # (the kernel's history ends first: it stayed in its last state, which the alternative names)
        want = self.kernel[i] if i < len(self.kernel) else self.kernel[-1] if self.kernel else None
        return any(want in alt for _, alt in self.marks.get(which, ()))

    @property
    def ok_before(self) -> bool:
        return self.before == self.kernel

    @property
    def ok_after(self) -> bool:
        return self.after == self.kernel


@dataclass
class Run:
    mix: Mix
    seed: int
    server_port: int
    endpoints: list[Endpoint]
    packets: list[Packet]
    before_path: str
    after_path: str
    plans: list[ConnPlan]
    notes: dict[int, list[str]]
    unsettled: list[str]
    records: dict[str, list[dict]]

    def scored(self) -> list[Endpoint]:
        """The endpoints whose kernel history is complete (their connection finished closing)."""
        return [e for e in self.endpoints if e.settled]

    def agreement(self, which: str) -> tuple[int, int]:
        ok = sum(1 for e in self.scored() if getattr(e, f"ok_{which}"))
        return ok, len(self.scored())

    def misses(self, which: str) -> list[Endpoint]:
        return [e for e in self.scored() if not getattr(e, f"ok_{which}")]

    def unmarked(self, which: str) -> list[Endpoint]:
        """Misses rawfin did not mark inferred with the kernel's state among the alternatives."""
        return [e for e in self.misses(which) if not e.covered(which)]

    def summary(self) -> str:
        b, n = self.agreement("before")
        a, _ = self.agreement("after")
        dropped = sum(1 for p in self.packets if p.fate == "dropped")
        left = len(self.endpoints) - n
        um = f" unmarked {len(self.unmarked('before'))}/{len(self.unmarked('after'))}"
        return (f"{self.mix.name:<9} seed {self.seed:<6} {self.mix.faults.describe():<32} {len(self.plans):3d} conns "
                f"{len(self.packets):5d} pkts {dropped:4d} dropped | before {b}/{n} ({100 * b / max(n, 1):.1f}%) "
                f"after {a}/{n} ({100 * a / max(n, 1):.1f}%)" + um + (f" ({left} unsettled, not scored)" if left else ""))

    def explain(self, e: Endpoint, which: str) -> str:
        """One miss, with the packets of its connection."""
        lines = [f"conn {e.conn} ({e.kind}) {e.side} {e.name}, capture {which}:",
                 f"  kernel: {' → '.join(e.kernel)}",
                 f"  rawfin: {' → '.join(getattr(e, which))}",
                 f"  kernel raw: {'; '.join(e.kernel_raw)}"]
        if self.notes.get(e.conn):
            lines.append(f"  app: {'; '.join(self.notes[e.conn])}")
        lines += ["  " + p.line() for p in self.packets if p.conn == e.conn]
        return "\n".join(lines)


def history(states: list[str]) -> list[str]:
    """The states entered from (the first) ESTABLISHED on, repeats folded."""
    try:
        states = states[states.index("ESTABLISHED"):]
    except ValueError:
        pass
    out: list[str] = []
    for s in states:
        if not out or out[-1] != s:
            out.append(s)
    return out


def analyze(path: str) -> list[dict]:
    """The records ``rawfin analyze`` would print for ``path`` (lane where it applies)."""
    from rawfin.capture import engine
    from rawfin.capture.analysis import records
    from rawfin.render.records import json_line, record
    if engine.available():
        return list(engine.records(path, record=record, json_of=json_line(None)))
    return list(records(path, record=record))


def _sockets_of(ns, port: int):
    from rawfin.linux.kernel import proc_tcp
    return [(l, r, st, tw) for l, r, st, tw in proc_tcp(ns.proc_net) if port in (l[1], r[1])]


def run_mix(mix: Mix, seed: int, *, conns: int | None = None, only: list[int] | None = None,
            out_dir: str | None = None, spread_s: float = 1.0) -> Run:
    """Run ``mix`` (or connections ``only`` of it) once; returns the comparison."""
    from rawfin.core.segment import fmt_endpoint
    from rawfin.core.states import State
    from rawfin.linux.kernel import Interpreter, KernelTransition, Tracer
    from rawfin.linux.netns import NetNamespace, Tun
    from rawfin.wire.pcapio import LINKTYPE_RAW, PcapWriter

    n = conns if conns is not None else mix.conns
    indexes = list(only) if only else list(range(n))
    plans = [ConnPlan.make(seed, i, mix, spread_s if not only else 0.0) for i in indexes]
    port = random.SystemRandom().randrange(49152, 65536)   # the tracepoint sees every namespace
    out_dir = out_dir or tempfile.mkdtemp(prefix="lossylink-")
    os.makedirs(out_dir, exist_ok=True)
    before_path = os.path.join(out_dir, f"{mix.name}-{seed}-before.pcap")
    after_path = os.path.join(out_dir, f"{mix.name}-{seed}-after.pcap")
    notes: dict[int, list[str]] = {}
    fin_at: dict[tuple, int] = {}
    with contextlib.ExitStack() as stack:
        ns_c = stack.enter_context(NetNamespace())
        ns_s = stack.enter_context(NetNamespace())
        with ns_c.inside():
            tun_c = stack.enter_context(Tun("lossy0"))
            ns_c.configure(tun_c.name, CLIENT_IP, 24)
        with ns_s.inside():
            tun_s = stack.enter_context(Tun("lossy0"))
            ns_s.configure(tun_s.name, SERVER_IP, 24)
            listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        stack.callback(_close, listener)
        listener.bind((SERVER_IP, port))
        listener.listen(256)
        clients = {}
        with ns_c.inside():
            for p in plans:
                c = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                c.bind((CLIENT_IP, CLIENT_PORT_BASE + p.index))
                clients[p.index] = c
                stack.callback(_close, c)
        before = PcapWriter(before_path, linktype=LINKTYPE_RAW, nanosecond=True)
        after = PcapWriter(after_path, linktype=LINKTYPE_RAW, nanosecond=True)
        tracer = Tracer(state_filter=f"sport == {port} || dport == {port}", buffer_kb=4096)
        tracer.start()
        stack.callback(tracer.stop)
        relay = Relay(tun_c, tun_s, mix.faults, seed, before, after, port)
        relay.start()
        stack.callback(relay.stop)

        accepted: dict[int, socket.socket] = {}
        cond = threading.Condition()
        stop_accept = threading.Event()

        def acceptor() -> None:
            listener.settimeout(0.1)
            while not stop_accept.is_set():
                try:
                    s, peer = listener.accept()
                except socket.timeout:
                    continue
                except OSError:
                    return
                with cond:
                    accepted[peer[1] - CLIENT_PORT_BASE] = s
                    cond.notify_all()

        acc = threading.Thread(target=acceptor, name="lossylink-accept", daemon=True)
        acc.start()
        t0 = time.monotonic()

        def one(p: ConnPlan) -> None:
            time.sleep(max(0.0, t0 + p.start_s - time.monotonic()))
            c = clients[p.index]
            c.settimeout(APP_TIMEOUT_S)
            s = None
            got: list[str] = []
            try:
                c.connect((SERVER_IP, port))
                # the request goes before accept(): its segment completes a handshake whose
                # last ACK was lost, as a real client's would
                c.sendall(b"q" * p.request)
                with cond:
                    cond.wait_for(lambda: p.index in accepted, timeout=2 * APP_TIMEOUT_S)
                    s = accepted.get(p.index)
                got = ["not accepted"] if s is None else run_plan(p, c, s)
            except OSError as e:
                got = [f"{type(e).__name__}: {e}"]
            finally:
                _close(c)
                if s is not None:
                    _close(s)
            if got:
                notes[p.index] = got

        threads = [threading.Thread(target=one, args=(p,), name=f"lossylink-{p.index}", daemon=True) for p in plans]
        for t in threads:
            t.start()
        events = []
        for t in threads:
            while t.is_alive():
                t.join(0.2)
                events += tracer.read()
        stop_accept.set()
        acc.join(2)
        # every socket of the mix done closing (TIME_WAIT, or gone), or the time is up
        settle_until = time.monotonic() + SETTLE_MAX_S
        unsettled: list[str] = []
        stuck: set[int] = set()
        while True:
            events += tracer.read(timeout=0.1)
            busy = [(ns_name, l, r, st) for ns_name, ns in (("client", ns_c), ("server", ns_s))
                    for l, r, st, tw in _sockets_of(ns, port) if st not in ("TIME_WAIT", "LISTEN")
                    and not (tw and st == "FIN_WAIT2" and not _peer_alive(ns_c if ns is ns_s else ns_s, r, l))]
            if not busy:
                break
            if time.monotonic() > settle_until:
                unsettled = [f"{n} {l[0]}:{l[1]} {st}" for n, l, r, st in busy]
                stuck = {(l if n == "client" else r)[1] - CLIENT_PORT_BASE for n, l, r, st in busy}
                break
        time.sleep(0.1)
        events += tracer.drain(0.1)
        relay.stop()
        if relay.error is not None:
            raise relay.error
        with relay.lock:
            before.close()
            after.close()
        # when each FIN reached its receiver: from the capture after the faults
        from rawfin.wire.decode import decode
        from rawfin.wire.pcapio import open_capture
        with open_capture(after_path) as cap:
            for fr in cap:
                seg = decode(fr.linktype, fr.data, fr.orig_len, fr.frame, fr.time_ns)
                if getattr(seg, "fin", False):
                    fin_at.setdefault(((seg.dst, seg.dport), (seg.src, seg.sport)), fr.time_ns)

        def peer_fin_seen(local, remote, time_ns):
            t = fin_at.get((local, remote))
            return t is not None and t <= time_ns + 1000

        interp = Interpreter(peer_fin_seen=peer_fin_seen)
        ours = [e for e in sorted(events, key=lambda e: e.time_ns)
                if e.local[0] in (CLIENT_IP, SERVER_IP) and port in (e.local[1], e.remote[1])]
        by_ep: dict[tuple, list] = {}
        for tr in interp.feed(ours):
            by_ep.setdefault((tr.endpoint, tr.peer), []).append(tr)
        for (local, remote) in list(interp.orphans):
            ns = ns_c if local[0] == CLIENT_IP else ns_s
            fin = fin_at.get((local, remote))
            tr = interp.orphan_reached_time_wait(local, remote, fin or 0, read=ns.proc_net)
            if tr is None and fin is not None and not any(l == local and r == remote
                                                         for l, r, st, tw in _sockets_of(ns, port)):
                # its timewait socket is gone already, though the peer's FIN reached it: in substate FIN_WAIT2 a
                # timewait socket takes that FIN to TIME_WAIT (and ignores an RST without ACK, tcp_timewait_state_process);
                # an RST in TIME_WAIT then killed it (CLOSED is added below, as for any timewait socket gone).
                # (reorder seed 57 connection 33: the history stopped at FIN_WAIT_2)
                tr = KernelTransition(time_ns=fin, endpoint=fmt_endpoint(*local), peer=fmt_endpoint(*remote),
                                      from_=State.FIN_WAIT_2, to=State.TIME_WAIT, kernel="timewait socket gone",
                                      note="the peer's FIN reached the orphan's timewait socket (substate FIN_WAIT2), "
                                           "gone from /proc/net/tcp by the end", source="/proc/net/tcp")
            if tr is not None:
                by_ep.setdefault((tr.endpoint, tr.peer), []).append(tr)
        # a timewait socket killed by an RST is not traced: /proc/net/tcp shows it gone
        left_at = time.time_ns()
        left = {(f"{l[0]}:{l[1]}", f"{r[0]}:{r[1]}"): st for ns in (ns_c, ns_s) for l, r, st, tw in _sockets_of(ns, port)}

    recs = {"before": analyze(before_path), "after": analyze(after_path)}
    wire: dict[str, dict[tuple, list[str]]] = {"before": {}, "after": {}}
    marks: dict[str, dict[tuple, list]] = {"before": {}, "after": {}}
    for which, rs in recs.items():
        for r in rs:
            if r["type"] == "transition":
                wire[which].setdefault((r["endpoint"], r["peer"]), []).append(r["to"])
                if r.get("inferred"):
                    marks[which].setdefault((r["endpoint"], r["peer"]), []).append(
                        (r["to"], r["alternative"]))
    endpoints = []
    for p in plans:
        cname = f"{CLIENT_IP}:{CLIENT_PORT_BASE + p.index}"
        sname = f"{SERVER_IP}:{port}"
        for side, me, peer in (("client", cname, sname), ("server", sname, cname)):
            trs = by_ep.get((me, peer), [])
            k = history([tr.to.value for tr in trs])
            # gone from /proc/net/tcp: killed by an RST, unless it had been in TIME_WAIT long enough to
            # expire (a long settle): that expiry is after anything the capture shows
            tw_at = next((tr.time_ns for tr in reversed(trs) if tr.to.value == "TIME_WAIT"), None)
            if (k and k[-1] == "TIME_WAIT" and (me, peer) not in left
                    and (tw_at is None or left_at - tw_at < TIME_WAIT_NS)):
                k.append("CLOSED")
            # ... the same for an orphan's timewait socket in substate FIN_WAIT2 (its peer's FIN never reached it):
            # new data or an RST kills it (tcp_timewait_state_process: TCP_TW_RST, after an RST it answers)
            # (loss20 seed 354 connection 29: the client's data sent again after the server's close, the server's
            # timewait socket answering with an RST; the history stopped at FIN_WAIT_2)
            fw2_at = next((tr.time_ns for tr in reversed(trs) if tr.to.value == "FIN_WAIT_2"), None)
            if (k and k[-1] == "FIN_WAIT_2" and (me, peer) not in left and fw2_at is not None
                    and left_at - fw2_at < FIN_WAIT2_NS):
                k.append("CLOSED")
            endpoints.append(Endpoint(conn=p.index, kind=p.kind, side=side, name=me, kernel=k,
                                      before=history(wire["before"].get((me, peer), [])),
                                      after=history(wire["after"].get((me, peer), [])),
                                      kernel_raw=[f"{tr.kernel}{' (' + tr.note[:40] + ')' if tr.note else ''}"
                                                  for tr in trs], settled=p.index not in stuck,
                                      marks={w: marks[w].get((me, peer), []) for w in marks}))
    return Run(mix=mix, seed=seed, server_port=port, endpoints=endpoints, packets=list(relay.log),
               before_path=before_path, after_path=after_path, plans=plans, notes=notes, unsettled=unsettled,
               records=recs)


def _peer_alive(ns, local, remote) -> bool:
    """Whether ``ns`` still has a socket for (local, remote) that is not done (an orphan's peer)."""
    from rawfin.linux.kernel import proc_tcp
    return any(l == local and r == remote and st not in ("TIME_WAIT",) for l, r, st, tw in proc_tcp(ns.proc_net))


# -- stored runs read again ------------------------------------------------------------

def reanalyze(paths: list[str]) -> tuple[dict[tuple[str, str], Counter], list[str], list[str]]:
    """Runs stored by ``--json`` (with their captures kept, ``--keep``) read by this rawfin again, each endpoint
    compared with the kernel's history as it was recorded: a Counter (n, ok, unmarked) per (mix, "before" or
    "after"), a line for each endpoint whose match or mark differs from the recorded one, and a line for each
    miss left unmarked. A rule is tried on
    many runs in seconds, without the kernels' timing changing the runs under it."""
    rows = [json.loads(line) for p in paths for line in open(p) if line.strip()]
    runs: dict[tuple, list[dict]] = {}
    for r in rows:
        runs.setdefault(tuple(r["captures"]), []).append(r)
    tally: dict[tuple[str, str], Counter] = {}
    changed: list[str] = []
    unmarked: list[str] = []
    for caps, rs in runs.items():
        read = {}
        for which, path in zip(("before", "after"), caps):
            wire: dict[tuple, list[str]] = {}
            marks: dict[tuple, list] = {}
            for rec in analyze(path):
                if rec["type"] == "transition":
                    key = (rec["endpoint"], rec["peer"])
                    wire.setdefault(key, []).append(rec["to"])
                    if rec.get("inferred"):
                        marks.setdefault(key, []).append((rec["to"], rec["alternative"]))
            read[which] = (wire, marks)
        for r in rs:
            if not r["settled"]:
                continue
            # (runs stored before "peer" was written: a server's peer is the connection's client port)
            peer = r.get("peer") or (f"{CLIENT_IP}:{CLIENT_PORT_BASE + r['conn']}" if r["side"] == "server" else
                                     next((p for w in read.values() for e, p in w[0] if e == r["endpoint"]), ""))
            e = Endpoint(conn=r["conn"], kind=r["kind"], side=r["side"], name=r["endpoint"], kernel=r["kernel"],
                         before=history(read["before"][0].get((r["endpoint"], peer), [])),
                         after=history(read["after"][0].get((r["endpoint"], peer), [])),
                         marks={w: read[w][1].get((r["endpoint"], peer), []) for w in read})
            for which in ("before", "after"):
                ok, covered = getattr(e, which) == e.kernel, e.covered(which)
                t = tally.setdefault((r["mix"], which), Counter())
                t["n"] += 1
                t["ok"] += ok
                t["unmarked"] += not covered
                if not covered:
                    unmarked.append(f"{r['mix']} seed {r['seed']} conn {r['conn']} {r['side']} {which} ({r['kind']}): "
                                    f"rawfin {' → '.join(getattr(e, which))}; kernel {' → '.join(e.kernel)}")
                if (ok, covered) != (r[f"ok_{which}"], r[f"covered_{which}"]):
                    changed.append(f"{r['mix']} seed {r['seed']} conn {r['conn']} {r['side']} {which}: "
                                   f"{'match' if r[f'ok_{which}'] else 'miss'}"
                                   f"{'' if r[f'covered_{which}'] else ' unmarked'} -> "
                                   f"{'match' if ok else 'miss'}{'' if covered else ' unmarked'} "
                                   f"(rawfin {' → '.join(getattr(e, which))}; kernel {' → '.join(e.kernel)})")
    return tally, changed, unmarked


def rate_table(tally: dict[tuple[str, str], Counter]) -> list[str]:
    """One line per mix: matches and unmarked misses before and after the faults, and the total."""
    lines = []
    total: dict[str, Counter] = {"before": Counter(), "after": Counter()}
    for mix in sorted({m for m, _ in tally}):
        parts = []
        for which in ("before", "after"):
            t = tally.get((mix, which), Counter())
            total[which].update(t)
            parts.append(f"{which} {t['ok']}/{t['n']} ({100 * t['ok'] / max(t['n'], 1):.2f}%) unmarked {t['unmarked']}")
        lines.append(f"{mix:<9} " + "   ".join(parts))
    lines.append(f"{'total':<9} " + "   ".join(
        f"{w} {total[w]['ok']}/{total[w]['n']} ({100 * total[w]['ok'] / max(total[w]['n'], 1):.2f}%) "
        f"unmarked {total[w]['unmarked']}" for w in ("before", "after")))
    return lines


# -- the command line --------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mix", action="append", help="a mix name (repeatable; default: every mix of issue 14): one "
                    "--list shows, or lossN, finN, finackN, rstN, dupN, reorderN, simulN (N%% of those faults; "
                    "reorderN: delay 0-N ms)")
    ap.add_argument("--seed", type=int, action="append", help="seed (repeatable; default 1)")
    ap.add_argument("--conns", type=int, help="connections per mix (default 50)")
    ap.add_argument("--conn", type=int, action="append", help="run only connection I of the mix (repeatable)")
    ap.add_argument("--keep", help="write the captures to this directory (default: a temporary one)")
    ap.add_argument("--json", help="write every endpoint's comparison as JSON lines to this file")
    ap.add_argument("--quiet", "-q", action="store_true", help="only the summary lines")
    ap.add_argument("--list", action="store_true", help="list the mixes")
    ap.add_argument("--reanalyze", metavar="JSONL", action="append",
                    help="read the runs a --json file stored (their captures kept with --keep) again with this "
                         "rawfin, against the kernel histories recorded; no root needed (repeatable)")
    a = ap.parse_args(argv)
    if a.reanalyze:
        tally, changed, unmarked = reanalyze(a.reanalyze)
        print("\n".join(rate_table(tally)))
        if changed and not a.quiet:
            print("changed from the recorded reading:")
            print("\n".join("  " + c for c in changed))
        if unmarked and not a.quiet:
            print("misses not marked inferred:")
            print("\n".join("  " + u for u in unmarked))
        return 0
    if a.list:
        for m in MIXES.values():
            print(f"{m.name:<9} {m.faults.describe():<36} closes: {', '.join(sorted(set(m.kinds)))}")
        return 0
    mixes = a.mix or list(ISSUE_MIXES)
    for name in mixes:
        if mix_named(name) is None:
            ap.error(f"unknown mix {name!r} (--list; or lossN, finN, finackN, rstN, dupN, reorderN, simulN)")
    seeds = a.seed or [1]
    total = Counter()
    jf = open(a.json, "w") if a.json else None
    try:
        for name in mixes:
            for seed in seeds:
                run = run_mix(mix_named(name), seed, conns=a.conns, only=a.conn,
                              out_dir=a.keep or tempfile.mkdtemp(prefix="lossylink-"))
                print(run.summary(), flush=True)
                for which in ("before", "after"):
                    ok, n = run.agreement(which)
                    total[which] += ok
                    total[which + "_n"] += n
                    if not a.quiet:
                        for e in run.misses(which):
                            print(run.explain(e, which))
                if run.unsettled and not a.quiet:
                    print(f"  unsettled at the end: {', '.join(run.unsettled)}")
                if jf:
                    for e in run.endpoints:
                        peer = (f"{SERVER_IP}:{run.server_port}" if e.side == "client"
                                else f"{CLIENT_IP}:{CLIENT_PORT_BASE + e.conn}")
                        jf.write(json.dumps({"mix": name, "seed": seed, "conn": e.conn, "kind": e.kind,
                                             "side": e.side, "endpoint": e.name, "peer": peer, "kernel": e.kernel,
                                             "before": e.before, "after": e.after, "ok_before": e.ok_before,
                                             "ok_after": e.ok_after, "kernel_raw": e.kernel_raw,
                                             "settled": e.settled, "marks": e.marks,
                                             "covered_before": e.covered("before"),
                                             "covered_after": e.covered("after"),
                                             "captures": [run.before_path, run.after_path]}) + "\n")
    finally:
        if jf:
            jf.close()
    for which in ("before", "after"):
        ok, n = total[which], total[which + "_n"]
        print(f"total {which}: {ok}/{n} ({100 * ok / max(n, 1):.1f}%)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
