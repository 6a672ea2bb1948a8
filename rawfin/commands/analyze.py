"""`rawfin analyze`: every TCP connection in the captures, how each endpoint moved."""

from __future__ import annotations

import os
import sys

from rawfin.capture.analysis import CaptureStats, ConnFilter, Progress, records
from rawfin.core.errors import EXIT_DATAERR, EXIT_USAGE, CaptureError, UsageError
from rawfin.render.sinks import make_sink


def _use_engine(args, select: ConnFilter) -> bool:
    """The compiled lane follows every connection, so it knows nothing of --filter/--conn."""
    from rawfin.capture import engine

    choice = getattr(args, "engine", "auto")
    if not engine.choose(choice):
        return False
    if select.active:
        if choice == "c":
            raise UsageError("--engine c follows every connection: --filter and --conn need --engine python")
        return False
    return True


def run(args) -> int:
    select = ConnFilter.parse(args.filter, args.conn)
    many = len(args.captures) > 1
    use_engine = _use_engine(args, select)
    sink = make_sink(args.format, tablefmt=args.tablefmt, summary=args.summary)
    failed: list[CaptureError] = []
    all_stats: list[CaptureStats] = []
    try:
        for path in args.captures:
            if not os.path.exists(path):
                raise FileNotFoundError(2, "no such file", path)
            stats = CaptureStats(path=path)
            all_stats.append(stats)
            label = path if many else None
            if hasattr(sink, "origin"):
                sink.origin = None
            try:
                if use_engine and _run_engine(path, args, label, stats, sink):
                    continue
                for rec in records(path, msl_s=args.msl, label=label, progress=args.progress,
                                   select=select if select.active else None, stats=stats):
                    if hasattr(sink, "set_origin") and stats.first_time is not None:
                        sink.set_origin(stats.first_time)
                    sink.write(rec)
            except CaptureError as e:
                failed.append(e)
                print(f"rawfin analyze: {e}", file=sys.stderr)
    finally:
        sink.close()
    if args.format == "table" and args.summary:
        total = sum(s.connections for s in all_stats)
        server = sum(s.server_active_closes for s in all_stats)
        if total:
            print(f"\n{total} connection{'s' if total != 1 else ''}; "
                  f"{server} closed first by the server (TIME_WAIT held on the server's port)")
    for s in all_stats:
        print(s.line(), file=sys.stderr)
    if failed:
        return EXIT_DATAERR
    if args.conn is not None and all(args.conn >= s.connections for s in all_stats):
        most = max(s.connections for s in all_stats)
        print(f"rawfin analyze: no connection {args.conn} (connections are numbered 0..{most - 1})"
              if most else f"rawfin analyze: no connection {args.conn}: no TCP connection at all", file=sys.stderr)
        return EXIT_USAGE
    return 0


def _run_engine(path: str, args, label: str | None, stats: CaptureStats, sink) -> bool:
    """One capture through the compiled lane; False when the lane cannot take this capture
    (nothing is written then). JSON lines go straight to stdout's bytes; for the other
    formats the records are read back and handed to the sink as the reference's would be."""
    from rawfin.capture import engine

    bar = Progress(os.path.basename(path), engine.size_of(path), args.progress)
    progress = bar.update if bar.on else None
    try:
        if args.format == "jsonl":
            sys.stdout.flush()
            out = sys.stdout.buffer
            try:
                return engine.run(path, out.write, msl_s=args.msl, label=label, progress=progress, stats=stats)
            finally:
                out.flush()
        if hasattr(sink, "set_origin"):
            first = engine.first_time(path)
            if first is not None:
                sink.set_origin(first)
        return engine.run(path, engine.RecordFeed(sink.write), msl_s=args.msl, label=label, progress=progress,
                          stats=stats)
    finally:
        bar.done()
