"""Streaming capture-file I/O: classic pcap and pcapng, read and written with plain ``struct``.

Reading::

    with open_capture(path) as cap:          # raises CaptureError if it is not a capture
        print(cap.format, cap.linktypes)     # known up front
        for fr in cap:                       # RawFrame records, one per packet record
            ...                              # cap.tell() / cap.size for a progress bar

``iter_frames(path)`` is the one-line form. Iteration yields every good record and
*then* raises :class:`~rawfin.core.errors.CaptureError` (with ``frame=N``, the record where
the damage starts) when the file is cut short or a record is corrupt.

Writing: :class:`PcapWriter` (classic pcap, for crafted segments) and
:class:`PcapngWriter` (for ``rawfin annotate``: copies packets byte for byte and adds
comments; streams). Both write to a temporary name next to the target and rename it
into place on a clean :meth:`close`, so a failed run never leaves a partial file that
looks complete.

This module imports no Scapy and nothing else from rawfin except the error type.
"""

from __future__ import annotations

import os
import struct
import secrets
from typing import BinaryIO, Iterator, NamedTuple

from rawfin.core.errors import CaptureError, OutputError

__all__ = [
    "RawFrame", "Interface", "CaptureReader", "open_capture", "iter_frames",
    "PcapWriter", "PcapngWriter", "MAX_CAPLEN",
    "LINKTYPE_NULL", "LINKTYPE_ETHERNET", "LINKTYPE_RAW", "LINKTYPE_LOOP",
    "LINKTYPE_LINUX_SLL", "LINKTYPE_IPV4", "LINKTYPE_IPV6", "LINKTYPE_NFLOG",
    "LINKTYPE_LINUX_SLL2",
]

LINKTYPE_NULL = 0
LINKTYPE_ETHERNET = 1
LINKTYPE_RAW = 101
LINKTYPE_LOOP = 108
LINKTYPE_LINUX_SLL = 113
LINKTYPE_IPV4 = 228
LINKTYPE_IPV6 = 229
LINKTYPE_NFLOG = 239
LINKTYPE_LINUX_SLL2 = 276

#: Largest captured length accepted for one record unless the file's snaplen is larger
#: (Wireshark's WTAP_MAX_PACKET_SIZE_STANDARD; libpcap uses the same figure).
MAX_CAPLEN = 262144
#: Hard ceiling whatever the snaplen says: a larger record is treated as corrupt.
_CAPLEN_CEILING = 1 << 24
#: Largest pcapng block we accept (Wireshark uses 16 MiB too).
_MAX_BLOCK = (1 << 24) + 4096

_CHUNK = 1 << 20  # read-ahead size

#: pcapng blocks that are not packets but that Wireshark lists as frames (so they use up
#: a frame number): systemd journal export (9) and custom blocks (0xBAD, 0x40000BAD).
_COUNTED_BLOCKS = frozenset((9, 0x00000BAD, 0x40000BAD))

_NS = 1_000_000_000


class RawFrame(NamedTuple):
    """One packet record as it sits in the file.

    ``frame`` counts every packet record from 1, as Wireshark numbers frames.
    ``iface`` is the index into :attr:`CaptureReader.interfaces` (numbered across all
    sections of a pcapng file; always 0 for pcap). ``time_ns`` includes the
    interface's ``if_tsoffset`` and is 0 for a pcapng Simple Packet Block (which
    carries no time). The last three fields let a writer put the record back exactly:
    ``flags`` is the ``epb_flags`` option (None when absent), ``ts_raw`` the timestamp
    in the interface's units as stored (None for pcap and SPB), ``options`` the
    block's raw option bytes in the source section's byte order (without the
    end-of-options marker; b"" for pcap).
    """

    frame: int
    time_ns: int
    linktype: int
    data: bytes
    orig_len: int
    iface: int = 0
    comments: tuple[str, ...] = ()
    flags: int | None = None
    ts_raw: int | None = None
    options: bytes = b""


