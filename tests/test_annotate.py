"""`rawfin annotate`: every packet copied unchanged, rawfin's findings as packet comments.

Three layers of checks:

* the comment text and where it goes (pure functions, hand-written records);
* annotated copies of captures made here (nanosecond pcap, microsecond pcap, a
  pcapng with two interfaces of different link types and an existing comment, a close
  with anomalies, damaged input) read back with rawfin's own reader;
* the same files, and the shared corpus, read by the real tshark: packet bytes,
  timestamps, lengths, protocols and interfaces of IN and OUT agree, and the comments
  sit on the frames analysis.records reported.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import shared_corpus
from rawfin.wire import codec
from rawfin.sim import craft
from rawfin.capture.analysis import records
from rawfin.commands.annotate import annotate_capture as annotate
from rawfin.render.annotate import (PREFIX, anomaly_comment, default_output, fin_ack_verdict, notes_from_records,
                                    transition_comment)
from rawfin.cli import main
from rawfin.core.errors import CaptureError
from rawfin.wire.pcapio import (LINKTYPE_ETHERNET, LINKTYPE_RAW, PcapngWriter, PcapWriter, iter_frames,
                           open_capture)
from rawfin.core.segment import Flags
from rawfin.render.annotate import note_record as record

TSHARK = shutil.which("tshark")
needs_tshark = pytest.mark.skipif(TSHARK is None, reason="tshark is not installed (apt-get install tshark)")

C, S = craft.CLIENT, craft.SERVER
# An odd start so every digit of the nanoseconds matters.
NS_START = 1_700_000_000_123_456_789
NS_GAP = 1_000_001


# --------------------------------------------------------------------------- capture makers


def write_pcap(path: Path, segs, *, nanosecond: bool = False) -> Path:
    with PcapWriter(path, LINKTYPE_RAW, nanosecond=nanosecond) as w:
        for s in segs:
            w.write(codec.to_bytes(s), s.time_ns)
    return path


ETH_HDR = bytes.fromhex("020000000001" "020000000002" "0800")


def write_two_interfaces(path: Path, segs, comments: dict[int, list[str]]) -> Path:
    """pcapng: client->server on a raw-IP interface (ns), server->client on Ethernet (µs).

    ``comments`` maps a 1-based frame number to comments already in the file.
    """
    with PcapngWriter(path) as w:
        tun = w.add_interface(LINKTYPE_RAW, tsresol=9, name="tun0")
        eth = w.add_interface(LINKTYPE_ETHERNET, tsresol=6, name="eth0")
        for i, s in enumerate(segs, 1):
            data = codec.to_bytes(s)
            if (s.src, s.sport) == C:
                w.write_packet(tun, data, time_ns=s.time_ns, comments=comments.get(i, ()))
            else:
                w.write_packet(eth, ETH_HDR + data, time_ns=s.time_ns, comments=comments.get(i, ()))
    return path


def bad_close():
    """The close goes wrong: the FIN is sent twice and the peer ACKs x, not x+1; the capture ends."""
    segs = craft.handshake(C, S, 999, 1999) + [
        craft.segment(C, S, seq=1000, ack=2000, flags=Flags.FIN | Flags.ACK),
        craft.segment(C, S, seq=1000, ack=2000, flags=Flags.FIN | Flags.ACK),
        craft.segment(S, C, seq=2000, ack=1000, flags=Flags.ACK),
    ]
    return craft.timed(segs)


def two_connections():
    """Two connections 5 s apart: with MSL 0.5 s the first one's TIME_WAIT ends between them."""
    a = craft.connection(C, S, close="4way")
    b = craft.connection(C, ("192.0.2.1", 81), close="4way", start_ns=craft.DEFAULT_START_NS + 5 * 10**9)
    return a + b


def frames(path) -> list:
    return list(iter_frames(path))


def expected_comment_frames(path, msl_s: float = 30.0) -> set[int]:
    """The frames analysis.records reports about (frameless records: the connection's last frame)."""
    out: set[int] = set()
    frameless: set[int] = set()
    try:
        for r in records(str(path), msl_s=msl_s, record=record):
            if r["type"] == "connection":
                out.add(r["first_frame"])          # the connection comment
                if r["conn"] in frameless:
                    out.add(r["last_frame"])
            elif r["frame"] is not None:
                out.add(r["frame"])
            elif r["conn"] is not None:
                frameless.add(r["conn"])
    except CaptureError:
        pass
    return out


