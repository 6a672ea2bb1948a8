"""The teardown decisions as data: how each state classifies a segment, what the wire shows an
application doing, the observer's holds, close kinds, mid-stream pickup and timer order.

:data:`rawfin.core.states.TRANSITIONS` says where an input leads. This module says which input a
segment *is*, state by state, and what goes with it (an anomaly, an ACK to send, a field to
update). Nothing here runs: ``rawfin.core.machine`` interprets these rows for the Python endpoint
and observer, and the compiled lane (``rawfin/capture/lane/rules.c``) loads the very same rows at
start and interprets them too. A rule is changed here, once, for both.

The shape (h11's ``_state.py`` and h2's state machine keep their rules as data the same way):

* a **program** is a sequence of **steps**; a step is an ordered list of **rows**;
* a row is ``when`` (predicates, all must hold; ``!name`` negates one) and ``do`` (actions,
  run in order). In each step the first row whose predicates hold runs, and the program goes
  on to its next step unless the row ends with ``stop``. A step where no row holds does nothing.

Predicates and actions are named primitives, each a few lines in Python
(``rawfin/core/machine.py``) and in C (``rawfin/capture/lane/rules.c``); which primitive leads to
which action in which state is only here. ``rawfin states`` prints all of it.

Names used in the rows (segment values, then the receiving or sending endpoint's TCB,
RFC 9293 names):

    seq ack end len fin   the segment: its seq, its ack, seq + its sequence length, its payload
                          length, the sequence number its FIN occupies
    SYN ACK FIN RST       its flags; ``data``: it carries payload; ``occupies``: seq space > 0
    rcv_nxt snd_nxt snd_una iss irs
    fin_seq peer_fin_seq  the endpoint's own FIN and the peer's (empty until there is one)
    #name                 a mark set earlier in the same call (``mark``)
    rd_shut               the application closed, or shut reading (never, for an observer's endpoint)

In the observer's programs ``tx`` is the endpoint the wire shows sending the segment, ``rx`` the
one it is going to; ``held:rx`` is the FIN (or SYN) held for rx until rx shows it has it,
``final:tx`` the final ACK tx sent, held until nothing shows it lost.
"""

from __future__ import annotations

from rawfin.core.states import State
from rawfin.core.units import SEC

#: How long (capture time) a final ACK waits for a retransmitted FIN that would show it lost.
FINAL_ACK_HOLD_NS = 3 * SEC
#: A side's first answer to its peer's FIN this long (beyond the handshake's round trip) after that FIN (rules'
#: ``late:``) is no prompt answer: every stack ACKs a FIN within its delayed-ACK time (Linux at most 200 ms,
#: TCP_DELACK_MAX), and a FIN that comes only after Linux's shortest retransmission timeout (TCP_RTO_MIN,
#: 200 ms) may be one sent again.
#: Counted from the copy of that FIN the capture showed last (``late:``), or from its first capture when the answer
#: comes within a round trip of a copy sent again (``late_first:``).
ANSWER_LATE_NS = 200 * SEC // 1000
#: A side's pure ACK of its peer's FIN this soon (beyond the handshake's round trip) after that FIN (rules' ``quick:``)
#: was sent at once: Linux ACKs a FIN that reaches it in ESTABLISHED only after its delayed-ACK time (the FIN puts
#: the connection in pingpong mode, tcp_fin; TCP_DELACK_MIN, 40 ms), unless unacknowledged data forces it; in
#: FIN_WAIT_1 it ACKs at once. Its own FIN this soon after that ACK (rules' ``soon:``) had been waiting already: the
#: kernel sends it right behind the ACK, in the same pass (Linux through lossylink's relay: 8-30 us apart), sooner
#: than an application woken by the end of its peer's data closes (a BSD stack's immediate ACK of the FIN and its
#: application's FIN: 176 us apart in zeek__pipelining-example.pcap, a four-way close).
ANSWER_QUICK_NS = 10 * SEC // 1000
FIN_SOON_NS = 100 * SEC // 1000_000
#: A segment's IPv4 ID at most this far past the highest its sender's segments carried so far counts as that many
#: segments of its the capture has not shown (rules' id_skip: two past, one missing; id_skips: further, up to this):
#: a host that numbers all its packets from one counter (Windows) jumps further.
ID_SKIPS_MAX = 16
#: Half-open connections leave the observer when Linux would give up on them, in capture time (the
#: defaults of ``rawfin analyze --syn-timeout`` and ``--syn-ack-timeout``): a SYN never answered is sent
#: again tcp_syn_retries (6) times, 1, 2, 4 ... 32 s apart, and given up 64 s after the last one, 127 s
#: after the first; a SYN,ACK never acknowledged, tcp_synack_retries (5) times: 63 s after the first.
SYN_TIMEOUT_NS = 127 * SEC
SYN_ACK_TIMEOUT_NS = 63 * SEC
#: With no SYN to tell who is the server: a port below this one is the server's.
WELL_KNOWN_PORT = 1024


class Row:
    """``when`` (predicate names, all must hold) and ``do`` (actions, in order)."""

    __slots__ = ("when", "do")

    def __init__(self, *, when: tuple[str, ...], do: tuple[tuple, ...]) -> None:
        self.when, self.do = when, do

    def __str__(self) -> str:
        return f"{' '.join(self.when) or '-'} -> {'; '.join(act_text(a) for a in self.do) or 'go on'}"


class Step:
    """A named, ordered list of rows: the first that holds runs."""

    __slots__ = ("name", "rows")

    def __init__(self, *, name: str, rows: tuple[Row, ...]) -> None:
        self.name, self.rows = name, rows


def row(when: str, *do) -> Row:
    return Row(when=tuple(when.split()), do=tuple(a if isinstance(a, tuple) else (a,) for a in do))


def step(name: str, *rows: Row) -> Step:
    return Step(name=name, rows=rows)


def act_text(a: tuple) -> str:
    """An action as `rawfin states` prints it."""
    name, *args = a
    if name == "move":
        return f"{args[0]} ({args[1]!r})"
    if name == "anomaly":
        return f"anomaly {args[-2]}" + (f" at {args[0]}" if len(args) == 3 else "")
    if name == "set":
        return f"{args[0]}={args[1]}"
    if name == "send":
        return f"send {args[0]}"
    if name in ("mark", "flag", "run"):
        return f"{name} {args[0]}"
    return " ".join([name, *map(str, args)])


# -- actions ------------------------------------------------------------------------------------------------
STOP = ("stop",)


def move(inp: str, cause: str) -> tuple:
    """Take the table's row (state, inp), if there is one, with this cause (a template)."""
    return ("move", inp, cause)


def anomaly(kind: str, detail: str, at: str | None = None) -> tuple:
    """Report an anomaly (a template for its detail); ``at`` names the endpoint it belongs to (by
    default the one whose rule it is; ``PEER`` for what the arriving segment's sender did)."""
    return ("anomaly", kind, detail) if at is None else ("anomaly", at, kind, detail)


def set_(field: str, value: str) -> tuple:
    return ("set", field, value)


#: An anomaly about the segment that arrived belongs to its sender, as Wireshark flags the packet
#: (a retransmission is its sender's, an ACK of unseen data the ACK's sender's): an endpoint's
#: receive rules report those with ``at=PEER``.
PEER = "peer"


def send(what: str) -> tuple:
    """Send ``ACK`` (rcv_nxt, snd_nxt), ``RST`` (RFC 9293's reply to a segment for no connection),
    ``SYN,ACK`` (queued for retransmission) or ``SYN,ACK again`` (not queued). An observer sends
    nothing: these are no-ops there."""
    return ("send", what)


def mark(name: str) -> tuple:
    return ("mark", name)


# -- the endpoint: a segment arrives (Endpoint.receive) -------------------------------------------------------
CLOSED_RECEIVE = (
    step("report",
         row("SYN !ACK"),                                   # a SYN for a closed port: a refusal, no anomaly
         row("", anomaly("segment_after_close", "{describe} arrived for a closed connection", PEER))),
    step("answer",
         row("RST"),
         row("", send("RST"))),
)

