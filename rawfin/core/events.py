"""What the core reports: transition records, anomalies, and the result of each call."""

from __future__ import annotations

from dataclasses import dataclass, field

from rawfin.core.segment import Segment
from rawfin.core.states import Input, State


@dataclass(frozen=True, slots=True, kw_only=True)
class Transition:
    """An endpoint moved from one state to another (or, for TIME_WAIT's re-ACK, stayed)."""

    endpoint: str
    peer: str
    from_: State
    to: State
    input: Input
    cause: str
    time_ns: int
    frame: int | None = None
    #: the capture cannot decide this move: the states the other reading would enter instead, and when
    #: that reading holds ("the FIN in frame 12 arrived and its ACK was lost before the capture point")
    alternative: tuple[State, ...] = ()
    inferred: str = ""
    conn: int | None = None       # the observer's number for the connection (None from a lone endpoint)
    values: tuple = ()            # the numbers the cause names, by name: (("ack", 1102), ("fin_seq", 1101))

    def __post_init__(self) -> None:
        if not isinstance(self.from_, State) or not isinstance(self.to, State):
            raise ValueError("from_ and to must be State members")
        if not isinstance(self.input, Input):
            raise ValueError("input must be an Input member")
        if not isinstance(self.time_ns, int):
            raise ValueError(f"time_ns must be integer nanoseconds, got {self.time_ns!r}")
        if bool(self.alternative) != bool(self.inferred) or not all(isinstance(s, State) for s in self.alternative):
            raise ValueError("an inferred transition names its alternative states and when they would hold")
        _check_values(self.values)

    def value(self, name: str):
        """The number the cause names ``name`` (as its rule's template does), or None."""
        return dict(self.values).get(name)


@dataclass(frozen=True, slots=True, kw_only=True)
class Anomaly:
    """Something a correct peer would not do, or a capture that lacks what it should show."""

    endpoint: str
    kind: str
    detail: str
    time_ns: int
    frame: int | None = None
    conn: int | None = None
    values: tuple = ()            # the numbers the detail names, by name

    def __post_init__(self) -> None:
        if not self.kind or not self.kind.replace("_", "").isalnum():
            raise ValueError(f"anomaly kind must be a snake_case word, got {self.kind!r}")
        if not isinstance(self.time_ns, int):
            raise ValueError(f"time_ns must be integer nanoseconds, got {self.time_ns!r}")
        _check_values(self.values)

    def value(self, name: str):
        """The number the detail names ``name`` (as its rule's template does), or None."""
        return dict(self.values).get(name)


def _check_values(values) -> None:
    if not isinstance(values, tuple) or not all(isinstance(v, tuple) and len(v) == 2 and isinstance(v[0], str)
                                                for v in values):
        raise ValueError(f"values must be (name, value) pairs, got {values!r}")


@dataclass(frozen=True, slots=True, kw_only=True)
class ConnectionEnd:
    """A connection the observer is done with: who was who, how it closed, where each side ended."""

    conn: int
    client: str
    server: str
    server_guessed: bool
    active_closer: str | None      # who sent the first FIN
    passive_closer: str | None
    reset_by: str | None           # a reset close: who sent the (first) RST; None for any other close
    close: str                     # rawfin.core.rules.CLOSE_KINDS
    final: tuple                   # ((client, state name), (server, state name))
    first_frame: int | None
    last_frame: int | None
    first_time_ns: int
    last_time_ns: int
    packets: int
    mid_stream: bool
    server_active_close: bool      # the server closed first: TIME_WAIT on the server's port
    anomalies: tuple = ()          # ((kind, count), ...) sorted by kind
    vlan: tuple = ()

    def __post_init__(self) -> None:
        if not isinstance(self.conn, int) or not isinstance(self.packets, int):
            raise ValueError("conn and packets must be integers")
        if not isinstance(self.first_time_ns, int) or not isinstance(self.last_time_ns, int):
            raise ValueError("times must be integer nanoseconds")
        if len(self.final) != 2 or not all(len(f) == 2 for f in self.final):
            raise ValueError(f"final must be ((client, state), (server, state)), got {self.final!r}")


@dataclass(frozen=True, slots=True, kw_only=True)
class Result:
    """Everything one call into an endpoint produced."""

    segments: tuple[Segment, ...] = ()
    transitions: tuple[Transition, ...] = ()
    anomalies: tuple[Anomaly, ...] = ()
    data: bytes = b""
    retransmissions: tuple[Segment, ...] = field(default=())

    def __add__(self, other: "Result") -> "Result":
        return Result(segments=self.segments + other.segments,
                      transitions=self.transitions + other.transitions,
                      anomalies=self.anomalies + other.anomalies,
                      data=self.data + other.data,
                      retransmissions=self.retransmissions + other.retransmissions)


EMPTY = Result()
