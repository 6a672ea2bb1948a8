"""Tests for rawfin.wire.pcapio: pcap/pcapng reading, damage reporting, writers."""

from __future__ import annotations

import shutil
import struct
import subprocess
from pathlib import Path

import pytest

import shared_corpus
from rawfin.core.errors import CaptureError
from rawfin.wire.pcapio import (
    CaptureReader, Interface, PcapngWriter, PcapWriter, RawFrame, iter_frames, open_capture,
)

T0 = 1_700_000_000_123_456_789  # a timestamp with nanoseconds


# --------------------------------------------------------------------------- builders


def pcap_bytes(records, *, endian="<", nano=False, linktype=1, snaplen=65535, modified=False) -> bytes:
    """records: iterable of (sec, frac, data) or (sec, frac, data, orig_len)."""
    magic = 0xA1B2CD34 if modified else (0xA1B23C4D if nano else 0xA1B2C3D4)
    out = [struct.pack(endian + "IHHiIII", magic, 2, 4, 0, 0, snaplen, linktype)]
    for rec in records:
        sec, frac, data = rec[:3]
        orig = rec[3] if len(rec) > 3 else len(data)
        out.append(struct.pack(endian + "IIII", sec, frac, len(data), orig))
        if modified:
            out.append(struct.pack(endian + "IHBB", 1, 0x0800, 0, 0))
        out.append(data)
    return b"".join(out)


def opt(e: str, code: int, value: bytes) -> bytes:
    return struct.pack(e + "HH", code, len(value)) + value + b"\0" * (-len(value) % 4)


def block(e: str, btype: int, body: bytes) -> bytes:
    body += b"\0" * (-len(body) % 4)
    n = 12 + len(body)
    return struct.pack(e + "II", btype, n) + body + struct.pack(e + "I", n)


def shb(e: str) -> bytes:
    return block(e, 0x0A0D0D0A, struct.pack(e + "IHHq", 0x1A2B3C4D, 1, 0, -1))


def idb(e: str, linktype: int, snaplen: int = 0, opts: bytes = b"") -> bytes:
    if opts:
        opts += b"\0\0\0\0"
    return block(e, 1, struct.pack(e + "HHI", linktype, 0, snaplen) + opts)


def epb(e: str, iface: int, ts: int, data: bytes, orig: int | None = None, opts: bytes = b"") -> bytes:
    if opts:
        opts += b"\0\0\0\0"
    pad = b"\0" * (-len(data) % 4)
    return block(e, 6, struct.pack(e + "IIIII", iface, ts >> 32, ts & 0xFFFFFFFF, len(data),
                                   len(data) if orig is None else orig) + data + pad + opts)


def spb(e: str, data: bytes) -> bytes:
    return block(e, 3, struct.pack(e + "I", len(data)) + data)


def pb(e: str, iface: int, ts: int, data: bytes, opts: bytes = b"") -> bytes:
    if opts:
        opts += b"\0\0\0\0"
    pad = b"\0" * (-len(data) % 4)
    return block(e, 2, struct.pack(e + "HHIIII", iface, 0, ts >> 32, ts & 0xFFFFFFFF, len(data), len(data))
                 + data + pad + opts)


def write(tmp_path: Path, name: str, content: bytes) -> Path:
    p = tmp_path / name
    p.write_bytes(content)
    return p


def read_all(path) -> list[RawFrame]:
    return list(iter_frames(path))


def read_until_error(path) -> tuple[list[RawFrame], CaptureError]:
    got = []
    with pytest.raises(CaptureError) as ei:
        for fr in iter_frames(path):
            got.append(fr)
    return got, ei.value


PKTS = [bytes([i]) * (20 + i) for i in range(1, 6)]


# --------------------------------------------------------------------------- pcap


