"""Two endpoints over a faulty link, on a virtual clock: rawfin's emulator.

The endpoints are the core's sans-IO :class:`~rawfin.core.endpoint.Endpoint`, held by
two sans-IO hosts (:class:`rawfin.sim.host.Host`, here on the pair's clock as
:class:`PairHost`); this module is their driver. It owns the clock, the link and the hosts, and it
keeps a log of everything that happened, from which the records, the ladder
diagram and the capture are made. Nothing sleeps: time jumps from one event
(an application call, a segment arriving, a timer falling due) to the next.

Driving a pair by hand, as a test would::

    from rawfin.sim.emulator import Pair, MS
    from rawfin.core.states import State

    pair = Pair(faults=["drop final-ack"])      # the lost final ACK
    pair.server.listen()
    pair.client.connect()
    pair.run_for(10 * MS)                        # the handshake
    pair.client.close()
    pair.run_for(10 * MS)
    pair.server.close()
    pair.run()                                   # until nothing is left to happen
    assert pair.server.state is State.CLOSED
    assert pair.retransmissions() == [8]        # the server's FIN, sent again after the RTO
    assert pair.timeline()[-1][1:] == ("client", "TIME_WAIT", "CLOSED")

Faults are rules the link applies to each segment it carries, written as text
(``"drop final-ack"``, ``"drop server:FIN#1"``, ``"delay client:data@0.5"``,
``"drop p=0.1"``) or as :class:`Fault` values. See :meth:`Fault.parse`.

Times are integer nanoseconds on the virtual clock, which starts at
:data:`EPOCH_NS` (1700000000 s) so that captures look real and are
byte-for-byte reproducible. ``pair.now - pair.start_ns`` is the elapsed time.
"""

from __future__ import annotations

import heapq
import math
import random
from dataclasses import dataclass, replace
from typing import Callable, Iterable

from rawfin.core.units import MS, SEC, US
from rawfin.core.endpoint import Config, Endpoint
from rawfin.core.errors import EXIT_USAGE
from rawfin.core.events import Anomaly, Result, Transition
from rawfin.core.segment import Flags, Segment, fmt_endpoint, parse_flags
from rawfin.core.states import Input, State
from rawfin.sim.host import SIDES, AddressInUse, Host, HostError, Step, is_final_ack, other, payload, perform

__all__ = [
    "Pair", "PairHost", "Host", "Link", "Fault", "Sent", "Arrival", "Moved", "Noted", "Called",
    "AddressInUse", "EmulatorError", "EPOCH_NS", "MS", "SEC", "US",
    "CLIENT", "SERVER", "CLIENT6", "SERVER6", "CAPTURE_POINTS",
]

EPOCH_NS = 1_700_000_000 * SEC          # 2023-11-14T22:13:20Z
CLIENT = ("192.0.2.2", 50001)
SERVER = ("192.0.2.1", 80)
CLIENT6 = ("2001:db8::2", 50001)
SERVER6 = ("2001:db8::1", 80)
CAPTURE_POINTS = ("sender", "client", "server")
DEFAULT_DELAY_NS = 1 * MS               # one way
DEFAULT_ISN_CLIENT = 1000
DEFAULT_ISN_SERVER = 2000
DEFAULT_DUP_GAP_NS = 100 * US           # a duplicate's copy arrives this much after the original
DEFAULT_REORDER_HOLD_NS = 50 * MS       # a held-back segment waits at most this long for a successor
DEFAULT_RUN_LIMIT_NS = 3600 * SEC       # run() stops after an hour of virtual time at the latest
ACTIONS = ("drop", "delay", "duplicate", "reorder")
KINDS = ("pure-ack", "data", "final-ack")


class EmulatorError(HostError):
    """A call the emulator cannot carry out (no connection to act on, a bad rule)."""

    exit_code = EXIT_USAGE


# -- faults ----------------------------------------------------------------------------

