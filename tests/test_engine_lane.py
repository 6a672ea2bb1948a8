"""The compiled lane itself: that it is really the one doing the work, how it is chosen, and
what happens without it. (tests/test_engine.py proves its output equals the reference's.)"""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

from rawfin import cli
from rawfin.capture import engine
from rawfin.capture.analysis import CaptureStats, records
from rawfin.wire import bpf
from rawfin.render.records import json_line, record
from bench import generate

ROOT = Path(__file__).resolve().parents[1]
CAPTURES = ROOT / "captures"

needs_lane = pytest.mark.skipif(not engine.available(), reason=f"rawfin.capture._engine is not built: {engine.WHY_NOT}")


def _run_lane(path: Path, **kw) -> tuple[bytes, CaptureStats, dict]:
    """The lane on one capture: (its output, the stats it filled in, its own counters)."""
    buf = io.BytesIO()
    stats = CaptureStats(path=str(path))
    seen: dict = {}
    assert engine.run(str(path), buf.write, stats=stats, counters=seen, **kw, json_of=json_line(None))
    return buf.getvalue(), stats, seen


@needs_lane
@pytest.mark.parametrize("name", ["normal-close", "three-segment-close", "simultaneous-close", "rst-abort",
                                  "server-active-close", "seq-wraparound", "half-close", "fin-with-data",
                                  "lost-fin", "lost-final-ack", "time-wait-expiry"])
def test_closes_the_rules_cover_never_leave_the_lane(name):
    """A close the rules describe is followed in C from the SYN to the record, retransmitted FINs
    and a lost final ACK included (the lane runs rawfin.core.rules): Python is not called."""
    out, stats, seen = _run_lane(CAPTURES / f"{name}.pcap")
    assert seen["python_calls"] == seen["handoffs"] == 0, seen
    assert seen["connections"] == stats.connections == 1
    recs = [json.loads(line) for line in out.decode().splitlines()]
    assert recs[-1]["type"] == "connection"
    assert any(r["type"] == "transition" for r in recs)
    assert out.decode() == _reference(CAPTURES / f"{name}.pcap")


def _reference(path: Path) -> str:
    return "".join(json.dumps(r, ensure_ascii=False, separators=(",", ":")) + "\n" for r in records(str(path), record=record))


def _crafted(tmp_path: Path, name: str, segs) -> Path:
    from rawfin.wire import codec
    from rawfin.wire.pcapio import LINKTYPE_RAW, PcapWriter

    path = tmp_path / name
    with PcapWriter(path, linktype=LINKTYPE_RAW) as w:
        for i, seg in enumerate(segs):
            w.write(codec.to_bytes(seg), (1_700_000_000 + i) * 10**9)
    return path


@needs_lane
def test_what_only_python_does_is_handed_to_the_python_observer(tmp_path):
    """A new SYN on the pair (a new connection instance), an ACK that misses the FIN by one (reported
    at the end with the ACK's own frame, which the lane does not keep), a SYN whose answer the capture
    lacks: Python takes the connection, and the output is still the reference's."""
    from rawfin.core.segment import Flags, Segment

    C, S = ("192.0.2.2", 50001), ("192.0.2.1", 80)

    def seg(src, dst, **kw):
        return Segment(src=src[0], dst=dst[0], sport=src[1], dport=dst[1], **kw)

    A = Flags.ACK
    off_by_one = [seg(C, S, seq=100, flags=Flags.SYN), seg(S, C, seq=500, ack=101, flags=Flags.SYN | A),
                  seg(C, S, seq=101, ack=501, flags=A), seg(C, S, seq=101, ack=501, flags=Flags.FIN | A),
                  seg(S, C, seq=501, ack=101, flags=A)]
    unanswered = [seg(C, S, seq=100, flags=Flags.SYN), seg(C, S, seq=101, ack=501, flags=A)]
    cases = {"port-reuse": CAPTURES / "port-reuse.pcap",
             "off-by-one": _crafted(tmp_path, "off.pcap", off_by_one),
             "unanswered": _crafted(tmp_path, "syn.pcap", unanswered)}
    for name, path in cases.items():
        out, _stats, seen = _run_lane(path)
        assert seen["handoffs"] >= 1, (name, seen)
        assert out.decode() == _reference(path), name


