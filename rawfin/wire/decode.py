"""Fast decoding of captured frames into :class:`~rawfin.core.segment.Segment` values, without Scapy.

``decode(linktype, data, orig_len, frame, time_ns)`` returns a ``Segment`` for a TCP
segment and a :class:`Skip` saying why not otherwise. It never raises on any bytes.

Link types: Ethernet (with 802.1Q/802.1ad/QinQ tags and PPPoE sessions), Linux
cooked SLL and SLL2, raw IP (101, 12, 14, 228, 229), BSD loopback NULL and LOOP, and
Linux NFLOG. IPv4 options are skipped by IHL; IPv6 extension headers (hop-by-hop,
routing, destination options, AH, atomic fragments) are walked.

Lengths: ``data_len`` comes from the IP header, so a packet cut by the capture's
snaplen still counts its whole payload; ``payload`` holds only the captured bytes
(and never Ethernet padding). A packet whose IP length field is 0 (TSO/GRO captures)
falls back to the frame's original length. A TCP header whose *options* were cut by
the snaplen still yields a segment (as tcpdump shows such packets); only a cut
inside the fixed 20-byte header makes it "malformed".
"""

from __future__ import annotations

import dataclasses
import ipaddress
import socket
import struct
from typing import NamedTuple

from rawfin.core.segment import Segment

__all__ = ["decode", "Skip", "SKIP_KINDS", "DECODABLE_LINKTYPES", "make_segment"]


class Skip(NamedTuple):
    """Why a frame is not a TCP segment.

    ``kind`` is one of "non_tcp", "fragment", "malformed", "unknown_linktype";
    ``reason`` is a few plain words ("UDP", "IPv4 total length 20 < header length 60").
    """

    kind: str
    reason: str


SKIP_KINDS = ("non_tcp", "fragment", "malformed", "unknown_linktype")

_skips: dict[tuple[str, str], Skip] = {}


def _skip(kind: str, reason: str) -> Skip:
    s = _skips.get((kind, reason))
    if s is None:
        if len(_skips) > 4096:
            _skips.clear()
        s = _skips[(kind, reason)] = Skip(kind, reason)
    return s


def _mal(reason: str) -> Skip:
    return _skip("malformed", reason)


def _non(reason: str) -> Skip:
    return _skip("non_tcp", reason)


# --------------------------------------------------------------------------- fast Segment

_FLAGS = tuple(range(256))   # Segment keeps its flags as a plain int


def _build_fast_segment():
    """A constructor for Segment that skips validation (the decoder's values are valid).

    It fills an instance of a twin class with the same slots by plain attribute
    stores, then turns it into a Segment by assigning ``__class__`` (CPython allows
    that between classes of identical layout, and refuses otherwise). Returns None when
    the trick does not give the same value as the validating constructor; callers then
    fall back to ``Segment(...)``.
    """
    given = ("src", "dst", "sport", "dport", "seq", "ack", "flags", "window", "payload", "data_len",
             "frame", "time_ns", "vlan", "ip_id")
    fields = dataclasses.fields(Segment)
    names = tuple(f.name for f in fields)
    if getattr(Segment, "__slots__", None) != names or not set(given) <= set(names):
        return None
    ns: dict = {"Segment": Segment}
    lines = [f"def __init__(self, {', '.join(given)}):"]
    for f in fields:
        if f.name in given:
            lines.append(f"    self.{f.name} = {f.name}")
        elif f.default is not dataclasses.MISSING:
            ns[f"_d_{f.name}"] = f.default
            lines.append(f"    self.{f.name} = _d_{f.name}")
        elif f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
            ns[f"_f_{f.name}"] = f.default_factory  # type: ignore[misc]
            lines.append(f"    self.{f.name} = _f_{f.name}()")
        else:
            return None
    lines.append("    self.__class__ = Segment")
    exec("\n".join(lines), ns)  # noqa: S102 - generated from the dataclass's own field list
    twin = type("_SegmentTwin", (), {"__slots__": names, "__init__": ns["__init__"]})
    try:
        args = ("192.0.2.1", "192.0.2.2", 1, 2, 3, 4, _FLAGS[0x11], 5, b"x", 7, 8, 9, (10,), 11)
        fast = twin(*args)
        slow = Segment(**dict(zip(given, args)))
        if type(fast) is not Segment or fast != slow or repr(fast) != repr(slow) or fast.ip_id != slow.ip_id:
            return None
    except Exception:  # pragma: no cover - a future Python refusing the layout trick
        return None
    return twin