@pytest.mark.parametrize("endian", ["<", ">"])
@pytest.mark.parametrize("nano", [False, True])
def test_pcap_byte_orders_and_resolutions(tmp_path, endian, nano):
    recs = [(1_700_000_000 + i, (999_999_999 if nano else 999_999) - i, d, len(d) + 100)
            for i, d in enumerate(PKTS)]
    p = write(tmp_path, "a.pcap", pcap_bytes(recs, endian=endian, nano=nano, linktype=113))
    with open_capture(p) as cap:
        assert cap.format == "pcap"
        assert cap.byte_order == ("little" if endian == "<" else "big")
        assert cap.nanosecond is nano
        assert cap.linktypes == (113,) and cap.linktype == 113
        assert cap.snaplen == 65535
        assert cap.size == p.stat().st_size
        frames = list(cap)
        assert cap.tell() == cap.size
    assert [f.frame for f in frames] == [1, 2, 3, 4, 5]
    for i, f in enumerate(frames):
        frac = recs[i][1] if nano else recs[i][1] * 1000
        assert f.time_ns == recs[i][0] * 10**9 + frac
        assert f.data == PKTS[i] and f.orig_len == len(PKTS[i]) + 100
        assert f.linktype == 113 and f.iface == 0 and f.comments == () and f.flags is None


def test_pcap_modified_magic(tmp_path):
    p = write(tmp_path, "m.pcap", pcap_bytes([(5, 6, d) for d in PKTS], modified=True))
    frames = read_all(p)
    assert [f.data for f in frames] == PKTS
    assert frames[0].time_ns == 5 * 10**9 + 6000


def test_pcap_header_only_is_empty_not_an_error(tmp_path):
    p = write(tmp_path, "h.pcap", pcap_bytes([]))
    assert read_all(p) == []


def test_pcap_linktype_fcs_bits_masked(tmp_path):
    p = write(tmp_path, "f.pcap", pcap_bytes([(1, 2, b"x" * 20)], linktype=1 | (0x1 << 26) | (4 << 28)))
    assert read_all(p)[0].linktype == 1


def test_pcap_big_file_crosses_read_buffers(tmp_path):
    data = [bytes([i % 256]) * (1000 + i % 700) for i in range(3000)]  # ~4 MB: several 1 MiB chunks
    p = write(tmp_path, "big.pcap", pcap_bytes([(i, 0, d) for i, d in enumerate(data)]))
    frames = read_all(p)
    assert [f.data for f in frames] == data
    assert frames[-1].frame == 3000


def test_pcap_truncated_inside_data(tmp_path):
    raw = pcap_bytes([(1, 0, d) for d in PKTS])
    p = write(tmp_path, "t.pcap", raw[:-3])
    got, err = read_until_error(p)
    assert [f.data for f in got] == PKTS[:4]
    assert err.frame == 5 and "cut short" in err.message and "truncated" in err.message
    assert "\n" not in str(err) and str(p) in str(err)


def test_pcap_truncated_inside_record_header(tmp_path):
    raw = pcap_bytes([(1, 0, d) for d in PKTS])
    p = write(tmp_path, "t.pcap", raw + b"\1\2\3\4\5")
    got, err = read_until_error(p)
    assert len(got) == 5
    assert err.frame == 6 and err.message.startswith("record header cut short")


def test_pcap_corrupt_record_length(tmp_path):
    raw = bytearray(pcap_bytes([(1, 0, d) for d in PKTS]))
    # third record's caplen -> 0xFFFF0000
    off = 24 + sum(16 + len(d) for d in PKTS[:2])
    struct.pack_into("<I", raw, off + 8, 0xFFFF0000)
    p = write(tmp_path, "c.pcap", bytes(raw))
    got, err = read_until_error(p)
    assert [f.data for f in got] == PKTS[:2]
    assert err.frame == 3
    assert err.message == "packet record claims 4294901760 captured bytes (corrupt record)"


def test_pcap_large_snaplen_allows_large_records(tmp_path):
    big = b"z" * 300_000
    p = write(tmp_path, "j.pcap", pcap_bytes([(1, 0, big)], snaplen=1 << 20))
    assert read_all(p)[0].data == big
    p2 = write(tmp_path, "k.pcap", pcap_bytes([(1, 0, big)], snaplen=65535))
    _, err = read_until_error(p2)
    assert "corrupt record" in err.message


