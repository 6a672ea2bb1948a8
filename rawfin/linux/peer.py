"""``rawfin peer``: rawfin's endpoint state machine as the remote peer of a real Linux socket.

rawfin makes a network namespace of its own with a TUN device in it; the
kernel's socket lives in that namespace at 192.0.2.1:80 (a documentation
address), and rawfin's :class:`~rawfin.core.endpoint.Endpoint` plays 192.0.2.2 on
the far side of the device: every packet the kernel sends is read from the
TUN device and handed to the endpoint; every segment the endpoint returns is
written back (through the scenario's drop rules). Nothing leaves the
namespace. The kernel's own state changes come from the tracepoint
(:mod:`rawfin.linux.kernel`), rawfin's from its state machine.

The capture (``--write``) is taken at the TUN device, the kernel's side of the
link: a segment of rawfin's that a drop rule loses never appears in it; a
segment of the kernel's that rawfin drops does.

The kernel's timers are its own (RTO, delayed ACK): the driver waits for
what the scenario expects with a bound, never for a fixed time.
"""

from __future__ import annotations

import errno
import random
import select
import socket
import time
from dataclasses import dataclass, field
from typing import Callable

from rawfin.core.units import MS, SEC
from rawfin.core.endpoint import Config, Endpoint
from rawfin.core.errors import RawfinError, UsageError
from rawfin.core.events import Result
from rawfin.core.segment import Segment
from rawfin.core.states import State
from rawfin.sim.scenarios import Check

KERNEL = ("192.0.2.1", 80)
RAWFIN_IP = "192.0.2.2"