def shb_comment(path) -> str:
    """The section header's opt_comment (little-endian pcapng as rawfin writes it)."""
    raw = Path(path).read_bytes()
    blen = struct.unpack_from("<I", raw, 4)[0]
    pos, end = 24, blen - 4
    while pos + 4 <= end:
        code, n = struct.unpack_from("<HH", raw, pos)
        if code == 1:
            return raw[pos + 4:pos + 4 + n].decode()
        if code == 0:
            break
        pos += 4 + ((n + 3) & ~3)
    return ""


def assert_same_packets(src, out, count: int | None = None) -> None:
    """Bytes, original length, time (ns), link type and interface of every packet are kept."""
    a, b = frames_or_none(src), frames(out)
    if count is not None:
        a = a[:count]
    assert len(a) == len(b)
    with open_capture(src) as cs:
        for _ in zip(range(len(a)), cs):      # read no further than the good part
            pass
        in_ifaces = cs.interfaces
    with open_capture(out) as co:
        list(co)
        out_ifaces = co.interfaces
    for x, y in zip(a, b):
        assert y.data == x.data, f"frame {x.frame}: bytes differ"
        assert (y.orig_len, y.linktype, y.iface) == (x.orig_len, x.linktype, x.iface), x.frame
        if x.ts_raw is not None or cs.format == "pcap":
            assert y.time_ns == x.time_ns, f"frame {x.frame}: time {y.time_ns} != {x.time_ns}"
        ii, oi = in_ifaces[x.iface], out_ifaces[y.iface]
        assert (oi.linktype, oi.name, oi.units_per_second, oi.tsoffset) == \
            (ii.linktype, ii.name, ii.units_per_second, ii.tsoffset)
        # the comments it had come first, rawfin's after them
        assert y.comments[:len(x.comments)] == x.comments


def own(comments) -> list[str]:
    return [c for c in comments if c.startswith(PREFIX)]


# --------------------------------------------------------------------------- comment text


def test_transition_comment_reads_like_the_ladder():
    rec = {"type": "transition", "conn": 0, "frame": 7, "endpoint": "192.0.2.1:80", "peer": "192.0.2.2:50001",
           "from": "ESTABLISHED", "to": "CLOSE_WAIT", "cause": "rcv FIN seq=1006"}
    assert transition_comment(rec) == "rawfin: 192.0.2.1:80 ESTABLISHED → CLOSE_WAIT (rcv FIN seq=1006)"


@pytest.mark.parametrize("ack, fin, text", [
    (1007, 1006, "rawfin: ack 1007 = FIN seq 1006 + 1: covers the FIN"),
    (0, 2**32 - 1, "rawfin: ack 0 = FIN seq 4294967295 + 1 (mod 2**32): covers the FIN"),
    (1006, 1006, "rawfin: ack 1006 ≠ FIN seq 1006 + 1 = 1007: does not cover the FIN (expected ack 1007)"),
    (2**32 - 1, 2**32 - 1, "rawfin: ack 4294967295 ≠ FIN seq 4294967295 + 1 = 0 (mod 2**32): "
                           "does not cover the FIN (expected ack 0)"),
    (1010, 1006, "rawfin: ack 1010 > FIN seq 1006 + 1 = 1007: covers the FIN"),
    (5, 2**32 - 1, "rawfin: ack 5 > FIN seq 4294967295 + 1 = 0 (mod 2**32): covers the FIN"),
])
def test_fin_ack_verdict_states_the_arithmetic(ack, fin, text):
    assert fin_ack_verdict(ack, fin) == text


@settings(max_examples=300, deadline=None)
@given(fin=st.integers(0, 2**32 - 1), off=st.integers(-2**31 + 1, 2**31 - 1))
def test_fin_ack_verdict_across_the_wrap(fin, off):
    want = (fin + 1) % 2**32
    ack = (want + off) % 2**32
    text = fin_ack_verdict(ack, fin)
    assert text.startswith(f"rawfin: ack {ack} ")
    assert f"FIN seq {fin} + 1" in text
    if off == 0:
        assert text.endswith(": covers the FIN") and f"ack {ack} = FIN seq" in text
    elif off > 0:
        assert text.endswith(": covers the FIN") and f"= {want}" in text
    else:
        assert text.endswith(f"does not cover the FIN (expected ack {want})")


