"""`rawfin live`: sniff an interface and print each transition the moment it happens.

Capture filter: libpcap's BPF syntax when libpcap is installed; otherwise
rawfin's own small language: 'tcp', '[src|dst] host ADDR', '[src|dst] port N',
joined by 'and'. Ctrl-C (or SIGTERM) ends the capture cleanly: the --write
file is completed and the summary printed. Needs root or CAP_NET_RAW
(--kernel-truth: root, for tracefs).
"""

from __future__ import annotations

import sys
import textwrap
from typing import IO

from rawfin.render.records import to_json
from rawfin.render.sinks import ARROW, SUMMARY_HEADERS, summary_row


class LiveTable:
    """One flushed line per event; a summary table when the capture ends."""

    def __init__(self, out: IO[str], *, kernel: bool, origin_ns: int, tablefmt: str = "simple") -> None:
        self.out = out
        self.kernel = kernel
        self.origin = origin_ns / 1e9
        self.tablefmt = tablefmt
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
        self._head()
        when = f"{(rec['time'] or 0) - self.origin:10.6f}" if rec.get("time") is not None else " " * 10
        conn = "" if rec.get("conn") is None else str(rec["conn"])
        if t == "transition":
            tr = f"{rec['from']} {ARROW} {rec['to']}"
            if self.kernel:
                line = f"{when}  {conn:>4}  {rec['endpoint']:<22} {'wire':<6}  {tr:<27} {'':<5}  {rec['cause']}"
            else:
                line = f"{when}  {conn:>4}  {rec['endpoint']:<22} {tr:<27} {rec['cause']}"
        elif t == "anomaly":
            tr = f"! {rec['kind']}"
            pad = f"{'wire':<6}  " if self.kernel else ""
            agree = f"{'':<5}  " if self.kernel else ""
            line = f"{when}  {conn:>4}  {rec['endpoint']:<22} {pad}{tr:<27} {agree}{rec['detail']}"
        elif t == "kernel":
            tr = f"{rec['from']} {ARROW} {rec['to']}"
            agree = {True: "yes", False: "NO", None: "-"}[rec.get("agree")]
            said = f"tracepoint: {rec['kernel']}" if rec.get("source") == "tracepoint" else \
                f"{rec.get('source')}: {rec['kernel']}"
            if rec.get("note"):
                said += f" ({rec['note']})"
            line = f"{when}  {conn:>4}  {rec['endpoint']:<22} {'kernel':<6}  {tr:<27} {agree:<5}  {said}"
        else:
            return
        self.out.write(line + "\n")
        self.out.flush()

    def close(self, stats: dict, side_by_side: list[dict] | None) -> None:
        from tabulate import tabulate

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
            out.write(tabulate(rows, headers=["time", "endpoint", "rawfin (wire)", "kernel", "agree", "kernel said"],
                               tablefmt=self.tablefmt, disable_numparse=True) + "\n")
            for i, note in enumerate(notes, 1):
                out.write(textwrap.fill(note, 100, initial_indent=f"[{i}] ", subsequent_indent="    ") + "\n")
        if self.connections:
            out.write("\nsummary:\n")
            out.write(tabulate([summary_row(c) for c in self.connections], headers=SUMMARY_HEADERS,
                               tablefmt=self.tablefmt, disable_numparse=True) + "\n")
        out.flush()


class LiveJsonl:
    def __init__(self, out: IO[str]) -> None:
        self.out = out

    def write(self, rec: dict) -> None:
        self.out.write(to_json(rec) + "\n")
        self.out.flush()

    def close(self, stats: dict, side_by_side: list[dict] | None) -> None:
        self.out.flush()


def run(args) -> int:
    from rawfin.linux.live import Live

    sink = None
    buffered: list[dict] = []

    def emit(rec: dict) -> None:
        if sink is None:
            buffered.append(rec)
        else:
            sink.write(rec)

    live = Live(interface=args.interface, bpf=args.bpf, msl_ns=int(args.msl * 1e9),
                kernel_truth=args.kernel_truth, write=args.write, emit=emit)
    if args.format == "jsonl":
        sink = LiveJsonl(sys.stdout)
    else:
        sink = LiveTable(sys.stdout, kernel=args.kernel_truth, origin_ns=live.start_ns, tablefmt=args.tablefmt)
    for r in buffered:
        sink.write(r)
    what = f"capturing on {args.interface}, filter {args.bpf!r} ({live.filter_how})"
    if args.kernel_truth:
        what += f"; kernel truth from {live.tracer.instance}"
    print(f"rawfin live: {what}; Ctrl-C to stop", file=sys.stderr, flush=True)
    stats = live.run(count=args.count, duration=args.duration)
    side = live.agreement.rows() if live.agreement is not None else None
    try:
        sink.close(stats, side)
    except BrokenPipeError:
        pass
    msg = (f"rawfin live: {stats['segments']} TCP segments in {stats['frames']} frames, "
           f"{stats['connections']} connections")
    if args.kernel_truth:
        msg += f"; kernel transitions {stats['kernel_transitions']}, agreeing with the wire {stats['agree']}"
    if args.write:
        msg += f"; capture written to {args.write}"
    if stats["interrupted"]:
        msg += " (stopped by Ctrl-C)"
    print(msg, file=sys.stderr)
    return 0
