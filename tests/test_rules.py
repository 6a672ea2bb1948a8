"""A rule is changed in one place: rawfin/core/rules.py. Changed there (in a copy, tests/rules_changed/),
the Python reference and the compiled lane both follow it, byte for byte, with no C change: the lane
is handed the rules at start and interprets them.

The whole differential suite runs with a changed table too:
``RAWFIN_ENGINE_RULES=tests/rules_changed/rst_rfc793.py python -m pytest tests/test_engine.py``.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from rawfin.capture import engine
from rawfin.capture.analysis import records
from rawfin.core import machine
from rawfin.core.segment import Flags, Segment
from rawfin.wire import codec
from rawfin.wire.pcapio import LINKTYPE_RAW, PcapWriter
from rawfin.render.records import json_line, record
from test_engine import Runner, first_difference

ROOT = Path(__file__).resolve().parents[1]
CHANGED = ROOT / "tests" / "rules_changed"
SHIPPED = sorted((ROOT / "captures").glob("*.pcap"))

needs_lane = pytest.mark.skipif(not engine.available(), reason=f"rawfin.capture._engine is not built: {engine.WHY_NOT}")

C, S = ("192.0.2.2", 50001), ("192.0.2.1", 80)


def _seg(src, dst, **kw) -> Segment:
    return Segment(src=src[0], dst=dst[0], sport=src[1], dport=dst[1], **kw)


def _rst_in_window(path: Path) -> Path:
    """A connection the client resets with an RST 10 bytes past rcv_nxt (in the window, not exact)."""
    A = Flags.ACK
    segs = [_seg(C, S, seq=100, flags=Flags.SYN), _seg(S, C, seq=500, ack=101, flags=Flags.SYN | A),
            _seg(C, S, seq=101, ack=501, flags=A), _seg(C, S, seq=101, ack=501, flags=Flags.PSH | A, payload=b"x" * 20),
            _seg(S, C, seq=501, ack=121, flags=A), _seg(C, S, seq=131, ack=501, flags=Flags.RST)]
    with PcapWriter(path, linktype=LINKTYPE_RAW) as w:
        for i, s in enumerate(segs):
            w.write(codec.to_bytes(s), (1_700_000_000 + i) * 10**9)
    return path


CASES = {   # the changed table, the capture it changes, what the change shows there
    "rst_rfc793": ("rst-in-window.pcap", '"from":"ESTABLISHED","to":"CLOSED","cause":"rcv RST seq=131 (in the window'),
    "final_ack_hold": ("lost-final-ack.pcap", '"from":"LAST_ACK","to":"CLOSED","cause":"rcv ACK ack=2202 of FIN seq=2201"'),
}


@needs_lane
@pytest.mark.parametrize("name", sorted(CASES))
def test_a_rule_changed_in_the_table_only_is_followed_by_both_engines(name, tmp_path):
    rules = CHANGED / f"{name}.py"
    where, shows = CASES[name]
    caps = [*SHIPPED, _rst_in_window(tmp_path / "rst-in-window.pcap")]
    argv = [["analyze", "--format", "jsonl", "--engine", eng, str(c)] for eng in ("python", "c") for c in caps]
    (tmp_path / "changed").mkdir()
    (tmp_path / "default").mkdir()
    changed, default = Runner(tmp_path / "changed", rules=str(rules)), Runner(tmp_path / "default", rules="")
    try:
        outs = changed.run_many(argv)
        before = default.run_many(argv[:len(caps)])
    finally:
        changed.close()
        default.close()
    py, c = outs[:len(caps)], outs[len(caps):]
    for cap, p, q in zip(caps, py, c):
        assert (p.rc, p.stderr) == (q.rc, q.stderr), cap.name
        assert p.stdout == q.stdout, f"{cap.name}: " + first_difference(p.stdout, q.stdout, ("python", "c"))
    differs = {cap.name for cap, p, b in zip(caps, py, before) if p.stdout != b.stdout}
    assert where in differs, differs                       # the rule changed took effect, in both engines
    if name == "rst_rfc793":
        assert differs == {where}, differs                 # and only where an RST is in the window, not exact
    new = py[caps.index(next(x for x in caps if x.name == where))].stdout.decode()
    assert shows in new


@needs_lane
def test_the_lane_itself_runs_the_changed_rule(tmp_path):
    """In one process: the lane follows the RFC 793 rule without handing the connection to Python."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("rst_rfc793", CHANGED / "rst_rfc793.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    cap = _rst_in_window(tmp_path / "rst.pcap")
    old = machine.install(machine.compile_rules(mod))
    try:
        buf, seen = io.BytesIO(), {}
        assert engine.run(str(cap), buf.write, counters=seen, json_of=json_line(None))
        ref = "".join(json.dumps(r, ensure_ascii=False, separators=(",", ":")) + "\n" for r in records(str(cap), record=record))
    finally:
        machine.install(old)
    assert seen["handoffs"] == seen["python_calls"] == 0, seen
    assert buf.getvalue().decode() == ref
    assert "RFC 793" in ref and "rst_not_exact" not in ref
    # and back under rawfin's own rules: RFC 5961's challenge ACK
    buf = io.BytesIO()
    engine.run(str(cap), buf.write, json_of=json_line(None))
    assert "rst_not_exact" in buf.getvalue().decode()
