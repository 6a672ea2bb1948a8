"""``rawfin peer --file F.toml``: a scenario file played against the real Linux stack.

The kernel plays one side of the scenario (``--kernel server``, the default, or
``client``): its application calls (listen/accept, connect, send, close,
shutdown, abort with SO_LINGER 0) are made on a real socket in rawfin's own
network namespace, at the scenario's times, on the wall clock. rawfin's
:class:`~rawfin.core.endpoint.Endpoint` plays the other side, its calls from the
same file, through its state machine. Between them sits the scenario's link:
its one-way delay (each direction) and its fault rules, matched by the
emulator's own code (:class:`~rawfin.sim.emulator.Link`, :class:`~rawfin.sim.emulator.Fault`).
The driver is :class:`~rawfin.linux.peer.PeerRun`, which owns the namespace, the
TUN device and the trace instance and always removes them.

What a real kernel cannot be told, and so is not reproduced:

- its ISN (it picks its own; the file's ``isn`` applies to rawfin's side only);
- its RTO, delayed-ACK and tail-loss-probe timing, and its TIME_WAIT length
  (60 s; ``msl``/``rto`` apply to rawfin's side only); TIME_WAIT expiry is not
  waited for: a side in TIME_WAIT at the end counts for ``final = "CLOSED"``,
  and an expected ``TIME_WAIT CLOSED`` by expiry is reported as not judged;
- ``fin_wait_2_timeout`` (Linux's ``tcp_fin_timeout``) for the kernel's side;
- ``close_on_fin`` for the kernel's side is its application closing the
  moment it reads EOF (which Linux's delayed ACK lets ride on the FIN);
- addresses and ports: the kernel is 192.0.2.1, rawfin 192.0.2.2, ports are
  the run's own (random, so concurrent runs' tracepoint events stay apart);
  a call's ``port`` key and ``ipv6`` are refused;
- calls later than the horizon (10 s) are not made (TIME_WAIT's 60 s);
- segment numbers in fault rules count the segments as they meet the link
  here, which can differ from the emulator's count when the kernel sends
  more (or fewer) ACKs.
"""

from __future__ import annotations

import errno
import heapq
import itertools
import random
import select
import time
from dataclasses import dataclass

from rawfin.core.units import US
from rawfin.sim.emulator import DEFAULT_DELAY_NS, DEFAULT_ISN_CLIENT, DEFAULT_ISN_SERVER, Link
from rawfin.sim.host import AddressInUse, Host, HostError, Step, final_ack, is_final_ack, other, perform
from rawfin.core.units import MS, SEC
from rawfin.core.endpoint import Config
from rawfin.core.errors import StateError, UsageError
from rawfin.core.events import Anomaly
from rawfin.linux.kernelapp import KernelApp
from rawfin.linux.peer import KERNEL, Outcome, PeerRun
from rawfin.sim.scenarios import Call, Facts, Scenario, ScenarioError, app_error, judge, peer_builtin, peer_names
from rawfin.core.segment import Segment, fmt_endpoint
from rawfin.core.states import Input, State

HORIZON_S = 10.0      # calls later than this are not made (the kernel's TIME_WAIT lasts 60 s)
BOUND_S = 10.0        # after the last call, the run settles within this or is stopped
QUIET_S = 0.4         # nothing on the wire for this long, nothing pending: the run is over
_OPENING = (State.CLOSED, State.LISTEN, State.SYN_SENT, State.SYN_RECEIVED)
_BUSY_KERNEL = ("SYN_SENT", "SYN_RECV", "FIN_WAIT1", "CLOSING", "LAST_ACK")   # the kernel still has work


# -- the run --------------------------------------------------------------------------------

@dataclass
class _Sent:
    number: int
    sender: str
    seg: Segment
    dropped: bool
    rules: tuple


