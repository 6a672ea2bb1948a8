"""`rawfin analyze`: every TCP connection in the captures, how each endpoint moved."""

from __future__ import annotations

import os
import sys

from rawfin.capture.analysis import CaptureStats, records
from rawfin.capture.sources import Source, from_args, opened
from rawfin.cli import limits, relative_seq
from rawfin.core.errors import EXIT_DATAERR, EXIT_USAGE, CaptureError, UsageError
from rawfin.render.progress import Progress
from rawfin.render.records import json_line, record
from rawfin.render.sinks import FastSink, make_sink


def run(args) -> int:
    from rawfin.capture import engine
    from rawfin.wire import bpf

    inputs = from_args(args)
    select = bpf.parse(args.filter)
    if args.format in ("ladder", "mermaid"):
        return _draw(args, inputs, select)
    use_engine = engine.choose(getattr(args, "engine", "auto"))
    many = len(inputs.sources) > 1
    sink = _sink(args)
    only = _only_conn(args.conn)
    # --format jsonl ends each capture with its counts (as live ends with its own): not with --summary
    # (connection records only), --conn (one connection's records) or --by (the pile-up view's records)
    wants_stats = args.format == "jsonl" and not args.summary and args.conn is None and getattr(args, "by", None) is None
    failed: list[CaptureError] = []
    all_stats: list[CaptureStats] = []
    for p in inputs.skipped:
        if not args.quiet:
            print(f"rawfin analyze: {p}: not a capture, passed over", file=sys.stderr)
    try:
        for src in inputs.sources:
            stats = CaptureStats(path=src.name)
            all_stats.append(stats)
            label = src.name if many else None
            if hasattr(sink, "start_file"):
                sink.start_file()
            read = False        # the capture was read (to its end or to its damage): its stats record
            try:
                with opened(src) as (name, fileobj):
                    if use_engine and _run_engine(src, fileobj, args, label, stats, sink, select, only):
                        read = True
                        continue
                    with Progress(os.path.basename(name), src.size(), args.progress) as bar:
                        for rec in records(name, msl_s=args.msl, label=label, progress=bar.callback,
                                           select=only, stats=stats, fileobj=fileobj, bpf=select, record=record,
                                           limits=limits(args), relative_seq=relative_seq(args)):
                            if hasattr(sink, "set_origin") and stats.first_time is not None:
                                sink.set_origin(stats.first_time)
                            sink.write(rec)
                    read = True
            except CaptureError as e:
                read = True
                failed.append(e)
                print(f"rawfin analyze: {e}", file=sys.stderr)
            finally:
                if read and wants_stats:
                    sink.write(stats_record(stats, label))
                if hasattr(sink, "end_file"):
                    sink.end_file()
    finally:
        sink.close()
    if args.format == "table" and args.summary:
        total = sum(s.connections for s in all_stats)
        server = sum(s.server_active_closes for s in all_stats)
        if total:
            from rawfin.render.tables import terminal_width, wrap
            line = (f"{total} connection{'s' if total != 1 else ''}; "
                    f"{server} closed first by the server (TIME_WAIT held on the server's port)")
            print("\n" + "\n".join(wrap(line, terminal_width())))
    if not args.quiet:
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


def stats_record(s: CaptureStats, label: str | None = None) -> dict:
    """A capture's ``stats`` record (the record type live ends with): what was read, the
    connections, and how many were written out before their end (half-open ones given up on,
    ``timeout``; made room for under --max-connections, ``evicted``)."""
    rec = {"type": "stats", "file": label, "frames": s.frames, "filtered": s.filtered, "segments": s.tcp,
           "connections": s.connections, "timeout": s.by_close.get("timeout", 0),
           "evicted": s.by_close.get("evicted", 0)}
    if label is None:       # the capture is named when there are several, as in every record
        del rec["file"]
    passed = {k: v for k, v in sorted(s.skipped.items()) if v}
    if passed:
        rec["passed_over"] = passed
    if s.error is not None:
        rec["error"] = str(s.error)
    return rec


def _sink(args):
    by = getattr(args, "by", None)
    if by is None:
        for opt in ("interval", "plot"):
            if getattr(args, opt, None) is not None:
                raise UsageError(f"--{opt} goes with --by server|client|host")
        return make_sink(args.format, tablefmt=args.tablefmt, summary=args.summary,
                         fast=getattr(args, "engine", "auto") != "python")
    if args.summary:
        raise UsageError("--summary and --by are two views: choose one")
    from rawfin.render.pileup import PileupSink

    return PileupSink(args.format, by=by, interval_s=args.interval, tablefmt=args.tablefmt, plot=args.plot)


