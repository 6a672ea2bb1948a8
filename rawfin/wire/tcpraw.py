"""Raw IPv4/IPv6 + TCP packets with their options, built and read with ``struct`` (no Scapy).

The packetdrill runners build every inbound packet while a script's clock is
running and read every outbound one as it arrives; Scapy's milliseconds per
packet would eat packetdrill's 4 ms timing tolerance. Options are kept in the
same form the Scapy codec uses for :attr:`Segment.options` (``("MSS", 1460)``,
``("NOP", None)``, ``("SAckOK", b"")``, ``("WScale", 7)``,
``("Timestamp", (val, ecr))``, ``("SAck", (left, right, ...))``,
``("EOL", None)``), so a segment built here and one decoded by
:mod:`rawfin.wire.codec` look the same.

:func:`build` writes correct IP and TCP checksums; :func:`parse` checks none (the
sender may have left them to an offload) and raises
:class:`~rawfin.core.errors.DecodeError` on anything that is not a whole TCP
segment. :func:`fix_checksums` completes the checksums of a packet a kernel
handed over with checksum offload (for a capture file tshark reads without
complaint). :data:`VNET_HDR_LEN` and :func:`strip_vnet` deal with the
``virtio_net_hdr`` a TUN device opened with ``IFF_VNET_HDR`` puts in front.
"""

from __future__ import annotations

import ipaddress
import socket
import struct
from dataclasses import dataclass

from rawfin.core.errors import DecodeError
from rawfin.core.segment import Segment

VNET_HDR_LEN = 10          # struct virtio_net_hdr (no mergeable buffers)
_KIND = {0: "EOL", 1: "NOP", 2: "MSS", 3: "WScale", 4: "SAckOK", 5: "SAck", 8: "Timestamp"}


@dataclass(frozen=True, slots=True, kw_only=True)
class Packet:
    """A parsed packet: the segment (options included) and the IP fields packetdrill can check."""

    seg: Segment
    tos: int = 0            # IPv4 TOS / IPv6 traffic class (ECN in the low two bits)
    ttl: int = 64           # TTL / hop limit
    raw: bytes = b""


def _csum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def encode_options(options) -> bytes:
    """Scapy-style options -> bytes, padded with EOL to a multiple of 4 only if needed."""
    out = bytearray()
    for name, value in options:
        if name == "NOP":
            out += b"\x01"
        elif name == "EOL":
            out += b"\x00"
        elif name == "MSS":
            out += struct.pack("!BBH", 2, 4, value)
        elif name == "WScale":
            out += struct.pack("!BBB", 3, 3, value)
        elif name == "SAckOK":
            out += b"\x04\x02"
        elif name == "Timestamp":
            out += struct.pack("!BBII", 8, 10, value[0] & 0xFFFFFFFF, value[1] & 0xFFFFFFFF)
        elif name == "SAck":
            out += struct.pack("!BB", 5, 2 + 4 * len(value)) + b"".join(
                struct.pack("!I", v & 0xFFFFFFFF) for v in value)
        else:
            raise ValueError(f"unknown TCP option {name!r}")
    if len(out) % 4:
        out += b"\0" * (4 - len(out) % 4)
    if len(out) > 40:
        raise ValueError(f"TCP options take {len(out)} bytes, more than 40")
    return bytes(out)


def decode_options(raw: bytes) -> tuple:
    out = []
    i = 0
    while i < len(raw):
        kind = raw[i]
        if kind == 0:
            out.append(("EOL", None))
            i += 1
            continue
        if kind == 1:
            out.append(("NOP", None))
            i += 1
            continue
        if i + 1 >= len(raw) or raw[i + 1] < 2 or i + raw[i + 1] > len(raw):
            raise DecodeError(f"TCP option kind {kind} at offset {i} runs past the header")
        n = raw[i + 1]
        body = raw[i + 2:i + n]
        name = _KIND.get(kind)
        if name == "MSS" and n == 4:
            out.append(("MSS", struct.unpack("!H", body)[0]))
        elif name == "WScale" and n == 3:
            out.append(("WScale", body[0]))
        elif name == "SAckOK" and n == 2:
            out.append(("SAckOK", b""))
        elif name == "Timestamp" and n == 10:
            out.append(("Timestamp", struct.unpack("!II", body)))
        elif name == "SAck" and (n - 2) % 8 == 0 and n > 2:
            out.append(("SAck", struct.unpack(f"!{(n - 2) // 4}I", body)))
        else:
            out.append((kind, bytes(body)))
        i += n
    return tuple(out)


