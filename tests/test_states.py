"""rawfin.core.states: the one transition table, checked against RFC 9293 written out by hand,
and swept pair by pair against a real Endpoint driven into each state."""

from __future__ import annotations

import pytest

from pair import in_state
from rawfin.core.units import SEC
from rawfin.core.endpoint import Config, Endpoint
from rawfin.core.errors import StateError
from rawfin.core.segment import Flags, Segment
from rawfin.core.states import APP_INPUTS, TRANSITIONS, Input, Rule, State, next_state

S, I = State, Input

# -- the RFC, by hand ----------------------------------------------------------------------------
# (state, input, next state, what it sends), from RFC 9293 figure 5 and section 3.10.
RFC9293_OPEN = [
    (S.CLOSED, I.LISTEN, S.LISTEN, ""),                    # passive OPEN
    (S.CLOSED, I.CONNECT, S.SYN_SENT, "SYN"),              # active OPEN
    (S.LISTEN, I.RCV_SYN, S.SYN_RECEIVED, "SYN,ACK"),
    (S.LISTEN, I.CLOSE, S.CLOSED, ""),
    (S.SYN_SENT, I.RCV_SYN_ACK, S.ESTABLISHED, "ACK"),
    (S.SYN_SENT, I.RCV_SYN, S.SYN_RECEIVED, "SYN,ACK"),    # simultaneous open
    (S.SYN_SENT, I.CLOSE, S.CLOSED, ""),
    (S.SYN_SENT, I.RCV_RST, S.CLOSED, ""),                 # RST with an acceptable ACK
    (S.SYN_RECEIVED, I.RCV_ACK_OF_SYN, S.ESTABLISHED, ""),
    (S.SYN_RECEIVED, I.CLOSE, S.FIN_WAIT_1, "FIN"),
    (S.SYN_RECEIVED, I.RCV_RST_PASSIVE, S.LISTEN, ""),     # 3.10.7.4: passive open returns to LISTEN
    (S.SYN_RECEIVED, I.RCV_RST, S.CLOSED, ""),             # ...active open: connection refused
    (S.SYN_RECEIVED, I.RCV_FIN, S.CLOSE_WAIT, "ACK"),      # 3.10.7.4 eighth step lists SYN-RECEIVED
]
RFC9293_CLOSE = [
    (S.ESTABLISHED, I.CLOSE, S.FIN_WAIT_1, "FIN"),
    (S.ESTABLISHED, I.RCV_FIN, S.CLOSE_WAIT, "ACK"),
    (S.FIN_WAIT_1, I.RCV_ACK_OF_FIN, S.FIN_WAIT_2, ""),
    (S.FIN_WAIT_1, I.RCV_FIN, S.CLOSING, "ACK"),
    (S.FIN_WAIT_2, I.RCV_FIN, S.TIME_WAIT, "ACK"),
    (S.CLOSING, I.RCV_ACK_OF_FIN, S.TIME_WAIT, ""),
    (S.CLOSE_WAIT, I.CLOSE, S.LAST_ACK, "FIN"),
    (S.LAST_ACK, I.RCV_ACK_OF_FIN, S.CLOSED, ""),
    (S.TIME_WAIT, I.TIMEOUT_2MSL, S.CLOSED, ""),
    (S.TIME_WAIT, I.RCV_FIN, S.TIME_WAIT, "ACK"),          # re-ACK, restart the 2MSL timeout
]
# ABORT and RST in every synchronized state (RFC 9293 3.10.5, 3.10.7.4 second step)
RFC9293_RESET = [
    (st, I.RCV_RST, S.CLOSED, "") for st in
    (S.ESTABLISHED, S.FIN_WAIT_1, S.FIN_WAIT_2, S.CLOSE_WAIT, S.CLOSING, S.LAST_ACK)
] + [
    (st, I.ABORT, S.CLOSED, "RST") for st in
    (S.SYN_RECEIVED, S.ESTABLISHED, S.FIN_WAIT_1, S.FIN_WAIT_2, S.CLOSE_WAIT, S.CLOSING, S.LAST_ACK)
] + [
    (S.LISTEN, I.ABORT, S.CLOSED, ""),
    (S.SYN_SENT, I.ABORT, S.CLOSED, ""),
    (S.TIME_WAIT, I.ABORT, S.CLOSED, ""),
]
# Where RFC 9293 leaves a choice or says nothing, rawfin follows Linux.
LINUX = [
    (S.TIME_WAIT, I.RCV_RST, S.CLOSED, ""),               # tcp_rfc1337=0 (RFC 1337 would ignore it)
    (S.TIME_WAIT, I.RCV_NEW_SYN, S.CLOSED, ""),           # SYN above rcv_nxt reuses the pair
    (S.FIN_WAIT_2, I.TIMEOUT_FIN_WAIT_2, S.CLOSED, ""),   # tcp_fin_timeout for orphans
] + [
    (st, I.TIMEOUT_GIVE_UP, S.CLOSED, "") for st in       # tcp_syn_retries / tcp_retries2
    (S.SYN_SENT, S.SYN_RECEIVED, S.ESTABLISHED, S.FIN_WAIT_1, S.CLOSE_WAIT, S.CLOSING, S.LAST_ACK)
]
# RFC 1122 4.2.2.13: data arriving after close() (nobody can read it) SHOULD be answered with a RST; Linux
# does, and the connection is gone. After shutdown(SHUT_WR) alone it is data for the application (no row).
RFC1122_DATA_AFTER_CLOSE = [
    (st, I.RCV_DATA_AFTER_CLOSE, S.CLOSED, "RST") for st in (S.FIN_WAIT_1, S.FIN_WAIT_2)
]
EXPECTED = RFC9293_OPEN + RFC9293_CLOSE + RFC9293_RESET + LINUX + RFC1122_DATA_AFTER_CLOSE


