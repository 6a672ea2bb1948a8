"""Bounded memory: half-open connections given up on as Linux would, and --max-connections.

* rules.HALF_OPEN: a SYN never answered leaves the observer 127 s (capture time) after the
  client's first SYN, a SYN,ACK never acknowledged 63 s after the server's first SYN,ACK, each
  written out as it stands with close kind ``timeout`` (``--syn-timeout``, ``--syn-ack-timeout``;
  0: never);
* ``--max-connections N``: after a segment that makes N+1, the least recently active connection
  is written out as it stands, close kind ``evicted``; every connection still gets its record,
  and the end says how many were evicted.

The reference (the Python observer) is checked by hand here; the compiled lane against it, byte
for byte, on SYN floods and on every shipped capture with small limits (and in tests/test_engine.py
on the corpus and the generated captures).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from rawfin.core import observer as _observer
from rawfin.render.records import record
from rawfin.core.rules import SYN_ACK_TIMEOUT_NS, SYN_TIMEOUT_NS
from rawfin.wire.decode import make_segment

REPO = Path(__file__).resolve().parents[1]
SEC = 1_000_000_000
C, S = ("192.0.2.2", 50001), ("192.0.2.1", 80)
SYN, ACK, SYNACK, FIN = 0x02, 0x10, 0x12, 0x11


class Observer(_observer.Observer):
    """The reference observer, its typed events made into the records a user reads."""

    def feed(self, s):
        return [record(ev) for ev in super().feed(s)]

    def finish(self):
        return [record(ev) for ev in super().finish()]


def seg(src, dst, flags, seq, ack, t_s, frame):
    return make_segment(src[0], dst[0], src[1], dst[1], seq, ack, flags, 64240, b"", 0, frame, int(t_s * SEC), ())


def feed_all(obs: Observer, segs) -> list[dict]:
    out = []
    for s in segs:
        out += obs.feed(s)
    return out + obs.finish()


def conns(recs):
    return [r for r in recs if r["type"] == "connection"]


def client(i: int) -> tuple[str, int]:
    return (f"198.51.100.{i % 250 + 1}", 40000 + i)


def test_the_defaults_are_linuxs():
    assert SYN_TIMEOUT_NS == (1 + 2 + 4 + 8 + 16 + 32 + 64) * SEC      # tcp_syn_retries 6
    assert SYN_ACK_TIMEOUT_NS == (1 + 2 + 4 + 8 + 16 + 32) * SEC      # tcp_synack_retries 5


def test_a_syn_never_answered_is_given_up_on_after_127_s():
    # the SYN, two retransmissions, then a later segment of another pair moves capture time on
    segs = [seg(C, S, SYN, 1000, 0, 0, 1), seg(C, S, SYN, 1000, 0, 1, 2), seg(C, S, SYN, 1000, 0, 3, 3),
            seg(client(1), S, SYN, 5, 0, 126.9, 4), seg(client(2), S, SYN, 9, 0, 127.0, 5)]
    obs = Observer()
    out = []
    for s in segs[:4]:
        out += obs.feed(s)
    assert not conns(out)                       # 126.9 s: still waiting
    out = obs.feed(segs[4])                     # 127.0 s after the first SYN: given up on
    (rec,) = conns(out)
    assert rec["conn"] == 0 and rec["close"] == "timeout" and rec["packets"] == 3
    assert rec["final"] == {"192.0.2.2:50001": "SYN_SENT", "192.0.2.1:80": "CLOSED"}
    assert obs.by_close["timeout"] == 1
    rest = conns(obs.finish())
    assert [r["close"] for r in rest] == ["none", "none"]   # the others: the capture ended first


def test_a_syn_ack_never_acknowledged_is_given_up_on_63_s_after_it():
    segs = [seg(C, S, SYN, 1000, 0, 0, 1), seg(S, C, SYNACK, 5000, 1001, 10, 2),
            seg(client(1), S, SYN, 5, 0, 72.9, 3), seg(client(2), S, SYN, 9, 0, 73.0, 4)]
    recs = feed_all(Observer(), segs)
    first = conns(recs)[0]
    assert first["conn"] == 0 and first["close"] == "timeout"
    assert first["final"] == {"192.0.2.2:50001": "ESTABLISHED", "192.0.2.1:80": "SYN_RECEIVED"}
    # it came out when the segment at 73.0 s (10 + 63) arrived, before that segment's own records
    i = recs.index(first)
    assert recs[i + 1]["type"] == "transition" and recs[i + 1]["frame"] == 4


def test_an_answer_in_time_keeps_the_connection_and_zero_means_never():
    done = [seg(C, S, SYN, 1000, 0, 0, 1), seg(S, C, SYNACK, 5000, 1001, 100, 2), seg(C, S, ACK, 1001, 5001, 100, 3),
            seg(client(1), S, SYN, 5, 0, 500, 4)]
    assert conns(feed_all(Observer(), done))[0]["close"] == "none"
    late = [seg(C, S, SYN, 1000, 0, 0, 1), seg(client(1), S, SYN, 5, 0, 10_000, 2)]
    assert conns(feed_all(Observer(syn_timeout_ns=0), late))[0]["close"] == "none"
    assert conns(feed_all(Observer(syn_timeout_ns=5 * SEC), late))[0]["close"] == "timeout"


def test_max_connections_evicts_the_least_recently_active():
    # a, b, c open; a is active again; d opens: b (the least recently active) goes
    a, b, c, d = (client(i) for i in range(4))
    segs = [seg(a, S, SYN, 1, 0, 0, 1), seg(b, S, SYN, 2, 0, 1, 2), seg(c, S, SYN, 3, 0, 2, 3),
            seg(a, S, SYN, 1, 0, 3, 4), seg(d, S, SYN, 4, 0, 4, 5)]
    obs = Observer(max_connections=3)
    recs = feed_all(obs, segs)
    cs = conns(recs)
    assert [(r["conn"], r["close"]) for r in cs] == [(1, "evicted"), (0, "none"), (2, "none"), (3, "none")]
    assert cs[0]["final"][f"{b[0]}:{b[1]}"] == "SYN_SENT"
    assert obs.evictions == 1 and obs.by_close["evicted"] == 1
    # the eviction comes right after the segment that made four
    i = recs.index(cs[0])
    assert recs[i - 1]["frame"] == 5


def test_every_connection_keeps_its_record_under_the_limit():
    segs = [seg(client(i), S, SYN, i, 0, i / 100, i + 1) for i in range(500)]
    obs = Observer(max_connections=10)
    cs = conns(feed_all(obs, segs))
    assert sorted(r["conn"] for r in cs) == list(range(500))
    assert sum(r["close"] == "evicted" for r in cs) == 490 and len(obs.recent) == 0


def rawfin(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "rawfin", "analyze", *args], capture_output=True, timeout=300,
                          cwd=REPO)


needs_lane = pytest.mark.skipif(not __import__("rawfin.capture.engine", fromlist=["x"]).available(),
                                reason="rawfin.capture._engine is not built")


@pytest.fixture(scope="module")
def floods(tmp_path_factory):
    from flood import generate_flood
    d = tmp_path_factory.mktemp("floods")
    out = {}
    for name, syns, rate in (("dense", 3000, 1000.0), ("slow", 1500, 10.0)):
        out[name] = str(d / f"{name}.pcap")
        generate_flood(out[name], syns=syns, rate=rate, seed=7)
    return out


@needs_lane
@pytest.mark.parametrize("which,flags", [("dense", []), ("dense", ["--max-connections", "100"]),
                                         ("slow", ["--syn-timeout", "0.5", "--max-connections", "3"]),
                                         ("slow", ["--max-connections", "1"])],
                         ids=lambda f: " ".join(f) if isinstance(f, list) else f)
def test_the_lane_gives_the_references_bytes_on_floods(floods, which, flags):
    p = rawfin(floods[which], "--format", "jsonl", "--engine", "c", *flags)
    q = rawfin(floods[which], "--format", "jsonl", "--engine", "python", *flags)
    assert p.returncode == q.returncode == 0, p.stderr
    assert p.stdout == q.stdout and p.stderr == q.stderr
    recs = [json.loads(x) for x in p.stdout.splitlines()]
    syns = 3000 if which == "dense" else 1500
    assert sum(r["type"] == "connection" for r in recs) == syns     # a record for every connection


def test_the_end_says_how_many_were_evicted_and_timed_out(tmp_path):
    from flood import generate_flood
    cap = tmp_path / "f.pcap"
    generate_flood(cap, syns=300, rate=1.0, seed=3)      # one SYN a second for 300 s
    p = rawfin(str(cap), "--max-connections", "150", "--summary")    # 127 s of them at once at most
    err = p.stderr.decode()
    assert p.returncode == 0 and "173 half-open given up on (timeout)" in err and "evicted" not in err, err
    p = rawfin(str(cap), "--max-connections", "50", "--format", "csv", "--summary")
    err = p.stderr.decode()
    assert "250 evicted to stay within --max-connections" in err and "timeout" not in err, err
    assert p.stdout.count(b",evicted,") == 250 and p.stdout.count(b"\r\n") == 301


def test_a_connections_own_segment_is_not_cut_off_by_the_expiry_it_brings(tmp_path):
    # A capture whose clock jumps (corpus PcapPlusPlus__pcapng-example.pcapng: a SYN,ACK stamped 47
    # years after its SYN): the answer shows the SYN was not given up on; one connection, as tshark sees.
    segs = [seg(C, S, SYN, 1000, 0, 0, 1), seg(S, C, SYNACK, 5000, 1001, 10_000, 2),
            seg(C, S, ACK, 1001, 5001, 0.1, 3)]
    cs = conns(feed_all(Observer(), segs))
    assert [(r["conn"], r["close"], r["packets"]) for r in cs] == [(0, "none", 3)]
    assert cs[0]["final"] == {"192.0.2.2:50001": "ESTABLISHED", "192.0.2.1:80": "ESTABLISHED"}
    # (the lane against the reference on that corpus capture: tests/test_engine.py, tests/test_corpus.py)


# -- one vocabulary: every command that reads captures or live traffic through the capture pipeline
# (rawfin.capture.engine: analyze, check, annotate, live) takes the same three options

@pytest.mark.parametrize("command", ["analyze", "check", "annotate", "live"])
def test_every_capture_reading_command_takes_the_limits(command):
    from rawfin.cli import build_parser, limits

    args = build_parser().parse_args([command, "x.pcap"] if command != "live" else [command])
    assert limits(args) == {"syn_timeout_ns": SYN_TIMEOUT_NS, "syn_ack_timeout_ns": SYN_ACK_TIMEOUT_NS}
    argv = [command, "--syn-timeout", "5", "--syn-ack-timeout", "0", "--max-connections", "7"]
    args = build_parser().parse_args(argv + (["x.pcap"] if command != "live" else []))
    assert limits(args) == {"syn_timeout_ns": 5 * SEC, "syn_ack_timeout_ns": 0, "max_connections": 7}
    for bad in ("-1", "nan", "soon"):
        with pytest.raises(SystemExit):
            build_parser().parse_args([command, "--syn-timeout", bad])


def test_seconds_and_timeouts_share_one_parser():
    import argparse

    from rawfin.cli import seconds, timeout

    assert seconds("1.5") == timeout("1.5") == 1.5 and timeout("0") == 0.0
    for parse, bad, says in ((seconds, "0", "above 0"), (timeout, "-1", "0 or more (0: never)"),
                             (seconds, "inf", "above 0"), (timeout, "x", "is not a number of seconds")):
        with pytest.raises(argparse.ArgumentTypeError, match=r"\(?" + says.replace("(", r"\(").replace(")", r"\)")):
            parse(bad)


def _cli(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "rawfin", *argv], capture_output=True, timeout=300, cwd=REPO)


@pytest.mark.parametrize("engine", ["c", "python"])
def test_check_fails_what_it_could_not_follow_to_its_end(tmp_path, engine):
    """check under --max-connections: an evicted connection was not followed to its end (a failure
    unless --allow-incomplete); a half-open one given up on never closed (unless --allow-open)."""
    from flood import generate_flood
    from rawfin.capture import engine as lane

    if engine == "c" and not lane.available():
        pytest.skip("rawfin.capture._engine is not built")
    cap = tmp_path / "f.pcap"
    generate_flood(cap, syns=300, rate=1.0, seed=3)      # one SYN a second for 300 s
    p = _cli("check", str(cap), "--engine", engine, "--max-connections", "50", "--format", "jsonl")
    recs = [json.loads(x) for x in p.stdout.splitlines()]
    assert p.returncode == 1 and len(recs) == 300
    evicted = [r for r in recs if r["close"] == "evicted"]
    assert len(evicted) == 250 and all(r["check"] == "fail" for r in evicted)
    assert {f["problem"] for r in evicted for f in r["failures"]} == {"not followed to its end"}
    p = _cli("check", str(cap), "--engine", engine, "--syn-timeout", "10", "--format", "jsonl")
    recs = [json.loads(x) for x in p.stdout.splitlines()]
    assert sum(r["close"] == "timeout" for r in recs) == 290 and p.returncode == 1     # the last 10 s: "none"
    assert {f["problem"] for r in recs for f in r["failures"]} == {"never closed"}
    assert sum("given up on" in f["detail"] for r in recs for f in r["failures"]) == 290
    assert _cli("check", str(cap), "--engine", engine, "--syn-timeout", "10", "--allow-open").returncode == 0
    p = _cli("check", str(cap), "--engine", engine, "--max-connections", "50", "--allow-incomplete")
    assert p.returncode == 0, p.stdout


@pytest.mark.parametrize("engine", ["c", "python"])
def test_annotate_takes_the_limits(tmp_path, engine):
    from flood import generate_flood
    from rawfin.capture import engine as lane

    if engine == "c" and not lane.available():
        pytest.skip("rawfin.capture._engine is not built")
    cap = tmp_path / "f.pcap"
    generate_flood(cap, syns=200, rate=1000.0, seed=4)
    plain, bounded = tmp_path / "plain.pcapng", tmp_path / "bounded.pcapng"
    assert _cli("annotate", str(cap), "-o", str(plain), "--engine", engine).returncode == 0
    p = _cli("annotate", str(cap), "-o", str(bounded), "--engine", engine, "--max-connections", "20")
    assert p.returncode == 0, p.stderr
    assert b"close evicted" not in plain.read_bytes()
    assert bounded.read_bytes().count(b"close evicted") == 180     # a comment on each evicted one's SYN


def test_the_jsonl_ends_each_capture_with_its_counts(tmp_path):
    """The eviction and timeout counts in the machine output: a ``stats`` record (the type live ends
    with) after each capture's records; not with --summary (connection records only)."""
    from flood import generate_flood

    a, b = tmp_path / "a.pcap", tmp_path / "b.pcap"
    generate_flood(a, syns=300, rate=1.0, seed=3)
    generate_flood(b, syns=100, rate=1000.0, seed=5)
    for engine in ("c", "python"):
        p = rawfin(str(a), str(b), "--format", "jsonl", "--max-connections", "50", "--engine", engine)
        recs = [json.loads(x) for x in p.stdout.splitlines()]
        stats = [(i, r) for i, r in enumerate(recs) if r["type"] == "stats"]
        assert [r for _, r in stats] == [
            {"type": "stats", "file": str(a), "frames": 300, "filtered": 0, "segments": 300, "connections": 300,
             "timeout": 0, "evicted": 250},
            {"type": "stats", "file": str(b), "frames": 100, "filtered": 0, "segments": 100, "connections": 100,
             "timeout": 0, "evicted": 50}]
        assert stats[0][0] == 600 and stats[1][0] == len(recs) - 1 == 801     # each after its capture's records (2 a SYN)
        assert sum(r.get("close") == "evicted" for r in recs) == 300
    p = rawfin(str(a), "--format", "jsonl", "--summary", "--max-connections", "50")
    assert [json.loads(x)["type"] for x in p.stdout.splitlines()] == ["connection"] * 300