@dataclass(frozen=True, slots=True, kw_only=True)
class Fault:
    """One rule the link applies to the segments it carries.

    A segment is a candidate when it matches every criterion given: ``number``
    (the Nth segment on the link, counting both directions from 1; the same as
    its frame number in a ``--capture-at sender`` capture), ``sender``
    (``"client"``/``"server"``), ``flags`` (the segment carries all of them)
    and ``kind`` (``"pure-ack"``: ACK alone, no data; ``"data"``: carries
    payload; ``"final-ack"``: the ACK of the peer's FIN sent by a side whose own
    FIN has gone out, the fourth segment of the close).

    Which candidates it acts on: with ``probability``, each one with that
    probability (drawn from the link's seeded generator); with ``number``, that
    one; otherwise the ``nth`` candidate (default 1, the first), or every
    candidate when ``nth`` is 0.

    ``by_ns``: for ``delay`` the extra delay; for ``duplicate`` how long after
    the original the copy arrives; for ``reorder`` the longest the segment is
    held back waiting for the next segment in its direction to overtake it.
    """

    action: str = "drop"
    number: int | None = None
    sender: str | None = None
    flags: Flags = Flags(0)
    kind: str | None = None
    nth: int | None = None
    probability: float | None = None
    by_ns: int = 0
    text: str = ""

    def __post_init__(self) -> None:
        if self.action not in ACTIONS:
            raise EmulatorError(f"unknown fault action {self.action!r} (one of {', '.join(ACTIONS)})")
        if self.sender is not None and self.sender not in SIDES:
            raise EmulatorError(f"fault sender must be 'client' or 'server', got {self.sender!r}")
        if self.kind is not None and self.kind not in KINDS:
            raise EmulatorError(f"unknown segment kind {self.kind!r} (one of {', '.join(KINDS)})")
        if self.number is not None and self.number < 1:
            raise EmulatorError(f"segment numbers count from 1, got {self.number}")
        if self.nth is not None and self.nth < 0:
            raise EmulatorError(f"#N must be 1 or more (or * for every one), got {self.nth}")
        if self.probability is not None and not 0.0 <= self.probability <= 1.0:
            raise EmulatorError(f"probability must be within 0..1, got {self.probability}")
        if self.by_ns < 0:
            raise EmulatorError("a fault's delay cannot be negative")
        if not isinstance(self.flags, Flags):
            object.__setattr__(self, "flags", Flags(int(self.flags)))
        if not self.text:
            object.__setattr__(self, "text", self._describe())

    @classmethod
    def parse(cls, rule: str, action: str | None = None, by_ns: int | None = None) -> "Fault":
        """Read a rule written as text.

        ``[ACTION ]PART[:PART...][@SECONDS]``, where ACTION is drop (default),
        delay, duplicate or reorder, and each PART is one of: ``client`` or
        ``server`` (who sent it); a segment number ``7``; ``p=0.1``; flags
        ``FIN``, ``SYN,ACK``, ``RST`` ...; ``pure-ack``, ``data``, ``final-ack``
        -- the last two kinds optionally followed by ``#N`` (the Nth such
        segment) or ``#*`` (every one). ``@SECONDS`` is ``by`` (delay, duplicate
        gap, reorder hold). Examples: ``final-ack``, ``server:FIN#2``, ``9``,
        ``client:p=0.2``, ``delay server:FIN@0.5``, ``duplicate client:data``.
        """
        text = rule.strip()
        if not text:
            raise EmulatorError("empty fault rule")
        words = text.split(None, 1)
        if words[0] in ACTIONS and len(words) == 2:
            if action is not None and action != words[0]:
                raise EmulatorError(f"rule {rule!r} says {words[0]} but is given as a {action} rule")
            action, body = words[0], words[1].strip()
        else:
            body = text
        action = action or "drop"
        if "@" in body:
            body, _, secs = body.rpartition("@")
            try:
                f = float(secs)
                if not math.isfinite(f) or f < 0:
                    raise ValueError
                by_ns = round(f * SEC)
            except ValueError:
                raise EmulatorError(f"rule {rule!r}: {secs!r} after @ is not a number of seconds >= 0") from None
        if by_ns is None:
            by_ns = {"duplicate": DEFAULT_DUP_GAP_NS, "reorder": DEFAULT_REORDER_HOLD_NS}.get(action, 0)
        kw: dict = {}
        for part in body.split(":"):
            part = part.strip()
            if not part:
                raise EmulatorError(f"rule {rule!r}: empty part")
            low = part.lower()
            if low in SIDES:
                kw["sender"] = low
                continue
            if low.startswith("p="):
                try:
                    kw["probability"] = float(low[2:])
                    if not 0 <= kw["probability"] <= 1:
                        raise ValueError
                except ValueError:
                    raise EmulatorError(f"rule {rule!r}: {part!r} is not p=PROBABILITY") from None
                continue
            if part.isdigit():
                kw["number"] = int(part)
                continue
            what, hash_, nth = part.partition("#")
            if hash_:
                if nth == "*":
                    kw["nth"] = 0
                elif nth.isdigit() and int(nth) >= 1:
                    kw["nth"] = int(nth)
                else:
                    raise EmulatorError(f"rule {rule!r}: #{nth} should be #N (N >= 1) or #*")
            if what.lower() in KINDS:
                kw["kind"] = what.lower()
            else:
                try:
                    kw["flags"] = kw.get("flags", Flags(0)) | parse_flags(what)
                except ValueError as e:
                    raise EmulatorError(f"rule {rule!r}: {e}") from None
        if not kw:
            raise EmulatorError(f"rule {rule!r} matches nothing")
        return cls(action=action, by_ns=by_ns, text=text if text.split(None, 1)[0] in ACTIONS
                   else f"{action} {text}", **kw)

    def _describe(self) -> str:
        parts = []
        if self.sender:
            parts.append(self.sender)
        if self.number is not None:
            parts.append(str(self.number))
        if self.flags:
            parts.append(",".join(f.name for f in Flags if self.flags & f))
        if self.kind:
            parts.append(self.kind)
        if self.probability is not None:
            parts.append(f"p={self.probability:g}")
        text = ":".join(parts) or "*"
        if self.nth is not None:
            text += "#*" if self.nth == 0 else f"#{self.nth}"
        if self.by_ns and self.action != "drop":
            text += f"@{self.by_ns / SEC:g}"
        return f"{self.action} {text}"

    def candidate(self, number: int, sender: str, seg: Segment, final_ack: bool) -> bool:
        if self.number is not None and number != self.number:
            return False
        if self.sender is not None and sender != self.sender:
            return False
        if self.flags and (seg.flags & self.flags) != self.flags:
            return False
        if self.kind == "data" and not seg.data_len:
            return False
        if self.kind == "pure-ack" and not seg.pure_ack:
            return False
        if self.kind == "final-ack" and not final_ack:
            return False
        return True


