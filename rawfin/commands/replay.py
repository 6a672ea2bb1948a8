"""`rawfin replay CAPTURE --as client|server`: would a correct TCP, or today's Linux, do the same?

rawfin plays the recorded side of connection N; the other side is live (the
emulator's endpoint, or a real kernel socket in a namespace of rawfin's own).
Exit 0 when the live side followed the capture's states and segments, 1 when
it diverged, 65 for bad input (no such connection, no handshake without
--mid-stream, not TCP).
"""

from __future__ import annotations

import sys

from rawfin.core.errors import EXIT_USAGE
from rawfin.render.records import to_json
from rawfin.render.sinks import ARROW


def load(path: str, conn: int = 0, *, mid_stream: bool = False, relative_seq: bool = False):
    """Connection ``conn`` of the capture at ``path`` as a :class:`~rawfin.sim.replay.Recording`:
    its segments and the analysis records of the capture (CaptureError / ReplayError: exit 65);
    ``relative_seq``: its texts show relative sequence numbers (--seq relative)."""
    from rawfin.capture.analysis import records
    from rawfin.core.segment import Segment
    from rawfin.sim.replay import ReplayError, recording
    from rawfin.wire.decode import decode
    from rawfin.wire.pcapio import open_capture

    segs: list[Segment] = []
    frames = 0
    reader = open_capture(path)
    try:
        for fr in reader:
            frames += 1
            r = decode(fr.linktype, fr.data, fr.orig_len, fr.frame, fr.time_ns)
            if r.__class__ is Segment:
                segs.append(r)
    finally:
        reader.close()
    if not segs:
        raise ReplayError(f"{path}: not TCP: none of its {frames} frames is a TCP segment")
    from rawfin.render.records import record

    recs = list(records(path, msl_s=30.0, record=record, relative_seq=relative_seq))
    return recording(path, segs, recs, conn, mid_stream=mid_stream, relative_seq=relative_seq)


def _usage(msg: str) -> int:
    print(f"rawfin replay: {msg}", file=sys.stderr)
    return EXIT_USAGE


def _t(ns: int | None, origin: int | None) -> str:
    if ns is None or origin is None:
        return ""
    return f"{(ns - origin) / 1e9:.6f}"


def _s(ns: int | None) -> float | None:
    """A time in records: seconds since the epoch, a number (the capture's clock for recorded frames,
    the live run's for live segments), as every record type writes it."""
    return None if ns is None else round(ns / 1e9, 6)


def _arrow(sender: str) -> str:
    return "C→S" if sender == "client" else "S→C"


#: the kernel's moves that only an application's call makes, and whether the segment that call
#: sends carries a SYN (connect) or a FIN (close, shutdown); the tracepoint does not say what moved it
_SENDING = {("CLOSED", "SYN_SENT"): "syn", ("ESTABLISHED", "FIN_WAIT_1"): "fin",
            ("SYN_RECEIVED", "FIN_WAIT_1"): "fin", ("CLOSE_WAIT", "LAST_ACK"): "fin"}
#: where the live kernel's moves come from (the emulator's application moves say so themselves)
_KERNEL_SOURCES = ("tracepoint", "/proc/net/tcp")


