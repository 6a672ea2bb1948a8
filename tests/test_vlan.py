"""VLAN views of one connection: counted once.

A capture can see each packet twice: on a trunk port with its 802.1Q tag and on an access port
without, or with one tag and again with two (QinQ on the way to the capture point). tshark counts
such a connection once (its tcp.stream has no VLAN in it; the second copy of each packet is flagged
as a retransmission), and so does Zeek with its default connection key (the five-tuple; the
policy script frameworks/conn_key/vlan_fivetuple adds the VLAN ids for overlapping address
spaces). tcpdump follows no connections; its filter reads `tcp port 80` on untagged frames only
(libpcap's `vlan` keyword is needed for the tagged ones).

rawfin keeps the VLAN ids in the key (two connections of the same pair on two VLANs, overlapping
address spaces, stay two: their sequence numbers are their own), and a pair seen again on another
VLAN view whose sequence numbers are the same connection's (Connection.copy_of: a SYN with the
sender's ISN; any other segment within what both sides have sent) is the same connection: that
view's segments are copies, counted (``passed over: N vlan-copy`` on stderr, ``passed_over`` in the
jsonl ``stats`` record) and not analysed twice. One direction on one VLAN and the other on another
(a router on a stick) is one connection, as before. The compiled lane hands such pairs to the Python
observer, which decides; its bytes are the reference's.
"""

from __future__ import annotations

import json
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from bench import generate
from rawfin.capture import engine

ROOT = Path(__file__).resolve().parents[1]
ENGINES = ["c", "python"] if engine.available() else ["python"]


def _tag(data: bytes, ids: tuple[int, ...]) -> bytes:
    tags = b"".join(struct.pack("!HH", 0x88A8 if k == 0 and len(ids) > 1 else 0x8100, v) for k, v in enumerate(ids))
    return data[:12] + tags + data[12:]


def _twice(src: Path, dst: Path, first: tuple[int, ...], second: tuple[int, ...], delay_ns: int = 1500) -> int:
    """Every frame of ``src`` on VLAN view ``first``, and again ``delay_ns`` later on ``second``
    (in time order, so copies fall between later frames); returns the frames of ``src``."""
    from rawfin.wire.pcapio import PcapWriter, open_capture

    frames = list(open_capture(src))
    out = sorted([(fr.time_ns, 0, i, _tag(fr.data, first)) for i, fr in enumerate(frames)]
                 + [(fr.time_ns + delay_ns, 1, i, _tag(fr.data, second)) for i, fr in enumerate(frames)])
    with PcapWriter(dst, linktype=frames[0].linktype) as w:
        for t, _, _, data in out:
            w.write(data, t, len(data))
    return len(frames)


def _analyze(path: Path, eng: str, *more: str) -> tuple[list[dict], str]:
    p = subprocess.run([sys.executable, "-m", "rawfin", "analyze", str(path), "--format", "jsonl", "--engine", eng,
                        *more], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert p.returncode == 0, p.stderr
    return [json.loads(x) for x in p.stdout.splitlines()], p.stdout


def _essence(recs: list[dict]) -> list:
    """What a connection was, whatever the frame numbers and VLAN ids: its endpoints, close, final states."""
    return sorted((r["client"], r["server"], r["close"], tuple(sorted(r["final"].items())), r["active_closer"])
                  for r in recs if r["type"] == "connection")


@pytest.fixture(scope="module")
def plain(tmp_path_factory) -> Path:
    p = tmp_path_factory.mktemp("vlan") / "plain.pcap"
    generate(p, packets=2_000, connections=200, seed=21)
    return p


@pytest.mark.parametrize("views", [((), (10,)), ((10,), ()), ((10,), (100, 10)), ((10,), (20,))],
                         ids=["untagged+tagged", "tagged+untagged", "tag+double-tag", "two-tags"])
def test_a_connection_seen_on_two_vlan_views_is_counted_once(plain, tmp_path, views):
    path = tmp_path / "twice.pcap"
    n = _twice(plain, path, *views)
    want, _ = _analyze(plain, "python")
    outs = []
    for eng in ENGINES:
        recs, out = _analyze(path, eng)
        outs.append(out)
        assert _essence(recs) == _essence(want)
        stats = recs[-1]
        assert stats["type"] == "stats" and stats["segments"] == 2 * n
        assert stats["connections"] == sum(r["type"] == "connection" for r in want) == 200
        assert stats["passed_over"] == {"vlan_copy": n}
        assert not any(r["type"] == "anomaly" and "retransmission" in r["kind"] for r in recs)
    assert len(set(outs)) == 1          # the lane's bytes are the reference's


@pytest.mark.parametrize("eng", ENGINES)
def test_two_connections_of_one_pair_on_two_vlans_stay_two(tmp_path, eng):
    """Overlapping address spaces: the same 4-tuple on VLAN 10 and VLAN 20, each connection with
    its own ISNs, at the same time: two connections (Zeek's vlan_fivetuple view), not copies."""
    from rawfin.sim import craft
    from rawfin.wire.pcapio import PcapWriter

    a = craft.connection(close="4way")
    b = craft.connection(isn_c=7_000_000, isn_s=9_000_000, close="4way")
    segs = sorted([(s.time_ns, s, (10,)) for s in a] + [(s.time_ns + 500, s, (20,)) for s in b],
                  key=lambda x: x[0])
    path = tmp_path / "two.pcap"
    from rawfin.wire import codec
    with PcapWriter(path, linktype=1) as w:
        for t, s, ids in segs:
            ip = codec.to_bytes(s)
            data = _tag(bytes.fromhex("020000000002020000000001") + b"\x08\x00" + ip, ids)
            w.write(data, t, len(data))
    recs, _ = _analyze(path, eng)
    cs = [r for r in recs if r["type"] == "connection"]
    assert sorted(tuple(c["vlan"]) for c in cs) == [(10,), (20,)] and all(c["close"] == "four_way" for c in cs)
    assert "passed_over" not in recs[-1]
