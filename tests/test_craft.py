"""rawfin.sim.craft: the seed's close written out literally, and every variant around the wrap."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rawfin.sim import craft
from rawfin.core import seq as sq
from rawfin.core.segment import Flags, Segment

F, S, R, P, A = Flags.FIN, Flags.SYN, Flags.RST, Flags.PSH, Flags.ACK
C = ("192.0.2.2", 50001)
SV = ("192.0.2.1", 80)
C6 = ("2001:db8::2", 50001)
SV6 = ("2001:db8::1", 443)


def rows(segs):
    """(src port, dst port, flags, seq, ack, len) per segment, for literal comparisons."""
    return [(s.sport, s.dport, s.flags, s.seq, s.ack, s.data_len) for s in segs]


# -- the seed note's close, literally -------------------------------------------

def test_close_4way_is_the_seed_close():
    segs = craft.close_4way(C, SV, x=1000, y=2000)
    assert rows(segs) == [
        (50001, 80, F | A, 1000, 2000, 0),  # 1. FIN (seq=x)
        (80, 50001, A,     2000, 1001, 0),  # 2. ACK (ack=x+1)
        (80, 50001, F | A, 2000, 1001, 0),  # 3. FIN (seq=y)
        (50001, 80, A,     1001, 2001, 0),  # 4. ACK (ack=y+1)
    ]
    assert [s.describe() for s in segs] == [
        "FIN,ACK seq=1000 ack=2000", "ACK seq=2000 ack=1001",
        "FIN,ACK seq=2000 ack=1001", "ACK seq=1001 ack=2001",
    ]
    assert (segs[0].src, segs[0].dst) == ("192.0.2.2", "192.0.2.1")


def test_close_4way_defaults_are_the_seed():
    assert rows(craft.close_4way()) == rows(craft.close_4way(C, SV, 1000, 2000))


def test_server_closes():
    segs = craft.close_4way(C, SV, x=1000, y=2000, closer="server")
    assert rows(segs) == [
        (80, 50001, F | A, 1000, 2000, 0),
        (50001, 80, A,     2000, 1001, 0),
        (50001, 80, F | A, 2000, 1001, 0),
        (80, 50001, A,     1001, 2001, 0),
    ]


def test_close_across_the_wrap():
    segs = craft.close_4way(C, SV, x=2**32 - 1, y=2**32 - 1)
    assert rows(segs) == [
        (50001, 80, F | A, 4294967295, 4294967295, 0),
        (80, 50001, A,     4294967295, 0, 0),
        (80, 50001, F | A, 4294967295, 0, 0),
        (50001, 80, A,     0, 0, 0),
    ]
    assert segs[0].seq_end == 0


def test_close_4way_ipv6():
    segs = craft.close_4way(("2001:DB8:0::2", 50001), SV6, x=7, y=9)
    assert all(s.ipv6 for s in segs)
    assert segs[0].src == "2001:db8::2"  # normalised
    assert rows(segs) == [
        (50001, 443, F | A, 7, 9, 0), (443, 50001, A, 9, 8, 0),
        (443, 50001, F | A, 9, 8, 0), (50001, 443, A, 8, 10, 0),
    ]


# -- variants --------------------------------------------------------------------

def test_fin_with_data():
    segs = craft.close_fin_with_data(C, SV, x=1000, y=2000, data=b"bye!\n")
    assert rows(segs) == [
        (50001, 80, F | P | A, 1000, 2000, 5),
        (80, 50001, A,         2000, 1006, 0),  # x + len + 1
        (80, 50001, F | A,     2000, 1006, 0),
        (50001, 80, A,         1006, 2001, 0),
    ]
    assert segs[0].payload == b"bye!\n" and segs[0].fin_seq == 1005


def test_fin_with_data_across_the_wrap():
    segs = craft.close_fin_with_data(C, SV, x=2**32 - 2, y=5, data=b"abc")
    assert segs[1].ack == 2  # (2**32 - 2) + 3 + 1
    assert segs[3].seq == 2 and segs[3].ack == 6


def test_fin_with_data_needs_data():
    with pytest.raises(ValueError, match="needs some data"):
        craft.close_fin_with_data(data=b"")


def test_close_3way():
    assert rows(craft.close_3way(C, SV, x=1000, y=2000)) == [
        (50001, 80, F | A, 1000, 2000, 0),
        (80, 50001, F | A, 2000, 1001, 0),
        (50001, 80, A,     1001, 2001, 0),
    ]


def test_close_simultaneous():
    assert rows(craft.close_simultaneous(C, SV, x=1000, y=2000)) == [
        (50001, 80, F | A, 1000, 2000, 0),
        (80, 50001, F | A, 2000, 1000, 0),  # sent before the client's FIN arrived
        (50001, 80, A,     1001, 2001, 0),
        (80, 50001, A,     2001, 1001, 0),
    ]


def test_rst():
    assert rows(craft.rst(C, SV, x=1000, y=2000)) == [(50001, 80, R, 1000, 0, 0)]
    assert rows(craft.rst(C, SV, x=1000, y=2000, with_ack=True)) == [(50001, 80, R | A, 1000, 2000, 0)]
    assert rows(craft.rst(C, SV, x=1000, y=2000, closer="server")) == [(80, 50001, R, 1000, 0, 0)]


def test_handshake():
    assert rows(craft.handshake(C, SV, isn_c=2**32 - 1, isn_s=41)) == [
        (50001, 80, S,     4294967295, 0, 0),
        (80, 50001, S | A, 41, 0, 0),
        (50001, 80, A,     0, 42, 0),
    ]


def test_data_splits_by_mss():
    segs = craft.data(C, SV, seq=2**32 - 3, ack=7, payload=b"abcdefg", mss=3)
    assert rows(segs) == [
        (50001, 80, A, 4294967293, 7, 3),
        (50001, 80, A, 0, 7, 3),
        (50001, 80, P | A, 3, 7, 1),
    ]
    assert craft.data(C, SV, 1, 1, b"") == []


# -- whole connections -----------------------------------------------------------

def check_consistent(segs: list[Segment]) -> None:
    """Every ACK covers exactly bytes already sent, and each side's seq follows on."""
    nxt: dict[tuple[str, int], int] = {}   # sender -> its snd_nxt so far
    for s in segs:
        me, peer = (s.src, s.sport), (s.dst, s.dport)
        if me in nxt:
            assert s.seq == nxt[me], s.describe()
        if s.flags & A:
            assert peer in nxt and sq.le(s.ack, nxt[peer]), f"{s.describe()} acks unseen data"
        if not s.rst:
            nxt[me] = s.seq_end
    times = [s.time_ns for s in segs]
    assert all(t is not None for t in times)
    assert all(b > a for a, b in zip(times, times[1:]))


