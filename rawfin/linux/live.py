"""``rawfin live``'s driver: capture an interface, run the segments through the lane, report as it happens.

Frames come from the kernel's packet ring (:class:`rawfin.linux.ring.PacketRing`:
``TPACKET_V3`` over ``AF_PACKET``, as libpcap reads it, ``SOCK_DGRAM`` so a frame
starts at its IP header whatever the link; ``-i any`` for every interface), stamped by
the kernel (CLOCK_REALTIME). They go through the compiled lane with the Python
observer for what the lane hands over, exactly as ``rawfin analyze`` runs a file
(:class:`rawfin.capture.engine.Stream`; the Python observer alone where the lane is
not built), with the final-ACK hold at 0: each transition is reported the moment it
happens. When no frame comes, capture time still advances with the clock, so
TIME_WAIT's 2MSL ends on time. The kernel's drop counters are read as tcpdump reads
them and reported. The capture filter is tcpdump's language, compiled to BPF by libpcap
(rawfin.wire.bpf) and runs in the kernel on the socket; without libpcap only the default ``tcp`` works.

With ``kernel_truth`` a :class:`rawfin.linux.kernel.Tracer` records the kernel's
own state changes; they are matched to the wire-inferred transitions of the
same endpoint (same target state, in order) and reported with an agreement
verdict. Kernel events are held for :data:`HOLD_NS` before they are
interpreted, so that the frames that caused them have been read first.
"""

from __future__ import annotations

import json
import signal
import struct
import threading
import time
from dataclasses import dataclass
from typing import Callable

from rawfin.core.segment import Segment

LINKTYPE_RAW = 101
LINKTYPE_LINUX_SLL2 = 276
HOLD_NS = 200_000_000    # kernel events wait this long for the frames that caused them (the ring hands a
                         # block over within its 50 ms timeout)




# -- the capture filter ----------------------------------------------------------

def compile_filter(expr: str) -> bytes | None:
    """The kernel-format BPF program for ``expr`` on raw IP frames (what an AF_PACKET/SOCK_DGRAM
    socket sees), compiled by libpcap (rawfin.wire.bpf); None when ``expr`` is plain ``tcp`` and
    libpcap is missing (only TCP segments are decoded anyway). Any other expression without
    libpcap, or one libpcap rejects, is a UsageError saying which."""
    from rawfin.wire import bpf

    if not bpf.available() and expr.strip() == "tcp":
        return None
    bpf.require("-f/--filter")
    return bpf.compile_insns(expr, LINKTYPE_RAW)


# -- agreement between the wire and the kernel ---------------------------------------

@dataclass
class _Item:
    rec: dict
    match: "_Item | None" = None


