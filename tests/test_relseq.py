"""Relative sequence numbers (``--seq relative``, Wireshark's view) and absolute ones (the default, ``-S``).

Each side's base is its SYN's sequence number, else one before the first number it is seen sending,
else one before the first acknowledgment number it is sent (rawfin.core.seq.note_bases, as Wireshark
reads a capture). The texts follow the option; the values events carry stay absolute. Checked here:
the arithmetic across 2**32, a capture whose ISN is 2**32 - 1, a connection picked up mid-stream, and
tshark's own ``tcp.seq``/``tcp.ack`` (relative) and ``tcp.seq_raw``/``tcp.ack_raw`` on the same frames.
Both engines giving the same bytes in relative mode: tests/test_engine.py test_relative_*.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import pytest

import shared_corpus
from kernelcaps import needs_netns
from rawfin.capture import analysis, engine
from rawfin.cli import main
from rawfin.core import seq as sq
from rawfin.wire.decode import decode
from rawfin.wire.pcapio import PcapWriter, iter_frames

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TSHARK = shutil.which("tshark")
needs_tshark = pytest.mark.skipif(TSHARK is None, reason="tshark is not installed (apt-get install tshark)")
ENGINES = ["python", pytest.param("c", marks=pytest.mark.skipif(not engine.available(),
                                                                  reason="the compiled lane is not built"))]


def cap(name: str) -> str:
    return os.path.join(ROOT, "captures", name)


def segments(path: str) -> list:
    return [decode(f.linktype, f.data, f.orig_len, f.frame, f.time_ns) for f in iter_frames(path)]


def texts(path: str, engine_name: str, relative: bool) -> list[tuple]:
    """(frame, text, values) of every transition and anomaly of the capture, from one engine."""
    source = engine.events if engine_name == "c" else analysis.records
    out = []
    for ev in source(path, relative_seq=relative):
        text = getattr(ev, "cause", None) or getattr(ev, "detail", None)
        if text is not None:
            out.append((ev.frame, text, ev.values))
    return out


def write_capture(path: str, packets: list) -> str:
    from scapy.layers.inet import IP, TCP

    w = PcapWriter(path, 101)
    for i, (src, flags, seq, ack, data) in enumerate(packets):
        c, s = ("192.0.2.2", 40000), ("192.0.2.1", 80)
        a, b = (c, s) if src == "c" else (s, c)
        pkt = IP(src=a[0], dst=b[0]) / TCP(sport=a[1], dport=b[1], flags=flags, seq=seq, ack=ack) / (b"x" * data)
        w.write(bytes(pkt), 1_000_000_000 + i * 1_000_000)
    w.close()
    return path


# -- the arithmetic ---------------------------------------------------------------------------

def test_bases_as_wireshark_reads_them():
    b: dict = {}
    sq.note_bases(b, "c", "s", 2**32 - 1, 0, True, False)               # the client's SYN
    assert b == {"c": 2**32 - 1}
    sq.note_bases(b, "s", "c", 7, 0, True, True)                          # SYN,ACK ack=0 (2**32-1 + 1)
    assert b == {"c": 2**32 - 1, "s": 7}
    assert sq.relative(0, b["c"]) == 1 and sq.relative(100, b["c"]) == 101   # across the wrap
    assert sq.relative(2**32 - 1, b["c"]) == 0
    mid: dict = {}
    sq.note_bases(mid, "s", "c", 5000, 1234, False, True)                 # picked up mid-stream
    assert mid == {"s": 4999, "c": 1233}                                   # both show 1, as in Wireshark
    sq.note_bases(mid, "c", "s", 0, 0, True, False)                       # a base once known stays
    assert mid == {"s": 4999, "c": 1233}
    assert sq.relative(5, None) == 5                                       # not known yet: absolute


# -- a capture whose ISN is 2**32 - 1 -----------------------------------------------------------

TOP = 2**32 - 1
WRAP = [("c", "S", TOP, 0, 0), ("s", "SA", 2**32 - 2, 0, 0), ("c", "A", 0, TOP, 0), ("c", "PA", 0, TOP, 100),
        ("s", "A", TOP, 100, 0), ("c", "FA", 100, TOP, 0), ("s", "A", TOP, 101, 0), ("s", "FA", TOP, 101, 0),
        ("c", "A", 101, 0, 0)]


@pytest.mark.parametrize("eng", ENGINES)
def test_isn_at_the_top_of_sequence_space(tmp_path, eng):
    p = write_capture(str(tmp_path / "top.pcap"), WRAP)
    rel = texts(p, eng, True)
    causes = [t for _, t, _ in rel]
    assert causes[:4] == ["snd SYN seq=0", "rcv SYN seq=0", "rcv SYN,ACK seq=0 ack=1", "rcv ACK ack=1"]
    assert "snd FIN seq=101" in causes and "rcv ACK ack=102 of FIN seq=101" in causes
    assert "rcv FIN seq=1" in causes and "rcv ACK ack=2 of FIN seq=1" in causes
    absolute = texts(p, eng, False)
    assert [t for _, t, _ in absolute][0] == f"snd SYN seq={TOP}" and "snd FIN seq=100" in [t for _, t, _ in absolute]
    assert [v for _, _, v in rel] == [v for _, _, v in absolute]        # the values stay absolute


# -- mid-stream, and tshark's numbers ----------------------------------------------------------

def tshark_numbers(path: str) -> dict[int, tuple]:
    """frame -> (seq, ack, seq_raw, ack_raw) as tshark reads them (relative numbers are its default)."""
    out = subprocess.run([TSHARK, "-n", "-r", path, "-o", "tcp.relative_sequence_numbers:TRUE", "-T", "fields",
                          "-e", "frame.number", "-e", "tcp.seq", "-e", "tcp.ack", "-e", "tcp.seq_raw",
                          "-e", "tcp.ack_raw", "-e", "tcp.flags.ack"],
                         capture_output=True, text=True, check=True, timeout=120).stdout
    got = {}
    for line in out.splitlines():
        f, seq, ack, seq_raw, ack_raw, has_ack = (line.split("\t") + [""] * 6)[:6]
        if seq:
            got[int(f)] = (int(seq), int(ack) if has_ack in ("1", "True") else None, int(seq_raw),
                           int(ack_raw) if has_ack in ("1", "True") else None)
    return got


def mid_stream(tmp_path) -> str:
    """normal-close.pcap without its handshake and first data segment (both sides first seen mid-stream)."""
    frames = list(iter_frames(cap("normal-close.pcap")))
    p = str(tmp_path / "mid.pcap")
    w = PcapWriter(p, frames[0].linktype)
    for f in frames[4:]:
        w.write(f.data, f.time_ns)
    w.close()
    return p


def _captures(tmp_path) -> list[str]:
    out = [cap(n) for n in sorted(os.listdir(os.path.join(ROOT, "captures"))) if n.endswith(".pcap")]
    out += [mid_stream(tmp_path), write_capture(str(tmp_path / "top.pcap"), WRAP)]
    one_sided = shared_corpus.ROOT / "captures" / "zeek__one-sided-2745.pcap"   # a SYN,ACK first: ack - 1
    if one_sided.is_file():
        out.append(str(one_sided))
    return out


@needs_tshark
def test_describe_agrees_with_tshark(tmp_path):
    """Every segment of every shipped capture (and a mid-stream cut, the 2**32 - 1 ISN, a capture that
    starts with a SYN,ACK), described with the bases rawfin reads, shows tshark's relative numbers; the
    absolute description shows tshark's raw ones."""
    for path in _captures(tmp_path):
        ts = tshark_numbers(path)
        bases: dict = {}
        conns: dict = {}
        for s in segments(path):
            key = frozenset(((s.src, s.sport), (s.dst, s.dport)))
            if s.syn and not s.has_ack and key in conns and conns[key].get((s.src, s.sport)) != s.seq:
                conns.pop(key)              # port reuse: a new connection, as tshark's new stream
            bases = conns.setdefault(key, {})
            sq.note_bases(bases, (s.src, s.sport), (s.dst, s.dport), s.seq, s.ack, s.syn, s.has_ack)
            seq, ack, seq_raw, ack_raw = ts[s.frame]
            want = f"seq={seq}" + (f" ack={ack}" if ack is not None else "")
            assert want in s.describe(bases), (path, s.frame, s.describe(bases), ts[s.frame])
            raw = f"seq={seq_raw}" + (f" ack={ack_raw}" if ack_raw is not None else "")
            assert raw in s.describe(), (path, s.frame)


