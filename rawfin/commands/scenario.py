"""`rawfin scenario`: run two emulated endpoints over a faulty link and show, draw or capture it."""

from __future__ import annotations

import os
import sys

from rawfin.core.errors import EXIT_USAGE, OutputError


def _usage(msg: str) -> int:
    print(f"rawfin scenario: {msg}", file=sys.stderr)
    return EXIT_USAGE


def _faults(args) -> tuple[str, ...]:
    from rawfin.sim.emulator import EmulatorError, Fault
    rules = [("drop", r) for r in args.drop]
    rules += [("delay", r) for r in getattr(args, "delay", None) or []]
    rules += [("duplicate", r) for r in getattr(args, "duplicate", None) or []]
    rules += [("reorder", r) for r in getattr(args, "reorder", None) or []]
    out = []
    for action, r in rules:
        if action == "delay" and "@" not in r:
            raise EmulatorError(f"--delay {r!r}: say how long, e.g. 'server:FIN@0.5'")
        text = r if r.split(None, 1)[0] == action else f"{action} {r}"
        Fault.parse(text)          # report a bad rule before anything runs
        out.append(text)
    return tuple(out)


def _overrides(args) -> dict:
    from rawfin.core.units import SEC
    kw = {}
    if args.msl is not None:
        if args.msl <= 0:
            raise ValueError("--msl must be more than 0 seconds")
        kw["msl_ns"] = round(args.msl * SEC)
    if args.rto is not None:
        if args.rto <= 0:
            raise ValueError("--rto must be more than 0 seconds")
        kw["rto_ns"] = round(args.rto * SEC)
    for name in ("isn_client", "isn_server"):
        v = getattr(args, name)
        if v is not None:
            if not 0 <= v < 2 ** 32:
                raise ValueError(f"--{name.replace('_', '-')} must be 0..4294967295")
            kw[name] = v
    if args.ipv6:
        kw["ipv6"] = True
    kw["seed"] = args.seed
    kw["faults"] = _faults(args)
    if args.seq == "relative":
        kw["relative_seq"] = True
    return kw


def list_scenarios(out=None) -> None:
    from rawfin.render.tables import paragraph
    from rawfin.sim import scenarios
    out = out or sys.stdout
    names = scenarios.names()
    width = max(len(n) for n in names)
    for n in names:
        out.write(paragraph(scenarios.builtin(n).summary, None, f"{n:<{width}}  ", " " * (width + 2)) + "\n")


def records(pair, capture_at: str = "sender") -> list[dict]:
    """The run's transition and anomaly records, as ``rawfin analyze --format jsonl`` writes them
    for the capture taken at ``capture_at`` (``time`` is virtual time in seconds)."""
    from rawfin.core.events import Transition
    from rawfin.render.records import anomaly_record, transition_record

    return [transition_record(e, conn) if isinstance(e, Transition) else anomaly_record(e, conn)
            for conn, e in pair.events(capture_at)]


def render(scn, pair, fmt: str, out, *, capture_at: str = "sender", tablefmt: str = "simple",
           file: str | None = None, relative_seq: bool = False) -> None:
    """Write one run in ``fmt`` to ``out`` (``relative_seq``: the ladder's arrows too, as the run's
    endpoints write their texts)."""
    if fmt == "ladder":
        from rawfin.commands.ladders import ladder
        out.write(ladder(pair, f"{scn.name}: {scn.summary}" if scn.summary else scn.name, scn.description,
                         relative_seq=relative_seq))
        return
    if fmt == "mermaid":
        from rawfin.commands.ladders import mermaid
        out.write(mermaid(pair, f"{scn.name}: {scn.summary}" if scn.summary else scn.name,
                          relative_seq=relative_seq))
        return
    from rawfin.render.sinks import make_sink
    recs = records(pair, capture_at)
    if file is not None:
        for r in recs:
            r["file"] = file
    if fmt == "table":
        from rawfin.render.records import seconds
        from rawfin.render.sinks import TableSink
        from rawfin.render.tables import paragraph
        sink = TableSink(out, tablefmt=tablefmt, time_origin=seconds(pair.start_ns))
        out.write(paragraph(f"scenario {scn.name}: {scn.summary}" if scn.summary else f"scenario {scn.name}",
                            sink.width, "", "  ") + "\n")
        conns = sorted({r["conn"] for r in recs})
        for r in recs:
            sink.write(r)
        for c in conns:
            sink.write(_connection_heading(pair, c, file))
        sink.close()
        return
    sink = make_sink(fmt, out=out)
    for r in recs:
        sink.write(r)
    sink.close()


def _connection_heading(pair, conn: int, file: str | None) -> dict:
    """The little a TableSink heading needs (not a full `connection` record: that is analyze's)."""
    from rawfin.core.segment import fmt_endpoint
    rec = {"type": "connection", "conn": conn, "client": fmt_endpoint(*pair.client.addr),
           "server": fmt_endpoint(*pair.server.addr)}
    if file is not None:
        rec["file"] = file
    return rec


def run(args) -> int:
    from rawfin.sim import scenarios
    from rawfin.sim.emulator import EmulatorError

    if args.list:
        list_scenarios()
        return 0
    chosen = sum(bool(x) for x in (args.name, args.all, args.file))
    if chosen != 1:
        return _usage("name one scenario, or give --all or --file F.toml (rawfin scenario --list names them)")
    if args.write and args.all:
        return _usage("--write names one capture; with --all use --write-dir DIR")
    try:
        kw = _overrides(args)
    except (ValueError, EmulatorError) as e:
        return _usage(str(e))

    if args.all:
        todo = [scenarios.builtin(n) for n in scenarios.names()]
    elif args.file:
        todo = [scenarios.load(args.file)]
    else:
        if args.name not in scenarios.names():
            return _usage(f"no scenario {args.name!r}; there are: {', '.join(scenarios.names())}")
        todo = [scenarios.builtin(args.name)]

    if args.write_dir:
        try:
            os.makedirs(args.write_dir, exist_ok=True)
        except OSError as e:
            raise OutputError(f"{args.write_dir}: cannot make the directory ({e.strerror})") from None
    out = sys.stdout
    for i, scn in enumerate(todo):
        pair = scenarios.run(scn, **kw)
        target = None
        if args.write:
            target = args.write
        elif args.write_dir:
            target = os.path.join(args.write_dir, f"{scn.name}.pcap")
        if target:
            n = pair.write_pcap(target, args.capture_at)
            print(f"rawfin scenario: wrote {n} frames to {target}", file=sys.stderr)
        if i and args.format in ("table", "ladder", "mermaid"):
            out.write("\n")
        render(scn, pair, args.format, out, capture_at=args.capture_at, tablefmt=args.tablefmt,
               file=(target or scn.name) if args.all else None, relative_seq=args.seq == "relative")
    return 0