# --------------------------------------------------------------------------- not captures


@pytest.mark.parametrize("content, words", [
    (b"", "empty file"),
    (b"GET / HTTP/1.1\r\nHost: example\r\n\r\n", "text"),
    (b"snoop\0\0\0\0\0\0\2\0\0\0\4" + b"\0" * 40, "snoop"),
    (b"\x1f\x8b\x08\0" + b"\0" * 40, "gzip"),
    (b"\xde\xad\xbe\xef" * 10, "unknown magic"),
    (b"\xd4\xc3\xb2\xa1\2\0\4\0", "cut short"),
])
def test_not_a_capture(tmp_path, content, words):
    p = write(tmp_path, "x.cap", content)
    with pytest.raises(CaptureError) as ei:
        open_capture(p)
    err = ei.value
    assert err.frame is None
    assert err.message.startswith("not a pcap or pcapng file (")
    assert words in err.message
    with pytest.raises(CaptureError):
        read_all(p)


def test_missing_file_is_oserror(tmp_path):
    with pytest.raises(FileNotFoundError):
        open_capture(tmp_path / "nope.pcap")


# --------------------------------------------------------------------------- pcapng


def two_section_pcapng() -> bytes:
    """Section 1 big-endian (Ethernet µs + raw IP ns), section 2 little-endian (SLL with
    2^-20 resolution and an offset, NULL default), with unknown blocks between."""
    be, le = ">", "<"
    s1 = (shb(be)
          + idb(be, 1, 65535, opt(be, 2, b"eth0"))
          + idb(be, 101, 0, opt(be, 9, b"\x09") + opt(be, 8, struct.pack(">Q", 10**9)))
          + block(be, 4, b"\0\0\0\0")                                          # NRB (empty)
          + epb(be, 0, 1_700_000_000_000_001, PKTS[0],
                opts=opt(be, 1, "first ✓".encode()) + opt(be, 2, struct.pack(">I", 0x1)) + opt(be, 1, b"second"))
          + epb(be, 1, T0, PKTS[1], orig=999)
          + block(be, 0x40000BAD, struct.pack(">I", 32473) + b"abcd")        # custom block: counted
          + block(be, 5, struct.pack(">III", 1, 0, 0)))                       # ISB: skipped
    s2 = (shb(le)
          + idb(le, 113, 0, opt(le, 9, b"\x94") + opt(le, 14, struct.pack("<q", 100)))
          + epb(le, 0, 3 << 20 | (1 << 19), PKTS[2])                           # 3.5 s + 100 s offset
          + idb(le, 0, 40)
          + pb(le, 1, 1_700_000_000_000_002, PKTS[3], opts=opt(le, 1, b"old block"))
          + spb(le, PKTS[4] + b"\0" * 30))                                      # SPB: caplen from iface 0 snaplen 0
    return s1 + s2


def test_pcapng_two_sections_two_interfaces(tmp_path):
    p = write(tmp_path, "two.pcapng", two_section_pcapng())
    with open_capture(p) as cap:
        assert cap.format == "pcapng" and cap.byte_order == "big"
        assert cap.linktypes == (1, 101)     # known before reading a packet
        assert cap.linktype is None
        assert cap.nanosecond is True
        frames = list(cap)
        ifs = cap.interfaces
    assert [f.frame for f in frames] == [1, 2, 4, 5, 6]    # the custom block is frame 3 in Wireshark
    assert [f.linktype for f in frames] == [1, 101, 113, 0, 113]
    assert [f.iface for f in frames] == [0, 1, 2, 3, 2]
    assert [i.local_index for i in ifs] == [0, 1, 0, 1] and [i.section for i in ifs] == [0, 0, 1, 1]
    assert ifs[0].name == "eth0" and ifs[0].big_endian and not ifs[2].big_endian
    f1, f2, f3, f4, f5 = frames
    assert f1.time_ns == 1_700_000_000_000_001_000 and f1.ts_raw == 1_700_000_000_000_001
    assert f1.comments == ("first ✓", "second") and f1.flags == 1
    assert f2.time_ns == T0 and f2.orig_len == 999 and f2.comments == ()
    assert f3.time_ns == 103_500_000_000 and ifs[2].tsresol == 0x94 and ifs[2].tsoffset == 100
    assert f4.comments == ("old block",) and f4.time_ns == 1_700_000_000_000_002_000
    assert f5.data == PKTS[4] + b"\0" * 30 and f5.time_ns == 0 and f5.ts_raw is None
    assert [f.data for f in frames[:4]] == PKTS[:4]


