"""The Scapy boundary: Segment <-> Scapy packet <-> raw IP bytes.

This is the only module in rawfin's core path that imports Scapy, and it
imports the submodules it needs, never ``scapy.all``. The command line imports
this module lazily, so ``rawfin --help`` does not pay for Scapy.

Building: :func:`to_scapy` gives an ``IP/TCP`` or ``IPv6/TCP`` packet whose
lengths and checksums Scapy fills in when it is turned into bytes;
:func:`to_bytes` gives those bytes (a raw IP packet, as a LINKTYPE_RAW capture
holds it).

Parsing: :func:`from_scapy` and :func:`from_bytes` turn a packet back into a
:class:`~rawfin.core.segment.Segment`. Any input either parses or raises
:class:`~rawfin.core.errors.DecodeError`; nothing else escapes. Checksums are not
verified when parsing (a capture taken on the sending host often has offloaded,
"wrong" checksums, and the segment is still what was sent).
"""

from __future__ import annotations

from scapy.layers.inet import IP, TCP
from scapy.layers.inet6 import IPv6, IPv6ExtHdrFragment
from scapy.layers.l2 import Dot1Q
from scapy.packet import NoPayload, Packet

from rawfin.core.errors import DecodeError
from rawfin.core.segment import Flags, Segment

TTL = 64
MSS_IPV4 = 1460  # 1500 - 20 (IPv4) - 20 (TCP)
MSS_IPV6 = 1440  # 1500 - 40 (IPv6) - 20 (TCP)


# -- building ------------------------------------------------------------

def to_scapy(seg: Segment, *, default_mss: bool = True) -> Packet:
    """A fresh Scapy ``IP/TCP`` (or ``IPv6/TCP``) packet for ``seg``.

    TTL / hop limit is 64. ``seg.options`` is used as a Scapy-style TCP options
    list (``[("MSS", 1460), ("NOP", None), ...]``). A SYN without options gets an
    MSS option (1460 over IPv4, 1440 over IPv6), as every real stack sends one,
    unless ``default_mss`` is false. Lengths and checksums are left for Scapy to
    compute when the packet is built. ``seg.vlan`` is not represented (there is
    no link layer here).

    Raises ValueError for a truncated segment (``data_len > len(payload)``):
    the missing bytes are unknown, so no correct packet can be built.
    """
    if seg.data_len != len(seg.payload):
        raise ValueError(
            f"cannot build {seg.describe()}: only {len(seg.payload)} of its {seg.data_len} payload bytes are known"
        )
    options = list(seg.options)
    if not options and default_mss and seg.flags & Flags.SYN:
        options = [("MSS", MSS_IPV6 if seg.ipv6 else MSS_IPV4)]
    if seg.ipv6:
        ip = IPv6(src=seg.src, dst=seg.dst, hlim=TTL)
    else:
        ip = IP(src=seg.src, dst=seg.dst, ttl=TTL)
    tcp = TCP(
        sport=seg.sport,
        dport=seg.dport,
        seq=seg.seq,
        ack=seg.ack,
        flags=int(seg.flags),
        window=seg.window,
        options=options,
    )
    pkt = ip / tcp
    if seg.payload:
        pkt = pkt / seg.payload
    return pkt


def to_bytes(seg: Segment, *, default_mss: bool = True) -> bytes:
    """Raw IP packet bytes for ``seg`` (IPv4 or IPv6 header first), checksums computed.

    Every call builds a new packet, so no cached bytes or stale checksums
    can leak in.
    """
    return bytes(to_scapy(seg, default_mss=default_mss))


# -- parsing -------------------------------------------------------------

def from_bytes(data: bytes, *, frame: int | None = None, time_ns: int | None = None) -> Segment:
    """Parse a raw IP packet (the version nibble picks IPv4 or IPv6)."""
    data = bytes(data)
    if not data:
        raise DecodeError(_where(frame) + "empty packet")
    version = data[0] >> 4
    if version == 4:
        cls = IP
    elif version == 6:
        cls = IPv6
    else:
        raise DecodeError(_where(frame) + f"not an IP packet (version nibble {version})")
    try:
        pkt = cls(data)
    except Exception as exc:  # Scapy raises struct.error & co. on short input
        raise DecodeError(_where(frame) + f"cannot dissect IPv{version} packet ({len(data)} bytes): {exc}") from None
    return _decode_or_raise(pkt, frame, time_ns)  # already dissected from bytes: no second pass


