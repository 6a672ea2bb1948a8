"""rawfin.core.endpoint: two sans-IO endpoints over tests/pair.py, a virtual clock, no sleeping.

Behaviours a-l (the closing note cites these names):
  a  the seed's four-segment close and both state sequences
  b  one FIN,ACK that ACKs our FIN: FIN_WAIT_1 -> FIN_WAIT_2 -> TIME_WAIT on one segment
  c  simultaneous close through CLOSING
  d  a FIN carrying data
  e  half-close: CLOSE_WAIT still sends, FIN_WAIT_2 still receives
  f  the lost final ACK (seed section 5): FIN retransmitted with backoff, TIME_WAIT re-ACKs
  g  TIME_WAIT lasts exactly 2*MSL
  h  RST per RFC 5961 section 3
  i  unacceptable segments, and a FIN beyond a gap
  j  a segment for a closed connection gets a RST, as Linux sends it
  k  API misuse raises StateError and changes nothing
  l  the close and the handshake across the 2**32 wrap
"""

from __future__ import annotations

import time

import pytest

from pair import CLIENT, SERVER, Pair, drop_first, in_state, is_pure_ack
from rawfin.core.units import MS, SEC
from rawfin.core.endpoint import Config, Endpoint
from rawfin.core.errors import StateError
from rawfin.core.segment import Flags, Segment
from rawfin.core.states import Input, State

S, I = State, Input
A, F, P, R, SY = Flags.ACK, Flags.FIN, Flags.PSH, Flags.RST, Flags.SYN
TOP = 2**32 - 1


def wire_rows(p: Pair, mark=(0, 0)):
    """``(time, sender, flags, seq, ack, len, dropped)`` of each segment on the wire since ``mark``."""
    return [(w.time_ns, w.sender, w.seg.flags, w.seg.seq, w.seg.ack, w.seg.data_len, w.dropped)
            for w in p.wire_since(mark)]


def from_peer(ep: Endpoint, **kw) -> Segment:
    return Segment(src=ep.remote[0], dst=ep.local[0], sport=ep.remote[1], dport=ep.local[1], **kw)


def tcb(ep: Endpoint):
    return (ep.state, ep.snd_una, ep.snd_nxt, ep.rcv_nxt, ep.fin_seq, ep.peer_fin_seq,
            ep.rto_at, ep.time_wait_at, ep.fin_wait_2_at)


@pytest.fixture
def no_clock(monkeypatch):
    """The core reads no clock and never sleeps: any attempt fails the test."""
    def refuse(*a, **k):
        raise AssertionError("the sans-IO core touched the wall clock")
    for name in ("sleep", "time", "time_ns", "monotonic", "monotonic_ns"):
        monkeypatch.setattr(time, name, refuse)


# -- a ------------------------------------------------------------------------------------------------
def test_a_seed_close_four_segments_and_state_sequences(no_clock):
    p = Pair.established()
    c, s = p.client, p.server
    x, y = c.snd_nxt, s.snd_nxt
    m = p.mark()
    p.at(1 * SEC).call(c, "close")
    p.at(2 * SEC).call(s, "close")
    # the four segments, exactly: FIN seq=x, ACK ack=x+1, FIN seq=y, ACK ack=y+1
    assert wire_rows(p, m) == [
        (1 * SEC, "client", F | A, x, y, 0, False),
        (1 * SEC, "server", A, y, x + 1, 0, False),
        (2 * SEC, "server", F | A, y, x + 1, 0, False),
        (2 * SEC, "client", A, x + 1, y + 1, 0, False),
    ]
    p.run_timers()
    assert len(p.wire_since(m)) == 4, "nothing more on the wire"
    # seed section 2 / section 4
    assert p.path(c, m) == [
        (1 * SEC, S.ESTABLISHED, S.FIN_WAIT_1),
        (1 * SEC, S.FIN_WAIT_1, S.FIN_WAIT_2),
        (2 * SEC, S.FIN_WAIT_2, S.TIME_WAIT),
        (62 * SEC, S.TIME_WAIT, S.CLOSED),        # 2MSL = 60 s later
    ]
    assert p.path(s, m) == [
        (1 * SEC, S.ESTABLISHED, S.CLOSE_WAIT),
        (2 * SEC, S.CLOSE_WAIT, S.LAST_ACK),
        (2 * SEC, S.LAST_ACK, S.CLOSED),
    ]
    assert [t.input for t in p.transitions_since(m) if t.endpoint == c.name] == \
        [I.CLOSE, I.RCV_ACK_OF_FIN, I.RCV_FIN, I.TIMEOUT_2MSL]
    assert [t.input for t in p.transitions_since(m) if t.endpoint == s.name] == \
        [I.RCV_FIN, I.CLOSE, I.RCV_ACK_OF_FIN]
    # each transition caused by a segment cites its frame
    frames = [w.frame for w in p.wire_since(m)]
    ct = [t for t in p.transitions_since(m) if t.endpoint == c.name]
    assert [t.frame for t in ct] == [None, frames[1], frames[2], None]
    assert p.anomalies == []
    assert c.next_deadline() is None and s.next_deadline() is None


# -- b ------------------------------------------------------------------------------------------------
def test_b_fin_ack_of_our_fin_takes_two_transitions_on_one_segment_close_on_fin():
    p = Pair.established(server_config=Config(close_on_fin=True))
    c, s = p.client, p.server
    x, y = c.snd_nxt, s.snd_nxt
    m = p.mark()
    p.at(1 * SEC).call(c, "close")
    # three segments: FIN, FIN,ACK (ACKs x and carries y), ACK
    assert wire_rows(p, m) == [
        (1 * SEC, "client", F | A, x, y, 0, False),
        (1 * SEC, "server", F | A, y, x + 1, 0, False),
        (1 * SEC, "client", A, x + 1, y + 1, 0, False),
    ]
    finack = p.wire_since(m)[1].frame
    ct = [t for t in p.transitions_since(m) if t.endpoint == c.name]
    assert [(t.from_, t.to, t.input, t.frame, t.time_ns) for t in ct] == [
        (S.ESTABLISHED, S.FIN_WAIT_1, I.CLOSE, None, 1 * SEC),
        (S.FIN_WAIT_1, S.FIN_WAIT_2, I.RCV_ACK_OF_FIN, finack, 1 * SEC),
        (S.FIN_WAIT_2, S.TIME_WAIT, I.RCV_FIN, finack, 1 * SEC),
    ]
    assert p.states(s, m) == [S.ESTABLISHED, S.CLOSE_WAIT, S.LAST_ACK, S.CLOSED]


def test_b_fin_ack_of_our_fin_hand_crafted():
    p, c = in_state(S.FIN_WAIT_1)
    res = c.receive(from_peer(c, seq=c.rcv_nxt, ack=c.snd_nxt, flags=F | A, frame=42), 5 * SEC)
    assert [(t.from_, t.to, t.frame, t.time_ns) for t in res.transitions] == [
        (S.FIN_WAIT_1, S.FIN_WAIT_2, 42, 5 * SEC),
        (S.FIN_WAIT_2, S.TIME_WAIT, 42, 5 * SEC),
    ]
    assert [(x.flags, x.ack) for x in res.segments] == [(A, c.rcv_nxt)]
    assert c.time_wait_at == 65 * SEC


