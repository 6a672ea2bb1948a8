"""One host's TCP, sans-IO: an address, its connections and listeners, the application's calls.

A :class:`Host` holds the core's :class:`~rawfin.core.endpoint.Endpoint` objects of one
machine: the listeners (one per port), the connections (keyed by local port and the remote
address), and the *current* connection, the one the application's calls act on (the last
one it connected or accepted). It reads no clock and owns no socket: every call takes
``now`` (integer ns) and returns a :class:`Step`, what happened, for the driver to act on
(put ``step.result.segments`` on a link, log the transitions, register the endpoints in
``step.created``). The emulator (:class:`rawfin.sim.emulator.Pair`) and ``rawfin peer
--file`` (:mod:`rawfin.linux.peerfile`) drive it; a packetdrill-style runner can too::

    from rawfin.sim.host import Host, perform

    h = Host("server", ("192.0.2.1", 80), Config(), isn=2000)
    step = h.listen(now)                      # or perform(h, "listen", now)
    for step in h.deliver(syn, now):          # a segment from the network
        wire = step.result.segments           # what the host sends back (the SYN,ACK)
    for step in h.due(later):                 # timers: retransmission, TIME_WAIT's 2MSL
        ...
    h.next_deadline()                         # when to call due() next

The Linux behaviours a host adds to the endpoints' own: a SYN for a port with a listener
is taken by that listener, which becomes the connection while a fresh listener takes its
place; a segment for a pair nobody has is answered as a closed port answers it (RST);
``listen()``/``connect()`` on a port still in use (TIME_WAIT included) is refused with
:class:`AddressInUse` unless ``reuse_addr`` (then only another listener is in the way).

:func:`perform` is the one place an application call's *name* (``"listen"``,
``"close-listener"``... as scenario files and replays spell them) becomes a method call, on
a :class:`Host` or on anything with the same methods (the kernel's sockets in
:mod:`rawfin.linux.peerfile`).
"""

from __future__ import annotations

import errno
from dataclasses import dataclass

from rawfin.core import seq as sq
from rawfin.core.endpoint import Config, Endpoint
from rawfin.core.errors import EXIT_USAGE, RawfinError
from rawfin.core.events import Anomaly, Result
from rawfin.core.segment import Segment, fmt_endpoint
from rawfin.core.states import Input, State
from rawfin.core.units import SEC

__all__ = ["SIDES", "other", "Host", "Step", "HostError", "AddressInUse", "perform", "CALLS", "ISN_STEP", "final_ack", "is_final_ack", "OPENING",
           "payload"]

#: The two sides of a connection, as scenarios, replays and the emulator name them.
SIDES = ("client", "server")


def other(side: str) -> str:
    """The other side: ``"server"`` for ``"client"`` and the reverse."""
    return "server" if side == "client" else "client"


#: The application calls, as scenario files and replays name them.
CALLS = ("listen", "connect", "send", "close", "shutdown", "abort", "close-listener")
ISN_STEP = 100_000                      # how far each new connection's ISN moves on
#: States of a connection still opening: a blocking send()/close() waits for the handshake.
OPENING = (State.CLOSED, State.LISTEN, State.SYN_SENT, State.SYN_RECEIVED)


class HostError(RawfinError):
    """A call the host cannot carry out (no connection to act on, no listener to close)."""

    exit_code = EXIT_USAGE


class AddressInUse(HostError):
    """``listen()``/``connect()`` refused: the address and port are taken (EADDRINUSE).

    ``holder`` is the endpoint in the way (usually one in TIME_WAIT), ``until_ns`` when its
    TIME_WAIT ends (if it is in TIME_WAIT), and ``step`` the refused call as a :class:`Step`
    (its ``error`` set, its result the ``address_in_use`` anomaly), for the driver to log.
    """

    errno = errno.EADDRINUSE

    def __init__(self, message: str, holder: Endpoint, until_ns: int | None, step: "Step | None" = None) -> None:
        super().__init__(message)
        self.holder = holder
        self.until_ns = until_ns
        self.step = step