class Interface(NamedTuple):
    """A capture interface: the pcap file header, or one pcapng IDB.

    ``tsresol`` is the raw ``if_tsresol`` byte (6 = microseconds, 9 = nanoseconds,
    0x80|n = 2**-n), ``tsoffset`` the ``if_tsoffset`` in seconds. ``options`` are the
    IDB's raw option bytes in the byte order given by ``big_endian``. ``local_index`` is
    the id within its section, which is what Wireshark shows as ``frame.interface_id``.
    """

    index: int            # across the whole file: what RawFrame.iface refers to
    linktype: int
    snaplen: int
    tsresol: int = 6
    tsoffset: int = 0
    name: str | None = None
    section: int = 0
    big_endian: bool = False
    options: bytes = b""
    local_index: int = 0

    @property
    def units_per_second(self) -> int:
        r = self.tsresol
        return 1 << (r & 0x7F) if r & 0x80 else 10 ** r

    @property
    def nanosecond(self) -> bool:
        """True when timestamps are finer than a microsecond."""
        return self.units_per_second > 1_000_000


# --------------------------------------------------------------------------- helpers

_PCAP_MAGICS = {
    # magic as read little-endian -> (byte order, nanosecond, modified/Kuznetsov)
    0xA1B2C3D4: ("<", False, False),
    0xD4C3B2A1: (">", False, False),
    0xA1B23C4D: ("<", True, False),
    0x4D3CB2A1: (">", True, False),
    0xA1B2CD34: ("<", False, True),
    0x34CDB2A1: (">", False, True),
}
_PCAPNG_SHB = 0x0A0D0D0A
_BOM_LE = b"\x4d\x3c\x2b\x1a"
_BOM_BE = b"\x1a\x2b\x3c\x4d"


def _sniff(head: bytes) -> str:
    """Plain words for what a non-capture file seems to be."""
    if not head:
        return "empty file"
    if head.startswith(b"snoop\0\0\0"):
        return "looks like a Sun snoop file; convert it with editcap"
    if head[:2] == b"\x1f\x8b":
        return "gzip-compressed; gunzip it first"
    if head[:4] in (b"\x28\xb5\x2f\xfd",):
        return "zstd-compressed; decompress it first"
    if head[:3] == b"BZh":
        return "bzip2-compressed; decompress it first"
    if head[:4] == b"PK\x03\x04":
        return "a zip archive"
    if head.startswith(b"XCP\0"):
        return "looks like a NetXray/Sniffer file"
    if len(head) < 24 and head[:4] in (b"\xd4\xc3\xb2\xa1", b"\xa1\xb2\xc3\xd4",
                                       b"\x4d\x3c\xb2\xa1", b"\xa1\xb2\x3c\x4d"):
        return f"pcap file header cut short: only {len(head)} bytes"
    sample = head[:64]
    try:
        text = sample.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    if text is not None and all(c.isprintable() or c in "\r\n\t" for c in text):
        first = text.splitlines()[0][:24] if text.strip() else ""
        return f"looks like text: {first!r}"
    return f"unknown magic 0x{head[:4].hex()}"


def _swap_opts(raw: bytes, numeric: dict[int, str]) -> bytes:
    """Re-encode big-endian option bytes little-endian, swapping the known numeric values."""
    out = []
    pos, n = 0, len(raw)
    while pos + 4 <= n:
        code, length = struct.unpack_from(">HH", raw, pos)
        val = raw[pos + 4:pos + 4 + length]
        pos += 4 + ((length + 3) & ~3)
        if code == 0:
            break
        fmt = numeric.get(code)
        if fmt and struct.calcsize(">" + fmt) == len(val):
            val = struct.pack("<" + fmt, *struct.unpack(">" + fmt, val))
        elif code in (2988, 2989, 19372, 19373) and len(val) >= 4:  # custom: PEN first
            val = struct.pack("<I", struct.unpack_from(">I", val)[0]) + val[4:]
        out.append(struct.pack("<HH", code, len(val)) + val + b"\0" * (-len(val) % 4))
    return b"".join(out)


_IDB_NUMERIC = {8: "Q", 10: "I", 14: "q", 16: "Q", 17: "Q"}
_EPB_NUMERIC = {2: "I", 4: "Q", 5: "Q", 6: "I"}


def _parse_epb_options(raw: bytes, e: str) -> tuple[tuple[str, ...], int | None]:
    """Comments (code 1) and epb_flags (code 2) from packet-block options."""
    comments = []
    flags = None
    pos, n = 0, len(raw)
    while pos + 4 <= n:
        code, length = struct.unpack_from(e + "HH", raw, pos)
        start = pos + 4
        if code == 0:
            break
        if code == 1:
            comments.append(raw[start:start + length].decode("utf-8", "replace"))
        elif code == 2 and length == 4:
            flags = struct.unpack_from(e + "I", raw, start)[0]
        pos = start + ((length + 3) & ~3)
    return tuple(comments), flags