LISTEN_RECEIVE = (
    step("segment",
         row("RST", STOP),
         row("ACK", send("RST"), STOP),
         row("!SYN", STOP)),
    step("syn",
         # data on a SYN: Linux (no TFO) drops it; an observer is handed it only when the SYN,ACK took it
         row("observer", ("remote", "src"), set_("irs", "seq"), set_("rcv_nxt", "end")),
         row("", ("remote", "src"), set_("irs", "seq"), set_("rcv_nxt", "seq+1"))),
    step("answer",
         row("", set_("snd_una", "iss"), set_("snd_nxt", "iss+1"), move("RCV_SYN", "rcv SYN seq={seq}"),
             send("SYN,ACK"), STOP)),
)

_BAD_SYN_ACK = "ack={ack} does not cover the SYN seq={iss} it answers"
SYN_SENT_RECEIVE = (
    step("ack",
         row("ACK ack<=iss", mark("bad_ack")),
         row("ACK ack>snd_nxt", mark("bad_ack"))),
    step("bad_ack",
         row("#bad_ack !RST", send("RST"), anomaly("unacceptable_ack", _BAD_SYN_ACK, PEER), STOP),
         row("#bad_ack", anomaly("unacceptable_ack", _BAD_SYN_ACK, PEER), STOP)),
    step("rst",
         row("RST ACK", move("RCV_RST", "rcv RST,ACK ack={ack}"), STOP),
         row("RST", STOP)),
    step("syn",
         row("!SYN", STOP),
         row("", set_("irs", "seq"), set_("rcv_nxt", "seq+1"))),
    step("answer",
         row("ACK", set_("snd_una", "ack"), ("synchronized",),
             move("RCV_SYN_ACK", "rcv SYN,ACK seq={seq} ack={ack}"), send("ACK"), STOP),
         row("", move("RCV_SYN", "rcv SYN seq={seq}"), send("SYN,ACK again"), STOP)),
)

_ALREADY = "{describe} already received (rcv_nxt={rcv_nxt})"
TIME_WAIT_RECEIVE = (
    step("new_syn",
         row("SYN !ACK !RST seq>rcv_nxt", move("RCV_NEW_SYN", "rcv SYN seq={seq} (above rcv_nxt={rcv_nxt})"),
             STOP)),
    step("rst",
         row("RST seq=rcv_nxt", move("RCV_RST", "rcv RST seq={seq}"), STOP),
         row("RST", anomaly("rst_out_of_window", "RST seq={seq} in TIME_WAIT, expected seq={rcv_nxt}", PEER), STOP)),
    step("fin_again",
         row("FIN fin=peer_fin_seq", move("RCV_FIN", "rcv FIN seq={fin} again: re-ACK it"),
             anomaly("time_wait_reack", "FIN seq={fin} retransmitted; TIME_WAIT ACKs it again (ack={rcv_nxt})"),
             send("ACK"), STOP)),
    step("other",
         row("!data !FIN", STOP),
         row("observer end<=rcv_nxt", anomaly("retransmission", _ALREADY, PEER), send("ACK"), STOP),
         row("", anomaly("segment_in_time_wait", "{describe} arrived in TIME_WAIT", PEER), send("ACK"), STOP)),
)

# The synchronized states, as RFC 9293 3.10.7.4 orders the checks (and RFC 5961 for RST and SYN).
_WINDOW = step("window",
               row("in_window", mark("ok")),
               row("observer seq>rcv_nxt", mark("ok")))      # beyond the window we model: the capture missed
#                                                               what opened it
_RST_TEXT = "rcv RST seq={seq}"
_RST_REST = (
    row("RST #ok", anomaly("rst_not_exact", "RST seq={seq} in window but rcv_nxt={rcv_nxt}: challenge ACK", PEER),
        send("ACK"), STOP),
    row("RST", anomaly("rst_out_of_window", "RST seq={seq} outside the window starting at rcv_nxt={rcv_nxt}", PEER),
        STOP),
)
_RST = step("rst", row("RST seq=rcv_nxt", move("RCV_RST", _RST_TEXT), STOP), *_RST_REST)
_RST_SYN_RECEIVED = step("rst",
                         row("RST seq=rcv_nxt passive", move("RCV_RST_PASSIVE", _RST_TEXT), STOP),
                         row("RST seq=rcv_nxt", move("RCV_RST", _RST_TEXT), STOP), *_RST_REST)
_UNACCEPTABLE = step(
    "unacceptable",
    row("#ok"),
    row("FIN fin=peer_fin_seq observer", send("ACK"), STOP),      # an observer hears of it from the sender
    row("FIN fin=peer_fin_seq",
        anomaly("fin_retransmission", "FIN seq={fin} retransmitted (the ACK {rcv_nxt} was lost or late)", PEER),
        send("ACK"), STOP),
    row("occupies observer end<=rcv_nxt",
        anomaly("retransmission", _ALREADY, PEER), send("ACK"), STOP),
    row("occupies", anomaly("unacceptable_segment", "{describe} outside the receive window (rcv_nxt={rcv_nxt})",
                            PEER), send("ACK"), STOP),
    row("", send("ACK"), STOP))
_SYN = step("syn", row("SYN", anomaly("syn_in_window", "SYN seq={seq} on a synchronized connection: challenge ACK",
                                       PEER), send("ACK"), STOP))
_NO_ACK = step("no_ack", row("!ACK", anomaly("no_ack_flag", "{describe} without ACK is dropped", PEER), STOP))
_ACK_OF_SYN = step(
    "ack_of_syn",
    row("snd_una<ack ack<=snd_nxt", set_("snd_una", "ack"), ("synchronized",), move("RCV_ACK_OF_SYN", "rcv ACK ack={ack}")),
    row("", send("RST"),
        anomaly("unacceptable_ack", "ack={ack} does not acknowledge the SYN,ACK (expected {snd_nxt})", PEER), STOP))
_ACK_BEYOND = step("ack_beyond", row("ack>snd_nxt", mark("beyond")))
_ACK = step(
    "ack",
    row("#beyond !observer", anomaly("ack_of_unsent_data", "ack={ack} beyond anything sent (snd_nxt={snd_nxt})",
                                     PEER), send("ACK"), STOP),
    row("#beyond fin_seq ack>fin_seq+1",
        anomaly("ack_beyond_fin",
                "ack={ack} is past FIN seq={fin_seq}: nothing follows a FIN, expected at most {fin_seq+1}", PEER),
        set_("snd_nxt", "ack")),
    row("#beyond", anomaly("acked_unseen_segment", "ack={ack} beyond what the capture shows sent (snd_nxt={snd_nxt})",
                           PEER), set_("snd_nxt", "ack")))
_ACK_ADVANCE = step("advance", row("snd_una<ack", ("acked",)))
_WINDOW_UPDATE = step("window_update", row("", set_("snd_wnd", "win")))
_ACK_OF_FIN = step("ack_of_fin", row("fin_seq snd_una>=fin_seq+1", move("RCV_ACK_OF_FIN", "rcv ACK ack={ack} of FIN seq={fin_seq}")))
_GONE = step("gone", row("state:CLOSED", STOP))
_DATA = step(
    "data",
    row("!data"),
    row("missing>0 !observer", ("queue",), send("ACK"), STOP),        # ahead of a gap: wait, ask with a dup ACK
    row("missing>0", anomaly("previous_segment_not_captured", "seq={seq} but rcv_nxt={rcv_nxt}: {missing} bytes missing",
                             PEER), ("take_data",), mark("need_ack")),
    row("", ("take_data",), mark("need_ack")))
# The application has closed (or shut reading): data beyond rcv_nxt can never be read. RFC 1122 4.2.2.13
# says send a RST to show the data was lost; Linux does, answering the segment as a closed port would, and
# the connection is gone (tcp_rcv_state_process, FIN_WAIT1/FIN_WAIT2 with RCV_SHUTDOWN). After
# shutdown(SHUT_WR) alone the application still reads: the data is taken and ACKed as usual.
_DATA_AFTER_CLOSE = step(
    "data_after_close",
    row("data rd_shut !RST fin>rcv_nxt",
        anomaly("data_after_close", "{len} bytes at seq={seq} after the application closed: nobody can read "
                                    "them, reset (RFC 1122 4.2.2.13)"),
        move("RCV_DATA_AFTER_CLOSE", "rcv {len} bytes after close(): snd RST seq={ack}"), send("RST"), STOP))