# -- the log -----------------------------------------------------------------------

Ref = tuple  # ("send", number) or ("arrive", number, copy)


@dataclass(frozen=True, slots=True, kw_only=True)
class Sent:
    """A segment handed to the link, and what the link did with it."""

    number: int                     # 1-based, both directions: frame number with --capture-at sender
    time_ns: int
    sender: str                     # "client" / "server"
    seg: Segment
    retransmission: bool = False
    dropped: bool = False
    delay_ns: int = 0               # extra delay added by a fault
    duplicated: bool = False
    reordered: bool = False
    rules: tuple[str, ...] = ()     # the fault rules that acted on it
    ep: int = 0                     # id of the sending endpoint

    @property
    def receiver(self) -> str:
        return other(self.sender)


@dataclass(frozen=True, slots=True, kw_only=True)
class Arrival:
    number: int
    copy: int                       # 0 for the original, 1 for a duplicate's copy
    time_ns: int
    receiver: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Moved:
    """An endpoint's transition, with what caused it (a segment sent or one arriving)."""

    side: str
    transition: Transition
    ref: Ref | None
    ep: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Noted:
    """An anomaly an endpoint reported (or the host: ``address_in_use``)."""

    side: str
    anomaly: Anomaly
    ref: Ref | None
    ep: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Called:
    """An application call on one side (``error`` set when it was refused)."""

    side: str
    time_ns: int
    call: str
    ep: int
    error: str | None = None


# -- the link ------------------------------------------------------------------------