PCAP_HDR = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, LINKTYPE_RAW)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=st.binary(max_size=400), cut=st.integers(0, 60))
def test_any_bytes_annotate_or_capture_error(tmp_path, body, cut):
    """h11's fuzz rule: a good capture with junk appended or cut anywhere either annotates or raises
    CaptureError; never another exception, never a temporary file left behind."""
    d = tmp_path / f"f{len(os.listdir(tmp_path))}"
    d.mkdir()
    good = (PCAP_HDR if cut % 2 else b"") + b"".join(
        struct.pack("<IIII", 1_700_000_000, i, len(b), len(b)) + b
        for i, b in enumerate(codec.to_bytes(s) for s in craft.close_4way(C, S)))
    src = d / "in.pcap"
    src.write_bytes((good + body)[:max(0, len(good) + len(body) - cut)])
    try:
        res = annotate(str(src), str(d / "out.pcapng"))
    except CaptureError:
        assert sorted(os.listdir(d)) == ["in.pcap"]
        return
    assert sorted(os.listdir(d)) == ["in.pcap", "out.pcapng"]
    assert res.frames == len(frames(d / "out.pcapng"))


def test_anomaly_comment():
    rec = {"type": "anomaly", "conn": 0, "frame": 9, "endpoint": "192.0.2.1:80", "kind": "fin_retransmission",
           "detail": "FIN seq=1006 sent again"}
    assert anomaly_comment(rec) == "rawfin: anomaly fin_retransmission at 192.0.2.1:80: FIN seq=1006 sent again"
    malformed = {"type": "anomaly", "conn": None, "frame": 3, "endpoint": "-", "kind": "malformed_packet",
                 "detail": "TCP header cut short"}
    assert anomaly_comment(malformed) == "rawfin: anomaly malformed_packet: TCP header cut short"


def test_notes_from_records_places_every_record():
    t = {"type": "transition", "conn": 0, "endpoint": "A", "peer": "B"}
    recs = [
        {**t, "frame": 4, "time": 1.0, "from": "FIN_WAIT_1", "to": "FIN_WAIT_2",
         "cause": "rcv ACK ack=1007 of FIN seq=1006", "values": {"ack": 1007, "fin_seq": 1006}},
        {"type": "anomaly", "conn": 0, "frame": 4, "time": 1.0, "endpoint": "A", "kind": "ack_not_covering_fin",
         "detail": "ack 1006 does not cover FIN seq=1006: expected 1007 (FIN seq + 1)",
         "values": {"ack": 1006, "first_fin": 1006, "first_fin+1": 1007}},
        {**t, "frame": None, "time": 61.0, "from": "TIME_WAIT", "to": "CLOSED", "cause": "2MSL expired"},
        {"type": "anomaly", "conn": 0, "frame": None, "time": 61.0, "endpoint": "B", "kind": "final_ack_missing",
         "detail": "never ACKed"},
        {"type": "anomaly", "conn": None, "frame": None, "time": 0.0, "endpoint": "-", "kind": "malformed_packet",
         "detail": "nowhere to go"},
        {"type": "connection", "conn": 0, "last_frame": 6, "last_time": 1.5},
        {**t, "conn": 1, "frame": 8, "time": 2.0, "from": "CLOSED", "to": "SYN_SENT", "cause": "snd SYN seq=1"},
    ]
    notes = notes_from_records(recs)
    assert sorted(notes) == [4, 6, 8]
    assert notes[4] == [
        "rawfin: A FIN_WAIT_1 → FIN_WAIT_2 (rcv ACK ack=1007 of FIN seq=1006)",
        "rawfin: ack 1007 = FIN seq 1006 + 1: covers the FIN",
        "rawfin: anomaly ack_not_covering_fin at A: ack 1006 does not cover FIN seq=1006: expected 1007 (FIN seq + 1)",
        "rawfin: ack 1006 ≠ FIN seq 1006 + 1 = 1007: does not cover the FIN (expected ack 1007)",
    ]
    assert notes[6][0].startswith("rawfin: A TIME_WAIT → CLOSED (2MSL expired) [caused by time 59.500 s after")
    assert notes[6][1].startswith("rawfin: anomaly final_ack_missing at B: never ACKed [seen at the end")
    # the numbers come from the record's values (what the text was made of), never from the text
    words = notes_from_records([{**t, "frame": 1, "time": 0.0, "from": "LAST_ACK", "to": "CLOSED",
                                 "cause": "any wording", "values": {"ack": 2007, "fin_seq": 2006}}])
    assert words[1][1] == "rawfin: ack 2007 = FIN seq 2006 + 1: covers the FIN"
    # the peer's FIN arriving in FIN_WAIT_1 is not an ACK of ours: no verdict
    sim = notes_from_records([{**t, "frame": 1, "time": 0.0, "from": "FIN_WAIT_1", "to": "CLOSING",
                               "cause": "rcv FIN seq=2006", "values": {"fin": 2006}}])
    assert len(sim[1]) == 1