class _OnlyConn:
    """``--conn N``: the records of connection N (and those of no connection, a malformed frame): a
    select on the reference's observer, and for the lane its typed events by their connection number."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __call__(self, conn) -> bool:
        return conn.id == self.n

    def wants(self, ev) -> bool:
        return ev.conn is None or ev.conn == self.n


def _only_conn(n: int | None) -> _OnlyConn | None:
    return None if n is None else _OnlyConn(n)


def _no_text(data: bytes) -> None:  # pragma: no cover - the lane in moves mode writes no text
    raise TypeError("text from the lane in moves mode")


def _run_engine(src: Source, fileobj, args, label: str | None, stats: CaptureStats, sink, select, only) -> bool:
    """One capture through the compiled lane; False when the lane cannot take this capture
    (nothing is written then). JSON lines go straight to stdout's bytes; the other formats go
    to the C writer as JSON lines, beside the lane; --by takes the lane's moves (typed, engine.run's
    moves mode); the rest takes the typed events as the lane makes them."""
    from rawfin.capture import engine

    bar = Progress(os.path.basename(src.name), src.size(), args.progress)
    kw = dict(msl_s=args.msl, label=label, progress=bar.callback, stats=stats, fileobj=fileobj,
              bpf=select, json_of=json_line(label), limits=limits(args), relative_seq=relative_seq(args))
    try:
        if only is None and args.format == "jsonl" and not args.summary and getattr(args, "by", None) is None:
            sys.stdout.flush()
            out = sys.stdout.buffer
            try:
                return engine.run(src.name, out.write, **kw)
            finally:
                out.flush()
        if hasattr(sink, "set_origin"):
            if fileobj is None:
                first = engine.first_time(src.name)
                if first is not None:
                    sink.set_origin(first)
            else:
                kw["on_first"] = lambda t: sink.set_origin(t / 1e9)
        if only is None and isinstance(sink, FastSink):     # the C writer works beside the lane, on another core
            return engine.run_beside(src.name, sink.feed, **kw)
        kw.pop("json_of")
        if only is None and hasattr(sink, "moves"):         # the pile-up view: the lane's moves, typed
            return engine.run(src.name, _no_text, emit=sink.moves(label, engine.state_names(), engine.event_of),
                              moves=True, **kw)
        for ev in engine.events(src.name, **kw):            # the typed events, as the lane makes them
            if only is None or only.wants(ev):
                sink.write(record(ev, label))
        return True
    finally:
        bar.done()


def _draw(args, inputs, select) -> int:
    """``--format ladder|mermaid``: one captured connection drawn as `rawfin scenario` draws a run."""
    import shutil
    import tempfile

    from rawfin.capture import engine
    from rawfin.render import ladder

    if len(inputs.sources) != 1:
        raise UsageError(f"--format {args.format} draws one connection of one capture; "
                         f"{len(inputs.sources)} captures given")
    if getattr(args, "by", None) or args.summary:
        raise UsageError(f"--format {args.format} draws one connection: not with --by or --summary")
    src = inputs.sources[0]
    n = 0 if args.conn is None else args.conn
    with tempfile.TemporaryDirectory(prefix="rawfin-") as tmp:
        if src.kind in ("stdin", "stream"):       # read twice: the records, then the segments
            path = os.path.join(tmp, "stdin.pcap")
            with src.open() as f, open(path, "wb") as out:
                shutil.copyfileobj(f, out, 1 << 20)
            src = Source(path)
        stats = CaptureStats(path=src.name)
        items: list[dict] = []
        conn = None
        with opened(src) as (name, fileobj):
            if engine.choose(getattr(args, "engine", "auto")):
                pull = engine.records(name, msl_s=args.msl, stats=stats, fileobj=fileobj, bpf=select, record=record,
                                      json_of=json_line(None), limits=limits(args), relative_seq=relative_seq(args))
            else:
                pull = records(name, msl_s=args.msl, stats=stats, fileobj=fileobj, bpf=select, record=record,
                               limits=limits(args), relative_seq=relative_seq(args))
            try:
                for rec in pull:
                    if rec.get("conn") != n:
                        continue
                    if rec["type"] == "connection":
                        conn = rec
                    else:
                        items.append(rec)
            except CaptureError as e:
                print(f"rawfin analyze: {e}", file=sys.stderr)
                if conn is None:
                    return EXIT_DATAERR
        if conn is None:
            total = stats.connections
            print(f"rawfin analyze: no connection {n}" + (f" (connections are numbered 0..{total - 1})" if total
                                                           else ": no TCP connection at all"), file=sys.stderr)
            return EXIT_USAGE
        segs = _segments(src, conn, select)
    name = inputs.sources[0].name
    d = ladder.from_capture(conn, items, segs, source="standard input" if name == "-" else os.path.basename(name),
                            msl_s=args.msl, relative_seq=relative_seq(args))
    sys.stdout.write(ladder.text(d) if args.format == "ladder" else ladder.mermaid(d))
    if args.conn is None and stats.connections > 1 and not args.quiet:
        print(f"rawfin analyze: drew connection 0 of {stats.connections}; --conn N draws another",
              file=sys.stderr)
    return 0


def _segments(src: Source, conn: dict, select) -> list:
    """The connection's segments as the capture holds them (its frames first_frame..last_frame
    between its two endpoints, on its VLAN)."""
    from rawfin.core.segment import Segment, fmt_endpoint
    from rawfin.wire.decode import decode
    from rawfin.wire.pcapio import open_capture

    ends = {conn["client"], conn["server"]}
    vlan = tuple(conn.get("vlan") or ())
    out = []
    with opened(src) as (name, fileobj), open_capture(name, fileobj) as reader:
        match = select.for_byte_order(reader.byte_order == "big").match if select is not None else None
        try:
            for fr in reader:
                if fr.frame < conn["first_frame"]:
                    continue
                if fr.frame > conn["last_frame"]:
                    break
                if match is not None and not match(fr.linktype, fr.data, fr.orig_len):
                    continue
                s = decode(fr.linktype, fr.data, fr.orig_len, fr.frame, fr.time_ns)
                if s.__class__ is not Segment or tuple(s.vlan or ()) != vlan:
                    continue
                if {fmt_endpoint(s.src, s.sport), fmt_endpoint(s.dst, s.dport)} == ends:
                    out.append(s)
        except CaptureError:
            pass            # the records said what is wrong; draw what came before
    return out