class FileRun(PeerRun):
    """A scenario file against the kernel: PeerRun's namespace and tracer, the file's calls and link."""

    def __init__(self, scn: Scenario, *, kernel_side: str = "server", write: str | None = None,
                 kernel_truth: bool = True, horizon_s: float = HORIZON_S, bound_s: float = BOUND_S,
                 slow: float = 1.0, relative_seq: bool = False) -> None:
        if kernel_side not in ("client", "server"):
            raise UsageError(f"--kernel must be client or server, got {kernel_side!r}")
        where = scn.path or scn.name
        if scn.ipv6:
            raise ScenarioError(f"{where}: ipv6 scenarios are not supported by peer --file (the namespace is IPv4)")
        for c in scn.calls:
            if c.port is not None:
                raise ScenarioError(f"{where}: {c.describe()}: a call's port = ... is not supported by peer --file")
        kport, rport = random.sample(range(49152, 65536), 2)
        super().__init__(port=rport, write=write, kernel_truth=kernel_truth, kernel=(KERNEL[0], kport))
        self.scn = scn
        self.where = where
        self.kside = kernel_side
        self.rside = other(kernel_side)
        self.horizon_ns = round(horizon_s * SEC)
        # the applications' times stretched: gaps of a few ms between the two sides' calls survive a
        # busy machine's scheduling delays (the link's delay and the timers are not stretched)
        self.slow = slow
        self.bound_ns = round(bound_s * SEC)
        kw = {**scn.config, **getattr(scn, self.rside).config}
        if relative_seq:            # rawfin's texts and the segments' relative to each side's ISN
            kw["relative_seq"] = True
            self.bases = {}
        try:
            self.rcfg = Config(**kw)
        except ValueError as e:
            raise ScenarioError(f"{where}: {e}") from None
        self.kcfg = {**scn.config, **getattr(scn, self.kside).config}
        side = getattr(scn, self.rside)
        isn = side.isn if side.isn is not None else (DEFAULT_ISN_CLIENT if self.rside == "client"
                                                     else DEFAULT_ISN_SERVER)
        self.host = Host(self.rside, self.local, self.rcfg, isn)
        self.r_refused = 0
        self.link = Link(delay_ns=scn.delay_ns if scn.delay_ns is not None else DEFAULT_DELAY_NS,
                         faults=scn.faults, seed=scn.seed)
        self.sent: list[_Sent] = []
        self.agenda: list = []
        self._n = itertools.count()
        self.held: dict[str, list] = {"out": [], "in": []}   # reorder: segments held back, per direction
        self.pending: dict[str, list[Call]] = {"client": [], "server": []}   # waiting for the handshake
        self.eof_calls = {s: [c for c in scn.calls if c.on == "eof" and c.side == s] for s in ("client", "server")}
        self.skipped: list[Call] = []
        self.rawfin_retrans = 0
        self.k_fin_sent = False
        self.k_copies: dict[tuple, int] = {}
        self.kernel_retrans_wire = 0
        self.k_refused = 0
        self.app: KernelApp | None = None         # the kernel side's application (made in play())
        self.last_wire = 0
        self.t0 = 0
        self.out.kernel_addr = self.kernel
        self.out.rawfin_addr = self.local

    # -- the agenda ------------------------------------------------------------------
    def push(self, at: int, kind: str, item) -> list:
        entry = [at, next(self._n), kind, item]
        heapq.heappush(self.agenda, entry)
        return entry

    def note(self, text: str, now: int | None = None) -> None:
        self.out.notes.append((now or time.time_ns(), text))

    def _t(self, now: int) -> str:
        return f"t={(now - self.t0) / SEC:.3f} s"

    # -- rawfin's side ---------------------------------------------------------------------
    def rawfin_call(self, c: Call, now: int) -> None:
        """One of the file's calls on rawfin's host (raises HostError or StateError when it is refused)."""
        try:
            step = perform(self.host, c.call, now, remote=self.kernel, data=c.data, port=c.port, iss=c.isn,
                           reuse_addr=c.reuse_addr)
        except AddressInUse as e:
            self.r_refused += 1
            step = e.step
        if c.call == "connect" and step.error is None:
            self.fin_at.pop((self.kernel, self.local), None)
        self.take(step, now)

    def take(self, step: Step, now: int) -> None:
        """What one step of rawfin's host did: record it, and put its segments on the link."""
        if step.accepted:
            self.fin_at.pop((self.kernel, self.local), None)
        ep, res = step.endpoint, step.result
        self.out.rawfin.extend(res.transitions)
        self.out.anomalies.extend(res.anomalies)
        if any(t.input is Input.RCV_FIN and t.from_ is not State.TIME_WAIT for t in res.transitions):
            self.arm_eof(self.rside, now)
        retrans = {id(s) for s in res.retransmissions}
        for seg in res.segments:
            if id(seg) in retrans:
                self.rawfin_retrans += 1
            self.transmit("out", seg, None, now, is_final_ack(ep, seg), "retransmission" if id(seg) in retrans else "")

    # -- the link ---------------------------------------------------------------------------
    def transmit(self, direction: str, seg: Segment, raw: bytes | None, now: int, final_ack: bool,
                 note: str = "") -> None:
        """Hand a segment to the link: ``out`` rawfin → kernel, ``in`` kernel → rawfin."""
        sender = self.rside if direction == "out" else self.kside
        number = len(self.sent) + 1
        acting = self.link.decide(number, sender, seg, final_ack)
        dropped = any(f.action == "drop" for f in acting)
        self.sent.append(_Sent(number, sender, seg, dropped, tuple(f.text for f in acting)))
        self.last_wire = now
        if dropped:
            rules = ", ".join(f.text for f in acting if f.action == "drop")
            if direction == "out":
                self._log("rawfin → kernel", seg, now, f"DROPPED ({rules})")
            else:
                self._log("kernel → rawfin", seg, now, _join(note, f"DROPPED ({rules})"))
            return
        extra = sum(f.by_ns for f in acting if f.action == "delay")
        notes = [note] if note else []
        if extra:
            notes.append(f"delayed +{extra / SEC:g} s")
        if direction == "in":
            self._log("kernel → rawfin", seg, now, "; ".join(notes))
        arrive = now + self.link.delay_ns + extra
        item = (direction, seg, raw, "; ".join(notes) if direction == "out" else "")
        held = self.held[direction]
        reorders = [f for f in acting if f.action == "reorder"]
        if reorders:
            entry = self.push(arrive + max(f.by_ns for f in reorders), "arrive", item)
            held.append(entry)
        else:
            self.push(arrive, "arrive", item)
            for k, entry in enumerate(held):       # the held-back ones arrive just after this one
                entry[2] = "cancelled"
                d, s, r, n = entry[3]
                self.push(arrive + (k + 1) * US, "arrive", (d, s, r, _join(n, "reordered")))
            held.clear()
        for f in acting:
            if f.action == "duplicate":
                d, s, r, n = item
                self.push(arrive + f.by_ns, "arrive", (d, s, r, _join(n, "duplicate copy")))

    def arrive(self, item, now: int) -> None:
        direction, seg, raw, note = item
        for entry in self.held[direction]:
            if entry[3] is item:
                self.held[direction].remove(entry)
                break
        if direction == "in":
            for step in self.host.deliver(seg, now):
                self.take(step, now)
            return
        from rawfin.wire.codec import to_bytes
        if seg.syn and not seg.has_ack:
            self.k_fin_sent = False
        if seg.fin:
            self.fin_at[(self.kernel, self.local)] = time.time_ns()
        raw = to_bytes(seg)
        self._capture(raw, now)
        self._log("rawfin → kernel", seg, now, note)
        self.last_wire = now
        self.tun.write(raw)

    def _from_kernel(self, raw: bytes, now: int) -> None:
        seg = self._own_segment(raw, now)
        if seg is None:
            return
        note = ""
        if seg.syn or seg.fin or seg.data_len:
            if seg.syn and not seg.has_ack:
                self.k_copies.clear()
            key = (seg.seq, seg.data_len, seg.syn, seg.fin)
            n = self.k_copies.get(key, 0)
            self.k_copies[key] = n + 1
            if n:
                self.kernel_retrans_wire += 1
                note = f"retransmission #{n}"
                self.out.retransmissions.append(
                    (now, f"kernel sent {seg.describe(self._bases_of(seg))} again (copy #{n})"))
        if seg.syn and not seg.has_ack:
            self.k_fin_sent = False
        ep = self.host.table.get((seg.dport, seg.src, seg.sport))
        last = final_ack(seg, self.k_fin_sent, None if ep is None else ep.fin_seq)   # acks rawfin's FIN
        if seg.fin:
            self.k_fin_sent = True
        self.transmit("in", seg, raw, now, last, note)

    def _is_mine(self, ev) -> bool:
        # the connection, and (the kernel as server) its listening socket
        return ev.local == self.kernel and (ev.remote == self.local or ev.remote[1] == 0)

    # -- the kernel's application ---------------------------------------------------------
    def kernel_poll(self, now: int) -> None:
        """The kernel application's side of the loop: accept, read (EOF arms its ``on = "eof"`` calls)."""
        app = self.app
        app.accept()
        got = app.read()
        if got == "error":
            self.note(f"the kernel application's recv() failed: {app.error}", now)
        elif got == "eof":
            self.arm_eof(self.kside, now)
            if self.kcfg.get("close_on_fin"):
                self.note("close_on_fin: the kernel application closes the moment it reads EOF", now)
                self._kernel_call(Call(side=self.kside, call="close"), now)

    def _kernel_call(self, c: Call, now: int) -> None:
        try:
            perform(self.app, c.call, now, remote=self.local, data=c.data, port=c.port, iss=c.isn,
                    reuse_addr=c.reuse_addr)
        except OSError as e:
            name = errno.errorcode.get(e.errno, str(e)) if e.errno else str(e)
            if c.call in ("listen", "connect") and e.errno == errno.EADDRINUSE:
                self.k_refused += 1
                self.out.anomalies.append(Anomaly(endpoint=fmt_endpoint(*self.kernel), kind="address_in_use",
                                                  detail=f"the kernel's {c.call}() refused: EADDRINUSE",
                                                  time_ns=now))
            self.note(f"the kernel application's {c.call}() at {self._t(now)} failed: {name}", now)

    # -- the calls ------------------------------------------------------------------------------
    def arm_eof(self, side: str, now: int) -> None:
        """The side read end-of-file: its ``on = "eof"`` calls are due (once, as in the emulator)."""
        calls, self.eof_calls[side] = self.eof_calls[side], []
        for c in calls:
            self.push(now + round(c.after_ns * self.slow), "call", c)

    def do_call(self, c: Call, now: int) -> None:
        if c.call in ("send", "close", "shutdown", "abort"):
            if c.side == self.kside:
                app = self.app
                if not app.ready and (app.sock is not None or app.connecting or
                                      app.listener is not None and not app.had_connection):
                    self.pending[c.side].append(c)      # a blocking socket waits for the handshake
                    return
            elif not self.host.ready and (self.host.current is None
                                          or self.host.current.state is not State.CLOSED):
                self.pending[c.side].append(c)
                return
        if c.side == self.kside:
            self._kernel_call(c, now)
            return
        try:
            self.rawfin_call(c, now)
        except (StateError, HostError) as e:
            ep = self.host.current
            reset = ep is not None and any(t.input in (Input.RCV_RST, Input.RCV_RST_PASSIVE)
                                           for t in self.out.rawfin[-3:] if t.to is State.CLOSED)
            if reset:
                # as a real application's call fails with ECONNRESET/EPIPE: part of the story
                self.note(f"rawfin's {c.call}() at {self._t(now)} not made: the kernel reset the connection", now)
            else:
                self.note(f"rawfin's {c.call}() at {self._t(now)} refused: {e}", now)
                self.check(f"rawfin's {c.describe()} was allowed", False, str(e))

    def _retry_pending(self, now: int) -> None:
        for side in ("server", "client"):
            if not self.pending[side]:
                continue
            ready = self.app.ready if side == self.kside else self.host.ready
            if ready:
                calls, self.pending[side] = self.pending[side], []
                for c in calls:
                    self.do_call(c, now)

    # -- the loop -------------------------------------------------------------------------------
    def _settled(self, now: int) -> bool:
        if any(e[2] in ("call", "arrive") for e in self.agenda):
            return False
        if any(self.pending.values()):
            return False
        for ep in self.host.endpoints:
            if ep.rto_at is not None:
                return False        # rawfin will send again
            if ep.state not in (State.CLOSED, State.TIME_WAIT, State.LISTEN) \
                    and now - self.last_wire < self.bound_ns // 2:
                return False        # waiting for the kernel (half the bound of silence: it is not coming)
        if self.kernel_state_now() in _BUSY_KERNEL:
            return False
        return now - self.last_wire >= QUIET_S * SEC

    def play(self) -> None:
        self.app = KernelApp(self.ns, self.kernel,
                             on_connection=lambda s: self.fin_at.pop((self.kernel, self.local), None))
        self.out.scenario = f"{self.scn.name} (kernel as {self.kside})"
        self.out.description = self.scn.summary
        self.t0 = time.time_ns() + 20 * MS
        self.host.origin_ns = self.t0
        self.out.start_ns = self.t0
        timed = sorted((c for c in self.scn.calls if c.at_ns is not None),
                       key=lambda c: (c.at_ns, 0 if c.side == "server" else 1))
        last = 0
        for c in timed:
            at = round(c.at_ns * self.slow)
            if at > self.horizon_ns:
                self.skipped.append(c)
                self.note(f"not made: {c.describe()} (after the {self.horizon_ns / SEC:g} s horizon)", self.t0)
                continue
            self.push(self.t0 + at, "call", c)
            last = max(last, at)
        end = self.t0 + last + self.bound_ns
        self.last_wire = self.t0
        while True:
            now = time.time_ns()
            while self.agenda and self.agenda[0][0] <= now:
                _, _, kind, item = heapq.heappop(self.agenda)
                if kind == "call":
                    self.do_call(item, now)
                elif kind == "arrive":
                    self.arrive(item, now)
                self.kernel_poll(now)
            for step in self.host.due(now):
                self.take(step, now)
            self.kernel_poll(now)
            self._retry_pending(now)
            if now >= self.t0 + last and self._settled(now):
                break
            if now > end:
                self.check("the run settled within its bound", False,
                           f"stopped {self.bound_ns / SEC:g} s after the last call: rawfin in "
                           f"{self.host.current.state.name if self.host.current else 'no state'}, the kernel "
                           f"socket in {self.kernel_state_now() or 'no state'}")
                break
            wake = [now + 50 * MS]
            if self.agenda:
                wake.append(self.agenda[0][0])
            d = self.host.next_deadline()
            if d is not None:
                wake.append(d)
            timeout = max(0.0, (min(wake) - now) / SEC)
            fds = [self.tun.fileno()] + ([self.tracer.fileno()] if self.tracer else [])
            fds += self.app.fds()
            select.select(fds, [], [], timeout)
            self._read_tun_and_trace()
        if self.tracer is not None:
            self._kernel_events(self.tracer.drain(0.05))

    def close(self, ok: bool = True) -> None:
        # what the trace says after the run is rawfin's cleanup closing the sockets: not the story
        self.interp = None
        if self.app is not None:
            self.app.close_all()
        super().close(ok)

    # -- [expect] -----------------------------------------------------------------------------
    def kernel_final(self) -> str | None:
        from rawfin.linux.kernel import kernel_state
        st = self.kernel_state_now()
        if st is None:
            return "CLOSED" if self.app is not None and self.app.had_connection else None
        try:
            return kernel_state(st).name
        except ValueError:
            return st

    def expect_checks(self) -> None:
        """The file's ``[expect]`` table, judged by :func:`rawfin.sim.scenarios.judge` on what this run can show."""
        for c in judge(self.scn, _KernelFacts(self)):
            self.out.checks.append(c)