_DATA_AFTER_FIN = step(
    "data",
    row("data", anomaly("data_after_fin", "{len} bytes at seq={seq} after its FIN seq={peer_fin_seq}", PEER),
        send("ACK"), STOP))
_TAKE_FIN = (set_("rcv_nxt", "fin+1"), set_("peer_fin_seq", "fin"), move("RCV_FIN", "rcv FIN seq={fin}"),
             mark("need_ack"), mark("took_fin"))
_FIN = step(
    "fin",
    row("!FIN"),
    row("fin>rcv_nxt !observer", ("queue",), send("ACK"), STOP),
    row("fin>rcv_nxt", anomaly("previous_segment_not_captured", "FIN seq={fin} but rcv_nxt={rcv_nxt}: {fin_gap} bytes missing",
                               PEER), *_TAKE_FIN),
    row("fin=rcv_nxt", *_TAKE_FIN))
_CLOSE_ON_FIN = step("close_on_fin",      # the application closes the moment it reads EOF: our FIN carries the ACK
                     row("#took_fin close_on_fin state:CLOSE_WAIT", ("close",), STOP))
_ACK_NOW = step("ack_now", row("#need_ack", send("ACK")))

_ACKING = (_ACK_BEYOND, _ACK, _ACK_ADVANCE, _WINDOW_UPDATE)
# (gone: after a step that may have moved the endpoint, the ACK of our SYN or of our FIN)
_TAIL_OPEN = (_DATA, _FIN, _CLOSE_ON_FIN, _ACK_NOW)
_TAIL_CLOSING = (_DATA_AFTER_FIN, _FIN, _CLOSE_ON_FIN, _ACK_NOW)
_HEAD = (_WINDOW,)
_CHECKS = (_UNACCEPTABLE, _SYN, _NO_ACK)

SYN_RECEIVED_RECEIVE = (
    step("syn_again", row("SYN !ACK seq=irs", send("SYN,ACK again"), STOP)),   # our SYN,ACK was lost: again
    *_HEAD, _RST_SYN_RECEIVED, *_CHECKS, _ACK_OF_SYN, *_ACKING, _GONE, *_TAIL_OPEN)

RECEIVE: dict[State, tuple[Step, ...]] = {
    State.CLOSED: CLOSED_RECEIVE,
    State.LISTEN: LISTEN_RECEIVE,
    State.SYN_SENT: SYN_SENT_RECEIVE,
    State.SYN_RECEIVED: SYN_RECEIVED_RECEIVE,
    State.ESTABLISHED: (*_HEAD, _RST, *_CHECKS, *_ACKING, *_TAIL_OPEN),
    State.FIN_WAIT_1: (*_HEAD, _RST, *_CHECKS, *_ACKING, _ACK_OF_FIN, _GONE, _DATA_AFTER_CLOSE, *_TAIL_OPEN),
    State.FIN_WAIT_2: (*_HEAD, _RST, *_CHECKS, *_ACKING, _DATA_AFTER_CLOSE, *_TAIL_OPEN),
    State.CLOSE_WAIT: (*_HEAD, _RST, *_CHECKS, *_ACKING, *_TAIL_CLOSING),
    State.CLOSING: (*_HEAD, _RST, *_CHECKS, *_ACKING, _ACK_OF_FIN, _GONE, *_TAIL_CLOSING),
    State.LAST_ACK: (*_HEAD, _RST, *_CHECKS, *_ACKING, _ACK_OF_FIN, _GONE, *_TAIL_CLOSING),
    State.TIME_WAIT: TIME_WAIT_RECEIVE,
}

# -- the endpoint seen sending (Endpoint.observe_send): which application call the wire shows ----------------
_SEND_RST = step("rst", row("RST", move("ABORT", "snd RST seq={seq}"), STOP))     # abort(): SO_LINGER 0
_SEND_RST_NO_CALL = step("rst", row("RST", STOP))   # SYN_SENT's RST answers an unacceptable ACK (RFC 9293 3.10.7.3)
_SEND_SYN = step(
    "syn",
    row("SYN state:CLOSED !ACK", ("remote", "dst"), set_("iss", "seq"), set_("snd_una", "seq"), set_("snd_nxt", "end"),
        move("CONNECT", "snd SYN seq={seq}"), STOP),
    row("SYN state:SYN_SENT seq=iss", anomaly("syn_retransmission", "SYN seq={seq} sent again"), STOP),
    row("SYN state:SYN_RECEIVED seq=iss", STOP),           # the SYN,ACK (or its retransmission) the table sent
    row("SYN state:SYN_RECEIVED", set_("iss", "seq"), set_("snd_una", "seq"), set_("snd_nxt", "end"), STOP),
    row("SYN", STOP))
_SEND_SYN_ACK_UNSEEN = step(
    "synack_unseen",        # it ACKs a SYN,ACK the capture does not show
    row("ACK", set_("irs", "ack-1"), set_("rcv_nxt", "ack"),
        anomaly("syn_ack_not_captured", "snd ACK ack={ack} implies a SYN,ACK seq={irs} not in the capture"),
        move("RCV_SYN_ACK", "SYN,ACK not captured (snd ACK ack={ack})")))
_SEND_DATA_AFTER_FIN = step(
    "data_after_fin",
    row("data fin_seq seq>=fin_seq+1", anomaly("data_after_fin", "{len} bytes at seq={seq} after this side's FIN seq={fin_seq}")))
_SEND_FIN = step(
    "fin",
    row("FIN !fin_seq state:ESTABLISHED|CLOSE_WAIT|SYN_RECEIVED", set_("fin_seq", "fin"), set_("snd_nxt", "fin+1"),
        move("CLOSE", "snd FIN seq={fin}"), STOP),        # close() or shutdown(SHUT_WR)
    row("FIN fin_seq fin=fin_seq", anomaly("fin_retransmission", "FIN seq={fin} sent again")),
    row("FIN fin_seq", anomaly("duplicate_fin", "second FIN at seq={fin}; this side's FIN was seq={fin_seq}")))
_SEND_ADVANCE = step("advance", row("end>snd_nxt", set_("snd_nxt", "end")))
_SEND_TAIL = (_SEND_SYN, _SEND_DATA_AFTER_FIN, _SEND_FIN, _SEND_ADVANCE)

OBSERVE_SEND: dict[State, tuple[Step, ...]] = {
    st: (_SEND_RST_NO_CALL if st in (State.CLOSED, State.LISTEN, State.SYN_SENT) else _SEND_RST,
         *((_SEND_SYN_ACK_UNSEEN,) if st is State.SYN_SENT else ()), *_SEND_TAIL)
    for st in State
}

# -- the endpoint's timers (Endpoint.handle_timer), in the order they fire -----------------------------------
TIMERS: tuple[Step, ...] = (
    step("2msl", row("2msl_due", move("TIMEOUT_2MSL", "2MSL expired ({2msl_s} s in TIME_WAIT)"))),
    step("fin_wait_2", row("fin_wait_2_due", move("TIMEOUT_FIN_WAIT_2", "FIN_WAIT_2 timeout"))),
    step("rto",
         row("rto_due unacked retries_exhausted", move("TIMEOUT_GIVE_UP", "gave up after {retries} retransmissions")),
         row("rto_due unacked user_timeout_expired",
             move("TIMEOUT_GIVE_UP", "gave up: data unACKed past TCP_USER_TIMEOUT ({retries} retransmissions)")),
         row("rto_due unacked loss_probe", ("probe",)),       # RFC 8985's tail loss probe: the last segment again
         row("rto_due unacked", ("retransmit",)),
         row("rto_armed !unacked", ("disarm_rto",))),
)

