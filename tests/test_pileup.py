"""`rawfin analyze --by server|client|host`: the pile-up view.

The judge is the Linux kernel: tools/pileup_capture.py runs three servers on loopback in a
namespace of the test's own (one closes first, one never closes what its client closed, one is
healthy), captures the wire, and reads the kernel's own socket states at the end; rawfin's
counts at the end of the capture must be the kernel's.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

import shared_corpus
from rawfin.capture import engine
from rawfin.capture.analysis import records
from rawfin.render.records import record
from rawfin.render.pileup import Pileup, sparkline

ROOT = Path(__file__).resolve().parent.parent
CAPTURES = ROOT / "captures"
SHIPPED = CAPTURES / "pileup-kernel.pcap"
GOLDEN = Path(__file__).resolve().parent / "golden" / "pileup-kernel.by-server.txt"
SEC = 1_000_000_000


def rawfin(*argv: str, columns: int = 100) -> subprocess.CompletedProcess:
    p = subprocess.run([sys.executable, "-m", "rawfin", *argv], capture_output=True, text=True, cwd=ROOT,
                       timeout=120, env=dict(os.environ, COLUMNS=str(columns)))
    assert "Traceback" not in p.stderr, p.stderr
    return p


def pileup_records(*argv: str) -> dict:
    p = rawfin("analyze", "-q", "--format", "jsonl", *argv)
    assert p.returncode == 0, p.stderr
    recs = [json.loads(x) for x in p.stdout.splitlines()]
    return {r["group"]: r for r in recs if r["type"] == "pileup"}, [r for r in recs if r["type"] == "pileup_sample"]


def _netns_reason() -> str | None:
    if os.geteuid() != 0:
        return "needs root (a network namespace of the test's own)"
    try:
        from rawfin.linux.netns import NetNamespace

        with NetNamespace():
            pass
    except Exception as e:  # noqa: BLE001 - any reason is the skip's reason
        return f"no network namespace: {e}"
    return None


NETNS = _netns_reason()


@pytest.mark.root
@pytest.mark.skipif(NETNS is not None, reason=str(NETNS))
def test_the_kernels_pile_up_is_what_rawfin_counts(tmp_path):
    from pileup_capture import CLOSE_WAIT_PORT, HEALTHY_PORT, TIME_WAIT_PORT, record

    cap = tmp_path / "pile.pcap"
    n = 8
    res = record(str(cap), seconds=1.6, per_server=n)
    kernel = res["kernel"]
    assert kernel.get(f"{TIME_WAIT_PORT} TIME_WAIT") == n and kernel.get(f"{CLOSE_WAIT_PORT} CLOSE_WAIT") == n
    for eng in ([["--engine", "c"]] if engine.available() else []) + [["--engine", "python"]]:
        by, samples = pileup_records("--by", "server", "--interval", "500ms", *eng, str(cap))
        tw, cw, ok = (by[f"127.0.0.1:{p}"] for p in (TIME_WAIT_PORT, CLOSE_WAIT_PORT, HEALTHY_PORT))
        # the server that closes first holds every TIME_WAIT, as the kernel does at the end
        assert (tw["time_wait_end"], tw["closed_first_by_server"], tw["close_wait_end"]) == (n, n, 0)
        # the leaking application: every socket it was handed is in CLOSE_WAIT at the end, as in the kernel
        assert (cw["close_wait_end"], cw["closed_first_by_client"], cw["time_wait_end"]) == (n, n, 0)
        assert cw["close_wait_worst"] == n and cw["longest_close_wait_s"] > 1.0
        # the healthy server: nothing left
        assert (ok["time_wait_end"], ok["close_wait_end"]) == (0, 0)
        assert ok["longest_close_wait_s"] < 0.5
        # the series grows with the leak, in capture time
        leak = [s["close_wait"] for s in samples if s["group"] == f"127.0.0.1:{CLOSE_WAIT_PORT}"]
        assert leak == sorted(leak) and leak[-1] == n and len(leak) >= 3
    # the clients' side: their TIME_WAIT sockets are the healthy server's clients, as the kernel says
    by, _ = pileup_records("--by", "client", str(cap))
    client_tw = sum(v for k, v in kernel.items() if k.endswith("TIME_WAIT") and not k.startswith("808"))
    assert by["127.0.0.1"]["time_wait_end"] == client_tw == n


def test_shipped_capture_table_is_the_golden_file():
    """What a person reads (`make golden` refreshes it)."""
    p = rawfin("analyze", "-q", "--by", "server", str(SHIPPED.relative_to(ROOT)))
    assert p.returncode == 0
    if os.environ.get("RAWFIN_UPDATE_GOLDEN"):
        GOLDEN.write_text(p.stdout)
    assert p.stdout == GOLDEN.read_text()
    assert max(len(line) for line in p.stdout.splitlines()) <= 100


def test_table_fits_the_terminal():
    """COLUMNS narrower than the table: the sparkline takes fewer steps, the address and the
    other cells wrap onto more lines of their row; nothing is cut away."""
    for columns in (76, 90):
        p = rawfin("analyze", "-q", "--by", "server", "--interval", "2s", str(SHIPPED), columns=columns)
        assert p.returncode == 0
        lines = p.stdout.splitlines()
        assert max(len(line) for line in lines) <= columns, p.stdout
        assert f"in {4 if columns < 88 else 7} steps" in " ".join(lines)
        text = " ".join(lines)
        for w in ("(5.9s)", "(5.8s)", "<1ms", "30/0", "0/30", "8081", "8080", "8082"):
            assert w in text, (w, p.stdout)


def test_shipped_capture_every_format_and_the_plot(tmp_path):
    by, _ = pileup_records("--by", "server", str(SHIPPED))
    assert by["127.0.0.1:8080"]["time_wait_end"] == 30 and by["127.0.0.1:8081"]["close_wait_end"] == 30
    csv = rawfin("analyze", "-q", "--by", "host", "--interval", "1s", "--format", "csv", str(SHIPPED))
    lines = csv.stdout.splitlines()
    assert lines[0].startswith("type,by,group,time") and sum(x.startswith("pileup_sample,") for x in lines) >= 6
    assert sum(x.startswith("pileup,") for x in lines) == 1
    svg = tmp_path / "p.svg"
    p = rawfin("analyze", "-q", "--by", "server", "--plot", str(svg), str(SHIPPED))
    assert p.returncode == 0
    root = ET.fromstring(svg.read_text())
    lines = root.findall("{http://www.w3.org/2000/svg}polyline")
    assert {ln.get("stroke") for ln in lines} == {"#1f77b4", "#d62728"}
    texts = [t.text for t in root.iter("{http://www.w3.org/2000/svg}text")]
    assert "127.0.0.1:8081" in texts and "127.0.0.1:8080" in texts
    # usage errors
    assert rawfin("analyze", "--interval", "1s", str(SHIPPED)).returncode == 2
    assert rawfin("analyze", "--by", "server", "--summary", str(SHIPPED)).returncode == 2
    assert rawfin("analyze", "--by", "server", "--interval", "soon", str(SHIPPED)).returncode == 2
    bad = rawfin("analyze", "-q", "--by", "server", "--plot", str(tmp_path / "no" / "p.svg"), str(SHIPPED))
    assert bad.returncode == 73 and "cannot write the plot" in bad.stderr


def test_msl_makes_time_wait_drain_and_the_worst_moment_is_in_the_middle():
    by, samples = pileup_records("--by", "server", "--msl", "0.5", "--interval", "1s", str(SHIPPED))
    tw = by["127.0.0.1:8080"]
    assert tw["time_wait_end"] < tw["time_wait_worst"] <= 10
    series = [s["time_wait"] for s in samples if s["group"] == "127.0.0.1:8080"]
    assert max(series) <= tw["time_wait_worst"] and series[-1] == tw["time_wait_end"]


def test_roles_from_the_first_transition_are_the_observers():
    """The view learns a connection's server from its first transition (it must count before the
    connection's record arrives): on every corpus and shipped capture it agrees with the record."""
    caps = sorted(CAPTURES.glob("*.pcap")) + list(shared_corpus.FILES)
    checked = 0
    for cap in caps:
        agg = Pileup("server")
        try:
            for r in records(str(cap), record=record):
                agg.write(r)
        except Exception:  # noqa: BLE001 - damaged corpus files: what came before counts
            pass
        agg.finish()
        assert agg.mismatched == 0, cap
        checked += 1
    assert checked >= 10