_Twin = _build_fast_segment()


def make_segment(src, dst, sport, dport, seq, ack, flags, window, payload, data_len, frame, time_ns, vlan,
                 ip_id=None):
    """Trusted constructor: no validation. Only for values that are valid by construction."""
    if _Twin is not None:
        return _Twin(src, dst, sport, dport, seq, ack, flags, window, payload, data_len, frame, time_ns, vlan, ip_id)
    return Segment(src=src, dst=dst, sport=sport, dport=dport, seq=seq, ack=ack, flags=flags,  # pragma: no cover
                   window=window, payload=payload, data_len=data_len, frame=frame, time_ns=time_ns, vlan=vlan,
                   ip_id=ip_id)


_Seg = _Twin if _Twin is not None else make_segment

# --------------------------------------------------------------------------- addresses

# Address text is cached per address, not per pair: a server's address is then one string
# shared by all its connections (the observer holds tens of thousands of them in TIME_WAIT).
_addrs4: dict[bytes, str] = {}
_pairs6: dict[bytes, tuple[str, str]] = {}
_CACHE_MAX = 1 << 14


def _addr4(raw: bytes) -> str:
    text = _addrs4.get(raw)
    if text is None:
        if len(_addrs4) >= _CACHE_MAX:
            _addrs4.clear()
        text = _addrs4[raw] = socket.inet_ntoa(raw)
    return text


def _pair4(raw: bytes) -> tuple[str, str]:
    return _addr4(raw[:4]), _addr4(raw[4:])


def _text6(raw: bytes) -> str:
    # ipaddress, not inet_ntop: they differ for IPv4-mapped/compatible addresses and
    # Segment.norm_ip uses ipaddress's form.
    return str(ipaddress.IPv6Address(raw))


def _pair6(raw: bytes) -> tuple[str, str]:
    if len(_pairs6) >= _CACHE_MAX:
        _pairs6.clear()
    p = _pairs6[raw] = (_text6(raw[:16]), _text6(raw[16:]))
    return p


# --------------------------------------------------------------------------- names

_IP_PROTOS = {0: "IPv6 hop-by-hop", 1: "ICMP", 2: "IGMP", 4: "IP-in-IP", 17: "UDP", 41: "IPv6-in-IPv4",
              47: "GRE", 50: "ESP", 51: "AH", 58: "ICMPv6", 59: "no next header", 89: "OSPF",
              103: "PIM", 112: "VRRP", 132: "SCTP", 136: "UDP-Lite"}
_ETHERTYPES = {0x0806: "ARP", 0x8035: "RARP", 0x88CC: "LLDP", 0x888E: "EAPOL", 0x8847: "MPLS",
               0x8848: "MPLS multicast", 0x8863: "PPPoE discovery", 0x88F7: "PTP", 0x8809: "slow protocols",
               0x9000: "loopback test", 0x88E5: "MACsec", 0x893A: "IEEE 1905", 0x8137: "IPX",
               0x809B: "AppleTalk", 0x22F0: "AVTP", 0x88B8: "GOOSE", 0x88BA: "SV", 0x8892: "PROFINET",
               0x88E1: "HomePlug AV", 0x8912: "mediaxtream", 0x22EA: "SRP", 0x88E7: "802.1ah"}


def _proto_name(p: int) -> Skip:
    return _non(_IP_PROTOS.get(p) or f"IP protocol {p}")


def _ethertype_skip(et: int) -> Skip:
    if et <= 1500:
        return _non("802.3 length field (LLC frame)")
    name = _ETHERTYPES.get(et)
    return _non(name if name else f"ethertype 0x{et:04x}")


# --------------------------------------------------------------------------- IP and TCP

_IP4 = struct.Struct("!BxHHHxB2x8s").unpack_from    # vihl, total length, id, frag, proto, src+dst
_IP6 = struct.Struct("!B3xHB1x32s").unpack_from     # vtc, payload length, next header, src+dst
_TCP = struct.Struct("!HHIIBBH").unpack_from        # sport, dport, seq, ack, offset byte, flags, window
_U16 = struct.Struct("!H").unpack_from
# The common case in one call: IPv4 without options followed by the TCP header
_IP4TCP = struct.Struct("!BxHHHxB2x8sHHIIBBH").unpack_from
# ... and the same behind an Ethernet header.
_ETH_IP4TCP = struct.Struct("!12xHBxHHHxB2x8sHHIIBBH").unpack_from