def _strip_endofopt(raw: bytes, e: str) -> bytes:
    """Option bytes up to (not including) opt_endofopt; also drops trailing junk."""
    pos, n = 0, len(raw)
    while pos + 4 <= n:
        code, length = struct.unpack_from(e + "HH", raw, pos)
        if code == 0:
            return raw[:pos]
        nxt = pos + 4 + ((length + 3) & ~3)
        if nxt > n:
            return raw[:pos]
        pos = nxt
    return raw[:pos]


# --------------------------------------------------------------------------- reader


def parse_idb(body: bytes, e: str, index: int = 0, section: int = 0, local_index: int = 0) -> "Interface":
    """An Interface Description Block's body (between the length fields), in byte order ``e``."""
    linktype, _res, snaplen = struct.unpack_from(e + "HHI", body)
    opts = _strip_endofopt(body[8:], e)
    tsresol, tsoffset, name = 6, 0, None
    pos, n = 0, len(opts)
    while pos + 4 <= n:
        code, length = struct.unpack_from(e + "HH", opts, pos)
        v = opts[pos + 4:pos + 4 + length]
        if code == 9 and length >= 1:
            tsresol = v[0]
        elif code == 14 and length == 8:
            tsoffset = struct.unpack(e + "q", v)[0]
        elif code == 2:
            name = v.decode("utf-8", "replace")
        pos += 4 + ((length + 3) & ~3)
    if (tsresol & 0x80 and tsresol & 0x7F > 64) or (not tsresol & 0x80 and tsresol > 18):
        tsresol = 6  # nonsense resolution: Wireshark falls back to microseconds too
    return Interface(index, linktype, snaplen, tsresol, tsoffset, name, section, e == ">", opts, local_index)


def caplen_limit(snaplen: int) -> int:
    """The most captured bytes a record may claim before it is called corrupt."""
    return max(MAX_CAPLEN, min(snaplen, _CAPLEN_CEILING))


def idb_clock(iface: "Interface") -> tuple[int, int, int, int]:
    """How a packet of this interface becomes a frame: (mul, div, offset ns, caplen limit), its time
    in ns being ``raw * mul // div + offset``."""
    res = iface.tsresol
    if res & 0x80:
        mul, div = _NS, 1 << (res & 0x7F)
    elif res <= 9:
        mul, div = 10 ** (9 - res), 1
    else:
        mul, div = 1, 10 ** (res - 9)
    return mul, div, iface.tsoffset * _NS, caplen_limit(iface.snaplen)