# -- the observer: two endpoints driven by what one wire shows ------------------------------------------------
# A new connection: what its first segment says about who is who (Connection.__init__).
BIRTH: tuple[Step, ...] = (
    step("open",
         row("SYN !ACK", ("open",), STOP),                     # the client's SYN: the server is CLOSED until its
         #                                                       answer shows it was listening
         row("SYN", ("open_at_syn_ack",),                      # SYN,ACK first: the SYN was not captured
             anomaly("syn_not_captured", "SYN,ACK ack={ack} implies a SYN seq={ack-1} not in the capture", "rx"),
             STOP),
         row("", ("pick_up",))),                              # mid-stream: both ESTABLISHED
    step("guess_server",                                       # no SYN to tell: a well-known port, else the lower
         row("sport<well_known !dport<well_known", ("server", "tx"), STOP),
         row("dport<well_known !sport<well_known", ("server", "rx"), STOP),
         row("sport<=dport", ("server", "tx"), STOP),
         row("", ("server", "rx"), STOP)),
)

# Each segment (Connection.process), after counting it.
#
# A capture point sits between two hosts. What it shows a side sending may never have arrived (lost
# after it), what a side sent may never show (lost before it), and two segments may reach a host in
# another order than they passed it. The rows below read the packets for that (issue 14); where they
# cannot decide, the transition taken names the other reading (``inferred``).
#: An RST that reaches a side which was sending data again, not all of it acknowledged yet: its application may
#: have closed already, its FIN waiting behind that data (Linux sends nothing new while a retransmission is
#: outstanding): FIN_WAIT_1, which the capture cannot show.
_FIN_BEHIND_DATA = (("FIN_WAIT_1", "CLOSED"), "its application had closed while it was sending data again (its FIN "
                    "waiting behind that data, not sent yet)")
#: ... the same for a side in CLOSE_WAIT (its peer's FIN taken): LAST_ACK (lossylink loss20 seed 354 connection 29,
#: before and after the faults: the client's data sent again for seconds after the server's FIN, its application
#: closing meanwhile; the server's RST: kernel CLOSE_WAIT -> LAST_ACK -> CLOSED)
_FIN_BEHIND_DATA_PASSIVE = (("LAST_ACK", "CLOSED"), _FIN_BEHIND_DATA[1])

#: An RST for a side in TIME_WAIT (the answer to a segment that reached its peer after it had closed) takes it to
#: CLOSED (Linux's TIME_WAIT assassination, tcp_rfc1337 off), if it arrives: unless the capture has shown this
#: pair's segments lost before it (then it sits next to the receivers), it may not have, and nothing the TIME_WAIT
#: side sends later tells (lossylink messy seed 3 connection 11, before the faults: a duplicate of the final ACK reset
#: by the closed peer, that RST lost; seed 3 connection 34: the same, the third connection of the capture, before
#: any loss had shown where). The same in the full connection (SEGMENT) and in its compact form (TIME_WAIT_FORM).
_RST_TO_TIME_WAIT = "RST !SYN seq=rx.rcv_nxt rx.state:TIME_WAIT !lost_before:rx"
_RST_LOST_AFTER = ("infer", ("TIME_WAIT",), "the RST was lost after the capture point")