@pytest.mark.parametrize("state, inp, to, sends", EXPECTED,
                         ids=[f"{s.name}-{i.name}" for s, i, _, _ in EXPECTED])
def test_rfc_row_is_in_the_table(state, inp, to, sends):
    rule = TRANSITIONS.get((state, inp))
    assert rule is not None, f"({state.name}, {inp.name}) missing from TRANSITIONS"
    assert rule.to is to
    assert rule.sends == sends
    assert next_state(state, inp) is rule


def test_table_has_nothing_but_the_rows_written_out_here():
    expected = {(s, i) for s, i, _, _ in EXPECTED}
    assert len(expected) == len(EXPECTED), "a row is written out twice"
    assert set(TRANSITIONS) == expected, (set(TRANSITIONS) ^ expected)


def test_the_seeds_diagram_section_4():
    # client: ESTABLISHED -close()-> FIN_WAIT_1 -ACK-> FIN_WAIT_2 -FIN-> TIME_WAIT -2MSL-> CLOSED
    # server: ESTABLISHED -FIN-> CLOSE_WAIT -close()-> LAST_ACK -ACK-> CLOSED
    def walk(start, inputs):
        out = [start]
        for i in inputs:
            out.append(TRANSITIONS[(out[-1], i)].to)
        return out

    assert walk(S.ESTABLISHED, [I.CLOSE, I.RCV_ACK_OF_FIN, I.RCV_FIN, I.TIMEOUT_2MSL]) == \
        [S.ESTABLISHED, S.FIN_WAIT_1, S.FIN_WAIT_2, S.TIME_WAIT, S.CLOSED]
    assert walk(S.ESTABLISHED, [I.RCV_FIN, I.CLOSE, I.RCV_ACK_OF_FIN]) == \
        [S.ESTABLISHED, S.CLOSE_WAIT, S.LAST_ACK, S.CLOSED]