class CaptureReader:
    """An open capture file. Iterate it (once) for :class:`RawFrame` records.

    Attributes known right after opening: ``path``, ``format`` ("pcap" or "pcapng"),
    ``byte_order`` ("little"/"big", of the first section), ``nanosecond`` (pcap: the
    nanosecond magic; pcapng: any interface seen so far finer than 1 µs),
    ``linktypes`` (pcap: the one link type; pcapng: those of the interfaces
    described before the first packet), ``snaplen`` (pcap only, else None), and
    ``size`` (bytes, None when unknown such as for a pipe). ``interfaces`` grows
    as pcapng IDBs are read.
    """

    def __init__(self, path: str | os.PathLike, fileobj: BinaryIO | None = None) -> None:
        self.path = os.fspath(path) if fileobj is None else str(getattr(fileobj, "name", path))
        self._own = fileobj is None
        self._f: BinaryIO = open(path, "rb") if fileobj is None else fileobj  # noqa: SIM115
        self._consumed = 0      # file offset where the parser's buffer starts
        self._iterated = False
        self.interfaces: list[Interface] = []
        self.snaplen: int | None = None
        self.modified = False
        try:
            self.size: int | None = os.fstat(self._f.fileno()).st_size
        except (OSError, AttributeError, ValueError):
            self.size = None
        try:
            self._head = self._read_head()
        except BaseException:
            self.close()
            raise

    # -- header ---------------------------------------------------------
    def _read_head(self) -> bytes:
        head = self._f.read(_CHUNK)
        if len(head) >= 4:
            magic = struct.unpack_from("<I", head)[0]
            if magic in _PCAP_MAGICS and len(head) >= 24:
                e, nano, modified = _PCAP_MAGICS[magic]
                major, minor, _zone, _sigfigs, snaplen, network = struct.unpack_from(e + "HHiIII", head, 4)
                if major not in (2, 1):
                    raise CaptureError(self.path, f"not a pcap or pcapng file (pcap version {major}.{minor})")
                self.format = "pcap"
                self.byte_order = "little" if e == "<" else "big"
                self.nanosecond = nano
                self.modified = modified
                self.snaplen = snaplen
                linktype = network & 0x03FFFFFF
                self.interfaces.append(Interface(0, linktype, snaplen, 9 if nano else 6, 0, None, 0, e == ">", b""))
                self._e = e
                self._consumed = 24
                return head[24:]
            if magic == _PCAPNG_SHB and len(head) >= 12 and head[8:12] in (_BOM_LE, _BOM_BE):
                self.format = "pcapng"
                self.byte_order = "little" if head[8:12] == _BOM_LE else "big"
                self._e = "<" if self.byte_order == "little" else ">"
                self._prescan(head)
                self.nanosecond = any(i.nanosecond for i in self._pre_ifaces)
                return head
            if magic == _PCAPNG_SHB:
                raise CaptureError(self.path, "not a pcap or pcapng file (pcapng section header has no valid byte-order magic)")
        raise CaptureError(self.path, f"not a pcap or pcapng file ({_sniff(head)})")

    def _prescan(self, head: bytes) -> None:
        """Link types of the IDBs before the first packet block (best effort; errors come later)."""
        self._pre_ifaces: list[Interface] = []
        pos, n, e = 0, len(head), self._e
        while pos + 12 <= n:
            btype = struct.unpack_from(e + "I", head, pos)[0]
            if btype == _PCAPNG_SHB:
                bom = head[pos + 8:pos + 12]
                if bom not in (_BOM_LE, _BOM_BE):
                    return
                e = "<" if bom == _BOM_LE else ">"
            blen = struct.unpack_from(e + "I", head, pos + 4)[0]
            if blen < 12 or blen % 4 or pos + blen > n:
                return
            if btype in (2, 3, 6):
                return
            if btype == 1 and blen >= 20:
                self._pre_ifaces.append(self._parse_idb(head[pos + 8:pos + blen - 4], e, len(self._pre_ifaces), 0))
            pos += blen

    def _parse_idb(self, body: bytes, e: str, index: int, section: int, local_index: int = 0) -> Interface:
        return parse_idb(body, e, index, section, local_index)

    # -- public -----------------------------------------------------------
    @property
    def linktypes(self) -> tuple[int, ...]:
        if self.format == "pcap":
            return (self.interfaces[0].linktype,)
        seen = self.interfaces if self.interfaces else self._pre_ifaces
        return tuple(dict.fromkeys(i.linktype for i in seen))

    @property
    def linktype(self) -> int | None:
        """The single link type of the file, or None when there are several (or none yet)."""
        lts = self.linktypes
        return lts[0] if len(lts) == 1 else None

    def tell(self) -> int:
        """Bytes of the file read so far (to within the read-ahead buffer): for progress bars."""
        try:
            return self._f.tell()
        except (OSError, ValueError):
            return self._consumed

    def close(self) -> None:
        if self._own:
            self._f.close()

    def __enter__(self) -> "CaptureReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __iter__(self) -> Iterator[RawFrame]:
        if self._iterated:
            raise RuntimeError("a CaptureReader can be iterated only once")
        self._iterated = True
        if self.format == "pcap":
            return self._iter_pcap()
        return self._iter_pcapng()

    def detach(self) -> bytes:
        """Hand the rest of the capture to another reader (the compiled lane reading a stream):
        returns the bytes already read past the file header (a classic pcap's records from the
        first on); the file object reads on from there. The reader cannot be iterated after."""
        if self._iterated or self.format != "pcap":
            raise RuntimeError("detach() is for a classic pcap not yet iterated")
        self._iterated = True
        head, self._head = self._head, b""
        return head

    def _error(self, message: str, frame: int | None) -> CaptureError:
        return CaptureError(self.path, message, frame=frame)

    # -- pcap -------------------------------------------------------------
    def _iter_pcap(self) -> Iterator[RawFrame]:
        e = self._e
        iface = self.interfaces[0]
        linktype = iface.linktype
        snaplen = iface.snaplen
        limit = caplen_limit(snaplen)
        hdr_len = 24 if self.modified else 16
        unpack = struct.Struct(e + "IIII").unpack_from
        frac_mul = 1 if self.nanosecond else 1000
        read = self._f.read
        new = tuple.__new__
        RF = RawFrame
        buf = self._head
        self._head = b""
        pos = 0
        n = len(buf)
        frame = 0
        while True:
            while pos + hdr_len <= n:
                sec, frac, caplen, orig_len = unpack(buf, pos)
                start = pos + hdr_len
                end = start + caplen
                if end > n:
                    break
                if caplen > limit:
                    raise self._error(f"packet record claims {caplen} captured bytes (corrupt record)", frame + 1)
                frame += 1
                yield new(RF, (frame, sec * _NS + frac * frac_mul, linktype, buf[start:end], orig_len,
                               0, (), None, None, b""))
                pos = end
            # Need more bytes: keep the unparsed tail and read on.
            if pos + hdr_len <= n:
                caplen = unpack(buf, pos)[2]
                if caplen > limit:
                    raise self._error(f"packet record claims {caplen} captured bytes (corrupt record)", frame + 1)
                need = hdr_len + caplen
            else:
                need = hdr_len
            self._consumed += pos
            buf = buf[pos:]
            more = read(max(_CHUNK, need - len(buf)))
            pos = 0
            if not more:
                if not buf:
                    return
                if len(buf) < hdr_len:
                    raise self._error(f"record header cut short (file truncated?): {len(buf)} of {hdr_len} bytes",
                                      frame + 1)
                raise self._error(f"packet data cut short (file truncated?): record claims {need - hdr_len} "
                                  f"bytes, {len(buf) - hdr_len} present", frame + 1)
            buf += more
            n = len(buf)

    # -- pcapng -----------------------------------------------------------
    def _iter_pcapng(self) -> Iterator[RawFrame]:
        read = self._f.read
        new = tuple.__new__
        RF = RawFrame
        buf = self._head
        self._head = b""
        pos = 0
        n = len(buf)
        frame = 0
        section = -1
        e = self._e
        u32 = struct.Struct(e + "I").unpack_from
        # per-section interface table: local id -> (global index, linktype, mul, div, off_ns, caplen limit)
        local: list[tuple] = []
        nlocal = 0
        hdr7 = struct.Struct(e + "IIIIIII").unpack_from
        while True:
            # A packet block (Enhanced, or the obsolete Packet Block with the same layout after a
            # 16-bit interface id) wholly in the buffer, sound, in a known section: the one place
            # a packet record is read. Anything else, every error included, goes the careful way.
            if pos + 28 <= n:
                btype, blen, lid, ts_hi, ts_lo, caplen, orig_len = hdr7(buf, pos)
                end = pos + blen
                if btype == 2:
                    lid = lid & 0xFFFF if e == "<" else lid >> 16
                if (btype == 6 or btype == 2) and lid < nlocal and end <= n and not blen & 3:
                    gid, linktype, mul, div, off, limit = local[lid]
                    if caplen <= limit and caplen + 32 <= blen and u32(buf, end - 4)[0] == blen:
                        start = pos + 28
                        ts = ts_hi << 32 | ts_lo
                        frame += 1
                        if start + caplen + 8 > end:  # no room for options
                            yield new(RF, (frame, ts * mul // div + off, linktype, buf[start:start + caplen],
                                           orig_len, gid, (), None, ts, b""))
                        else:
                            opts = _strip_endofopt(buf[start + ((caplen + 3) & ~3):end - 4], e)
                            comments, flags = _parse_epb_options(opts, e)
                            yield new(RF, (frame, ts * mul // div + off, linktype, buf[start:start + caplen],
                                           orig_len, gid, comments, flags, ts, opts))
                        pos = end
                        continue
            if pos + 12 <= n:
                btype = u32(buf, pos)[0]
                if btype == _PCAPNG_SHB:
                    bom = buf[pos + 8:pos + 12]
                    if bom == _BOM_LE:
                        e = "<"
                    elif bom == _BOM_BE:
                        e = ">"
                    else:
                        raise self._error("section header block has no valid byte-order magic (corrupt block)",
                                          frame + 1)
                    u32 = struct.Struct(e + "I").unpack_from
                    hdr7 = struct.Struct(e + "IIIIIII").unpack_from
                blen = u32(buf, pos + 4)[0]
                if blen < 12 or blen % 4:
                    raise self._error(f"block length {blen} is not a multiple of 4 of at least 12 "
                                      "(corrupt block)", frame + 1)
                if blen > _MAX_BLOCK:
                    raise self._error(f"block claims {blen} bytes (corrupt block)", frame + 1)
                need = blen
            else:
                need = 12
            if pos + need > n:
                self._consumed += pos
                buf = buf[pos:]
                pos = 0
                more = read(max(_CHUNK, need - len(buf)))
                if not more:
                    if not buf:
                        return
                    if len(buf) < 12:
                        raise self._error(f"block header cut short (file truncated?): {len(buf)} bytes left",
                                          frame + 1)
                    raise self._error(f"block cut short (file truncated?): block claims {need} bytes, "
                                      f"{len(buf)} present", frame + 1)
                buf += more
                n = len(buf)
                continue
            end = pos + blen
            if u32(buf, end - 4)[0] != blen:
                raise self._error(f"block length {blen} does not match its trailer {u32(buf, end - 4)[0]} "
                                  "(corrupt block)", frame + 1)
            if btype == _PCAPNG_SHB:
                section += 1
                local = []
                nlocal = 0
                if blen < 28:
                    raise self._error(f"section header block too short ({blen} bytes)", frame + 1)
                if True:
                    major = struct.unpack_from(e + "H", buf, pos + 12)[0]
                    if major != 1:
                        raise self._error(f"pcapng section version {major} is not supported", frame + 1)
            if section < 0:
                raise self._error("pcapng file does not start with a section header", frame + 1)
            if btype == 6 or btype == 2:
                # a packet block the fast way did not take: say what is wrong with it
                if blen < 32:
                    raise self._error(f"{'enhanced packet' if btype == 6 else 'packet'} block too short "
                                      f"({blen} bytes)", frame + 1)
                if btype == 6:
                    lid, caplen = struct.unpack_from(e + "I8xI", buf, pos + 8)
                else:
                    lid, caplen = struct.unpack_from(e + "H10xI", buf, pos + 8)
                if lid >= len(local):
                    raise self._error(f"packet refers to interface {lid}, but the section describes "
                                      f"{len(local)} (corrupt block)", frame + 1)
                if caplen > local[lid][5] or 28 + caplen + 4 > blen:
                    raise self._error(f"packet record claims {caplen} captured bytes in a {blen}-byte block "
                                      "(corrupt record)", frame + 1)
                continue        # sound after all: the fast way takes it
            if btype == 1:  # Interface Description Block
                if blen < 20:
                    raise self._error(f"interface description block too short ({blen} bytes)", frame + 1)
                iface = self._parse_idb(buf[pos + 8:end - 4], e, len(self.interfaces), section, len(local))
                self.interfaces.append(iface)
                if iface.nanosecond:
                    self.nanosecond = True
                mul, div, off, limit = idb_clock(iface)
                local.append((iface.index, iface.linktype, mul, div, off, limit))
                nlocal = len(local)
            elif btype == 3:  # Simple Packet Block
                if blen < 16:
                    raise self._error(f"simple packet block too short ({blen} bytes)", frame + 1)
                if not local:
                    raise self._error("simple packet block before any interface description (corrupt block)",
                                      frame + 1)
                orig_len = u32(buf, pos + 8)[0]
                gid, linktype, _mul, _div, _off, _limit = local[0]
                snap = self.interfaces[gid].snaplen
                caplen = min(orig_len, blen - 16)
                if snap:
                    caplen = min(caplen, snap)
                frame += 1
                yield new(RF, (frame, 0, linktype, buf[pos + 12:pos + 12 + caplen], orig_len,
                               gid, (), None, None, b""))
            elif btype in _COUNTED_BLOCKS:
                frame += 1  # Wireshark shows these as frames of their own; they are not packets
            # anything else (SHB already handled, NRB 4, ISB 5, DSB 10, custom ...) is skipped
            pos = end


