"""Tests for rawfin.wire.decode: link layers, IP versions, odd packets, and agreement with Scapy."""

from __future__ import annotations

import dataclasses
import ipaddress
import shutil
import struct
import subprocess

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.inet6 import (
    IPv6, IPv6ExtHdrDestOpt, IPv6ExtHdrFragment, IPv6ExtHdrHopByHop, IPv6ExtHdrRouting,
)
from scapy.layers.l2 import ARP, CookedLinux, CookedLinuxV2, Dot1AD, Dot1Q, Ether
from scapy.layers.ppp import PPP, PPPoE

import shared_corpus
from rawfin.wire.decode import DECODABLE_LINKTYPES, Skip, decode, make_segment
from rawfin.core.errors import CaptureError
from rawfin.wire.pcapio import iter_frames
from rawfin.core.segment import Flags, Segment

A, B = "192.0.2.1", "198.51.100.7"
A6, B6 = "2001:db8::1", "2001:db8:0:1::2"


def tcp4(**kw):
    return IP(src=A, dst=B) / TCP(sport=1234, dport=80, seq=1000, ack=2000, flags="PA", window=512, **kw)


def tcp6():
    return IPv6(src=A6, dst=B6) / TCP(sport=1234, dport=80, seq=1000, ack=2000, flags="FA", window=512)


def dec(linktype, pkt, orig_len=None, frame=7, time_ns=99):
    data = bytes(pkt)
    return decode(linktype, data, len(data) if orig_len is None else orig_len, frame, time_ns)


def check_seg(seg, src=A, dst=B, payload=b"hello", flags=Flags.PSH | Flags.ACK):
    assert isinstance(seg, Segment), seg
    assert (seg.src, seg.dst, seg.sport, seg.dport, seg.seq, seg.ack, seg.window) == (src, dst, 1234, 80, 1000,
                                                                                       2000, 512)
    assert seg.flags == flags and type(seg.flags) is int   # plain int bits, cheap on the hot path
    assert seg.payload == payload and seg.data_len == len(payload)
    # the trusted fast constructor gives exactly what the validating one gives
    again = Segment(**{f.name: getattr(seg, f.name) for f in dataclasses.fields(Segment)})
    assert again == seg and repr(again) == repr(seg) and hash(again) == hash(seg)


# --------------------------------------------------------------------------- link layers


def test_ethernet_ipv4():
    seg = dec(1, Ether() / tcp4() / b"hello", frame=3, time_ns=12345)
    check_seg(seg)
    assert seg.frame == 3 and seg.time_ns == 12345 and seg.vlan == ()


def test_ethernet_padding_is_not_payload():
    pkt = bytes(Ether() / IP(src=A, dst=B) / TCP(sport=1234, dport=80, seq=1000, ack=2000, flags="A", window=512))
    pkt += b"\xee" * (60 - len(pkt))
    seg = decode(1, pkt, 60, 1, 1)
    check_seg(seg, payload=b"", flags=Flags.ACK)


def test_ipv4_options_skipped():
    pkt = Ether() / IP(src=A, dst=B, options=b"\x01\x01\x01\x00") / TCP(sport=1234, dport=80, seq=1000, ack=2000,
                                                                          flags="PA", window=512) / b"hello"
    check_seg(dec(1, pkt))


def test_vlan_and_qinq():
    seg = dec(1, Ether() / Dot1Q(vlan=42) / tcp4() / b"hello")
    check_seg(seg)
    assert seg.vlan == (42,)
    seg = dec(1, Ether() / Dot1AD(vlan=100) / Dot1Q(vlan=200) / tcp4() / b"hello")
    check_seg(seg)
    assert seg.vlan == (100, 200)
    # 0x9100 (old QinQ) outer tag, built by hand
    inner = bytes(Dot1Q(vlan=7) / tcp4() / b"hello")
    raw = b"\x02" * 12 + b"\x91\x00" + struct.pack("!H", 0x2000 | 300) + b"\x81\x00" + inner
    seg = decode(1, raw, len(raw), 1, 1)
    check_seg(seg)
    assert seg.vlan == (300, 7)


def test_pppoe_session():
    seg = dec(1, Ether() / Dot1AD(vlan=5) / Dot1Q(vlan=6) / PPPoE(sessionid=9) / PPP(proto=0x0021) / tcp4() / b"hello")
    check_seg(seg)
    assert seg.vlan == (5, 6)
    assert dec(1, Ether() / PPPoE() / PPP(proto=0xC021) / b"lcp").kind == "non_tcp"