class Link:
    """The wire between the two hosts: a fixed one-way delay and the fault rules."""

    def __init__(self, *, delay_ns: int = DEFAULT_DELAY_NS, faults: Iterable[Fault | str] = (),
                 seed: int = 0) -> None:
        if delay_ns < 0:
            raise EmulatorError("the link delay cannot be negative")
        self.delay_ns = delay_ns
        self.seed = seed
        self.rng = random.Random(seed)
        self.faults: list[Fault] = []
        self._seen: list[int] = []
        for f in faults:
            self.add(f)

    def add(self, fault: Fault | str, action: str | None = None) -> Fault:
        if isinstance(fault, str):
            fault = Fault.parse(fault, action)
        self.faults.append(fault)
        self._seen.append(0)
        return fault

    def decide(self, number: int, sender: str, seg: Segment, final_ack: bool) -> list[Fault]:
        """The faults that act on this segment (every rule is consulted, in order, every time)."""
        acting = []
        for i, f in enumerate(self.faults):
            if not f.candidate(number, sender, seg, final_ack):
                continue
            if f.probability is not None:
                hit = self.rng.random() < f.probability
            elif f.number is not None:
                hit = True
            else:
                self._seen[i] += 1
                want = 1 if f.nth is None else f.nth
                hit = want == 0 or self._seen[i] == want
            if hit:
                acting.append(f)
        return acting


# -- hosts -------------------------------------------------------------------------

def _payload(data: bytes | int) -> bytes:
    return payload(data) if isinstance(data, int) else bytes(data)


class PairHost:
    """One emulated host on the pair's clock: a :class:`~rawfin.sim.host.Host` whose calls act now.

    The application calls act at the pair's current virtual time on the host's current
    connection (the last one it connected or accepted); what they produce goes on the
    link. ``host`` is the sans-IO host itself; its ``state``, ``current``, ``endpoints``
    and ``listeners`` are readable here too.
    """

    def __init__(self, pair: "Pair", side: str, addr: tuple[str, int], config: Config, isn: int) -> None:
        self.pair = pair
        self.host = Host(side, addr, config, isn, origin_ns=pair.start_ns)
        self.side = side
        self._eof_waiters: list[tuple[int, Callable[[], object]]] = []
        self._ready_waiters: list[Callable[[], object]] = []

    def __repr__(self) -> str:
        return f"<PairHost {self.side} {fmt_endpoint(*self.addr)} {self.state}>"

    # what the host is
    ip = property(lambda self: self.host.ip)
    port = property(lambda self: self.host.port)
    addr = property(lambda self: self.host.addr)
    config = property(lambda self: self.host.config)
    current = property(lambda self: self.host.current)
    endpoints = property(lambda self: self.host.endpoints)
    listeners = property(lambda self: self.host.listeners)
    state = property(lambda self: self.host.state, doc="The current connection's state (None before there is one).")
    ready = property(lambda self: self.host.ready, doc="The current connection's handshake is over.")

    def on_eof(self, fn: Callable[[], object], delay_ns: int = 0) -> None:
        """Run ``fn()`` ``delay_ns`` after this host next reads end-of-file (the peer's FIN arrives).

        This is how an application that closes when ``recv()`` returns 0 is written.
        """
        self._eof_waiters.append((delay_ns, fn))

    def when_ready(self, fn: Callable[[], object]) -> None:
        """Run ``fn()`` as soon as the current connection is established (now, if it is).

        A blocking socket behaves so: ``send()`` on a connection still opening waits.
        """
        if self.ready:
            self.pair._push(self.pair.now, ("call", fn))
        else:
            self._ready_waiters.append(fn)

    # -- application calls ---------------------------------------------------------
    def listen(self, port: int | None = None, *, iss: int | None = None, reuse_addr: bool = False) -> Endpoint:
        """Open a listener (``bind()`` + ``listen()``). Raises :class:`AddressInUse`."""
        return self._do(self.host.listen, port=port, iss=iss, reuse_addr=reuse_addr)

    def close_listener(self, port: int | None = None) -> None:
        """Close the listening socket (accepted connections are not touched)."""
        self._do(self.host.close_listener, port=port)

    def connect(self, remote: tuple[str, int] | None = None, *, port: int | None = None,
                iss: int | None = None) -> Endpoint:
        """A new connection from ``port`` (default: the host's port) to ``remote`` (default: the other host)."""
        return self._do(self.host.connect, remote or self.pair._other(self).addr, port=port, iss=iss)

    def send(self, data: bytes | int) -> None:
        """Send bytes (or N generated bytes) on the current connection."""
        self._do(self.host.send, _payload(data))

    def close(self, data: bytes | int = b"") -> None:
        """close(): our FIN, carrying ``data`` when given."""
        self._do(self.host.close, _payload(data))

    def shutdown(self) -> None:
        """shutdown(SHUT_WR): our FIN, as close() sends it; the socket still reads."""
        self._do(self.host.shutdown)

    def abort(self) -> None:
        """close() with SO_LINGER 0: an RST instead of a FIN."""
        self._do(self.host.abort)

    def call(self, name: str, *, data: bytes = b"", port: int | None = None, iss: int | None = None,
             reuse_addr: bool = False) -> Endpoint:
        """The application call ``name`` as scenario files spell it (``"close-listener"``...), now."""
        remote = self.pair._other(self).addr if name == "connect" else None
        return self._do(lambda now: perform(self.host, name, now, remote=remote, data=data, port=port, iss=iss,
                                            reuse_addr=reuse_addr))

    def _do(self, method, *args, **kw) -> Endpoint:
        try:
            step = method(self.pair.now, *args, **kw)
        except AddressInUse as e:
            self.pair._take(self, e.step, None)
            raise
        except HostError as e:
            raise EmulatorError(str(e)) from None
        self.pair._take(self, step, None)
        return step.endpoint


