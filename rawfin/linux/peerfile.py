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
import socket
import time
from dataclasses import dataclass

from rawfin.core import seq as sq
from rawfin.core.units import US
from rawfin.sim.emulator import DEFAULT_DELAY_NS, DEFAULT_ISN_CLIENT, DEFAULT_ISN_SERVER, ISN_STEP, Link
from rawfin.core.units import MS, SEC
from rawfin.core.endpoint import Config, Endpoint
from rawfin.core.errors import StateError, UsageError
from rawfin.core.events import Anomaly, Result
from rawfin.linux.peer import KERNEL, Outcome, PeerRun, end_kernel_socket
from rawfin.sim.scenarios import Call, Scenario, ScenarioError
from rawfin.core.segment import Flags, Segment, fmt_endpoint
from rawfin.core.states import Input, State

HORIZON_S = 10.0      # calls later than this are not made (the kernel's TIME_WAIT lasts 60 s)
BOUND_S = 10.0        # after the last call, the run settles within this or is stopped
QUIET_S = 0.4         # nothing on the wire for this long, nothing pending: the run is over
_OPENING = (State.CLOSED, State.LISTEN, State.SYN_SENT, State.SYN_RECEIVED)
_BUSY_KERNEL = ("SYN_SENT", "SYN_RECV", "FIN_WAIT1", "CLOSING", "LAST_ACK")   # the kernel still has work


def other(side: str) -> str:
    return "client" if side == "server" else "server"


def _pure_ack(seg: Segment) -> bool:
    return seg.has_ack and not (seg.data_len or seg.flags & (Flags.SYN | Flags.FIN | Flags.RST))


# -- rawfin's side: a small host over Endpoints, as the emulator's Host does it ------------

