"""rawfin.core.segment: the Segment value type and the flag text helpers."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rawfin.core.segment import Flags, Segment, flags_text, fmt_endpoint, parse_flags

TOP = 2**32 - 1
V4 = dict(src="192.0.2.2", dst="192.0.2.1", sport=50001, dport=80)
V6 = dict(src="2001:db8::2", dst="2001:db8::1", sport=50001, dport=80)


def seg(**kw) -> Segment:
    return Segment(**{**V4, **kw})


# -- validation -------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["sport", "dport"])
@pytest.mark.parametrize("bad", [-1, 65536, 1.5, "80", None])
def test_ports_must_be_0_to_65535(name, bad):
    with pytest.raises(ValueError, match=name):
        seg(**{name: bad})


@pytest.mark.parametrize("port", [0, 1, 65535])
def test_port_edges_accepted(port):
    s = seg(sport=port, dport=port)
    assert s.sport == s.dport == port


@pytest.mark.parametrize("bad", [-1, 65536, 2**20])
def test_window_must_fit_16_bits(bad):
    with pytest.raises(ValueError, match="window"):
        seg(window=bad)


@pytest.mark.parametrize("w", [0, 65535])
def test_window_edges_accepted(w):
    assert seg(window=w).window == w


@pytest.mark.parametrize("name", ["seq", "ack"])
@pytest.mark.parametrize("given_, stored", [(2**32, 0), (TOP + 2, 1), (-1, TOP), (2**33 + 5, 5), (TOP, TOP), (0, 0)])
def test_seq_and_ack_wrap_mod_2_32(name, given_, stored):
    assert getattr(seg(**{name: given_}), name) == stored


@pytest.mark.parametrize("name", ["seq", "ack"])
def test_seq_and_ack_must_be_integers(name):
    with pytest.raises(ValueError, match=name):
        seg(**{name: 1.0})
    with pytest.raises(ValueError, match=name):
        seg(**{name: "1"})


@given(st.integers(-(2**40), 2**40), st.integers(-(2**40), 2**40))
def test_any_integer_seq_ack_is_reduced(s, a):
    x = seg(seq=s, ack=a)
    assert x.seq == s % 2**32 and x.ack == a % 2**32


def test_data_len_defaults_to_payload_length():
    assert seg(payload=b"hello").data_len == 5
    assert seg().data_len == 0


def test_data_len_may_exceed_a_truncated_payload():
    s = seg(payload=b"he", data_len=1000)
    assert s.data_len == 1000 and s.payload == b"he"


def test_data_len_shorter_than_payload_rejected():
    with pytest.raises(ValueError, match="data_len"):
        seg(payload=b"hello", data_len=4)


def test_payload_must_be_bytes_and_is_frozen_to_bytes():
    with pytest.raises(ValueError, match="payload"):
        seg(payload="text")
    assert type(seg(payload=bytearray(b"ab")).payload) is bytes
    assert seg(payload=memoryview(b"ab")).payload == b"ab"


@pytest.mark.parametrize("src, dst", [("192.0.2.1", "2001:db8::1"), ("2001:db8::1", "192.0.2.1")])
def test_mixed_ip_versions_rejected(src, dst):
    with pytest.raises(ValueError, match="IP version"):
        Segment(src=src, dst=dst, sport=1, dport=2)


def test_ipv6_segment():
    s = Segment(**V6, flags=Flags.SYN)
    assert s.ipv6 and not seg().ipv6
    assert s.src_ep == "[2001:db8::2]:50001" and s.dst_ep == "[2001:db8::1]:80"
    assert fmt_endpoint("192.0.2.1", 80) == "192.0.2.1:80"


def test_flags_are_kept_as_plain_int_bits():
    s = seg(flags=Flags.SYN | Flags.ACK)
    assert type(s.flags) is int and s.flags == 0x12 == Flags.SYN | Flags.ACK
    assert s.syn and s.has_ack and not s.fin and not s.rst
    with pytest.raises(ValueError):
        seg(flags=0x100)


def test_frozen_keyword_only_slots():
    s = seg()
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.seq = 5
    with pytest.raises(TypeError):
        Segment("192.0.2.2", "192.0.2.1", 1, 2)  # positional construction is refused
    assert not hasattr(s, "__dict__")


def test_with_revalidates_and_wraps():
    s = seg(seq=TOP)
    assert s.with_(seq=s.seq + 1).seq == 0
    with pytest.raises(ValueError):
        s.with_(window=70000)


def test_options_do_not_take_part_in_equality():
    assert seg(options=(("MSS", 1460),)) == seg()


# -- sequence space ----------------------------------------------------------------------------
@pytest.mark.parametrize("flags, payload, expect", [
    (Flags.ACK, b"", 0),
    (Flags.SYN, b"", 1),
    (Flags.SYN | Flags.ACK, b"", 1),
    (Flags.FIN | Flags.ACK, b"", 1),
    (Flags.SYN | Flags.FIN, b"", 2),
    (Flags.PSH | Flags.ACK, b"abc", 3),
    (Flags.FIN | Flags.PSH | Flags.ACK, b"abc", 4),
    (Flags.SYN | Flags.FIN, b"abc", 5),
    (Flags.RST, b"", 0),
])
def test_seg_len_counts_syn_and_fin(flags, payload, expect):
    assert seg(flags=flags, payload=payload).seg_len == expect


def test_seg_len_uses_data_len_not_captured_bytes():
    assert seg(flags=Flags.FIN | Flags.ACK, payload=b"ab", data_len=100).seg_len == 101


def test_seq_end_and_fin_seq_across_the_wrap():
    fin = seg(seq=TOP, flags=Flags.FIN | Flags.ACK)
    assert fin.fin_seq == TOP and fin.seq_end == 0
    fin_data = seg(seq=TOP - 1, flags=Flags.FIN | Flags.ACK, payload=b"abc")
    assert fin_data.fin_seq == 1 and fin_data.seq_end == 2
    syn = seg(seq=TOP, flags=Flags.SYN)
    assert syn.seq_end == 0
    syn_fin = seg(seq=TOP, flags=Flags.SYN | Flags.FIN)
    assert syn_fin.fin_seq == 0 and syn_fin.seq_end == 1


@given(st.integers(0, TOP), st.integers(0, 3000), st.sampled_from([0, Flags.SYN, Flags.FIN, Flags.SYN | Flags.FIN]))
def test_seq_end_is_seq_plus_seg_len(s, n, extra):
    x = seg(seq=s, flags=Flags.ACK | extra, payload=b"x" * n)
    assert x.seq_end == (s + x.seg_len) % 2**32
    if x.fin:
        assert x.fin_seq == (x.seq_end - 1) % 2**32


def test_derived_flags():
    s = seg(flags=Flags.FIN | Flags.ACK)
    assert s.fin and s.has_ack and not s.syn and not s.rst
    assert seg(flags=Flags.RST).rst


def test_reply_template_swaps_the_pair():
    s = seg(vlan=(10,))
    r = s.reply_template()
    assert (r.src, r.dst, r.sport, r.dport, r.vlan) == (s.dst, s.src, s.dport, s.sport, (10,))


def test_describe():
    assert seg(seq=1006, ack=2001, flags=Flags.FIN | Flags.ACK).describe() == "FIN,ACK seq=1006 ack=2001"
    assert seg(seq=1, ack=5, flags=Flags.SYN).describe() == "SYN seq=1"
    assert seg(seq=1, ack=5, flags=Flags.PSH | Flags.ACK, payload=b"abc").describe() == "PSH,ACK seq=1 ack=5 len=3"


# -- flags text -----------------------------------------------------------------------------------
@pytest.mark.parametrize("flags, text", [
    (Flags.SYN | Flags.ACK, "SYN,ACK"),
    (Flags.FIN | Flags.ACK, "FIN,ACK"),
    (Flags.RST | Flags.ACK, "RST,ACK"),
    (Flags.FIN | Flags.PSH | Flags.ACK, "FIN,PSH,ACK"),
    (Flags.ACK, "ACK"),
    (Flags(0), "none"),
    (Flags(0xFF), "SYN,FIN,RST,PSH,ACK,URG,ECE,CWR"),
])
def test_flags_text(flags, text):
    assert flags_text(flags) == text
    assert parse_flags(text) == flags


@pytest.mark.parametrize("text, flags", [
    ("FA", Flags.FIN | Flags.ACK),
    ("SA", Flags.SYN | Flags.ACK),
    ("R", Flags.RST),
    ("fin,ack", Flags.FIN | Flags.ACK),
    (" SYN , ACK ", Flags.SYN | Flags.ACK),
    ("fin", Flags.FIN),
    ("", Flags(0)),
    ("FPA", Flags.FIN | Flags.PSH | Flags.ACK),
])
def test_parse_flags_forms(text, flags):
    assert parse_flags(text) == flags


@pytest.mark.parametrize("bad", ["X", "SYN,BOGUS", "FAX"])
def test_parse_flags_rejects_unknown(bad):
    with pytest.raises(ValueError):
        parse_flags(bad)


@given(st.integers(0, 255))
def test_flags_text_round_trips(n):
    assert parse_flags(flags_text(Flags(n))) == Flags(n)
