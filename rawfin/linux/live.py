"""``rawfin live``'s driver: sniff an interface, feed the observer, report as it happens.

The sniffer is an ``AF_PACKET``/``SOCK_DGRAM`` socket (frames arrive as raw
IP packets, whatever the link), stamped by the kernel (``SO_TIMESTAMPNS``,
CLOCK_REALTIME). On a loopback device each packet is seen twice (going out
and coming in); the outgoing copy is dropped, as libpcap does. The capture
filter is tcpdump's language, compiled to BPF by libpcap (rawfin.wire.bpf) and
run in the kernel on the socket; without libpcap only the default ``tcp`` works.

With ``kernel_truth`` a :class:`rawfin.linux.kernel.Tracer` records the kernel's
own state changes; they are matched to the wire-inferred transitions of the
same endpoint (same target state, in order) and reported with an agreement
verdict. Kernel events are held for :data:`HOLD_NS` before they are
interpreted, so that the frames that caused them have been read first.
"""

from __future__ import annotations

import os
import select
import signal
import socket
import struct
import threading
import time
from dataclasses import dataclass
from typing import Callable

from rawfin.core.errors import PrivilegeError, UsageError
from rawfin.core.segment import Segment

ETH_P_ALL = 0x0003
SO_TIMESTAMPNS = 35
SO_ATTACH_FILTER = 26
PACKET_OUTGOING = 4
ARPHRD_LOOPBACK = 772
LINKTYPE_RAW = 101
SNAPLEN = 262144
HOLD_NS = 60_000_000     # kernel events wait this long for the frames that caused them




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


class _Fprog:
    """Keeps the BPF instructions alive while the kernel copies them."""

    def __init__(self, insns: bytes) -> None:
        import ctypes
        self.buf = ctypes.create_string_buffer(insns, len(insns))
        self.packed = struct.pack("HL", len(insns) // 8, ctypes.addressof(self.buf))


# -- the sniffer --------------------------------------------------------------------

def _iface_type(iface: str) -> int | None:
    try:
        with open(f"/sys/class/net/{iface}/type") as fh:
            return int(fh.read().strip())
    except (OSError, ValueError):
        return None


class Sniffer:
    """An AF_PACKET socket on one interface yielding (raw IP bytes, orig_len, time_ns)."""

    def __init__(self, iface: str = "lo", bpf: str | None = "tcp") -> None:
        self.iface = iface
        if not os.path.exists(f"/sys/class/net/{iface}"):
            raise UsageError(f"no interface {iface!r} (see `ip link`)")
        self.loopback = _iface_type(iface) == ARPHRD_LOOPBACK
        try:
            s = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(ETH_P_ALL))
        except PermissionError:
            raise PrivilegeError(f"capturing on {iface} needs root or CAP_NET_RAW (an AF_PACKET socket); "
                                 "run with sudo or `setcap cap_net_raw+ep` on the Python interpreter") from None
        self.sock = s
        self.filter_how = "none"
        try:
            if bpf:
                insns = compile_filter(bpf)
                if insns is not None:
                    fp = _Fprog(insns)
                    s.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fp.packed)
                    self.filter_how = "bpf (libpcap), in the kernel"
                else:
                    self.filter_how = "none: libpcap is not installed; TCP segments only"
            s.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
            try:
                s.bind((iface, ETH_P_ALL))
            except OSError as e:
                raise UsageError(f"cannot capture on {iface!r}: {e.strerror}") from None
            s.setblocking(False)
            # drop what arrived before the filter was attached
            while True:
                try:
                    s.recv(SNAPLEN)
                except BlockingIOError:
                    break
        except BaseException:
            s.close()
            raise
        # Kernel timestamping is switched on by a deferred job: give it a moment,
        # or the first frames carry the time they were read instead of their arrival.
        time.sleep(0.05)

    def fileno(self) -> int:
        return self.sock.fileno()

    def read(self, limit: int = 10000) -> list[tuple[bytes, int, int]]:
        out = []
        s = self.sock
        for _ in range(limit):
            try:
                data, anc, flags, addr = s.recvmsg(SNAPLEN, 64, socket.MSG_TRUNC)
            except (BlockingIOError, InterruptedError):
                break
            if self.loopback and addr[2] == PACKET_OUTGOING:
                continue
            if addr[1] not in (0x0800, 0x86DD):
                continue
            ts = None
            for level, typ, d in anc:
                if level == socket.SOL_SOCKET and typ == SO_TIMESTAMPNS and len(d) >= 16:
                    sec, nsec = struct.unpack("qq", d[:16])
                    ts = sec * 1_000_000_000 + nsec
            if ts is None:
                ts = time.time_ns()
            out.append((data, len(data) if not flags & socket.MSG_TRUNC else max(len(data), SNAPLEN), ts))
        return out

    def close(self) -> None:
        self.sock.close()


def _decoder():
    """The fast decoder when it is there, else the Scapy codec."""
    try:
        from rawfin.wire.decode import decode as fast

        def dec(data: bytes, orig_len: int, frame: int, time_ns: int):
            r = fast(LINKTYPE_RAW, data, orig_len, frame, time_ns)
            return r if isinstance(r, Segment) else None
        return dec
    except ImportError:
        from rawfin.wire.codec import from_bytes
        from rawfin.core.errors import DecodeError

        def dec(data: bytes, orig_len: int, frame: int, time_ns: int):
            try:
                return from_bytes(data, frame=frame, time_ns=time_ns)
            except DecodeError:
                return None
        return dec


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