@needs_lane
def test_the_bench_mix_runs_entirely_in_the_lane(tmp_path):
    """The benchmark's capture (handshakes, data, four-way, three-way, simultaneous closes, resets,
    IPv4 and IPv6) needs no Python call at all: what makes `make bench` fast is the lane."""
    cap = tmp_path / "b.pcap"
    generate(cap, packets=20_000, connections=2_000, seed=7)
    out, stats, seen = _run_lane(cap)
    assert seen["python_calls"] == seen["handoffs"] == 0
    assert stats.connections == 2_000 and stats.frames == 20_000
    ref = "".join(json.dumps(r, ensure_ascii=False, separators=(",", ":")) + "\n" for r in records(str(cap), record=record))
    assert out.decode() == ref


@needs_lane
def test_syn_alone_connections_are_compacted_only_under_pressure(tmp_path, monkeypatch):
    """A connection a SYN alone made is kept compact (and its SYN replayed when more comes) only once
    COMPACT_AFTER newer connections have been born while nothing answered it: the benchmark's SYNs are
    answered within a round trip and none is; a flood keeps COMPACT_AFTER full entries and compacts the
    rest; 0 compacts every one at once. The records are the same every way."""
    from flood import generate_flood

    bench_cap, flood_cap = tmp_path / "b.pcap", tmp_path / "f.pcap"
    generate(bench_cap, packets=20_000, connections=2_000, seed=7, rate=20000.0)
    generate_flood(flood_cap, syns=3000, rate=1000.0, seed=7)
    assert engine.COMPACT_AFTER == 256
    outs = {}
    for cap, at_once, pressure in ((bench_cap, 2_000, 0), (flood_cap, 3_000, 3_000 - 256)):
        out, _, seen = _run_lane(cap)
        assert seen["compacted"] == pressure, (cap.name, seen)
        monkeypatch.setattr(engine, "COMPACT_AFTER", 0)
        out0, _, seen0 = _run_lane(cap)
        monkeypatch.setattr(engine, "COMPACT_AFTER", 256)
        assert seen0["compacted"] == at_once and out0 == out, (cap.name, seen0)
        outs[cap.name] = out
    assert outs["f.pcap"].count(b'"type":"connection"') == 3_000


def _assert_lane_agrees(path: Path) -> None:
    """The lane writes what the reference writes and fails with the same message, or neither fails
    (or it declines the file, writing nothing, and the command then runs the reference)."""
    from rawfin.core.errors import CaptureError

    buf, lane_err, ref_err = io.BytesIO(), None, None
    try:
        if not engine.run(str(path), buf.write, json_of=json_line(None)):
            assert buf.getvalue() == b""
            return
    except CaptureError as e:
        lane_err = str(e)
    ref: list[str] = []
    try:
        ref.extend(json.dumps(r, ensure_ascii=False, separators=(",", ":")) + "\n" for r in records(str(path), record=record))
    except CaptureError as e:
        ref_err = str(e)
    assert (buf.getvalue().decode(), lane_err) == ("".join(ref), ref_err)


def _cli(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "rawfin", *argv], capture_output=True, text=True, cwd=ROOT)


@needs_lane
@pytest.mark.parametrize("sel", [["--conn", "0"], ["--conn", "2"], ["--filter", "port 80"],
                                 ["--filter", "src host 192.0.2.2"], ["--filter", "tcp[tcpflags] & tcp-fin != 0"],
                                 ["--filter", "port 80", "--conn", "0"]])
@pytest.mark.parametrize("fmt", [["--format", "jsonl"], ["--summary"]])
def test_selections_are_the_same_through_the_lane(sel, fmt):
    """--filter (libpcap's bpf_filter run by the lane) and --conn give the reference's output."""
    if "--filter" in sel and not bpf.available():
        pytest.skip("libpcap is not installed")
    caps = [str(CAPTURES / "port-reuse.pcap"), str(CAPTURES / "lost-final-ack.pcap")]
    for argv in ([caps[0]], caps):
        p = _cli("analyze", "--engine", "c", *fmt, *sel, *argv)
        q = _cli("analyze", "--engine", "python", *fmt, *sel, *argv)
        assert (p.returncode, p.stdout, p.stderr) == (q.returncode, q.stdout, q.stderr)
        assert p.returncode in (0, 2) and "Traceback" not in p.stderr


