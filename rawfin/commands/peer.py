"""`rawfin peer --scenario NAME` / `--file F.toml [--kernel client|server]`: rawfin's state machine
against the real Linux stack over TUN.

Needs root (CAP_NET_ADMIN for the namespace and the TUN device; tracefs for the
kernel's side of the story). Exit 0 when every check of the scenario holds, 1
when one fails.
"""

from __future__ import annotations

import sys

from rawfin.render.records import to_json
from rawfin.render.sinks import ARROW


def _t(ns: int, origin: int) -> str:
    return f"{(ns - origin) / 1e9:.6f}"


def _table(headers: list[str], rows: list[list[str]], tablefmt: str, wrap_first: tuple[int, ...] = ()) -> str:
    """The default layout fits the terminal (COLUMNS, else 100), wrapping the text columns first;
    any other --tablefmt is tabulate's."""
    if tablefmt == "simple":
        from rawfin.render.tables import simple_table
        return simple_table(headers, rows, first=wrap_first)
    from tabulate import tabulate
    return tabulate(rows, headers=headers, tablefmt=tablefmt, disable_numparse=True) + "\n"


def render_table(out, o, tablefmt: str = "simple") -> None:
    from rawfin.linux.peer import RAWFIN_IP
    from rawfin.core.segment import fmt_endpoint

    from rawfin.render.tables import terminal_width, wrap

    t0 = o.start_ns
    w = out.write
    width = terminal_width()

    def para(text: str, first: str = "", rest: str = "    ") -> None:
        w("\n".join(wrap(text, width, first, rest)) + "\n")

    kaddr = fmt_endpoint(*o.kernel_addr)
    raddr = fmt_endpoint(*o.rawfin_addr) if o.rawfin_addr else RAWFIN_IP
    para(f"{o.scenario}: {o.description}", "peer ", "  ")
    para(f"kernel {kaddr} (Linux, in rawfin's own network namespace) <-> rawfin {raddr} (TUN device)", "  ")
    w("\n")
    w(f"kernel {kaddr}, from the tracepoint ({o.kernel_truth}):\n")
    if o.kernel:
        rows = [[_t(k.time_ns, t0), f"{k.from_.value} {ARROW} {k.to.value}", k.kernel,
                 k.note if k.source == "tracepoint" else f"{k.source}: {k.note}"] for k in o.kernel]
        w(_table(["time", "transition", "kernel said", "note"], rows, tablefmt, (3, 2)))
    else:
        w("  (nothing recorded)\n")
    ep = o.rawfin[0].endpoint if o.rawfin else RAWFIN_IP
    w(f"\nrawfin {ep}, from its state machine:\n")
    rows = [[_t(t.time_ns, t0), f"{t.from_.value} {ARROW} {t.to.value}", t.cause] for t in o.rawfin]
    w(_table(["time", "transition", "cause"], rows, tablefmt, (2,)))
    if o.anomalies:
        w("  anomalies:\n")
        for a in o.anomalies:
            para(f"{a.kind}: {a.detail}", f"    {_t(a.time_ns, t0)}  ", " " * 16)
    w("\nsegments at the TUN device:\n")
    rows = [[_t(s.time_ns, t0), s.direction, s.shown or s.seg.describe(), s.note] for s in o.segments]
    w(_table(["time", "direction", "segment", "note"], rows, tablefmt, (3,)))
    if o.retransmissions or o.kernel_retransmits:
        w("\nthe kernel's retransmissions (its own timing):\n")
        for ts, text in sorted(o.retransmissions + o.kernel_retransmits):
            para(text, f"  {_t(ts, t0)}  ", " " * 12)
    if o.notes:
        w("\nnotes:\n")
        for ts, text in o.notes:
            para(text, f"  {_t(ts, t0)}  ", " " * 12)
    w("\nchecks:\n")
    for c in o.checks:
        mark = {True: "ok  ", False: "FAIL", None: "n/a "}[c.ok]
        para(c.what + (f" [{c.detail}]" if c.detail else ""), f"  {mark}  ", " " * 8)
    out.flush()


def render_jsonl(out, o) -> None:
    from rawfin.render.records import anomaly_record, transition_record

    def put(rec):
        out.write(to_json(rec) + "\n")

    for t in o.rawfin:
        put(transition_record(t, 0))
    for a in o.anomalies:
        put(anomaly_record(a, 0))
    for k in o.kernel:
        put(k.record(0))
    for ts, text in o.notes:
        put({"type": "note", "scenario": o.scenario, "time": round(ts / 1e9, 9), "text": text})
    for c in o.checks:
        put({"type": "check", "scenario": o.scenario, "what": c.what, "ok": c.ok, "detail": c.detail})
    out.flush()


def run(args) -> int:
    from rawfin.core.errors import UsageError
    from rawfin.linux.peerfile import run_file, run_scenario
    from rawfin.sim.scenarios import load, peer_builtin, peer_names

    if args.file and (args.scenario or args.list):
        raise UsageError("give --file FILE.toml or --scenario NAME (or --list), not both")
    if args.file:
        scn = load(args.file)
        o = run_file(scn, kernel_side=args.kernel or scn.kernel or "server", write=args.write,
                     relative_seq=args.seq == "relative")
    elif args.list or not args.scenario:
        import textwrap
        for name in peer_names():
            print(textwrap.fill(peer_builtin(name).summary, 100, initial_indent=f"{name:<21} ",
                                subsequent_indent=" " * 22))
        return 0 if args.list else 2
    else:
        o = run_scenario(args.scenario, write=args.write, relative_seq=args.seq == "relative")
    if args.format == "jsonl":
        render_jsonl(sys.stdout, o)
    else:
        render_table(sys.stdout, o, args.tablefmt)
    if o.kernel_truth.startswith("unavailable"):
        print(f"rawfin peer: kernel truth {o.kernel_truth}", file=sys.stderr)
    if args.write:
        print(f"rawfin peer: capture written to {args.write}", file=sys.stderr)
    return 0 if o.ok else 1
