"""rawfin.wire.codec: Segment <-> Scapy <-> bytes, checksums, and decode errors."""

from __future__ import annotations

import ipaddress
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from rawfin.wire import codec
from rawfin.core import seq as sq
from rawfin.core.errors import DecodeError
from rawfin.core.segment import Flags, Segment

from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.inet6 import IPv6, IPv6ExtHdrFragment, IPv6ExtHdrHopByHop
from scapy.layers.l2 import Dot1Q, Ether

ROOT = Path(__file__).resolve().parents[1]

# -- strategies --------------------------------------------------------------

V4_NET = ipaddress.ip_network("192.0.2.0/24")
V6_NET = ipaddress.ip_network("2001:db8::/32")

v4_addr = st.integers(0, V4_NET.num_addresses - 1).map(lambda i: str(V4_NET[i]))
v6_addr = st.integers(0, V6_NET.num_addresses - 1).map(lambda i: str(V6_NET[i]))
ports = st.integers(0, 0xFFFF)
# Sequence numbers weighted toward the edges of the 32-bit space.
seqnums = st.one_of(
    st.integers(0, sq.MASK),
    st.integers(sq.MASK - 16, sq.MASK),
    st.integers(0, 16),
    st.sampled_from([sq.MASK, 0, sq.HALF - 1, sq.HALF, sq.HALF + 1]),
)


@st.composite
def segments(draw, ipv6=None):
    v6 = draw(st.booleans()) if ipv6 is None else ipv6
    addr = v6_addr if v6 else v4_addr
    return Segment(
        src=draw(addr), dst=draw(addr), sport=draw(ports), dport=draw(ports),
        seq=draw(seqnums), ack=draw(seqnums), flags=Flags(draw(st.integers(0, 0xFF))),
        window=draw(st.integers(0, 0xFFFF)), payload=draw(st.binary(max_size=300)),
    )


# -- an independent checksum oracle (RFC 1071 / RFC 9293 pseudo-header) --------

def _ones_sum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return total


def _checks_out(raw: bytes) -> tuple[bool, bool]:
    """(IP header checksum ok, TCP checksum ok), computed without Scapy."""
    if raw[0] >> 4 == 4:
        ihl = (raw[0] & 0xF) * 4
        total = struct.unpack("!H", raw[2:4])[0]
        ip_ok = _ones_sum(raw[:ihl]) == 0xFFFF
        tcp = raw[ihl:total]
        pseudo = raw[12:16] + raw[16:20] + struct.pack("!BBH", 0, 6, len(tcp))
    else:
        plen = struct.unpack("!H", raw[4:6])[0]
        assert raw[6] == 6, "test oracle expects TCP right after the IPv6 header"
        tcp = raw[40:40 + plen]
        pseudo = raw[8:24] + raw[24:40] + struct.pack("!IxxxB", len(tcp), 6)
        ip_ok = True  # IPv6 has no header checksum
    return ip_ok, _ones_sum(pseudo + tcp) == 0xFFFF


# -- round trips -----------------------------------------------------------------

@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(segments())
@example(Segment(src="192.0.2.1", dst="192.0.2.2", sport=1, dport=2, seq=sq.MASK, ack=sq.MASK,
                 flags=Flags(0xFF), payload=b"x"))
@example(Segment(src="2001:db8::1", dst="2001:db8::2", sport=65535, dport=0, seq=0, ack=sq.MASK,
                 flags=Flags.FIN | Flags.ACK))
def test_bytes_round_trip(seg):
    raw = codec.to_bytes(seg)
    back = codec.from_bytes(raw)
    assert back == seg
    assert (back.seq, back.ack, back.flags, back.payload, back.data_len) == (
        seg.seq, seg.ack, seg.flags, seg.payload, len(seg.payload))
    assert codec.to_bytes(back) == raw  # building is deterministic and cache-free


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(segments(), st.integers(1, 10**6), st.integers(0, 2**62))
def test_scapy_round_trip_keeps_frame_and_time(seg, frame, time_ns):
    pkt = codec.to_scapy(seg)
    assert isinstance(pkt, IPv6 if seg.ipv6 else IP)
    back = codec.from_scapy(pkt, frame=frame, time_ns=time_ns)
    assert back == seg.with_(frame=frame, time_ns=time_ns)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(segments())