def test_linux_cooked_v1_and_v2():
    check_seg(dec(113, CookedLinux(proto=0x0800) / tcp4() / b"hello"))
    check_seg(dec(113, CookedLinux(proto=0x86DD) / tcp6() / b"hello"), A6, B6, flags=Flags.FIN | Flags.ACK)
    check_seg(dec(276, CookedLinuxV2(proto=0x0800) / tcp4() / b"hello"))
    check_seg(dec(276, CookedLinuxV2(proto=0x86DD) / tcp6() / b"hello"), A6, B6, flags=Flags.FIN | Flags.ACK)
    assert dec(113, CookedLinux(proto=0x0806) / ARP()).kind == "non_tcp"
    assert decode(113, b"\0" * 10, 10, 1, 1).kind == "malformed"
    assert decode(276, b"\0" * 19, 19, 1, 1).kind == "malformed"


@pytest.mark.parametrize("af, v6", [(2, False), (24, True), (28, True), (30, True)])
@pytest.mark.parametrize("order", ["<", ">"])
def test_null_loopback_either_byte_order(af, v6, order):
    body = bytes(tcp6() / b"hello") if v6 else bytes(tcp4() / b"hello")
    seg = decode(0, struct.pack(order + "I", af) + body, 4 + len(body), 1, 1)
    if v6:
        check_seg(seg, A6, B6, flags=Flags.FIN | Flags.ACK)
    else:
        check_seg(seg)
    # LOOP (108) is always network byte order
    seg = decode(108, struct.pack(">I", af) + body, 4 + len(body), 1, 1)
    assert isinstance(seg, Segment) and seg.sport == 1234
    assert decode(0, struct.pack("<I", 7) + body, 4 + len(body), 1, 1) == Skip("non_tcp", "loopback address family 7")


@pytest.mark.parametrize("lt", [101, 12, 14])
def test_raw_ip_either_version(lt):
    check_seg(dec(lt, tcp4() / b"hello"))
    check_seg(dec(lt, tcp6() / b"hello"), A6, B6, flags=Flags.FIN | Flags.ACK)
    assert dec(lt, b"\x50" + b"\0" * 39).kind == "malformed"


def test_raw_ipv4_and_ipv6_linktypes():
    check_seg(dec(228, tcp4() / b"hello"))
    check_seg(dec(229, tcp6() / b"hello"), A6, B6, flags=Flags.FIN | Flags.ACK)
    assert dec(228, tcp6()).kind == "malformed"
    assert dec(229, tcp4()).kind == "malformed"


def nflog(family: int, ip: bytes, order="<") -> bytes:
    def tlv(t, v):
        return struct.pack(order + "HH", 4 + len(v), t) + v + b"\0" * (-len(v) % 4)
    return bytes([family, 0]) + b"\0\0" + tlv(1, b"\x08\x00\x03\x00") + tlv(10, b"pfx\0") + tlv(9, ip)


@pytest.mark.parametrize("order", ["<", ">"])
def test_nflog(order):
    check_seg(decode(239, d := nflog(2, bytes(tcp4() / b"hello"), order), len(d), 1, 1))
    check_seg(decode(239, d := nflog(10, bytes(tcp6() / b"hello"), order), len(d), 1, 1), A6, B6,
              flags=Flags.FIN | Flags.ACK)


def test_unknown_linktype():
    assert decode(147, b"anything", 8, 1, 1) == Skip("unknown_linktype", "link type 147")
    assert 147 not in DECODABLE_LINKTYPES and 1 in DECODABLE_LINKTYPES


# --------------------------------------------------------------------------- IP details


def test_ipv6_extension_headers():
    for ext in (IPv6ExtHdrHopByHop(), IPv6ExtHdrRouting(), IPv6ExtHdrDestOpt(),
                IPv6ExtHdrHopByHop() / IPv6ExtHdrDestOpt() / IPv6ExtHdrRouting() / IPv6ExtHdrDestOpt()):
        pkt = Ether() / IPv6(src=A6, dst=B6) / ext / TCP(sport=1234, dport=80, seq=1000, ack=2000, flags="PA",
                                                         window=512) / b"hello"
        check_seg(dec(1, pkt), A6, B6)


