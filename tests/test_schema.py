"""Machine output that stays stable: every command's --format jsonl validates against the shipped
JSON Schema (schemas/records.schema.json), in one JSON style (compact separators, keys in the
schema's order, times as numbers).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import shared_corpus
from kernelcaps import needs_trace

jsonschema = pytest.importorskip("jsonschema", reason="jsonschema is a test dependency (pip install '.[test]')")

ROOT = Path(__file__).resolve().parent.parent
SCHEMA = json.loads((ROOT / "schemas" / "records.schema.json").read_text(encoding="utf-8"))
VALIDATOR = jsonschema.Draft202012Validator(SCHEMA)
CAPTURES = ROOT / "captures"


def validate(lines: list[str], where: str) -> set[str]:
    """Every line is a record of the schema, written in rawfin's one JSON style; the types seen."""
    from rawfin.render.records import to_json

    types = set()
    for n, line in enumerate(lines, 1):
        rec = json.loads(line)
        errors = sorted(VALIDATOR.iter_errors(rec), key=lambda e: list(e.path))
        assert not errors, f"{where}, line {n}: {errors[0].message} at {list(errors[0].path)}\n{line}"
        assert line == to_json(rec), f"{where}, line {n}: not rawfin's JSON style\n{line}"
        shape = SCHEMA["$defs"][rec["type"]]
        orders = [list(x["properties"]) for x in shape.get("anyOf", [shape])]
        keys = list(rec)
        assert any(set(keys) <= set(o) and keys == sorted(keys, key=o.index) for o in orders), \
            f"{where}, line {n}: keys out of the schema's order"
        types.add(rec["type"])
    return types


def jsonl(*argv: str, ok=(0, 1)) -> list[str]:
    """``rawfin ARGV --format jsonl``, in this process (the lane writes to stdout's bytes)."""
    from rawfin import cli

    raw = io.BytesIO()
    out = io.TextIOWrapper(raw, encoding="utf-8", write_through=True)
    err = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = cli.main([*argv, "--format", "jsonl"])
        out.flush()
    assert rc in ok, (argv, rc, err.getvalue())
    return raw.getvalue().decode("utf-8").splitlines()


def jsonl_process(*argv: str, ok=(0, 1)) -> list[str]:
    p = subprocess.run([sys.executable, "-m", "rawfin", *argv, "--format", "jsonl"], capture_output=True, text=True,
                       cwd=ROOT, timeout=300)
    assert p.returncode in ok, (argv, p.stderr)
    assert "Traceback" not in p.stderr
    return p.stdout.splitlines()


def test_the_schema_is_a_schema_and_names_every_type():
    jsonschema.Draft202012Validator.check_schema(SCHEMA)
    assert set(SCHEMA["properties"]["type"]["enum"]) == set(SCHEMA["$defs"]) - {"state", "endpoint"}


@pytest.mark.parametrize("engine", ["c", "python"])
def test_analyze(engine, tmp_path):
    from rawfin.capture import engine as lane
    if engine == "c" and not lane.available():
        pytest.skip("the compiled lane is not built")
    caps = [str(p) for p in sorted(CAPTURES.glob("*.pcap"))]
    seen = validate(jsonl("analyze", "--engine", engine, *caps), "analyze")
    seen |= validate(jsonl("analyze", "--engine", engine, "--summary", caps[0]), "analyze --summary")
    seen |= validate(jsonl("analyze", "--by", "server", "--interval", "1s", str(CAPTURES / "pileup-kernel.pcap")),
                     "analyze --by server")
    seen |= validate(jsonl("analyze", "--by", "host", *caps[:3]), "analyze --by host")
    seen |= validate(jsonl("analyze", "--engine", engine, "--max-connections", "2", "--syn-timeout", "0.001", *caps),
                     "analyze --max-connections")
    assert {"transition", "anomaly", "connection", "pileup", "pileup_sample", "stats"} <= seen


@shared_corpus.needs_corpus
def test_analyze_the_corpus():
    """The real captures: IPv6, VLANs, damage (what came before it), mid-stream pickups; the lane's
    own bytes (the reference's are the same: tests/test_engine.py)."""
    import io

    from rawfin.capture import engine, analysis
    from rawfin.core.errors import CaptureError
    from rawfin.render.records import json_line, record, to_json

    seen = set()
    for cap in shared_corpus.FILES:
        buf = io.BytesIO()
        try:
            if not (engine.available() and engine.run(str(cap), buf.write, json_of=json_line(None))):
                for r in analysis.records(str(cap), record=record):
                    buf.write((to_json(r) + "\n").encode())
        except CaptureError:
            pass
        seen |= validate(buf.getvalue().decode().splitlines(), cap.name)
    assert {"transition", "anomaly", "connection"} <= seen


def test_check_states_craft_scenario():
    assert validate(jsonl("check", *[str(p) for p in sorted(CAPTURES.glob("*.pcap"))]), "check") == {"connection"}
    assert validate(jsonl("states"), "states") == {"rule", "row"}
    for kind in ("4way", "3way", "fin-with-data", "simultaneous", "rst", "connection"):
        assert validate(jsonl("craft", kind), f"craft {kind}") == {"segment"}
    seen = validate(jsonl("scenario", "--all"), "scenario --all")
    assert {"transition", "anomaly"} <= seen


@pytest.mark.parametrize("name", ["lost-final-ack", "rst-abort", "half-close"])
def test_replay_against_the_emulator(name):
    for side in ("client", "server"):
        seen = validate(jsonl("replay", str(CAPTURES / f"{name}.pcap"), "--as", side), f"replay {name} {side}")
        assert {"replay", "live_transition", "verdict"} <= seen


def test_replay_divergence(tmp_path):
    """An edited capture: the live side diverges; the divergence records validate too."""
    from test_replay import edited

    seen = validate(jsonl("replay", edited(tmp_path), "--as", "client", ok=(1,)), "replay diverged")
    assert "divergence" in seen


def test_packetdrill_against_rawfin():
    scripts = sorted(str(p) for p in (ROOT / "tests" / "packetdrill").glob("*.pkt"))
    seen = validate(jsonl("packetdrill", "--against", "rawfin", *scripts), "packetdrill")
    assert {"line", "segment", "transition", "result"} <= seen


@needs_trace
def test_live_with_kernel_truth():
    from rawfin.render.records import to_json
    from test_live import client_first_close

    recs = client_first_close()[0]
    seen = validate([to_json(r) for r in recs], "live")
    assert {"transition", "connection", "kernel", "stats"} <= seen


@needs_trace
def test_peer(no_leftovers):
    seen = validate(jsonl_process("peer", "--scenario", "lost-final-ack"), "peer")
    assert {"transition", "kernel", "check"} <= seen
    if os.environ.get("RAWFIN_SLOW") == "1":
        for name in ("simultaneous-close", "timewait-refin", "rst-in-fin-wait-2"):
            validate(jsonl_process("peer", "--scenario", name), f"peer {name}")