_S_IP4_SHORT = _mal("IPv4 header cut short")
_S_IP6_SHORT = _mal("IPv6 header cut short")
_S_TCP_SHORT = _mal("TCP header cut short")
_S_FRAG4 = _skip("fragment", "IPv4 fragment")
_S_FRAG6 = _skip("fragment", "IPv6 fragment")


def _ipv4(data: bytes, off: int, n: int, orig_len: int, frame, time_ns, vlan):
    if n >= off + 40 and data[off] == 0x45:  # fast path: no IP options, whole TCP header present
        _v, tot, ipid, frag, proto, addrs, sport, dport, seq, ack, doff, flags, window = _IP4TCP(data, off)
        if proto == 6 and not frag & 0x3FFF and tot >= 40 and (off + tot <= orig_len or off + tot <= n):
            thl = (doff >> 4) << 2
            data_len = tot - 20 - thl
            if thl >= 20 and data_len >= 0:
                pair = _pair4(addrs)
                return _Seg(pair[0], pair[1], sport, dport, seq, ack, _FLAGS[flags], window,
                            data[off + 20 + thl:off + tot], data_len, frame, time_ns, vlan, ipid)
    # general path (and every odd case)
    if n < off + 20:
        return _S_IP4_SHORT
    vihl, tot, ipid, frag, proto, addrs = _IP4(data, off)
    if vihl >> 4 != 4:
        return _mal(f"bad IP version {vihl >> 4} in an IPv4 packet")
    ihl = (vihl & 15) << 2
    if ihl < 20:
        return _mal(f"IPv4 header length {ihl} < 20")
    if frag & 0x3FFF:
        return _S_FRAG4
    if proto == 17:
        return _udp(data, off + ihl, n, orig_len, frame, time_ns, vlan)
    if proto != 6:
        return _proto_name(proto)
    wire = (orig_len if orig_len > n else n) - off  # bytes the frame had on the wire after ``off``
    if tot == 0:  # TSO/GRO: the length field was never filled in
        tot = wire
    elif tot < ihl:
        return _mal(f"IPv4 total length {tot} < header length {ihl}")
    elif tot > wire:  # claims more than the frame held: count what was there (as Wireshark does)
        tot = wire
    t = off + ihl
    if n < t + 20:
        return _S_TCP_SHORT if n >= t else _mal("IPv4 options cut short")
    sport, dport, seq, ack, doff, flags, window = _TCP(data, t)
    thl = (doff >> 4) << 2
    if thl < 20:
        return _mal(f"TCP data offset {thl >> 2} < 5")
    data_len = tot - ihl - thl
    if data_len < 0:
        return _mal(f"TCP header ({thl} bytes) longer than the IPv4 payload ({tot - ihl} bytes)")
    payload = data[t + thl:off + tot]  # slicing clamps at the captured length
    pair = _pair4(addrs)
    return _Seg(pair[0], pair[1], sport, dport, seq, ack, _FLAGS[flags], window, payload, data_len,
                frame, time_ns, vlan, ipid)


def _ipv6(data: bytes, off: int, n: int, orig_len: int, frame, time_ns, vlan):
    if n < off + 40:
        return _S_IP6_SHORT
    vtc, plen, nh, addrs = _IP6(data, off)
    if vtc >> 4 != 6:
        return _mal(f"bad IP version {vtc >> 4} in an IPv6 packet")
    p = off + 40
    wire_end = orig_len if orig_len > n else n
    end = p + plen
    if plen == 0 or end > wire_end:  # jumbogram/TSO, or claims more than the frame held
        end = wire_end
    while nh != 6:
        if nh == 0 or nh == 43 or nh == 60 or nh == 51 or nh == 44 or nh == 135 or nh == 139 or nh == 140:
            if n < p + 8:
                return _mal("IPv6 extension header cut short")
            if nh == 44:
                if _U16(data, p + 2)[0] & 0xFFF9:  # offset or M flag: a real fragment
                    return _S_FRAG6
                hlen = 8  # atomic fragment (RFC 6946): the whole packet
            elif nh == 51:
                hlen = (data[p + 1] + 2) << 2
            else:
                hlen = (data[p + 1] + 1) << 3
            nh = data[p]
            p += hlen
            if p > end:
                return _mal("IPv6 extension headers run past the payload length")
        elif nh == 17:
            return _udp(data, p, n, orig_len, frame, time_ns, vlan)
        else:
            return _proto_name(nh)
    if n < p + 20:
        return _S_TCP_SHORT
    sport, dport, seq, ack, doff, flags, window = _TCP(data, p)
    thl = (doff >> 4) << 2
    if thl < 20:
        return _mal(f"TCP data offset {thl >> 2} < 5")
    start = p + thl
    data_len = end - start
    if data_len < 0:
        return _mal(f"TCP header ({thl} bytes) longer than the IPv6 payload")
    payload = data[start:end]
    pair = _pairs6.get(addrs) or _pair6(addrs)
    return _Seg(pair[0], pair[1], sport, dport, seq, ack, _FLAGS[flags], window, payload, data_len,
                frame, time_ns, vlan, None)


