"""Two sans-IO endpoints over an in-memory link with a virtual clock.

Like h11's ``ConnectionPair`` and aioquic's ``transfer()``/``drop()``: every
segment an endpoint emits goes on the wire, is stamped with a frame number and
the virtual time, and is delivered to the endpoint that owns its destination
address, until nothing more is in flight. Nothing sleeps: the clock only moves
when a test sets it (:meth:`Pair.at`) or jumps it to the earliest armed timer
(:meth:`Pair.advance_to_next_deadline`). Everything is integer nanoseconds.

    p = Pair.established()
    p.at(1 * SEC).call(p.client, "close")
    p.at(2 * SEC).call(p.server, "close")
    p.run_timers()
    assert p.client.state is State.CLOSED

``p.transitions`` and ``p.wire`` hold every transition and every segment in the
order they happened.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from rawfin.core.endpoint import Config, Endpoint
from rawfin.core.events import Anomaly, Result, Transition
from rawfin.core.segment import Flags, Segment, fmt_endpoint
from rawfin.core.states import State

CLIENT = ("192.0.2.2", 50001)
SERVER = ("192.0.2.1", 80)
CLIENT_ISS = 999
SERVER_ISS = 1999

Drop = Callable[[Segment], bool]


@dataclass(frozen=True, slots=True)
class Wire:
    """One segment as the link carried it."""

    frame: int          # 1-based, in the order segments went on the wire
    time_ns: int
    sender: str         # "client" or "server"
    seg: Segment
    dropped: bool


def drop_first(pred: Drop, n: int = 1) -> Drop:
    """A drop predicate that drops the first ``n`` segments matching ``pred``."""
    left = [n]

    def drop(seg: Segment) -> bool:
        if left[0] > 0 and pred(seg):
            left[0] -= 1
            return True
        return False

    return drop


def is_pure_ack(seg: Segment) -> bool:
    return seg.flags == Flags.ACK and seg.data_len == 0


class Pair:
    """A client and a server on one zero-latency link, driven by a virtual clock."""

    MAX_STEPS = 10_000

    def __init__(self, client: Endpoint, server: Endpoint, *, now: int = 0, drop: Drop | None = None) -> None:
        self.client = client
        self.server = server
        self.now = now
        self.drop: Drop = drop or (lambda seg: False)
        self.wire: list[Wire] = []
        self.transitions: list[Transition] = []
        self.anomalies: list[Anomaly] = []
        self.data: dict[str, bytearray] = {"client": bytearray(), "server": bytearray()}
        self.results: list[tuple[str, Result]] = []
        self._queue: list[tuple[str, Segment]] = []

    # -- construction --------------------------------------------------------------
    @classmethod
    def new(cls, *, client_iss: int = CLIENT_ISS, server_iss: int = SERVER_ISS,
            config: Config | None = None, client_config: Config | None = None,
            server_config: Config | None = None, now: int = 0) -> "Pair":
        c = Endpoint(local=CLIENT, iss=client_iss, config=client_config or config)
        s = Endpoint(local=SERVER, iss=server_iss, config=server_config or config)
        return cls(c, s, now=now)

    @classmethod
    def established(cls, **kw) -> "Pair":
        """Both sides ESTABLISHED after a real three-way handshake at the pair's start time."""
        p = cls.new(**kw)
        p.call(p.server, "listen")
        p.call(p.client, "connect", SERVER)
        assert p.client.state is State.ESTABLISHED, p.client
        assert p.server.state is State.ESTABLISHED, p.server
        return p

    # -- names -----------------------------------------------------------------------
    def role(self, ep: Endpoint) -> str:
        return "client" if ep is self.client else "server"

    def other(self, ep: Endpoint) -> Endpoint:
        return self.server if ep is self.client else self.client

    def _owner(self, seg: Segment) -> Endpoint | None:
        for ep in (self.client, self.server):
            if (seg.dst, seg.dport) == tuple(ep.local):
                return ep
        return None

    # -- the clock ---------------------------------------------------------------------
    def at(self, now: int) -> "Pair":
        """Set the virtual clock (never backwards)."""
        assert now >= self.now, f"time goes forward: {now} < {self.now}"
        self.now = now
        return self

    # -- driving -----------------------------------------------------------------------
    def call(self, ep: Endpoint, method: str, *args, flush: bool = True, **kw) -> Result:
        """Call an application method (``close``, ``send``...) with ``now``; put its output on the wire."""
        fn = getattr(ep, method)
        if method in ("connect", "send"):      # connect(remote, now), send(data, now)
            res = fn(*args, self.now, **kw)
        else:                                  # listen/close/shutdown/abort(now, ...)
            res = fn(self.now, *args, **kw)
        self.inject(ep, res)
        if flush:
            self.flush()
        return res

    def inject(self, ep: Endpoint, res: Result) -> None:
        """Record what a call into ``ep`` produced and queue its segments (not yet delivered)."""
        who = self.role(ep)
        self.results.append((who, res))
        self.transitions.extend(res.transitions)
        self.anomalies.extend(res.anomalies)
        self.data[who] += res.data
        for seg in res.segments:
            self._put(who, seg)

    def _put(self, who: str, seg: Segment) -> None:
        frame = len(self.wire) + 1
        seg = seg.with_(frame=frame, time_ns=self.now)
        dropped = bool(self.drop(seg))
        self.wire.append(Wire(frame=frame, time_ns=self.now, sender=who, seg=seg, dropped=dropped))
        if not dropped:
            self._queue.append((who, seg))

    def flush(self) -> None:
        """Deliver segments, in order, until nothing is in flight."""
        steps = 0
        while self._queue:
            steps += 1
            assert steps < self.MAX_STEPS, "the link never went quiet"
            _, seg = self._queue.pop(0)
            dst = self._owner(seg)
            if dst is None:
                continue
            self.inject(dst, dst.receive(seg, self.now))

    def deliver(self, ep: Endpoint, seg: Segment) -> Result:
        """Hand-craft a segment to ``ep`` (as if the other side sent it), then flush the replies."""
        sender = self.role(self.other(ep))
        frame = len(self.wire) + 1
        seg = seg.with_(frame=frame, time_ns=self.now)
        self.wire.append(Wire(frame=frame, time_ns=self.now, sender=sender, seg=seg, dropped=False))
        res = ep.receive(seg, self.now)
        self.inject(ep, res)
        self.flush()
        return res

    # -- timers ------------------------------------------------------------------------
    def next_deadline(self) -> int | None:
        ds = [d for d in (self.client.next_deadline(), self.server.next_deadline()) if d is not None]
        return min(ds) if ds else None

    def advance_to_next_deadline(self) -> int | None:
        """Jump the clock to the earliest armed timer, fire what is due, deliver the results.

        Returns the new time, or None when no timer is armed.
        """
        d = self.next_deadline()
        if d is None:
            return None
        self.at(max(d, self.now))
        for ep in (self.client, self.server):
            nd = ep.next_deadline()
            if nd is not None and nd <= self.now:
                self.inject(ep, ep.handle_timer(self.now))
        self.flush()
        return self.now

    def run_timers(self, until: int | None = None, max_steps: int = 1000) -> None:
        """Advance through deadlines until none is armed (or the next is after ``until``)."""
        for _ in range(max_steps):
            d = self.next_deadline()
            if d is None or (until is not None and d > until):
                return
            self.advance_to_next_deadline()
        raise AssertionError("timers never went quiet")

    # -- reading what happened -------------------------------------------------------------
    def mark(self) -> tuple[int, int]:
        """A position in the wire and transition logs, for :meth:`wire_since` / :meth:`transitions_since`."""
        return len(self.wire), len(self.transitions)

    def wire_since(self, mark: tuple[int, int], *, delivered_only: bool = False) -> list[Wire]:
        return [w for w in self.wire[mark[0]:] if not (delivered_only and w.dropped)]

    def transitions_since(self, mark: tuple[int, int]) -> list[Transition]:
        return self.transitions[mark[1]:]

    def path(self, ep: Endpoint, mark: tuple[int, int] = (0, 0)) -> list[tuple[int, State, State]]:
        """``(time_ns, from, to)`` of every transition of ``ep`` since ``mark``."""
        name = fmt_endpoint(*ep.local)
        return [(t.time_ns, t.from_, t.to) for t in self.transitions[mark[1]:] if t.endpoint == name]

    def states(self, ep: Endpoint, mark: tuple[int, int] = (0, 0)) -> list[State]:
        """The chain of states ``ep`` went through since ``mark`` (first ``from`` then every ``to``)."""
        p = self.path(ep, mark)
        return [p[0][1]] + [to for _, _, to in p] if p else [ep.state]