def test_checksums_are_correct(seg):
    raw = codec.to_bytes(seg)
    ip_ok, tcp_ok = _checks_out(raw)
    assert ip_ok and tcp_ok
    # And Scapy agrees: recomputing on a re-dissected copy gives the same value.
    pkt = (IPv6 if seg.ipv6 else IP)(raw)
    fresh = pkt.copy()
    del fresh[TCP].chksum
    if not seg.ipv6:
        del fresh[IP].chksum
        assert IP(bytes(fresh)).chksum == pkt[IP].chksum
    assert type(pkt)(bytes(fresh))[TCP].chksum == pkt[TCP].chksum


@settings(max_examples=100)
@given(segments())
def test_wrapped_fields_on_the_wire(seg):
    raw = codec.to_bytes(seg)
    off = 40 if seg.ipv6 else 20
    seq, ack = struct.unpack("!II", raw[off + 4:off + 12])
    assert (seq, ack) == (seg.seq, seg.ack)


def test_seq_at_the_top_of_the_space():
    seg = Segment(src="192.0.2.2", dst="192.0.2.1", sport=50001, dport=80,
                  seq=sq.MASK, ack=sq.add(sq.MASK, 1), flags=Flags.FIN | Flags.ACK)
    assert seg.ack == 0
    raw = codec.to_bytes(seg)
    assert raw[24:32] == b"\xff\xff\xff\xff\x00\x00\x00\x00"
    assert codec.from_bytes(raw).seq_end == 0


def test_ttl_and_hop_limit():
    v4 = codec.to_scapy(Segment(src="192.0.2.1", dst="192.0.2.2", sport=1, dport=2))
    v6 = codec.to_scapy(Segment(src="2001:db8::1", dst="2001:db8::2", sport=1, dport=2))
    assert v4[IP].ttl == 64 and v6[IPv6].hlim == 64


# -- options -------------------------------------------------------------------

def test_syn_gets_mss_by_ip_version():
    syn4 = Segment(src="192.0.2.1", dst="192.0.2.2", sport=1, dport=2, flags=Flags.SYN)
    syn6 = Segment(src="2001:db8::1", dst="2001:db8::2", sport=1, dport=2, flags=Flags.SYN | Flags.ACK)
    assert codec.to_scapy(syn4)[TCP].options == [("MSS", 1460)]
    assert codec.to_scapy(syn6)[TCP].options == [("MSS", 1440)]
    assert codec.from_bytes(codec.to_bytes(syn4)).options == (("MSS", 1460),)
    assert codec.to_scapy(syn4, default_mss=False)[TCP].options == []


def test_non_syn_gets_no_options_and_given_options_win():
    ack = Segment(src="192.0.2.1", dst="192.0.2.2", sport=1, dport=2, flags=Flags.ACK)
    assert codec.to_scapy(ack)[TCP].options == []
    opts = (("MSS", 536), ("NOP", None), ("WScale", 7), ("SAckOK", b""))
    syn = Segment(src="192.0.2.1", dst="192.0.2.2", sport=1, dport=2, flags=Flags.SYN, options=opts)
    back = codec.from_bytes(codec.to_bytes(syn))
    assert back.options[0] == ("MSS", 536) and ("WScale", 7) in back.options


# -- link layers, padding, truncation ------------------------------------------

def test_ether_vlan_and_padding():
    seg = Segment(src="192.0.2.1", dst="192.0.2.2", sport=80, dport=50001, seq=5, ack=6,
                  flags=Flags.ACK, payload=b"hi")
    frame = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") / Dot1Q(vlan=5) / Dot1Q(vlan=7) \
        / codec.to_scapy(seg)
    raw = bytes(frame) + b"\0" * 12  # Ethernet padding / trailer
    back = codec.from_scapy(Ether(raw), frame=3, time_ns=42)
    assert back.payload == b"hi" and back.data_len == 2
    assert back.vlan == (5, 7)
    assert back == seg.with_(vlan=(5, 7), frame=3, time_ns=42)


