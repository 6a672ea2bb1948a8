"""The Wireshark plugin (rawfin/render/rawfin.lua) in the real tshark.

`rawfin annotate` writes the comments; tshark, loading the plugin, must give every packet of
every annotated connection the states rawfin's records say each endpoint was in after it, and
let the findings be filtered (`-Y 'rawfin.anomaly == "final_ack_lost"'`).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import shared_corpus
from rawfin.capture.analysis import records
from rawfin.render.records import record
from rawfin.core.errors import CaptureError
from rawfin.core.segment import Segment, fmt_endpoint
from rawfin.wire.decode import decode
from rawfin.wire.pcapio import open_capture

ROOT = Path(__file__).resolve().parent.parent
CAPTURES = ROOT / "captures"
PLUGIN = ROOT / "rawfin" / "render" / "rawfin.lua"
TSHARK = shutil.which("tshark")

pytestmark = [pytest.mark.tshark, pytest.mark.skipif(TSHARK is None, reason="tshark is not installed")]


def _lua_ok() -> bool:
    if TSHARK is None:
        return False
    out = subprocess.run([TSHARK, "-v"], capture_output=True, text=True).stdout
    return "without Lua" not in out


needs_lua = pytest.mark.skipif(not _lua_ok(), reason="this tshark is built without Lua")


def annotate(src: Path, out: Path) -> Path:
    p = subprocess.run([sys.executable, "-m", "rawfin", "annotate", str(src), "-o", str(out)], capture_output=True,
                       text=True, cwd=ROOT)
    assert p.returncode in (0, 65), p.stderr
    return out


def tshark(cap: Path, *args: str, env=None) -> list[list[str]]:
    p = subprocess.run([TSHARK, "-X", f"lua_script:{PLUGIN}", "-r", str(cap), *args], capture_output=True,
                       text=True, env=env)
    assert p.returncode == 0, p.stderr
    assert "Lua: Error" not in p.stderr and "lua_script" not in p.stderr, p.stderr
    return [line.split("\t") for line in p.stdout.splitlines()]


def expected_states(src: Path) -> dict[int, tuple[int, str, str]]:
    """frame -> (conn, client's state, server's state) after it, from rawfin's records: every
    frame of every connection between its first and last frame."""
    recs: list[dict] = []
    try:
        recs.extend(records(str(src), record=record))
    except CaptureError:
        pass
    moves: dict[int, list[dict]] = {}
    for r in recs:
        if r["type"] == "transition":
            moves.setdefault(r["conn"], []).append(r)
    conns = [r for r in recs if r["type"] == "connection"]
    members: dict[int, list[int]] = {c["conn"]: [] for c in conns}
    by_pair: dict[frozenset, list[dict]] = {}
    for c in conns:
        by_pair.setdefault(frozenset((c["client"], c["server"])), []).append(c)
    try:
        with open_capture(str(src)) as reader:
            for fr in reader:
                s = decode(fr.linktype, fr.data, fr.orig_len, fr.frame, fr.time_ns)
                if s.__class__ is not Segment:
                    continue
                pair = frozenset((fmt_endpoint(s.src, s.sport), fmt_endpoint(s.dst, s.dport)))
                for c in by_pair.get(pair, []):
                    if c["first_frame"] <= fr.frame <= c["last_frame"] and not c.get("vlan"):
                        members[c["conn"]].append(fr.frame)
    except CaptureError:
        pass
    want = {}
    for c in conns:
        ms = moves.get(c["conn"], [])
        state = {}
        for ep in (c["client"], c["server"]):
            mine = [m for m in ms if m["endpoint"] == ep]
            state[ep] = mine[0]["from"] if mine else c["final"][ep]
        timed = [m for m in ms if m["frame"] is None]
        framed = sorted((m for m in ms if m["frame"] is not None), key=lambda m: m["frame"])
        i = 0
        for f in sorted(set(members[c["conn"]])):
            while i < len(framed) and framed[i]["frame"] <= f:
                state[framed[i]["endpoint"]] = framed[i]["to"]
                i += 1
            if f == c["last_frame"]:
                for m in timed:
                    state[m["endpoint"]] = m["to"]
            if f in want:            # a frame two connections share (a reused pair): the newer one
                continue
            want[f] = (c["conn"], state[c["client"]], state[c["server"]])
    return want


@needs_lua
def test_filter_the_lost_final_ack_in_tshark(tmp_path):
    out = annotate(CAPTURES / "lost-final-ack.pcap", tmp_path / "a.pcapng")
    rows = tshark(out, "-Y", 'rawfin.anomaly == "final_ack_lost"', "-T", "fields", "-e", "frame.number")
    assert rows == [["12"]]
    rows = tshark(out, "-Y", 'rawfin.state == "CLOSE_WAIT"', "-T", "fields", "-e", "frame.number")
    assert [r[0] for r in rows] == ["8", "9"]
    rows = tshark(out, "-Y", 'rawfin.transition == "FIN_WAIT_2 → TIME_WAIT"', "-T", "fields", "-e",
                  "frame.number", "-e", "rawfin.transition.endpoint")
    assert rows == [["10", "192.0.2.1:80,192.0.2.2:50001"]]     # both moved on frame 10
    rows = tshark(out, "-Y", 'rawfin.fin_ack == "covers"', "-T", "fields", "-e", "frame.number")
    assert [r[0] for r in rows] == ["9", "13"]
    rows = tshark(out, "-Y", 'rawfin.closer == "client" && rawfin.sender == "server"', "-T", "fields", "-e",
                  "frame.number")
    assert [r[0] for r in rows] == ["2", "5", "6", "9", "10", "12"]
    assert tshark(out, "-Y", 'rawfin.reset_by == "none"', "-T", "fields", "-e", "frame.number")[-1] == ["13"]


@needs_lua
def test_filter_who_reset_in_tshark(tmp_path):
    out = annotate(CAPTURES / "rst-abort.pcap", tmp_path / "r.pcapng")
    rows = tshark(out, "-Y", 'rawfin.close == "reset" && rawfin.reset_by == "client"', "-T", "fields", "-e",
                  "frame.number")
    assert [r[0] for r in rows] == [str(f) for f in range(1, 9)]


def _check_every_packet(src: Path, tmp_path: Path) -> int:
    out = annotate(src, tmp_path / (src.stem + ".rawfin.pcapng"))
    want = expected_states(src)
    rows = tshark(out, "-T", "fields", "-e", "frame.number", "-e", "rawfin.conn", "-e", "rawfin.state.client",
                  "-e", "rawfin.state.server")
    got = {int(r[0]): (int(r[1]), r[2], r[3]) for r in rows if r[1]}
    for f, w in want.items():
        assert got.get(f) == w, (src.name, f, got.get(f), w)
    return len(want)


@needs_lua
@pytest.mark.parametrize("name", ["lost-final-ack", "port-reuse", "simultaneous-close", "half-close",
                                  "rst-abort", "lost-fin", "three-segment-close", "pileup-kernel"])
def test_state_on_every_packet_is_rawfins(name, tmp_path):
    assert _check_every_packet(CAPTURES / f"{name}.pcap", tmp_path) > 5


#: a spread of the corpus: tunnels (GTP), IPv6, Linux cooked v2, mid-stream pickups, many streams,
#: resets; RAWFIN_SLOW=1 runs every corpus capture
SOME = ["arkime__gtp-iphone.pcap", "PcapPlusPlus__sll2.pcap", "packets__http_ip4and6.pcapng",
        "PcapPlusPlus__three_http_streams.pcap", "zeek__missing-syn.pcap", "nDPI__z3950.pcapng",
        "PcapPlusPlus__one_http_stream_rst.pcap", "tcpdump__dns_tcp.pcap", "PcapPlusPlus__650HttpResponses.pcap"]


@needs_lua
@shared_corpus.needs_corpus
def test_state_on_every_packet_of_the_corpus(tmp_path):
    every = os.environ.get("RAWFIN_SLOW") == "1"
    n = 0
    for src in shared_corpus.FILES:
        if (every and src.stat().st_size < 2_000_000) or src.name in SOME:
            n += _check_every_packet(src, tmp_path)
    assert n > 300


@needs_lua
def test_install_puts_it_where_tshark_loads_it(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    env = dict(os.environ, HOME=str(home), XDG_CONFIG_HOME=str(home / ".config"))
    p = subprocess.run([sys.executable, "-m", "rawfin", "wireshark", "--install"], capture_output=True, text=True,
                       cwd=ROOT, env=env)
    assert p.returncode == 0, p.stderr
    installed = Path(p.stdout.strip())
    assert installed.read_bytes() == PLUGIN.read_bytes() and str(installed).startswith(str(home))
    out = annotate(CAPTURES / "lost-final-ack.pcap", tmp_path / "a.pcapng")
    q = subprocess.run([TSHARK, "-r", str(out), "-Y", 'rawfin.anomaly == "final_ack_lost"', "-T", "fields", "-e",
                        "frame.number"], capture_output=True, text=True, env=env)
    assert q.stdout.split() == ["12"], q.stderr
    path = subprocess.run([sys.executable, "-m", "rawfin", "wireshark", "--path"], capture_output=True, text=True,
                          cwd=ROOT)
    assert Path(path.stdout.strip()).read_bytes() == PLUGIN.read_bytes()