def test_eleven_states_named_exactly():
    assert [s.name for s in State] == [
        "CLOSED", "LISTEN", "SYN_SENT", "SYN_RECEIVED", "ESTABLISHED", "FIN_WAIT_1", "FIN_WAIT_2",
        "CLOSE_WAIT", "CLOSING", "LAST_ACK", "TIME_WAIT"]
    assert all(s.value == s.name == str(s) for s in State)


def test_app_inputs():
    assert APP_INPUTS == {I.LISTEN, I.CONNECT, I.CLOSE, I.ABORT}


def test_every_state_is_reached_and_every_state_but_closed_is_left():
    targets = {r.to for r in TRANSITIONS.values()}
    sources = {s for s, _ in TRANSITIONS}
    assert targets == set(State)
    assert sources == set(State)


def test_rule_is_frozen_and_keyword_only():
    with pytest.raises(TypeError):
        Rule(S.CLOSED)  # type: ignore[misc]
    r = Rule(to=S.CLOSED)
    with pytest.raises(AttributeError):
        r.to = S.LISTEN  # type: ignore[misc]


# -- the sweep: every (state, input) pair against a real Endpoint -------------------------------------
CFG = Config(max_retries=2, fin_wait_2_timeout_ns=10 * SEC)
PEER = ("192.0.2.1", 80)


def _from_peer(ep: Endpoint, **kw) -> Segment:
    remote = ep.remote or ("192.0.2.2", 50001)
    return Segment(src=remote[0], dst=ep.local[0], sport=remote[1], dport=ep.local[1], **kw)


def apply(ep: Endpoint, inp: Input, now: int):
    """Feed ``inp`` to ``ep`` the way the world would: a call, a crafted segment, or time passing."""
    A = Flags.ACK
    if inp is I.LISTEN:
        return ep.listen(now)
    if inp is I.CONNECT:
        return ep.connect(PEER, now)
    if inp is I.CLOSE:
        return ep.close(now)
    if inp is I.ABORT:
        return ep.abort(now)
    if inp is I.RCV_SYN:
        # a fresh SYN from a client (LISTEN), or the peer's crossing SYN (SYN_SENT)
        return ep.receive(_from_peer(ep, seq=5000, flags=Flags.SYN), now)
    if inp is I.RCV_SYN_ACK:
        return ep.receive(_from_peer(ep, seq=5000, ack=ep.snd_nxt, flags=Flags.SYN | A), now)
    if inp in (I.RCV_ACK_OF_SYN, I.RCV_ACK_OF_FIN):
        return ep.receive(_from_peer(ep, seq=ep.rcv_nxt, ack=ep.snd_nxt, flags=A), now)
    if inp is I.RCV_FIN:
        if ep.state is S.TIME_WAIT:   # the peer's FIN, retransmitted
            return ep.receive(_from_peer(ep, seq=ep.peer_fin_seq, ack=ep.snd_nxt, flags=Flags.FIN | A), now)
        # acknowledge nothing new (not our FIN), except what SYN_RECEIVED needs to accept a segment at all
        ack = ep.snd_nxt if ep.state is S.SYN_RECEIVED else ep.snd_una
        return ep.receive(_from_peer(ep, seq=ep.rcv_nxt, ack=ack, flags=Flags.FIN | A), now)
    if inp in (I.RCV_RST, I.RCV_RST_PASSIVE):
        if ep.state is S.SYN_SENT:
            return ep.receive(_from_peer(ep, seq=0, ack=ep.snd_nxt, flags=Flags.RST | A), now)
        return ep.receive(_from_peer(ep, seq=ep.rcv_nxt, flags=Flags.RST), now)
    if inp is I.RCV_NEW_SYN:
        return ep.receive(_from_peer(ep, seq=ep.rcv_nxt + 100_000, flags=Flags.SYN), now)
    if inp is I.RCV_DATA_AFTER_CLOSE:        # (the endpoint got there by close())
        return ep.receive(_from_peer(ep, seq=ep.rcv_nxt, ack=ep.snd_una, flags=Flags.PSH | A, payload=b"late"), now)
    if inp is I.TIMEOUT_2MSL:
        return ep.handle_timer(ep.time_wait_at)
    if inp is I.TIMEOUT_FIN_WAIT_2:
        return ep.handle_timer(ep.fin_wait_2_at)
    if inp is I.TIMEOUT_GIVE_UP:
        if ep.state in (S.ESTABLISHED, S.CLOSE_WAIT):
            ep.send(b"never acknowledged", now)
        for _ in range(CFG.max_retries + 1):
            d = ep.next_deadline()
            assert d is not None, f"{ep.state.name}: nothing to retransmit"
            res = ep.handle_timer(d)
            if res.transitions:
                return res
            assert len(res.retransmissions) == 1
        raise AssertionError("never gave up")
    raise AssertionError(inp)  # pragma: no cover


