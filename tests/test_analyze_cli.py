"""`rawfin analyze` and `rawfin check` as a user runs them: formats, bad input, exit codes."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from rawfin.sim import craft
from rawfin.wire.codec import to_bytes
from rawfin.wire.pcapio import LINKTYPE_RAW, PcapWriter

SEC = 1_000_000_000


def write(path, segs):
    with PcapWriter(str(path), linktype=LINKTYPE_RAW) as w:
        for s in segs:
            w.write(to_bytes(s), time_ns=s.time_ns)
    return str(path)


def cli(*args, check=False, env=None):
    import os
    p = subprocess.run([sys.executable, "-m", "rawfin", *args], capture_output=True, text=True, timeout=120,
                       env=None if env is None else {**os.environ, **env})
    assert "Traceback" not in p.stderr, p.stderr
    return p


@pytest.fixture
def two_conns(tmp_path):
    a = craft.connection(close="4way", closer="client")
    b = craft.connection(("192.0.2.3", 40000), ("192.0.2.1", 443), close="4way", closer="server",
                         start_ns=a[-1].time_ns + SEC)
    return write(tmp_path / "two.pcap", a + b)


def test_jsonl_contract(two_conns):
    p = cli("analyze", two_conns, "--format", "jsonl")
    assert p.returncode == 0
    recs = [json.loads(line) for line in p.stdout.splitlines()]
    assert {r["type"] for r in recs} == {"transition", "connection", "stats"}
    assert recs[-1] == {"type": "stats", "frames": 20, "filtered": 0, "segments": 20, "connections": 2, "timeout": 0,
                        "evicted": 0}
    t = next(r for r in recs if r["type"] == "transition")
    assert list(t) == ["type", "conn", "frame", "time", "endpoint", "peer", "from", "to", "cause"]
    assert t["frame"] == 1 and t["conn"] == 0
    cs = [r for r in recs if r["type"] == "connection"]
    assert [c["conn"] for c in cs] == [0, 1]
    assert cs[1]["server_active_close"] is True and cs[1]["server"] == "192.0.2.1:443"
    assert p.stderr.count("\n") == 1 and "2 connections" in p.stderr   # the one-line summary on stderr


def test_table_and_summary(two_conns):
    p = cli("analyze", two_conns)
    assert "conn 0: client 192.0.2.2:50001 → server 192.0.2.1:80" in p.stdout
    assert "ESTABLISHED → FIN_WAIT_1" in p.stdout
    assert max(len(line) for line in p.stdout.splitlines()) <= 100
    s = cli("analyze", two_conns, "--summary")
    assert "four_way by SERVER" in s.stdout
    assert "1 closed first by the server" in s.stdout


@pytest.mark.parametrize("engine", ["auto", "python"])
def test_summary_is_one_record_per_connection_in_every_format(two_conns, tmp_path, engine):
    import csv
    import io
    from rawfin.render.sinks import CSV_SUMMARY_COLUMNS
    three = write(tmp_path / "b.pcap", craft.connection(close="3way"))
    j = cli("analyze", two_conns, three, "--summary", "--format", "jsonl", "--engine", engine)
    recs = [json.loads(x) for x in j.stdout.splitlines()]
    assert [(r["type"], r["conn"]) for r in recs] == [("connection", 0), ("connection", 1), ("connection", 0)]
    assert [r["file"] for r in recs] == [two_conns, two_conns, three]
    c = cli("analyze", two_conns, three, "--summary", "--format", "csv", "--engine", engine)
    rows = list(csv.reader(io.StringIO(c.stdout)))
    assert tuple(rows[0]) == CSV_SUMMARY_COLUMNS and len(rows) == 4
    by = [dict(zip(rows[0], r)) for r in rows[1:]]
    assert [(r["conn"], r["close"], r["packets"]) for r in by] == [("0", "four_way", "10"), ("1", "four_way", "10"),
                                                                   ("0", "three_way", "9")]
    assert by[1]["passive_closer"] == "192.0.2.3:40000" and by[0]["first_time"] and by[0]["vlan"] == ""
    t = cli("analyze", two_conns, three, "--summary", "--engine", engine)
    assert len([x for x in t.stdout.splitlines() if "#" in x]) == 3, t.stdout


@pytest.mark.parametrize("columns", ["60", "80", "132"])
def test_tables_fit_the_terminal_and_lose_nothing(tmp_path, columns):
    """COLUMNS sets the width (100 when it is not set and stdout is not a terminal); long cells wrap."""
    v6 = craft.connection(("2001:db8:4:5:6:7:8:9", 50001), ("2001:db8::1", 443), close="4way", closer="server")
    cap = write(tmp_path / "v6.pcap", v6)
    for argv in ([cap], [cap, "--summary"], [cap, cap]):
        wide = cli("analyze", *argv, env={"COLUMNS": "1000"})
        p = cli("analyze", *argv, env={"COLUMNS": columns})
        assert p.returncode == 0 and max(len(x) for x in p.stdout.splitlines()) <= int(columns), p.stdout
        # every character of the wide table is still there (the rules aside; a wrapped row's cells
        # share its lines, so the order changes)
        def text(out: str) -> list[str]:
            return sorted("".join(w for w in out.split() if set(w) != {"-"}))
        assert text(p.stdout) == text(wide.stdout)


def test_csv_filter_and_conn(two_conns):
    """--filter is tcpdump's language on frames: only the port-443 connection's frames are
    analysed (it is then the only connection, numbered 0; frame numbers stay the file's)."""
    p = cli("analyze", two_conns, "--format", "jsonl", "--filter", "port 443")
    recs = [json.loads(x) for x in p.stdout.splitlines()]
    conns = [r for r in recs if r["type"] == "connection"]
    assert [(c["conn"], c["server"], c["first_frame"]) for c in conns] == [(0, "192.0.2.1:443", 11)]
    assert "(10 matched the filter)" in p.stderr
    q = cli("analyze", two_conns, "--format", "jsonl", "--conn", "0")
    assert {json.loads(x)["conn"] for x in q.stdout.splitlines()} == {0}
    bad = cli("analyze", two_conns, "--filter", "tcp prot 80")
    assert bad.returncode == 2 and "bad filter 'tcp prot 80'" in bad.stderr


def test_several_files_carry_file(two_conns, tmp_path):
    other = write(tmp_path / "b.pcap", craft.connection(close="3way"))
    p = cli("analyze", two_conns, other, "--format", "jsonl")
    files = {json.loads(x)["file"] for x in p.stdout.splitlines()}
    assert files == {two_conns, other}


def test_truncated_file_reports_everything_before_the_damage(two_conns, tmp_path):
    data = open(two_conns, "rb").read()
    cut = tmp_path / "cut.pcap"
    cut.write_bytes(data[:-7])
    p = cli("analyze", str(cut), "--format", "jsonl")
    assert p.returncode == 65
    recs = [json.loads(x) for x in p.stdout.splitlines()]
    assert [r["conn"] for r in recs if r["type"] == "connection"] == [0, 1]
    err = [line for line in p.stderr.splitlines() if line.startswith("rawfin")]
    assert len(err) == 1 and str(cut) in err[0] and "frame" in err[0]


def test_corrupt_record_in_the_middle(two_conns, tmp_path):
    data = bytearray(open(two_conns, "rb").read())
    # the 4th record's captured length: walk the records
    off = 24
    for _ in range(3):
        off += 16 + int.from_bytes(data[off + 8:off + 12], "little")
    data[off + 8:off + 12] = (0x7FFFFFF0).to_bytes(4, "little")
    bad = tmp_path / "corrupt.pcap"
    bad.write_bytes(bytes(data))
    p = cli("analyze", str(bad), "--format", "jsonl")
    assert p.returncode == 65
    assert "frame 4" in p.stderr
    assert [json.loads(x)["frame"] for x in p.stdout.splitlines() if '"transition"' in x][0] == 1


@pytest.mark.parametrize("content,needle", [(b"hello, this is text\n" * 3, "not a pcap"),
                                             (b"snoop\x00\x00\x00" + b"\x00" * 40, "not a pcap"),
                                             (b"", "not a pcap")])
def test_not_a_capture(tmp_path, content, needle):
    f = tmp_path / "x.pcap"
    f.write_bytes(content)
    p = cli("analyze", str(f))
    assert p.returncode == 65 and needle in p.stderr and str(f) in p.stderr
    assert p.stdout == ""


def test_missing_file():
    p = cli("analyze", "/nonexistent/x.pcap")
    assert p.returncode == 66 and "/nonexistent/x.pcap" in p.stderr


def test_malformed_packet_inside_a_valid_file_is_an_anomaly(tmp_path):
    segs = craft.connection(close="4way")
    with PcapWriter(str(tmp_path / "m.pcap"), linktype=LINKTYPE_RAW) as w:
        for i, s in enumerate(segs):
            raw = to_bytes(s)
            if i == 4:
                raw = raw[:20] + b"\x00" * 4      # TCP header cut inside
            w.write(raw, time_ns=s.time_ns)
    p = cli("analyze", str(tmp_path / "m.pcap"), "--format", "jsonl")
    assert p.returncode == 0
    recs = [json.loads(x) for x in p.stdout.splitlines()]
    mal = [r for r in recs if r["type"] == "anomaly" and r["kind"] == "malformed_packet"]
    assert len(mal) == 1 and mal[0]["frame"] == 5


def test_check_passes_and_fails(tmp_path):
    good = write(tmp_path / "good.pcap", craft.connection(close="4way", closer="client"))
    p = cli("check", good)
    assert p.returncode == 0 and "PASS" in p.stdout
    segs = craft.connection(close="4way")
    fin, ack, fin2, last = segs[-4:]
    off = write(tmp_path / "off.pcap", segs[:-4] + [fin, ack.with_(ack=fin.seq), fin2.with_(ack=fin.seq)])
    q = cli("check", off)
    assert q.returncode == 1 and "FAIL: 0 of 1" in q.stdout
    j = cli("check", off, "--format", "jsonl")
    (rec,) = [json.loads(x) for x in j.stdout.splitlines()]
    assert rec["check"] == "fail"
    first = rec["failures"][0]
    assert first["problem"] == "the ACK does not cover the FIN" and first["frame"] == len(segs) - 2
    assert f"expected {fin.seq + 1}" in first["detail"]
    rst = write(tmp_path / "rst.pcap", craft.connection(close="rst"))
    assert cli("check", rst).returncode == 1
    assert cli("check", rst, "--allow-reset").returncode == 0
    server = write(tmp_path / "srv.pcap", craft.connection(close="4way", closer="server"))
    assert cli("check", server).returncode == 1
    assert cli("check", server, "--allow-server-close").returncode == 0
    inc = write(tmp_path / "inc.pcap", craft.connection(close="4way")[:-1])
    assert cli("check", inc).returncode == 1
    assert cli("check", inc, "--allow-incomplete").returncode == 0


def test_states_prints_the_table_fast():
    p = cli("states")
    assert p.returncode == 0
    assert "FIN_WAIT_2" in p.stdout and "TIME_WAIT" in p.stdout and "CLOSING" in p.stdout
    assert max(len(line) for line in p.stdout.splitlines()) <= 100
    # rawfin states does not pay for Scapy's import
    code = "import sys; from rawfin.cli import main; main(['states']); print('scapy' in sys.modules)"
    q = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert q.stdout.strip().endswith("False")


def test_check_flags_an_ack_past_the_fin(tmp_path):
    segs = craft.connection(close="4way")
    fin, ack, fin2, last = segs[-4:]
    bad = write(tmp_path / "past.pcap", segs[:-4] + [fin, ack.with_(ack=fin.seq + 2), fin2.with_(ack=fin.seq + 2),
                                                      last])
    p = cli("check", bad, "--format", "jsonl")
    assert p.returncode == 1
    (rec,) = [json.loads(x) for x in p.stdout.splitlines()]
    f = rec["failures"][0]
    assert f["problem"] == "an ACK past the FIN" and f"expected at most {fin.seq + 1}" in f["detail"]
    assert f["frame"] == len(segs) - 2