class _KernelFacts(Facts):
    """What a run against the kernel can show: rawfin's side from its host, the kernel's from the
    tracepoint and the wire; TIME_WAIT's end is not waited for, the kernel's ACKs are its own."""

    def __init__(self, run: FileRun) -> None:
        self.run = run

    def who(self, side: str) -> str:
        return "rawfin" if side == self.run.rside else "the kernel"

    def final(self, side: str) -> tuple[str | None, str]:
        r = self.run
        if side == r.rside:
            st = r.host.state
            return (st.name if st is not None else None), \
                f"its expiry (2*msl = {2 * r.rcfg.msl_ns / SEC:g} s) is not waited for"
        return r.kernel_final(), "its expiry (Linux's 60 s) is not waited for"

    def moved(self, side: str, frm: str, to: str) -> tuple[bool | None, str]:
        r = self.run
        if side == r.rside:
            if (frm, to) in {(t.from_.name, t.to.name) for t in r.out.rawfin}:
                return True, ""
            if (frm, to) == ("TIME_WAIT", "CLOSED"):
                return None, f"TIME_WAIT expiry (2*msl = {2 * r.rcfg.msl_ns / SEC:g} s) is not waited for"
            return False, "rawfin: " + " → ".join(t.to.value for t in r.out.rawfin)
        if r.interp is None:
            return None, "no kernel truth: " + r.out.kernel_truth
        path = " → ".join(k.to.value for k in r.out.kernel)
        if (frm, to) in {(k.from_.name, k.to.name) for k in r.out.kernel} and frm != to:
            return True, "kernel: " + path
        if (frm, to) == ("TIME_WAIT", "TIME_WAIT"):
            # the timewait socket's re-ACK is not traced: the wire shows it
            fin = next((ep.fin_seq for ep in reversed(r.host.endpoints) if ep.fin_seq is not None), None)
            acks = [s for s in r.out.segments if s.direction == "kernel → rawfin"
                    and final_ack(s.seg, True, fin)]     # (a timewait socket has sent its FIN)
            return len(acks) >= 2, (f"on the wire: the kernel ACKed rawfin's FIN {len(acks)} times "
                                    "(a timewait socket's re-ACK is not traced)")
        if (frm, to) == ("TIME_WAIT", "CLOSED"):
            tw = [i for i, k in enumerate(r.out.kernel) if k.to is State.TIME_WAIT]
            if tw and any(k.to in (State.SYN_RECEIVED, State.SYN_SENT) for k in r.out.kernel[tw[0] + 1:]):
                return True, ("inferred: a new connection on the same pair after the kernel's TIME_WAIT (the "
                              "timewait socket's end is not traced); kernel: " + path)
            return None, "TIME_WAIT expiry (Linux's 60 s) is not waited for; kernel: " + path
        return False, "kernel: " + path

    def retransmissions(self) -> tuple[int, str]:
        # tcp_retransmit_skb, or (without the tracepoint) copies of a segment seen at the TUN device
        r = self.run
        kn = max(len(r.out.kernel_retransmits), r.kernel_retrans_wire)
        return r.rawfin_retrans + kn, f"rawfin {r.rawfin_retrans}, the kernel {kn} (its own timers)"

    def dropped(self) -> int:
        return sum(1 for s in self.run.sent if s.dropped)

    def refused(self) -> tuple[int, str]:
        r = self.run
        skipped = [c for c in r.skipped if c.call in ("listen", "connect")]
        return r.r_refused + r.k_refused, (f"rawfin {r.r_refused}, the kernel {r.k_refused}"
                                           + (f"; {len(skipped)} listen/connect after the horizon not made"
                                              if skipped else ""))

    def segments(self) -> tuple[int, str | None]:
        return len(self.run.sent), "the kernel's ACKs are its own"

    def error(self, side: str) -> tuple[str | None, str]:
        r = self.run
        if side == r.rside:
            return app_error(r.out.rawfin[-1] if r.out.rawfin else None), ""
        app = r.app
        if app is None or app.error is None:
            return None, "the kernel application's recv() met no error"
        return app.error, f"the kernel application's recv() failed: {app.error}"

    def received(self, side: str) -> int:
        r = self.run
        return r.host.received if side == r.rside else (r.app.received if r.app is not None else 0)