SEGMENT: tuple[Step, ...] = (
    # picked up mid-stream: the first segment each way says what the other side expects
    step("rx_expects", row("!rx:known", set_("rx.rcv_nxt", "seq"), set_("rx.irs", "seq"), ("know", "rx"))),
    step("tx_expects", row("ACK !tx:known", set_("tx.rcv_nxt", "ack"), set_("tx.irs", "ack"), ("know", "tx"))),
    step("rx_sent", row("mid_stream ACK rx.snd_nxt=0 rx.state:ESTABLISHED", set_("rx.snd_una", "ack"),
                        set_("rx.snd_nxt", "ack"))),
    # the client's SYN again, its ISN, though the server's SYN,ACK had been acknowledged (the handshake done; not the
    # SYN itself seen late, after the SYN,ACK, as in corpus arkime__tcp_handshake_synthetic.pcap): an old copy the
    # network kept (a duplicate), not a new attempt (a client's new connection takes a new ISN). A listening server
    # answers it from a request socket that the client's answer (an RST, a challenge ACK) ends: no state moves
    # (lossylink messy seed 202 connection 4, after the faults: the copy reached the server after it had aborted;
    # read as a new SYN_RECEIVED)
    step("old_syn",
         row("SYN !ACK tx:client seq=tx.iss !rx.snd_una=rx.iss",
             anomaly("old_syn", "SYN seq={seq} again after its SYN,ACK was acknowledged: a copy the network kept, "
                     "not a new connection", "tx"), STOP)),
    # a bare ACK one past everything its sender was seen to send: it had sent a FIN the capture never saw
    # (lost before the capture point). Its close starts here; whether its FIN crossed the peer's is read
    # from the peer's FIN: sent again first (nothing had come back: this side had it, CLOSE_WAIT), or not.
    step("fin_unseen",
         row("pure_ack !data !tx.fin_seq tx.state:ESTABLISHED|CLOSE_WAIT tx:known seq=tx.snd_nxt+1", ("fin_unseen",))),
    # what the close looks like, before the models move
    step("half_close", row("fins !tx:first_closer data !tx.fin_seq", ("flag", "data_after_first_fin"))),
    step("first_fin_acked",
         row("fins !tx:first_closer ACK ack=first_fin+1 !FIN !tx.fin_seq", ("flag", "first_fin_acked_alone"),
             ("drop_candidates",)),
         row("fins !tx:first_closer ACK ack=first_fin+1", ("drop_candidates",)),
         row("fins !tx:first_closer ACK ack=first_fin",           # reported at the end if the FIN stays unACKed
             ("candidate", "ack_not_covering_fin",
              "ack {ack} does not cover FIN seq={first_fin}: expected {first_fin+1} (FIN seq + 1)"))),
    step("note_fin", row("FIN !tx:fin_noted", ("note_fin",))),
    step("note_rst", row("RST", ("note_rst",))),             # rst_seen, and who sent the first RST
    # an RST after data the sender never answered (no data, FIN or SYN of its own since; the stack's bare
    # ACKs do not count): what Linux's close() does with data unread (RFC 1122 4.2.2.13, RFC 2525 2.17);
    # a SO_LINGER 0 abort after reading looks the same on the wire, hence "probably". Such an RST carries the
    # ACK (Linux's tcp_send_active_reset, BSD's tcp_drop); an RST without it answers a segment for no connection
    step("unread_close",
         row("RST ACK tx:data_unanswered tx.state:ESTABLISHED|CLOSE_WAIT",
             anomaly("close_with_unread_data", "RST seq={seq} after data {tx.name} never answered: "
                     "probably close() with the data unread (Linux resets then instead of sending a FIN)",
                     "tx"))),
    # its FIN again although the capture showed it acknowledged (it had moved on to FIN_WAIT_2): that ACK never
    # arrived, lost after the capture point (where this pair's segments get lost: the rows below read it)
    step("ack_lost_after",
         row("FIN !SYN tx.fin_seq fin=tx.fin_seq tx.state:FIN_WAIT_2 tx.snd_una>=tx.fin_seq+1",
             ("evidence", "down", "rx"))),
    # the FIN again before the receiver acknowledged it. If the FINs crossed (or the sender's later
    # segments wait behind this FIN), the first copy was lost after the capture point, or it arrived
    # and the receiver's ACK of it was lost before: where this pair's segments get lost decides, and
    # the transition names the other reading. Else the first copy is taken as lost, this one counts.
    step("fin_again",
         # the same FIN, the same ACK, less than a round trip (and ANSWER_LATE_NS, Linux's shortest retransmission
         # timeout) after the copy held: no stack sends a FIN again that soon (a retransmission waits for an RTO, a
         # loss probe for two round trips; corpus zeek__pppoe-over-qinq.pcap: a FIN sent again 310 ms after the first,
         # the handshake's round trip 413 ms): a copy the network (or the capture) made, which
         # tells nothing of what reached the receiver (lossylink messy seed 305 connection 18, after the faults: the
         # server's FIN duplicated 6 ms after the first, round trip 12 ms; read as sent again, the client's crossing
         # FIN was missed; corpus zeek__vnd.ms-cab-compressed-multi-conn.pcap: each FIN,ACK seen twice, 1 us apart).
         # Its data, if any, is a retransmission as any; the FIN stays held as it was
         row("held:rx FIN !SYN !held:rx.SYN fin=held:rx.fin ack=held:rx.ack copy_soon:rx", ("observe_send",),
             ("deliver_without_fin",), STOP),
         row("held:rx FIN !SYN !held:rx.SYN fin=held:rx.fin queue:rx lost_after:rx", ("first_fin_lost", "rx")),
         row("held:rx FIN !SYN !held:rx.SYN fin=held:rx.fin queue:rx", ("first_fin_arrived", "rx")),
         row("held:rx FIN !SYN !held:rx.SYN fin=held:rx.fin rx.state:FIN_WAIT_1 lost_after:rx",
             ("first_fin_lost", "rx")),
         row("held:rx FIN !SYN !held:rx.SYN fin=held:rx.fin rx.state:FIN_WAIT_1",
             ("first_fin_arrived", "rx")),
         row("held:rx FIN !SYN !held:rx.SYN !held:rx.crossed fin=held:rx.fin", ("unhold", "rx"))),
    # TCP delivers in order: a FIN held for the receiver arrives before a segment sent after it. One sent
    # before it (reordered, or data sent again) shows nothing of the FIN. In a simultaneous close the
    # receiver's path depends on the order (FIN first: CLOSING; the ACK of its own FIN first: FIN_WAIT_2),
    # so what the sender sent after its FIN waits until the receiver's ACK of the FIN (or the FIN sent
    # again) tells.
    step("deliver_held",
         row("held:rx held:rx.SYN SYN seq=held:rx.seq"),       # the SYN again: still held
         row("held:rx held:rx.SYN", ("flush", "rx")),
         row("held:rx !seq>=held:rx.fin+1"),
         row("held:rx hold_final_ack held:rx.crossed", ("wait_behind", "rx"), mark("waits")),
         row("held:rx hold_final_ack rx.state:FIN_WAIT_1", ("wait_behind", "rx"), mark("waits")),
         row("held:rx hold_final_ack !RST rx.state:ESTABLISHED", ("wait_behind", "rx"), mark("waits")),
         row("held:rx", ("flush", "rx"))),
    # RSTs held for the receiver: this segment of their sender's comes after them
    step("rst_rx", row("rst:rx !RST", ("deliver_rst", "rx"))),
    # does the sender show it had received the FIN (or SYN) held for it?
    step("held_answered",
         row("held:tx held:tx.SYN RST ACK ack=held:tx.end", ("unhold", "tx")),   # nobody listening: refused
         row("held:tx held:tx.SYN RST"),                       # an RST that does not answer the SYN
         # its FIN right after its ACK of the held FIN, an ACK sent at once (below): its application had closed before
         # that FIN reached it, its FIN waiting (behind data its peer had not acknowledged, or for the congestion
         # window): FIN_WAIT_1, and the held FIN takes it to CLOSING. Linux ACKs a FIN in ESTABLISHED only after its
         # delayed-ACK time, and its FIN would carry that ACK. (lossylink simul10 seed 8 connection 22 and seed 41
         # connection 14, after the faults: the ACK 37-49 us after the FIN, its FIN 8-12 us after the ACK)
         row("held:tx ACK ack>=held:tx.end FIN !held:tx.SYN tx.state:ESTABLISHED freed:tx soon:tx",
             ("infer", ("CLOSE_WAIT", "LAST_ACK"), "the FIN in frame {held:tx.frame} reached it before its application "
              "closed, and a stack that ACKs such a FIN at once (not Linux's delayed ACK) sent that ACK"),
             ("observe_send",), mark("sent"), ("cross", "tx"), ("flush", "tx")),
         # ... its FIN that soon after such an ACK where that FIN freed nothing: its application may have closed
         # at the moment the FIN reached it (Linux in FIN_WAIT_1 ACKs at once, its FIN right behind), or a stack that
         # ACKs a FIN at once had an application that closed at once; nothing in the packets tells (lossylink simul10
         # seeds 321, 326, 328 and messy seed 325, before the faults: the ACK 30-400 us after the FIN, its FIN 12 us
         # later, kernel FIN_WAIT_1 -> CLOSING; corpus zeek__nflog-http.pcap: the same, 0 us apart)
         row("held:tx ACK ack>=held:tx.end FIN !held:tx.SYN tx.state:ESTABLISHED soon:tx",
             ("infer", ("FIN_WAIT_1", "CLOSING"), "its application had closed when the FIN in frame {held:tx.frame} "
              "reached it, its FIN right behind its ACK of that FIN (as Linux sends them in FIN_WAIT_1)"),
             ("flush", "tx")),
         # a pure ACK of the held FIN (nothing before it unacknowledged), within the handshake's round trip and
         # ANSWER_QUICK_NS of it: the FIN stays held until the side's next segment shows whether its FIN follows at
         # once (above: where that FIN acknowledged its data, its FIN may have waited behind that data) or not (the
         # rows below)
         # (one that was sending data again: the rows below name that reading at once; one that had sent segments
         # the FIN crossed: delivered where this ACK shows it, as before, corpus PcapPlusPlus__one_http_stream_fin.pcap)
         row("held:tx ACK ack>=held:tx.end !FIN !data !held:tx.SYN tx.state:ESTABLISHED rx.snd_una=held:tx.fin "
             "freed:tx quick:tx !prompt:tx", ("note_prompt", "tx")),
         row("held:tx ACK ack>=held:tx.end !FIN !data !held:tx.SYN !held:tx.crossed tx.state:ESTABLISHED "
             "rx.snd_una=held:tx.fin !tx:resent quick:tx !prompt:tx", ("note_prompt", "tx")),
         # its own FIN sent again: what acknowledged it among the segments waiting for it never arrived
         row("held:tx ACK ack>=held:tx.end FIN queue:tx tx.fin_seq fin=tx.fin_seq", ("drop_lost_acks", "tx"),
             ("flush", "tx")),
         # it was sending data again: Linux queues a FIN behind data being retransmitted, so its application may
         # have closed before this FIN reached it, its own FIN not sent yet (FIN_WAIT_1, then CLOSING here)
         # its first answer to that FIN is its own FIN, an RTO later: its FIN sent again may be the first this
         # capture shows, the first copy (sent before that FIN reached it) lost before the capture point, and its
         # ACK of that FIN too: it was in FIN_WAIT_1, then CLOSING. Nothing in the packets but the time tells
         # (crossed or not: a segment it sent before that FIN reached it, a copy the network made or kept back, says
         # nothing of when its own FIN went; lossylink messy seed 202 connection 23, seed 305 connection 30, after the
         # faults: a duplicate of its last ACK, then its FIN 220 ms after the peer's)
         row("held:tx ACK ack>=held:tx.end FIN tx.state:ESTABLISHED late:tx",
             ("infer", ("FIN_WAIT_1", "CLOSING"), "its FIN in frame {frame} was one sent again: the first, sent before "
              "the FIN in frame {held:tx.frame} reached it, lost before the capture point with its ACK of that FIN"),
             ("flush", "tx")),
         # ... the same when that FIN was sent again and its FIN comes within a round trip of the copy, too soon
         # to answer it, and an RTO after the first copy: both FINs' retransmission timers were armed at the
         # close and fire in the same tick, the peer's copy and its FIN cross. The first copy reached it (unless
         # this capture point shows losses after it, none before: then the first copy may be the one lost; the lane
         # keeps no such evidence: late_first goes first, so only a close it holds for is handed to Python).
         # (lossylink loss12 seed 3 connection 7, after the faults: its FIN 15 us after the copy, 212 ms after
         # the first, the handshake's round trip 0.1 ms)
         row("held:tx ACK ack>=held:tx.end FIN tx.state:ESTABLISHED !held:tx.crossed late_first:tx !lost_after:tx",
             ("infer", ("FIN_WAIT_1", "CLOSING"), "its FIN in frame {frame} was one sent again: the first, sent before "
              "the first copy of the FIN sent again in frame {held:tx.frame} reached it, lost before the capture point "
              "with its ACK of that FIN"),
             ("flush", "tx")),
         row("held:tx ACK ack>=held:tx.end tx.state:ESTABLISHED tx:resent", ("infer", ("FIN_WAIT_1", "CLOSING"),
             "its application had closed while it was sending data again (its FIN waiting behind that data) "
             "before the FIN in frame {held:tx.frame} reached it"), ("flush", "tx")),
         # ... its FIN, within a round trip of that FIN, numbered (IPv4 ID) two past the highest of its segments so
         # far (id_skip), where the capture has shown this pair's segments lost before it: it sent one the capture
         # has not shown (lost, or overtaken) right before this FIN. Where that FIN acknowledged its data (its FIN may
         # have waited behind that data), no data of its is missing and it had acknowledged all its peer sent before
         # that FIN, the missing one may be its ACK of that FIN sent at once (Linux in FIN_WAIT_1), its own FIN right
         # behind (the rows with soon: above, with that ACK captured); or another (a window update, a duplicate
         # ACK). Nothing else in the packets tells (lossylink loss12 seed 323 connection 29, simul10 seed 334
         # connection 25, after the faults: the FIN 35-60 us after the peer's, one ID skipped, kernel FIN_WAIT_1 ->
         # CLOSING; messy seed 332 connection 12: that ACK captured after the FIN; on lossylink seeds 301-340, after
         # the faults, 11 closes marked so, 4 of them the kernel's FIN_WAIT_1 -> CLOSING; without freed: 47, 4 of
         # them). Without losses shown, an ID skipped says little: a host that numbers all its packets from one
         # counter (Windows) skips one for any other packet it sent (corpus tcpdump__pptp.pcap: its GRE packet
         # between two of the control connection's segments)
         row("held:tx ACK ack>=held:tx.end FIN !held:tx.SYN tx.state:ESTABLISHED rx.snd_una=held:tx.fin "
             "seq=tx.snd_nxt freed:tx quick:tx id_skip lost_before:tx",
             ("infer", ("FIN_WAIT_1", "CLOSING"), "its application had closed when the FIN in frame {held:tx.frame} "
              "reached it, its ACK of that FIN the segment its IPv4 ID shows missing before its FIN in frame "
              "{frame}"), ("flush", "tx")),
         # ... two or more of its segments missing right before this FIN (id_skips): its FIN may be one sent again,
         # the first (sent before that FIN reached it) lost before the capture point with its ACK of that FIN, as the
         # late: rows read from the time alone (lossylink simul10 seed 347 connection 48, after the faults: three IDs
         # skipped, its FIN an RTO after its first, 4 ms after the peer's FIN sent again; kernel FIN_WAIT_1 -> CLOSING)
         row("held:tx ACK ack>=held:tx.end FIN !held:tx.SYN tx.state:ESTABLISHED rx.snd_una=held:tx.fin "
             "seq=tx.snd_nxt id_skips lost_before:tx",
             ("infer", ("FIN_WAIT_1", "CLOSING"), "its FIN in frame {frame} was one sent again (its IPv4 ID shows "
              "segments of its missing): the first, sent before the FIN in frame {held:tx.frame} reached it, lost "
              "before the capture point with its ACK of that FIN"), ("flush", "tx")),
         # a pure ACK of a held FIN its sender's segments crossed, sent at once (as the note_prompt rows above): the FIN
         # is delivered here, as before (corpus PcapPlusPlus__one_http_stream_fin.pcap), its time noted: its own FIN
         # right behind it is read below (answer_soon:)
         row("held:tx ACK ack>=held:tx.end !FIN !data !held:tx.SYN held:tx.crossed tx.state:ESTABLISHED "
             "rx.snd_una=held:tx.fin !tx:resent quick:tx", ("note_answer", "tx"), ("flush", "tx")),
         row("held:tx ACK ack>=held:tx.end", ("flush", "tx")),
         row("held:tx ahead:tx ACK ack=tx.rcv_nxt"),            # waits for the gap in front of the FIN
         row("held:tx", ("cross", "tx"))),                     # sent before the FIN reached it: the two crossed
    # RSTs held for the sender: it kept sending, so they had not reached it (lost after the capture point;
    # within a round trip of the last one it may have crossed them: they stay held)
    step("rst_tx", row("rst:tx rst_late:tx", ("rsts_unreceived", "tx"))),
    # the final ACK held for the sender: its FIN sent again means the ACK never arrived
    # (not a copy of that FIN the network made: lossylink messy seed 316 connection 41, after the faults, a
    # duplicate 12 ms after the FIN, the final ACK between them)
    # ... nor a loss probe: sent again sooner than Linux's shortest retransmission timeout after its first copy, on a
    # timer that may have fired while that ACK was on its way (lossylink messy seed 334 connection 41, before the
    # faults: the client's FIN again 30 ms after the first, 11 ms after the server's final ACK, round trip 11 ms;
    # read as that ACK lost, the client left in LAST_ACK; kernel LAST_ACK -> CLOSED): the ACK stays held. Lost, it
    # shows as any: the FIN sent again an RTO later (the row below), or the peer's answer to the probe taking its place
    step("final_ack_lost",
         row("final:tx FIN tx.fin_seq fin=tx.fin_seq !copy_soon:rx probe_soon:rx"),
         row("final:tx FIN tx.fin_seq fin=tx.fin_seq !copy_soon:rx",
             anomaly("final_ack_lost", "the ACK ack={final:tx.ack} in frame {final:tx.frame} never reached "
                     "{tx.name}: it sent its FIN seq={tx.fin_seq} again", "tx"), ("unhold_final", "tx")),
         row("final:tx", ("deliver_final", "tx"))),
    step("final_ack_rx", row("final:rx", ("deliver_final", "rx"))),
    # a duplicate ACK (nothing new acknowledged while its peer's data is outstanding): something reached it above a
    # hole. Filled with nothing sent again, the segments that filled it arrived after later ones: the link reorders
    # (what the crossing-order rows of FLUSH read, with the capture's round trips: rawfin.core.delays)
    step("hole",
         row("ACK tx:hole ack>rx.snd_una !rx:resent", ("reordered",), ("drop_hole", "tx")),
         row("ACK tx:hole ack>rx.snd_una", ("drop_hole", "tx")),
         row("dup_ack !tx:hole !rx:resent", ("note_hole", "tx"))),
    # data the capture point saw, sent again, not the sender's last (a tail loss probe resends the last):
    # recovery from a loss after the capture point
    # (any data sent again, the last segment too: the side is recovering from a loss, and a FIN its application
    # asks for waits behind that data (tx:resent); until it sends again with all of it acknowledged: a FIN
    # waiting would have gone first)
    # data sent again that the capture showed acknowledged: that ACK never reached the sender (lost after the capture
    # point; or this copy crossed it), which sends again from what it has acknowledged (lossylink messy seed 305
    # connection 1, before the faults: the client resending data the server's lost ACK acknowledged, its application
    # closing meanwhile, its FIN waiting behind that data when the server's RST got through)
    step("ack_unreceived", row("data end<=tx.snd_una", set_("tx.snd_una", "seq"))),
    step("resent",
         row("data end<=rx.rcv_nxt end<tx.snd_nxt", ("evidence", "down", "tx"), ("note_resent", "tx")),
         row("data end<=rx.rcv_nxt", ("note_resent", "tx")),
         # ... or one its receiver could not take (it had closed): what the sender had sent already (lossylink rst50
         # seed 303 connection 34, before the faults: the server's last data sent again and again, its peer's RSTs
         # lost, its application closing meanwhile: FIN_WAIT_1 behind that data when an RST got through)
         row("data end<=tx.snd_nxt", ("note_resent", "tx")),
         # (kept while its prompt ACK of a FIN waits for its next segment: the rows that read it have not yet)
         row("tx:resent tx.snd_una=tx.snd_nxt !prompt:tx", ("drop_resent", "tx"))),
    # its first FIN within FIN_SOON_NS of such an ACK (its peer's FIN crossed segments of its, then got that ACK at
    # once): its application may have closed at the moment that FIN reached it (Linux in FIN_WAIT_1 ACKs at once,
    # its FIN right behind), as where the FIN waited for that ACK (the soon: rows); its move to LAST_ACK names it
    # (lossylink messy seed 325 connection 33, before the faults: a duplicate ACK crossing the client's FIN, the ACK
    # of that FIN 1 ms after it, the server's FIN 24 us later; kernel FIN_WAIT_1 -> CLOSING)
    step("answer_then_fin",
         row("FIN !data !tx.fin_seq tx.state:CLOSE_WAIT answer_soon:tx",
             ("infer", ("FIN_WAIT_1", "CLOSING"), "its application had closed when its peer's FIN seq={tx.peer_fin_seq} "
              "reached it, its FIN in frame {frame} right behind its ACK of that FIN (as Linux sends them in "
              "FIN_WAIT_1)"))),
    step("sent", row("#sent"), row("", ("observe_send",))),
    # the handshake's round trip as the capture point saw it (an RST's crossing window), from the client's
    # latest SYN: a SYN sent again leaves it unknown which copy the SYN,ACK answers (Karn's rule, RFC 6298 3),
    # and counting from the first would add the SYN's retransmission timeout (1 s) to the round trip
    step("rtt",
         row("SYN !ACK tx:client", ("syn_time",)),
         row("rx.state:SYN_RECEIVED ACK !SYN tx:client !mid_stream !rtt", ("rtt",))),
    step("route",
         row("#waits", STOP),
         # the final ACK: LAST_ACK -> CLOSED (CLOSING -> TIME_WAIT) once nothing shows it was lost (the
         # hold's time, FINAL_ACK_HOLD_NS)
         row("hold_final_ack rx.state:LAST_ACK|CLOSING pure_ack !data rx.fin_seq ack>=rx.fin_seq+1",
             ("hold_final", "rx"), STOP),
         # the server's move waits for its answer: SYN,ACK (it was listening) or RST (it was not)
         row("SYN !ACK rx.passive rx.state:CLOSED tx:client held:rx", STOP),
         row("SYN !ACK rx.passive rx.state:CLOSED tx:client", ("hold", "rx"), STOP),
         # an RST takes effect once nothing shows it lost: the receiver sending after it would
         row("hold_final_ack RST !SYN rst:rx", ("hold_rst", "rx"), STOP),
         row("hold_final_ack RST !SYN seq=rx.rcv_nxt rx.state:SYN_RECEIVED|ESTABLISHED|FIN_WAIT_1|FIN_WAIT_2|"
             "CLOSE_WAIT|CLOSING|LAST_ACK", ("hold_rst", "rx"), STOP),
         # an RST for a side in TIME_WAIT, perhaps lost after the capture point (_RST_TO_TIME_WAIT)
         row(_RST_TO_TIME_WAIT, _RST_LOST_AFTER, ("deliver",), STOP),
         # (not held: at once, naming the reading RST_HELD names)
         row("RST !SYN seq=rx.rcv_nxt rx.state:CLOSE_WAIT rx:resent rx.snd_una<rx.snd_nxt",
             ("infer", *_FIN_BEHIND_DATA_PASSIVE), ("deliver",), STOP),
         row("RST !SYN seq=rx.rcv_nxt rx.state:ESTABLISHED rx:resent rx.snd_una<rx.snd_nxt", ("infer", *_FIN_BEHIND_DATA),
             ("deliver",), STOP),
         # a FIN ahead of a gap waits in the receiver's queue (its ACK counts now) until the gap is filled
         row("FIN !SYN seq>rx.rcv_nxt rx:known !rx.peer_fin_seq rx.state:ESTABLISHED|FIN_WAIT_1|FIN_WAIT_2",
             ("hold", "rx"), ("hold_ahead", "rx"), STOP),
         # a FIN the receiver has already taken, sent again: its ACK field still counts (Linux takes a
         # segment whose end reaches rcv_nxt, though its sequence number is behind)
         row("FIN !SYN ACK rx.peer_fin_seq fin=rx.peer_fin_seq", ("deliver_ack_only",), ("hold", "rx"), STOP),
         # the data and the ACK now; the FIN once the receiver shows it has it (or at the end); noted when it
         # acknowledges data of the receiver's not acknowledged before (rules' freed:)
         row("FIN !SYN ACK ack>rx.snd_una", ("deliver_without_fin",), ("hold", "rx"), ("note_freed", "rx"), STOP),
         row("FIN !SYN", ("deliver_without_fin",), ("hold", "rx"), STOP),
         row("rx:synack_unseen ACK rx.state:SYN_RECEIVED", ("synack_seen",), set_("rx.iss", "ack-1"),
             set_("rx.snd_una", "ack-1"), set_("rx.snd_nxt", "ack"),
             anomaly("syn_ack_not_captured", "ACK ack={ack} implies a SYN,ACK seq={rx.iss} not in the capture", "rx"),
             ("deliver",), STOP),
         row("", ("deliver",))),
    # the gap in front of a FIN waiting in the receiver's queue is filled: the FIN takes effect now
    step("gap_filled", row("held:rx filled:rx", ("flush_filled", "rx"))),
    step("refused", row("RST rx.state:CLOSED rx:client took:SYN_SENT:RCV_RST", ("flag", "refused"))),
)

