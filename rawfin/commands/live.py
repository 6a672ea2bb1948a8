"""`rawfin live`: capture an interface and print each transition the moment it happens.

Frames are read through the kernel's packet ring (TPACKET_V3, as libpcap reads them;
``-B`` sets its size in KiB, as tcpdump's does) and run through the compiled lane, as
``analyze`` runs a file. The kernel's drop count is reported at the end (and while
capturing, on a terminal, when it grows); ``--format jsonl`` ends with a ``stats``
record. The capture filter is tcpdump's language (libpcap compiles it; it runs in the
kernel). Ctrl-C or SIGTERM ends the capture cleanly: the --write file is completed
and the summary printed. Needs root or CAP_NET_RAW (--kernel-truth: root, for tracefs).
"""

from __future__ import annotations

import os
import sys
from typing import IO, Callable

from rawfin.render.records import to_json
from rawfin.render.sinks import ARROW, SUMMARY_HEADERS, summary_row
from rawfin.render.tables import simple_table, terminal_width, wrap


class Out:
    """Standard output written with ``os.write`` until every byte is out.

    Python's buffered writer can lose the rest of a large write to a pipe when a signal
    interrupts it half-way (the kernel returns a short count: seen with SIGTERM while
    the reader of ``rawfin live | ...`` lags), so live writes its batches itself. Text
    is gathered until :meth:`flush`; ``raw(bytes)`` writes at once. A reader that has
    gone (broken pipe) calls ``on_broken`` once and the rest is dropped."""

    def __init__(self, stream: IO[str], on_broken: Callable[[], None] = lambda: None) -> None:
        self.stream = stream
        self.on_broken = on_broken
        self.parts: list[str] = []
        self.broken = False
        try:
            stream.flush()
            self.fd: int | None = stream.fileno()
        except (AttributeError, OSError, ValueError):   # not a file (a test's StringIO): write to it
            self.fd = None

    def write(self, text: str) -> None:
        self.parts.append(text)

    def flush(self) -> None:
        if self.parts:
            data, self.parts = "".join(self.parts), []
            self.raw(data.encode())

    def raw(self, data: bytes) -> None:
        if self.parts:
            self.flush()
        if self.broken:
            return
        if self.fd is None:
            self.stream.write(data.decode())
            return
        view = memoryview(data)
        try:
            while view:
                view = view[os.write(self.fd, view):]
        except BrokenPipeError:
            self.broken = True
            self.on_broken()