def test_pcapng_spb_caplen_limited_by_snaplen(tmp_path):
    le = "<"
    p = write(tmp_path, "s.pcapng", shb(le) + idb(le, 1, 16) + spb(le, b"A" * 40))
    (f,) = read_all(p)
    assert f.data == b"A" * 16 and f.orig_len == 40


@pytest.mark.parametrize("cut", [1, 5, 13, 40])
def test_pcapng_truncated(tmp_path, cut):
    raw = two_section_pcapng()
    p = write(tmp_path, "t.pcapng", raw[:-cut])  # cuts into the SPB (frame 6)
    got, err = read_until_error(p)
    assert [f.frame for f in got] == [1, 2, 4, 5]
    assert err.frame == 6 and "cut short" in err.message


def test_pcapng_bad_trailer(tmp_path):
    le = "<"
    bad = bytearray(epb(le, 0, 5, PKTS[1]))
    bad[-4:] = struct.pack("<I", len(bad) + 4)
    p = write(tmp_path, "b.pcapng", shb(le) + idb(le, 1) + epb(le, 0, 5, PKTS[0]) + bytes(bad))
    got, err = read_until_error(p)
    assert len(got) == 1 and err.frame == 2 and "trailer" in err.message


def test_pcapng_block_length_not_multiple_of_4(tmp_path):
    le = "<"
    bad = bytearray(epb(le, 0, 5, PKTS[1]))
    struct.pack_into("<I", bad, 4, len(bad) - 2)
    p = write(tmp_path, "b.pcapng", shb(le) + idb(le, 1) + epb(le, 0, 5, PKTS[0]) + bytes(bad))
    got, err = read_until_error(p)
    assert len(got) == 1 and err.frame == 2 and "multiple of 4" in err.message


def test_pcapng_bad_interface_id_and_huge_caplen(tmp_path):
    le = "<"
    p = write(tmp_path, "b.pcapng", shb(le) + idb(le, 1) + epb(le, 0, 5, PKTS[0]) + epb(le, 3, 5, PKTS[1]))
    got, err = read_until_error(p)
    assert len(got) == 1 and err.frame == 2 and "interface 3" in err.message
    bad = bytearray(epb(le, 0, 5, PKTS[1]))
    struct.pack_into("<I", bad, 20, 0xFFFFFF00)
    p = write(tmp_path, "c.pcapng", shb(le) + idb(le, 1) + bytes(bad))
    got, err = read_until_error(p)
    assert got == [] and err.frame == 1 and "corrupt record" in err.message


def test_pcapng_bad_byte_order_magic(tmp_path):
    raw = bytearray(shb("<"))
    raw[8:12] = b"\0\0\0\0"
    with pytest.raises(CaptureError) as ei:
        open_capture(write(tmp_path, "m.pcapng", bytes(raw)))
    assert "byte-order" in ei.value.message


# --------------------------------------------------------------------------- writers


def test_pcap_writer_roundtrip(tmp_path):
    p = tmp_path / "w.pcap"
    with PcapWriter(p, linktype=101, nanosecond=True) as w:
        for i, d in enumerate(PKTS):
            w.write(d, T0 + i, orig_len=len(d) + 1 if i == 0 else None)
    frames = read_all(p)
    assert [f.data for f in frames] == PKTS
    assert [f.time_ns for f in frames] == [T0 + i for i in range(5)]
    assert frames[0].orig_len == len(PKTS[0]) + 1
    with open_capture(p) as cap:
        assert cap.nanosecond and cap.linktypes == (101,)
    p2 = tmp_path / "us.pcap"
    with PcapWriter(p2, linktype=1) as w:
        w.write(PKTS[0], T0)
    assert read_all(p2)[0].time_ns == T0 // 1000 * 1000