def test_default_output_sits_next_to_the_input():
    assert default_output("/x/y/trace.pcap") == "/x/y/trace.rawfin.pcapng"
    assert default_output("trace.pcapng") == "trace.rawfin.pcapng"
    assert default_output("dump.2024") == "dump.2024.rawfin.pcapng"


# --------------------------------------------------------------------------- annotate, own reader


def test_nanosecond_pcap_is_copied_exactly(tmp_path):
    segs = craft.connection(C, S, close="4way", start_ns=NS_START, gap_ns=NS_GAP)
    src = write_pcap(tmp_path / "ns.pcap", segs, nanosecond=True)
    res = annotate(str(src), str(tmp_path / "out.pcapng"))
    assert res.complete and res.frames == len(segs)
    assert_same_packets(src, tmp_path / "out.pcapng")
    out = frames(tmp_path / "out.pcapng")
    assert [f.time_ns for f in out] == [NS_START + i * NS_GAP for i in range(len(segs))]
    assert {f.frame for f in out if own(f.comments)} == expected_comment_frames(src)
    by_frame = {f.frame: f.comments for f in out}
    fin_ack = [c for cs in by_frame.values() for c in cs if "covers the FIN" in c]
    assert len(fin_ack) == 2 and all(" = FIN seq " in c for c in fin_ack)


def test_microsecond_pcap_fin_across_the_wrap(tmp_path):
    segs = craft.connection(C, S, 2**32 - 100, 2**32 - 1, close="4way", closer="server")
    src = write_pcap(tmp_path / "us.pcap", segs)
    annotate(str(src), str(tmp_path / "out.pcapng"))
    assert_same_packets(src, tmp_path / "out.pcapng")
    text = [c for f in frames(tmp_path / "out.pcapng") for c in f.comments]
    assert any(c.endswith("covers the FIN") for c in text)
    assert any("ESTABLISHED → FIN_WAIT_1" in c and c.startswith("rawfin: 192.0.2.1:80") for c in text)


def test_pcapng_two_interfaces_keeps_existing_comments(tmp_path):
    segs = craft.connection(C, S, close="4way", start_ns=NS_START, gap_ns=NS_GAP)
    fin = next(i for i, s in enumerate(segs, 1) if s.fin)
    src = write_two_interfaces(tmp_path / "two.pcapng", segs, {fin: ["operator: the close starts here"], 2: ["x"]})
    annotate(str(src), str(tmp_path / "out.pcapng"))
    assert_same_packets(src, tmp_path / "out.pcapng")
    out = frames(tmp_path / "out.pcapng")
    assert {f.iface for f in out} == {0, 1}
    assert {f.linktype for f in out} == {LINKTYPE_RAW, LINKTYPE_ETHERNET}
    c = out[fin - 1].comments
    assert c[0] == "operator: the close starts here"
    assert "rawfin: 192.0.2.2:50001 ESTABLISHED → FIN_WAIT_1" in c[1]
    assert out[1].comments[0] == "x" and own(out[1].comments)
    assert {f.frame for f in out if own(f.comments)} == expected_comment_frames(src)


def test_anomalies_and_the_ack_that_misses_the_fin(tmp_path):
    src = write_pcap(tmp_path / "bad.pcap", bad_close())
    annotate(str(src), str(tmp_path / "out.pcapng"))
    out = {f.frame: f.comments for f in frames(tmp_path / "out.pcapng")}
    assert out[5] == ("rawfin: anomaly fin_retransmission at 192.0.2.2:50001: FIN seq=1000 sent again",)
    assert "rawfin: ack 1000 ≠ FIN seq 1000 + 1 = 1001: does not cover the FIN (expected ack 1001)" in out[6]
    assert any(c.startswith("rawfin: anomaly ack_not_covering_fin at 192.0.2.1:80: ack 1000") for c in out[6])


