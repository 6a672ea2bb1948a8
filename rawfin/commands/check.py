"""`rawfin check`: every close in the captures, consistent and complete, as an exit code.

Exit 0 when every connection passes, 1 when any fails (listing each failing
connection and frame with expected and actual numbers), 65 for damaged input.
"""

from __future__ import annotations

import os
import sys

from rawfin.render.records import to_json

from rawfin.capture.analysis import CaptureStats, records
from rawfin.core.errors import EXIT_CHECK_FAILED, EXIT_DATAERR, EXIT_NOINPUT, CaptureError

#: anomalies that mean the close's arithmetic or order is wrong, whatever the options
ARITHMETIC = {
    "ack_not_covering_fin": "the ACK does not cover the FIN",
    "duplicate_fin": "a second FIN at a different sequence number",
    "data_after_fin": "data sent after the sender's own FIN",
    "ack_beyond_fin": "an ACK past the FIN",
}


def judge(conn: dict, anomalies: list[dict], args) -> list[dict]:
    """The failures of one connection (empty when it passes)."""
    fails = []
    for a in anomalies:
        if a["kind"] in ARITHMETIC:
            fails.append({"frame": a["frame"], "endpoint": a["endpoint"], "problem": ARITHMETIC[a["kind"]],
                          "detail": a["detail"]})
        elif a["kind"] == "final_ack_missing" and not args.allow_incomplete:
            fails.append({"frame": a["frame"], "endpoint": a["endpoint"], "problem": "final ACK missing",
                          "detail": a["detail"]})
    close = conn["close"]
    final = ", ".join(f"{k} {v}" for k, v in conn["final"].items())
    if close in ("reset", "refused") and not args.allow_reset:
        fails.append({"frame": conn["last_frame"], "endpoint": "", "problem": f"ended by RST ({close})",
                      "detail": f"expected a FIN close; final states: {final}"})
    elif close == "incomplete" and not args.allow_incomplete:
        if not any(f["problem"] == "final ACK missing" for f in fails):
            fails.append({"frame": conn["last_frame"], "endpoint": "", "problem": "close incomplete",
                          "detail": f"the capture ends inside the close: {final}"})
    elif close == "none" and not (args.allow_open or args.allow_incomplete):
        fails.append({"frame": conn["last_frame"], "endpoint": "", "problem": "never closed",
                      "detail": f"no FIN or RST in the capture: {final}"})
    elif close == "timeout" and not (args.allow_open or args.allow_incomplete):
        fails.append({"frame": conn["last_frame"], "endpoint": "", "problem": "never closed",
                      "detail": f"half-open, given up on as Linux would (--syn-timeout, --syn-ack-timeout): {final}"})
    elif close == "evicted" and not args.allow_incomplete:
        fails.append({"frame": conn["last_frame"], "endpoint": "", "problem": "not followed to its end",
                      "detail": f"evicted to stay within --max-connections, as it stood: {final}"})
    if conn.get("server_active_close") and not args.allow_server_close:
        fails.append({"frame": conn["last_frame"], "endpoint": conn["server"],
                      "problem": "server closed first",
                      "detail": "TIME_WAIT sits on the server's port; "
                                "expected the client to close first"})
    return fails


def run(args) -> int:
    from rawfin.capture import engine
    from rawfin.cli import limits, relative_seq
    from rawfin.capture.sources import from_args, opened
    from rawfin.wire import bpf

    inputs = from_args(args)
    select = bpf.parse(args.filter)
    from rawfin.render.records import json_line, record

    if engine.choose(getattr(args, "engine", "auto")):
        def source(name, label=None, **kw):
            return engine.records(name, label=label, record=record, json_of=json_line(label), **kw)
    else:
        def source(name, **kw):
            return records(name, record=record, **kw)
    many = len(inputs.sources) > 1
    rows: list[list] = []
    failed_conns = 0
    total = 0
    damaged: list[CaptureError] = []
    missing: list[str] = []
    for src in inputs.sources:
        path = src.name
        pending: dict[int, list[dict]] = {}
        stats = CaptureStats(path=path)
        try:
            with opened(src) as (name, fileobj):
                recs = source(name, msl_s=args.msl, label=path if many else None, stats=stats, fileobj=fileobj,
                              bpf=select, limits=limits(args), relative_seq=relative_seq(args))
                for rec in recs:
                    if rec["type"] == "anomaly":
                        pending.setdefault(rec["conn"], []).append(rec)
                    elif rec["type"] == "connection":
                        total += 1
                        fails = judge(rec, pending.pop(rec["conn"], []), args)
                        if fails:
                            failed_conns += 1
                        if args.format == "jsonl":
                            out = dict(rec, check="fail" if fails else "pass", failures=fails)
                            sys.stdout.write(to_json(out) + "\n")
                        for f in fails:
                            where = f"{os.path.basename(path)}#{rec['conn']}" if many else str(rec["conn"])
                            rows.append([where, f["frame"], f"{rec['client']} → {rec['server']}", f["problem"],
                                         f["detail"]])
        except CaptureError as e:
            damaged.append(e)
            print(f"rawfin check: {e}", file=sys.stderr)
        except OSError as e:
            missing.append(path)
            print(f"rawfin check: {path}: {e.strerror or e}", file=sys.stderr)
    if args.format == "table":
        from rawfin.render.tables import table
        if rows:
            print(table(["conn", "frame", "connection", "failure", "expected / actual"], rows, args.tablefmt,
                        first=(0, 4, 3)))
        if total:
            verdict = "FAIL" if failed_conns else "PASS"
            print(f"{verdict}: {total - failed_conns} of {total} connection{'s' if total != 1 else ''} "
                  f"closed cleanly")
        else:
            print("FAIL: no TCP connection in the capture" + ("s" if many else ""))
    elif args.format == "csv":
        import csv
        w = csv.writer(sys.stdout)
        w.writerow(["conn", "frame", "connection", "failure", "detail"])
        w.writerows(rows)
    if damaged:
        return EXIT_DATAERR
    if missing:
        return EXIT_NOINPUT
    # no connection at all proves nothing: a CI job pointed at the wrong file must not pass
    return EXIT_CHECK_FAILED if failed_conns or not total else 0