class PeerTimeout(RawfinError):
    """The kernel did not do what the scenario waits for, within its bound."""

    exit_code = 1


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
    """One scenario run: namespace, TUN device, kernel sockets, rawfin's endpoint, the tracer."""

    def __init__(self, *, iss: int = 1000, rto_ns: int = 300 * MS, msl_ns: int = 30 * SEC,
                 port: int | None = None, write: str | None = None, kernel_truth: bool = True,
                 kernel: tuple[str, int] = KERNEL) -> None:
        if port is None:
            # The tracepoint sees every namespace: a port of this run's own keeps another
            # rawfin peer running at the same time (same addresses) out of this run's story.
            port = random.randrange(49152, 65536)
        self.iss = iss
        self.kernel = kernel                 # the kernel socket's address (KERNEL, or a client's own)
        self.local = (RAWFIN_IP, port)
        self.cfg = Config(rto_ns=rto_ns, msl_ns=msl_ns)
        self.write_path = write
        self.want_trace = kernel_truth
        self.rules: list[Rule] = []
        self.held: list[tuple[int, bytes, Segment]] = []
        self.holding = False
        self.ns = self.tun = self.tracer = self.interp = self.writer = None
        self.listener: socket.socket | None = None
        self.ksock: socket.socket | None = None
        self.kernel_data = b""
        self.kernel_eof = False
        self.kernel_error: str | None = None
        self.fin_at: dict[tuple, int] = {}
        self.out = Outcome(scenario="", description="")
        self.ep = Endpoint(local=self.local, iss=iss, config=self.cfg)
        self._kernel_segs: dict[tuple, list[int]] = {}   # (flags, seq, ack, len) -> times sent

    # -- lifecycle ---------------------------------------------------------------
    def __enter__(self) -> "PeerRun":
        from rawfin.wire import codec
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
        self.close(ok=exc_type is None or issubclass(exc_type, PeerTimeout))

    def close(self, ok: bool = True) -> None:
        for s in (self.ksock, self.listener):
            if s is not None:
                try:
                    s.close()
                except OSError:
                    pass
        self.ksock = self.listener = None
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
    def kernel_listen(self, reuseaddr: bool = False) -> None:
        with self.ns.inside():
            ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if reuseaddr:
            ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        ls.bind(self.kernel)
        ls.listen(4)
        ls.setblocking(False)
        self.listener = ls

    def kernel_accept(self, timeout: float = 3.0) -> socket.socket:
        def ready():
            try:
                s, _ = self.listener.accept()
            except BlockingIOError:
                return False
            s.setblocking(False)
            self.ksock = s
            return True
        self.wait(ready, timeout, "the kernel to accept the connection")
        return self.ksock

    def kernel_read(self) -> bool:
        """Read what the kernel socket has; True once it has seen EOF or an error."""
        if self.ksock is None:
            return False
        while not self.kernel_eof:
            try:
                b = self.ksock.recv(65536)
            except BlockingIOError:
                return False
            except OSError as e:
                self.kernel_error = errno.errorcode.get(e.errno, str(e.errno))
                self.kernel_eof = True
                return True
            if not b:
                self.kernel_eof = True
            self.kernel_data += b
        return True

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

    def _log(self, direction: str, seg: Segment, now: int, note: str = "") -> None:
        self.out.segments.append(SegLog(time_ns=now, direction=direction, seg=seg, note=note))

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
                (now, f"kernel sent {seg.describe()} again {gap:.3f} s after the previous copy "
                      f"({(now - first) / 1e9:.3f} s after the first)"))
        elif len(sent) > 1:
            note = "the same ACK again"
        if self.holding:
            self.held.append((now, raw, seg))
            self._log("kernel → rawfin", seg, now, (note + "; " if note else "") + "held back")
            return
        rule = next((r for r in self.rules if r.direction == "in" and r.applies(seg, self)), None)
        if rule is not None:
            self._log("kernel → rawfin", seg, now, f"DROPPED ({rule.label})")
            return
        self._log("kernel → rawfin", seg, now, note)
        self.apply(self.ep.receive(seg, now), now)

    def release(self) -> None:
        """Deliver the segments held back, in the order they came."""
        self.holding = False
        held, self.held = self.held, []
        for _, raw, seg in held:
            now = time.time_ns()
            self._log("kernel → rawfin", seg, now, "released")
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

    def wait(self, pred: Callable[[], bool], timeout: float, what: str) -> float:
        """Pump until ``pred()``; the seconds it took. Raises PeerTimeout after ``timeout``."""
        start = time.monotonic()
        end = start + timeout
        while True:
            if pred():
                return time.monotonic() - start
            if time.monotonic() >= end:
                raise PeerTimeout(f"timed out after {timeout:g} s waiting for {what} "
                                    f"(rawfin is in {self.ep.state.name}, the kernel socket in "
                                    f"{self.kernel_state_now() or 'no state'})")
            self.pump(min(0.05, max(0.0, end - time.monotonic())))

    def settle(self, seconds: float = 0.05) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.pump(end - time.monotonic())

    def kernel_reached(self, *states: State, after: int = 0) -> bool:
        return any(k.to in states for k in self.out.kernel[after:])

    def wait_kernel(self, *states: State, timeout: float, what: str, proc: str | None = None) -> float:
        """Wait for the kernel to report reaching one of ``states`` (or, without the tracepoint,
        for /proc/net/tcp to show ``proc``, or the socket to be gone when ``proc`` is "gone")."""
        if self.tracer is not None:
            return self.wait(lambda: self.kernel_reached(*states), timeout, what)
        if proc == "gone":
            return self.wait(lambda: self.kernel_state_now() is None, timeout, what)
        if proc:
            return self.wait(lambda: self.kernel_state_now() == proc, timeout, what)
        return 0.0

    # -- common steps --------------------------------------------------------------------
    def establish(self, reuseaddr: bool = False) -> None:
        self.kernel_listen(reuseaddr)
        self.apply(self.ep.connect(KERNEL, time.time_ns()))
        self.wait(lambda: self.ep.state is State.ESTABLISHED, 5, "the handshake")
        self.kernel_accept()

    def check(self, what: str, ok: bool | None, detail: str = "") -> None:
        self.out.checks.append(Check(what, ok, detail))

    def kernel_path(self) -> list[str]:
        return [k.to.value for k in self.out.kernel]

    def kernel_check(self, what: str, cond: Callable[[list[str]], bool]) -> None:
        if self.tracer is None and self.interp is None:
            self.check(what, None, "no kernel truth: " + self.out.kernel_truth)
            return
        path = self.kernel_path()
        self.check(what, cond(path), "kernel: " + " → ".join(path))


# -- the scenarios --------------------------------------------------------------------

SCENARIOS: dict[str, tuple[str, Callable[[PeerRun], None]]] = {}
BOUND = 10.0     # seconds any single wait may take (the kernel's RTO is its own business)