# -- an endpoint in any state, reached with real segments ------------------------------------
def _drop_all(seg: Segment) -> bool:
    return True


def in_state(state: State, *, passive: bool = True, close_call: str = "close", **kw) -> tuple[Pair, Endpoint]:
    """A pair whose endpoint of interest is in ``state``, reached by running real segments.

    Returns ``(pair, ep)``. The pair's drop predicate is reset to "drop nothing"
    afterwards. ``passive`` picks, for SYN_RECEIVED, a passive open (LISTEN ->
    SYN_RECEIVED) or a simultaneous open (SYN_SENT -> SYN_RECEIVED). ``close_call``
    is how FIN_WAIT_1/FIN_WAIT_2 are reached: ``close`` (the application is gone)
    or ``shutdown`` (a half-close: it still reads). Keyword arguments go to
    :meth:`Pair.new`.
    """
    S = State
    p = Pair.new(**kw)
    c, s = p.client, p.server
    if state is S.CLOSED:
        ep = c
    elif state is S.LISTEN:
        p.call(s, "listen")
        ep = s
    elif state is S.SYN_SENT:
        p.drop = _drop_all
        p.call(c, "connect", SERVER)
        ep = c
    elif state is S.SYN_RECEIVED and passive:
        p.call(s, "listen")
        p.drop = lambda seg: seg.syn and seg.has_ack      # lose the SYN,ACK
        p.call(c, "connect", SERVER)
        ep = s
    elif state is S.SYN_RECEIVED:
        p.drop = lambda seg: seg.has_ack                  # the SYNs cross; lose everything after
        p.call(c, "connect", SERVER, flush=False)
        p.call(s, "connect", CLIENT, flush=False)
        p.flush()
        ep = c
    else:
        p.call(s, "listen")
        p.call(c, "connect", SERVER)
        if state is S.ESTABLISHED:
            ep = c
        elif state is S.FIN_WAIT_1:
            p.drop = _drop_all
            p.call(c, close_call)
            ep = c
        elif state is S.FIN_WAIT_2:
            p.call(c, close_call)
            ep = c
        elif state is S.CLOSE_WAIT:
            p.call(c, "close")
            ep = s
        elif state is S.CLOSING:
            p.drop = lambda seg: not seg.fin                  # the FINs cross; their ACKs are lost
            p.call(c, "close", flush=False)
            p.call(s, "close", flush=False)
            p.flush()
            ep = c
        elif state is S.LAST_ACK:
            p.call(c, "close")
            p.drop = _drop_all
            p.call(s, "close")
            ep = s
        elif state is S.TIME_WAIT:
            p.call(c, "close")
            p.call(s, "close")
            ep = c
        else:  # pragma: no cover
            raise AssertionError(state)
    p.drop = lambda seg: False
    assert ep.state is state, (state, ep)
    return p, ep
