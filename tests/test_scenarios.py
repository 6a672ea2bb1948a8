"""Built-in scenarios, scenario files, the `rawfin scenario` command and the shipped captures."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from rawfin.sim import scenarios
from rawfin.cli import main

ROOT = Path(__file__).resolve().parents[1]
CAPTURES = ROOT / "captures"
REQUIRED = ["normal-close", "lost-final-ack", "lost-fin", "simultaneous-close", "three-segment-close",
            "half-close", "fin-with-data", "rst-abort", "server-active-close", "time-wait-expiry",
            "seq-wraparound", "port-reuse"]
NAMES = scenarios.names()


def test_every_required_scenario_is_built_in():
    assert set(REQUIRED) <= set(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_scenario_meets_its_expectations(name):
    scn = scenarios.builtin(name)
    assert scn.summary, "--list needs a one-line summary"
    pair = scenarios.run(scn)
    assert scenarios.check(scn, pair) == []


def test_expectations_can_fail():
    import dataclasses
    scn = scenarios.builtin("lost-final-ack")
    pair = scenarios.run(scn)
    wrong = dataclasses.replace(scn, expect={"final": {"server": "TIME_WAIT"}, "retransmissions": 0, "dropped": 2,
                                             "refused": 1, "segments": 1, "states": ["client SYN_SENT CLOSED"]})
    checks = scenarios.judge(wrong, scenarios.Facts(pair))
    assert [c.ok for c in checks] == [False] * 6
    assert checks[0].detail == "got CLOSED" and checks[-1].detail.startswith("client: SYN_SENT → ESTABLISHED")
    assert len(scenarios.check(wrong, pair)) == 6


def test_list(capsys):
    assert main(["scenario", "--list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    firsts = [line for line in lines if not line.startswith(" ")]     # a long summary wraps, indented
    assert [line.split()[0] for line in firsts] == NAMES
    assert all(len(line.split(None, 1)) == 2 for line in firsts)
    assert max(len(line) for line in lines) <= 100


@pytest.mark.parametrize("fmt", ["table", "jsonl", "csv", "ladder", "mermaid"])
def test_every_format_runs(fmt, capsys):
    assert main(["scenario", "lost-final-ack", "--format", fmt]) == 0
    out = capsys.readouterr().out
    assert out.strip()
    if fmt == "mermaid":
        assert "sequenceDiagram" in out and "-xC" not in out and "C-xS" in out


def test_jsonl_is_the_record_contract(capsys):
    assert main(["scenario", "lost-final-ack", "--format", "jsonl"]) == 0
    recs = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert {r["type"] for r in recs} == {"transition", "anomaly"}
    assert {r["conn"] for r in recs} == {0}
    tr = [r for r in recs if r["type"] == "transition"]
    assert list(tr[0]) == ["type", "conn", "frame", "time", "endpoint", "peer", "from", "to", "cause"]
    restart = next(r for r in tr if r["from"] == r["to"] == "TIME_WAIT")
    assert restart["frame"] == 12
    assert restart["time"] == pytest.approx(1_700_000_001.041)


def test_ladder_fits_100_columns_and_shows_the_loss():
    from rawfin.commands.ladders import ladder
    for name in NAMES:
        scn = scenarios.builtin(name)
        text = ladder(scenarios.run(scn), f"{scn.name}: {scn.summary}", scn.description)
        assert max(len(line) for line in text.splitlines()) <= 100, name
    text = ladder(scenarios.run(scenarios.builtin("lost-final-ack")))
    assert "X lost" in text and "TIME_WAIT: re-ACK the FIN, restart 2MSL" in text


def test_overrides(capsys):
    assert main(["scenario", "normal-close", "--msl", "2", "--rto", "0.5", "--isn-client", "7",
                 "--isn-server", "9", "--format", "jsonl", "--ipv6"]) == 0
    recs = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    last = recs[-1]
    assert last["to"] == "CLOSED" and last["cause"].startswith("2MSL")
    assert last["time"] == pytest.approx(1_700_000_000.041 + 4)
    assert any("seq=7" in r.get("cause", "") for r in recs)
    assert recs[1]["endpoint"] == "[2001:db8::2]:50001"


def test_drop_option_adds_to_the_scenario(capsys):
    assert main(["scenario", "normal-close", "--drop", "client:FIN", "--format", "ladder"]) == 0
    assert "X lost: drop client:FIN" in capsys.readouterr().out


@pytest.mark.parametrize("argv", [
    ["scenario"], ["scenario", "nope"], ["scenario", "--all", "--write", "x.pcap"],
    ["scenario", "normal-close", "--drop", "FIN#0"], ["scenario", "normal-close", "--msl", "0"],
])
def test_usage_errors_exit_2(argv, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    # rawfin's own message, or argparse's usage line then its "rawfin scenario: error: ..."
    assert "rawfin scenario:" in err.splitlines()[-1] and "Traceback" not in err


def test_scenario_file(tmp_path, capsys):
    f = tmp_path / "mine.toml"
    f.write_text("""