#: anomalies that show where a host's segments get lost, as the capture point sees it: "up" (before it:
#: it never saw them) or "down" (after it: it saw them, they never arrived); whose segment: the reporting
#: endpoint's own ("local") or its peer's ("remote"). The evidence the FIN-sent-again rows read.
LOSS_EVIDENCE: dict[str, tuple[str, str]] = {
    "previous_segment_not_captured": ("up", "remote"),
    "acked_unseen_segment": ("up", "local"),
    "fin_not_captured": ("up", "local"),
    "final_ack_lost": ("down", "remote"),
    "rst_not_received": ("down", "remote"),
}

# An RST held for x (rules' hold_rst), as it is delivered (Connection._deliver_rst): what the capture cannot decide.
RST_HELD: tuple[Step, ...] = (
    step("fin_behind_data", row("x.state:ESTABLISHED x:resent x.snd_una<x.snd_nxt", ("infer", *_FIN_BEHIND_DATA)),
         row("x.state:CLOSE_WAIT x:resent x.snd_una<x.snd_nxt", ("infer", *_FIN_BEHIND_DATA_PASSIVE))),
)

# A segment for a settled connection in its compact form (TimeWait.process), before its endpoints take it: what the
# capture cannot decide there (tx, rx as in SEGMENT). (lossylink messy seed 3 connection 34, seed 9 connection 46,
# before the faults: the closed side's RST answering a duplicate of the final ACK, lost after the capture point, after
# the connection had shrunk to its compact form.) The lane hands every segment for that form to Python.
TIME_WAIT_FORM: tuple[Step, ...] = (
    step("rst_lost", row(_RST_TO_TIME_WAIT, _RST_LOST_AFTER)),
)