# -- c ------------------------------------------------------------------------------------------------
def test_c_simultaneous_close_through_closing():
    p = Pair.established()
    c, s = p.client, p.server
    x, y = c.snd_nxt, s.snd_nxt
    m = p.mark()
    p.at(1 * SEC)
    p.call(c, "close", flush=False)          # both close before either FIN arrives
    p.call(s, "close", flush=False)
    p.flush()
    assert wire_rows(p, m) == [
        (1 * SEC, "client", F | A, x, y, 0, False),
        (1 * SEC, "server", F | A, y, x, 0, False),       # does not ACK the client's FIN yet
        (1 * SEC, "server", A, y + 1, x + 1, 0, False),
        (1 * SEC, "client", A, x + 1, y + 1, 0, False),
    ]
    for ep in (c, s):
        assert p.states(ep, m) == [S.ESTABLISHED, S.FIN_WAIT_1, S.CLOSING, S.TIME_WAIT]
        assert ep.time_wait_at == 61 * SEC
    p.run_timers()
    assert p.path(c, m)[-1] == (61 * SEC, S.TIME_WAIT, S.CLOSED)
    assert p.path(s, m)[-1] == (61 * SEC, S.TIME_WAIT, S.CLOSED)


# -- d ------------------------------------------------------------------------------------------------
def test_d_fin_carrying_data_is_acked_at_seq_plus_len_plus_one():
    p = Pair.established()
    c, s = p.client, p.server
    x, y = c.snd_nxt, s.snd_nxt
    m = p.mark()
    p.at(1 * SEC).call(c, "close", data=b"bye")
    assert wire_rows(p, m) == [
        (1 * SEC, "client", F | P | A, x, y, 3, False),
        (1 * SEC, "server", A, y, x + 3 + 1, 0, False),
    ]
    assert p.wire_since(m)[0].seg.payload == b"bye"
    assert c.fin_seq == x + 3
    assert p.data["server"] == b"bye"
    assert (c.state, s.state) == (S.FIN_WAIT_2, S.CLOSE_WAIT)


# -- e ------------------------------------------------------------------------------------------------
def test_e_half_close_close_wait_sends_and_fin_wait_2_receives():
    p = Pair.established()
    c, s = p.client, p.server
    p.at(1 * SEC).call(c, "shutdown")          # SHUT_WR: the client still reads
    x1, y = c.snd_nxt, s.snd_nxt
    m = p.mark()
    res = p.at(2 * SEC).call(s, "send", b"still talking")
    assert (c.state, s.state) == (S.FIN_WAIT_2, S.CLOSE_WAIT)
    assert wire_rows(p, m) == [
        (2 * SEC, "server", P | A, y, x1, 13, False),
        (2 * SEC, "client", A, x1, y + 13, 0, False),
    ]
    assert res.segments[0].payload == b"still talking"
    assert p.data["client"] == b"still talking"
    assert p.transitions_since(m) == []
    # data is acknowledged: nothing left to retransmit
    assert s.snd_una == s.snd_nxt == y + 13 and s.next_deadline() is None
    p.at(3 * SEC).call(s, "close")
    assert wire_rows(p, m)[2:] == [
        (3 * SEC, "server", F | A, y + 13, x1, 0, False),
        (3 * SEC, "client", A, x1, y + 14, 0, False),
    ]
    assert (c.state, s.state) == (S.TIME_WAIT, S.CLOSED)


# -- f ------------------------------------------------------------------------------------------------
def test_f_lost_final_ack_fin_retransmitted_with_backoff():
    p = Pair.established()
    c, s = p.client, p.server
    p.at(1 * SEC).call(c, "close")
    y = s.snd_nxt
    m = p.mark()
    final_ack = lambda seg: seg.sport == CLIENT[1] and is_pure_ack(seg) and seg.ack == y + 1
    p.drop = drop_first(final_ack, 2)       # the final ACK and the first re-ACK are lost
    p.at(2 * SEC).call(s, "close")
    assert c.state is S.TIME_WAIT and s.state is S.LAST_ACK
    assert c.time_wait_at == 62 * SEC
    # the handshake measured an RTT of 0 on this link: rto = SRTT + max(4 * RTTVAR, 200 ms), Linux's floor
    assert s.rto_at == 2200 * MS

    assert p.advance_to_next_deadline() == 2200 * MS
    assert s.state is S.LAST_ACK
    assert c.time_wait_at == 62200 * MS      # restarted: 2.2 s + 2MSL
    assert s.rto_at == 2600 * MS             # backed off: 2 * rto

    assert p.advance_to_next_deadline() == 2600 * MS
    assert s.state is S.CLOSED
    assert c.time_wait_at == 62600 * MS
    assert s.next_deadline() is None

    p.run_timers()
    assert wire_rows(p, m) == [
        (2 * SEC, "server", F | A, y, c.snd_nxt, 0, False),
        (2 * SEC, "client", A, c.snd_nxt, y + 1, 0, True),
        (2200 * MS, "server", F | A, y, c.snd_nxt, 0, False),     # retransmission at rto
        (2200 * MS, "client", A, c.snd_nxt, y + 1, 0, True),
        (2600 * MS, "server", F | A, y, c.snd_nxt, 0, False),     # ... then 2 * rto later
        (2600 * MS, "client", A, c.snd_nxt, y + 1, 0, False),
    ]
    assert [(t, a, b) for t, a, b in p.path(c, m)] == [
        (2 * SEC, S.FIN_WAIT_2, S.TIME_WAIT),
        (2200 * MS, S.TIME_WAIT, S.TIME_WAIT),
        (2600 * MS, S.TIME_WAIT, S.TIME_WAIT),
        (62600 * MS, S.TIME_WAIT, S.CLOSED),
    ]
    assert p.path(s, m) == [(2 * SEC, S.CLOSE_WAIT, S.LAST_ACK), (2600 * MS, S.LAST_ACK, S.CLOSED)]
    # the timer calls report what they retransmitted, and the TIME_WAIT side reports the repeat
    retrans = [seg for who, r in p.results if who == "server" for seg in r.retransmissions]
    assert [(x.flags, x.seq) for x in retrans] == [(F | A, y), (F | A, y)]
    assert [(a.endpoint, a.time_ns) for a in p.anomalies] == [(c.name, 2200 * MS), (c.name, 2600 * MS)]


# -- g ------------------------------------------------------------------------------------------------
def test_g_time_wait_lasts_2msl_default_60_s():
    assert Config().msl_ns == 30 * SEC
    p, c = in_state(S.TIME_WAIT)
    entered = p.path(c)[-1][0]
    assert c.time_wait_at == entered + 60 * SEC
    assert c.next_deadline() == entered + 60 * SEC
    early = c.handle_timer(entered + 60 * SEC - 1)
    assert early.transitions == () and c.state is S.TIME_WAIT
    res = c.handle_timer(entered + 60 * SEC)
    assert [(t.from_, t.to, t.input, t.time_ns) for t in res.transitions] == \
        [(S.TIME_WAIT, S.CLOSED, I.TIMEOUT_2MSL, entered + 60 * SEC)]
    assert res.segments == ()
    assert c.next_deadline() is None


def test_g_fin_wait_2_has_no_timer_unless_configured():
    p, c = in_state(S.FIN_WAIT_2)
    assert c.next_deadline() is None                  # RFC 9293: FIN_WAIT_2 waits for the peer
    p, c = in_state(S.FIN_WAIT_2, config=Config(fin_wait_2_timeout_ns=60 * SEC))
    entered = p.path(c)[-1][0]
    assert c.next_deadline() == entered + 60 * SEC   # Linux tcp_fin_timeout for orphans
    c.handle_timer(entered + 60 * SEC)
    assert c.state is S.CLOSED


@pytest.mark.parametrize("msl_ns", [1, 500 * MS, 2 * SEC, 120 * SEC])
def test_g_time_wait_msl_is_configurable(msl_ns):
    p = Pair.established(config=Config(msl_ns=msl_ns))
    p.at(10 * SEC).call(p.client, "close")
    p.call(p.server, "close")
    assert p.client.time_wait_at == 10 * SEC + 2 * msl_ns
    p.run_timers()
    assert p.path(p.client)[-1] == (10 * SEC + 2 * msl_ns, S.TIME_WAIT, S.CLOSED)