def test_writers_are_atomic(tmp_path):
    p = tmp_path / "out.pcapng"
    with pytest.raises(RuntimeError):
        with PcapngWriter(p) as w:
            w.write_packet(w.add_interface(1), b"x" * 20, time_ns=T0)
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []
    w = PcapWriter(tmp_path / "o.pcap")
    w.write(b"y" * 20, T0)
    assert not (tmp_path / "o.pcap").exists()  # nothing under the real name until close
    w.close()
    assert (tmp_path / "o.pcap").exists() and len(list(tmp_path.iterdir())) == 1
    w2 = PcapWriter(tmp_path / "o.pcap")
    w2.abort()
    assert read_all(tmp_path / "o.pcap")[0].data == b"y" * 20  # untouched by the aborted writer


def test_pcapng_writer_own_interfaces(tmp_path):
    p = tmp_path / "own.pcapng"
    with PcapngWriter(p, comment="made by a test") as w:
        a = w.add_interface(1, tsresol=9, name="eth0")
        b = w.add_interface(101, tsresol=6)
        w.write_packet(a, PKTS[0], time_ns=T0, comments=["one", "two ✓"], flags=2)
        w.write_packet(b, PKTS[1], time_ns=T0)
    f1, f2 = read_all(p)
    assert f1.time_ns == T0 and f1.comments == ("one", "two ✓") and f1.flags == 2 and f1.linktype == 1
    assert f2.time_ns == T0 // 1000 * 1000 and f2.linktype == 101 and f2.iface == 1


def copy_with_comments(src, dst, notes=lambda fr: ()) -> None:
    """What `rawfin annotate` does: stream every packet across, adding comments."""
    with open_capture(src) as cap, PcapngWriter(dst) as w:
        for fr in cap:
            w.write_frame(fr, cap.interfaces[fr.iface], comments=notes(fr))


def test_pcapng_writer_copies_pcapng_exactly(tmp_path):
    src = write(tmp_path, "two.pcapng", two_section_pcapng())
    dst = tmp_path / "copy.pcapng"
    copy_with_comments(src, dst, lambda fr: (f"rawfin: frame {fr.frame}",))
    before, after = read_all(src), read_all(dst)
    assert len(before) == len(after)
    for a, b in zip(before, after):
        assert (b.data, b.orig_len, b.linktype, b.flags) == (a.data, a.orig_len, a.linktype, a.flags)
        if a.ts_raw is not None:  # an SPB has no time; its copy (an EPB) gets the interface's offset
            assert b.time_ns == a.time_ns
        assert b.comments == a.comments + (f"rawfin: frame {a.frame}",)
    with open_capture(dst) as cap:
        list(cap)
        assert [i.linktype for i in cap.interfaces] == [1, 101, 113, 0]
        assert cap.interfaces[0].name == "eth0" and not cap.interfaces[0].big_endian
        assert cap.interfaces[2].tsresol == 0x94 and cap.interfaces[2].tsoffset == 100
        assert cap.interfaces[1].options.find(struct.pack("<Q", 10**9)) >= 0  # if_speed swapped to LE


@pytest.mark.parametrize("nano", [False, True])
def test_pcapng_writer_copies_pcap(tmp_path, nano):
    src = write(tmp_path, "a.pcap", pcap_bytes([(1_700_000_000, 123_456_789 if nano else 123_456, d)
                                                for d in PKTS], nano=nano))
    dst = tmp_path / "a.pcapng"
    copy_with_comments(src, dst, lambda fr: ("x",) if fr.frame == 2 else ())
    before, after = read_all(src), read_all(dst)
    assert [(f.data, f.time_ns, f.orig_len) for f in before] == [(f.data, f.time_ns, f.orig_len) for f in after]
    assert [f.comments for f in after] == [(), ("x",), (), (), ()]


def have_tshark() -> bool:
    return shutil.which("tshark") is not None


