"""`rawfin packetdrill SCRIPT.pkt...`: packetdrill's test scripts against the Linux kernel or rawfin's endpoint.

Exit codes: 0 every line of every script held; 1 a line did not (the first
failure is printed in packetdrill's words); 65 a script is not packetdrill's
language; 69 a script needs a feature rawfin does not run (the line and what
is missing are named); 66 a script cannot be read; 77 the kernel target needs
root. With several scripts the code is the first of 66, 65, 69, 1 that applies.
"""

from __future__ import annotations

import os
import sys

from rawfin.core.errors import EXIT_NOINPUT, UsageError

EXIT_ORDER = (66, 65, 69, 1)


def _faults(args) -> tuple[str, ...]:
    from rawfin.sim.emulator import EmulatorError, Fault
    out = []
    for action in ("drop", "delay", "duplicate"):
        for r in getattr(args, action) or []:
            if action == "delay" and "@" not in r:
                raise EmulatorError(f"--delay {r!r}: say how long, e.g. 'server:FIN@0.5'")
            text = r if r.split(None, 1)[0] == action else f"{action} {r}"
            f = Fault.parse(text)
            if f.action != action:
                raise UsageError(f"--{action} {r!r} says {f.action}")
            out.append(text)
    return tuple(out)


def _overrides(args) -> dict:
    defines = {}
    for d in args.define or []:
        k, eq, v = d.partition("=")
        if not eq or not k:
            raise UsageError(f"--define {d!r}: give NAME=VALUE")
        defines[k] = v
    return {"ip_version": args.ip_version, "local_ip": args.local_ip, "remote_ip": args.remote_ip,
            "tolerance_usecs": args.tolerance_usecs, "mtu": args.mtu, "tcp_ts_tick_usecs": args.tcp_ts_tick_usecs,
            "_defines": defines}


def run_one(path: str, args, faults, writer) -> tuple[int, object | None]:
    from rawfin.sim import pktrun, pktscript

    ov = _overrides(args)
    defines = ov.pop("_defines")
    try:
        script = pktscript.parse_file(path, defines)
        cfg = pktrun.make_config(script, ov)
        cfg.defines.update(defines)
        fields = None
        if args.against != "kernel":
            from rawfin.sim.pktsock import RawfinTarget
            fields = RawfinTarget.tcp_info_fields
        pktrun.check_script(script, cfg, fields)
    except FileNotFoundError:
        print(f"rawfin packetdrill: {path}: no such file", file=sys.stderr)
        return EXIT_NOINPUT, None
    except IsADirectoryError:
        print(f"rawfin packetdrill: {path}: is a directory", file=sys.stderr)
        return EXIT_NOINPUT, None
    except PermissionError:
        print(f"rawfin packetdrill: {path}: permission denied", file=sys.stderr)
        return EXIT_NOINPUT, None
    except pktscript.ScriptError as e:
        print(f"rawfin packetdrill: {e}", file=sys.stderr)
        return e.exit_code, None
    if args.against == "kernel":
        from rawfin.linux.pktkernel import KernelTarget
        target = KernelTarget()
    else:
        from rawfin.sim.pktsock import RawfinTarget
        target = RawfinTarget(seed=args.seed)
    runner = pktrun.Runner(script, target, cfg, faults=faults, seed=args.seed)
    o = runner.run()
    if writer is not None:
        _capture(writer, o, target)
    return (0 if o.ok else 1), o


def _capture(writer, o, target) -> None:
    """The segments as the system under test's interface saw them (a dropped inbound one never arrived)."""
    from rawfin.wire import tcpraw
    base = getattr(target, "rt0", 0) or writer.base
    for rec in sorted(o.wire, key=lambda r: r.time_ns):
        if rec.direction == "in" and rec.note.startswith("drop"):
            continue
        raw = tcpraw.build(rec.seg)
        writer.w.write(raw, base + rec.time_ns)
    writer.base = base + (max((r.time_ns for r in o.wire), default=0)) + 1_000_000_000


class _Writer:
    def __init__(self, path: str) -> None:
        import time
        from rawfin.wire.pcapio import LINKTYPE_RAW, PcapWriter
        self.w = PcapWriter(path, linktype=LINKTYPE_RAW, nanosecond=True)
        self.base = time.time_ns()


def run(args) -> int:
    from rawfin.render import pktreport

    faults = _faults(args)
    writer = _Writer(args.write) if args.write else None
    codes = []
    results = []
    try:
        for path in args.scripts:
            code, o = run_one(path, args, faults, writer)
            codes.append(code)
            if o is None:
                continue
            results.append((path, o))
            if args.format == "jsonl":
                pktreport.render_jsonl(sys.stdout, o)
            else:
                if len(results) > 1:
                    sys.stdout.write("\n")
                pktreport.render_table(sys.stdout, o, args.tablefmt, header=_header(args.against))
            if o.failure:
                print(f"rawfin packetdrill: {path}: {o.failure}", file=sys.stderr)
    finally:
        if writer is not None:
            writer.w.close()
    if args.write:
        print(f"rawfin packetdrill: capture written to {args.write}", file=sys.stderr)
    if len(args.scripts) > 1 and args.format == "table":
        sys.stdout.write("\nsummary:\n")
        for path, code in zip(args.scripts, codes):
            word = {0: "PASS", 1: "FAIL", 65: "script error", 66: "unreadable", 69: "refused"}.get(code, str(code))
            sys.stdout.write(f"  {word:<12} {path}\n")
    for c in EXIT_ORDER:
        if c in codes:
            return c
    return 0


def _header(against: str) -> str:
    if against == "kernel":
        return f"the kernel (Linux {os.uname().release}, in a network namespace of rawfin's own)"
    return "rawfin's endpoint (virtual time)"