# -- h ------------------------------------------------------------------------------------------------
SYNCHRONIZED = [S.ESTABLISHED, S.FIN_WAIT_1, S.FIN_WAIT_2, S.CLOSE_WAIT, S.CLOSING, S.LAST_ACK, S.TIME_WAIT]


@pytest.mark.parametrize("server_iss", [1999, TOP - 2], ids=["plain", "wrap"])
@pytest.mark.parametrize("state", SYNCHRONIZED, ids=lambda s: s.name)
def test_h_rst_exact_seq_closes(state, server_iss):
    p, ep = in_state(state, server_iss=server_iss, client_iss=server_iss - 1000)
    res = ep.receive(from_peer(ep, seq=ep.rcv_nxt, flags=R), 7 * SEC)
    assert ep.state is S.CLOSED
    assert [(t.from_, t.to, t.input) for t in res.transitions] == [(state, S.CLOSED, I.RCV_RST)]
    assert res.segments == ()
    assert ep.next_deadline() is None


def test_h_rst_in_syn_received_from_passive_open_returns_to_listen():
    p, s = in_state(S.SYN_RECEIVED, passive=True)
    res = s.receive(from_peer(s, seq=s.rcv_nxt, flags=R), 1 * SEC)
    assert [(t.from_, t.to, t.input) for t in res.transitions] == \
        [(S.SYN_RECEIVED, S.LISTEN, I.RCV_RST_PASSIVE)]
    assert s.state is S.LISTEN and s.next_deadline() is None
    # and it still listens: a new handshake completes
    c2 = Endpoint(local=("192.0.2.3", 40000), iss=7)
    q = Pair(c2, s, now=2 * SEC)
    q.call(c2, "connect", SERVER)
    assert c2.state is S.ESTABLISHED and s.state is S.ESTABLISHED


def test_h_rst_in_syn_received_from_active_open_closes():
    p, c = in_state(S.SYN_RECEIVED, passive=False)
    c.receive(from_peer(c, seq=c.rcv_nxt, flags=R), 1 * SEC)
    assert c.state is S.CLOSED


@pytest.mark.parametrize("server_iss", [1999, TOP - 2], ids=["plain", "wrap"])
@pytest.mark.parametrize("state", [s for s in SYNCHRONIZED if s is not S.TIME_WAIT], ids=lambda s: s.name)
@pytest.mark.parametrize("offset", [1, 1000, 65534], ids=["+1", "+1000", "last"])
def test_h_rst_in_window_not_exact_gets_challenge_ack(state, offset, server_iss):
    p, ep = in_state(state, server_iss=server_iss, client_iss=server_iss - 1000)
    before = tcb(ep)
    res = ep.receive(from_peer(ep, seq=ep.rcv_nxt + offset, flags=R), 7 * SEC)
    assert tcb(ep) == before
    assert res.transitions == ()
    assert [(x.flags, x.seq, x.ack, x.data_len) for x in res.segments] == [(A, ep.snd_nxt, ep.rcv_nxt, 0)]
    assert [a.kind for a in res.anomalies] == ["rst_not_exact"]


@pytest.mark.parametrize("server_iss", [1999, TOP - 2], ids=["plain", "wrap"])
@pytest.mark.parametrize("state", SYNCHRONIZED, ids=lambda s: s.name)
@pytest.mark.parametrize("offset", [-1, -70000, 65535, 2**31], ids=["-1", "-70000", "wnd", "half"])
def test_h_rst_out_of_window_dropped_silently(state, offset, server_iss):
    p, ep = in_state(state, server_iss=server_iss, client_iss=server_iss - 1000)
    before = tcb(ep)
    res = ep.receive(from_peer(ep, seq=ep.rcv_nxt + offset, flags=R), 7 * SEC)
    assert tcb(ep) == before
    assert res.transitions == () and res.segments == ()
    assert [a.kind for a in res.anomalies] == ["rst_out_of_window"]


def test_h_rst_in_time_wait_in_window_not_exact_is_dropped_as_linux_does():
    # Linux's tcp_timewait_state_process kills TIME_WAIT only on an RST at exactly rcv_nxt;
    # anything else is dropped without a challenge ACK.
    p, c = in_state(S.TIME_WAIT)
    before = tcb(c)
    res = c.receive(from_peer(c, seq=c.rcv_nxt + 1, flags=R), 7 * SEC)
    assert tcb(c) == before and res.segments == () and res.transitions == ()


@pytest.mark.parametrize("state", [S.ESTABLISHED, S.FIN_WAIT_2, S.CLOSE_WAIT], ids=lambda s: s.name)
def test_h_syn_in_window_gets_challenge_ack_rfc5961_section_4(state):
    p, ep = in_state(state)
    before = tcb(ep)
    res = ep.receive(from_peer(ep, seq=ep.rcv_nxt + 10, flags=SY), 7 * SEC)
    assert tcb(ep) == before and res.transitions == ()
    assert [(x.flags, x.seq, x.ack) for x in res.segments] == [(A, ep.snd_nxt, ep.rcv_nxt)]


# -- i ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("state", [S.ESTABLISHED, S.FIN_WAIT_1, S.FIN_WAIT_2], ids=lambda s: s.name)
@pytest.mark.parametrize("where", ["old duplicate", "beyond window"])
def test_i_unacceptable_segment_is_acked_and_changes_nothing(state, where):
    p, ep = in_state(state)
    seq = ep.rcv_nxt - 5 if where == "old duplicate" else ep.rcv_nxt + ep.rcv_wnd
    before = tcb(ep)
    res = ep.receive(from_peer(ep, seq=seq, ack=ep.snd_nxt, flags=P | A, payload=b"12345"), 3 * SEC)
    assert tcb(ep) == before
    assert res.transitions == () and res.data == b""
    assert [(x.flags, x.seq, x.ack) for x in res.segments] == [(A, ep.snd_nxt, ep.rcv_nxt)]
    assert [a.kind for a in res.anomalies] == ["unacceptable_segment"]


def test_i_old_fin_in_close_wait_is_re_acked():
    # the passive side's ACK of the FIN was lost; the FIN comes again
    p, s = in_state(S.CLOSE_WAIT)
    before = tcb(s)
    res = s.receive(from_peer(s, seq=s.peer_fin_seq, ack=s.snd_nxt, flags=F | A), 3 * SEC)
    assert tcb(s) == before and res.transitions == ()
    assert [(x.flags, x.ack) for x in res.segments] == [(A, s.peer_fin_seq + 1)]
    assert [a.kind for a in res.anomalies] == ["fin_retransmission"]


def test_i_fin_beyond_a_gap_waits_for_the_gap_hand_crafted():
    p, c = in_state(S.FIN_WAIT_2, close_call="shutdown")
    nxt = c.rcv_nxt
    res = c.receive(from_peer(c, seq=nxt + 3, ack=c.snd_nxt, flags=F | A), 3 * SEC)
    assert c.state is S.FIN_WAIT_2 and res.transitions == ()
    assert c.rcv_nxt == nxt and c.peer_fin_seq is None
    assert [(x.flags, x.ack) for x in res.segments] == [(A, nxt)]      # duplicate ACK: the gap
    res = c.receive(from_peer(c, seq=nxt, ack=c.snd_nxt, flags=P | A, payload=b"abc"), 4 * SEC)
    assert res.data == b"abc"
    assert [(t.from_, t.to, t.input, t.time_ns) for t in res.transitions] == \
        [(S.FIN_WAIT_2, S.TIME_WAIT, I.RCV_FIN, 4 * SEC)]
    assert c.rcv_nxt == nxt + 4 and c.peer_fin_seq == nxt + 3
    assert res.segments[-1].ack == nxt + 4