def scenario(name: str, description: str, **opts):
    def deco(fn):
        SCENARIOS[name] = (description, fn, opts)
        return fn
    return deco


@scenario("lost-final-ack",
          "rawfin closes first and loses its final ACK: the kernel in LAST_ACK retransmits its FIN after its "
          "RTO, rawfin in TIME_WAIT ACKs it again, the kernel reaches CLOSED")
def lost_final_ack(r: PeerRun) -> None:
    r.rules.append(Rule("out", "rawfin's final ACK", lambda s, run: s.pure_ack and run.ep.state is State.TIME_WAIT))
    r.establish()
    r.apply(r.ep.close(time.time_ns()))
    r.wait(r.kernel_read, BOUND, "the kernel to read EOF")
    r.ksock.close()
    r.ksock = None
    fin_sent = time.monotonic()
    r.wait(lambda: r.ep.state is State.TIME_WAIT, BOUND, "the kernel's FIN")
    r.wait(lambda: bool(r.out.retransmissions), BOUND, "the kernel to retransmit its FIN")
    took = time.monotonic() - fin_sent
    r.wait_kernel(State.CLOSED, timeout=BOUND, what="the kernel to reach CLOSED", proc="gone")
    r.settle()
    r.check("rawfin's final ACK was dropped once", r.rules[0].hits == 1)
    re_ack = [t for t in r.out.rawfin if t.from_ is State.TIME_WAIT and t.to is State.TIME_WAIT]
    r.check("rawfin in TIME_WAIT ACKed the retransmitted FIN", bool(re_ack))
    r.check("the kernel retransmitted its FIN", any("FIN" in t for _, t in r.out.retransmissions),
            f"first retransmission {took:.3f} s after the kernel's close()")
    r.kernel_check("the kernel went ESTABLISHED → CLOSE_WAIT → LAST_ACK → CLOSED",
                   lambda p: p[-3:] == ["CLOSE_WAIT", "LAST_ACK", "CLOSED"])
    r.check("rawfin ends in TIME_WAIT", r.ep.state is State.TIME_WAIT)


@scenario("simultaneous-close",
          "rawfin's FIN crosses the kernel's: both sides pass through CLOSING and end in TIME_WAIT")
def simultaneous_close(r: PeerRun) -> None:
    r.establish()
    r.holding = True                       # the kernel's FIN is in flight: rawfin has not seen it
    r.ksock.close()
    r.ksock = None
    r.wait(lambda: any(s.fin for _, _, s in r.held), BOUND, "the kernel's FIN")
    r.apply(r.ep.close(time.time_ns()))    # rawfin's FIN does not acknowledge the kernel's
    r.wait_kernel(State.CLOSING, timeout=BOUND, what="the kernel to enter CLOSING", proc="CLOSING")
    r.release()
    r.wait(lambda: r.ep.state is State.TIME_WAIT, BOUND, "rawfin to reach TIME_WAIT")
    r.wait_kernel(State.TIME_WAIT, timeout=BOUND, what="the kernel to reach TIME_WAIT", proc="TIME_WAIT")
    r.settle()
    r.kernel_check("the kernel went FIN_WAIT_1 → CLOSING → TIME_WAIT",
                   lambda p: p[-3:] == ["FIN_WAIT_1", "CLOSING", "TIME_WAIT"])
    r.check("rawfin went FIN_WAIT_1 → CLOSING → TIME_WAIT",
            [t.to for t in r.out.rawfin][-3:] == [State.FIN_WAIT_1, State.CLOSING, State.TIME_WAIT])
    tw = r.kernel_states().get((KERNEL, r.local))
    r.check("/proc/net/tcp shows the kernel's timewait socket in TIME_WAIT", tw == "TIME_WAIT", f"state {tw}")


@scenario("timewait-refin",
          "the kernel closes first; rawfin loses the kernel's final ACK and retransmits its FIN: "
          "the kernel in TIME_WAIT ACKs it again")