def rows(o) -> list[dict]:
    """The recorded and the live run side by side, one row per capture frame or live-only segment."""
    from rawfin.sim.replay import SIDES
    from rawfin.core.states import State
    rec, rp = o.rec, o.rp
    wire = rp.wire
    # each side's state in the live run after each wire entry (before the next one): a move made
    # by the side's own call that sends a segment (close() sends the FIN) shows on that segment's row
    def placed(m) -> tuple:
        flag = _SENDING.get((m.from_.name, m.to.name)) if m.source in _KERNEL_SOURCES else None
        if m.app or flag:
            # the side's first segment from the move on; for a kernel's move, the first that carries
            # the move's SYN or FIN (a delayed ACK sent just before close() is not close()'s segment)
            for w in wire:
                if w.sender == m.side and w.order >= m.order and (not flag or getattr(w.seg, flag)):
                    return w.order
        return m.order
    moves = sorted([(placed(m), m.side, m.to) for m in [*o.live_moves, *o.rawfin_moves]], key=lambda x: x[0])
    state = {"client": State.CLOSED, "server": State.LISTEN}     # the live run always opens with a handshake
    after: dict[int, dict] = {}
    mi = 0
    for i, w in enumerate(wire):
        nxt = wire[i + 1].order if i + 1 < len(wire) else None
        while mi < len(moves) and (nxt is None or moves[mi][0] < nxt):
            state[moves[mi][1]] = moves[mi][2]
            mi += 1
        after[i] = dict(state)
    by_frame = {}
    for i, w in enumerate(wire):
        if w.frame is not None:
            by_frame.setdefault(w.frame.index, i)
    out = []
    placed = set()

    def live_cols(i: int) -> dict:
        w = wire[i]
        st = after[i]
        return {"live_time": _s(w.time_ns), "live_dir": _arrow(w.sender),
                "live_segment": w.describe(), **{f"live_{s}": st[s].value for s in SIDES}}

    for f in rec.frames:
        st = rec.states_after(f.frame) if f.frame is not None else {s: rec.initial(s) for s in SIDES}
        row = {"frame": f.frame, "time": _s(f.time_ns), "dir": _arrow(f.sender),
               "recorded": f.describe(), **{f"rec_{s}": st[s].value for s in SIDES}}
        notes = []
        if f.retransmission:
            notes.append("retransmission")
        if f.call and f.sender == rp.live:
            notes.append(f"{rp.live} app: {f.call}()" + (f" {f.seg.data_len} bytes" if f.call == "send" else ""))
        i = by_frame.get(f.index)
        status = rp.status.get(f.index)
        if f.lost:
            notes.append("lost, as the capture implies" + (" (not delivered)" if f.sender == rp.me else
                                                            " (rawfin ignores it)"))
        if i is not None:
            row.update(live_cols(i))
            placed.add(i)
        else:
            row.update({"live_time": None, "live_dir": "", "live_segment": "—" if status == "missing" else "",
                        "live_client": "", "live_server": ""})
            if status == "missing":
                notes.append("DIVERGES: not in the live run")
        row["note"] = "; ".join(notes)
        out.append(row)
        # live-only segments that came after this frame's counterpart
        if i is not None:
            j = i + 1
            while j < len(wire) and wire[j].frame is None:
                r = {"frame": None, "time": None, "dir": "", "recorded": "", "rec_client": "", "rec_server": "",
                     **live_cols(j), "note": "DIVERGES: live only" if wire[j].seg.seg_len or wire[j].seg.rst
                     else "live only (an ACK)"}
                out.append(r)
                placed.add(j)
                j += 1
    for j, w in enumerate(wire):
        if j not in placed:
            out.append({"frame": None, "time": None, "dir": "", "recorded": "", "rec_client": "", "rec_server": "",
                        **live_cols(j), "note": "live only"})
    return out


#: the side-by-side table's columns: one row for the recorded run, one for the live run, per frame
SIDE_BY_SIDE = ["frame", "run", "time", "dir", "segment", "client", "server"]


def side_by_side(rs: list[dict], t0: int, live0: int) -> tuple[list[str], list[tuple[list[list[str]], str]]]:
    """:func:`rows` as the table prints them: the headers, and per frame its rows (``rec``, the recorded
    run, and ``live``, what the live run sent for it; a live-only segment has its ``live`` row alone)
    with the frame's note. Times are seconds since the capture's first frame (``t0``) and since the live
    run's start (``live0``)."""
    def rel(t: float | None, origin: int) -> str:
        return "" if t is None else f"{(round(t * 1e9) - origin) / 1e9:.6f}"
    frames = []
    for r in rs:
        out = []
        if r["frame"] is not None or r["recorded"]:
            out.append([str(r["frame"]) if r["frame"] is not None else "", "rec", rel(r["time"], t0), r["dir"],
                        r["recorded"], r["rec_client"], r["rec_server"]])
        if r["live_segment"] or r["live_dir"] or not out:
            out.append(["" if out else "-", "live", rel(r["live_time"], live0), r["live_dir"], r["live_segment"],
                        r["live_client"], r["live_server"]])
        frames.append((out, r["note"]))
    return list(SIDE_BY_SIDE), frames


def side_by_side_text(headers: list[str], frames: list[tuple[list[list[str]], str]], tablefmt: str = "simple",
                      width: int | None = None) -> str:
    """The side-by-side table fitted to ``width`` (default: the terminal's): in the default ``simple``
    layout (rawfin.render.tables) each frame's rows, then its note on a line of its own (``note: ...``),
    wrapped; any other tabulate format gets a note column on the frame's first row (it does not wrap)."""
    from rawfin.render.tables import Layout, paragraph, table, terminal_width
    if tablefmt != "simple":
        body = [row + [note if k == 0 else ""] for rows_, note in frames for k, row in enumerate(rows_)]
        return table([*headers, "note"], body, tablefmt) + "\n"
    width = terminal_width() if width is None else width
    seg = headers.index("segment")
    lay = Layout(headers, [row for rows_, _ in frames for row in rows_], width, first=(seg,))
    out = [lay.head()]
    for rows_, note in frames:
        out.extend(lay.row(row) for row in rows_)
        if note:
            out.append(paragraph(f"note: {note}", width, "  ", "    ") + "\n")
    return "".join(out)