def test_i_fin_beyond_a_gap_over_the_pair():
    p = Pair.established()
    c, s = p.client, p.server
    p.at(1 * SEC).call(c, "shutdown")
    x1, y = c.snd_nxt, s.snd_nxt
    m = p.mark()
    p.drop = drop_first(lambda seg: seg.data_len > 0)       # the data before the FIN is lost
    p.at(2 * SEC).call(s, "send", b"abc")
    p.call(s, "close")
    assert c.state is S.FIN_WAIT_2 and s.state is S.LAST_ACK
    p.run_timers()
    assert wire_rows(p, m) == [
        (2 * SEC, "server", P | A, y, x1, 3, True),
        (2 * SEC, "server", F | A, y + 3, x1, 0, False),
        (2 * SEC, "client", A, x1, y, 0, False),         # not acted on: ACK asks for y
        (2200 * MS, "server", P | A, y, x1, 3, False),   # the data, retransmitted at rto (200 ms: RTT 0)
        (2200 * MS, "client", A, x1, y + 3, 0, False),
        (2200 * MS, "client", A, x1, y + 4, 0, False),   # the FIN, now in order
    ]
    assert p.data["client"] == b"abc"
    assert p.path(c, m) == [(2200 * MS, S.FIN_WAIT_2, S.TIME_WAIT), (62200 * MS, S.TIME_WAIT, S.CLOSED)]
    assert p.path(s, m) == [(2 * SEC, S.CLOSE_WAIT, S.LAST_ACK), (2200 * MS, S.LAST_ACK, S.CLOSED)]


# -- j ------------------------------------------------------------------------------------------------
def _closed_after_a_close():
    p = Pair.established()
    p.at(1 * SEC).call(p.client, "close")
    p.call(p.server, "close")
    p.run_timers()
    assert p.client.state is S.CLOSED and p.server.state is S.CLOSED
    return p


def test_j_segment_with_ack_for_closed_connection_gets_rst_seq_ack():
    p = _closed_after_a_close()
    c = p.client
    seg = from_peer(c, seq=5000, ack=12345, flags=P | A, payload=b"late")
    res = c.receive(seg, 70 * SEC)
    assert [(x.flags, x.seq, x.ack, x.src, x.dst, x.sport, x.dport) for x in res.segments] == \
        [(R, 12345, 0, CLIENT[0], SERVER[0], CLIENT[1], SERVER[1])]
    assert [a.kind for a in res.anomalies] == ["segment_after_close"]
    assert c.state is S.CLOSED and res.transitions == ()


@pytest.mark.parametrize("flags, payload, seq, ack", [
    (SY, b"", 5000, 5001),           # a SYN: connection refused
    (F, b"", 5000, 5001),
    (P, b"0123456789", 5000, 5010),
    (F, b"", TOP, 0),                # the FIN on the top sequence number: ack wraps to 0
    (SY | F, b"ab", TOP - 1, 2),     # SYN + 2 bytes + FIN from 2**32-2
])
def test_j_segment_without_ack_for_closed_connection_gets_rst_ack(flags, payload, seq, ack):
    c = Endpoint(local=CLIENT, iss=999)                    # never opened
    res = c.receive(Segment(src=SERVER[0], dst=CLIENT[0], sport=SERVER[1], dport=CLIENT[1],
                            seq=seq, flags=flags, payload=payload), 1)
    assert [(x.flags, x.seq, x.ack) for x in res.segments] == [(R | A, 0, ack)]
    assert c.state is S.CLOSED


def test_j_rst_for_closed_connection_is_not_answered():
    p = _closed_after_a_close()
    res = p.client.receive(from_peer(p.client, seq=1, ack=2, flags=R | A), 70 * SEC)
    assert res.segments == () and p.client.state is S.CLOSED


def test_j_last_ack_side_answers_a_late_ack_after_closed():
    # the passive closer reached CLOSED; a stray segment for it gets a RST too
    p = _closed_after_a_close()
    s = p.server
    res = s.receive(from_peer(s, seq=s.rcv_nxt, ack=s.snd_nxt, flags=F | A), 70 * SEC)
    assert [(x.flags, x.seq) for x in res.segments] == [(R, s.snd_nxt)]


# -- k ------------------------------------------------------------------------------------------------
def _refused(ep: Endpoint, call: str, *args):
    before = tcb(ep)
    with pytest.raises(StateError) as ei:
        getattr(ep, call)(*args)
    assert ei.value.call == call and ei.value.state is before[0]
    assert f"{call}()" in str(ei.value) and before[0].name in str(ei.value)
    assert tcb(ep) == before
    return ei.value


@pytest.mark.parametrize("state", [S.FIN_WAIT_1, S.FIN_WAIT_2, S.CLOSING, S.LAST_ACK, S.TIME_WAIT],
                         ids=lambda s: s.name)
def test_k_close_twice(state):
    p, ep = in_state(state)
    _refused(ep, "close", 10 * SEC)


def test_k_close_twice_right_after_close():
    p = Pair.established()
    p.at(1 * SEC).call(p.client, "close")
    n = len(p.wire)
    _refused(p.client, "close", 2 * SEC)
    assert len(p.wire) == n


@pytest.mark.parametrize("state", [S.FIN_WAIT_1, S.FIN_WAIT_2, S.CLOSING, S.LAST_ACK, S.TIME_WAIT, S.CLOSED,
                                   S.SYN_SENT, S.LISTEN], ids=lambda s: s.name)
def test_k_send_after_close(state):
    p, ep = in_state(state)
    _refused(ep, "send", b"too late", 10 * SEC)


@pytest.mark.parametrize("state", [S.SYN_SENT, S.ESTABLISHED, S.TIME_WAIT, S.LISTEN], ids=lambda s: s.name)
def test_k_connect_twice(state):
    p, ep = in_state(state)
    _refused(ep, "connect", SERVER, 10 * SEC)


def test_k_close_with_data_where_no_data_may_go():
    p, ep = in_state(S.SYN_RECEIVED)
    _refused(ep, "close", 1 * SEC, b"data")


def test_k_error_text():
    p, c = in_state(S.FIN_WAIT_1)
    with pytest.raises(StateError, match=r"^close\(\) is not allowed in state FIN_WAIT_1: the application "
                                         r"closed this connection already$"):
        c.close(1)


# -- l ------------------------------------------------------------------------------------------------
def test_l_close_across_the_wrap_fin_at_top_acked_with_zero():
    p = Pair.established(client_iss=TOP - 1)          # SYN at 2**32-2, first data byte at 2**32-1
    c, s = p.client, p.server
    assert c.snd_nxt == TOP
    m = p.mark()
    p.at(1 * SEC).call(c, "close")
    p.at(2 * SEC).call(s, "close")
    p.run_timers()
    y = 2000
    assert wire_rows(p, m) == [
        (1 * SEC, "client", F | A, TOP, y, 0, False),
        (1 * SEC, "server", A, y, 0, 0, False),         # ack = 2**32-1 + 1 = 0
        (2 * SEC, "server", F | A, y, 0, 0, False),
        (2 * SEC, "client", A, 0, y + 1, 0, False),
    ]
    assert c.fin_seq == TOP and c.snd_una == c.snd_nxt == 0
    assert p.states(c, m) == [S.ESTABLISHED, S.FIN_WAIT_1, S.FIN_WAIT_2, S.TIME_WAIT, S.CLOSED]
    assert p.states(s, m) == [S.ESTABLISHED, S.CLOSE_WAIT, S.LAST_ACK, S.CLOSED]