def test_ipv6_extension_header_and_trailing_bytes():
    pkt = IPv6(src="2001:db8::1", dst="2001:db8::2") / IPv6ExtHdrHopByHop() \
        / TCP(sport=1, dport=2, seq=9, flags="PA") / b"data"
    back = codec.from_bytes(bytes(pkt) + b"junk")
    assert back.payload == b"data" and back.data_len == 4 and back.seq == 9


def test_truncated_payload_keeps_claimed_length():
    seg = Segment(src="192.0.2.1", dst="192.0.2.2", sport=1, dport=2, flags=Flags.ACK, payload=b"x" * 100)
    raw = codec.to_bytes(seg)[:60]  # a 60-byte snaplen
    back = codec.from_bytes(raw)
    assert back.data_len == 100 and back.payload == b"x" * 20
    assert back.seq_end == 100
    with pytest.raises(ValueError, match="payload bytes are known"):
        codec.to_scapy(back)


# -- decode errors ---------------------------------------------------------------

@pytest.mark.parametrize("raw, message", [
    (b"", "empty"),
    (b"\x00" * 40, "not an IP packet"),
    (b"\x45\x00", "cannot dissect"),
    (bytes(IP(src="192.0.2.1", dst="192.0.2.2") / UDP() / b"x"), "no TCP layer"),
    (bytes(IP(src="192.0.2.1", dst="192.0.2.2") / ICMP(type=3, code=3)
           / IP(src="192.0.2.2", dst="192.0.2.1") / TCP()), "no TCP layer"),
    (bytes(IP(src="192.0.2.1", dst="192.0.2.2") / TCP())[:30], "TCP header is missing or cut short"),
    (bytes(IP(src="192.0.2.1", dst="192.0.2.2", flags="MF") / TCP()), "fragment"),
    (bytes(IPv6(src="2001:db8::1", dst="2001:db8::2") / IPv6ExtHdrFragment(m=1) / TCP()), "fragment"),
    (bytes(IP(src="192.0.2.1", dst="192.0.2.2") / TCP(dataofs=2)), "data offset"),
    (bytes(IP(src="192.0.2.1", dst="192.0.2.2") / TCP(options=[("MSS", 1460)]))[:42], "cut short"),
    (bytes(IP(src="192.0.2.1", dst="192.0.2.2", len=30) / TCP()), "TCP header is missing or cut short"),
    (bytes(IPv6(src="2001:db8::1", dst="2001:db8::2", plen=10) / TCP()), "TCP header is missing or cut short"),
    (bytes(IP(src="192.0.2.1", dst="192.0.2.2", len=10) / TCP()), "shorter than its own header"),
])
def test_decode_errors(raw, message):
    with pytest.raises(DecodeError, match=message):
        codec.from_bytes(raw)


def test_decode_error_names_the_frame():
    with pytest.raises(DecodeError, match=r"^frame 7: no TCP layer"):
        codec.from_scapy(Ether() / IP(src="192.0.2.1", dst="192.0.2.2") / UDP(), frame=7)


@settings(max_examples=500, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=120))
def test_random_bytes_decode_or_raise_decode_error(raw):
    try:
        seg = codec.from_bytes(raw)
    except DecodeError:
        return
    assert isinstance(seg, Segment)


@settings(max_examples=500, suppress_health_check=[HealthCheck.too_slow])
@given(segments(), st.lists(st.tuples(st.integers(0, 400), st.integers(0, 255)), max_size=6),
       st.integers(0, 400))
def test_mangled_packets_decode_or_raise_decode_error(seg, flips, cut):
    raw = bytearray(codec.to_bytes(seg))
    for pos, val in flips:
        if pos < len(raw):
            raw[pos] = val
    try:
        back = codec.from_bytes(bytes(raw[:cut] if cut else raw))
    except DecodeError:
        return
    assert back.data_len >= len(back.payload)


# -- import hygiene ----------------------------------------------------------------

def test_codec_does_not_import_scapy_all():
    code = "import sys, rawfin.wire.codec; print('scapy.all' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=ROOT)
    assert out.stdout.strip() == "False"


def test_craft_does_not_import_scapy():
    code = "import sys, rawfin.sim.craft; print(sorted(m for m in sys.modules if m.startswith('scapy')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=ROOT)
    assert out.stdout.strip() == "[]"