# -- the pair ------------------------------------------------------------------------

class Pair:
    """A client host and a server host joined by a :class:`Link`, on one virtual clock.

    ``faults`` are :class:`Fault` values or rule text (see :meth:`Fault.parse`);
    ``seed`` seeds the link's generator for probabilistic rules. ``config`` is
    both sides' :class:`~rawfin.core.endpoint.Config`; ``client_config`` and
    ``server_config`` override it per side.
    """

    def __init__(self, *, client: tuple[str, int] | None = None, server: tuple[str, int] | None = None,
                 ipv6: bool = False, config: Config | None = None, client_config: Config | None = None,
                 server_config: Config | None = None, isn_client: int = DEFAULT_ISN_CLIENT,
                 isn_server: int = DEFAULT_ISN_SERVER, delay_ns: int = DEFAULT_DELAY_NS,
                 faults: Iterable[Fault | str] = (), seed: int = 0, start_ns: int = EPOCH_NS) -> None:
        client = client or (CLIENT6 if ipv6 else CLIENT)
        server = server or (SERVER6 if ipv6 else SERVER)
        base = config or Config()
        self.start_ns = start_ns
        self.now = start_ns
        self.link = Link(delay_ns=delay_ns, faults=faults, seed=seed)
        self.log: list = []
        self.sent: list[Sent] = []
        self._queue: list = []
        self._order = 0
        self._ids: dict[int, int] = {}          # id(endpoint) -> endpoint number
        self._eps: list[tuple[PairHost, Endpoint]] = []
        self._group: list[int] = []             # endpoint number -> connection group (union-find parent)
        self._held: dict[str, list] = {"client": [], "server": []}   # reordered, waiting for a successor
        self.client = PairHost(self, "client", client, client_config or base, isn_client)
        self.server = PairHost(self, "server", server, server_config or base, isn_server)

    # -- faults and scheduling --------------------------------------------------------
    def add_fault(self, fault: Fault | str, action: str | None = None) -> Fault:
        return self.link.add(fault, action)

    def drop(self, rule: str) -> Fault:
        return self.link.add(rule, "drop")

    def at(self, time_ns: int, fn: Callable[[], object]) -> None:
        """Run ``fn()`` (an application call, usually) when the clock reaches ``time_ns``."""
        if time_ns < self.now:
            raise EmulatorError(f"cannot schedule at {time_ns}: the clock is already at {self.now}")
        self._push(time_ns, ("call", fn))

    def after(self, delay_ns: int, fn: Callable[[], object]) -> None:
        self.at(self.now + delay_ns, fn)

    # -- running ----------------------------------------------------------------------
    def run(self, until_ns: int | None = None) -> "Pair":
        """Process events in time order until ``until_ns`` (absolute), or until none are left.

        Without ``until_ns`` the run stops when nothing is scheduled and no timer
        is armed (or after an hour of virtual time). With it, the clock ends at
        ``until_ns`` even when nothing happens then.
        """
        limit = until_ns if until_ns is not None else self.now + DEFAULT_RUN_LIMIT_NS
        steps = 0
        while True:
            t_q = self._queue[0][0] if self._queue else None
            t_timer = self._next_deadline()
            if t_q is None and t_timer is None:
                break
            t = min(x for x in (t_q, t_timer) if x is not None)
            if t > limit:
                break
            self.now = max(self.now, t)
            if t_timer is not None and (t_q is None or t_timer <= t_q):
                self._fire_timers()
            else:
                _, _, (kind, item) = heapq.heappop(self._queue)
                if kind == "call":
                    item()
                elif kind == "arrive":
                    self._arrive(*item)
                elif kind == "release":
                    self._release(*item)
            steps += 1
            if steps > 1_000_000:
                raise EmulatorError("the run did not settle after a million events")
        if until_ns is not None and until_ns > self.now:
            self.now = until_ns
        return self

    def run_for(self, duration_ns: int) -> "Pair":
        return self.run(self.now + duration_ns)

    @property
    def elapsed_ns(self) -> int:
        return self.now - self.start_ns

    # -- what happened ------------------------------------------------------------------
    def transitions(self, side: str | None = None) -> list[Transition]:
        return [e.transition for e in self.log if isinstance(e, Moved) and side in (None, e.side)]

    def anomalies(self, side: str | None = None) -> list[Anomaly]:
        return [e.anomaly for e in self.log if isinstance(e, Noted) and side in (None, e.side)]

    def timeline(self, side: str | None = None) -> list[tuple[int, str, str, str]]:
        """``(elapsed_ns, side, from, to)`` for every transition, in order: easy to assert on."""
        return [(e.transition.time_ns - self.start_ns, e.side, e.transition.from_.name, e.transition.to.name)
                for e in self.log if isinstance(e, Moved) and side in (None, e.side)]

    def retransmissions(self) -> list[int]:
        """Numbers of the segments an endpoint sent again after its retransmission timer fired."""
        return [s.number for s in self.sent if s.retransmission]

    def capture(self, capture_at: str = "sender") -> list[tuple[int, Segment, Ref]]:
        """The frames a capture point would record: ``(time_ns, segment, ref)`` in frame order.

        ``sender``: every segment as it left its sender, lost ones included;
        ``client``/``server``: what that host's side of the link saw, i.e. what
        it sent (lost or not) and what reached it (duplicates twice).
        """
        if capture_at not in CAPTURE_POINTS:
            raise EmulatorError(f"capture point must be one of {', '.join(CAPTURE_POINTS)}")
        sent = {s.number: s for s in self.sent}
        items = []
        for i, e in enumerate(self.log):
            if isinstance(e, Sent) and capture_at in ("sender", e.sender):
                items.append((e.time_ns, i, e.seg, ("send", e.number)))
            elif isinstance(e, Arrival) and capture_at == e.receiver:
                items.append((e.time_ns, i, sent[e.number].seg, ("arrive", e.number, e.copy)))
        items.sort(key=lambda x: (x[0], x[1]))
        return [(t, seg, ref) for t, _, seg, ref in items]

    def frames(self, capture_at: str = "sender") -> dict[Ref, int]:
        """Frame number (from 1) of every ref, in the capture taken at ``capture_at``.

        A ref the capture point did not see maps to the frame of the same
        segment's other end (its first arrival, or its sending), if captured.
        """
        direct = {ref: n for n, (_, _, ref) in enumerate(self.capture(capture_at), 1)}
        out = dict(direct)
        for s in self.sent:
            sref = ("send", s.number)
            arrivals = sorted((r for r in direct if r[0] == "arrive" and r[1] == s.number), key=lambda r: r[2])
            if sref not in out and arrivals:
                out[sref] = direct[arrivals[0]]
            for copy in (0, 1):
                aref = ("arrive", s.number, copy)
                if aref not in out and sref in direct:
                    out[aref] = direct[sref]
        return out

    def connections(self) -> dict[int, int]:
        """Endpoint number -> connection number.

        Connections (a client endpoint and the server endpoint that accepted its
        SYN) are numbered 0, 1, ... in the order their first segment was sent,
        as ``rawfin analyze`` numbers what it reads. An endpoint that never sent
        or received a segment (a listener that accepted nothing) is counted
        with the connection most recently started before it appeared.
        """
        real: dict[int, int] = {}
        for s in self.sent:
            real.setdefault(self._root(s.ep), len(real))
        out: dict[int, int] = {}
        latest = 0
        started: set[int] = set()
        for e in self.log:
            if isinstance(e, Sent):
                started.add(real[self._root(e.ep)])
                latest = max(started)
            ep = getattr(e, "ep", None)
            if ep is not None and ep not in out:
                root = self._root(ep)
                out[ep] = real[root] if root in real else latest
        for n in range(len(self._group)):
            if n not in out:
                root = self._root(n)
                out[n] = real.get(root, latest)
        return out

    def events(self, capture_at: str = "sender") -> list[tuple[int, Transition | Anomaly]]:
        """Every transition and anomaly in order, each with its connection number: ``(conn, event)``.

        Each event's ``frame`` is the frame number in the capture :meth:`write_pcap` writes
        for the same ``capture_at`` (None for one a timer caused). The output layer makes
        records of them (``rawfin scenario --format jsonl`` writes what ``rawfin analyze``
        writes for that capture).
        """
        frames = self.frames(capture_at)
        conn = self.connections()
        out: list[tuple[int, Transition | Anomaly]] = []
        for e in self.log:
            if isinstance(e, Moved):
                out.append((conn.get(e.ep, 0), replace(e.transition, frame=frames.get(e.ref) if e.ref else None)))
            elif isinstance(e, Noted):
                out.append((conn.get(e.ep, 0), replace(e.anomaly, frame=frames.get(e.ref) if e.ref else None)))
        return out

    def pcap_packets(self, capture_at: str = "sender") -> list[tuple[int, bytes]]:
        """``(time_ns, raw IP bytes)`` of every frame (imports the Scapy codec)."""
        from rawfin.wire.codec import to_bytes
        return [(t, to_bytes(seg)) for t, seg, _ in self.capture(capture_at)]

    def write_pcap(self, target, capture_at: str = "sender") -> int:
        """Write the capture (classic pcap, raw IP link type 101); returns the frame count."""
        from rawfin.wire.pcapio import LINKTYPE_RAW, PcapWriter
        packets = self.pcap_packets(capture_at)
        w = PcapWriter(target, LINKTYPE_RAW)
        try:
            for t, data in packets:
                w.write(data, t)
        except BaseException:
            w.abort()
            raise
        w.close()
        return len(packets)

    # -- internals ----------------------------------------------------------------------
    def _other(self, host: PairHost) -> PairHost:
        return self.server if host is self.client else self.client

    def _push(self, t: int, item: tuple) -> list:
        self._order += 1
        entry = [t, self._order, item]
        heapq.heappush(self._queue, entry)
        return entry

    def _register(self, host: PairHost, ep: Endpoint) -> int:
        n = len(self._eps)
        self._ids[id(ep)] = n
        self._eps.append((host, ep))
        self._group.append(n)
        return n

    def _root(self, n: int) -> int:
        while self._group[n] != n:
            n = self._group[n]
        return n

    def _join(self, ep: Endpoint, other: int) -> None:
        a, b = self._root(self._ids[id(ep)]), self._root(other)
        if a != b:
            self._group[a] = b

    def _next_deadline(self) -> int | None:
        ds = [d for h in (self.client, self.server) if (d := h.host.next_deadline()) is not None]
        return min(ds) if ds else None

    def _fire_timers(self) -> None:
        # every endpoint due, in the order the endpoints were made (both hosts' together)
        now = self.now
        for host, ep in list(self._eps):
            d = ep.next_deadline()
            if d is not None and d <= now:
                self._take(host, host.host.fire(ep, now), None)

    def _take(self, host: PairHost, step: Step, ref: Ref | None, sender_ep: int | None = None) -> None:
        """Log what one host step did (its call, its endpoints, its result), then put its segments on the link."""
        for ep in step.created:
            self._register(host, ep)
        ep = step.endpoint
        if step.accepted and sender_ep is not None:
            self._join(ep, sender_ep)
        if step.call is not None:
            self.log.append(Called(side=host.side, time_ns=self.now, call=step.call, ep=self._ids[id(ep)],
                                   error=step.error))
        if step.stand_in:
            n = self._ids[id(step.owner)] if step.owner is not None else sender_ep
        else:
            n = self._ids.get(id(ep))
        self._absorb(host, ep, step.result, ref, 0 if n is None else n)

    def _absorb(self, host: PairHost, ep: Endpoint, res: Result, ref: Ref | None, n: int) -> None:
        base = len(self.sent)
        for t in res.transitions:
            cause = ref
            # a transition an application input caused is seen on the wire as the segment it sends
            want = {Input.CONNECT: Flags.SYN, Input.CLOSE: Flags.FIN, Input.ABORT: Flags.RST}.get(t.input)
            if want is not None:
                cause = None
                for i, seg in enumerate(res.segments):
                    if seg.flags & want:
                        cause = ("send", base + i + 1)
                        break
            self.log.append(Moved(side=host.side, transition=t, ref=cause, ep=n))
        for a in res.anomalies:
            self.log.append(Noted(side=host.side, anomaly=a, ref=ref, ep=n))
        if host._ready_waiters and host.ready:
            waiters, host._ready_waiters = host._ready_waiters, []
            for fn in waiters:
                self._push(self.now, ("call", fn))
        if host._eof_waiters and any(t.input is Input.RCV_FIN and t.from_ is not State.TIME_WAIT
                                     for t in res.transitions):
            waiters, host._eof_waiters = host._eof_waiters, []
            for delay, fn in waiters:
                self._push(self.now + delay, ("call", fn))
        for seg in res.segments:
            retrans = any(seg is r for r in res.retransmissions)
            self._transmit(host, ep, n, seg, retrans)

    def _transmit(self, host: PairHost, ep: Endpoint, n: int, seg: Segment, retrans: bool) -> None:
        number = len(self.sent) + 1
        acting = self.link.decide(number, host.side, seg, is_final_ack(ep, seg))
        dropped = any(f.action == "drop" for f in acting)
        extra = sum(f.by_ns for f in acting if f.action == "delay")
        dups = [f for f in acting if f.action == "duplicate"]
        reorders = [f for f in acting if f.action == "reorder"]
        sent = Sent(number=number, time_ns=self.now, sender=host.side, seg=seg, retransmission=retrans,
                    dropped=dropped, delay_ns=extra if not dropped else 0,
                    duplicated=bool(dups) and not dropped, reordered=bool(reorders) and not dropped,
                    rules=tuple(f.text for f in acting), ep=n)
        self.sent.append(sent)
        self.log.append(sent)
        if dropped:
            return
        arrive_at = self.now + self.link.delay_ns + extra
        receiver = self._other(host)
        held = self._held[host.side]
        if reorders:
            hold = max(f.by_ns for f in reorders)
            entry = self._push(arrive_at + hold, ("release", (host.side, number)))
            held.append((number, seg, receiver, n, entry))
        else:
            self._push(arrive_at, ("arrive", (receiver, number, 0, seg, n)))
            # segments held back for reordering arrive just after this one
            for k, (hnum, hseg, hrecv, hn, hentry) in enumerate(held):
                hentry[2] = ("cancelled", None)
                self._push(arrive_at + (k + 1) * US, ("arrive", (hrecv, hnum, 0, hseg, hn)))
            held.clear()
        for f in dups:
            self._push(arrive_at + f.by_ns, ("arrive", (receiver, number, 1, seg, n)))

    def _release(self, side: str, number: int) -> None:
        held = self._held[side]
        for k, (hnum, hseg, hrecv, hn, _) in enumerate(held):
            if hnum == number:
                del held[k]
                self._arrive(hrecv, hnum, 0, hseg, hn)
                return

    def _arrive(self, receiver: PairHost, number: int, copy: int, seg: Segment, sender_ep: int) -> None:
        self.log.append(Arrival(number=number, copy=copy, time_ns=self.now, receiver=receiver.side))
        ref = ("arrive", number, copy)
        for step in receiver.host.deliver(seg, self.now):
            self._take(receiver, step, ref, sender_ep)