def open_capture(path: str | os.PathLike, fileobj: BinaryIO | None = None) -> CaptureReader:
    """Open a pcap or pcapng file. Raises CaptureError when it is not one (OSError when unreadable)."""
    return CaptureReader(path, fileobj)


def iter_frames(path: str | os.PathLike) -> Iterator[RawFrame]:
    """Every packet record of ``path``; raises CaptureError after the last good one when damaged."""
    with open_capture(path) as cap:
        yield from cap


# --------------------------------------------------------------------------- writers


class _AtomicOutput:
    """Write to ``<dir>/.<name>.<random>.part`` and rename onto the target on a clean close."""

    def __init__(self, target: str | os.PathLike | BinaryIO) -> None:
        self._tmp: str | None = None
        self._final: str | None = None
        if hasattr(target, "write"):
            self._f: BinaryIO = target  # type: ignore[assignment]
            self._own = False
        else:
            final = os.fspath(target)
            if os.path.isdir(final):
                raise OutputError(f"{final}: is a directory; name the output file")
            d, base = os.path.split(os.path.abspath(final))
            tmp = os.path.join(d, f".{base}.{secrets.token_hex(4)}.part")
            try:
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
            except OSError as e:
                raise OutputError(f"{final}: cannot create it ({e.strerror})") from None
            self._f = os.fdopen(fd, "wb", buffering=_CHUNK)
            self._own = True
            self._tmp, self._final = tmp, final
        self.closed = False

    def close(self) -> None:
        """Finish: flush and rename the temporary file onto the target."""
        if self.closed:
            return
        self.closed = True
        if self._own:
            try:
                self._f.close()
                os.replace(self._tmp, self._final)  # type: ignore[arg-type]
            except OSError as e:
                self._discard()
                raise OutputError(f"{self._final}: cannot write it ({e.strerror})") from None
            except BaseException:
                self._discard()
                raise
        else:
            self._f.flush()

    def abort(self) -> None:
        """Give up: remove the temporary file (the target is left untouched)."""
        if self.closed:
            return
        self.closed = True
        if self._own:
            try:
                self._f.close()
            finally:
                self._discard()

    def _discard(self) -> None:
        try:
            if self._tmp:
                os.unlink(self._tmp)
        except FileNotFoundError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