# Rows the RFC lists that an endpoint can only take through another row first.
# RFC 9293 3.10.7.4 accepts a segment in SYN-RECEIVED only with an ACK of our SYN,
# which moves to ESTABLISHED (fifth step) before the FIN is looked at (eighth step).
REACHED_VIA = {
    (S.SYN_RECEIVED, I.RCV_FIN): [(S.SYN_RECEIVED, I.RCV_ACK_OF_SYN, S.ESTABLISHED),
                                  (S.ESTABLISHED, I.RCV_FIN, S.CLOSE_WAIT)],
}
TABLE = sorted(TRANSITIONS.items(), key=lambda kv: (list(State).index(kv[0][0]), list(Input).index(kv[0][1])))


@pytest.mark.parametrize("key, rule", TABLE, ids=[f"{s.name}-{i.name}" for (s, i), _ in TABLE])
def test_sweep_table_pair_on_a_real_endpoint(key, rule):
    state, inp = key
    # RCV_RST in SYN_RECEIVED is the active (simultaneous) open; every other row uses the passive one
    p, ep = in_state(state, passive=(inp is not I.RCV_RST), config=CFG)
    now = p.now + 1 * SEC // 2
    res = apply(ep, inp, now)
    assert ep.state is rule.to
    got = [(t.from_, t.input, t.to) for t in res.transitions]
    assert got == REACHED_VIA.get(key, [(state, inp, rule.to)])
    for t in res.transitions:
        assert t.endpoint == ep.name and isinstance(t.time_ns, int)
    # what the row says the endpoint sends is what it sent
    if rule.sends:
        assert res.segments, f"{rule.sends} expected"
        sent = res.segments[0].flags
        for name in rule.sends.split(","):
            assert sent & Flags[name], (rule.sends, res.segments[0].describe())
    elif inp is not I.TIMEOUT_GIVE_UP:
        assert res.segments == ()


def _snapshot(ep: Endpoint):
    return (ep.state, ep.remote, ep.iss, ep.snd_una, ep.snd_nxt, ep.rcv_nxt, ep.fin_seq, ep.peer_fin_seq,
            ep.rto_at, ep.time_wait_at, ep.fin_wait_2_at)


# -- the sweep outside the rows written out above ------------------------------------------------
# Every (state, input) pair the hand-written EXPECTED does not list, whatever the table says: an
# application call there is refused (StateError naming call and state, nothing changed); a segment
# or a timer there never takes that input. (Deleting a row from TRANSITIONS makes the sweep above
# fail; adding one the RFC lists nowhere makes this one fail.)
_APP_CALLS = {I.LISTEN: "listen", I.CONNECT: "connect", I.CLOSE: "close", I.ABORT: "abort"}
# close() of a socket that never connected releases it: nothing to send, no transition, no error (Linux: 0)
NOOP = {(S.CLOSED, I.CLOSE)}
_WRITTEN = {(s, i) for s, i, _, _ in EXPECTED}
OUTSIDE = [(st, inp) for st in State for inp in Input if (st, inp) not in _WRITTEN and (st, inp) not in NOOP]
MISUSE = [(st, passive, inp) for st, inp in OUTSIDE if inp in _APP_CALLS
          for passive in ((True, False) if st is S.SYN_RECEIVED else (True,))]