class Live:
    """One capture session. ``emit(rec)`` receives every record as it happens:
    the observer's ``transition``/``anomaly``/``connection`` records and, with
    kernel truth, ``kernel`` records (a kernel transition with ``agree``)."""

    def __init__(self, *, interface: str = "lo", bpf: str | None = "tcp", msl_ns: int = 30 * 10**9,
                 kernel_truth: bool = False, write: str | None = None,
                 emit: Callable[[dict], None] | None = None) -> None:
        from rawfin.core.observer import Observer

        self.interface = interface
        self.emit = emit or (lambda rec: None)
        self.stop_event = threading.Event()
        self.interrupted = False
        self.obs = Observer(msl_ns=msl_ns, final_ack_hold_ns=0)   # each transition the moment it happens
        self.frames = 0
        self.segments = 0
        self.skipped = 0
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
        self.sniffer = None
        self._decode = _decoder()
        try:
            if kernel_truth:
                from rawfin.linux.kernel import Binder, Interpreter, Tracer
                self.binder = Binder()
                self.tracer = Tracer()
                self.tracer.start()
                self.interp = Interpreter(peer_fin_seen=self._peer_fin_seen)
            self.sniffer = Sniffer(interface, bpf)
            self.filter_how = self.sniffer.filter_how
            if write:
                from rawfin.wire.pcapio import PcapWriter
                self.writer = PcapWriter(write, linktype=LINKTYPE_RAW, nanosecond=True)
        except BaseException:
            self._cleanup(abort=True)
            raise


    def stop(self) -> None:
        self.stop_event.set()

    # -- wire
    def _peer_fin_seen(self, local, remote, time_ns: int) -> bool:
        t = self.fin_at.get((local, remote))
        return t is not None and t <= time_ns + 1000   # the trace clock shows microseconds

    def _on_frame(self, data: bytes, orig_len: int, ts: int) -> None:
        self.frames += 1
        seg = self._decode(data, orig_len, self.frames, ts)
        if seg is None:
            self.skipped += 1
            return
        self.segments += 1
        if self.writer is not None:
            self.writer.write(data, ts, orig_len)
        a, b = (seg.src, seg.sport), (seg.dst, seg.dport)
        if seg.fin and (b, a) not in self.fin_at:
            self.fin_at[(b, a)] = ts
        for rec in self.obs.feed(seg):
            self._record(rec)
        conn = self.obs.active.get(self.obs.key_of(seg))
        if conn is not None:
            self.conns[(a, b)] = self.conns[(b, a)] = conn.id

    def _record(self, rec: dict) -> None:
        if rec["type"] == "transition":
            self.wire_records.append(rec)
            if self.agreement is not None:
                self.agreement.add_wire(rec)
        self.emit(rec)

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
        # Ctrl-C and SIGTERM only ask the loop to stop, so no frame is cut in half in the capture
        saved = {}
        if threading.current_thread() is threading.main_thread():
            def on_signal(signum, frame):
                self.interrupted = self.interrupted or signum == signal.SIGINT
                self.stop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                if signal.getsignal(sig) is not signal.SIG_IGN:
                    saved[sig] = signal.signal(sig, on_signal)
        try:
            fds = [self.sniffer.fileno()] + ([self.tracer.fileno()] if self.tracer else [])
            while not self.stop_event.is_set():
                if count is not None and self.segments >= count:
                    break
                timeout = 0.05
                if deadline is not None:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    timeout = min(timeout, left)
                try:
                    ready, _, _ = select.select(fds, [], [], timeout)
                except InterruptedError:
                    continue
                if self.tracer is not None:
                    self._kernel_events(self.tracer.read())
                for data, orig_len, ts in self.sniffer.read(limit=(count - self.segments) if count else 10000):
                    self._on_frame(data, orig_len, ts)
                    if count is not None and self.segments >= count:
                        break
                # time passes with no segment too: TIME_WAIT's 2MSL ends on the clock the frames carry
                for rec in self.obs.tick(time.time_ns()):
                    self._record(rec)
                if self.tracer is not None:
                    self._process_kernel()
                    self._orphans()
        except KeyboardInterrupt:
            interrupted = True
        finally:
            for sig, handler in saved.items():
                signal.signal(sig, handler)
        return self.finish(interrupted=interrupted or self.interrupted)

    def finish(self, interrupted: bool = False) -> dict:
        try:
            if self.tracer is not None:
                # the kernel may still be writing about the last frames
                time.sleep(0.02)
                self._kernel_events(self.tracer.drain(settle=0.05))
                self._process_kernel(final=True)
                self._held.extend(self.binder.flush())
                self._process_kernel(final=True)
                self._orphans(final=True)
            for rec in self.obs.finish():
                self._record(rec)
        finally:
            self._cleanup(abort=False)
        return {"frames": self.frames, "segments": self.segments, "skipped": self.skipped,
                "connections": self.obs.connections_done, "interrupted": interrupted,
                "kernel_transitions": len(self.kernel_records),
                "agree": sum(1 for r in self.kernel_records if r.get("agree"))}

    def _cleanup(self, abort: bool) -> None:
        if self.sniffer is not None:
            self.sniffer.close()
            self.sniffer = None
        if self.tracer is not None:
            self.tracer.stop()
        if self.writer is not None:
            (self.writer.abort if abort else self.writer.close)()
            self.writer = None


def _split(ep: str) -> tuple[str, int]:
    host, _, port = ep.rpartition(":")
    return host.strip("[]"), int(port)
