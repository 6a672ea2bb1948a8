"""The eleven RFC 9293 states, the inputs that move them, and the one transition table.

Nothing else in rawfin decides a next state: the endpoint classifies what
happened into an :class:`Input`, then looks the pair up in :data:`TRANSITIONS`.
``rawfin states`` prints this table and the tests sweep every pair of it.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class State(enum.Enum):
    CLOSED = "CLOSED"
    LISTEN = "LISTEN"
    SYN_SENT = "SYN_SENT"
    SYN_RECEIVED = "SYN_RECEIVED"
    ESTABLISHED = "ESTABLISHED"
    FIN_WAIT_1 = "FIN_WAIT_1"
    FIN_WAIT_2 = "FIN_WAIT_2"
    CLOSE_WAIT = "CLOSE_WAIT"
    CLOSING = "CLOSING"
    LAST_ACK = "LAST_ACK"
    TIME_WAIT = "TIME_WAIT"

    def __str__(self) -> str:
        return self.value


class Input(enum.Enum):
    """What can move an endpoint: an application call, a classified segment, or a timer."""

    # application calls
    LISTEN = "listen()"
    CONNECT = "connect()"
    CLOSE = "close()"              # close() or shutdown(SHUT_WR): our FIN (close() after shutdown() sends nothing)
    ABORT = "abort()"              # close() with SO_LINGER 0 or with data unread: send RST
    # arriving segments, after sequence-number classification
    RCV_SYN = "rcv SYN"
    RCV_SYN_ACK = "rcv SYN,ACK"
    RCV_ACK_OF_SYN = "rcv ACK of our SYN"
    RCV_ACK_OF_FIN = "rcv ACK of our FIN"
    RCV_FIN = "rcv FIN"
    RCV_RST = "rcv RST"
    RCV_RST_PASSIVE = "rcv RST (passive open)"
    RCV_NEW_SYN = "rcv new SYN (pair reused)"
    # time
    TIMEOUT_2MSL = "2MSL timer"
    TIMEOUT_FIN_WAIT_2 = "FIN_WAIT_2 timer"
    TIMEOUT_GIVE_UP = "retransmissions exhausted"
    # (kept last: the compiled lane numbers the inputs in this order)
    RCV_DATA_AFTER_CLOSE = "rcv data after close()"

    def __str__(self) -> str:
        return self.value


APP_INPUTS = frozenset({Input.LISTEN, Input.CONNECT, Input.CLOSE, Input.ABORT})


@dataclass(frozen=True, slots=True, kw_only=True)
class Rule:
    """One row of the table: where (state, input) leads and what the endpoint sends."""

    to: State
    sends: str = ""
    note: str = ""


S, I = State, Input
_SYNCHRONIZED = (S.SYN_RECEIVED, S.ESTABLISHED, S.FIN_WAIT_1, S.FIN_WAIT_2, S.CLOSE_WAIT,
                 S.CLOSING, S.LAST_ACK)

TRANSITIONS: dict[tuple[State, Input], Rule] = {
    # opening
    (S.CLOSED, I.LISTEN): Rule(to=S.LISTEN, note="passive open"),
    (S.CLOSED, I.CONNECT): Rule(to=S.SYN_SENT, sends="SYN", note="active open"),
    (S.LISTEN, I.RCV_SYN): Rule(to=S.SYN_RECEIVED, sends="SYN,ACK"),
    (S.LISTEN, I.CLOSE): Rule(to=S.CLOSED),
    (S.LISTEN, I.ABORT): Rule(to=S.CLOSED),
    (S.SYN_SENT, I.RCV_SYN_ACK): Rule(to=S.ESTABLISHED, sends="ACK"),
    (S.SYN_SENT, I.RCV_SYN): Rule(to=S.SYN_RECEIVED, sends="SYN,ACK", note="simultaneous open"),
    (S.SYN_SENT, I.RCV_RST): Rule(to=S.CLOSED, note="connection refused"),
    (S.SYN_SENT, I.CLOSE): Rule(to=S.CLOSED),
    (S.SYN_SENT, I.ABORT): Rule(to=S.CLOSED),
    (S.SYN_SENT, I.TIMEOUT_GIVE_UP): Rule(to=S.CLOSED, note="tcp_syn_retries"),
    (S.SYN_RECEIVED, I.RCV_ACK_OF_SYN): Rule(to=S.ESTABLISHED),
    (S.SYN_RECEIVED, I.RCV_FIN): Rule(to=S.CLOSE_WAIT, sends="ACK"),
    (S.SYN_RECEIVED, I.CLOSE): Rule(to=S.FIN_WAIT_1, sends="FIN"),
    (S.SYN_RECEIVED, I.RCV_RST_PASSIVE): Rule(to=S.LISTEN, note="back to listening (RFC 9293)"),
    # the close, as the seed draws it
    (S.ESTABLISHED, I.CLOSE): Rule(to=S.FIN_WAIT_1, sends="FIN", note="active close"),
    (S.ESTABLISHED, I.RCV_FIN): Rule(to=S.CLOSE_WAIT, sends="ACK", note="passive close"),
    (S.FIN_WAIT_1, I.RCV_ACK_OF_FIN): Rule(to=S.FIN_WAIT_2),
    (S.FIN_WAIT_1, I.RCV_FIN): Rule(to=S.CLOSING, sends="ACK", note="simultaneous close"),
    (S.FIN_WAIT_2, I.RCV_FIN): Rule(to=S.TIME_WAIT, sends="ACK", note="start 2MSL"),
    (S.FIN_WAIT_2, I.TIMEOUT_FIN_WAIT_2): Rule(to=S.CLOSED, note="tcp_fin_timeout (orphans)"),
    (S.CLOSING, I.RCV_ACK_OF_FIN): Rule(to=S.TIME_WAIT, note="start 2MSL"),
    (S.CLOSE_WAIT, I.CLOSE): Rule(to=S.LAST_ACK, sends="FIN"),
    (S.LAST_ACK, I.RCV_ACK_OF_FIN): Rule(to=S.CLOSED),
    (S.TIME_WAIT, I.RCV_FIN): Rule(to=S.TIME_WAIT, sends="ACK", note="re-ACK it, restart 2MSL"),
    (S.TIME_WAIT, I.TIMEOUT_2MSL): Rule(to=S.CLOSED),
    (S.TIME_WAIT, I.RCV_NEW_SYN): Rule(to=S.CLOSED, note="seq > rcv_nxt: pair reused"),
    (S.TIME_WAIT, I.RCV_RST): Rule(to=S.CLOSED, note="Linux: tcp_rfc1337=0"),
    # data nobody can read any more (RFC 1122 4.2.2.13; Linux resets, tcp_rcv_state_process)
    (S.FIN_WAIT_1, I.RCV_DATA_AFTER_CLOSE): Rule(to=S.CLOSED, sends="RST", note="data after close(): reset"),
    (S.FIN_WAIT_2, I.RCV_DATA_AFTER_CLOSE): Rule(to=S.CLOSED, sends="RST", note="data after close(): reset"),
}
# aborts, resets and give-ups in every synchronized state
for _s in _SYNCHRONIZED:
    TRANSITIONS.setdefault((_s, I.ABORT), Rule(to=S.CLOSED, sends="RST"))
    TRANSITIONS.setdefault((_s, I.RCV_RST), Rule(to=S.CLOSED, note="connection reset"))
    if _s not in (S.FIN_WAIT_2,):
        TRANSITIONS.setdefault((_s, I.TIMEOUT_GIVE_UP), Rule(to=S.CLOSED))
TRANSITIONS[(S.TIME_WAIT, I.ABORT)] = Rule(to=S.CLOSED)
del _s


def next_state(state: State, inp: Input) -> Rule | None:
    """The table lookup; None when the input does not move this state."""
    return TRANSITIONS.get((state, inp))


# The seed's diagram section 4, the order `rawfin states` prints rows in.
STATE_ORDER = list(State)
INPUT_ORDER = list(Input)