GTP_U_PORT = 2152
_S_UDP = _non("UDP")


def _udp(data: bytes, off: int, n: int, orig_len: int, frame, time_ns, vlan):
    """UDP: only GTP-U (port 2152, mobile networks' user-plane tunnel) carries TCP worth seeing."""
    if n < off + 8:
        return _S_UDP
    sport, dport = _U16(data, off)[0], _U16(data, off + 2)[0]
    if GTP_U_PORT not in (sport, dport):
        return _S_UDP
    g = off + 8                                    # GTPv1-U header (3GPP TS 29.281)
    if n < g + 8:
        return _mal("GTP-U header cut short")
    flags, mtype = data[g], data[g + 1]
    if flags >> 5 != 1 or not flags & 0x10:
        return _non("GTP' or GTPv2 on port 2152")
    if mtype != 0xFF:
        return _non(f"GTP-U message type {mtype} (not user data)")
    inner = g + 8
    if flags & 0x07:                               # sequence number, N-PDU number or extension present
        if n < g + 12:
            return _mal("GTP-U optional fields cut short")
        inner = g + 12
        ext = data[g + 11] if flags & 0x04 else 0
        while ext:                                 # extension headers: length in 4-byte units
            if n < inner + 1 or not data[inner]:
                return _mal("GTP-U extension header cut short")
            inner += data[inner] * 4
            if n < inner:
                return _mal("GTP-U extension header cut short")
            ext = data[inner - 1]
    return _ip_any(data, inner, n, orig_len, frame, time_ns, vlan)


def _ip_any(data: bytes, off: int, n: int, orig_len: int, frame, time_ns, vlan):
    """IP of either version, told apart by the version nibble (raw IP, NULL...)."""
    if n <= off:
        return _mal("no IP header")
    v = data[off] >> 4
    if v == 4:
        return _ipv4(data, off, n, orig_len, frame, time_ns, vlan)
    if v == 6:
        return _ipv6(data, off, n, orig_len, frame, time_ns, vlan)
    return _mal(f"bad IP version {v}")


# --------------------------------------------------------------------------- link layers

_VLAN_TPIDS = frozenset((0x8100, 0x88A8, 0x9100, 0x9200, 0x9300))


def _ethertype(et: int, data: bytes, off: int, n: int, orig_len: int, frame, time_ns, vlan):
    """Continue at ``off`` with EtherType ``et``: VLAN tags, PPPoE, then IP."""
    while et in _VLAN_TPIDS:
        if n < off + 4:
            return _mal("VLAN tag cut short")
        tci, et = struct.unpack_from("!HH", data, off)
        vlan = vlan + (tci & 0x0FFF,)
        off += 4
    if et == 0x0800:
        return _ipv4(data, off, n, orig_len, frame, time_ns, vlan)
    if et == 0x86DD:
        return _ipv6(data, off, n, orig_len, frame, time_ns, vlan)
    if et == 0x8864:  # PPPoE session: ver/type, code, session, length, then the PPP protocol
        if n < off + 8:
            return _mal("PPPoE header cut short")
        plen, ppp = struct.unpack_from("!HH", data, off + 4)
        # the PPPoE length bounds the IP packet (the rest is Ethernet padding), as in Wireshark
        lim = off + 6 + plen
        if n > lim:
            n = lim
        if orig_len > lim:
            orig_len = lim
        if ppp == 0x0021:
            return _ipv4(data, off + 8, n, orig_len, frame, time_ns, vlan)
        if ppp == 0x0057:
            return _ipv6(data, off + 8, n, orig_len, frame, time_ns, vlan)
        return _non(f"PPP protocol 0x{ppp:04x}")
    return _ethertype_skip(et)