#: the other reading when what its peer sent after its FIN is taken as having overtaken that FIN
_FIN_FIRST = ("the FIN in frame {h.frame} reached it before what its peer sent after it (the capture's round trips "
              "to this side say that is the less likely order)")

#: ... when its answer came from what answers for a Linux socket handed off in FIN_WAIT_2 (IPv4 ID 0)
_FIN_FIRST_TW = ("the FIN in frame {h.frame} reached it before what its peer sent after it, and its answer's IPv4 ID "
                 "0 was not a Linux timewait socket's")

# Delivering what was held for an endpoint (Connection._flush), ``now`` the segment that shows it, if any.
FLUSH: tuple[Step, ...] = (
    step("flush",
         row("x.state:CLOSED !h.SYN", STOP),                    # it aborted before the FIN reached it
         # a SYN: its answer (or the client going on) shows the server was listening: the observer's
         # starting assumption for it, not a transition of the table
         row("h.SYN answered now.ack=h.end", ("listening",), ("deliver_held", "syn"), STOP),
         row("h.SYN answered", ("listening",), ("deliver_held", "syn_without_data"), STOP),
         row("h.SYN", ("listening",), ("deliver_held", "syn_without_data"), ("synack_unseen",), STOP),
         # the segment that waited ahead of a gap, data and FIN: where the gap was filled (or, never filled in
         # the capture, where the receiver showed it had it all the same)
         row("ahead:x", ("deliver_held", "ahead"), ("deliver_queue",), STOP),
         # crossed: no earlier than the first segment its sender sent after it that waited for it
         # ... and when what waited behind it acknowledges the receiver's own FIN, the order the two reached it
         # decides its path (FIN first: CLOSING; the ACK first: FIN_WAIT_2), which the capture cannot show. It
         # shows how likely each is: the ACK came first if its way to the receiver and the answer's way back took
         # less than the time from capturing it to capturing the receiver's answer to the FIN, and the capture's
         # round trips to that side (rawfin.core.delays) say how often a trip is that short. More often than not:
         # the ACK first (FIN_WAIT_2); else the FIN first (CLOSING, the order it was sent in). Marked either way.
         # ... unless its answer shows: Linux answers from a timewait socket (IPv4 ID 0, where its connected
         # sockets count) only once an orphan in FIN_WAIT_1 took the ACK of its FIN (FIN_WAIT_2, handed to a
         # timewait socket at once) before the peer's FIN; in CLOSING its socket answers itself (lossylink reorder
         # seeds 301-310, before the faults: 16 of the 20 crossings read FIN first where the kernel took the ACK first)
         row("h.crossed queue:x acks:x x.state:FIN_WAIT_1 now timewait_reply", ("infer", ("CLOSING",), _FIN_FIRST_TW),
             ("deliver_held", "fin_last"), STOP),
         row("h.crossed queue:x acks:x x.state:FIN_WAIT_1 now ack_first:x", ("infer", ("CLOSING",), _FIN_FIRST),
             ("deliver_held", "fin_last"), STOP),
         row("h.crossed queue:x acks:x x.state:FIN_WAIT_1", ("infer", ("FIN_WAIT_2",),
             "the segment its peer sent after the FIN in frame {h.frame} overtook that FIN after the capture point"),
             ("deliver_held", "fin_at_queue"), ("deliver_queue",), STOP),
         row("h.crossed queue:x", ("deliver_held", "fin_at_queue"), ("deliver_queue",), STOP),
         row("h.crossed now", ("deliver_held", "fin_at_now"), STOP),   # crossed: at the frame that shows it
         row("queue:x acks:x x.state:FIN_WAIT_1 now timewait_reply", ("infer", ("CLOSING",), _FIN_FIRST_TW),
             ("deliver_held", "fin_last"), STOP),
         row("queue:x acks:x x.state:FIN_WAIT_1 now ack_first:x", ("infer", ("CLOSING",), _FIN_FIRST),
             ("deliver_held", "fin_last"), STOP),
         row("queue:x acks:x x.state:FIN_WAIT_1", ("infer", ("FIN_WAIT_2",),
             "the segment its peer sent after the FIN in frame {h.frame} overtook that FIN after the capture point"),
             ("deliver_held", "fin"), ("deliver_queue",), STOP),
         row("", ("deliver_held", "fin"), ("deliver_queue",), STOP)),
)