def test_l_handshake_with_isn_at_top():
    p = Pair.new(client_iss=TOP, server_iss=TOP)
    p.call(p.server, "listen")
    p.call(p.client, "connect", SERVER)
    assert wire_rows(p) == [
        (0, "client", SY, TOP, 0, 0, False),
        (0, "server", SY | A, TOP, 0, 0, False),
        (0, "client", A, 0, 0, 0, False),
    ]
    assert p.client.state is S.ESTABLISHED and p.server.state is S.ESTABLISHED
    m = p.mark()
    p.at(1 * SEC).call(p.server, "close")
    p.call(p.client, "close")
    assert wire_rows(p, m) == [
        (1 * SEC, "server", F | A, 0, 0, 0, False),
        (1 * SEC, "client", A, 0, 1, 0, False),
        (1 * SEC, "client", F | A, 0, 1, 0, False),
        (1 * SEC, "server", A, 1, 1, 0, False),
    ]


def test_l_data_and_fin_across_the_wrap():
    p = Pair.established(client_iss=TOP - 3)          # first data byte at 2**32-2
    c, s = p.client, p.server
    m = p.mark()
    p.at(1 * SEC).call(c, "send", b"abcdef")
    p.call(c, "close")
    assert p.data["server"] == b"abcdef"
    assert wire_rows(p, m) == [
        (1 * SEC, "client", P | A, TOP - 2, 2000, 6, False),
        (1 * SEC, "server", A, 2000, 3, 0, False),      # 2**32-2 + 6 = 3 + 2**32
        (1 * SEC, "client", F | A, 3, 2000, 0, False),
        (1 * SEC, "server", A, 2000, 4, 0, False),
    ]
    assert c.state is S.FIN_WAIT_2


def test_l_lost_final_ack_across_the_wrap():
    p = Pair.established(server_iss=TOP - 1)          # the server's FIN sits on 2**32-1
    c, s = p.client, p.server
    p.at(1 * SEC).call(c, "close")
    p.drop = drop_first(lambda seg: seg.sport == CLIENT[1] and is_pure_ack(seg))
    p.at(2 * SEC).call(s, "close")
    assert s.fin_seq == TOP
    p.run_timers()
    assert p.path(s)[-1] == (2200 * MS, S.LAST_ACK, S.CLOSED)
    assert p.path(c)[-1] == (62200 * MS, S.TIME_WAIT, S.CLOSED)
    assert s.snd_una == 0


# -- the whole seed timeline ----------------------------------------------------------------------
def test_seed_timeline_with_lost_final_ack_exact_virtual_times(no_clock):
    c = Endpoint(local=CLIENT, iss=999)
    s = Endpoint(local=SERVER, iss=1999)
    p = Pair(c, s)
    p.at(0).call(s, "listen")
    p.at(100 * MS).call(c, "connect", SERVER)
    p.at(200 * MS).call(c, "send", b"GET /")
    p.at(300 * MS).call(s, "send", b"200 OK")
    p.at(1 * SEC).call(c, "close")                                  # 1. FIN seq=x
    p.drop = drop_first(lambda seg: seg.sport == CLIENT[1] and is_pure_ack(seg) and seg.ack == 2007)
    p.at(1500 * MS).call(s, "close")                                # 3. FIN seq=y, 4. ACK lost
    p.run_timers()

    assert wire_rows(p) == [
        (100 * MS, "client", SY, 999, 0, 0, False),
        (100 * MS, "server", SY | A, 1999, 1000, 0, False),
        (100 * MS, "client", A, 1000, 2000, 0, False),
        (200 * MS, "client", P | A, 1000, 2000, 5, False),
        (200 * MS, "server", A, 2000, 1005, 0, False),
        (300 * MS, "server", P | A, 2000, 1005, 6, False),
        (300 * MS, "client", A, 1005, 2006, 0, False),
        (1 * SEC, "client", F | A, 1005, 2006, 0, False),           # 1. FIN seq=x
        (1 * SEC, "server", A, 2006, 1006, 0, False),               # 2. ACK ack=x+1
        (1500 * MS, "server", F | A, 2006, 1006, 0, False),         # 3. FIN seq=y
        (1500 * MS, "client", A, 1006, 2007, 0, True),              # 4. ACK ack=y+1, lost
        (1700 * MS, "server", F | A, 2006, 1006, 0, False),         # FIN again after rto (RTT 0: 200 ms)
        (1700 * MS, "client", A, 1006, 2007, 0, False),             # TIME_WAIT ACKs again
    ]
    assert [(t.time_ns, t.endpoint, t.from_, t.to) for t in p.transitions] == [
        (0, s.name, S.CLOSED, S.LISTEN),
        (100 * MS, c.name, S.CLOSED, S.SYN_SENT),
        (100 * MS, s.name, S.LISTEN, S.SYN_RECEIVED),
        (100 * MS, c.name, S.SYN_SENT, S.ESTABLISHED),
        (100 * MS, s.name, S.SYN_RECEIVED, S.ESTABLISHED),
        (1 * SEC, c.name, S.ESTABLISHED, S.FIN_WAIT_1),
        (1 * SEC, s.name, S.ESTABLISHED, S.CLOSE_WAIT),
        (1 * SEC, c.name, S.FIN_WAIT_1, S.FIN_WAIT_2),
        (1500 * MS, s.name, S.CLOSE_WAIT, S.LAST_ACK),
        (1500 * MS, c.name, S.FIN_WAIT_2, S.TIME_WAIT),
        (1700 * MS, c.name, S.TIME_WAIT, S.TIME_WAIT),              # re-ACK, 2MSL restarts
        (1700 * MS, s.name, S.LAST_ACK, S.CLOSED),
        (61700 * MS, c.name, S.TIME_WAIT, S.CLOSED),                # 1.7 s + 60 s
    ]
    assert p.data == {"client": bytearray(b"200 OK"), "server": bytearray(b"GET /")}
    assert all(isinstance(t.time_ns, int) for t in p.transitions)
    assert p.next_deadline() is None


# -- retransmission bookkeeping (bugs fixed in endpoint.py) -----------------------------------------
def test_retransmission_budget_resets_when_the_handshake_completes():
    # the SYN,ACK is lost twice; the data that follows gets its own rto and retries
    p = Pair.new(config=Config(max_retries=2))
    c, s = p.client, p.server
    p.call(s, "listen")
    p.drop = drop_first(lambda seg: seg.syn and seg.has_ack, 2)
    p.call(c, "connect", SERVER)
    p.advance_to_next_deadline()
    assert s.state is S.ESTABLISHED and p.now == 1 * SEC
    p.drop = lambda seg: seg.sport == SERVER[1] and seg.data_len > 0
    p.call(s, "send", b"data")
    assert s.rto_at == 2 * SEC                       # rto, not the SYN,ACK's backed-off 2 s
    p.run_timers(until=30 * SEC)
    sent = [w.time_ns for w in p.wire if w.sender == "server" and w.seg.data_len]
    assert sent == [1 * SEC, 2 * SEC, 4 * SEC]       # two retransmissions, then give up at 8 s
    assert p.path(s)[-1] == (8 * SEC, S.ESTABLISHED, S.CLOSED)


def test_reused_endpoint_starts_with_a_fresh_retransmission_budget():
    c = Endpoint(local=CLIENT, iss=1, config=Config(max_retries=2))
    c.connect(SERVER, 0)
    while c.state is not S.CLOSED:
        c.handle_timer(c.next_deadline())
    c.connect(SERVER, 100 * SEC)
    assert c.rto_at == 101 * SEC
    res = c.handle_timer(101 * SEC)
    assert c.state is S.SYN_SENT and len(res.retransmissions) == 1