@needs_tshark
@pytest.mark.parametrize("eng", ENGINES)
def test_texts_agree_with_tshark(tmp_path, eng):
    """A text that names its frame's own seq or ack (the values events carry say which) shows tshark's
    relative number with --seq relative, and tshark's raw number (seq_raw, ack_raw) without."""
    checked = 0
    for path in [cap("lost-final-ack.pcap"), cap("half-close.pcap"), cap("seq-wraparound.pcap"),
                 mid_stream(tmp_path), write_capture(str(tmp_path / "top.pcap"), WRAP)]:
        ts = tshark_numbers(path)
        for (frame, text, values), (_, abs_text, _) in zip(texts(path, eng, True), texts(path, eng, False)):
            if frame not in ts:
                continue
            seq, ack, seq_raw, ack_raw = ts[frame]
            v = dict(values)
            if v.get("seq") == seq_raw:
                assert f"seq={seq}" in text and f"seq={seq_raw}" in abs_text, (path, frame, text, abs_text)
                checked += 1
            if ack is not None and v.get("ack") == ack_raw:
                assert f"ack={ack}" in text and f"ack={ack_raw}" in abs_text, (path, frame, text, abs_text)
                checked += 1
    assert checked >= 10


@pytest.mark.parametrize("eng", ENGINES)
def test_mid_stream_counts_from_one(tmp_path, eng):
    """No handshake: each side counts from one before the first number it is seen with (the server's
    first segment, ACK seq=2001 ack=1101, makes both bases: 2000 and 1100), as Wireshark does."""
    got = [(f, t) for f, t, _ in texts(mid_stream(tmp_path), eng, True)]
    assert (4, "snd FIN seq=1") in got and (4, "rcv FIN seq=1") in got        # the client's FIN, 1101
    assert (5, "rcv ACK ack=2 of FIN seq=1") in got
    assert (6, "rcv FIN seq=201") in got and (7, "rcv ACK ack=202 of FIN seq=201") in got