def timewait_refin(r: PeerRun) -> None:
    r.rules.append(Rule("in", "the kernel's final ACK",
                        lambda s, run: s.pure_ack and run.ep.state is State.LAST_ACK))
    r.establish()
    r.ksock.close()
    r.ksock = None
    r.wait(lambda: r.ep.state is State.CLOSE_WAIT, BOUND, "the kernel's FIN")
    r.settle(0.02)
    r.apply(r.ep.close(time.time_ns()))
    r.wait(lambda: r.rules[0].hits >= 1, BOUND, "the kernel's final ACK")
    r.wait(lambda: r.ep.state is State.CLOSED, BOUND, "the kernel to ACK rawfin's retransmitted FIN")
    r.settle()
    r.check("the kernel's final ACK was dropped once", r.rules[0].hits == 1)
    refin = [s for s in r.out.segments if s.direction == "rawfin → kernel" and s.seg.fin
             and s.note == "retransmission"]
    r.check("rawfin retransmitted its FIN", bool(refin))
    acks = [s for s in r.out.segments if s.direction == "kernel → rawfin" and s.seg.pure_ack
            and s.seg.ack == r.ep.snd_nxt]
    r.check("the kernel (TIME_WAIT) ACKed the FIN again", len(acks) >= 2, f"{len(acks)} ACKs of rawfin's FIN")
    r.check("rawfin went LAST_ACK → CLOSED", r.out.rawfin[-1].to is State.CLOSED)
    r.kernel_check("the kernel reached TIME_WAIT", lambda p: "TIME_WAIT" in p)
    tw = r.kernel_states().get((KERNEL, r.local))
    r.check("/proc/net/tcp still shows the kernel's TIME_WAIT", tw == "TIME_WAIT", f"state {tw}")


@scenario("fin-with-data",
          "rawfin's last data rides on its FIN: the kernel delivers the bytes, then EOF, and closes")
def fin_with_data(r: PeerRun) -> None:
    r.establish()
    payload = b"last words before the FIN"
    r.apply(r.ep.close(time.time_ns(), data=payload))
    r.wait(r.kernel_read, BOUND, "the kernel to read the data and EOF")
    r.check("the kernel read the FIN's data, then EOF", r.kernel_data == payload and r.kernel_eof,
            repr(r.kernel_data))
    r.ksock.close()
    r.ksock = None
    r.wait(lambda: r.ep.state is State.TIME_WAIT, BOUND, "rawfin to reach TIME_WAIT")
    r.wait_kernel(State.CLOSED, timeout=BOUND, what="the kernel to reach CLOSED", proc="gone")
    r.settle()
    fin = next(s.seg for s in r.out.segments if s.direction == "rawfin → kernel" and s.seg.fin)
    r.check("rawfin's FIN carried the data", fin.data_len == len(payload), fin.describe())
    r.kernel_check("the kernel went CLOSE_WAIT → LAST_ACK → CLOSED",
                   lambda p: p[-3:] == ["CLOSE_WAIT", "LAST_ACK", "CLOSED"])


@scenario("seq-wraparound",
          "rawfin's FIN sits at sequence number 2**32-1: the kernel's ACK of it is 0",
          iss=2**32 - 2)
def seq_wraparound(r: PeerRun) -> None:
    r.establish()
    r.apply(r.ep.close(time.time_ns()))
    fin = next(s.seg for s in r.out.segments if s.direction == "rawfin → kernel" and s.seg.fin)
    r.wait(r.kernel_read, BOUND, "the kernel to read EOF")
    r.ksock.close()
    r.ksock = None
    r.wait(lambda: r.ep.state is State.TIME_WAIT, BOUND, "rawfin to reach TIME_WAIT")
    r.wait_kernel(State.CLOSED, timeout=BOUND, what="the kernel to reach CLOSED", proc="gone")
    r.settle()
    r.check("rawfin's FIN is at 2**32-1", fin.seq == 2**32 - 1, fin.describe())
    acks = [s.seg.ack for s in r.out.segments if s.direction == "kernel → rawfin" and s.seg.has_ack
            and (s.seg.fin or s.seg.pure_ack)]
    r.check("the kernel acknowledged it with ack=0", 0 in acks, f"kernel acks {sorted(set(acks))}")
    r.kernel_check("the kernel went CLOSE_WAIT → LAST_ACK → CLOSED",
                   lambda p: p[-3:] == ["CLOSE_WAIT", "LAST_ACK", "CLOSED"])