@dataclass(frozen=True, slots=True, kw_only=True)
class Step:
    """What one call into a :class:`Host` did.

    ``endpoint`` acted and ``result`` is what it returned. ``call`` is the application call
    as text (``"send(100 bytes)"``; None for a segment or a timer), ``error`` why it was
    refused. ``created`` are the endpoints the step made, in order (a listener, a connection,
    the fresh listener that replaces one that accepted). ``accepted``: ``endpoint`` is a
    listener that took a SYN and is now that connection. ``stand_in``: nobody had the pair,
    ``endpoint`` is a throwaway that answered as a closed port; ``owner`` is the closed
    connection that had the pair, if any.
    """

    endpoint: Endpoint
    result: Result
    call: str | None = None
    error: str | None = None
    created: tuple[Endpoint, ...] = ()
    accepted: bool = False
    stand_in: bool = False
    owner: Endpoint | None = None

    @property
    def eof(self) -> bool:
        """The application reads end-of-file from here on: the peer's FIN arrived (TIME_WAIT's re-ACK aside)."""
        return any(t.input is Input.RCV_FIN and t.from_ is not State.TIME_WAIT for t in self.result.transitions)


def final_ack(seg: Segment, fin_sent: bool, peer_fin_seq: int | None) -> bool:
    """``seg`` is the last segment of a close: a pure ACK of the peer's FIN (``peer_fin_seq``, None
    while none is known) from a side that has sent its own FIN. The one test, whoever knows the
    facts: the sender's endpoint (:func:`is_final_ack`) or a driver watching another stack's wire."""
    return seg.pure_ack and fin_sent and peer_fin_seq is not None and seg.ack == sq.add(peer_fin_seq, 1)


def is_final_ack(ep: Endpoint, seg: Segment) -> bool:
    """``seg``, sent by ``ep``, is the last segment of a close: the ACK of the peer's FIN after ep's own FIN."""
    return final_ack(seg, ep.fin_seq is not None, ep.peer_fin_seq)