def _null(data, n, orig_len, frame, time_ns, big: bool):
    if n < 4:
        return _mal("loopback header cut short")
    af = struct.unpack_from(">I" if big else "<I", data)[0]
    if not big and af > 0xFFFF:  # written on a host of the other byte order
        af = struct.unpack_from(">I", data)[0]
    if af == 2:
        return _ipv4(data, 4, n, orig_len, frame, time_ns, ())
    if af in (24, 28, 30, 10):  # AF_INET6 on NetBSD/OpenBSD, FreeBSD, Darwin, Linux
        return _ipv6(data, 4, n, orig_len, frame, time_ns, ())
    return _non(f"loopback address family {af}")


def _nflog(data, n, orig_len, frame, time_ns):
    # nfgenmsg (family, version, resource id) then TLVs whose length/type are in host byte order.
    if n < 4:
        return _mal("NFLOG header cut short")
    family = data[0]
    off = 4
    e = "<H"
    if n >= 8 and struct.unpack_from("<H", data, 6)[0] > 0xFF and struct.unpack_from(">H", data, 6)[0] <= 0xFF:
        e = ">H"
    while off + 4 <= n:
        tlen = struct.unpack_from(e, data, off)[0]
        ttype = struct.unpack_from(e, data, off + 2)[0] & 0x7FFF
        if tlen < 4:
            return _mal("NFLOG TLV length < 4")
        if ttype == 9:  # NFULA_PAYLOAD
            if family == 2:
                return _ipv4(data, off + 4, n, orig_len, frame, time_ns, ())
            if family == 10:
                return _ipv6(data, off + 4, n, orig_len, frame, time_ns, ())
            return _non(f"NFLOG family {family}")
        off += (tlen + 3) & ~3
    return _non("NFLOG record without a payload")


_SLL_SHORT = _mal("Linux cooked header cut short")


def decode(linktype: int, data: bytes, orig_len: int, frame: int | None = None, time_ns: int | None = None):
    """Decode one captured frame: a :class:`Segment` for TCP, else a :class:`Skip`.

    ``data`` is the captured bytes, ``orig_len`` the length on the wire. Never raises.
    """
    n = len(data)
    if linktype == 1:  # Ethernet
        if n >= 54 and data[12] == 8 and data[13] == 0 and data[14] == 0x45:  # Ethernet + IPv4 + TCP, inline
            _et, _v, tot, ipid, frag, proto, addrs, sport, dport, seq, ack, doff, flags, window = _ETH_IP4TCP(data)
            if proto == 6 and not frag & 0x3FFF and tot >= 40 and (14 + tot <= orig_len or 14 + tot <= n):
                thl = (doff >> 4) << 2
                data_len = tot - 20 - thl
                if thl >= 20 and data_len >= 0:
                    pair = _pair4(addrs)
                    return _Seg(pair[0], pair[1], sport, dport, seq, ack, _FLAGS[flags], window,
                                data[34 + thl:14 + tot], data_len, frame, time_ns, (), ipid)
        if n < 14:
            return _mal("Ethernet header cut short")
        et = data[12] << 8 | data[13]
        if et == 0x0800:
            return _ipv4(data, 14, n, orig_len, frame, time_ns, ())
        return _ethertype(et, data, 14, n, orig_len, frame, time_ns, ())
    if linktype == 113:  # Linux cooked v1
        if n < 16:
            return _SLL_SHORT
        hatype = data[2] << 8 | data[3]
        if hatype == 824:  # ARPHRD_NETLINK: protocol is a netlink family
            return _non("netlink")
        return _ethertype(data[14] << 8 | data[15], data, 16, n, orig_len, frame, time_ns, ())
    if linktype == 276:  # Linux cooked v2
        if n < 20:
            return _SLL_SHORT
        hatype = data[8] << 8 | data[9]
        if hatype == 824:
            return _non("netlink")
        return _ethertype(data[0] << 8 | data[1], data, 20, n, orig_len, frame, time_ns, ())
    if linktype == 101 or linktype == 12 or linktype == 14:
        return _ip_any(data, 0, n, orig_len, frame, time_ns, ())
    if linktype == 228:
        return _ipv4(data, 0, n, orig_len, frame, time_ns, ())
    if linktype == 229:
        return _ipv6(data, 0, n, orig_len, frame, time_ns, ())
    if linktype == 0:
        return _null(data, n, orig_len, frame, time_ns, False)
    if linktype == 108:
        return _null(data, n, orig_len, frame, time_ns, True)
    if linktype == 239:
        return _nflog(data, n, orig_len, frame, time_ns)
    return _skip("unknown_linktype", f"link type {linktype}")


#: Link types :func:`decode` understands.
DECODABLE_LINKTYPES = frozenset((0, 1, 12, 14, 101, 108, 113, 228, 229, 239, 276))