def _tr(conn, t, ep, peer, frm, to):
    return {"type": "transition", "conn": conn, "frame": 1, "time": t, "endpoint": ep, "peer": peer,
            "from": frm, "to": to, "cause": ""}


def test_out_of_order_records_are_swept_in_time_order():
    s, c = "192.0.2.1:80", "192.0.2.2:5000"
    agg = Pileup("server", interval_ns=SEC)
    agg.set_origin(100.0)
    agg.write(_tr(0, 100.0, c, s, "CLOSED", "SYN_SENT"))
    agg.write(_tr(0, 101.0, s, c, "ESTABLISHED", "CLOSE_WAIT"))
    agg.write(_tr(0, 103.0, s, c, "CLOSE_WAIT", "LAST_ACK"))     # written before...
    agg.write(_tr(1, 100.0, c.replace("5000", "5001"), s, "CLOSED", "SYN_SENT"))
    agg.write(_tr(1, 102.5, s, c.replace("5000", "5001"), "ESTABLISHED", "CLOSE_WAIT"))  # ...an earlier one
    g = agg.finish()[0]
    assert g.worst[1] == 2 and g.worst_at[1] == int(102.5 * SEC) and g.now[1] == 1
    assert g.longest_cw == 2 * SEC


def test_sparkline():
    assert sparkline([0, 1, 2, 4, 8]) == " ▁▂▄█"
    assert sparkline([0, 0]) == "  "
    assert sparkline(list(range(100)), width=10)[-1] == "█"
    assert sparkline([1, 1], top=8) == "▁▁"


