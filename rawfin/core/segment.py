"""The TCP segment value type: what rawfin reads, builds, sends and reasons about."""

from __future__ import annotations

import enum
import ipaddress
from dataclasses import dataclass, field, replace

from rawfin.core import seq as sq


class Flags(enum.IntFlag):
    FIN = 0x01
    SYN = 0x02
    RST = 0x04
    PSH = 0x08
    ACK = 0x10
    URG = 0x20
    ECE = 0x40
    CWR = 0x80


_FLAG_ORDER = (Flags.SYN, Flags.FIN, Flags.RST, Flags.PSH, Flags.ACK, Flags.URG, Flags.ECE, Flags.CWR)

# Segment.describe() as data ("FIN,ACK seq=1006 ack=2001 len=5"), written once: the compiled lane is
# given the same table at start (rawfin/capture/engine.py lane_rules, lane/endpoint.c describe) and
# makes its text from it. The flag names in the order people say them, joined by ","; what stands for
# no flag; then each number as (its name, the flags it needs, shown only when not zero), " name=value".
DESCRIBE_FLAGS: tuple[tuple[str, int], ...] = tuple((f.name, int(f)) for f in _FLAG_ORDER)
DESCRIBE_NO_FLAGS = "none"
DESCRIBE_NUMBERS: tuple[tuple[str, int, bool], ...] = (("seq", 0, False), ("ack", int(Flags.ACK), False),
                                                       ("len", 0, True))
#: the segment's numbers DESCRIBE_NUMBERS may name (the rules' value names for them)
_DESCRIBED = {"seq": lambda s: s.seq, "ack": lambda s: s.ack, "len": lambda s: s.data_len}
#: whose sequence space those numbers are in (relative numbers: that side's base): the sender's, the receiver's
_SPACE = {"seq": lambda s: (s.src, s.sport), "ack": lambda s: (s.dst, s.dport)}


def flags_text(flags: int) -> str:
    """``SYN,ACK`` style text, in the order people say them."""
    names = [name for name, bit in DESCRIBE_FLAGS if flags & bit]
    return ",".join(names) if names else DESCRIBE_NO_FLAGS


def parse_flags(text: str) -> Flags:
    """Inverse of :func:`flags_text`; accepts ``FA``-style letters too."""
    letters = {"F": Flags.FIN, "S": Flags.SYN, "R": Flags.RST, "P": Flags.PSH, "A": Flags.ACK,
               "U": Flags.URG, "E": Flags.ECE, "C": Flags.CWR}
    out = Flags(0)
    text = text.strip()
    if not text or text == "none":
        return out
    if "," in text or text.upper() in Flags.__members__:
        for part in text.split(","):
            name = part.strip().upper()
            if name not in Flags.__members__:
                raise ValueError(f"unknown TCP flag {part!r}")
            out |= Flags[name]
        return out
    for ch in text.upper():
        if ch not in letters:
            raise ValueError(f"unknown TCP flag letter {ch!r} in {text!r}")
        out |= letters[ch]
    return out


def norm_ip(ip: str) -> str:
    """Canonical text of an IPv4 or IPv6 address (raises ValueError when it is neither)."""
    return str(ipaddress.ip_address(ip))


def parse_endpoint(text: str) -> tuple[str, int]:
    """``192.0.2.1:80`` or ``[2001:db8::1]:80`` -> ``(ip, port)``; ValueError when it is neither."""
    if text.startswith("["):
        host, sep, port = text[1:].partition("]:")
    else:
        host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 0xFFFF:
        raise ValueError(f"{text!r} is not IP:PORT with a port 0..65535 (IPv6 as [ADDR]:PORT)")
    return norm_ip(host), int(port)


def fmt_endpoint(ip: str, port: int) -> str:
    """``192.0.2.1:80`` or ``[2001:db8::1]:80``."""
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