class LiveTable:
    """One line per event as it happens (a long cause wraps under itself to fit ``width``);
    the summary table when the capture ends."""

    def __init__(self, out: IO[str], *, kernel: bool, origin_ns: int, tablefmt: str = "simple",
                 width: int | None = None) -> None:
        self.out = out
        self.kernel = kernel
        self.origin = origin_ns / 1e9
        self.tablefmt = tablefmt
        self.width = terminal_width(sys.stdout) if width is None else width
        self.connections: list[dict] = []
        self.header = False

    def _head(self) -> None:
        if self.header:
            return
        self.header = True
        if self.kernel:
            cols = f"{'time':>10}  {'conn':>4}  {'endpoint':<22} {'source':<6}  {'transition':<27} {'agree':<5}  cause"
        else:
            cols = f"{'time':>10}  {'conn':>4}  {'endpoint':<22} {'transition':<27} cause"
        self.out.write(cols + "\n" + "-" * len(cols) + "\n")

    def write(self, rec: dict) -> None:
        t = rec.get("type")
        if t == "connection":
            self.connections.append(rec)
            return
        if t not in ("transition", "anomaly", "kernel"):
            return                      # the stats record: the closing line on stderr says it
        self._head()
        when = f"{(rec['time'] or 0) - self.origin:10.6f}" if rec.get("time") is not None else " " * 10
        conn = "" if rec.get("conn") is None else str(rec["conn"])
        if t == "transition":
            tr = f"{rec['from']} {ARROW} {rec['to']}"
            if self.kernel:
                head, text = f"{when}  {conn:>4}  {rec['endpoint']:<22} {'wire':<6}  {tr:<27} {'':<5}  ", rec["cause"]
            else:
                head, text = f"{when}  {conn:>4}  {rec['endpoint']:<22} {tr:<27} ", rec["cause"]
        elif t == "anomaly":
            tr = f"! {rec['kind']}"
            pad = f"{'wire':<6}  " if self.kernel else ""
            agree = f"{'':<5}  " if self.kernel else ""
            head, text = f"{when}  {conn:>4}  {rec['endpoint']:<22} {pad}{tr:<27} {agree}", rec["detail"]
        elif t == "kernel":
            tr = f"{rec['from']} {ARROW} {rec['to']}"
            agree = {True: "yes", False: "NO", None: "-"}[rec.get("agree")]
            said = f"tracepoint: {rec['kernel']}" if rec.get("source") == "tracepoint" else \
                f"{rec.get('source')}: {rec['kernel']}"
            if rec.get("note"):
                said += f" ({rec['note']})"
            head, text = f"{when}  {conn:>4}  {rec['endpoint']:<22} {'kernel':<6}  {tr:<27} {agree:<5}  ", said
        else:
            return
        for line in wrap(text, self.width, head, " " * len(head)):
            self.out.write(line.rstrip() + "\n")

    def flush(self) -> None:
        self.out.flush()

    def _table(self, rows: list, headers: list) -> str:
        if self.tablefmt == "simple":
            return simple_table(headers, rows, self.width)
        from tabulate import tabulate
        return tabulate(rows, headers=headers, tablefmt=self.tablefmt, disable_numparse=True) + "\n"

    def close(self, stats: dict, side_by_side: list[dict] | None) -> None:
        out = self.out
        if side_by_side:
            out.write("\nwire (rawfin) beside the kernel (tracepoint sock:inet_sock_set_state):\n")
            rows, notes = [], []
            for r in side_by_side:
                said, _, more = (r["note"] or "").partition("; ")
                if more:                      # the long explanation goes under the table, numbered
                    notes.append(more)
                    said = f"{said} [{len(notes)}]"
                rows.append([f"{(r['time'] or 0) - self.origin:.6f}", r["endpoint"], r["wire"], r["kernel"],
                             r["agree"], said])
            out.write(self._table(rows, ["time", "endpoint", "rawfin (wire)", "kernel", "agree", "kernel said"]))
            for i, note in enumerate(notes, 1):
                out.write("\n".join(wrap(note, self.width, f"[{i}] ", "    ")) + "\n")
        if self.connections:
            out.write("\nsummary:\n")
            out.write(self._table([summary_row(c) for c in self.connections], list(SUMMARY_HEADERS)))
        out.flush()


class LiveJsonl:
    """Records as JSON lines: the lane's own bytes, passed through."""

    def __init__(self, out: Out) -> None:
        self.out = out
        self.raw = out.raw

    def write(self, rec: dict) -> None:
        self.out.raw((to_json(rec) + "\n").encode())

    def flush(self) -> None:
        self.out.flush()

    def close(self, stats: dict, side_by_side: list[dict] | None) -> None:
        self.out.flush()


def open_live(*, msl_ns: int = 30 * 10**9, lane: bool | None = None, limits: dict | None = None,
              relative_seq: bool = False, **kw):
    """A :class:`rawfin.linux.live.Live` session whose segments go through the compiled lane
    (:class:`rawfin.capture.engine.Stream`, final-ACK hold 0: each transition the moment it
    happens), or the Python observer alone with ``lane=False`` or no lane built. ``limits``: the
    half-open timeouts and --max-connections (rawfin.cli.limits). ``relative_seq``: the texts'
    sequence numbers relative to each side's base (--seq relative). ``kw``: Live's own (interface,
    bpf, kernel_truth, write, emit, raw, buffer_kib, ...)."""
    from rawfin.capture.engine import Stream
    from rawfin.linux.live import Live

    from rawfin.render.records import json_line

    return Live(stream=lambda write: Stream(write, json_of=json_line(None), msl_ns=msl_ns, hold_ns=0, lane=lane,
                                            limits=limits, relative_seq=relative_seq), **kw)