def _join(a: str, b: str) -> str:
    return f"{a}; {b}" if a and b else a or b


def run_file(scn: Scenario, *, kernel_side: str = "server", write: str | None = None,
             kernel_truth: bool = True, horizon_s: float = HORIZON_S, bound_s: float = BOUND_S,
             title: str | None = None, summary: str | None = None, slow: float = 1.0,
             relative_seq: bool = False) -> Outcome:
    """Play ``scn`` with the kernel as ``kernel_side``; always leaves no namespace, device or trace behind.
    ``title`` and ``summary`` name the run in the outcome (default: the scenario's); ``slow`` stretches
    the applications' times (a call at t is made at slow * t); ``relative_seq``: texts show relative
    sequence numbers (--seq relative)."""
    run = FileRun(scn, kernel_side=kernel_side, write=write, kernel_truth=kernel_truth, horizon_s=horizon_s,
                  bound_s=bound_s, slow=slow, relative_seq=relative_seq)
    with run:
        run.play()
        run.expect_checks()
    if title is not None:
        run.out.scenario = title
    if summary is not None:
        run.out.description = summary
    return run.out


def run_scenario(name: str, *, write: str | None = None, kernel_truth: bool = True,
                 relative_seq: bool = False) -> Outcome:
    """``rawfin peer --scenario NAME``: the scenario file ``rawfin/sim/scenarios/peer/NAME.toml`` with the
    kernel on the side it names. Raises ScenarioUnknown for a name there is not."""
    try:
        scn = peer_builtin(name)
    except ScenarioError:
        raise ScenarioUnknown(name) from None
    return run_file(scn, kernel_side=scn.kernel or "server", write=write, kernel_truth=kernel_truth, title=name,
                    relative_seq=relative_seq)


class ScenarioUnknown(UsageError):
    """``--scenario NAME`` names no scenario (a usage error: exit 2)."""

    def __init__(self, name: str) -> None:
        super().__init__(f"no peer scenario {name!r}; scenarios: {', '.join(peer_names())}")


__all__ = ["FileRun", "run_file", "run_scenario", "ScenarioUnknown", "HORIZON_S", "BOUND_S"]