@dataclass(frozen=True, slots=True, kw_only=True)
class Segment:
    """One TCP segment with its IP endpoints.

    ``payload`` holds the bytes at hand; ``data_len`` is the payload length the
    IP header claims, which is larger than ``len(payload)`` when a capture's
    snaplen cut the packet. ``frame`` and ``time_ns`` say where a segment read
    from a capture came from.
    """

    src: str
    dst: str
    sport: int
    dport: int
    seq: int = 0
    ack: int = 0
    flags: int = 0          # Flags bits, kept as a plain int
    window: int = 65535
    payload: bytes = b""
    data_len: int = -1
    frame: int | None = None
    time_ns: int | None = None
    vlan: tuple[int, ...] = ()
    options: tuple = field(default=(), compare=False)
    #: the IPv4 header's identification (None: IPv6, or not known); a capture's, not a property of the segment
    ip_id: int | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        for name in ("sport", "dport"):
            v = getattr(self, name)
            if not isinstance(v, int) or not 0 <= v <= 0xFFFF:
                raise ValueError(f"{name} must be an integer port 0..65535, got {v!r}")
        for name in ("seq", "ack"):
            v = getattr(self, name)
            if not isinstance(v, int):
                raise ValueError(f"{name} must be an integer, got {v!r}")
            if not 0 <= v <= sq.MASK:
                # Always wrap: a caller computing x + 1 at 2**32 - 1 gets 0.
                object.__setattr__(self, name, sq.wrap(v))
        if not 0 <= self.window <= 0xFFFF:
            raise ValueError(f"window must be 0..65535, got {self.window!r}")
        if type(self.flags) is not int:
            # a plain int inside: IntFlag arithmetic costs microseconds on the hot path
            object.__setattr__(self, "flags", int(self.flags) & 0xFF)
        elif not 0 <= self.flags <= 0xFF:
            raise ValueError(f"flags must fit in 8 bits, got {self.flags!r}")
        if not isinstance(self.payload, (bytes, bytearray, memoryview)):
            raise ValueError("payload must be bytes")
        if not isinstance(self.payload, bytes):
            object.__setattr__(self, "payload", bytes(self.payload))
        if self.data_len < 0:
            object.__setattr__(self, "data_len", len(self.payload))
        elif self.data_len < len(self.payload):
            raise ValueError(f"data_len {self.data_len} is shorter than the payload ({len(self.payload)} bytes)")
        v4 = ":" not in self.src
        if v4 != (":" not in self.dst):
            raise ValueError(f"src {self.src} and dst {self.dst} are not the same IP version")

    # -- derived values -------------------------------------------------
    @property
    def syn(self) -> bool:
        return bool(self.flags & 2)

    @property
    def fin(self) -> bool:
        return bool(self.flags & 1)

    @property
    def rst(self) -> bool:
        return bool(self.flags & 4)

    @property
    def has_ack(self) -> bool:
        return bool(self.flags & 16)

    @property
    def pure_ack(self) -> bool:
        """An ACK alone: the ACK flag without SYN, FIN or RST, and no data."""
        return self.flags & 0x17 == 0x10 and not self.data_len

    @property
    def ipv6(self) -> bool:
        return ":" in self.src

    @property
    def seg_len(self) -> int:
        """Sequence space the segment occupies: data plus one for SYN and one for FIN."""
        f = self.flags
        return self.data_len + (f & 2 and 1) + (f & 1)

    @property
    def seq_end(self) -> int:
        """The sequence number just past this segment (``seq + seg_len`` mod 2**32)."""
        return sq.add(self.seq, self.seg_len)

    @property
    def fin_seq(self) -> int:
        """Sequence number the FIN occupies (``seq + data_len``)."""
        return sq.add(self.seq, self.data_len + (self.flags & 2 and 1))

    @property
    def src_ep(self) -> str:
        return fmt_endpoint(self.src, self.sport)

    @property
    def dst_ep(self) -> str:
        return fmt_endpoint(self.dst, self.dport)

    def describe(self, bases=None) -> str:
        """Short text such as ``FIN,ACK seq=1006 ack=2001 len=5``: absolute numbers, or with ``bases``
        (``(ip, port) -> base``, rawfin.core.seq.note_bases) relative to each side's base: seq to the
        sender's, ack to the receiver's (the lane: interp.c format(), on a copy of the segment)."""
        flags = self.flags
        parts = [flags_text(flags)]
        for name, need, nonzero in DESCRIBE_NUMBERS:
            if flags & need == need:
                v = _DESCRIBED[name](self)
                if bases is not None and name in _SPACE:
                    v = sq.relative(v, bases.get(_SPACE[name](self)))
                if v or not nonzero:
                    parts.append(f"{name}={v}")
        return " ".join(parts)

    def reply_template(self) -> "Segment":
        """A segment going the other way on the same pair (fields to be filled in)."""
        return Segment(src=self.dst, dst=self.src, sport=self.dport, dport=self.sport, vlan=self.vlan)

    def with_(self, **changes) -> "Segment":
        """A copy with ``changes``; a new payload brings its own length unless data_len is given."""
        if "payload" in changes and "data_len" not in changes:
            changes["data_len"] = -1
        return replace(self, **changes)