@pytest.mark.skipif(not have_tshark(), reason="tshark is not installed")
def test_tshark_reads_what_we_write(tmp_path):
    from scapy.layers.inet import IP, TCP
    from scapy.layers.l2 import Ether

    pkts = [bytes(Ether() / IP(src="192.0.2.1", dst="192.0.2.2") / TCP(sport=1000 + i, dport=80, flags="FA"))
            for i in range(3)]
    ng = tmp_path / "c.pcapng"
    with PcapngWriter(ng) as w:
        i = w.add_interface(1, tsresol=9)
        for k, d in enumerate(pkts):
            w.write_packet(i, d, time_ns=T0 + k, comments=[f"note {k}", "ünïcode"] if k != 1 else [])
    out = subprocess.run(["tshark", "-r", str(ng), "-T", "fields", "-E", "occurrence=a", "-E", "aggregator=|",
                          "-e", "frame.number", "-e", "frame.comment", "-e", "tcp.srcport",
                          "-e", "frame.time_epoch"],
                         capture_output=True, text=True, check=True)
    rows = [line.split("\t") for line in out.stdout.splitlines()]
    assert [r[0] for r in rows] == ["1", "2", "3"]
    assert rows[0][1] == "note 0|ünïcode" and rows[1][1] == "" and rows[2][1] == "note 2|ünïcode"
    assert [r[2] for r in rows] == ["1000", "1001", "1002"]
    assert rows[0][3] == "1700000000.123456789"

    pc = tmp_path / "c.pcap"
    with PcapWriter(pc, linktype=1, nanosecond=True) as w:
        for k, d in enumerate(pkts):
            w.write(d, T0 + k)
    out = subprocess.run(["tshark", "-r", str(pc), "-T", "fields", "-e", "frame.number", "-e", "tcp.flags.fin",
                          "-e", "frame.time_epoch"], capture_output=True, text=True, check=True)
    rows = [line.split("\t") for line in out.stdout.splitlines()]
    assert [r[0] for r in rows] == ["1", "2", "3"] and rows[2][2] == "1700000000.123456791"
    assert all(r[1] in ("1", "True") for r in rows)


# --------------------------------------------------------------------------- corpus

corpus_files = shared_corpus.FILES
needs_corpus = shared_corpus.needs_corpus


@needs_corpus
@pytest.mark.parametrize("path", corpus_files, ids=lambda p: p.name)
def test_corpus_copy_to_pcapng_keeps_every_packet(tmp_path, path):
    frames, err = [], None
    try:
        for fr in iter_frames(path):
            frames.append(fr)
    except CaptureError as e:
        err = e
    dst = tmp_path / "copy.pcapng"
    with open_capture(path) as cap, PcapngWriter(dst) as w:
        try:
            for fr in cap:
                w.write_frame(fr, cap.interfaces[fr.iface], comments=("c",))
        except CaptureError as e:
            assert err is not None and str(e) == str(err)
    again = read_all(dst)
    assert [(f.data, f.orig_len, f.linktype, f.time_ns) for f in again] == \
           [(f.data, f.orig_len, f.linktype, f.time_ns) for f in frames]
    assert all(f.comments[-1] == "c" for f in again)


@needs_corpus
def test_corpus_damaged_files_report_frame():
    cap = shared_corpus.CAPTURES
    got = []
    with pytest.raises(CaptureError) as ei:
        for fr in iter_frames(cap / "suricata-verify__10.7.29.101_49898-178.63.41.150_25.pcap"):
            got.append(fr)
    assert len(got) == 18 and ei.value.frame == 19 and "corrupt record" in ei.value.message
    assert read_all(cap / "zeek__empty.pcap") == []


def test_reader_iterates_once(tmp_path):
    p = write(tmp_path, "a.pcap", pcap_bytes([(1, 0, PKTS[0])]))
    with open_capture(p) as cap:
        list(cap)
        with pytest.raises(RuntimeError):
            iter(cap)
    assert isinstance(cap, CaptureReader)
    assert Interface(0, 1, 0, 0x8A).units_per_second == 1024