def test_a_damaged_capture_still_gets_its_counts(tmp_path):
    from flood import generate_flood

    a = tmp_path / "a.pcap"
    generate_flood(a, syns=100, rate=1000.0, seed=5)
    data = a.read_bytes()
    a.write_bytes(data[: len(data) - 30])       # the last frame cut short
    p = rawfin(str(a), "--format", "jsonl")
    assert p.returncode == 65
    last = json.loads(p.stdout.splitlines()[-1])
    assert last["type"] == "stats" and last["frames"] == 99 and last["connections"] == 99
    assert "frame 100" in last["error"]


@pytest.mark.parametrize("lane", [True, False], ids=["lane", "python"])
def test_live_streams_take_the_limits(lane, tmp_path):
    """``rawfin live``'s pipeline (rawfin.capture.engine.Stream) with --max-connections and the
    half-open timeouts: the records a file's run gives, and the counts (the live test with a real
    interface: tests/test_live.py)."""
    from flood import generate_flood
    from rawfin.capture import engine
    from rawfin.render.records import json_line
    from rawfin.wire.pcapio import open_capture

    if lane and not engine.available():
        pytest.skip("rawfin.capture._engine is not built")
    cap = tmp_path / "f.pcap"
    generate_flood(cap, syns=300, rate=1.0, seed=3)
    lims = {"syn_timeout_ns": 100 * SEC, "syn_ack_timeout_ns": SYN_ACK_TIMEOUT_NS, "max_connections": 50}
    out: list[bytes] = []
    st = engine.Stream(out.append, json_of=json_line(None), hold_ns=0, lane=lane, limits=lims)
    with open_capture(str(cap)) as r:
        for fr in r:
            st.feed(fr.linktype, fr.data, fr.orig_len, fr.frame, fr.time_ns)
    st.flush()
    counts = st.finish()
    recs = [json.loads(x) for x in b"".join(out).splitlines()]
    closes = [r["close"] for r in recs if r["type"] == "connection"]
    assert len(closes) == 300 and counts["connections"] == 300
    assert counts["by_close"]["evicted"] == closes.count("evicted") == 250
    assert counts["by_close"].get("timeout", 0) == closes.count("timeout") == 0