def _drops_note(st: dict) -> None:
    print(f"rawfin live: the ring was full: the kernel dropped {st['new']} frames before frame {st['before_frame']} "
          f"({st['drops']} so far; a larger -B keeps more)", file=sys.stderr, flush=True)


def run(args) -> int:
    from rawfin.capture.engine import choose

    lane = choose(getattr(args, "engine", "auto"))
    jsonl = args.format == "jsonl"
    sink = None
    buffered: list[dict] = []

    def emit(rec: dict) -> None:
        if sink is None:
            buffered.append(rec)
        else:
            sink.write(rec)

    def flush() -> None:
        if sink is not None:
            sink.flush()

    stop = []          # a reader gone (broken pipe) ends the capture cleanly
    out = Out(sys.stdout, on_broken=lambda: stop and stop[0]())
    jl = LiveJsonl(out) if jsonl else None
    from rawfin.cli import limits

    live = open_live(interface=args.interface, bpf=args.bpf, msl_ns=int(args.msl * 1e9), lane=lane, limits=limits(args),
                     kernel_truth=args.kernel_truth, write=args.write, emit=emit,
                     raw=jl.raw if jl is not None else None, buffer_kib=args.buffer_size,
                     on_drops=_drops_note if sys.stderr.isatty() else None, flush=flush,
                     relative_seq=args.seq == "relative")
    stop.append(live.stop)
    sink = jl if jl is not None else LiveTable(out, kernel=args.kernel_truth, origin_ns=live.start_ns,
                                               tablefmt=args.tablefmt)
    for r in buffered:
        sink.write(r)
    what = f"capturing on {args.interface}, filter {args.bpf!r} ({live.filter_how}), {live.ring.buffer_bytes // 1024} KiB ring"
    if args.kernel_truth:
        what += f"; kernel truth from {live.tracer.instance}"
    if live.ring.note:
        print(f"rawfin live: warning: {live.ring.note}", file=sys.stderr)
    print(f"rawfin live: {what}; Ctrl-C to stop", file=sys.stderr, flush=True)
    stats = live.run(count=args.count, duration=args.duration)
    side = live.agreement.rows() if live.agreement is not None else None
    sink.close(stats, side)
    print(summary_line(stats, args), file=sys.stderr)
    if stats["dropped"]:
        where = ", ".join(f"{g['dropped']} before frame {g['before_frame']}" for g in stats["drops_at"][:5])
        more = f" and {stats['gaps'] - 5} more places" if stats["gaps"] > 5 else ""
        print(f"rawfin live: the ring ({stats['buffer_kib']} KiB) was full: dropped {where}{more}; a connection "
              "that lost segments there shows previous_segment_not_captured or acked_unseen_segment where its "
              "sequence numbers jump; a larger -B keeps more", file=sys.stderr)
    return 0


def summary_line(stats: dict, args) -> str:
    """tcpdump's closing words, with rawfin's count of connections."""
    msg = (f"rawfin live: {stats['segments']} segments received, {stats['dropped']} dropped by the kernel; "
           f"{stats['connections']} connection{'' if stats['connections'] == 1 else 's'}")
    if stats["frames"] != stats["segments"]:
        msg += f" ({stats['frames']} frames)"
    if stats.get("timeout"):
        msg += f"; {stats['timeout']:,} half-open given up on (timeout)"
    if stats.get("evicted"):
        msg += f"; {stats['evicted']:,} evicted to stay within --max-connections"
    if args.kernel_truth:
        msg += f"; kernel transitions {stats['kernel_transitions']}, agreeing with the wire {stats['agree']}"
    if args.write:
        msg += f"; capture written to {args.write}"
    if stats["stopped_by"]:
        msg += f" (stopped by {stats['stopped_by']})"
    return msg