def test_time_caused_transition_goes_on_the_connections_last_frame(tmp_path):
    src = write_pcap(tmp_path / "two.pcap", two_connections())
    annotate(str(src), str(tmp_path / "out.pcapng"), msl_s=0.5)
    out = {f.frame: f.comments for f in frames(tmp_path / "out.pcapng")}
    assert out[10][-1].startswith("rawfin: 192.0.2.2:50001 TIME_WAIT → CLOSED (2MSL expired")
    assert "caused by time 0.999 s after this frame, not by a packet" in out[10][-1]
    assert expected_comment_frames(src, 0.5) == {f for f, c in out.items() if own(c)}


def test_comments_spilled_to_disk_come_back_in_frame_order(tmp_path):
    """Pass 1 keeps at most run_size comments in memory; sorted runs on disk give the same file."""
    src = write_pcap(tmp_path / "two.pcap", two_connections() + bad_close())
    small, big = tmp_path / "small.pcapng", tmp_path / "big.pcapng"
    annotate(str(src), str(small), msl_s=0.5, run_size=3)
    annotate(str(src), str(big), msl_s=0.5)
    assert small.read_bytes() == big.read_bytes()
    notes = notes_from_records(records(str(src), msl_s=0.5, record=record))
    assert {f.frame: list(own(f.comments)) for f in frames(small) if f.comments} == notes


def test_reannotating_replaces_rawfins_comments(tmp_path):
    segs = craft.connection(C, S, close="4way")
    src = write_two_interfaces(tmp_path / "two.pcapng", segs, {1: ["keep me"]})
    once, twice = tmp_path / "once.pcapng", tmp_path / "twice.pcapng"
    annotate(str(src), str(once))
    annotate(str(once), str(twice))
    assert [f.comments for f in frames(once)] == [f.comments for f in frames(twice)]
    assert frames(twice)[0].comments[0] == "keep me"


def test_pass_two_stops_where_pass_one_did(tmp_path, monkeypatch):
    """A capture still being written grows between the passes: the output ends where pass 1 did."""
    import rawfin.render.annotate as mod

    src = write_pcap(tmp_path / "c.pcap", craft.connection(C, S))
    real = mod.collect_notes

    def short(records, stats, **kw):
        p1 = real(records, stats, **kw)
        p1.frames -= 3
        return p1

    monkeypatch.setattr(mod, "collect_notes", short)
    res = annotate(str(src), str(tmp_path / "out.pcapng"))
    assert res.frames == len(frames(src)) - 3 == len(frames(tmp_path / "out.pcapng"))


# --------------------------------------------------------------------------- command line


def test_cli_default_output_and_message(tmp_path, capsys):
    src = write_pcap(tmp_path / "trace.pcap", craft.connection(C, S))
    assert main(["annotate", str(src)]) == 0
    out = tmp_path / "trace.rawfin.pcapng"
    cap = capsys.readouterr()
    assert cap.out == ""
    assert cap.err.startswith(f"rawfin annotate: wrote {out} (") and cap.err.count("\n") == 1
    assert_same_packets(src, out)
    assert sorted(os.listdir(tmp_path)) == ["trace.pcap", "trace.rawfin.pcapng"]


def test_cli_cut_short_input_writes_the_good_part_marked_incomplete(tmp_path, capsys):
    segs = craft.connection(C, S)
    src = write_pcap(tmp_path / "cut.pcap", segs)
    raw = src.read_bytes()
    src.write_bytes(raw[:-7])                     # the last record loses its tail
    out = tmp_path / "out.pcapng"
    assert main(["annotate", str(src), "-o", str(out)]) == 65
    err = capsys.readouterr().err
    n = len(segs)
    assert err.count("\n") == 1 and "Traceback" not in err
    assert f"{src}: frame {n}:" in err and f"frames 1..{n - 1} only" in err and "INCOMPLETE" in err
    got = frames(out)
    assert len(got) == n - 1
    assert_same_packets(src, out, count=n - 1)
    assert shb_comment(out).startswith(f"INCOMPLETE: cut.pcap is damaged at frame {n} ")
    assert f"holds frames 1..{n - 1} only" in shb_comment(out)
    assert got[-1].comments[-1].startswith("rawfin: INCOMPLETE: the input is damaged after this frame")
    assert sorted(os.listdir(tmp_path)) == ["cut.pcap", "out.pcapng"]     # no temporary file left