summary = "mine"
[link]
delay = 0.005
[client]
calls = [ { at = 0.0, call = "connect" }, { at = 0.1, call = "close", bytes = 10 } ]
[server]
close_on_fin = true
calls = [ { at = 0.0, call = "listen" } ]
[[fault]]
rule = "drop server:FIN"
""")
    assert main(["scenario", "--file", str(f), "--format", "jsonl"]) == 0
    recs = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert recs[-1]["to"] == "CLOSED"
    scn = scenarios.load(f)
    pair = scenarios.run(scn)
    # the lost FIN,ACK also carried the ACK of the client's FIN: both sides resend
    assert len(pair.retransmissions()) == 2 and pair.link.delay_ns == 5_000_000


@pytest.mark.parametrize("text, words", [
    ("this is = not toml [", "not a valid TOML"),
    ("[client]\ncalls = [ { at = 0.0, call = \"jump\" } ]", "call must be one of"),
    ("[client]\ncalls = [ { call = \"connect\" } ]", "exactly one of at"),
    ("[server]\ncalls = [ { at = 0.0, call = \"connect\" } ]", "does not connect"),
    ("[[fault]]\nrule = \"drop FIN#0\"", "#N"),
    ("bogus = 1", "unknown key 'bogus'"),
    ("[client]\ncalls = [ { at = 0.0, call = \"connect\" }, { at = 0.0, call = \"close\" },"
     " { at = 1.0, call = \"close\" } ]\n[server]\ncalls = [ { at = 0.0, call = \"listen\" } ]",
     "client close at t=1.000000 s"),
])
def test_bad_scenario_files_say_what_and_where(tmp_path, capsys, text, words):
    f = tmp_path / "bad.toml"
    f.write_text(text)
    assert main(["scenario", "--file", str(f)]) == 65
    err = capsys.readouterr().err.strip()
    assert str(f) in err and words in err and "\n" not in err


def test_missing_scenario_file(tmp_path, capsys):
    assert main(["scenario", "--file", str(tmp_path / "none.toml")]) == 66


def test_captures_are_regenerated_byte_for_byte(tmp_path, capsys):
    assert main(["scenario", "--all", "--write-dir", str(tmp_path), "--format", "jsonl"]) == 0
    fresh = sorted(p.name for p in tmp_path.glob("*.pcap"))
    assert fresh == sorted(f"{n}.pcap" for n in NAMES)
    shipped = sorted(p.name for p in CAPTURES.glob("*.pcap"))
    assert set(fresh) <= set(shipped), "run `make captures`"
    for name in fresh:
        assert (tmp_path / name).read_bytes() == (CAPTURES / name).read_bytes(), f"{name}: run `make captures`"


# -- tshark -----------------------------------------------------------------------------

TSHARK = shutil.which("tshark")


def tshark_frames(path: Path, display_filter: str, *prefs: str) -> list[int]:
    cmd = [TSHARK, "-n", "-r", str(path), "-Y", display_filter, "-T", "fields", "-e", "frame.number"]
    for p in prefs:
        cmd += ["-o", p]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    return [int(x) for x in res.stdout.split()]


@pytest.mark.tshark
@pytest.mark.skipif(TSHARK is None, reason="tshark not installed")
@pytest.mark.parametrize("name", NAMES)
def test_tshark_reads_the_capture_and_marks_exactly_the_intended_retransmissions(name):
    path = CAPTURES / f"{name}.pcap"
    total = tshark_frames(path, "frame")
    pair = scenarios.run(scenarios.builtin(name))
    assert len(total) == len(pair.sent)
    bad = tshark_frames(path, "tcp.checksum.status != 1 || ip.checksum.status == 0 || _ws.malformed",
                        "tcp.check_checksum:TRUE", "ip.check_checksum:TRUE")
    assert bad == []
    marked = tshark_frames(path, "tcp.analysis.retransmission || tcp.analysis.fast_retransmission"
                                 " || tcp.analysis.spurious_retransmission")
    assert marked == pair.retransmissions()
    if name in ("lost-final-ack", "lost-fin"):
        assert len(marked) == 1


@pytest.mark.parametrize("expect, says", [
    ('finale = { client = "CLOSED" }', "unknown key 'finale'"),
    ('final = { client = "CLOSE" }', "expect.final"),
    ('final = { klient = "CLOSED" }', "expect.final"),
    ('states = ["client FIN_WAIT2 TIME_WAIT"]', "is not \"SIDE FROM TO\""),
    ('retransmissions = -1', "expect.retransmissions"),
    ('received = { server = "100" }', "expect.received"),
    ('error = { server = "econnreset" }', "expect.error"),
])
def test_a_misspelt_expectation_is_an_error_not_a_check_that_never_fails(tmp_path, expect, says):
    f = tmp_path / "x.toml"
    f.write_text(f'[client]\ncalls = [{{ at = 0.0, call = "connect" }}]\n[expect]\n{expect}\n')
    with pytest.raises(scenarios.ScenarioError, match=re.escape(says)):
        scenarios.load(str(f))


def test_kernel_side_is_checked(tmp_path):
    f = tmp_path / "x.toml"
    f.write_text('kernel = "both"\n')
    with pytest.raises(scenarios.ScenarioError, match="kernel must be"):
        scenarios.load(str(f))
    f.write_text('kernel = "client"\n')
    assert scenarios.load(str(f)).kernel == "client"