class Agreement:
    """Pairs wire-inferred transitions with kernel transitions, per endpoint, in order."""

    def __init__(self) -> None:
        self.wire: dict[tuple, list[_Item]] = {}
        self.kernel: dict[tuple, list[_Item]] = {}

    @staticmethod
    def _key(rec: dict) -> tuple:
        return (rec["endpoint"], rec["peer"])

    def _pair(self, mine: list[_Item], theirs: list[_Item], item: _Item) -> _Item | None:
        last = max((i for i, it in enumerate(theirs) if it.match is not None), default=-1)
        for it in theirs[last + 1:]:
            if it.match is None and it.rec["to"] == item.rec["to"]:
                it.match = item
                item.match = it
                return it
        return None

    def add_wire(self, rec: dict) -> _Item:
        item = _Item(rec)
        k = self._key(rec)
        self.wire.setdefault(k, []).append(item)
        self._pair(self.wire[k], self.kernel.get(k, []), item)
        return item

    def add_kernel(self, rec: dict) -> _Item:
        item = _Item(rec)
        k = self._key(rec)
        self.kernel.setdefault(k, []).append(item)
        self._pair(self.kernel[k], self.wire.get(k, []), item)
        return item

    def rows(self, endpoints: set[str] | None = None) -> list[dict]:
        """Side by side, in time order: {time, endpoint, wire, kernel, agree, note}."""
        out = []
        seen = set()
        for k in sorted(set(self.wire) | set(self.kernel)):
            if endpoints is not None and k[0] not in endpoints:
                continue
            for it in self.wire.get(k, []):
                m = it.match
                seen.add(id(it))
                if m is not None:
                    seen.add(id(m))
                out.append({"time": it.rec["time"], "endpoint": k[0],
                            "wire": f"{it.rec['from']} → {it.rec['to']}",
                            "kernel": f"{m.rec['from']} → {m.rec['to']}" if m else "",
                            "agree": "yes" if m else "wire only",
                            "note": (m.rec.get("kernel", "") + ("; " + m.rec["note"] if m.rec.get("note") else ""))
                            if m else ""})
            for it in self.kernel.get(k, []):
                if id(it) in seen:
                    continue
                handoff = it.rec["from"] == it.rec["to"]
                out.append({"time": it.rec["time"], "endpoint": k[0], "wire": "",
                            "kernel": f"{it.rec['from']} → {it.rec['to']}",
                            "agree": "-" if handoff else "kernel only",
                            "note": it.rec.get("kernel", "") + ("; " + it.rec["note"] if it.rec.get("note") else "")})
        out.sort(key=lambda r: (r["time"] or 0))
        return out


# -- the session --------------------------------------------------------------------

MAX_GAPS = 100         # the places of drops listed in the stats record
LAG_NS = 100_000_000   # capture time advances to the clock minus this (more than the ring's block timeout):
                       # an earlier frame has surely been handed over by then