CLOSES = ["4way", "3way", "fin_with_data", "simultaneous", "rst", "rst_ack"]


@pytest.mark.parametrize("close", CLOSES)
@pytest.mark.parametrize("closer", ["client", "server"])
@pytest.mark.parametrize("v6", [False, True])
def test_connection_is_consistent(close, closer, v6):
    client, server = (C6, SV6) if v6 else (C, SV)
    segs = craft.connection(client, server, 2**32 - 3, 2**32 - 100, close=close, closer=closer,
                            requests=[(b"q" * 10, b"r" * 5000), (b"again", b""), (b"", b"push")])
    check_consistent(segs)
    assert segs[0].flags == S and segs[1].flags == S | A
    last_closer = (client if closer == "client" else server)[1]
    first_close = next(s for s in segs[3:] if s.fin or s.rst)
    assert first_close.sport == last_closer
    if close.startswith("rst"):
        assert segs[-1].rst
    else:
        assert segs[-1].flags == A and sum(1 for s in segs if s.fin) == 2


def test_connection_timestamps():
    segs = craft.connection(start_ns=5, gap_ns=10)
    assert [s.time_ns for s in segs] == list(range(5, 5 + 10 * len(segs), 10))
    with pytest.raises(ValueError, match="gap_ns"):
        craft.connection(gap_ns=0)


def test_connection_close_matches_the_close_builder():
    segs = craft.connection(C, SV, 999, 1999, requests=[])
    assert rows(segs) == rows(craft.handshake(C, SV, 999, 1999) + craft.close_4way(C, SV, 1000, 2000))


@settings(max_examples=100)
@given(st.integers(0, sq.MASK), st.integers(0, sq.MASK), st.sampled_from(CLOSES),
       st.sampled_from(["client", "server"]),
       st.lists(st.tuples(st.binary(max_size=3000), st.binary(max_size=3000)), max_size=3))
def test_connection_consistent_anywhere(isn_c, isn_s, close, closer, requests):
    check_consistent(craft.connection(C, SV, isn_c, isn_s, close=close, closer=closer, requests=requests))


# -- misuse ----------------------------------------------------------------------

@pytest.mark.parametrize("kwargs, message", [
    (dict(client=("192.0.2.2", 1), server=("2001:db8::1", 80)), "same IP version"),
    (dict(client=("not-an-ip", 1)), "not an IPv4 or IPv6 address"),
    (dict(client=("192.0.2.2", 70000)), "port must be"),
    (dict(client="192.0.2.2"), r"\(ip, port\) pair"),
    (dict(closer="both"), "closer must be"),
])
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        craft.close_4way(**kwargs)


def test_bad_close_kind():
    with pytest.raises(ValueError, match="close must be one of"):
        craft.connection(close="5way")