# -- m: close() and shutdown() as Linux has them (issue 16) ----------------------------------------------
from rawfin.core.endpoint import SHUT_RD, SHUT_RDWR, SHUT_WR  # noqa: E402

READS = Config(app_reads=True)


def test_m_close_with_unread_data_is_a_reset_with_the_ack_linux_puts_on_it():
    # RFC 1122 4.2.2.13 / RFC 2525 2.17: the peer must learn its data was lost
    p = Pair.established(server_config=READS)
    c, s = p.client, p.server
    p.at(1 * SEC).call(c, "send", b"request")
    assert s.unread == 7
    assert s.read(3) == 3 and s.unread == 4
    res = p.at(2 * SEC).call(s, "close")
    assert [(x.flags, x.seq, x.ack) for x in res.segments] == [(R | A, s.snd_nxt, s.rcv_nxt)]
    assert [(t.from_, t.input, t.to) for t in res.transitions] == [(S.ESTABLISHED, I.ABORT, S.CLOSED)]
    assert res.transitions[0].cause.startswith("close() with 4 bytes unread: snd RST")
    assert c.state is S.CLOSED           # the client took the RST


def test_m_close_after_reading_everything_is_the_fin():
    p = Pair.established(server_config=READS)
    c, s = p.client, p.server
    p.at(1 * SEC).call(c, "send", b"request")
    assert s.read(100) == 7 and s.unread == 0
    res = p.at(2 * SEC).call(s, "close")
    assert [x.flags for x in res.segments] == [F | A] and s.state is S.FIN_WAIT_2     # (the pair ACKs at once)


def test_m_without_app_reads_the_application_takes_data_as_it_comes():
    p = Pair.established()
    p.at(1 * SEC).call(p.client, "send", b"request")
    assert p.server.unread == 0
    res = p.at(2 * SEC).call(p.server, "close")
    assert [x.flags for x in res.segments] == [F | A]


def test_m_close_after_shutdown_is_legal_and_sends_nothing_more():
    p = Pair.established()
    c = p.client
    p.at(1 * SEC).call(c, "shutdown")
    assert c.state is S.FIN_WAIT_2
    m = p.mark()
    res = p.at(2 * SEC).call(c, "close")
    assert (res.segments, res.transitions) == ((), ()) and p.wire_since(m) == []
    _refused(c, "close", 3 * SEC)              # but close() twice is misuse
    _refused(c, "shutdown", 3 * SEC)           # and so is anything after close()


def test_m_shutdown_again_is_harmless_and_unconnected_is_an_error():
    p = Pair.established()
    c = p.client
    p.at(1 * SEC).call(c, "shutdown")
    res = p.at(2 * SEC).call(c, "shutdown", SHUT_RDWR)
    assert (res.segments, res.transitions) == ((), ())
    fresh = Endpoint(local=CLIENT)
    with pytest.raises(StateError, match=r"^shutdown\(\) is not allowed in state CLOSED: not connected$"):
        fresh.shutdown(0)
    with pytest.raises(ValueError):
        c.shutdown(3 * SEC, 7)


def test_m_shutdown_rd_sends_nothing_and_linux_still_takes_data():
    p = Pair.established(server_config=READS)
    c, s = p.client, p.server
    m = p.mark()
    res = p.at(1 * SEC).call(s, "shutdown", SHUT_RD)
    assert (res.segments, res.transitions) == ((), ()) and s.rd_shut and not s.wr_shut
    p.at(2 * SEC).call(c, "send", b"more")
    assert wire_rows(p, m)[-1][1:3] == ("server", A) and s.unread == 4     # ACKed and queued, as Linux does


@pytest.mark.parametrize("acked", [True, False], ids=["FIN_WAIT_2", "FIN_WAIT_1"])
def test_m_data_after_close_is_reset(acked):
    p, c = in_state(S.FIN_WAIT_2 if acked else S.FIN_WAIT_1)
    state, x1 = c.state, c.snd_nxt
    seg = from_peer(c, seq=c.rcv_nxt, ack=c.snd_nxt if acked else c.snd_una, flags=P | A, payload=b"late")
    res = c.receive(seg, 5 * SEC)
    # the reply a closed port gives (seq = the segment's ACK, no ACK flag), and the connection is gone
    assert [(x.flags, x.seq) for x in res.segments] == [(R, seg.ack)]
    assert [(t.from_, t.input, t.to) for t in res.transitions] == [(state, I.RCV_DATA_AFTER_CLOSE, S.CLOSED)]
    assert [a.kind for a in res.anomalies] == ["data_after_close"] and c.snd_nxt == x1


def test_m_data_after_shutdown_wr_only_is_acked():
    p, c = in_state(S.FIN_WAIT_2, close_call="shutdown")
    seg = from_peer(c, seq=c.rcv_nxt, ack=c.snd_nxt, flags=P | A, payload=b"still")
    res = c.receive(seg, 5 * SEC)
    assert res.data == b"still" and [(x.flags, x.ack) for x in res.segments] == [(A, seg.seq_end)]
    assert c.state is S.FIN_WAIT_2


def test_m_after_close_old_data_with_the_fin_is_no_reset():
    # the peer resends what we had with its FIN: nothing new to read, so the FIN is taken (Linux too)
    p, c = in_state(S.FIN_WAIT_2)
    seg = from_peer(c, seq=c.rcv_nxt - 0, ack=c.snd_nxt, flags=F | A)
    res = c.receive(seg, 5 * SEC)
    assert [(t.from_, t.to) for t in res.transitions] == [(S.FIN_WAIT_2, S.TIME_WAIT)]


# -- the RTO as Linux computes it: RFC 6298 with its 200 ms floor, Karn, the tail loss probe, TCP_USER_TIMEOUT --
def _server_after_handshake(rtt_ns: int, **cfg) -> Endpoint:
    """A listening endpoint whose SYN,ACK is answered ``rtt_ns`` later."""
    s = Endpoint(local=SERVER, iss=5000, config=Config(**cfg))
    s.listen(0)
    syn = Segment(src=CLIENT[0], dst=SERVER[0], sport=CLIENT[1], dport=SERVER[1], seq=100, flags=Flags.SYN)
    (synack,) = s.receive(syn, 0).segments
    s.receive(syn.with_(seq=101, ack=5001, flags=Flags.ACK), rtt_ns)
    assert s.state is State.ESTABLISHED
    return s


def _ack(s: Endpoint, ack: int) -> Segment:
    return Segment(src=CLIENT[0], dst=SERVER[0], sport=CLIENT[1], dport=SERVER[1], seq=101, ack=ack,
                   flags=Flags.ACK)


def test_the_handshake_measures_the_rtt_and_sets_linux_rto():
    s = _server_after_handshake(100 * MS)
    # RFC 6298 2.2: SRTT = R, RTTVAR = R/2; RTO = SRTT + max(4 * RTTVAR, 200 ms) = 100 + 200 ms
    assert s.rtx_info()["srtt_ns"] == 100 * MS and s.rto_ns == 300 * MS
    s.send(b"x" * 10, 1 * SEC)
    assert s.rto_at == 1 * SEC + 300 * MS


def test_a_second_measurement_moves_srtt_by_an_eighth_and_rttvar_as_linux_does():
    s = _server_after_handshake(100 * MS)
    s.send(b"x" * 100, 2 * SEC)
    s.receive(_ack(s, 5101), 2 * SEC)                 # an RTT of 0
    info = s.rtx_info()
    # SRTT = 7/8 * 100 ms; a falling RTT moves the deviation 8 times less: 4 * MDEV = 200 + 6.25 ms
    assert info["srtt_ns"] == 87_500_000 and s.rto_ns == 87_500_000 + 206_250_000