@scenario("rst-in-fin-wait-2",
          "the kernel half-closes (shutdown) and waits in FIN_WAIT_2; rawfin aborts with a RST: "
          "the kernel goes to CLOSED (no TIME_WAIT) and its application sees ECONNRESET")
def rst_in_fin_wait_2(r: PeerRun) -> None:
    r.establish()
    r.ksock.shutdown(socket.SHUT_WR)
    r.wait(lambda: r.ep.state is State.CLOSE_WAIT, BOUND, "the kernel's FIN")
    r.wait_kernel(State.FIN_WAIT_2, timeout=BOUND, what="the kernel to reach FIN_WAIT_2", proc="FIN_WAIT2")
    r.apply(r.ep.abort(time.time_ns()))
    r.wait(r.kernel_read, BOUND, "the kernel application to see the reset")
    r.wait_kernel(State.CLOSED, timeout=BOUND, what="the kernel to reach CLOSED", proc="gone")
    r.settle()
    r.check("the kernel application saw ECONNRESET", r.kernel_error == "ECONNRESET", str(r.kernel_error))
    r.kernel_check("the kernel went FIN_WAIT_1 → FIN_WAIT_2 → CLOSED (reset, not TIME_WAIT)",
                   lambda p: p[-3:] == ["FIN_WAIT_1", "FIN_WAIT_2", "CLOSED"])
    r.check("no TIME_WAIT socket is left", (KERNEL, r.local) not in r.kernel_states())


@scenario("server-active-close",
          "the kernel's server closes first, so TIME_WAIT lands on the server's port: binding it again "
          "without SO_REUSEADDR fails with EADDRINUSE")
def server_active_close(r: PeerRun) -> None:
    # Linux lets a new socket bind over a TIME_WAIT only when both it and the socket that left the
    # TIME_WAIT behind set SO_REUSEADDR (the timewait socket keeps the old socket's flag)
    r.establish(reuseaddr=True)
    r.ksock.close()
    r.ksock = None
    r.wait(lambda: r.ep.state is State.CLOSE_WAIT, BOUND, "the kernel's FIN")
    r.settle(0.02)
    r.apply(r.ep.close(time.time_ns()))
    r.wait(lambda: r.ep.state is State.CLOSED, BOUND, "the kernel's final ACK")
    r.settle()
    tw = r.kernel_states().get((KERNEL, r.local))
    r.kernel_check("the kernel (server) went FIN_WAIT_1 → FIN_WAIT_2 → TIME_WAIT",
                   lambda p: p[-2:] == ["FIN_WAIT_2", "TIME_WAIT"] and "FIN_WAIT_1" in p)
    r.check("/proc/net/tcp: TIME_WAIT on the server's port 80", tw == "TIME_WAIT", f"state {tw}")
    r.listener.close()
    r.listener = None
    for reuse in (False, True):
        with r.ns.inside():
            s = socket.socket()
        try:
            if reuse:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind(KERNEL)
                s.listen()
                got = "bound"
            except OSError as e:
                got = errno.errorcode.get(e.errno, str(e))
        finally:
            s.close()
        if reuse:
            r.check("with SO_REUSEADDR (set by the old server too) the server starts again", got == "bound", got)
        else:
            r.check("restarting the server without SO_REUSEADDR fails with EADDRINUSE", got == "EADDRINUSE", got)


def names() -> list[str]:
    return list(SCENARIOS)


def run_scenario(name: str, *, write: str | None = None, kernel_truth: bool = True) -> Outcome:
    """Run one scenario against the kernel; always leaves no namespace or device behind."""
    if name not in SCENARIOS:
        raise ScenarioUnknown(name)
    description, fn, opts = SCENARIOS[name]
    run = PeerRun(write=write, kernel_truth=kernel_truth, **opts)
    with run:
        run.out.scenario = name
        run.out.description = description
        try:
            fn(run)
        except PeerTimeout as e:
            run.check("the scenario ran to its end", False, str(e))
    return run.out


class ScenarioUnknown(UsageError):

    def __init__(self, name: str) -> None:
        super().__init__(f"no peer scenario {name!r}; scenarios: {', '.join(SCENARIOS)}")