class Live:
    """One capture session.

    ``emit(rec)`` receives every record as a dict the moment it happens: the observer's
    ``transition``/``anomaly``/``connection`` records, ``kernel`` records with kernel
    truth (a kernel transition with ``agree``), and a ``stats`` record at the end.
    ``raw(bytes)``, when given, receives the observer's records as JSON lines instead, the
    lane's own bytes (not with kernel truth, which needs the dicts). ``on_drops(stats)``
    is called while capturing when the kernel's drop count has grown. ``buffer_kib``: the
    ring's size (tcpdump's ``-B``). ``flush()`` is called after each batch of records
    (output is written promptly, not line by line).

    ``stream(write)`` makes what follows the connections: an object with ``feed(linktype,
    data, orig_len, frame, time_ns)``, ``tick(now_ns)``, ``flush()`` and ``finish()``
    (returning counts: ``tcp``, ``connections``) that writes its records as JSON lines
    through ``write`` -- :class:`rawfin.capture.engine.Stream`, the compiled lane with
    the final-ACK hold at 0 (``rawfin.commands.live.open_live`` puts the two together).
    """

    def __init__(self, *, stream: Callable[[Callable[[bytes], object]], object], interface: str = "lo",
                 bpf: str | None = "tcp", kernel_truth: bool = False, write: str | None = None,
                 emit: Callable[[dict], None] | None = None, raw: Callable[[bytes], object] | None = None,
                 buffer_kib: int | None = None, on_drops: Callable[[dict], None] | None = None,
                 flush: Callable[[], None] | None = None) -> None:
        from rawfin.linux.ring import DEFAULT_BUFFER_KIB, PacketRing

        self.interface = interface
        self.emit = emit or (lambda rec: None)
        self.raw = None if kernel_truth else raw
        self.on_drops = on_drops
        self.flush = flush or (lambda: None)
        self.stop_event = threading.Event()
        self.stopped_by: str | None = None      # "Ctrl-C" or "SIGTERM"
        self.frames = 0
        self.segments = 0                       # counted as they come only when needed (count, filter)
        self.start_ns = time.time_ns()
        self.agreement = Agreement() if kernel_truth else None
        self.conns: dict[tuple, int] = {}          # (local, remote) both ways -> conn id
        self.fin_at: dict[tuple, int] = {}         # (receiver, sender) -> time the sender's FIN was seen
        self.tracer = None
        self.interp = None
        self._held: list = []
        self.kernel_records: list[dict] = []
        self.wire_records: list[dict] = []
        self.writer = None
        self.ring = None
        self.stream = None
        self.dropped = 0                        # the kernel's drops, as last read
        self.gaps = 0                           # places in the capture where frames were dropped
        self.gap_list: list[dict] = []
        self.count_reached = False
        self._signals: dict = {}
        try:
            if kernel_truth:
                from rawfin.linux.kernel import Binder, Interpreter, Tracer
                self.binder = Binder()
                self.tracer = Tracer()
                self.tracer.start()
                self.interp = Interpreter(peer_fin_seen=self._peer_fin_seen)
            program, self.filter_how = None, "none"
            if bpf:
                program = compile_filter(bpf)
                self.filter_how = "bpf (libpcap), in the kernel" if program is not None else \
                    "none: libpcap is not installed; TCP segments only"
            kib = DEFAULT_BUFFER_KIB if buffer_kib is None else buffer_kib
            self.ring = PacketRing(interface, program=program, buffer_bytes=kib * 1024)
            self.stream = stream(self._chunk)
            if write:
                from rawfin.wire.pcapio import PcapWriter
                self.writer = PcapWriter(write, linktype=LINKTYPE_LINUX_SLL2 if self.ring.any else LINKTYPE_RAW,
                                         nanosecond=True)
        except BaseException:
            self._cleanup(abort=True)
            raise

    def stop(self) -> None:
        self.stop_event.set()

    # -- signals: Ctrl-C and SIGTERM only ask the loop to stop, so everything seen is written
    def _catch_signals(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return

        def on_signal(signum, frame):
            if self.stopped_by is None:
                self.stopped_by = "Ctrl-C" if signum == signal.SIGINT else "SIGTERM"
            self.stop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            # a shell's background job starts with SIGINT ignored: it stays ignored, SIGTERM still works
            if signal.getsignal(sig) is not signal.SIG_IGN:
                self._signals[sig] = signal.signal(sig, on_signal)

    def _restore_signals(self) -> None:
        for sig, handler in self._signals.items():
            signal.signal(sig, handler)
        self._signals = {}

    # -- wire
    def _peer_fin_seen(self, local, remote, time_ns: int) -> bool:
        t = self.fin_at.get((local, remote))
        return t is not None and t <= time_ns + 1000   # the trace clock shows microseconds

    def _chunk(self, data: bytes) -> None:
        """JSON lines from the lane (or the Python observer): to ``raw`` as they are, or as dicts."""
        if self.raw is not None:
            self.raw(data)
        else:
            # one JSON line per record, none with a raw newline inside: the batch is read as one array
            for rec in json.loads("[" + data.decode().rstrip("\n").replace("\n", ",") + "]"):
                self._record(rec)
        self.flush()

    def _record(self, rec: dict) -> None:
        if rec["type"] == "transition":
            self.wire_records.append(rec)
            if self.agreement is not None:
                a, b = _split(rec["endpoint"]), _split(rec["peer"])
                self.conns[(a, b)] = self.conns[(b, a)] = rec["conn"]
                self.agreement.add_wire(rec)
        self.emit(rec)

    def _look(self, data, orig_len: int, ts: int) -> None:
        """The slow path, one frame decoded in Python: the FIN times kernel truth needs, the
        count of segments --count needs."""
        from rawfin.wire.decode import decode

        seg = decode(LINKTYPE_RAW, bytes(data), orig_len, self.frames, ts)
        if seg.__class__ is not Segment:
            return
        self.segments += 1
        if seg.fin:
            a, b = (seg.src, seg.sport), (seg.dst, seg.dport)
            if (b, a) not in self.fin_at:
                self.fin_at[(b, a)] = ts

    def _drain(self, count: int | None) -> bool:
        """Read every block the ring has handed over; False once ``count`` segments are in."""
        ring, feed, writer = self.ring, self.stream.feed, self.writer
        slow = self.tracer is not None or count is not None
        sll2 = writer is not None and ring.any
        pack = struct.Struct(">HHIHBB8s").pack
        for off, _n, losing in ring.blocks():
            if losing:
                self._note_drops()
            for data, orig_len, ts, proto, ifindex, pkttype, hatype, addr in ring.frames(off):
                self.frames += 1
                if slow:
                    self._look(data, orig_len, ts)
                if writer is not None:
                    if sll2:    # tcpdump -i any's link type: the cooked header from the sockaddr_ll
                        writer.write(pack(proto, 0, ifindex, hatype, pkttype, len(addr), addr) + bytes(data), ts,
                                     orig_len + 20)
                    else:
                        writer.write(data, ts, orig_len)
                feed(LINKTYPE_RAW, data, orig_len, self.frames, ts)
                if count is not None and self.segments >= count:
                    self.stream.flush()
                    self.count_reached = True
                    return False
            self.stream.flush()
        return True

    def _note_drops(self) -> None:
        """The kernel dropped frames just before the next one (the ring was full): how many,
        and where in the capture, for the stats record and the user."""
        st = self.ring.stats()
        new = st["drops"] - self.dropped
        if new <= 0:
            return
        self.dropped = st["drops"]
        self.gaps += 1
        if len(self.gap_list) < MAX_GAPS:
            self.gap_list.append({"before_frame": self.frames + 1, "dropped": new})
        if self.on_drops is not None:
            self.on_drops({**st, "before_frame": self.frames + 1, "new": new})

    # -- kernel
    def _kernel_events(self, evs: list) -> None:
        self._held.extend(self.binder.feed(evs))

    def _process_kernel(self, final: bool = False) -> None:
        if self.interp is None:
            return
        now = time.time_ns()
        cut = len(self._held) if final else 0
        if not final:
            while cut < len(self._held) and self._held[cut].time_ns <= now - HOLD_NS:
                cut += 1
        if cut == 0:
            return
        batch, self._held = self._held[:cut], self._held[cut:]
        watched = [e for e in batch if (e.local, e.remote) in self.conns]
        for tr in self.interp.feed(watched):
            self._kernel_transition(tr)

    def _kernel_transition(self, tr) -> None:
        rec = tr.record(None)
        loc = _split(tr.endpoint)
        rem = _split(tr.peer)
        rec["conn"] = self.conns.get((loc, rem))
        item = self.agreement.add_kernel(rec)
        # a hand-off inside the kernel (same state before and after) is no transition to agree with
        rec["agree"] = None if rec["from"] == rec["to"] else item.match is not None
        if item.match is not None:
            rec["wire_frame"] = item.match.rec.get("frame")
        self.kernel_records.append(rec)
        self.emit(rec)

    def _orphans(self, final: bool = False) -> None:
        """An orphan handed off in FIN_WAIT2 whose peer's FIN has arrived: ask /proc/net/tcp."""
        now = time.time_ns()
        for (local, remote) in list(self.interp.orphans):
            fin = self.fin_at.get((local, remote))
            if fin is not None and (final or now - fin > 20_000_000):
                tr = self.interp.orphan_reached_time_wait(local, remote, fin)
                if tr is not None:
                    self._kernel_transition(tr)

    # -- the loop
    def run(self, *, count: int | None = None, duration: float | None = None) -> dict:
        """Capture until ``count`` segments, ``duration`` seconds, :meth:`stop`, Ctrl-C or SIGTERM."""
        deadline = None if duration is None else time.monotonic() + duration
        interrupted = False
        ring, stream = self.ring, self.stream
        last_tick = 0
        self._catch_signals()
        try:
            while not self.stop_event.is_set():
                timeout = 50
                now_m = time.monotonic()
                if deadline is not None:
                    left = deadline - now_m
                    if left <= 0:
                        break
                    timeout = min(timeout, max(1, int(left * 1000)))
                ring.wait(timeout)
                if self.tracer is not None:
                    self._kernel_events(self.tracer.read())
                caught_up = time.time_ns()
                if not self._drain(count):
                    break
                # time passes with no segment too: TIME_WAIT's 2MSL ends on the clock the frames carry
                # (up to the moment every earlier frame has surely been handed over)
                if caught_up - LAG_NS > last_tick:
                    last_tick = caught_up - LAG_NS
                    stream.tick(last_tick)
                if self.tracer is not None:
                    self._process_kernel()
                    self._orphans()
                    self.flush()
        except KeyboardInterrupt:
            interrupted = True
        try:
            # a second Ctrl-C or SIGTERM while the end is written only asks again
            return self.finish(interrupted=interrupted or self.stopped_by == "Ctrl-C")
        finally:
            self._restore_signals()

    def finish(self, interrupted: bool = False) -> dict:
        """The end: the frames still in the ring, the kernel's last words, every connection
        left, the ``stats`` record; the capture file completed."""
        from rawfin.linux.ring import DEFAULT_TIMEOUT_MS

        try:
            if not self.count_reached:
                # the block the kernel is filling is handed over within its timeout
                time.sleep(2 * DEFAULT_TIMEOUT_MS / 1000)
                self._drain(None)
            if self.tracer is not None:
                # the kernel may still be writing about the last frames
                time.sleep(0.02)
                self._kernel_events(self.tracer.drain(settle=0.05))
                self._process_kernel(final=True)
                self._held.extend(self.binder.flush())
                self._process_kernel(final=True)
                self._orphans(final=True)
            counts = self.stream.finish()
            before = self.dropped
            st = self.ring.stats()
            if st["drops"] > before:        # dropped after the last frame read: a gap at the end
                self.gaps += 1
                if len(self.gap_list) < MAX_GAPS:
                    self.gap_list.append({"before_frame": self.frames + 1, "dropped": st["drops"] - before})
            self.dropped = st["drops"]
            result = {"frames": self.frames, "segments": counts["tcp"],
                      "connections": counts["connections"], "interrupted": interrupted,
                      "stopped_by": self.stopped_by, "dropped": st["drops"], "ring_full": st["freezes"],
                      "buffer_kib": self.ring.buffer_bytes // 1024, "ring_note": self.ring.note,
                      "gaps": self.gaps, "drops_at": self.gap_list,
                      "timeout": counts.get("by_close", {}).get("timeout", 0),
                      "evicted": counts.get("by_close", {}).get("evicted", 0),
                      "kernel_transitions": len(self.kernel_records),
                      "agree": sum(1 for r in self.kernel_records if r.get("agree"))}
            self.emit({"type": "stats", "interface": self.interface, "time": round(time.time_ns() / 1e9, 6),
                            "received": result["frames"], "segments": result["segments"],
                            "dropped": result["dropped"], "ring_full": result["ring_full"],
                            "buffer_kib": result["buffer_kib"], "connections": result["connections"],
                            "timeout": result["timeout"], "evicted": result["evicted"],
                            "gaps": self.gaps, "drops_at": self.gap_list})
        finally:
            self._cleanup(abort=False)
        return result

    def _cleanup(self, abort: bool) -> None:
        if self.ring is not None:
            self.ring.close()
            self.ring = None
        if self.tracer is not None:
            self.tracer.stop()
        if self.writer is not None:
            (self.writer.abort if abort else self.writer.close)()
            self.writer = None


def _split(ep: str) -> tuple[str, int]:
    host, _, port = ep.rpartition(":")
    return host.strip("[]"), int(port)