def test_karn_no_measurement_from_a_retransmitted_segment():
    s = _server_after_handshake(0)
    s.send(b"x" * 10, 1 * SEC)
    assert s.rto_at == 1 * SEC + 200 * MS             # RTT 0: the floor alone
    s.handle_timer(s.rto_at)
    assert s.rto_ns == 400 * MS and s.rtx_info()["backoff"] == 1
    s.receive(_ack(s, 5011), 5 * SEC)                 # 3.8 s later: ambiguous, not a sample (RFC 6298 3)
    assert s.rtx_info()["srtt_ns"] == 0 and s.rto_ns == 400 * MS   # the backed-off RTO stays (5.7)
    s.send(b"y" * 10, 6 * SEC)
    s.receive(_ack(s, 5021), 6 * SEC + 50 * MS)       # a clean sample ends the backoff: SRTT 0 + 50/8 ms
    assert s.rtx_info()["backoff"] == 0 and s.rto_ns == 6_250_000 + 200 * MS


def test_a_syn_sent_again_gives_no_measurement():
    s = Endpoint(local=SERVER, iss=5000)
    s.listen(0)
    syn = Segment(src=CLIENT[0], dst=SERVER[0], sport=CLIENT[1], dport=SERVER[1], seq=100, flags=Flags.SYN)
    s.receive(syn, 0)
    s.handle_timer(1 * SEC)                            # the SYN,ACK again
    s.receive(syn.with_(seq=101, ack=5001, flags=Flags.ACK), 1 * SEC + 10 * MS)
    assert s.rtx_info()["srtt_ns"] == 0 and s.rto_ns == 1 * SEC   # RFC 6298 2.1's initial RTO


def test_tail_loss_probe_then_the_rto_without_backoff():
    # what Linux does with a lone FIN on a SACK connection (packetdrill's user_timeout.pkt): the probe at
    # min(2 * SRTT + 200 ms, RTO), the RTO after it, then the RTO doubling
    s = _server_after_handshake(100 * MS, loss_probe=True)
    s.close(2100 * MS)
    sent = []
    for _ in range(4):
        t = s.next_deadline()
        res = s.handle_timer(t)
        sent += [(t, seg.fin) for seg in res.retransmissions]
    assert sent == [(2400 * MS, True), (2700 * MS, True), (3300 * MS, True), (4500 * MS, True)]


def test_user_timeout_gives_up_after_the_first_retransmission_plus_the_timeout():
    s = _server_after_handshake(100 * MS, user_timeout_ns=1 * SEC)
    s.send(b"x" * 100, 100 * MS)
    times = []
    while s.state is State.ESTABLISHED:
        t = s.next_deadline()
        res = s.handle_timer(t)
        times.append((t, len(res.retransmissions)))
    # RTO 300 ms, then 600 ms; the next (1.2 s) cut to what the timeout leaves after the first at 0.4 s
    assert times == [(400 * MS, 1), (1000 * MS, 1), (1400 * MS, 0)]
    (t,) = res.transitions
    assert (t.to, t.input) == (State.CLOSED, Input.TIMEOUT_GIVE_UP) and "TCP_USER_TIMEOUT" in t.cause
    assert res.segments == ()                          # no RST: Linux says ETIMEDOUT to the application only


def test_user_timeout_must_be_positive():
    with pytest.raises(ValueError):
        Config(user_timeout_ns=0)


# -- n: the congestion window (RFC 5681, RFC 6928) and the send queue ---------------------------------------
def _data(res) -> list[tuple[int, int, bool, bool]]:
    """(seq, len, PSH, FIN) of each segment sent."""
    return [(seg.seq, seg.data_len, bool(seg.flags & Flags.PSH), seg.fin) for seg in res.segments]


def test_n_a_write_larger_than_the_initial_window_sends_ten_segments():
    s = _server_after_handshake(10 * MS, mss=1000)
    res = s.send(bytes(15000), 20 * MS)
    assert [(q, n) for q, n, _, _ in _data(res)] == [(5001 + 1000 * i, 1000) for i in range(10)]
    assert (s.cwnd, s.in_flight, s.snd_nxt, s.write_seq) == (10, 10, 15001, 20001)


def test_n_slow_start_opens_the_window_one_segment_per_segment_acked():
    s = _server_after_handshake(10 * MS, mss=1000)
    s.send(bytes(30000), 20 * MS)
    res = s.receive(_ack(s, 7001), 30 * MS)            # 2 segments ACKed: cwnd 12, 8 in flight: 4 more
    assert s.cwnd == 12 and [q for q, *_ in _data(res)] == [15001, 16001, 17001, 18001]
    res = s.receive(_ack(s, 19001), 40 * MS)           # 12 more ACKed: cwnd 24, nothing in flight: the last 16
    assert s.cwnd == 24 and len(res.segments) == 16 and s.snd_nxt == 35001


def test_n_the_window_grows_only_while_it_is_used():
    s = _server_after_handshake(10 * MS, mss=1000)
    for i in range(20):                                # one segment at a time, each ACKed: never cwnd-limited
        s.send(bytes(100), (20 + i) * MS)
        s.receive(_ack(s, 5001 + 100 * (i + 1)), (20 + i) * MS + 500_000)
    assert s.cwnd == 10


def test_n_close_behind_a_full_window_queues_the_fin_on_the_last_segment():
    s = _server_after_handshake(10 * MS, mss=1000)
    s.send(bytes(12000), 20 * MS)
    res = s.close(20 * MS)
    (t,) = res.transitions
    assert (t.to, res.segments) == (State.FIN_WAIT_1, ())
    assert "queued behind 2000 unsent bytes" in t.cause and s.fin_seq == 5001 + 12000
    res = s.receive(_ack(s, 6001), 30 * MS)            # cwnd 11, 9 in flight: both go, the FIN on the last
    assert [(q, n, fin) for q, n, _, fin in _data(res)] == [(15001, 1000, False), (16001, 1000, True)]
    assert s.snd_nxt == 17002
    s.receive(_ack(s, 17002), 40 * MS)
    assert s.state is State.FIN_WAIT_2


def test_n_a_lone_fin_goes_even_when_the_window_is_full():
    # Linux's tcp_cwnd_test: the congestion window is not strict about the final FIN
    s = _server_after_handshake(10 * MS, mss=1000)
    s.send(bytes(10000), 20 * MS)
    res = s.close(20 * MS)
    assert _data(res) == [(15001, 0, False, True)]


def test_n_the_loss_probe_sends_new_data_without_psh_and_counts_no_retransmission():
    s = _server_after_handshake(1 * MS, mss=1000, loss_probe=True)
    s.send(bytes(12000), 10 * MS)
    res = s.handle_timer(s.next_deadline())            # the probe: one new segment, not the last one again
    assert _data(res) == [(15001, 1000, False, False)] and res.retransmissions == ()
    assert s.total_retrans == 0 and not s.probing and s.rto_at is not None


def test_n_the_rto_collapses_the_window_to_one_segment():
    s = _server_after_handshake(10 * MS, mss=1000)
    s.send(bytes(20000), 20 * MS)
    s.receive(_ack(s, 10001), 30 * MS)                 # cwnd 15
    s.handle_timer(s.next_deadline())                  # RTO: ssthresh = 0.7 * 15, cwnd 1 (RFC 5681 3.1)
    assert (s.cwnd, s.ssthresh) == (1, 10)
    s.handle_timer(s.next_deadline())                  # a second RTO of the same loss keeps the threshold
    assert (s.cwnd, s.ssthresh) == (1, 10)