@pytest.mark.skipif(not engine.available(), reason="the compiled lane is not built")
def test_the_lanes_moves_give_the_references_view(tmp_path):
    """Through the lane the view takes the lane's moves (engine.run's moves mode: state codes, times in
    ns, no text read back) and the Python observer's typed events for the connections it follows
    (port-reuse.pcap's second connection on a pair); the result is the reference's, every format and
    grouping, on a generated capture and on two shipped ones read as one timeline ("file" in the keys)."""
    from bench import generate

    cap = tmp_path / "g.pcap"
    generate(cap, packets=6_000, connections=600, seed=3)
    for argv in ([str(cap)], [str(SHIPPED), str(CAPTURES / "port-reuse.pcap")]):
        for by, fmt in (("server", "jsonl"), ("server", "csv"), ("server", "table"), ("client", "jsonl"),
                        ("host", "table")):
            outs = [rawfin("analyze", "-q", "--by", by, "--interval", "2s", "--format", fmt, "--engine", e,
                           *argv).stdout for e in ("c", "python")]
            assert outs[0] == outs[1] and outs[0], (argv, by, fmt)


def test_the_plot_is_written_when_stdout_closes_early(tmp_path):
    """`rawfin analyze --by server --plot p.svg CAPTURE | head -1`: the plot asked for is still written."""
    svg = tmp_path / "p.svg"
    p = subprocess.run(f"{sys.executable} -m rawfin analyze -q --by server --plot {svg} {SHIPPED} | head -1",
                       shell=True, capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert p.stdout.startswith("server")
    assert svg.exists() and svg.read_text().lstrip().startswith("<svg")
