"""Captures named as tcpdump and tshark users name them, and tcpdump's filter language.

-r FILE (repeatable), '-' for standard input (pcap and pcapng streams), gzip-compressed files,
directories; --filter compiled by libpcap, checked against the real tcpdump writing the
filtered capture itself; -q.
"""

from __future__ import annotations

import gzip
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import shared_corpus
from rawfin import cli
from rawfin.capture import engine
from rawfin.capture.analysis import CaptureStats, records
from rawfin.core.errors import CaptureError
from rawfin.wire import bpf
from rawfin.render.records import json_line, record

ROOT = Path(__file__).resolve().parent.parent
CAPTURES = ROOT / "captures"
CORPUS = shared_corpus.CAPTURES

needs_libpcap = pytest.mark.skipif(not bpf.available(), reason="libpcap is not installed (Debian: libpcap0.8)")
needs_tcpdump = pytest.mark.skipif(shutil.which("tcpdump") is None, reason="tcpdump is not installed")
ENGINES = ["c", "python"] if engine.available() else ["python"]


def rawfin(*argv: str, stdin: bytes | None = None) -> subprocess.CompletedProcess:
    p = subprocess.run([sys.executable, "-m", "rawfin", *argv], input=stdin, capture_output=True, cwd=ROOT,
                       timeout=120)
    assert b"Traceback" not in p.stderr, p.stderr.decode()
    return p


def pcapng_copy(src: Path, dst: Path) -> Path:
    from rawfin.wire.pcapio import PcapngWriter, open_capture

    with open_capture(str(src)) as r, PcapngWriter(str(dst)) as w:
        added = 0
        for fr in r:
            while added < len(r.interfaces):
                w.add_source_interface(r.interfaces[added])
                added += 1
            w.write_frame(fr, r.interfaces[fr.iface])
    return dst


@pytest.mark.parametrize("eng", ENGINES)
@pytest.mark.parametrize("fmt", ["jsonl", "table"])
def test_stdin_and_gzip_read_as_the_file(tmp_path, eng, fmt):
    """`tcpdump -w - | rawfin analyze -` and `rawfin analyze trace.pcap.gz`: the file's output,
    for a classic pcap and a pcapng stream; the statistics line names '-' and the .gz file."""
    for src in (CAPTURES / "lost-final-ack.pcap", pcapng_copy(CAPTURES / "port-reuse.pcap", tmp_path / "p.pcapng")):
        want = rawfin("analyze", "--format", fmt, "--engine", eng, str(src))
        assert want.returncode == 0 and want.stdout
        piped = rawfin("analyze", "--format", fmt, "--engine", eng, "-", stdin=src.read_bytes())
        assert (piped.returncode, piped.stdout) == (0, want.stdout)
        assert piped.stderr.decode().startswith("-: ")
        gz = tmp_path / (src.name + ".gz")
        gz.write_bytes(gzip.compress(src.read_bytes()))
        z = rawfin("analyze", "--format", fmt, "--engine", eng, "-r", str(gz))
        assert (z.returncode, z.stdout) == (0, want.stdout)
        assert z.stderr.decode().startswith(f"{gz}: ")


@pytest.mark.skipif(not engine.available(), reason="the compiled lane is not built")
def test_a_big_stream_goes_through_the_lane_as_fast_as_a_file(tmp_path):
    """A generated capture of 20,000 packets: stdin and .gz give the file's bytes, and the lane
    (not the reference) read them: the python_calls counter stays that of the file."""
    from bench import generate
    from rawfin.capture.sources import Source, opened

    cap = tmp_path / "b.pcap"
    generate(cap, packets=20_000, connections=2_000, seed=5)
    gz = tmp_path / "b.pcap.gz"
    gz.write_bytes(gzip.compress(cap.read_bytes(), 1))
    outs, calls = [], []
    for src in (Source(str(cap)), Source(str(gz), "gzip")):
        buf, seen = bytearray(), {}
        with opened(src) as (name, f):
            assert engine.run(name, buf.extend, fileobj=f, counters=seen, json_of=json_line(None))
        outs.append(bytes(buf))
        calls.append(seen["python_calls"])
    assert outs[0] == outs[1] and outs[0].count(b'"type":"connection"') == 2_000
    assert calls[0] == calls[1]


def test_damaged_gzip_reports_what_came_before(tmp_path):
    data = gzip.compress((CAPTURES / "port-reuse.pcap").read_bytes())
    cut = tmp_path / "cut.pcap.gz"
    cut.write_bytes(data[: len(data) - 40])
    for eng in ENGINES:
        p = rawfin("analyze", "--format", "jsonl", "--engine", eng, str(cut))
        assert p.returncode == 65
        err = p.stderr.decode()
        assert "cut.pcap.gz" in err and "compressed data cut short" in err
        assert b'"type":"transition"' in p.stdout


