"""What ``rawfin packetdrill`` prints: a script's lines with their verdicts, the segments both ways
with each side's state, the system under test's own transitions, and the first failure.

The outcome objects come from :mod:`rawfin.sim.pktrun` (duck-typed here: the
render layer imports no driver). ``table`` fits 100 columns (long cells wrap);
``jsonl`` is one record per line: ``line``, ``segment``, ``transition``, ``fault``,
``note`` and a closing ``result``.
"""

from __future__ import annotations

from rawfin.render.records import to_json

ARROW = "→"
_WIDTH = {"event": 46, "result": 26, "segment": 40, "note": 16}


def _s(us: int | None) -> str:
    return "" if us is None else f"{us / 1e6:.6f}"


def _who(target: str) -> str:
    return "kernel" if target == "kernel" else "rawfin"


def _whose(target: str) -> str:
    return "the kernel's" if target == "kernel" else "rawfin's endpoint's"


def render_table(out, o, tablefmt: str = "simple", *, header: str = "") -> None:
    from tabulate import tabulate

    w = out.write
    sut = _who(o.target)
    w(f"packetdrill {o.path} against {header or sut}\n")
    w(f"  {sut} states: {o.truth}; the script side's: rawfin's observer reading the wire\n\n")
    rows = [[r.line, _s(r.live_us if r.live_us is not None else r.script_us), r.verdict, r.text, r.detail]
            for r in o.lines]
    w(tabulate(rows, headers=["line", "time", "verdict", "event", "what happened"], tablefmt=tablefmt,
               disable_numparse=True, maxcolwidths=[None, None, None, _WIDTH["event"], _WIDTH["result"]]) + "\n")
    if o.wire:
        w(f"\nsegments (in the script's relative numbers; {ARROW} {sut}: sent by the script, {sut} {ARROW}: "
          f"sent by {'the kernel' if sut == 'kernel' else 'rawfin'}):\n")
        rows = []
        for rec in sorted(o.wire, key=lambda r: r.time_ns):
            d = f"{ARROW} {sut}" if rec.direction == "in" else f"{sut} {ARROW}"
            rows.append([f"{rec.time_ns / 1e9:.6f}", d, rec.script_text, "" if rec.line is None else rec.line,
                         rec.sut_state, rec.peer_state, rec.note])
        w(tabulate(rows, headers=["time", "dir", "segment", "line", sut, "script side", "note"],
                   tablefmt=tablefmt, disable_numparse=True,
                   maxcolwidths=[None, None, _WIDTH["segment"], None, None, None, _WIDTH["note"]]) + "\n")
    if o.transitions:
        w(f"\n{_whose(o.target)} own transitions ({o.truth}):\n")
        rows = [[f"{t[0] / 1e9:.6f}", f"{t[1]} {ARROW} {t[2]}", f"{t[3]} {ARROW} {t[4]}", t[5]]
                for t in sorted(o.transitions, key=lambda t: t[0])]
        w(tabulate(rows, headers=["time", "connection", "transition", "said"], tablefmt=tablefmt,
                   disable_numparse=True, maxcolwidths=[None, 30, None, 34]) + "\n")
    if o.faults:
        w("\nfaults on the link:\n")
        for f in o.faults:
            w(f"  {f}\n")
    if o.notes:
        w("\nnotes:\n")
        for n in o.notes:
            w(_wrap("  ", n))
    w("\n" + verdict_line(o) + "\n")
    out.flush()


def _wrap(indent: str, text: str, width: int = 100) -> str:
    import textwrap
    return "\n".join(textwrap.wrap(text, width=width, initial_indent=indent,
                                   subsequent_indent=indent + "  ")) + "\n"


def verdict_line(o) -> str:
    if o.failure is None:
        n = sum(1 for r in o.lines if r.verdict == "ok")
        return f"PASS: all {n} lines held against {'the kernel' if o.target == 'kernel' else 'rawfin'}"
    return f"FAIL: {o.failure}"


def render_jsonl(out, o) -> None:
    def put(rec: dict) -> None:
        out.write(to_json(rec) + "\n")

    for r in o.lines:
        put({"type": "line", "script": o.path, "target": o.target, "line": r.line, "kind": r.kind,
             "event": r.text, "verdict": r.verdict, "detail": r.detail,
             "script_time": None if r.script_us is None else round(r.script_us / 1e6, 6),
             "time": None if r.live_us is None else round(r.live_us / 1e6, 6)})
    for rec in sorted(o.wire, key=lambda r: r.time_ns):
        s = rec.seg
        put({"type": "segment", "script": o.path, "time": round(rec.time_ns / 1e9, 9),
             "direction": "in" if rec.direction == "in" else "out", "line": rec.line,
             "script_text": rec.script_text, "src": s.src_ep, "dst": s.dst_ep, "seq": s.seq, "ack": s.ack,
             "flags": s.flags, "len": s.data_len, "window": s.window, "sut_state": rec.sut_state,
             "peer_state": rec.peer_state, "note": rec.note})
    for t in sorted(o.transitions, key=lambda t: t[0]):
        put({"type": "transition", "conn": 0, "frame": None, "time": round(t[0] / 1e9, 9), "endpoint": t[1],
             "peer": t[2], "from": t[3], "to": t[4], "cause": t[5], "source": o.truth})
    for f in o.faults:
        put({"type": "fault", "script": o.path, "text": f})
    for n in o.notes:
        put({"type": "note", "script": o.path, "text": n})
    put({"type": "result", "script": o.path, "target": o.target, "ok": o.failure is None, "failure": o.failure})
    out.flush()