@needs_lane
@pytest.mark.parametrize("fmt", [["--format", "table"], ["--summary"], ["--format", "csv"],
                                 ["--format", "table", "--tablefmt", "github"], ["--summary", "--msl", "1"],
                                 ["--summary", "--format", "csv"], ["--summary", "--format", "jsonl"]])
def test_every_format_is_the_same_through_the_lane(fmt, tmp_path):
    """Table, summary and csv through the lane and the C writer: the reference's text."""
    cap = tmp_path / "b.pcap"
    generate(cap, packets=3_000, connections=300, seed=11)
    files = [str(cap), str(CAPTURES / "lost-final-ack.pcap"), str(CAPTURES / "port-reuse.pcap")]
    for argv in ([files[0]], [files[1]], files):
        p = _cli("analyze", *fmt, "--engine", "c", *argv)
        q = _cli("analyze", *fmt, "--engine", "python", *argv)
        assert (p.returncode, p.stdout, p.stderr) == (q.returncode, q.stdout, q.stderr)
        assert p.stdout


def test_without_the_extension_auto_runs_the_reference_and_c_is_a_usage_error(monkeypatch, capsys):
    """A machine without a C compiler: same output through the reference; --engine c says why not."""
    monkeypatch.setattr(engine, "_engine", None)
    monkeypatch.setattr(engine, "WHY_NOT", "rawfin.capture._engine is not built (test)")
    cap = str(CAPTURES / "normal-close.pcap")
    assert cli.main(["analyze", "--format", "jsonl", cap]) == 0
    out = capsys.readouterr().out
    ref = "".join(json.dumps(r, ensure_ascii=False, separators=(",", ":")) + "\n" for r in records(cap, record=record))
    stats = '{"type":"stats","frames":11,"filtered":0,"segments":11,"connections":1,"timeout":0,"evicted":0}\n'
    assert out == ref + stats
    assert cli.main(["analyze", "--format", "jsonl", "--engine", "c", cap]) == 2
    assert "rawfin.capture._engine is not built (test)" in capsys.readouterr().err


@needs_lane
def test_a_pcapng_with_times_beyond_int64_goes_to_the_reference(tmp_path):
    """pcapng can put a timestamp anywhere; the lane keeps integer nanoseconds in 64 bits, so such a
    file is left to the reference, whole (the lane writes nothing of it)."""
    from rawfin.wire.pcapio import PcapngWriter, open_capture

    src = CAPTURES / "normal-close.pcap"

    path = tmp_path / "far.pcapng"
    with open_capture(src) as r, PcapngWriter(path) as w:
        iface = w.add_interface(r.interfaces[0].linktype)
        for fr in r:
            w.write_packet(iface, fr.data, time_ns=fr.time_ns + (1 << 63))
    buf = io.BytesIO()
    assert engine.run(str(path), buf.write, json_of=json_line(None)) is False and buf.getvalue() == b""
    p = _cli("analyze", "--format", "jsonl", str(path))
    q = _cli("analyze", "--format", "jsonl", "--engine", "python", str(path))
    assert p.returncode == q.returncode == 0 and p.stdout == q.stdout and p.stdout


@needs_lane
@pytest.mark.parametrize("seed", range(4))
def test_damaged_captures_agree_with_the_reference(seed, tmp_path):
    """Random bytes changed (and files cut short) in real captures: the lane writes what the
    reference writes and fails with the same message, or neither fails. (This ran 3,300 times
    under AddressSanitizer and UBSan when the lane was written; here a few hundred, quickly.)"""
    import random

    rng = random.Random(seed)
    small = tmp_path / "small.pcap"
    generate(small, packets=600, connections=60, seed=seed)
    bases = [p.read_bytes() for p in sorted(CAPTURES.glob("*.pcap"))] + [small.read_bytes()]
    path = tmp_path / "m.pcap"
    for _ in range(60):
        d = bytearray(rng.choice(bases))
        for _ in range(rng.choice((1, 2, 4, 8, 16))):
            pos = rng.randrange(24, len(d))
            d[pos] = rng.randrange(256) if rng.random() < 0.5 else d[pos] ^ (1 << rng.randrange(8))
        if rng.random() < 0.1:
            d = d[:rng.randrange(24, len(d))]
        path.write_bytes(d)
        _assert_lane_agrees(path)