# -- the command line ---------------------------------------------------------------------------

def test_one_default_and_tcpdumps_S(capsys):
    assert main(["analyze", "--format", "jsonl", cap("normal-close.pcap")]) == 0
    default = capsys.readouterr().out
    assert main(["analyze", "--format", "jsonl", "-S", cap("normal-close.pcap")]) == 0
    assert capsys.readouterr().out == default
    assert main(["analyze", "--format", "jsonl", "--seq", "absolute", cap("normal-close.pcap")]) == 0
    assert capsys.readouterr().out == default
    assert main(["analyze", "--format", "jsonl", "--seq", "relative", cap("normal-close.pcap")]) == 0
    rel = capsys.readouterr().out
    assert rel != default and '"cause":"snd SYN seq=0"' in rel
    # the records' fields are the same; only the texts differ
    strip = lambda out: [{k: v for k, v in json.loads(x).items() if k not in ("cause", "detail")}  # noqa: E731
                         for x in out.splitlines()]
    assert strip(rel) == strip(default)


@pytest.mark.parametrize("command", ["analyze", "check", "annotate", "live", "replay", "scenario", "craft",
                                     "peer"])
def test_every_command_takes_it(command, capsys):
    try:
        assert main([command, "--help"]) == 0
    except SystemExit as e:
        assert e.code == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "--seq {absolute,relative}" in out and "(default: absolute)" in out and "-S " in out


@needs_tshark
@pytest.mark.parametrize("eng", ["python", "auto"])
def test_annotate_comments_follow_it(tmp_path, eng):
    """annotate --seq relative: the comments' texts are relative (Wireshark's own view of the same
    packets); the ACK-of-FIN verdict keeps the wire's numbers, which the Lua plugin reads."""
    out = str(tmp_path / "rel.pcapng")
    assert main(["annotate", cap("lost-final-ack.pcap"), "-o", out, "--seq", "relative", "--engine", eng]) == 0
    got = subprocess.run([TSHARK, "-n", "-r", out, "-T", "fields", "-e", "frame.number", "-e", "frame.comment"],
                         capture_output=True, text=True, check=True, timeout=120).stdout
    comments = {int(line.split("\t")[0]): line.split("\t")[1] for line in got.splitlines() if "\t" in line}
    assert "(rcv ACK ack=102 of FIN seq=101)" in comments[9] and "ack 1102 = FIN seq 1101 + 1" in comments[9]
    assert "the ACK ack=202 in frame 11 never reached" in comments[12]