class Host:
    """One host: an IP address (and its default port), a Config for its connections, an ISN to start from.

    ``side`` names it in messages (``"client"``, ``"server"``); ``origin_ns`` is the time
    messages count from (``t=1.234 s``). ``endpoints`` lists every endpoint it ever made, in
    order; ``listeners`` maps port -> listening endpoint; ``current`` is the connection the
    application's calls act on; ``received`` counts the bytes it read.
    """

    def __init__(self, side: str, addr: tuple[str, int], config: Config | None = None, isn: int = 0, *,
                 origin_ns: int = 0) -> None:
        self.side = side
        self.ip, self.port = addr
        self.config = config or Config()
        self.next_isn = sq.wrap(isn)
        self.origin_ns = origin_ns
        self.endpoints: list[Endpoint] = []
        self.table: dict[tuple[int, str, int], Endpoint] = {}     # (local port, remote ip, remote port)
        self.listeners: dict[int, Endpoint] = {}
        self.current: Endpoint | None = None
        self.received = 0           # bytes the connections delivered to the application, over the run

    def __repr__(self) -> str:
        return f"<Host {self.side} {fmt_endpoint(self.ip, self.port)} {self.state}>"

    @property
    def addr(self) -> tuple[str, int]:
        return (self.ip, self.port)

    @property
    def state(self) -> State | None:
        """The state of the current connection (None before there is one)."""
        return self.current.state if self.current is not None else None

    @property
    def ready(self) -> bool:
        """The current connection is synchronized (its handshake is over)."""
        return self.current is not None and self.current.state not in OPENING

    # -- application calls ---------------------------------------------------------------
    def listen(self, now: int, *, port: int | None = None, iss: int | None = None,
               reuse_addr: bool = False) -> Step:
        """``bind()`` + ``listen()`` on ``port`` (default: the host's). Raises :class:`AddressInUse`."""
        port = self.port if port is None else port
        call = f"listen({fmt_endpoint(self.ip, port)})"
        self._check_bind(port, call, reuse_addr, now)
        ep = self._new((self.ip, port), iss)
        self.listeners[port] = ep
        return Step(endpoint=ep, result=ep.listen(now), call=call, created=(ep,))

    def close_listener(self, now: int, *, port: int | None = None) -> Step:
        """Close the listening socket (the connections it accepted are not touched)."""
        port = self.port if port is None else port
        ep = self.listeners.pop(port, None)
        if ep is None:
            raise HostError(f"{self.side}: no listener on port {port}")
        return Step(endpoint=ep, result=ep.close(now), call=f"close() listener {fmt_endpoint(self.ip, port)}")

    def connect(self, now: int, remote: tuple[str, int], *, port: int | None = None,
                iss: int | None = None) -> Step:
        """A new connection from ``port`` (default: the host's) to ``remote``; it becomes the current one."""
        port = self.port if port is None else port
        call = f"connect({fmt_endpoint(*remote)})"
        self._check_bind(port, call, False, now)
        ep = self._new((self.ip, port), iss)
        self.table[(port, remote[0], remote[1])] = ep
        self.current = ep
        return Step(endpoint=ep, result=ep.connect(remote, now), call=call, created=(ep,))

    def send(self, now: int, data: bytes) -> Step:
        ep = self._conn("send")
        return Step(endpoint=ep, result=ep.send(data, now), call=f"send({len(data)} bytes)")

    def close(self, now: int, data: bytes = b"") -> Step:
        """close(): the FIN, carrying ``data`` when given."""
        ep = self._conn("close")
        return Step(endpoint=ep, result=ep.close(now, data),
                    call=f"close() with {len(data)} bytes" if data else "close()")

    def shutdown(self, now: int, data: bytes = b"") -> Step:
        """shutdown(SHUT_WR): the FIN as close() sends it, carrying ``data`` when given (bytes the
        application wrote just before); the connection still reads."""
        ep = self._conn("shutdown")
        if data:
            return Step(endpoint=ep, result=ep.shutdown(now, data=data),
                        call=f"shutdown(SHUT_WR) after {len(data)} bytes")
        return Step(endpoint=ep, result=ep.shutdown(now), call="shutdown(SHUT_WR)")

    def abort(self, now: int) -> Step:
        """close() with SO_LINGER 0: an RST instead of a FIN."""
        ep = self._conn("abort")
        return Step(endpoint=ep, result=ep.abort(now), call="abort()")

    # -- the network and the clock -----------------------------------------------------------
    def deliver(self, seg: Segment, now: int) -> list[Step]:
        """A segment for this host arrives: its connection takes it, or a listener, or a closed port answers.

        Usually one step; two when a connection in TIME_WAIT gives way to a new SYN on its
        pair (its own step, then the listener's or the closed port's answer to the SYN).
        """
        steps = self._deliver(seg, now)
        for step in steps:
            self.received += len(step.result.data)
        return steps

    def _deliver(self, seg: Segment, now: int) -> list[Step]:
        key = (seg.dport, seg.src, seg.sport)
        ep = self.table.get(key)
        steps = []
        if ep is not None and ep.state is not State.CLOSED:
            res = ep.receive(seg, now)
            steps.append(Step(endpoint=ep, result=res))
            if not any(t.input is Input.RCV_NEW_SYN for t in res.transitions):
                return steps
            # TIME_WAIT gave way to a new SYN on the same pair: the listener takes it
        lst = self.listeners.get(seg.dport)
        if lst is not None and seg.syn and not seg.has_ack and not seg.rst:
            self.table[key] = lst
            self.current = lst
            # the listening socket stays: a fresh one takes its place, silently
            fresh = self._new(lst.local, None)
            fresh.listen(now)
            self.listeners[seg.dport] = fresh
            steps.append(Step(endpoint=lst, result=lst.receive(seg, now), created=(fresh,), accepted=True))
            return steps
        ghost = Endpoint(local=(self.ip, seg.dport), config=self.config)
        steps.append(Step(endpoint=ghost, result=ghost.receive(seg, now), stand_in=True, owner=ep))
        return steps

    def next_deadline(self) -> int | None:
        """The earliest time a timer of one of the host's endpoints falls due (None: nothing armed)."""
        ds = [d for ep in self.endpoints if (d := ep.next_deadline()) is not None]
        return min(ds) if ds else None

    def due(self, now: int) -> list[Step]:
        """Fire every timer due at ``now``: one step per endpoint whose timer fell due, in the order they were made."""
        return [self.fire(ep, now) for ep in list(self.endpoints)
                if (d := ep.next_deadline()) is not None and d <= now]

    def fire(self, ep: Endpoint, now: int) -> Step:
        """Fire ``ep``'s timer (one of this host's endpoints, due at ``now``)."""
        step = Step(endpoint=ep, result=ep.handle_timer(now))
        d = ep.next_deadline()
        if d is not None and d <= now:
            raise HostError(f"{ep!r}: a timer due at {d} did not clear when fired at {now}")
        return step

    # -- internals ---------------------------------------------------------------------------
    def _conn(self, call: str) -> Endpoint:
        if self.current is None:
            raise HostError(f"{self.side}: {call}() needs a connection, and there is none yet")
        return self.current

    def _new(self, local: tuple[str, int], iss: int | None) -> Endpoint:
        if iss is not None:
            self.next_isn = sq.wrap(iss)
        ep = Endpoint(local=local, iss=self.next_isn, config=self.config)
        self.next_isn = sq.add(self.next_isn, ISN_STEP)
        self.endpoints.append(ep)
        return ep

    def _check_bind(self, port: int, call: str, reuse_addr: bool, now: int) -> None:
        for ep in self.endpoints:
            if ep.local[1] != port or ep.state is State.CLOSED:
                continue
            if ep.state is not State.LISTEN and reuse_addr:
                continue        # SO_REUSEADDR: only another listener is in the way
            until = ep.time_wait_at if ep.state is State.TIME_WAIT else None
            what = f"{ep.name} ↔ {ep.peer_name} is in {ep.state.name}"
            if until is not None:
                what += f" until t={(until - self.origin_ns) / SEC:.3f} s"
            msg = f"{call} refused: EADDRINUSE, {what}"
            error = "EADDRINUSE" + (f" (TIME_WAIT until {(until - self.origin_ns) / SEC:.3f} s)" if until is not None
                                    else f" ({ep.state.name} on this port)")
            a = Anomaly(endpoint=fmt_endpoint(self.ip, port), kind="address_in_use", detail=msg, time_ns=now)
            raise AddressInUse(msg, ep, until, Step(endpoint=ep, result=Result(anomalies=(a,)), call=call,
                                                    error=error))