def from_scapy(pkt: Packet, frame: int | None = None, time_ns: int | None = None) -> Segment:
    """Turn a Scapy packet (``Ether``/802.1Q/``IP``/``IPv6``/``TCP``) into a Segment.

    The packet may come from a capture or be built by hand; either way it is
    read through its bytes, so Scapy's unset fields (lengths, checksums) are
    what they would be on the wire. ``payload`` is cut to the length the IP
    header claims (Ethernet padding and trailers are dropped); ``data_len`` is
    that claimed length, so it exceeds ``len(payload)`` when the packet was
    truncated by a snaplen. ``frame`` and ``time_ns`` are stored as given.

    Raises DecodeError when there is no TCP layer, the TCP header is cut
    short or inconsistent with the IP lengths, or the packet is an IP fragment.
    """
    try:
        # Re-dissect from bytes: a hand-built packet has no lengths yet, and a
        # dissected one gives back its own bytes, so this is the same packet.
        pkt = type(pkt)(bytes(pkt))
    except Exception as exc:
        raise DecodeError(_where(frame) + f"cannot dissect packet: {type(exc).__name__}: {exc}") from None
    return _decode_or_raise(pkt, frame, time_ns)


def _decode_or_raise(pkt: Packet, frame: int | None, time_ns: int | None) -> Segment:
    where = _where(frame)
    try:
        return _decode(pkt, frame, time_ns, where)
    except DecodeError:
        raise
    except Exception as exc:
        raise DecodeError(where + f"cannot decode packet: {type(exc).__name__}: {exc}") from None


def _where(frame: int | None) -> str:
    return f"frame {frame}: " if frame is not None else ""


def _says_tcp_next(layers: list) -> bool:
    """Whether the last header Scapy understood announces TCP (so TCP was cut short)."""
    for layer in reversed(layers):
        if type(layer) is IP:
            return layer.proto == 6
        if type(layer) is IPv6 or type(layer).__name__.startswith("IPv6ExtHdr"):
            return layer.nh == 6
    return False


def _decode(pkt: Packet, frame: int | None, time_ns: int | None, where: str) -> Segment:
    layers = []
    layer = pkt
    while not isinstance(layer, NoPayload):
        layers.append(layer)
        if type(layer) is TCP:
            break
        layer = layer.payload
    else:
        names = "/".join(type(x).__name__ for x in layers) or type(pkt).__name__
        if _says_tcp_next(layers):
            raise DecodeError(where + f"IP says TCP but the TCP header is missing or cut short ({names})")
        raise DecodeError(where + f"no TCP layer in packet ({names})")
    tcp = layers[-1]

    # The IP header enclosing this TCP header (IPv6 extension headers may sit between).
    ip = None
    for cand in reversed(layers[:-1]):
        if type(cand) in (IP, IPv6):
            ip = cand
            break
        if isinstance(cand, IPv6ExtHdrFragment):
            raise DecodeError(where + "IPv6 fragment: reassembly is not supported")
    if ip is None:
        raise DecodeError(where + "TCP header without an enclosing IP header")
    vlan = tuple(int(x.vlan) for x in layers if isinstance(x, Dot1Q))

    raw_ip = bytes(ip)
    raw_tcp = bytes(tcp)
    before_tcp = len(raw_ip) - len(raw_tcp)  # IP header (+ options / extension headers)
    if type(ip) is IP:
        if ip.frag or ip.flags.MF:
            raise DecodeError(where + f"IPv4 fragment (offset {ip.frag * 8}): reassembly is not supported")
        claimed = ip.len - before_tcp
        if claimed < 0:
            raise DecodeError(where + f"IPv4 total length {ip.len} is shorter than its own header")
    else:
        if ip.plen == 0:  # jumbogram or an unset length: trust what is there
            claimed = len(raw_tcp)
        else:
            claimed = ip.plen - (before_tcp - 40)

    hdr_len = tcp.dataofs * 4
    if hdr_len < 20:
        raise DecodeError(where + f"TCP data offset {tcp.dataofs} is below the minimum of 5")
    if len(raw_tcp) < hdr_len:
        raise DecodeError(where + f"TCP header cut short: {len(raw_tcp)} of {hdr_len} bytes present")
    data_len = claimed - hdr_len
    if data_len < 0:
        raise DecodeError(
            where + f"IP length leaves {claimed} bytes for TCP, less than its {hdr_len}-byte header"
        )
    payload = raw_tcp[hdr_len:hdr_len + data_len]
    try:
        return Segment(
            src=str(ip.src),
            dst=str(ip.dst),
            sport=int(tcp.sport),
            dport=int(tcp.dport),
            seq=int(tcp.seq),
            ack=int(tcp.ack),
            flags=Flags(int(tcp.flags) & 0xFF),
            window=int(tcp.window),
            payload=payload,
            data_len=data_len,
            frame=frame,
            time_ns=time_ns,
            vlan=vlan,
            options=tuple(tcp.options),
        )
    except ValueError as exc:
        raise DecodeError(where + str(exc)) from None