def test_directory_in_name_order_and_r_options(tmp_path):
    d = tmp_path / "caps"
    d.mkdir()
    for name in ("b-lost-final-ack.pcap", "a-normal-close.pcap"):
        shutil.copy(CAPTURES / name[2:], d / name)
    (d / "notes.txt").write_text("not a capture\n")
    (d / "sub").mkdir()
    shutil.copy(CAPTURES / "rst-abort.pcap", d / "sub" / "c.pcap")
    p = rawfin("analyze", "--format", "jsonl", str(d), "-r", str(CAPTURES / "rst-abort.pcap"))
    assert p.returncode == 0
    files = [json.loads(x)["file"] for x in p.stdout.splitlines() if b'"connection"' in x]
    assert files == [str(d / "a-normal-close.pcap"), str(d / "b-lost-final-ack.pcap"),
                     str(CAPTURES / "rst-abort.pcap")]
    err = p.stderr.decode()
    assert f"{d / 'notes.txt'}: not a capture, passed over" in err
    q = rawfin("analyze", "-q", "--summary", "-r", str(CAPTURES / "rst-abort.pcap"))
    assert q.returncode == 0 and q.stderr == b"" and b"reset" in q.stdout
    none = rawfin("analyze", "--summary")
    assert none.returncode == 2 and b"no capture given" in none.stderr
    empty = tmp_path / "empty"
    empty.mkdir()
    assert rawfin("analyze", str(empty)).returncode == 2
    assert rawfin("analyze", "-", "-", stdin=b"").returncode == 2


def test_check_reads_the_same_inputs(tmp_path):
    gz = tmp_path / "n.pcap.gz"
    gz.write_bytes(gzip.compress((CAPTURES / "normal-close.pcap").read_bytes()))
    assert rawfin("check", "-r", str(gz)).returncode == 0
    assert rawfin("check", "-", stdin=(CAPTURES / "rst-abort.pcap").read_bytes()).returncode == 1


@needs_libpcap
@needs_tcpdump
@pytest.mark.parametrize("expr", ["tcp port 80", "src host 192.168.1.140", "not port 80",
                                  "tcp[tcpflags] & (tcp-fin|tcp-rst) != 0", "ip6", "host 10.0.0.1 or port 443"])
def test_filter_means_what_it_means_to_tcpdump(tmp_path, expr):
    """The real tcpdump writes the filtered capture; rawfin --filter on the original analyses the
    same frames: the same TCP segment count, the same connections (but for frame numbers, which
    rawfin keeps as the original file's and tcpdump renumbers)."""
    caps = sorted(CORPUS.glob("*.pcap")) if CORPUS.is_dir() else []
    caps += [CAPTURES / "lost-final-ack.pcap"]
    for cap in caps:
        out = tmp_path / "f.pcap"
        t = subprocess.run(["tcpdump", "-r", str(cap), "-w", str(out), expr], capture_output=True)
        if t.returncode != 0:       # a link type tcpdump cannot filter on: rawfin must say so too
            continue
        def conns(path, select=None):
            stats = CaptureStats(path=str(path))
            drop = ("first_frame", "last_frame", "first_time", "last_time")   # tcpdump -w writes µs
            try:
                got = [{k: v for k, v in r.items() if k not in drop}
                       for r in records(str(path), bpf=select, stats=stats, record=record) if r["type"] == "connection"]
            except CaptureError:
                return None, None
            return got, stats.tcp
        theirs = conns(out)
        if theirs[0] is None:
            continue                # tcpdump copies a damaged file's good part only
        assert conns(cap, bpf.Filter(expr)) == theirs, cap


@needs_libpcap
def test_filter_on_a_mixed_link_type_pcapng_and_stdin():
    """A pcapng whose interfaces have different link types: one program per link type."""
    cap = CORPUS / "PcapPlusPlus__many_interfaces-1.pcapng"
    if not cap.exists():
        pytest.skip("corpus capture missing")
    outs = [rawfin("analyze", "--summary", "--engine", eng, "--filter", "tcp and port 443", str(cap))
            for eng in ENGINES]
    assert all(o.returncode == 0 for o in outs)
    assert len({(o.stdout, o.stderr) for o in outs}) == 1
    piped = rawfin("analyze", "--summary", "--filter", "tcp and port 443", "-", stdin=cap.read_bytes())
    assert piped.stdout == outs[0].stdout


def test_without_libpcap_filter_is_a_usage_error_that_says_so(monkeypatch, capsys):
    monkeypatch.setattr(bpf, "_load", lambda: None)
    assert cli.main(["analyze", "--filter", "port 80", str(CAPTURES / "normal-close.pcap")]) == 2
    err = capsys.readouterr().err
    assert "libpcap" in err and "apt-get install libpcap0.8" in err
    assert cli.main(["analyze", "-q", str(CAPTURES / "normal-close.pcap")]) == 0


def test_w_is_write_and_r_names_the_one_capture(tmp_path):
    out = tmp_path / "c.pcap"
    assert rawfin("craft", "4way", "-w", str(out)).returncode == 0 and out.stat().st_size > 24
    ann = tmp_path / "c.rawfin.pcapng"
    assert rawfin("annotate", "-r", str(out), "-o", str(ann)).returncode == 0 and ann.exists()
    assert rawfin("annotate", str(out), "-r", str(CAPTURES / "rst-abort.pcap")).returncode == 2
    rp = rawfin("replay", "-r", str(CAPTURES / "normal-close.pcap"), "--as", "client", "--format", "jsonl")
    assert rp.returncode == 0 and b'"type":"verdict"' in rp.stdout