def payload(n: int) -> bytes:
    """``n`` generated bytes (``abc...zabc...``): what a call that sends "N bytes" sends."""
    if n < 0:
        raise HostError("cannot send a negative number of bytes")
    pattern = b"abcdefghijklmnopqrstuvwxyz"
    return (pattern * (n // len(pattern) + 1))[:n]


def perform(app, call: str, now: int, *, remote: tuple[str, int] | None = None, data: bytes = b"",
            port: int | None = None, iss: int | None = None, reuse_addr: bool = False):
    """Make the application call named ``call`` on ``app`` (a :class:`Host`, or a driver with its methods).

    The one place a call's name becomes a method: ``listen`` (``port``, ``iss``,
    ``reuse_addr``), ``connect`` (to ``remote``, from ``port``, ``iss``), ``send`` and
    ``close`` and ``shutdown`` (``data``), ``abort``, ``close-listener`` (``port``). Returns
    what the method returns.
    """
    if call == "listen":
        return app.listen(now, port=port, iss=iss, reuse_addr=reuse_addr)
    if call == "connect":
        return app.connect(now, remote, port=port, iss=iss)
    if call == "send":
        return app.send(now, data)
    if call == "close":
        return app.close(now, data)
    if call == "shutdown":
        return app.shutdown(now, data)
    if call == "abort":
        return app.abort(now)
    if call == "close-listener":
        return app.close_listener(now, port=port)
    raise HostError(f"unknown application call {call!r} (one of {', '.join(CALLS)})")