@pytest.mark.parametrize("state, passive, inp", MISUSE,
                         ids=[f"{s.name}{'' if p else '(active)'}-{i.name}" for s, p, i in MISUSE])
def test_sweep_app_call_outside_the_rfc_rows_raises(state, passive, inp):
    p, ep = in_state(state, passive=passive, config=CFG)
    before = _snapshot(ep)
    with pytest.raises(StateError) as ei:
        apply(ep, inp, p.now + 1)
    err = ei.value
    call = _APP_CALLS[inp]
    assert err.call == call and err.state is state
    assert f"{call}()" in str(err) and state.name in str(err)
    assert _snapshot(ep) == before


def test_close_of_a_socket_that_never_connected_is_a_no_op():
    p, ep = in_state(S.CLOSED, config=CFG)
    before = _snapshot(ep)
    res = ep.close(p.now + 1)
    assert (res.segments, res.transitions) == ((), ()) and _snapshot(ep) == before
def provoke(ep: Endpoint, inp: Input, now: int):
    """The world's nearest attempt at ``inp`` where the RFC has no row for it: the segment that would
    be that input, or every timer the endpoint has run to its end."""
    A = Flags.ACK
    if inp in (I.RCV_SYN, I.RCV_NEW_SYN):
        return ep.receive(_from_peer(ep, seq=sq_add(ep.rcv_nxt, 100_000), flags=Flags.SYN), now)
    if inp is I.RCV_SYN_ACK:
        return ep.receive(_from_peer(ep, seq=5000, ack=ep.snd_nxt, flags=Flags.SYN | A), now)
    if inp in (I.RCV_ACK_OF_SYN, I.RCV_ACK_OF_FIN):
        return ep.receive(_from_peer(ep, seq=ep.rcv_nxt, ack=ep.snd_nxt, flags=A), now)
    if inp is I.RCV_FIN:
        return ep.receive(_from_peer(ep, seq=ep.rcv_nxt, ack=ep.snd_nxt, flags=Flags.FIN | A), now)
    if inp in (I.RCV_RST, I.RCV_RST_PASSIVE):
        return ep.receive(_from_peer(ep, seq=ep.rcv_nxt, ack=ep.snd_nxt, flags=Flags.RST | A), now)
    if inp is I.RCV_DATA_AFTER_CLOSE:
        return ep.receive(_from_peer(ep, seq=ep.rcv_nxt, ack=ep.snd_nxt, flags=Flags.PSH | A, payload=b"late"), now)
    # a timer: run every deadline there is, far past the last
    res = ep.handle_timer(now)
    for _ in range(CFG.max_retries + 3):
        d = ep.next_deadline()
        if d is None:
            break
        res = res + ep.handle_timer(d)
    return res + ep.handle_timer(now + 10**15)


def sq_add(a: int, n: int) -> int:
    return (a + n) % 2**32


NEVER = [(st, inp) for st, inp in OUTSIDE if inp not in _APP_CALLS]


@pytest.mark.parametrize("state, inp", NEVER, ids=[f"{s.name}-{i.name}" for s, i in NEVER])
def test_sweep_segment_or_timer_outside_the_rfc_rows_never_takes_that_input(state, inp):
    p, ep = in_state(state, passive=True, config=CFG)
    res = provoke(ep, inp, p.now + 1)
    taken = [(t.from_, t.input) for t in res.transitions if t.from_ is state and t.input is inp]
    assert not taken, f"{state.name} took {inp.name}: {taken} (no such row in RFC 9293 or in rawfin's Linux rows)"


def test_every_pair_is_either_written_out_or_swept():
    swept = {(s, i) for s, _, i in MISUSE} | set(NEVER)
    assert swept | _WRITTEN | NOOP == {(s, i) for s in State for i in Input}
    assert not swept & (_WRITTEN | NOOP)