def test_ipv6_ah_header():
    # AH: next header, payload len in 4-octet units minus 2, reserved, SPI, seq, 12-byte ICV
    tcp = bytes(TCP(sport=1234, dport=80, seq=1000, ack=2000, flags="PA", window=512) / b"hello")
    ah = bytes([6, 4]) + b"\0\0" + struct.pack("!II", 1, 1) + b"\0" * 12
    ip6 = bytes(IPv6(src=A6, dst=B6, nh=51, plen=len(ah) + len(tcp)))
    check_seg(decode(229, ip6 + ah + tcp, len(ip6 + ah + tcp), 1, 1), A6, B6)


def test_no_next_header_and_esp():
    assert dec(229, IPv6(src=A6, dst=B6, nh=59)) == Skip("non_tcp", "no next header")
    assert dec(229, IPv6(src=A6, dst=B6) / IPv6ExtHdrDestOpt(nh=50) / (b"\0" * 16)) == Skip("non_tcp", "ESP")


def test_fragments():
    assert dec(1, Ether() / IP(src=A, dst=B, flags="MF") / TCP() / (b"x" * 8)).kind == "fragment"
    assert dec(1, Ether() / IP(src=A, dst=B, frag=100, proto=6) / (b"x" * 8)).kind == "fragment"
    assert dec(1, Ether() / IPv6(src=A6, dst=B6) / IPv6ExtHdrFragment(m=1, nh=6) / TCP()).kind == "fragment"
    assert dec(1, Ether() / IPv6(src=A6, dst=B6) / IPv6ExtHdrFragment(offset=10, nh=6) / (b"\0" * 8)).kind == \
        "fragment"
    # an atomic fragment (offset 0, no M flag) is a whole packet
    pkt = Ether() / IPv6(src=A6, dst=B6) / IPv6ExtHdrFragment(nh=6) / TCP(sport=1234, dport=80, seq=1000, ack=2000,
                                                                          flags="PA", window=512) / b"hello"
    check_seg(dec(1, pkt), A6, B6)
    # DF alone is not a fragment
    check_seg(dec(1, Ether() / IP(src=A, dst=B, flags="DF") / TCP(sport=1234, dport=80, seq=1000, ack=2000,
                                                                  flags="PA", window=512) / b"hello"))


def test_non_tcp():
    assert dec(1, Ether() / ARP()) == Skip("non_tcp", "ARP")
    assert dec(1, Ether() / IP() / UDP()) == Skip("non_tcp", "UDP")
    assert dec(1, Ether() / IP() / ICMP()) == Skip("non_tcp", "ICMP")
    assert dec(1, Ether(type=0x88CC) / (b"lldp" * 10)) == Skip("non_tcp", "LLDP")
    assert dec(1, Ether(type=0x1234) / (b"x" * 40)) == Skip("non_tcp", "ethertype 0x1234")
    assert dec(1, Ether(type=100) / (b"x" * 100)).kind == "non_tcp"
    assert dec(1, Ether() / IPv6() / UDP()) == Skip("non_tcp", "UDP")


def test_malformed():
    base = bytes(Ether() / tcp4() / b"hello")

    def mutate(off, value):
        b = bytearray(base)
        b[off] = value
        return decode(1, bytes(b), len(b), 1, 1)

    assert mutate(14, 0x55).reason == "bad IP version 5 in an IPv4 packet"
    assert mutate(14, 0x44).reason == "IPv4 header length 16 < 20"
    assert mutate(34 + 12, 0x40).reason == "TCP data offset 4 < 5"
    b = bytearray(base)
    struct.pack_into("!H", b, 16, 11)  # IPv4 total length < header length
    assert decode(1, bytes(b), len(b), 1, 1) == Skip("malformed", "IPv4 total length 11 < header length 20")
    assert decode(1, base[:12], 60, 1, 1) == Skip("malformed", "Ethernet header cut short")
    assert decode(1, base[:30], len(base), 1, 1) == Skip("malformed", "IPv4 header cut short")
    assert decode(1, base[:45], len(base), 1, 1) == Skip("malformed", "TCP header cut short")
    v6 = bytes(Ether() / IPv6(src=A6, dst=B6) / IPv6ExtHdrHopByHop() / TCP())
    assert decode(1, v6[:58], len(v6), 1, 1).reason == "IPv6 extension header cut short"
    assert decode(1, v6[:40], len(v6), 1, 1).reason == "IPv6 header cut short"