def build(seg: Segment, *, tos: int = 0, ttl: int = 64, ip_id: int = 0, urg: int = 0) -> bytes:
    """The raw IP packet for ``seg`` (its options included), with correct checksums."""
    opts = encode_options(seg.options)
    off = (20 + len(opts)) // 4
    payload = seg.payload
    tcp = bytearray(struct.pack("!HHIIBBHHH", seg.sport, seg.dport, seg.seq & 0xFFFFFFFF, seg.ack & 0xFFFFFFFF,
                                off << 4, seg.flags & 0xFF, seg.window, 0, urg) + opts + payload)
    if seg.ipv6:
        src, dst = socket.inet_pton(socket.AF_INET6, seg.src), socket.inet_pton(socket.AF_INET6, seg.dst)
        pseudo = src + dst + struct.pack("!IxxxB", len(tcp), 6)
        struct.pack_into("!H", tcp, 16, _csum(pseudo + bytes(tcp)))
        head = struct.pack("!IHBB", (6 << 28) | ((tos & 0xFF) << 20), len(tcp), 6, ttl) + src + dst
        return head + bytes(tcp)
    src, dst = socket.inet_aton(seg.src), socket.inet_aton(seg.dst)
    pseudo = src + dst + struct.pack("!xBH", 6, len(tcp))
    struct.pack_into("!H", tcp, 16, _csum(pseudo + bytes(tcp)))
    head = bytearray(struct.pack("!BBHHHBBH4s4s", 0x45, tos & 0xFF, 20 + len(tcp), ip_id, 0x4000, ttl, 6, 0,
                                 src, dst))
    struct.pack_into("!H", head, 10, _csum(bytes(head)))
    return bytes(head) + bytes(tcp)


def parse(raw: bytes, time_ns: int | None = None) -> Packet:
    """A raw IPv4/IPv6 packet holding a whole TCP segment -> :class:`Packet` (DecodeError otherwise)."""
    if len(raw) < 1:
        raise DecodeError("empty packet")
    v = raw[0] >> 4
    if v == 4:
        if len(raw) < 20:
            raise DecodeError(f"IPv4 header cut short ({len(raw)} bytes)")
        ihl = (raw[0] & 0xF) * 4
        total = struct.unpack_from("!H", raw, 2)[0] or len(raw)
        proto = raw[9]
        if proto != 6:
            raise DecodeError(f"IP protocol {proto} is not TCP")
        if struct.unpack_from("!H", raw, 6)[0] & 0x3FFF:
            raise DecodeError("an IPv4 fragment")
        src, dst = socket.inet_ntoa(raw[12:16]), socket.inet_ntoa(raw[16:20])
        tos, ttl, start = raw[1], raw[8], ihl
        end = min(total, len(raw))
    elif v == 6:
        if len(raw) < 40:
            raise DecodeError(f"IPv6 header cut short ({len(raw)} bytes)")
        first, plen, nh, ttl = struct.unpack_from("!IHBB", raw, 0)
        if nh != 6:
            raise DecodeError(f"IPv6 next header {nh} is not TCP")
        tos = (first >> 20) & 0xFF
        src = str(ipaddress.IPv6Address(raw[8:24]))
        dst = str(ipaddress.IPv6Address(raw[24:40]))
        start = 40
        end = min(40 + plen, len(raw)) if plen else len(raw)
    else:
        raise DecodeError(f"IP version {v}")
    if end - start < 20:
        raise DecodeError(f"TCP header cut short ({end - start} bytes)")
    sport, dport, seq, ack, offb, flags, win = struct.unpack_from("!HHIIBBH", raw, start)
    doff = (offb >> 4) * 4
    if doff < 20 or start + doff > end:
        raise DecodeError(f"TCP data offset {doff} does not fit the packet")
    options = decode_options(raw[start + 20:start + doff])
    payload = bytes(raw[start + doff:end])
    seg = Segment(src=src, dst=dst, sport=sport, dport=dport, seq=seq, ack=ack, flags=flags, window=win,
                  payload=payload, time_ns=time_ns, options=options)
    return Packet(seg=seg, tos=tos, ttl=ttl, raw=bytes(raw[:end]))


def fix_checksums(raw: bytes) -> bytes:
    """``raw`` with its IPv4 header checksum and TCP checksum recomputed."""
    b = bytearray(raw)
    if b[0] >> 4 == 4:
        ihl = (b[0] & 0xF) * 4
        total = struct.unpack_from("!H", b, 2)[0] or len(b)
        if total != len(b):              # a GSO packet may carry 0 here
            struct.pack_into("!H", b, 2, len(b))
        struct.pack_into("!H", b, 10, 0)
        struct.pack_into("!H", b, 10, _csum(bytes(b[:ihl])))
        tcp = b[ihl:]
        pseudo = bytes(b[12:20]) + struct.pack("!xBH", 6, len(tcp))
        start = ihl
    else:
        struct.pack_into("!H", b, 4, len(b) - 40)
        tcp = b[40:]
        pseudo = bytes(b[8:40]) + struct.pack("!IxxxB", len(tcp), 6)
        start = 40
    struct.pack_into("!H", b, start + 16, 0)
    struct.pack_into("!H", b, start + 16, _csum(pseudo + bytes(b[start:])))
    return bytes(b)


def strip_vnet(frame: bytes) -> tuple[bytes, int]:
    """(the IP packet, its GSO segment size or 0) from a TUN read with a virtio_net_hdr in front."""
    if len(frame) < VNET_HDR_LEN:
        raise DecodeError(f"TUN frame shorter than its virtio header ({len(frame)} bytes)")
    _flags, gso_type, _hdr_len, gso_size = struct.unpack_from("<BBHH", frame, 0)
    return frame[VNET_HDR_LEN:], (gso_size if gso_type else 0)


def vnet_header(gso_size: int = 0, ipv6: bool = False) -> bytes:
    """A virtio_net_hdr for a packet written to a TUN device (GSO when ``gso_size``)."""
    if not gso_size:
        return b"\0" * VNET_HDR_LEN
    return struct.pack("<BBHHHH", 0, 4 if ipv6 else 1, 0, gso_size, 0, 0)
