"""The driver of ``rawfin peer`` and ``rawfin replay --against kernel``: rawfin against a real Linux socket.

rawfin makes a network namespace of its own with a TUN device in it; the
kernel's socket lives in that namespace at 192.0.2.1 (a documentation
address), and rawfin plays 192.0.2.2 on the far side of the device: every
packet the kernel sends is read from the TUN device and handed to rawfin's
side; every segment rawfin's side returns is written back (through the drop
rules). Nothing leaves the namespace. The kernel's own state changes come
from the tracepoint (:mod:`rawfin.linux.kernel`), rawfin's from its state
machine. :class:`PeerRun` owns the namespace, the device, the trace instance
and the capture, and always removes them; what plays rawfin's side and what
the kernel's application does are its users' (:mod:`rawfin.linux.peerfile`
plays scenario files, :mod:`rawfin.linux.replayrun` replays captures).

The capture (``--write``) is taken at the TUN device, the kernel's side of the
link: a segment of rawfin's that a drop rule loses never appears in it; a
segment of the kernel's that rawfin drops does.
"""

from __future__ import annotations

import random
import select
import time
from dataclasses import dataclass, field
from typing import Callable

from rawfin.core import seq as sq
from rawfin.core.units import MS
from rawfin.core.events import Result
from rawfin.core.segment import Segment
from rawfin.sim.scenarios import Check

KERNEL = ("192.0.2.1", 80)
RAWFIN_IP = "192.0.2.2"


@dataclass
class Rule:
    """Drop (or hold) segments going one way: ``out`` = rawfin → kernel, ``in`` = kernel → rawfin."""

    direction: str
    label: str
    match: Callable[[Segment, "PeerRun"], bool]
    times: int = 1
    hold: bool = False
    hits: int = 0

    def applies(self, seg: Segment, run: "PeerRun") -> bool:
        if self.times and self.hits >= self.times:
            return False
        if self.match(seg, run):
            self.hits += 1
            return True
        return False


@dataclass
class SegLog:
    time_ns: int
    direction: str       # "rawfin → kernel" / "kernel → rawfin"
    seg: Segment
    note: str = ""
    shown: str = ""      # the segment as the table shows it (absolute, or relative: --seq relative)


@dataclass
class Outcome:
    scenario: str
    description: str
    rawfin: list = field(default_factory=list)        # Transition
    anomalies: list = field(default_factory=list)     # Anomaly
    kernel: list = field(default_factory=list)        # KernelTransition
    segments: list = field(default_factory=list)      # SegLog
    checks: list = field(default_factory=list)        # Check
    retransmissions: list = field(default_factory=list)   # (time_ns, text), seen at the TUN device
    kernel_retransmits: list = field(default_factory=list)  # (time_ns, text), from the tracepoint
    start_ns: int = 0
    kernel_truth: str = ""
    notes: list = field(default_factory=list)       # (time_ns, text): what the applications met
    kernel_addr: tuple = KERNEL                     # the kernel socket's address
    rawfin_addr: tuple | None = None                # rawfin's (None: RAWFIN_IP, port of the run's choice)

    @property
    def ok(self) -> bool:
        return all(c.ok is not False for c in self.checks)