def render_table(out, o, tablefmt: str = "simple", width: int | None = None) -> None:
    from rawfin.core.segment import fmt_endpoint
    from rawfin.render.tables import paragraph, terminal_width
    rec, rp = o.rec, o.rp
    width = terminal_width() if width is None else width

    def w(text: str, first: str = "", rest: str = "    ") -> None:
        """A line of prose, wrapped to the width (its continuation lines indented)."""
        out.write(paragraph(text, width, first, rest) + "\n")
    live_what = ("the Linux kernel in rawfin's own network namespace (TUN)" if o.against == "kernel"
                 else "the emulator's endpoint (rawfin's core)")
    w(f"replay {rec.path}, connection {rec.conn}: rawfin plays the recorded {rp.me} "
      f"({rec.name(rp.me)}); the {rp.live} is live: {live_what}")
    w(f"live run: rawfin {fmt_endpoint(*o.rawfin_addr)} <-> {o.against} {fmt_endpoint(*o.live_addr)}; "
      f"speed {rp.speed:g}; the live {rp.live}'s ISN {rp.isn[rp.live]} (recorded {rec.isn[rp.live]}); "
      + ("seq/ack relative to each side's ISN" if rec.relative else "seq/ack absolute (--seq relative: "
                                                                      "relative to each side's ISN)"), "  ")
    w(f"the live {rp.live}'s states: {o.truth}; rawfin's: the observer on the live wire", "  ")
    if rec.mid_stream:
        w("mid-stream: no handshake in the capture; rawfin made one up before the first frame", "  ")
    out.write("\n")
    t0 = rec.frames[0].time_ns if rec.frames else 0
    headers, frames = side_by_side(rows(o), t0, rp.start_ns)
    out.write(side_by_side_text(headers, frames, tablefmt, width))
    out.write(f"\nthe live {rp.live} ({o.against}), its transitions:\n")
    if o.live_moves:
        for m in o.live_moves:
            w(f"{_t(m.order[0], rp.start_ns):>10}  {m.from_.value} {ARROW} {m.to.value}"
              + (f"   [{m.cause}]" if m.cause else ""), "  ", " " * 14)
    else:
        out.write("  (none recorded)\n")
    rec_moves = rec.path_of(rp.live)
    out.write(f"the recorded {rp.live}, its transitions:\n")
    for a, b, fr, cause in rec_moves:
        w(f"frame {fr if fr is not None else '-':>4}  {a.value} {ARROW} {b.value}   [{cause}]", "  ", " " * 14)
    for t, text in o.notes:
        w(f"note: {text}")
    out.write("\ndivergences:\n")
    if not o.divergences:
        w(f"none: the live {rp.live} followed the capture's states and segments", "  ")
    for d in o.divergences:
        tag = {"state": "STATE  ", "segment": "SEGMENT", "ack": "ack    "}[d.severity]
        w(f"{tag}  {d.text}", "  ", " " * 11)
    verdict = "DIVERGED" if o.diverged else "followed the capture"
    minor = sum(1 for d in o.divergences if d.severity == "ack")
    out.write("\n")
    w(f"verdict: the live {rp.live} {verdict}"
      + (f" ({minor} ACK-only difference{'s' if minor != 1 else ''}: timing, not behaviour)" if minor else ""))
    out.flush()


def render_jsonl(out, o) -> None:
    def put(rec):
        out.write(to_json(rec) + "\n")

    conn = o.rec.conn
    for r in rows(o):
        put({"type": "replay", "conn": conn, **r})
    for m in o.live_moves:
        put({"type": "live_transition", "conn": conn, "side": m.side, "time": round(m.order[0] / 1e9, 6),
             "from": m.from_.value, "to": m.to.value, "cause": m.cause, "source": m.source})
    for d in o.divergences:
        put(d.record(conn))
    put({"type": "verdict", "conn": conn, "as": o.rp.me, "against": o.against, "diverged": o.diverged,
         "divergences": len(o.divergences)})
    out.flush()


def run(args) -> int:
    from rawfin.sim.replay import scenario_toml
    from rawfin.linux.replayrun import run_emulator, run_kernel

    if args.speed < 0:
        return _usage("--speed cannot be negative (0: as fast as the live side allows)")
    if args.export:
        kind, target = args.export
        if kind != "scenario":
            return _usage(f"--export {kind}: the only export is 'scenario' (--export scenario FILE.toml)")
        rec = load(args.capture, args.conn, mid_stream=args.mid_stream, relative_seq=args.seq == "relative")
        text = scenario_toml(rec)
        if target == "-":
            sys.stdout.write(text)
        else:
            with open(target, "w", encoding="utf-8") as fh:
                fh.write(text)
            print(f"rawfin replay: wrote connection {rec.conn} as a scenario to {target}", file=sys.stderr)
        if not args.as_side:
            return 0
    if not args.as_side:
        return _usage("say which side rawfin plays: --as client or --as server")
    rec = load(args.capture, args.conn, mid_stream=args.mid_stream, relative_seq=args.seq == "relative")
    if args.against == "kernel":
        o = run_kernel(rec, args.as_side, speed=args.speed, write=args.write)
    else:
        o = run_emulator(rec, args.as_side, speed=args.speed, write=args.write)
    if args.format == "jsonl":
        render_jsonl(sys.stdout, o)
    else:
        render_table(sys.stdout, o, args.tablefmt)
    if o.truth.startswith("unavailable"):
        print(f"rawfin replay: kernel truth {o.truth}; the kernel's states are the observer's reading of "
              f"the wire", file=sys.stderr)
    if args.write:
        print(f"rawfin replay: the live run written to {args.write}", file=sys.stderr)
    return 1 if o.diverged else 0