def test_snaplen_cut_keeps_real_length():
    pkt = bytes(Ether() / tcp4() / (b"z" * 1000))
    seg = decode(1, pkt[:70], len(pkt), 1, 1)
    assert seg.data_len == 1000 and seg.payload == b"z" * 16
    assert seg.seg_len == 1000
    # options cut by the snaplen: still a segment, nothing of the payload
    pkt = bytes(Ether() / IP(src=A, dst=B) / TCP(options=[("MSS", 1460), ("NOP", None), ("WScale", 7)] * 2)
                / b"abc")
    seg = decode(1, pkt[:60], len(pkt), 1, 1)
    assert isinstance(seg, Segment) and seg.data_len == 3 and seg.payload == b""


def test_ip_length_zero_falls_back_to_frame_length():
    pkt = bytearray(bytes(Ether() / tcp4() / (b"z" * 3000)))
    struct.pack_into("!H", pkt, 16, 0)  # TSO capture: IPv4 total length 0
    seg = decode(1, bytes(pkt), len(pkt), 1, 1)
    assert seg.data_len == 3000 and seg.payload == b"z" * 3000
    seg = decode(1, bytes(pkt[:100]), len(pkt), 1, 1)  # and cut by the snaplen too
    assert seg.data_len == 3000 and len(seg.payload) == 100 - 54
    pkt6 = bytearray(bytes(Ether() / tcp6() / (b"z" * 3000)))
    struct.pack_into("!H", pkt6, 18, 0)
    seg = decode(1, bytes(pkt6), len(pkt6), 1, 1)
    assert seg.data_len == 3000


def test_ip_length_beyond_frame_is_clamped():
    pkt = bytearray(bytes(Ether() / tcp4() / (b"z" * 100)))
    struct.pack_into("!H", pkt, 16, 1500)
    seg = decode(1, bytes(pkt), len(pkt), 1, 1)
    assert seg.data_len == 100  # Wireshark's tcp.len does the same


def test_sequence_numbers_at_the_wrap():
    seg = dec(1, Ether() / IP(src=A, dst=B) / TCP(seq=0xFFFFFFFF, ack=0xFFFFFFFE, flags="SA"))
    assert seg.seq == 0xFFFFFFFF and seg.ack == 0xFFFFFFFE and seg.seq_end == 0


@pytest.mark.parametrize("addr", ["::1", "::", "2001:db8::", "fe80::1:0:0:1", "::ffff:192.0.2.1", "::192.0.2.1",
                                  "2001:DB8:0:0:1:0:0:1", "2001:db8:0:1:1:1:1:1"])
def test_ipv6_text_matches_ipaddress(addr):
    seg = dec(229, IPv6(src=addr, dst=addr) / TCP())
    assert seg.src == str(ipaddress.ip_address(addr)) == seg.dst


def test_make_segment_is_a_segment():
    s = make_segment(A, B, 1, 2, 3, 4, Flags.SYN, 5, b"", 0, 1, 2, ())
    assert type(s) is Segment and s == Segment(src=A, dst=B, sport=1, dport=2, seq=3, ack=4, flags=Flags.SYN,
                                               window=5, frame=1, time_ns=2)
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.seq = 9  # type: ignore[misc]


# --------------------------------------------------------------------------- fuzz

LINKTYPES = sorted(DECODABLE_LINKTYPES) + [147]


@settings(max_examples=3000, deadline=None)
@given(lt=st.sampled_from(LINKTYPES), data=st.binary(max_size=200), extra=st.integers(0, 3000))
def test_random_bytes_never_raise(lt, data, extra):
    r = decode(lt, data, len(data) + extra, 1, 1)
    assert isinstance(r, (Segment, Skip))
    if isinstance(r, Skip):
        assert r.kind in ("non_tcp", "fragment", "malformed", "unknown_linktype")
    else:  # whatever comes out must pass Segment's own validation
        Segment(**{f.name: getattr(r, f.name) for f in dataclasses.fields(Segment)})


HEADERS = {
    1: bytes(Ether() / Dot1Q() / IP() / TCP()),
    0: struct.pack("<I", 30) + bytes(IPv6() / IPv6ExtHdrHopByHop() / IPv6ExtHdrFragment() / TCP()),
    101: bytes(IP(options=b"\x01" * 8) / TCP(options=[("MSS", 1)])),
    276: bytes(CookedLinuxV2(proto=0x86DD) / IPv6() / IPv6ExtHdrRouting() / TCP()),
    239: nflog(2, bytes(IP() / TCP())),
}


@settings(max_examples=3000, deadline=None)
@given(lt=st.sampled_from(sorted(HEADERS)), flips=st.lists(st.tuples(st.integers(0, 200), st.integers(0, 255)),
                                                          max_size=6),
       cut=st.integers(0, 200), extra=st.integers(0, 70000))