class PeerRun:
    """One run against the kernel: namespace, TUN device, the tracer, the capture, and rawfin's side.

    ``ep`` is rawfin's side for :meth:`pump` and :meth:`apply` (anything with ``receive``,
    ``handle_timer`` and ``next_deadline``, as an Endpoint has); ``port`` rawfin's port (a
    random one by default), ``kernel`` the kernel socket's address.
    """

    def __init__(self, *, port: int | None = None, write: str | None = None, kernel_truth: bool = True,
                 kernel: tuple[str, int] = KERNEL, ep=None) -> None:
        if port is None:
            # The tracepoint sees every namespace: a port of this run's own keeps another
            # rawfin peer running at the same time (same addresses) out of this run's story.
            port = random.randrange(49152, 65536)
        self.kernel = kernel                 # the kernel socket's address (KERNEL, or a client's own)
        self.local = (RAWFIN_IP, port)
        self.write_path = write
        self.want_trace = kernel_truth
        self.rules: list[Rule] = []
        self.ns = self.tun = self.tracer = self.interp = self.writer = None
        self.fin_at: dict[tuple, int] = {}
        self.out = Outcome(scenario="", description="")
        self.ep = ep
        self._kernel_segs: dict[tuple, list[int]] = {}   # (flags, seq, ack, len) -> times sent
        #: --seq relative: each connection's bases (rawfin.core.seq.note_bases), by its pair; None: absolute
        self.bases: dict | None = None

    # -- lifecycle ---------------------------------------------------------------
    def __enter__(self) -> "PeerRun":
        from rawfin.wire import codec  # noqa: F401  (Scapy's import takes a while: not in the middle of a handshake)
        from rawfin.linux.netns import NetNamespace, Tun
        try:
            self.ns = NetNamespace()
            self.ns.open()
            with self.ns.inside():
                self.tun = Tun("rftun0").open()
                self.ns.configure(self.tun.name, KERNEL[0], 24)
            if self.want_trace:
                from rawfin.linux.kernel import Interpreter, Tracer, tracefs_missing_reason
                why = tracefs_missing_reason()
                if why is None:
                    self.tracer = Tracer(state_filter=f"sport == {self.kernel[1]} || dport == {self.kernel[1]}")
                    self.tracer.start()
                    self.interp = Interpreter(peer_fin_seen=self._peer_fin_seen)
                    self.out.kernel_truth = "tracepoint sock:inet_sock_set_state"
                else:
                    self.out.kernel_truth = f"unavailable: {why}"
            if self.write_path:
                from rawfin.wire.pcapio import LINKTYPE_RAW, PcapWriter
                self.writer = PcapWriter(self.write_path, linktype=LINKTYPE_RAW, nanosecond=True)
            self.out.start_ns = time.time_ns()
        except BaseException:
            self.close(ok=False)
            raise
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close(ok=exc_type is None)

    def close(self, ok: bool = True) -> None:
        if self.tracer is not None:
            try:
                if ok:
                    self._kernel_events(self.tracer.drain(0.05))
            finally:
                self.tracer.stop()
                self.tracer = None
        if self.tun is not None:
            self.tun.close()
            self.tun = None
        if self.ns is not None:
            self.ns.close()
            self.ns = None
        if self.writer is not None:
            # what happened up to an error or Ctrl-C is worth keeping too
            self.writer.close()
            self.writer = None

    # -- the kernel's side ---------------------------------------------------------
    def kernel_states(self) -> dict[tuple, str]:
        """The namespace's sockets as /proc/net/tcp shows them: (local, remote) -> state."""
        from rawfin.linux.kernel import proc_tcp
        return {(l, r): st for l, r, st, tw in proc_tcp(self.ns.proc_net)}

    def kernel_state_now(self) -> str | None:
        return self.kernel_states().get((self.kernel, self.local))

    # -- rawfin's side --------------------------------------------------------------
    def _peer_fin_seen(self, local, remote, time_ns: int) -> bool:
        t = self.fin_at.get((local, remote))
        return t is not None and t <= time_ns + 1000

    def _bases_of(self, seg: Segment) -> dict | None:
        """The bases ``seg``'s connection counts from, noted from ``seg`` too (None: absolute numbers).
        A SYN with another ISN on the same pair is a new connection: it counts afresh."""
        if self.bases is None:
            return None
        src, dst = (seg.src, seg.sport), (seg.dst, seg.dport)
        pair = frozenset((src, dst))
        b = self.bases.get(pair)
        if b is None or (seg.syn and not seg.has_ack and b.get(src, seg.seq) != seg.seq):
            b = self.bases[pair] = {}
        sq.note_bases(b, src, dst, seg.seq, seg.ack, seg.syn, seg.has_ack)
        return b

    def _log(self, direction: str, seg: Segment, now: int, note: str = "") -> None:
        self.out.segments.append(SegLog(time_ns=now, direction=direction, seg=seg, note=note,
                                        shown=seg.describe(self._bases_of(seg))))

    def _capture(self, raw: bytes, now: int) -> None:
        if self.writer is not None:
            self.writer.write(raw, now)

    def apply(self, res: Result, now: int | None = None) -> None:
        """Record what rawfin's endpoint did and send its segments (through the drop rules)."""
        from rawfin.wire.codec import to_bytes
        now = now or time.time_ns()
        self.out.rawfin.extend(res.transitions)
        self.out.anomalies.extend(res.anomalies)
        retrans = {id(s) for s in res.retransmissions}
        for seg in res.segments:
            note = "retransmission" if id(seg) in retrans else ""
            rule = next((r for r in self.rules if r.direction == "out" and r.applies(seg, self)), None)
            if rule is not None:
                self._log("rawfin → kernel", seg, now, f"DROPPED ({rule.label})")
                continue
            if seg.fin:
                self.fin_at.setdefault((self.kernel, self.local), time.time_ns())
            raw = to_bytes(seg)
            self._capture(raw, now)
            self._log("rawfin → kernel", seg, now, note)
            self.tun.write(raw)

    def _read_tun_and_trace(self) -> None:
        """Take every packet waiting at the TUN device, then what the tracepoint has written."""
        while True:
            raw = self.tun.read()
            if raw is None:
                break
            self._from_kernel(raw, time.time_ns())
        if self.tracer is not None:
            self._kernel_events(self.tracer.read())

    def _own_segment(self, raw: bytes, now: int) -> Segment | None:
        """A packet from the TUN device: the segment if it is for rawfin's socket (captured), else None."""
        from rawfin.wire.codec import from_bytes
        from rawfin.core.errors import DecodeError
        try:
            seg = from_bytes(raw, time_ns=now)
        except DecodeError:
            return None
        if seg.dst != self.local[0] or seg.dport != self.local[1]:
            return None
        self._capture(raw, now)
        return seg

    def _from_kernel(self, raw: bytes, now: int) -> None:
        seg = self._own_segment(raw, now)
        if seg is None:
            return
        key = (int(seg.flags), seg.seq, seg.ack, seg.data_len)
        sent = self._kernel_segs.setdefault(key, [])
        sent.append(now)
        note = ""
        if len(sent) > 1 and (seg.fin or seg.syn or seg.data_len):
            first = sent[0]
            note = f"retransmission #{len(sent) - 1}, {(now - first) / 1e9:.3f} s after the first"
            gap = (now - sent[-2]) / 1e9
            self.out.retransmissions.append(
                (now, f"kernel sent {seg.describe(self._bases_of(seg))} again {gap:.3f} s after the previous copy "
                      f"({(now - first) / 1e9:.3f} s after the first)"))
        elif len(sent) > 1:
            note = "the same ACK again"
        rule = next((r for r in self.rules if r.direction == "in" and r.applies(seg, self)), None)
        if rule is not None:
            self._log("kernel → rawfin", seg, now, f"DROPPED ({rule.label})")
            return
        self._log("kernel → rawfin", seg, now, note)
        self.apply(self.ep.receive(seg, now), now)

    def _kernel_events(self, evs) -> None:
        if self.interp is None:
            return
        mine = [e for e in evs if self._is_mine(e)]
        self.out.kernel_retransmits.extend(
            (e.time_ns, f"tracepoint tcp:tcp_retransmit_skb in {e.new}") for e in mine if e.kind == "retransmit")
        for tr in self.interp.feed(mine):
            self.out.kernel.append(tr)
        # an orphan handed off in FIN_WAIT2 whose peer's FIN has gone out: ask /proc/net/tcp
        for key in list(self.interp.orphans):
            fin = self.fin_at.get(key)
            if fin is not None and time.time_ns() - fin > 5 * MS:
                tr = self.interp.orphan_reached_time_wait(key[0], key[1], fin, read=self.ns.proc_net)
                if tr is not None:
                    self.out.kernel.append(tr)

    def _is_mine(self, ev) -> bool:
        """Whether a tracepoint event belongs to this run's connection."""
        return ev.local == self.kernel and ev.remote == self.local

    # -- the loop ----------------------------------------------------------------------
    def pump(self, timeout: float = 0.05) -> None:
        now = time.time_ns()
        d = self.ep.next_deadline()
        t = timeout
        if d is not None:
            t = max(0.0, min(t, (d - now) / 1e9))
        fds = [self.tun.fileno()] + ([self.tracer.fileno()] if self.tracer else [])
        select.select(fds, [], [], t)
        self._read_tun_and_trace()
        now = time.time_ns()
        d = self.ep.next_deadline()
        if d is not None and d <= now:
            self.apply(self.ep.handle_timer(now), now)

    def settle(self, seconds: float = 0.05) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.pump(end - time.monotonic())

    def check(self, what: str, ok: bool | None, detail: str = "") -> None:
        self.out.checks.append(Check(what, ok, detail))
