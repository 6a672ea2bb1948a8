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

    def __post_init__(self) -> None:
        if not isinstance(self.from_, State) or not isinstance(self.to, State):
            raise ValueError("from_ and to must be State members")
        if not isinstance(self.input, Input):
            raise ValueError("input must be an Input member")
        if not isinstance(self.time_ns, int):
            raise ValueError(f"time_ns must be integer nanoseconds, got {self.time_ns!r}")
        if bool(self.alternative) != bool(self.inferred) or not all(isinstance(s, State) for s in self.alternative):
            raise ValueError("an inferred transition names its alternative states and when they would hold")


@dataclass(frozen=True, slots=True, kw_only=True)
class Anomaly:
    """Something a correct peer would not do, or a capture that lacks what it should show."""

    endpoint: str
    kind: str
    detail: str
    time_ns: int
    frame: int | None = None

    def __post_init__(self) -> None:
        if not self.kind or not self.kind.replace("_", "").isalnum():
            raise ValueError(f"anomaly kind must be a snake_case word, got {self.kind!r}")


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
