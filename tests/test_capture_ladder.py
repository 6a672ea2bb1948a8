"""`rawfin analyze CAPTURE --conn N --format ladder|mermaid`: a captured connection drawn.

The drawing is checked against what it draws from: every segment of the connection is an
arrow numbered by its frame, every transition record is a state row on its side, the ACK
of a FIN says x+1, a retransmission is marked, the final ACK the receiver never got ends in
an X. Golden files for what a person reads (`make golden` refreshes them).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import shared_corpus

ROOT = Path(__file__).resolve().parent.parent
CAPTURES = ROOT / "captures"
GOLDEN = Path(__file__).resolve().parent / "golden"
UPDATE = os.environ.get("RAWFIN_UPDATE_GOLDEN") == "1"


def rawfin(*argv: str, stdin: bytes | None = None) -> subprocess.CompletedProcess:
    p = subprocess.run([sys.executable, "-m", "rawfin", *argv], capture_output=True, cwd=ROOT, timeout=120,
                       input=stdin)
    assert b"Traceback" not in p.stderr, p.stderr.decode()
    return p


@pytest.mark.parametrize("fmt", ["ladder", "mermaid"])
def test_golden_capture_ladder(fmt):
    """The lost final ACK as the capture shows it (make golden refreshes the files)."""
    p = rawfin("analyze", "captures/lost-final-ack.pcap", "--conn", "0", "--format", fmt)
    assert p.returncode == 0, p.stderr
    got = p.stdout.decode()
    path = GOLDEN / f"capture-lost-final-ack.{fmt}.txt"
    if UPDATE:
        path.write_text(got, encoding="utf-8")
    assert got == path.read_text(encoding="utf-8"), f"{path.name}: run `make golden` and read the diff"


def _check_drawing(cap: Path, conn: int) -> None:
    p = rawfin("analyze", str(cap), "--conn", str(conn), "--format", "ladder")
    assert p.returncode == 0, (cap, p.stderr)
    text = p.stdout.decode()
    assert max(len(line) for line in text.splitlines()) <= 100, cap
    recs = [json.loads(x) for x in rawfin("analyze", str(cap), "--conn", str(conn), "--format", "jsonl")
            .stdout.splitlines()]
    c = next(r for r in recs if r["type"] == "connection")
    # arrows: one per segment of the connection, numbered by frame, in order
    frames = [int(m.group(1)) for m in re.finditer(r"^ {9} │ *(\d+)\. ", text, re.M)]
    frames += [int(m.group(1)) for m in re.finditer(r"^ *\d+\.\d{3} │ *(\d+)\. ", text, re.M)]
    assert sorted(frames) == sorted(set(frames))
    assert c["packets"] == len(frames), (cap, conn)
    assert min(frames) == c["first_frame"] and max(frames) == c["last_frame"]
    # every transition is a state row
    rows = text.count(" → ") - text.count("client " + c["client"] + " → ")
    moves = [r for r in recs if r["type"] == "transition"]
    assert sum(1 for r in moves if r["from"] != r["to"]) <= rows


def test_lost_final_ack_is_drawn_as_the_textbook_draws_it():
    p = rawfin("analyze", "-r", "captures/lost-final-ack.pcap", "--format", "ladder")
    text = p.stdout.decode()
    lines = text.splitlines()
    at = next(i for i, ln in enumerate(lines) if "11. ACK seq=1102 ack=2202" in ln)
    assert "(ack = FIN 2201 + 1)" in lines[at]
    assert "X lost after capture" in lines[at + 1]
    assert any("12. FIN,ACK seq=2201 ack=1102 (retransmission)" in ln for ln in lines)
    assert "9. ACK seq=2201 ack=1102 (ack = FIN 1101 + 1)" in text
    assert "TIME_WAIT: re-ACK the FIN, restart 2MSL" in text
    assert "(active close)" in lines[3] and "(passive close)" in lines[3]
    _check_drawing(CAPTURES / "lost-final-ack.pcap", 0)
    # from a pipe: the same drawing
    piped = rawfin("analyze", "-", "--format", "ladder", stdin=(CAPTURES / "lost-final-ack.pcap").read_bytes())
    body = lambda out: out.decode().split("\n\nNumbers are")    # noqa: E731  the drawing, the footer
    assert body(piped.stdout)[0] == body(p.stdout)[0] and "of standard input" in body(piped.stdout)[1]


@pytest.mark.parametrize("name", ["port-reuse", "simultaneous-close", "half-close", "rst-abort", "fin-with-data"])
def test_shipped_connections_draw_whole(name):
    cap = CAPTURES / f"{name}.pcap"
    n = sum(1 for x in rawfin("analyze", str(cap), "--format", "jsonl").stdout.splitlines()
            if b'"type":"connection"' in x)
    for conn in range(n):
        _check_drawing(cap, conn)


@shared_corpus.needs_corpus
def test_corpus_connections_draw(capsys):
    """The first connection of every corpus capture with one: drawn whole, within 100 columns."""
    from rawfin import cli

    done = 0
    for cap in shared_corpus.FILES:
        rc = cli.main(["analyze", str(cap), "--conn", "0", "--format", "ladder"])
        out, err = capsys.readouterr()
        if rc == 2:
            continue            # no TCP connection in it
        assert rc in (0, 65) and "Traceback" not in err, (cap, err)
        if rc == 0:
            assert out.startswith("conn 0: ") and max(len(x) for x in out.splitlines()) <= 100, cap
            done += 1
    assert done >= 20


def test_usage():
    assert rawfin("analyze", "captures/lost-final-ack.pcap", "--conn", "5", "--format", "ladder").returncode == 2
    two = rawfin("analyze", "captures/lost-final-ack.pcap", "captures/rst-abort.pcap", "--format", "ladder")
    assert two.returncode == 2 and b"one connection of one capture" in two.stderr
    many = rawfin("analyze", "captures/port-reuse.pcap", "--format", "ladder")
    assert many.returncode == 0 and b"drew connection 0 of 2" in many.stderr