class RawfinHost:
    """rawfin's connections and listener on its side of the TUN device (one address, one port)."""

    def __init__(self, run: "FileRun", side: str, addr: tuple[str, int], config: Config, isn: int) -> None:
        self.run = run
        self.side = side
        self.addr = addr
        self.config = config
        self.next_isn = sq.wrap(isn)
        self.endpoints: list[Endpoint] = []
        self.table: dict[tuple, Endpoint] = {}
        self.listener: Endpoint | None = None
        self.current: Endpoint | None = None
        self.refused = 0

    @property
    def ready(self) -> bool:
        return self.current is not None and self.current.state not in _OPENING

    def _new(self, iss: int | None) -> Endpoint:
        if iss is not None:
            self.next_isn = sq.wrap(iss)
        ep = Endpoint(local=self.addr, iss=self.next_isn, config=self.config)
        self.next_isn = sq.add(self.next_isn, ISN_STEP)
        self.endpoints.append(ep)
        return ep

    def _bind_ok(self, call: str, reuse_addr: bool, now: int) -> bool:
        for ep in self.endpoints:
            if ep.state is State.CLOSED or (reuse_addr and ep.state is not State.LISTEN):
                continue
            self.refused += 1
            msg = f"{call} refused: EADDRINUSE, {ep.name} ↔ {ep.peer_name} is in {ep.state.name}"
            self.run.out.anomalies.append(Anomaly(endpoint=fmt_endpoint(*self.addr), kind="address_in_use",
                                                  detail=msg, time_ns=now))
            return False
        return True

    def listen(self, c: Call, now: int) -> None:
        if not self._bind_ok("listen()", c.reuse_addr, now):
            return
        ep = self._new(c.isn)
        self.listener = ep
        self.run.absorb(ep, ep.listen(now), now)

    def close_listener(self, now: int) -> None:
        if self.listener is None:
            raise StateError("close-listener", State.CLOSED, "there is no listener")
        ep, self.listener = self.listener, None
        self.run.absorb(ep, ep.close(now), now)

    def connect(self, c: Call, remote: tuple[str, int], now: int) -> None:
        if not self._bind_ok(f"connect({fmt_endpoint(*remote)})", False, now):
            return
        ep = self._new(c.isn)
        self.table[remote] = ep
        self.current = ep
        self.run.fin_at.pop((self.run.kernel, self.run.local), None)
        self.run.absorb(ep, ep.connect(remote, now), now)

    def deliver(self, seg: Segment, now: int) -> None:
        key = (seg.src, seg.sport)
        ep = self.table.get(key)
        if ep is not None and ep.state is not State.CLOSED:
            res = ep.receive(seg, now)
            self.run.absorb(ep, res, now)
            if not any(t.input is Input.RCV_NEW_SYN for t in res.transitions):
                return
        lst = self.listener
        if lst is not None and seg.syn and not seg.has_ack and not seg.rst:
            self.table[key] = lst
            self.current = lst
            fresh = self._new(None)          # a fresh listening socket takes its place, silently
            fresh.listen(now)
            self.listener = fresh
            self.run.fin_at.pop((self.run.kernel, self.run.local), None)
            self.run.absorb(lst, lst.receive(seg, now), now)
            return
        ghost = Endpoint(local=self.addr, config=self.config)     # a closed port: RST
        self.run.absorb(ghost, ghost.receive(seg, now), now)

    def call(self, c: Call, now: int) -> None:
        ep = self.current
        if c.call == "listen":
            self.listen(c, now)
        elif c.call == "close-listener":
            self.close_listener(now)
        elif c.call == "connect":
            self.connect(c, self.run.kernel, now)
        elif ep is None:
            raise StateError(c.call, State.CLOSED, "there is no connection")
        elif c.call == "send":
            self.run.absorb(ep, ep.send(c.data, now), now)
        elif c.call == "close":
            self.run.absorb(ep, ep.close(now, c.data), now)
        elif c.call == "shutdown":
            self.run.absorb(ep, ep.shutdown(now), now)
        elif c.call == "abort":
            self.run.absorb(ep, ep.abort(now), now)


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
                 kernel_truth: bool = True, horizon_s: float = HORIZON_S, bound_s: float = BOUND_S) -> None:
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
        self.bound_ns = round(bound_s * SEC)
        kw = {**scn.config, **getattr(scn, self.rside).config}
        try:
            self.rcfg = Config(**kw)
        except ValueError as e:
            raise ScenarioError(f"{where}: {e}") from None
        self.kcfg = {**scn.config, **getattr(scn, self.kside).config}
        side = getattr(scn, self.rside)
        isn = side.isn if side.isn is not None else (DEFAULT_ISN_CLIENT if self.rside == "client"
                                                     else DEFAULT_ISN_SERVER)
        self.host = RawfinHost(self, self.rside, self.local, self.rcfg, isn)
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
        self.k_socks: list[socket.socket] = []     # every kernel socket made, closed at the end
        self.k_connecting = False
        self.k_eof = False
        self.had_kernel_conn = False
        self.last_wire = 0
        self.t0 = 0
        self.ep = None
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

    # -- rawfin's endpoint output -------------------------------------------------------
    def absorb(self, ep: Endpoint, res: Result, now: int) -> None:
        self.out.rawfin.extend(res.transitions)
        self.out.anomalies.extend(res.anomalies)
        if any(t.input is Input.RCV_FIN and t.from_ is not State.TIME_WAIT for t in res.transitions):
            self.arm_eof(self.rside, now)
        retrans = {id(s) for s in res.retransmissions}
        for seg in res.segments:
            if id(seg) in retrans:
                self.rawfin_retrans += 1
            final_ack = (_pure_ack(seg) and ep.fin_seq is not None and ep.peer_fin_seq is not None
                         and seg.ack == sq.add(ep.peer_fin_seq, 1))
            self.transmit("out", seg, None, now, final_ack, "retransmission" if id(seg) in retrans else "")

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
            self.host.deliver(seg, now)
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
                self.out.retransmissions.append((now, f"kernel sent {seg.describe()} again (copy #{n})"))
        if seg.syn and not seg.has_ack:
            self.k_fin_sent = False
        ep = self.host.table.get((seg.src, seg.sport))
        final_ack = (_pure_ack(seg) and self.k_fin_sent and ep is not None and ep.fin_seq is not None
                     and seg.ack == sq.add(ep.fin_seq, 1))
        if seg.fin:
            self.k_fin_sent = True
        self.transmit("in", seg, raw, now, final_ack, note)

    def _is_mine(self, ev) -> bool:
        # the connection, and (the kernel as server) its listening socket
        return ev.local == self.kernel and (ev.remote == self.local or ev.remote[1] == 0)

    # -- the kernel's application ---------------------------------------------------------
    def _ksocket(self) -> socket.socket:
        with self.ns.inside():
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.k_socks.append(s)
        return s

    def _set_current(self, s: socket.socket | None) -> None:
        self.ksock = s
        self.k_eof = False
        self.kernel_data = b""
        self.kernel_error = None
        if s is not None:
            self.had_kernel_conn = True
            self.fin_at.pop((self.kernel, self.local), None)

    @property
    def kernel_ready(self) -> bool:
        if self.ksock is None:
            return False
        if self.k_connecting:
            try:
                self.ksock.getpeername()
            except OSError:
                return False
            self.k_connecting = False
        return True

    def kernel_poll(self, now: int) -> None:
        """The kernel application's side of the loop: accept, read (EOF arms its ``on = "eof"`` calls)."""
        if self.listener is not None:
            try:
                s, _ = self.listener.accept()
            except BlockingIOError:
                pass
            except OSError:
                pass
            else:
                s.setblocking(False)
                self.k_socks.append(s)
                self._set_current(s)
        s = self.ksock
        if s is None or self.k_eof or self.k_connecting and not self.kernel_ready:
            return
        while True:
            try:
                b = s.recv(65536)
            except BlockingIOError:
                return
            except OSError as e:
                self.kernel_error = errno.errorcode.get(e.errno, str(e.errno))
                self.k_eof = True
                self.note(f"the kernel application's recv() failed: {self.kernel_error}", now)
                return
            if not b:
                self.k_eof = True
                self.arm_eof(self.kside, now)
                if self.kcfg.get("close_on_fin"):
                    self.note("close_on_fin: the kernel application closes the moment it reads EOF", now)
                    self._kernel_call(Call(side=self.kside, call="close"), now)
                return
            self.kernel_data += b

    def _kernel_call(self, c: Call, now: int) -> None:
        try:
            self._kernel_call1(c)
        except OSError as e:
            name = errno.errorcode.get(e.errno, str(e)) if e.errno else str(e)
            if c.call in ("listen", "connect") and e.errno == errno.EADDRINUSE:
                self.k_refused += 1
                self.out.anomalies.append(Anomaly(endpoint=fmt_endpoint(*self.kernel), kind="address_in_use",
                                                  detail=f"the kernel's {c.call}() refused: EADDRINUSE",
                                                  time_ns=now))
            self.note(f"the kernel application's {c.call}() at {self._t(now)} failed: {name}", now)

    def _kernel_call1(self, c: Call) -> None:
        if c.call == "listen":
            ls = self._ksocket()
            if c.reuse_addr:
                ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            ls.bind(self.kernel)
            ls.listen(4)
            ls.setblocking(False)
            self.listener = ls
            return
        if c.call == "close-listener":
            if self.listener is None:
                raise OSError(errno.EBADF, "no listening socket")
            self.listener.close()
            self.listener = None
            return
        if c.call == "connect":
            s = self._ksocket()
            s.bind(self.kernel)
            s.setblocking(False)
            rc = s.connect_ex(self.local)
            if rc not in (0, errno.EINPROGRESS):
                raise OSError(rc, "connect")
            self._set_current(s)
            self.k_connecting = True
            return
        s = self.ksock
        if s is None:
            raise OSError(errno.ENOTCONN, "no connection")
        if c.call == "send":
            n = s.send(c.data)
            if n != len(c.data):
                raise OSError(errno.EAGAIN, f"sent {n} of {len(c.data)} bytes")
        elif c.call in ("close", "shutdown", "abort"):
            if c.call == "close":
                self._drain(s)
            if end_kernel_socket(s, c.call, c.data):
                self.ksock = None

    def _drain(self, s: socket.socket) -> None:
        """Read what is queued: close() with unread data would send a RST instead of a FIN."""
        while True:
            try:
                b = s.recv(65536)
            except OSError:
                return
            if not b:
                return
            self.kernel_data += b

    # -- the calls ------------------------------------------------------------------------------
    def arm_eof(self, side: str, now: int) -> None:
        """The side read end-of-file: its ``on = "eof"`` calls are due (once, as in the emulator)."""
        calls, self.eof_calls[side] = self.eof_calls[side], []
        for c in calls:
            self.push(now + c.after_ns, "call", c)

    def do_call(self, c: Call, now: int) -> None:
        if c.call in ("send", "close", "shutdown", "abort"):
            if c.side == self.kside:
                if not self.kernel_ready and (self.ksock is not None or self.k_connecting or
                                              self.listener is not None and not self.had_kernel_conn):
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
            self.host.call(c, now)
        except StateError as e:
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
            ready = self.kernel_ready if side == self.kside else self.host.ready
            if ready:
                calls, self.pending[side] = self.pending[side], []
                for c in calls:
                    self.do_call(c, now)

    # -- the loop -------------------------------------------------------------------------------
    def _next_rawfin_deadline(self) -> int | None:
        ds = [d for d in (ep.next_deadline() for ep in self.host.endpoints) if d is not None]
        return min(ds) if ds else None

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
        self.out.scenario = f"{self.scn.name} (kernel as {self.kside})"
        self.out.description = self.scn.summary
        self.t0 = time.time_ns() + 20 * MS
        self.out.start_ns = self.t0
        timed = sorted((c for c in self.scn.calls if c.at_ns is not None),
                       key=lambda c: (c.at_ns, 0 if c.side == "server" else 1))
        last = 0
        for c in timed:
            if c.at_ns > self.horizon_ns:
                self.skipped.append(c)
                self.note(f"not made: {c.describe()} (after the {self.horizon_ns / SEC:g} s horizon)", self.t0)
                continue
            self.push(self.t0 + c.at_ns, "call", c)
            last = max(last, c.at_ns)
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
            for ep in list(self.host.endpoints):
                d = ep.next_deadline()
                if d is not None and d <= now:
                    self.absorb(ep, ep.handle_timer(now), now)
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
            d = self._next_rawfin_deadline()
            if d is not None:
                wake.append(d)
            timeout = max(0.0, (min(wake) - now) / SEC)
            fds = [self.tun.fileno()] + ([self.tracer.fileno()] if self.tracer else [])
            fds += [s.fileno() for s in (self.ksock, self.listener) if s is not None]
            select.select(fds, [], [], timeout)
            self._read_tun_and_trace()
        self.ep = self.host.current
        if self.tracer is not None:
            self._kernel_events(self.tracer.drain(0.05))

    def close(self, ok: bool = True) -> None:
        # what the trace says after the run is rawfin's cleanup closing the sockets: not the story
        self.interp = None
        for s in self.k_socks:
            try:
                s.close()
            except OSError:
                pass
        self.k_socks = []
        super().close(ok)

    # -- [expect] -----------------------------------------------------------------------------
    def kernel_final(self) -> str | None:
        from rawfin.linux.kernel import kernel_state
        st = self.kernel_state_now()
        if st is None:
            return "CLOSED" if self.had_kernel_conn else None
        try:
            return kernel_state(st).name
        except ValueError:
            return st

    def expect_checks(self) -> None:
        exp = self.scn.expect
        R = self.rside
        have_truth = self.interp is not None
        kmoves = {(k.from_.name, k.to.name) for k in self.out.kernel}
        rmoves = {(t.from_.name, t.to.name) for t in self.out.rawfin}
        for side, want in exp.get("final", {}).items():
            if side == R:
                got = self.host.current.state.name if self.host.current is not None else None
                who, msl = "rawfin", f"2*msl = {2 * self.rcfg.msl_ns / SEC:g} s"
            else:
                got = self.kernel_final()
                who, msl = "the kernel", "Linux's 60 s"
            what = f"[expect] final: {side} ({who}) ends in {want}"
            if got == want:
                self.check(what, True, f"{got}")
            elif want == "CLOSED" and got == "TIME_WAIT":
                self.check(what, True, f"TIME_WAIT at the end; its expiry ({msl}) is not waited for")
            else:
                self.check(what, False, f"got {got}")
        if "retransmissions" in exp:
            # tcp_retransmit_skb, or (without the tracepoint) copies of a segment seen at the TUN device
            kn = max(len(self.out.kernel_retransmits), self.kernel_retrans_wire)
            n = self.rawfin_retrans + kn
            self.check(f"[expect] retransmissions = {exp['retransmissions']}", n == exp["retransmissions"],
                       f"rawfin {self.rawfin_retrans}, the kernel {kn} (its own timers)")
        if "dropped" in exp:
            n = sum(1 for s in self.sent if s.dropped)
            self.check(f"[expect] dropped = {exp['dropped']}", n == exp["dropped"], f"{n} dropped by the link")
        if "refused" in exp:
            n = self.host.refused + self.k_refused
            skipped = [c for c in self.skipped if c.call in ("listen", "connect")]
            self.check(f"[expect] refused = {exp['refused']}", n == exp["refused"],
                       f"rawfin {self.host.refused}, the kernel {self.k_refused}"
                       + (f"; {len(skipped)} listen/connect after the horizon not made" if skipped else ""))
        if "segments" in exp:
            self.check(f"[expect] segments = {exp['segments']}", None,
                       f"{len(self.sent)} here; not judged: the kernel's ACKs are its own")
        for want in exp.get("states", []):
            side, frm, to = want.split()
            what = f"[expect] states: {want} ({'rawfin' if side == R else 'the kernel'})"
            if side == R:
                if (frm, to) in rmoves:
                    self.check(what, True)
                elif (frm, to) == ("TIME_WAIT", "CLOSED"):
                    self.check(what, None, f"TIME_WAIT expiry (2*msl = {2 * self.rcfg.msl_ns / SEC:g} s) "
                                           f"is not waited for")
                else:
                    self.check(what, False, "rawfin: " + " → ".join(t.to.value for t in self.out.rawfin))
                continue
            if not have_truth:
                self.check(what, None, "no kernel truth: " + self.out.kernel_truth)
                continue
            path = " → ".join(k.to.value for k in self.out.kernel)
            if (frm, to) in kmoves and frm != to:
                self.check(what, True, "kernel: " + path)
            elif (frm, to) == ("TIME_WAIT", "TIME_WAIT"):
                # the timewait socket's re-ACK is not traced: the wire shows it
                fin = next((ep.fin_seq for ep in reversed(self.host.endpoints) if ep.fin_seq is not None), None)
                acks = [s for s in self.out.segments if s.direction == "kernel → rawfin" and fin is not None
                        and _pure_ack(s.seg) and s.seg.ack == sq.add(fin, 1)]
                self.check(what, len(acks) >= 2, f"on the wire: the kernel ACKed rawfin's FIN {len(acks)} times "
                                                 "(a timewait socket's re-ACK is not traced)")
            elif (frm, to) == ("TIME_WAIT", "CLOSED"):
                tw = [i for i, k in enumerate(self.out.kernel) if k.to is State.TIME_WAIT]
                again = tw and any(k.to is State.SYN_RECEIVED or k.to is State.SYN_SENT
                                   for k in self.out.kernel[tw[0] + 1:])
                if again:
                    self.check(what, True, "inferred: a new connection on the same pair after the kernel's "
                                           "TIME_WAIT (the timewait socket's end is not traced); kernel: " + path)
                else:
                    self.check(what, None, "TIME_WAIT expiry (Linux's 60 s) is not waited for; kernel: " + path)
            else:
                self.check(what, False, "kernel: " + path)


def _join(a: str, b: str) -> str:
    return f"{a}; {b}" if a and b else a or b


def run_file(scn: Scenario, *, kernel_side: str = "server", write: str | None = None,
             kernel_truth: bool = True, horizon_s: float = HORIZON_S, bound_s: float = BOUND_S) -> Outcome:
    """Play ``scn`` with the kernel as ``kernel_side``; always leaves no namespace, device or trace behind."""
    run = FileRun(scn, kernel_side=kernel_side, write=write, kernel_truth=kernel_truth, horizon_s=horizon_s,
                  bound_s=bound_s)
    with run:
        run.play()
        run.expect_checks()
    return run.out


__all__ = ["FileRun", "RawfinHost", "run_file", "HORIZON_S", "BOUND_S"]