def _to_pcapng(src: Path, dst: Path) -> None:
    from rawfin.wire.pcapio import PcapngWriter, open_capture

    with open_capture(src) as r, PcapngWriter(dst) as w:
        iface = w.add_interface(r.interfaces[0].linktype)
        for fr in r:
            w.write_packet(iface, fr.data, time_ns=fr.time_ns)


@needs_lane
def test_pcapng_is_read_by_the_lane_too(tmp_path):
    """Wireshark saves pcapng: the lane walks its blocks itself (interface options through
    rawfin.wire.pcapio.parse_idb), as fast as a classic pcap, and with the same output."""
    cap = tmp_path / "b.pcap"
    generate(cap, packets=5_000, connections=500, seed=3)
    ng = tmp_path / "b.pcapng"
    _to_pcapng(cap, ng)
    out, stats, seen = _run_lane(ng)
    assert seen["python_calls"] == seen["handoffs"] == 0 and stats.frames == 5_000
    pcap_out, _, _ = _run_lane(cap)
    assert out == pcap_out


@needs_lane
@pytest.mark.parametrize("seed", range(3))
def test_damaged_pcapng_agrees_with_the_reference(seed, tmp_path):
    """Damaged pcapng: the lane stops where its walk meets something only rawfin.wire.pcapio reads and
    lets it go on from that frame; the output and the error are the reference's."""
    import random

    rng = random.Random(100 + seed)
    ng = tmp_path / "base.pcapng"
    _to_pcapng(CAPTURES / rng.choice(["normal-close.pcap", "lost-fin.pcap", "simultaneous-close.pcap"]), ng)
    base = ng.read_bytes()
    path = tmp_path / "m.pcapng"
    for _ in range(60):
        d = bytearray(base)
        for _ in range(rng.choice((1, 2, 4))):
            pos = rng.randrange(28, len(d))
            d[pos] = rng.randrange(256) if rng.random() < 0.5 else d[pos] ^ (1 << rng.randrange(8))
        if rng.random() < 0.15:
            d = d[:rng.randrange(28, len(d))]
        path.write_bytes(d)
        _assert_lane_agrees(path)


@needs_lane
def test_a_pipe_is_left_to_the_reference(tmp_path):
    """A FIFO can be read once: the lane (which opens the file itself) declines it, the reference reads it."""
    import os
    import threading

    src = CAPTURES / "lost-final-ack.pcap"
    fifo = tmp_path / "cap.fifo"
    os.mkfifo(fifo)
    t = threading.Thread(target=lambda: fifo.write_bytes(src.read_bytes()))
    t.start()
    p = _cli("analyze", "--format", "jsonl", str(fifo))
    t.join(timeout=30)
    q = _cli("analyze", "--format", "jsonl", "--engine", "python", str(src))
    assert p.returncode == q.returncode == 0 and p.stdout == q.stdout and p.stdout


@needs_lane
def test_common_anomalies_stay_in_the_lane(tmp_path):
    """A data segment seen twice (a retransmission), one missing (previous_segment_not_captured,
    then an ACK of what the capture never showed): the lane reports them itself, as the reference
    does, and keeps the connection."""
    from rawfin.wire.pcapio import PcapWriter, open_capture

    src = tmp_path / "b.pcap"
    generate(src, packets=2_000, connections=200, seed=4)
    frames = list(open_capture(src))
    data = [i for i, fr in enumerate(frames) if len(fr.data) > 200][:40]
    dup, gone = set(data[0::4]), set(data[2::4])
    path = tmp_path / "faults.pcap"
    with PcapWriter(path, linktype=frames[0].linktype) as w:
        for i, fr in enumerate(frames):
            if i in gone:
                continue
            w.write(fr.data, fr.time_ns, fr.orig_len)
            if i in dup:
                w.write(fr.data, fr.time_ns + 1000, fr.orig_len)
    out, _stats, seen = _run_lane(path)
    assert seen["handoffs"] == 0 and seen["python_calls"] == 0, seen
    text = out.decode()
    for kind in ("retransmission", "previous_segment_not_captured", "acked_unseen_segment"):
        assert f'"kind":"{kind}"' in text
    ref = "".join(json.dumps(r, ensure_ascii=False, separators=(",", ":")) + "\n" for r in records(str(path), record=record))
    assert text == ref