# The end of the capture or of the connection: what is still held (Connection.flush_all).
FLUSH_AT_END: tuple[Step, ...] = (
    step("held_at_end",
         row("h.crossed !queue:x", ("unhold_x",), STOP),  # its receiver kept sending without ACKing it: never arrived
         row("h.SYN", ("unhold_x",), STOP),            # a SYN never answered: the server stays where it was
         row("", ("flush_x",), STOP)),
)

# What only the end of a connection can tell (Connection.end_anomalies), after FLUSH_AT_END.
END: tuple[Step, ...] = (
    step("fin_ack_candidates", row("first_closer.state:FIN_WAIT_1|CLOSING candidates", ("report_candidates",))),
    step("final_ack_missing_a",
         row("a.state:LAST_ACK", anomaly("final_ack_missing", "{a.name}'s FIN seq={a.fin_seq} never ACKed (expected "
                                         "ack {a.fin_seq+1}); peer is in {b.state}", "a"))),
    step("final_ack_missing_b",
         row("b.state:LAST_ACK", anomaly("final_ack_missing", "{b.name}'s FIN seq={b.fin_seq} never ACKed (expected "
                                         "ack {b.fin_seq+1}); peer is in {a.state}", "b"))),
)

# The connection's close, first row that holds (Connection.close_kind): (kind, when).
CLOSE_KINDS: tuple[tuple[str, str], ...] = (
    ("evicted", "evicted"),             # --max-connections: written out as it stood, to make room
    ("timeout", "timed_out"),           # HALF_OPEN: given up on, as Linux would, as it stood
    ("refused", "refused"),
    ("reset", "rst_seen some:CLOSED !fins_complete"),
    ("none", "!fins"),
    ("incomplete", "!fins_complete"),
    ("simultaneous", "reached:CLOSING"),
    ("half_close", "data_after_first_fin"),
    ("three_way", "!first_fin_acked_alone"),
    ("four_way", ""),
)
#: Close kinds that leave TIME_WAIT with the active closer (server_active_close counts these).
TIME_WAIT_CLOSES = frozenset(("incomplete", "simultaneous", "half_close", "three_way", "four_way"))
#: Close kinds whose record names who sent the (first) RST: reset_by.
RESET_CLOSES = frozenset(("reset",))
#: ... server_active_close only where the first closer's TIME_WAIT was reached (it is in TIME_WAIT, or CLOSED after it)
#: or is implied (its peer's FIN arrived: the observer has moved it): not a capture that ends with the
#: first closer still in FIN_WAIT_1 or FIN_WAIT_2.
TIME_WAIT_HELD = "reached:TIME_WAIT first_closer.state:TIME_WAIT|CLOSED"

#: A connection still half-open when its time is up (SYN_TIMEOUT_NS, SYN_ACK_TIMEOUT_NS, or the options)
#: is written out as it stands, close kind ``timeout``. The first row that holds: what it still waits for,
#: the time its clock started (the first SYN,ACK the server sent; the first SYN the client sent), which
#: timeout.
HALF_OPEN: tuple[tuple[str, str, str], ...] = (
    ("server.state:SYN_RECEIVED", "synack_at", "syn_ack"),     # its SYN,ACK never acknowledged
    ("client.state:SYN_SENT", "syn_at", "syn"),                # its SYN never answered
)

#: A connection whose record can only change in its final states (it may shrink to its TIME_WAIT form).
SETTLED = "!held !final !rsts !synack_unseen fins_complete some:TIME_WAIT all:TIME_WAIT|CLOSED"

#: A SYN (no ACK) on a pair already tracked starts a new connection (Connection.accepts_new_syn): (yes, when).
#: The same ISN from the same client is a retransmission (also after an RST: some stacks retry a refused SYN), or,
#: its SYN,ACK acknowledged long since, an old copy the network kept (SEGMENT's old_syn): never a new connection;
#: a different ISN is a new attempt when the pair is closed, in TIME_WAIT (Linux accepts such a SYN), or still
#: waiting in SYN_SENT.
NEW_SYN: tuple[tuple[bool, str], ...] = (
    (False, "tx:client seq=client.iss"),
    (True, "tx:client client.state:SYN_SENT"),
    (True, "some:TIME_WAIT"),
    (True, "all:CLOSED|TIME_WAIT|LISTEN"),
    (False, ""),
)

#: The observer's timers at a deadline: held final ACKs first (in the order they were held), then each
#: endpoint's own (TIMERS), in the order the connection's endpoints were first seen.
OBSERVER_TIMERS = ("final_ack", "endpoints")

#: In-order data or a plain ACK between two ESTABLISHED endpoints decides nothing: the fast path applies it
#: without the programs above (the result is the same; the tests compare both).
FAST_PATH = ("pure_ack !fins !held tx:seen !tx:resent !tx:hole !dup_ack tx.state:ESTABLISHED rx.state:ESTABLISHED "
             "seq=rx.rcv_nxt ack_known")