def test_n_a_reset_drops_the_send_queue():
    s = _server_after_handshake(10 * MS, mss=1000)
    s.send(bytes(15000), 20 * MS)
    s.close(20 * MS)
    s.receive(_ack(s, 6001).with_(seq=101, flags=Flags.RST), 30 * MS)
    assert s.state is State.CLOSED and s.write_seq == s.snd_nxt


# -- o: a local device that drops what the endpoint sends (Linux's qdisc drop) and the probe timer -----------
def test_o_a_refused_write_waits_and_is_probed_every_500_ms_until_the_user_timeout():
    s = _server_after_handshake(100 * MS, user_timeout_ns=3 * SEC)
    s.local_drops(True)
    res = s.send(bytes(24), 200 * MS)
    assert res.segments == () and s.snd_nxt == 5001 and s.write_seq == 5025
    assert (s.rto_at, s.probe0_at) == (None, 500 * MS)          # the RTO (300 ms) after the write
    fired = []
    while s.state is State.ESTABLISHED:
        t = s.next_deadline()
        res = s.handle_timer(t)
        fired.append(t // MS)
        assert res.segments == ()
    # the first probe starts the clock; 500 ms apart; 3 s after the first, Linux gives up (tcp_probe_timer)
    assert fired == [500, 1000, 1500, 2000, 2500, 3000, 3500]
    assert s.probes_out == 6 and s.rtx_info()["probes"] == 6 and s.backoff == 0
    (t,) = res.transitions
    assert (t.to, t.input) == (State.CLOSED, Input.TIMEOUT_GIVE_UP) and "6 probes" in t.cause


def test_o_when_the_device_takes_packets_again_the_next_probe_sends_the_queue():
    s = _server_after_handshake(100 * MS)
    s.local_drops(True)
    s.send(bytes(1000), 200 * MS)
    s.handle_timer(500 * MS)
    s.local_drops(False)
    res = s.handle_timer(s.next_deadline())
    assert [(x.seq, x.data_len) for x in res.segments] == [(5001, 1000)] and s.rto_at is not None
    assert s.probes_out == 0 and s.probe0_at is None


def test_o_a_refused_retransmission_is_tried_again_in_500_ms_without_backoff():
    s = _server_after_handshake(100 * MS)
    s.send(bytes(100), 200 * MS)                       # sent: the RTO at 500 ms
    s.local_drops(True)
    res = s.handle_timer(500 * MS)
    assert res.segments == () and s.rto_at == 1000 * MS and s.backoff == 0 and s.rto_ns == 300 * MS
    s.local_drops(False)
    res = s.handle_timer(1000 * MS)
    assert [x.seq for x in res.retransmissions] == [5001] and s.backoff == 1


def test_o_acks_and_resets_are_lost_while_the_device_drops():
    s = _server_after_handshake(100 * MS)
    s.local_drops(True)
    data = _ack(s, 5001).with_(payload=b"abc")
    assert s.receive(data, 200 * MS).segments == ()
    assert s.abort(300 * MS).segments == () and s.state is State.CLOSED


# -- p: Linux's delayed ACK (Config.delayed_ack; RFC 1122 4.2.3.2) --------------------------------------------
def _data_from_client(s: Endpoint, seq: int, n: int, flags=Flags.ACK | Flags.PSH) -> Segment:
    return _ack(s, 5001).with_(seq=seq, flags=flags, payload=bytes(n))


def test_p_data_is_acked_at_once_in_quick_ack_mode_then_delayed():
    s = _server_after_handshake(10 * MS, delayed_ack=True, mss=1000)
    seq = 101
    for i in range(16):                                # TCP_MAX_QUICKACKS ACKs at once
        res = s.receive(_data_from_client(s, seq, 100), (20 + i) * MS)
        seq += 100
        assert [x.ack for x in res.segments] == [seq] and s.delack_at is None
    res = s.receive(_data_from_client(s, seq, 100), 40 * MS)
    assert res.segments == () and s.delack_at == 80 * MS
    res = s.handle_timer(80 * MS)
    assert [x.ack for x in res.segments] == [seq + 100] and s.delack_at is None


def test_p_more_than_a_full_segment_unacked_is_acked_at_once():
    s = _server_after_handshake(10 * MS, delayed_ack=True, mss=1000)
    s._quick = 0
    s._ato = 40 * MS
    assert s.receive(_data_from_client(s, 101, 500), 20 * MS).segments == ()
    res = s.receive(_data_from_client(s, 601, 1000), 21 * MS)
    assert [x.ack for x in res.segments] == [1601] and s.delack_at is None


def test_p_the_ack_of_a_fin_waits_40_ms_and_rides_on_our_fin_when_we_close_first():
    s = _server_after_handshake(10 * MS, delayed_ack=True)
    s.receive(_data_from_client(s, 101, 10), 20 * MS)          # ACKed at once (quick-ACK mode)
    fin = _ack(s, 5001).with_(seq=111, flags=Flags.ACK | Flags.FIN)
    res = s.receive(fin, 30 * MS)
    assert res.segments == () and s.state is State.CLOSE_WAIT and s.pingpong and s.delack_at == 70 * MS
    res = s.close(50 * MS)
    (f,) = res.segments
    assert f.fin and f.ack == 112 and s.delack_at is None      # one segment: FIN and ACK
    assert s.next_deadline() == s.rto_at


def test_p_the_delayed_ack_of_a_fin_goes_when_the_timer_fires():
    s = _server_after_handshake(10 * MS, delayed_ack=True)
    s.receive(_data_from_client(s, 101, 10), 20 * MS)
    s.receive(_ack(s, 5001).with_(seq=111, flags=Flags.ACK | Flags.FIN), 30 * MS)
    res = s.handle_timer(70 * MS)
    (a,) = res.segments
    assert a.flags == Flags.ACK and a.ack == 112 and not s.pingpong


def test_p_a_fin_before_any_data_and_a_fin_in_fin_wait_are_acked_at_once():
    s = _server_after_handshake(10 * MS, delayed_ack=True)
    res = s.receive(_ack(s, 5001).with_(seq=101, flags=Flags.ACK | Flags.FIN), 20 * MS)
    assert [x.ack for x in res.segments] == [102]
    s = _server_after_handshake(10 * MS, delayed_ack=True)
    s.receive(_data_from_client(s, 101, 10), 20 * MS)
    s.close(30 * MS)
    res = s.receive(_ack(s, 5002).with_(seq=111, flags=Flags.ACK | Flags.FIN), 40 * MS)
    assert s.state is State.TIME_WAIT and [x.ack for x in res.segments] == [112]


def test_p_without_delayed_ack_every_ack_goes_at_once():
    s = _server_after_handshake(10 * MS)
    s.receive(_data_from_client(s, 101, 10), 20 * MS)
    res = s.receive(_ack(s, 5001).with_(seq=111, flags=Flags.ACK | Flags.FIN), 30 * MS)
    assert [x.ack for x in res.segments] == [112] and s.delack_at is None


def test_p_a_filled_gap_is_acked_at_once():
    s = _server_after_handshake(10 * MS, delayed_ack=True, mss=1000)
    s._quick, s._ato = 0, 40 * MS
    res = s.receive(_data_from_client(s, 201, 100), 20 * MS)     # ahead of a gap: a duplicate ACK at once
    assert [x.ack for x in res.segments] == [101]
    res = s.receive(_data_from_client(s, 101, 100), 21 * MS)     # the gap filled: everything ACKed at once
    assert res.segments[-1].ack == 301 and s.delack_at is None
