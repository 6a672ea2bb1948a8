"""The benchmark's capture generator makes a valid capture that says what it claims.

No timing here: ``python tools/bench.py`` reports speeds; tests only check that the
capture it measures is right (packet count, connections, close kinds, checksums).
"""

from __future__ import annotations

import shutil
import subprocess
from collections import Counter

import pytest

import bench
from rawfin.capture.analysis import CaptureStats, records
from rawfin.wire.pcapio import LINKTYPE_ETHERNET, open_capture
from rawfin.render.records import record

PACKETS, CONNECTIONS = 2_000, 200
TSHARK = shutil.which("tshark")


@pytest.fixture(scope="module")
def capture(tmp_path_factory):
    path = tmp_path_factory.mktemp("bench") / "small.pcap"
    return bench.generate(path, packets=PACKETS, connections=CONNECTIONS)


def test_packet_count_and_link_type(capture):
    with open_capture(capture.path) as cap:
        assert cap.format == "pcap"
        assert cap.linktype == LINKTYPE_ETHERNET
        frames = list(cap)
    assert len(frames) == PACKETS == capture.packets
    times = [f.time_ns for f in frames]
    assert times == sorted(times)
    assert capture.ipv6_connections > 0
    assert capture.max_open > 1


def test_deterministic(capture, tmp_path):
    again = bench.generate(tmp_path / "again.pcap", packets=PACKETS, connections=CONNECTIONS)
    with open(capture.path, "rb") as a, open(again.path, "rb") as b:
        assert a.read() == b.read()


def test_rawfin_reads_connections_and_closes(capture):
    stats = CaptureStats(path=capture.path)
    recs = list(records(capture.path, stats=stats, record=record))
    conns = [r for r in recs if r["type"] == "connection"]
    assert stats.frames == stats.tcp == PACKETS
    assert len(conns) == CONNECTIONS
    assert dict(Counter(r["close"] for r in conns)) == capture.closes
    assert sum(r["server_active_close"] for r in conns) == capture.server_first
    assert sum(r["packets"] for r in conns) == PACKETS
    # every connection starts with its SYN and nothing looks wrong to the observer, except a server's RST,ACK
    # right after a request it never answered: probably close() with the request unread
    assert not any(r["mid_stream"] for r in conns)
    assert [r["anomalies"] for r in conns if r["anomalies"]] == [{"close_with_unread_data": 1}] * capture.unread_resets
    kinds = Counter(r["kind"] for r in recs if r["type"] == "anomaly")
    assert kinds == ({"close_with_unread_data": capture.unread_resets} if capture.unread_resets else {})
    assert len({(r["client"], r["server"]) for r in conns}) == CONNECTIONS


def test_counts_add_up(capture):
    assert sum(capture.closes.values()) == CONNECTIONS
    assert sum(k for _c, _who, k in capture.mix) == CONNECTIONS
    with pytest.raises(ValueError, match="too few"):
        bench.generate("/nonexistent/x.pcap", packets=CONNECTIONS, connections=CONNECTIONS)


def test_scapy_agrees_with_the_checksums(capture):
    from scapy.layers.inet import IP, TCP
    from scapy.layers.inet6 import IPv6
    from scapy.layers.l2 import Ether
    from scapy.utils import PcapReader

    seen = Counter()
    with PcapReader(capture.path) as reader:
        for n, pkt in enumerate(reader):
            if n % 7 and n > 50:          # every packet of the first 50, then every seventh
                continue
            assert TCP in pkt, pkt.summary()
            raw = bytes(pkt)
            again = Ether(raw)
            del again[TCP].chksum
            if IP in again:
                del again[IP].chksum
                seen["ipv4"] += 1
            else:
                assert IPv6 in again
                seen["ipv6"] += 1
            rebuilt = bytes(again)
            assert rebuilt == raw, f"packet {n + 1}: {pkt.summary()}: Scapy computes other checksums"
            seen["payload" if len(pkt[TCP].payload) else "bare"] += 1
    assert seen["ipv4"] and seen["ipv6"] and seen["payload"] and seen["bare"]


@pytest.mark.parametrize("data", [b"", b"\x01", b"\x00\x00", b"\xff\xff", b"abc", bytes(range(256)) * 3])
def test_checksum_matches_scapy(data):
    from scapy.utils import checksum

    assert bench.checksum(data) == checksum(data)


@pytest.mark.tshark
@pytest.mark.skipif(TSHARK is None, reason="tshark is not installed (apt-get install tshark)")
def test_tshark_counts_the_same_conversations(capture):
    out = subprocess.run([TSHARK, "-r", capture.path, "-q", "-z", "conv,tcp"], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert bench.count_conversations(out.stdout) == CONNECTIONS


@pytest.mark.tshark
@pytest.mark.skipif(TSHARK is None, reason="tshark is not installed (apt-get install tshark)")
def test_tshark_finds_checksums_good_and_no_tcp_analysis_warnings(capture):
    out = subprocess.run([TSHARK, "-n", "-r", capture.path, "-o", "tcp.check_checksum:TRUE",
                          "-o", "ip.check_checksum:TRUE", "-T", "fields", "-e", "ip.checksum.status",
                          "-e", "tcp.checksum.status", "-e", "tcp.analysis.flags"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    rows = [line.split("\t") for line in out.stdout.splitlines()]
    assert len(rows) == PACKETS
    assert all(ip in ("", "1") and tcp == "1" for ip, tcp, _ in rows)
    # no lost segments, ACKs of unseen data, retransmissions, window trouble ...
    assert [n for n, (_ip, _tcp, flags) in enumerate(rows, 1) if flags] == []


def test_a_childs_peak_memory_is_its_own_whatever_the_benchmark_holds():
    """A child's ru_maxrss counts the address space it was forked from; bench measures through a
    small starter, so a benchmark that holds 200 MB (a flood it just generated) reads a command's
    own peak, and the exit code comes through."""
    import os
    import sys

    held = bytearray(200 * 2**20)
    held[::4096] = b"x" * len(held[::4096])          # resident
    with open(os.devnull, "wb") as out:
        _wall, _cpu, rss, rc, _err = bench.run_child([sys.executable, "-c", "pass"], out)
        assert rc == 0 and rss < 100, rss
        code = "b = bytearray(120 * 2**20); b[::4096] = b'x' * len(b[::4096]); raise SystemExit(3)"
        _wall, _cpu, rss2, rc, _err = bench.run_child([sys.executable, "-c", code], out)
        assert rc == 3 and 120 < rss2 < 200, rss2
    del held