def test_mutated_headers_never_raise(lt, flips, cut, extra):
    """Mostly-valid headers with a few bytes changed and a random cut: reach the deep branches."""
    b = bytearray(HEADERS[lt])
    for off, v in flips:
        if off < len(b):
            b[off] = v
    data = bytes(b[:cut])
    r = decode(lt, data, len(data) + extra % 3, 1, 1) if extra % 2 else decode(lt, data, extra, 1, 1)
    assert isinstance(r, (Segment, Skip))
    if isinstance(r, Segment):
        Segment(**{f.name: getattr(r, f.name) for f in dataclasses.fields(Segment)})


# --------------------------------------------------------------------------- corpus


corpus_files = shared_corpus.FILES
needs_corpus = shared_corpus.needs_corpus


def frames_of(path):
    out = []
    try:
        for fr in iter_frames(path):
            out.append(fr)
    except CaptureError:
        pass
    return out


def scapy_dissect(fr):
    """Scapy's full dissection, or None where Scapy has no dissector for the link type."""
    import scapy.contrib.gtp  # noqa: F401 - GTP-U on UDP 2152, which rawfin decodes too
    import scapy.layers.ipsec  # noqa: F401 - AH
    from scapy.config import conf

    cls = conf.l2types.get(fr.linktype)
    if cls is None:
        return None
    pkt = cls(fr.data)
    # Scapy binds BSD loopback to the *host's* AF_INET6 only; other BSDs use 24, 28 or 30
    if fr.linktype == 0 and len(fr.data) > 4:
        af = struct.unpack("<I", fr.data[:4])[0]
        if af > 0xFFFF:
            af = struct.unpack(">I", fr.data[:4])[0]
        if af in (24, 28, 30):
            pkt = IPv6(fr.data[4:])
    return pkt


def scapy_payload_len(t) -> int:
    """TCP payload length by Scapy's dissection (which cuts at the IP length and calls the rest padding)."""
    from scapy.packet import Padding

    pad = t.getlayer(Padding)
    return len(bytes(t)) - t.dataofs * 4 - (len(bytes(pad)) if pad is not None else 0)


def scapy_broken(t, fr) -> str | None:
    """Why a packet Scapy calls TCP is not a sound TCP segment (Scapy does not check)."""
    ip = t.underlayer
    if t.dataofs is None or t.dataofs < 5:
        return "data offset"
    if isinstance(ip, IP):
        if ip.frag or ip.flags.MF:
            return "fragment"
        if ip.len is not None and (ip.len < ip.ihl * 4 or ip.len - ip.ihl * 4 < t.dataofs * 4):
            return "IP length"
    if len(bytes(t)) < 20:
        return "cut"
    return None


@needs_corpus
@pytest.mark.parametrize("path", corpus_files, ids=lambda p: p.name)
def test_corpus_agrees_with_scapy(path):
    from scapy.layers.inet6 import _IPv6ExtHdr
    from scapy.packet import Raw

    checked = 0
    for fr in frames_of(path):
        r = decode(fr.linktype, fr.data, fr.orig_len, fr.frame, fr.time_ns)
        pkt = scapy_dissect(fr)
        if pkt is None:
            continue
        where = f"{path.name} frame {fr.frame}"
        if TCP in pkt and not isinstance(pkt[TCP].underlayer, (IP, IPv6, _IPv6ExtHdr)):
            pkt = None  # TCP inside something we do not decode (tunnels)
        if pkt is not None and TCP in pkt:
            t = pkt[TCP]
            ip = t.underlayer
            while not isinstance(ip, (IP, IPv6)):
                ip = ip.underlayer
            if isinstance(r, Skip):
                why = scapy_broken(t, fr)
                assert why and r.kind in ("malformed", "fragment"), f"{where}: Scapy says TCP, we say {r}"
                continue
            assert (r.src, r.dst, r.sport, r.dport, r.seq, r.ack, int(r.flags), r.window) == \
                   (str(ip.src), str(ip.dst), t.sport, t.dport, t.seq, t.ack, int(t.flags) & 0xFF, t.window), where
            if fr.orig_len == len(fr.data):  # not cut by the snaplen: lengths must agree too
                want = scapy_payload_len(t)
                if PPPoE in pkt and isinstance(ip, IP) and ip.len > pkt[PPPoE].len - 2:
                    # Scapy ignores the PPPoE length; we (and Wireshark) let it bound the IP packet.
                    # zeek__pppoe-over-qinq.pcap: IP says 46, PPPoE 40 and the next segment's
                    # sequence number shows the 6 bytes were padding.
                    want = pkt[PPPoE].len - 2 - ip.ihl * 4 - t.dataofs * 4
                assert len(r.payload) == r.data_len == want, where
            checked += 1
        else:
            # Scapy found no TCP: we must not either (unless it is a tunnel or a link Scapy
            # does not take apart, such as IPv6 behind 0x9100 tags)
            if isinstance(r, Segment):
                assert Raw in pkt and fr.linktype == 1 and fr.data[12:14] in (b"\x91\x00", b"\x92\x00"), \
                    f"{where}: Scapy: {pkt.summary()}, we: {r.describe()}"
            else:
                assert r.kind in ("non_tcp", "fragment", "malformed"), where