class PcapWriter(_AtomicOutput):
    """Classic little-endian pcap. ``write(data, time_ns)`` one packet at a time.

    Timestamps are kept to the nanosecond when ``nanosecond`` is true (magic
    0xa1b23c4d), else truncated to microseconds.
    """

    def __init__(self, target: str | os.PathLike | BinaryIO, linktype: int = LINKTYPE_RAW, *,
                 nanosecond: bool = False, snaplen: int = MAX_CAPLEN) -> None:
        super().__init__(target)
        self.linktype = linktype
        self.nanosecond = nanosecond
        self.snaplen = snaplen
        self.count = 0
        self._rec = struct.Struct("<IIII").pack
        self._div = 1 if nanosecond else 1000
        self._f.write(struct.pack("<IHHiIII", 0xA1B23C4D if nanosecond else 0xA1B2C3D4, 2, 4, 0, 0,
                                  snaplen, linktype))

    def write(self, data: bytes, time_ns: int = 0, orig_len: int | None = None) -> None:
        if len(data) > self.snaplen:
            data = data[:self.snaplen]  # never write a record readers would call corrupt
        sec, frac = divmod(time_ns, _NS)
        if sec < 0 or sec > 0xFFFFFFFF:
            raise ValueError(f"time_ns {time_ns} does not fit a pcap timestamp")
        n = len(data)
        self._f.write(self._rec(sec, frac // self._div, n, n if orig_len is None else max(orig_len, n)))
        self._f.write(data)
        self.count += 1

    def write_frame(self, fr: RawFrame) -> None:
        """Copy a record read from another capture (its link type must match)."""
        if fr.linktype != self.linktype:
            raise ValueError(f"frame {fr.frame} has link type {fr.linktype}, this file {self.linktype}")
        self.write(fr.data, fr.time_ns, fr.orig_len)


def _opt(code: int, value: bytes) -> bytes:
    if len(value) > 0xFFFF:
        raise ValueError(f"pcapng option {code} is {len(value)} bytes, more than 65535")
    return struct.pack("<HH", code, len(value)) + value + b"\0" * (-len(value) % 4)


def _block(btype: int, body: bytes) -> bytes:
    blen = 12 + len(body)
    return struct.pack("<II", btype, blen) + body + struct.pack("<I", blen)


class PcapngWriter(_AtomicOutput):
    """Little-endian pcapng with one section.

    Two ways to use it:

    * own interfaces: ``i = w.add_interface(linktype, tsresol=9)`` then
      ``w.write_packet(i, data, time_ns=..., comments=[...])``;
    * copying a capture (``rawfin annotate``), streaming::

          with open_capture(src) as cap, PcapngWriter(dst) as w:
              for fr in cap:
                  w.write_frame(fr, cap.interfaces[fr.iface], comments=notes.get(fr.frame, ()))

      Each source interface (numbered across all input sections) becomes one output
      interface, written just before its first packet, with the source's link type,
      snaplen and IDB options (so ``if_tsresol``/``if_tsoffset`` keep timestamps exact).
      Packets keep their bytes, original length, raw timestamp and options (existing
      comments, ``epb_flags`` ...); added comments are appended as further
      ``opt_comment`` options.
    """

    def __init__(self, target: str | os.PathLike | BinaryIO, *, comment: str | None = None,
                 application: str = "rawfin") -> None:
        super().__init__(target)
        self.count = 0
        self._ifaces: list[tuple[int, int, int, int]] = []  # (linktype, tsresol mul, div, off_ns)
        self._src_map: dict[int, int] = {}
        self._epb = struct.Struct("<IIIIIII").pack
        opts = b""
        if comment:
            opts += _opt(1, comment.encode("utf-8"))
        if application:
            opts += _opt(4, application.encode("utf-8"))
        if opts:
            opts += b"\0\0\0\0"
        self._f.write(_block(_PCAPNG_SHB, struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1) + opts))

    def add_interface(self, linktype: int, snaplen: int = MAX_CAPLEN, *, tsresol: int = 9,
                      name: str | None = None, tsoffset: int = 0, options: bytes = b"") -> int:
        """Write an IDB; returns its interface id. ``options`` are extra raw little-endian options."""
        opts = options
        if name is not None:
            opts += _opt(2, name.encode("utf-8"))
        if tsresol != 6:
            opts += _opt(9, bytes([tsresol]))
        if tsoffset:
            opts += _opt(14, struct.pack("<q", tsoffset))
        return self._write_idb(linktype, snaplen, tsresol, tsoffset, opts)

    def _write_idb(self, linktype: int, snaplen: int, tsresol: int, tsoffset: int, opts: bytes) -> int:
        if opts:
            opts += b"\0\0\0\0"
        self._f.write(_block(1, struct.pack("<HHI", linktype, 0, snaplen) + opts))
        if tsresol & 0x80:
            div, mul = _NS, 1 << (tsresol & 0x7F)
        else:
            div, mul = 10 ** 9, 10 ** tsresol
        self._ifaces.append((linktype, mul, div, tsoffset * _NS))
        return len(self._ifaces) - 1

    def add_source_interface(self, src: Interface) -> int:
        """Copy an interface of an input capture (returns the output id; idempotent)."""
        out = self._src_map.get(src.index)
        if out is not None:
            return out
        if src.big_endian:
            opts = _swap_opts(src.options, _IDB_NUMERIC)
        else:
            opts = src.options
        if not src.options and src.tsresol != 6:  # a pcap header: say nanoseconds explicitly
            opts = _opt(9, bytes([src.tsresol]))
        out = self._write_idb(src.linktype, src.snaplen, src.tsresol, src.tsoffset, opts)
        self._src_map[src.index] = out
        return out

    def write_packet(self, iface: int, data: bytes, *, time_ns: int = 0, ts_raw: int | None = None,
                     orig_len: int | None = None, comments=(), flags: int | None = None,
                     options: bytes = b"") -> None:
        """One EPB. ``ts_raw`` (interface units) wins over ``time_ns`` when given."""
        if not 0 <= iface < len(self._ifaces):
            raise ValueError(f"interface {iface} has not been added")
        if ts_raw is None:
            _lt, mul, div, off = self._ifaces[iface]
            ts_raw = (time_ns - off) * mul // div
            if ts_raw < 0:
                ts_raw = 0  # pcapng timestamps are unsigned; pre-epoch times cannot be stored
        opts = options
        if flags is not None:
            opts += _opt(2, struct.pack("<I", flags))
        for c in comments:
            opts += _opt(1, c.encode("utf-8"))
        if opts:
            opts += b"\0\0\0\0"
        n = len(data)
        pad = b"\0" * (-n % 4)
        blen = 32 + n + len(pad) + len(opts)
        f = self._f
        f.write(self._epb(6, blen, iface, (ts_raw >> 32) & 0xFFFFFFFF, ts_raw & 0xFFFFFFFF, n,
                          n if orig_len is None else orig_len))
        f.write(data)
        f.write(pad + opts + struct.pack("<I", blen))
        self.count += 1

    def write_frame(self, fr: RawFrame, interface: Interface, comments=()) -> None:
        """Copy a record of an input capture, adding ``comments`` after any it already has."""
        out = self.add_source_interface(interface)
        opts = fr.options
        if opts and interface.big_endian:
            opts = _swap_opts(opts, _EPB_NUMERIC)
        # pcapng: the stored timestamp as is; pcap: time_ns is exact at the interface's resolution
        self.write_packet(out, fr.data, time_ns=fr.time_ns, ts_raw=fr.ts_raw, orig_len=fr.orig_len,
                          comments=comments, options=opts)