@needs_lane
def test_connections_picked_up_mid_stream_stay_in_the_lane(tmp_path):
    """A capture started while connections were open (no SYN seen: the server guessed by port, the
    connection marked mid_stream): the lane follows them too, to the same records."""
    from rawfin.wire.pcapio import PcapWriter, open_capture

    src = tmp_path / "b.pcap"
    generate(src, packets=4_000, connections=400, seed=9)
    frames = list(open_capture(src))
    path = tmp_path / "late.pcap"
    with PcapWriter(path, linktype=frames[0].linktype) as w:
        for fr in frames[len(frames) // 3:]:          # a third of the way in: many connections under way
            w.write(fr.data, fr.time_ns, fr.orig_len)
    out, _stats, seen = _run_lane(path)
    text = out.decode()
    assert '"mid_stream":true' in text and '"server_guessed":true' in text
    assert seen["handoffs"] == 0, seen
    ref = "".join(json.dumps(r, ensure_ascii=False, separators=(",", ":")) + "\n" for r in records(str(path), record=record))
    assert text == ref


def _tagged(src: Path, dst: Path, tags_of) -> None:
    """The capture again with 802.1Q tags (``tags_of(index, frame)`` -> VLAN ids, outermost first)."""
    import struct

    from rawfin.wire.pcapio import PcapWriter, open_capture

    frames = list(open_capture(src))
    with PcapWriter(dst, linktype=frames[0].linktype) as w:
        for i, fr in enumerate(frames):
            tags = b"".join(struct.pack("!HH", 0x88A8 if k == 0 and len(ids) > 1 else 0x8100, v)
                            for ids in [tags_of(i, fr)] for k, v in enumerate(ids))
            w.write(fr.data[:12] + tags + fr.data[12:], fr.time_ns, fr.orig_len + len(tags))


@needs_lane
@pytest.mark.parametrize("tags", [(7,), (0,), (100, 7)], ids=["802.1Q", "vlan-0", "QinQ"])
def test_vlan_tagged_traffic_stays_in_the_lane(tags, tmp_path):
    """A trunk port's capture: the VLAN ids are part of each connection's key and record, in the lane."""
    src = tmp_path / "b.pcap"
    generate(src, packets=3_000, connections=300, seed=12)
    path = tmp_path / "tagged.pcap"
    _tagged(src, path, lambda i, fr: tags)
    out, _stats, seen = _run_lane(path)
    assert seen["handoffs"] == 0 and seen["python_calls"] == 0, seen
    assert f'"vlan":{json.dumps(list(tags), separators=(",", ":"))}' in out.decode()
    ref = "".join(json.dumps(r, ensure_ascii=False, separators=(",", ":")) + "\n" for r in records(str(path), record=record))
    assert out.decode() == ref


@needs_lane
def test_a_router_on_a_stick_is_handed_to_the_python_observer(tmp_path):
    """One direction on VLAN 10, the other on VLAN 20: one connection (Observer._adopt), which the
    lane leaves to Python; the records are the reference's."""
    from rawfin.wire.decode import decode

    src = tmp_path / "b.pcap"
    generate(src, packets=100, connections=10, seed=1)
    path = tmp_path / "stick.pcap"
    _tagged(src, path, lambda i, fr: (20,) if decode(fr.linktype, fr.data, fr.orig_len).sport == 443 else (10,))
    out, stats, seen = _run_lane(path)
    assert stats.connections == 10 and seen["handoffs"] == 10, seen
    ref = "".join(json.dumps(r, ensure_ascii=False, separators=(",", ":")) + "\n" for r in records(str(path), record=record))
    assert out.decode() == ref


@needs_lane
@pytest.mark.parametrize("linktype", [113, 276, 101, 228])
def test_cooked_and_raw_link_types_are_decoded_by_the_lane(linktype, tmp_path):
    """`tcpdump -i any` writes Linux cooked captures (SLL, SLL2); tunnels and some tools raw IP: the
    lane decodes those headers itself too."""
    import struct

    from rawfin.wire.pcapio import PcapWriter, open_capture

    src = tmp_path / "b.pcap"
    generate(src, packets=2_000, connections=200, seed=13)
    path = tmp_path / f"lt{linktype}.pcap"
    with open_capture(src) as r, PcapWriter(path, linktype=linktype) as w:
        for fr in r:
            d, et = fr.data, struct.unpack("!H", fr.data[12:14])[0]
            head = {113: struct.pack("!HHH8sH", 0, 1, 6, d[6:12] + b"\0\0", et),
                    276: struct.pack("!HHIHBB8s", et, 0, 2, 1, 0, 6, d[6:12] + b"\0\0")}.get(linktype, b"")
            if linktype == 228 and et != 0x0800:
                continue
            w.write(head + d[14:], fr.time_ns, fr.orig_len - 14 + len(head))
    out, _stats, seen = _run_lane(path)
    assert seen["python_calls"] == seen["handoffs"] == 0, seen
    ref = "".join(json.dumps(r, ensure_ascii=False, separators=(",", ":")) + "\n" for r in records(str(path), record=record))
    assert out.decode() == ref and out


@needs_lane
@pytest.mark.parametrize("argv", [["check", "--format", "jsonl"], ["check"], ["check", "--allow-reset", "--msl", "1"],
                                  ["annotate"]], ids=["check-jsonl", "check-table", "check-allow", "annotate"])
def test_check_and_annotate_pull_the_same_records_through_the_lane(argv, tmp_path):
    """check and annotate read records as a generator: rawfin.engine.records gives the lane's, the same
    ones, so their verdicts, comments and exit codes are the reference's (damaged input included)."""
    cap = tmp_path / "b.pcap"
    generate(cap, packets=3_000, connections=300, seed=14)
    cut = tmp_path / "cut.pcap"
    cut.write_bytes(cap.read_bytes()[:-700])             # the last records damaged: exit 65 after the good part
    for path in (cap, cut, CAPTURES / "lost-final-ack.pcap", CAPTURES / "port-reuse.pcap"):
        runs = []
        for eng in ("c", "python"):
            extra = ["-o", str(tmp_path / f"out-{eng}.pcapng")] if argv[0] == "annotate" else []
            p = _cli(*argv, "--engine", eng, str(path), *extra)
            body = (tmp_path / f"out-{eng}.pcapng").read_bytes() if extra else p.stdout.encode()
            runs.append((p.returncode, body, p.stderr.replace(f"out-{eng}", "out-X")))
        assert runs[0] == runs[1], path
        assert runs[0][1]


@needs_lane
def test_lane_records_generator_falls_back_when_the_lane_declines(tmp_path):
    """engine.records on a capture the lane will not take (a pcapng with times beyond int64) gives the
    reference's records."""
    from rawfin.wire.pcapio import PcapngWriter, open_capture

    path = tmp_path / "far.pcapng"
    with open_capture(CAPTURES / "normal-close.pcap") as r, PcapngWriter(path) as w:
        iface = w.add_interface(r.interfaces[0].linktype)
        for fr in r:
            w.write_packet(iface, fr.data, time_ns=fr.time_ns + (1 << 63))
    assert list(engine.records(str(path), record=record, json_of=json_line(None))) == list(records(str(path), record=record)) != []


@needs_lane
def test_times_are_written_alike_by_the_lane_and_the_reference(tmp_path):
    """A record's time is its nanoseconds rounded to whole microseconds (half up), written as Python
    writes that many microseconds / 10**6: both engines write the same text, also at a tie
    (x.xxxxxx5), below 100 µs (an exponent: 5e-05), and at the top of a pcap's clock."""
    from rawfin.core.units import seconds_of
    from rawfin.core.segment import Flags, Segment
    from rawfin.wire import codec
    from rawfin.wire.pcapio import LINKTYPE_RAW, PcapWriter

    C, S = ("192.0.2.2", 50001), ("192.0.2.1", 80)
    times = [0, 500, 1_499, 15_000, 99_500, 1_000_000_000, 1_700_000_000_123_456_500, 1_700_000_000_999_999_500,
             4_294_967_295_999_999_999]
    path = tmp_path / "ns.pcap"
    with PcapWriter(path, linktype=LINKTYPE_RAW, nanosecond=True) as w:
        for i, t in enumerate(times):       # one SYN per time: each a connection with its own records
            syn = Segment(src=C[0], dst=S[0], sport=C[1] + i, dport=S[1], seq=1000 + i, flags=Flags.SYN)
            w.write(codec.to_bytes(syn), t)
    out, _stats, seen = _run_lane(path)
    assert out.decode() == _reference(path)
    written = {json.loads(line)["first_time"] for line in out.decode().splitlines()
               if json.loads(line)["type"] == "connection"}
    assert written == {seconds_of(t) for t in times}
    text = out.decode()
    for literal in ('"first_time":0.0,', '"first_time":1e-06,', '"first_time":1.5e-05,', '"first_time":0.0001,',
                    '"first_time":1700000000.123457,', '"first_time":1700000001.0,', '"first_time":4294967296.0,'):
        assert literal in text, literal


@needs_lane
def test_the_lane_hands_over_the_same_typed_events(tmp_path):
    """engine.events gives the core's typed events as the lane makes them (no JSON read back), equal to the
    reference's, the numbers each text was made of (``values``) included."""
    cap = tmp_path / "mix.pcap"
    generate(cap, packets=3_000, connections=300, seed=15)
    for path in (cap, CAPTURES / "lost-final-ack.pcap", CAPTURES / "simultaneous-close.pcap"):
        lane, ref = list(engine.events(str(path))), list(records(str(path)))
        assert lane == ref and any(getattr(ev, "values", ()) for ev in lane), path


@needs_lane
@pytest.mark.parametrize("compact_after", [256, 0])
def test_moves_are_the_transitions_by_code_and_nothing_else(tmp_path, monkeypatch, compact_after):
    """engine.run(moves=True): each transition of a connection the lane follows as (conn, time_ns, side, from,
    to, names), the states by code (engine.state_names()), the sides' names with a connection's first move
    only; no anomaly; connection ends as engine.events gives them. Every move is a transition of the
    reference's, in its order; connections the Python observer follows come as its typed events."""
    from rawfin.core.events import Anomaly, ConnectionEnd, Transition

    monkeypatch.setattr(engine, "COMPACT_AFTER", compact_after)     # (0: every SYN alone replayed, named again)
    cap = tmp_path / "mix.pcap"
    generate(cap, packets=3_000, connections=300, seed=15)
    states = engine.state_names()
    for path in (cap, CAPTURES / "port-reuse.pcap", CAPTURES / "lost-final-ack.pcap"):
        got: list = []
        assert engine.run(str(path), None, emit=got.extend, moves=True)
        names: dict[int, tuple] = {}
        seen = []
        for t in got:
            if t.__class__ is tuple and t[0].__class__ is int:
                conn, ns, side, a, b, nm = t
                assert (nm is None) == (conn in names), t      # named once: with the first move
                if nm is not None:
                    names[conn] = nm
                seen.append((conn, ns, names[conn][side], names[conn][1 - side],
                             states[a], states[b]))
                continue
            ev = engine.event_of(t)
            assert not isinstance(ev, Anomaly), ev
            if isinstance(ev, Transition):
                seen.append((ev.conn, ev.time_ns, ev.endpoint, ev.peer, ev.from_.name, ev.to.name))
            else:
                assert isinstance(ev, ConnectionEnd), ev
                seen.append(ev)
        ref = [(ev.conn, ev.time_ns, ev.endpoint, ev.peer, ev.from_.name, ev.to.name) if isinstance(ev, Transition)
               else ev for ev in records(str(path)) if not isinstance(ev, Anomaly)]
        assert seen == ref, path
        assert names, path