@pytest.mark.parametrize("name", ["normal-close", "lost-final-ack", "half-close", "port-reuse", "simultaneous-close"])
def test_scenario_endpoints_and_the_observer_agree(name, tmp_path):
    """scenario --seq relative: the emulated endpoints count from their own ISNs; the observer reading
    the run's capture counts from what the wire shows (Wireshark's rule). For a connection that opens
    with a handshake the two are the same numbers."""
    from rawfin.sim import scenarios

    scn = scenarios.builtin(name)
    pair = scenarios.run(scn, relative_seq=True, isn_client=2**32 - 1, isn_server=2**32 - 100)
    mine = [e.cause for _, e in pair.events("sender") if hasattr(e, "cause")]
    assert "connect(): snd SYN seq=0" in mine and "rcv SYN seq=0" in mine
    p = str(tmp_path / "run.pcap")
    pair.write_pcap(p, "sender")
    seen = [t for _, t, _ in texts(p, "python", True)]
    fin_texts = [t for t in mine if t.startswith("rcv FIN seq=") or t.startswith("rcv ACK ack=")]
    assert fin_texts and all(t in seen for t in fin_texts), (fin_texts, seen)


def test_craft_table_follows_it(capsys):
    assert main(["craft", "--seq", "relative"]) == 0
    rows = [line.split() for line in capsys.readouterr().out.splitlines()[2:]]
    assert [(r[5], r[6]) for r in rows] == [("1", "1"), ("1", "2"), ("1", "2"), ("2", "2")]
    assert main(["craft", "--format", "jsonl", "--seq", "relative"]) == 0
    first = json.loads(capsys.readouterr().out.splitlines()[0])
    assert first["seq"] > 1                 # the jsonl fields stay absolute


try:
    from hypothesis import given, strategies as st
except ImportError:  # pragma: no cover - hypothesis is a test extra
    given = None

if given is not None:
    U32 = st.integers(min_value=0, max_value=2**32 - 1)

    @given(base=U32, n=st.integers(min_value=0, max_value=2**32 - 1), syn=st.booleans())
    def test_relative_numbers_across_the_wrap(base, n, syn):
        """Whatever the ISN, the byte n after it is n (mod 2**32), and so is its ack from the peer."""
        b: dict = {}
        sq.note_bases(b, "a", "b", base, 0, syn, False)
        first = base if syn else sq.add(base, -1)
        assert sq.relative(sq.add(first, n), b["a"]) == n
        sq.note_bases(b, "b", "a", 12345, sq.add(base, 1), False, True)
        assert b["a"] == first                      # the ack does not move a base already known
        assert sq.relative(sq.add(b["b"], n), b["b"]) == n


@needs_netns
def test_peer_against_the_kernel(no_leftovers):
    """peer --seq relative: rawfin's texts count from its own ISN and the kernel's, the segment table
    and the kernel's retransmissions from each side's SYN (the kernel's ISN is random)."""
    from rawfin.linux.peerfile import run_scenario

    o = run_scenario("lost-final-ack", relative_seq=True)
    assert o.ok, [(c.what, c.detail) for c in o.checks if c.ok is False]
    causes = [t.cause for t in o.rawfin]
    assert causes[:2] == ["connect(): snd SYN seq=0", "rcv SYN,ACK seq=0 ack=1"]
    assert "rcv FIN seq=1 again: re-ACK it" in causes
    shown = [s.shown for s in o.segments]
    assert shown[:3] == ["SYN seq=0", "SYN,ACK seq=0 ack=1", "ACK seq=1 ack=1"]
    assert any("kernel sent FIN,ACK seq=1 ack=2 again" in text for _, text in o.retransmissions)
    absolute = run_scenario("lost-final-ack")
    assert absolute.segments[1].shown == absolute.segments[1].seg.describe() != "SYN,ACK seq=0 ack=1"