@needs_corpus
@pytest.mark.parametrize("path", corpus_files, ids=lambda p: p.name)
def test_corpus_reads_and_decodes_without_surprises(path):
    try:
        for fr in iter_frames(path):
            r = decode(fr.linktype, fr.data, fr.orig_len, fr.frame, fr.time_ns)
            assert isinstance(r, (Segment, Skip))
            if isinstance(r, Segment):
                assert r.frame == fr.frame and r.time_ns == fr.time_ns
    except CaptureError as e:
        assert e.frame is not None and e.path == str(path)


@needs_corpus
@pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark is not installed")
@pytest.mark.parametrize("name", ["zeek__nflog-http.pcap", "zeek__pipelining-example.pcap",
                                  "zeek__pppoe-over-qinq.pcap", "zeek__reassembly.pcap", "zeek__timestamp.pcap",
                                  "PcapPlusPlus__pcapng-example.pcapng", "zeek__gap-data-missing.pcapng"])
def test_corpus_agrees_with_tshark(name):
    """tshark as a second oracle, notably for link types Scapy cannot dissect (NFLOG)."""
    path = shared_corpus.capture(name)
    out = subprocess.run(["tshark", "-r", str(path), "-T", "fields", "-E", "occurrence=l", "-e", "frame.number",
                          "-e", "tcp.srcport", "-e", "tcp.dstport", "-e", "tcp.seq_raw", "-e", "tcp.ack_raw",
                          "-e", "tcp.window_size_value", "-e", "tcp.len", "-e", "tcp.flags"],
                         capture_output=True, text=True, check=True)
    want = {}
    for line in out.stdout.splitlines():
        f = line.split("\t")
        if f[1]:
            want[int(f[0])] = (int(f[1]), int(f[2]), int(f[3]), int(f[4]), int(f[5]), int(f[6]),
                               int(f[7], 16) & 0xFF)
    got = {}
    for fr in frames_of(path):
        r = decode(fr.linktype, fr.data, fr.orig_len, fr.frame, fr.time_ns)
        if isinstance(r, Segment):
            got[fr.frame] = (r.sport, r.dport, r.seq, r.ack, r.window, r.data_len, int(r.flags))
    assert got == want


def test_gtp_u_tunnel_is_decoded():
    """TCP inside GTP-U (UDP 2152): the inner segment, with or without GTP's optional fields."""
    from scapy.layers.inet import UDP
    from scapy.layers.l2 import Ether

    inner = bytes(IPv6(src="2001:db8::2", dst="2001:db8::1") / TCP(sport=5060, dport=5060, seq=7, ack=9,
                                                                  flags="FA") / b"bye")
    for gtp in (bytes([0x30, 0xFF]) + len(inner).to_bytes(2, "big") + b"\x00\x00\x00\x01",
                bytes([0x32, 0xFF]) + (len(inner) + 4).to_bytes(2, "big") + b"\x00\x00\x00\x01" + b"\x00\x05\x00\x00"):
        frame = bytes(Ether() / IP(src="192.0.2.10", dst="192.0.2.20") / UDP(sport=2152, dport=2152) / (gtp + inner))
        seg = decode(1, frame, len(frame))
        assert isinstance(seg, Segment), seg
        assert (seg.src, seg.dst, seg.sport, seg.seq, seg.ack, seg.fin, seg.data_len) == \
               ("2001:db8::2", "2001:db8::1", 5060, 7, 9, True, 3)
    other = bytes(Ether() / IP() / UDP(sport=53, dport=53) / b"dns")
    assert decode(1, other, len(other)).kind == "non_tcp"
    cut = frame[:-len(inner) - 6]
    assert decode(1, cut, len(cut)).kind in ("malformed", "non_tcp")