@pytest.mark.parametrize("content, what", [
    (b"", "empty file"),
    (b"hello, this is text\n", "looks like text"),
    (struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 101) + b"\x01\x02", "frame 1"),
])
def test_cli_unreadable_input_writes_nothing(tmp_path, capsys, content, what):
    src = tmp_path / "junk.pcap"
    src.write_bytes(content)
    assert main(["annotate", str(src), "-o", str(tmp_path / "out.pcapng")]) == 65
    err = capsys.readouterr().err
    assert err.startswith(f"rawfin annotate: {src}") and what in err and err.count("\n") == 1
    assert os.listdir(tmp_path) == ["junk.pcap"]


def test_help_says_what_happens_to_damaged_input(capsys):
    assert main(["annotate", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "INCOMPLETE" in text and "exit code is 65" in text and "nothing is written" in text
    assert ".rawfin.pcapng" in text and "exits 73" in text


def test_cli_missing_input(tmp_path, capsys):
    assert main(["annotate", str(tmp_path / "nope.pcap")]) == 66
    assert "no such file" in capsys.readouterr().err
    assert os.listdir(tmp_path) == []


def test_cli_refuses_to_overwrite_the_input(tmp_path, capsys):
    src = write_pcap(tmp_path / "c.pcap", craft.connection(C, S))
    before = src.read_bytes()
    assert main(["annotate", str(src), "-o", str(src)]) == 2
    assert "is the input itself" in capsys.readouterr().err
    assert src.read_bytes() == before and os.listdir(tmp_path) == ["c.pcap"]


def test_cli_output_directory_missing(tmp_path, capsys):
    src = write_pcap(tmp_path / "c.pcap", craft.connection(C, S))
    assert main(["annotate", str(src), "-o", str(tmp_path / "no" / "out.pcapng")]) == 73
    assert "cannot create" in capsys.readouterr().err


def test_cli_writes_to_stdout_with_dash(tmp_path):
    import io

    src = write_pcap(tmp_path / "c.pcap", craft.connection(C, S))
    p = subprocess.run([sys.executable, "-m", "rawfin", "annotate", str(src), "-o", "-"],
                       capture_output=True, timeout=120, cwd=Path(__file__).resolve().parent.parent)
    assert p.returncode == 0, p.stderr
    assert b"wrote stdout" in p.stderr
    with open_capture("stdout", io.BytesIO(p.stdout)) as cap:
        got = list(cap)
    assert [f.data for f in got] == [f.data for f in frames(src)]
    assert any(own(f.comments) for f in got)
    assert os.listdir(tmp_path) == ["c.pcap"]


# --------------------------------------------------------------------------- tshark


def _tshark_json_start(path) -> subprocess.Popen:
    return subprocess.Popen([TSHARK, "-n", "-r", str(path), "-T", "json", "-x", "-j", "frame pkt_comment",
                             "--no-duplicate-keys", "-o", "tcp.desegment_tcp_streams:FALSE"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _tshark_json_finish(proc: subprocess.Popen) -> dict[int, dict]:
    """frame number -> the frame's fields, its bytes (hex) and its comments, as tshark reads them."""
    stdout, stderr = proc.communicate(timeout=300)
    assert stdout.strip(), stderr
    out = {}
    for pkt in json.loads(stdout):
        layers = pkt["_source"]["layers"]
        fr = layers["frame"]
        comments = layers.get("pkt_comment", {}).get("frame.comment", [])
        out[int(fr["frame.number"])] = {**fr, "bytes": layers["frame_raw"][0],
                                        "comments": [comments] if isinstance(comments, str) else comments}
    return out


def tshark_json(path) -> dict[int, dict]:
    return _tshark_json_finish(_tshark_json_start(path))


def tshark_comments(path, display_filter: str | None = None) -> dict[int, list[str]]:
    """frame number -> comments, with ``-T fields -e frame.comment`` (and ``-Y``) as a user would."""
    args = [TSHARK, "-n", "-r", str(path)]
    if display_filter:
        args += ["-Y", display_filter]
    args += ["-T", "fields", "-e", "frame.number", "-e", "frame.comment",
             "-E", "occurrence=a", "-E", "aggregator=\x1f", "-E", "separator=\t"]
    p = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    out = {}
    for line in p.stdout.splitlines():
        num, _, text = line.partition("\t")
        out[int(num)] = text.split("\x1f") if text else []
    return out


INCOMPLETE = PREFIX + "INCOMPLETE: "
KEPT = ("frame.time_epoch", "frame.len", "frame.cap_len", "frame.protocols", "frame.encap_type", "bytes")


def tshark_both(src, out) -> tuple[dict, dict | None]:
    """tshark's reading of OUT, and of IN unless IN is damaged (tshark may read damage its own way)."""
    p_out = _tshark_json_start(out)
    p_in = None if is_damaged(src) else _tshark_json_start(src)   # both at once: half the wait
    got = _tshark_json_finish(p_out)
    return got, (None if p_in is None else _tshark_json_finish(p_in))


def check_with_tshark(src, out, *, msl_s: float = 30.0, tshark: tuple[dict, dict | None] | None = None) -> None:
    """tshark reads OUT as IN, packet for packet; rawfin's comments sit on the reported frames."""
    n = len(frames(out))
    with open_capture(src) as cap:
        in_frames = [f for _, f in zip(range(n), cap)]     # stop before any damage
        in_format = cap.format
        single_section = all(i.section == 0 for i in cap.interfaces)
    damaged = is_damaged(src)
    number = {i: f.frame for i, f in enumerate(in_frames, 1)}  # OUT frame -> IN frame (same packet)
    got, want = tshark if tshark is not None else tshark_both(src, out)

    assert sorted(got) == list(range(1, n + 1))
    for i, fr in enumerate(in_frames, 1):          # against rawfin's reading of IN
        t = got[i]
        assert t["bytes"] == fr.data.hex(), f"frame {fr.frame}: bytes differ"
        assert int(t["frame.len"]) == fr.orig_len and int(t["frame.cap_len"]) == len(fr.data)
        if fr.ts_raw is not None or in_format == "pcap":
            s, ns = divmod(fr.time_ns, 10**9)
            assert t["frame.time_epoch"] == f"{s}.{ns:09d}", f"frame {fr.frame}"

    if want is not None:                           # against tshark's own reading of IN
        for i in range(1, n + 1):
            a, b = want[number[i]], got[i]
            for k in KEPT:
                if k == "frame.time_epoch" and in_frames[i - 1].ts_raw is None and in_format == "pcapng":
                    continue                       # a Simple Packet Block has no time; OUT says 0
                assert b.get(k) == a.get(k), f"IN frame {number[i]} {k}: {a.get(k)!r} -> {b.get(k)!r}"
            if in_format == "pcapng" and single_section:
                assert b.get("frame.interface_id") == a.get("frame.interface_id"), number[i]
            assert b["comments"][:len(a["comments"])] == a["comments"], number[i]

    rawfin_frames = set()
    for i, fr in enumerate(in_frames, 1):
        cs = got[i]["comments"]
        mine = own(cs)
        assert len(cs) - len(mine) == len([c for c in fr.comments if not c.startswith(PREFIX)])
        if any(not c.startswith(INCOMPLETE) for c in mine):
            rawfin_frames.add(fr.frame)
    expected = expected_comment_frames(src, msl_s)
    if damaged:
        assert got[n]["comments"][-1].startswith(INCOMPLETE)
        expected &= set(number.values())
    assert rawfin_frames == expected


def is_damaged(path) -> bool:
    try:
        for _ in iter_frames(path):
            pass
    except CaptureError:
        return True
    return False


def frames_or_none(path) -> list:
    out = []
    try:
        for f in iter_frames(path):
            out.append(f)
    except CaptureError:
        pass
    return out


@needs_tshark
@pytest.mark.tshark
@pytest.mark.parametrize("kind", ["ns-pcap", "us-pcap", "two-interfaces", "bad-close", "two-connections",
                                  "cut-short"])
def test_tshark_reads_annotated_captures(tmp_path, kind):
    msl = 30.0
    if kind == "ns-pcap":
        src = write_pcap(tmp_path / "in.pcap", craft.connection(C, S, start_ns=NS_START, gap_ns=NS_GAP),
                         nanosecond=True)
    elif kind == "us-pcap":
        src = write_pcap(tmp_path / "in.pcap", craft.connection(C, S, close="simultaneous"))
    elif kind == "two-interfaces":
        segs = craft.connection(C, S, close="3way", closer="server", start_ns=NS_START, gap_ns=NS_GAP)
        src = write_two_interfaces(tmp_path / "in.pcapng", segs, {1: ["already here"], 7: ["a", "b"]})
    elif kind == "bad-close":
        src = write_pcap(tmp_path / "in.pcap", bad_close())
    elif kind == "two-connections":
        src, msl = write_pcap(tmp_path / "in.pcap", two_connections()), 0.5
    else:
        src = write_pcap(tmp_path / "in.pcap", craft.connection(C, S), nanosecond=True)
        src.write_bytes(src.read_bytes()[:-5])
    out = tmp_path / "out.pcapng"
    res = annotate(str(src), str(out), msl_s=msl)
    assert res.complete == (kind != "cut-short")
    check_with_tshark(src, out, msl_s=msl)
    if kind == "ns-pcap":
        times = [t["frame.time_epoch"] for t in tshark_json(out).values()]
        assert times[:2] == ["1700000000.123456789", "1700000000.124456790"]
    # what a user types: -Y frame.comment, -T fields -e frame.comment
    shown = tshark_comments(out, "frame.comment")
    assert shown == {f.frame: list(f.comments) for f in frames(out) if f.comments}
    assert set(tshark_comments(out, 'frame.comment contains "rawfin: "')) == \
        {f.frame for f in frames(out) if own(f.comments)}
    if kind == "bad-close":
        assert "rawfin: ack 1000 ≠ FIN seq 1000 + 1 = 1001: does not cover the FIN (expected ack 1001)" in shown[6]


# --------------------------------------------------------------------------- corpus


CORPUS = shared_corpus.CAPTURES
CORPUS_FILES = [p.name for p in shared_corpus.FILES]


@pytest.fixture(scope="module")
def corpus_runs(tmp_path_factory):
    """Annotate every corpus capture, then run the tsharks for all of them in parallel (each
    tshark spends most of its second starting up)."""
    from concurrent.futures import ThreadPoolExecutor

    base = tmp_path_factory.mktemp("corpus")
    runs: dict[str, dict] = {}
    for name in CORPUS_FILES:
        d = base / name
        d.mkdir()
        run = runs[name] = {"dir": d, "out": d / "out.pcapng", "res": None, "error": None, "tshark": None}
        try:
            run["res"] = annotate(str(CORPUS / name), str(run["out"]))
        except Exception as e:          # the test for this file reports it
            run["error"] = e
    if TSHARK is not None:
        todo = [n for n, r in runs.items() if r["res"] is not None]
        with ThreadPoolExecutor(max_workers=8) as ex:
            done = ex.map(lambda n: _safe(tshark_both, CORPUS / n, runs[n]["out"]), todo)
            for n, result in zip(todo, done):
                runs[n]["tshark"] = result
    return runs


def _safe(fn, *args):
    try:
        return fn(*args)
    except BaseException as e:          # re-raised by the test of that file
        return e


@pytest.mark.corpus
@pytest.mark.parametrize("name", CORPUS_FILES or [pytest.param("-", marks=pytest.mark.skip(
    reason=shared_corpus.WHY_MISSING))])
def test_corpus_annotated_copies(corpus_runs, name):
    src = CORPUS / name
    run = corpus_runs[name]
    out, err, res = run["out"], run["error"], run["res"]
    if err is not None:
        if not isinstance(err, CaptureError):
            raise err
        assert os.listdir(run["dir"]) == []        # nothing written, no temporary file left
        assert err.frame in (None, 1)
        return
    assert os.listdir(run["dir"]) == ["out.pcapng"]
    good = frames_or_none(src)
    assert res.frames == len(good) == len(frames(out))
    assert_same_packets(src, out, count=len(good))
    if TSHARK is None:
        pytest.skip("tshark is not installed: checked with rawfin's reader only")
    if isinstance(run["tshark"], BaseException):
        raise run["tshark"]
    check_with_tshark(src, out, tshark=run["tshark"])


def test_an_inferred_transition_names_the_other_reading_in_its_comment():
    from rawfin.render.annotate import transition_comment
    rec = {"endpoint": "192.0.2.1:80", "from": "FIN_WAIT_1", "to": "FIN_WAIT_2",
           "cause": "rcv ACK ack=2202 of FIN seq=2201",
           "inferred": "or CLOSING if the FIN in frame 7 arrived and its ACK was lost before the capture point",
           "alternative": ["CLOSING"]}
    text = transition_comment(rec)
    assert text.startswith("rawfin: 192.0.2.1:80 FIN_WAIT_1 → FIN_WAIT_2 (rcv ACK ack=2202 of FIN seq=2201)")
    assert text.endswith("; inferred: or CLOSING if the FIN in frame 7 arrived and its ACK was lost before the "
                         "capture point")
    del rec["inferred"], rec["alternative"]
    assert "inferred" not in transition_comment(rec)
