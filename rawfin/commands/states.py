"""`rawfin states`: the one transition table, as the core runs it."""

from __future__ import annotations

import sys

from rawfin.core.states import INPUT_ORDER, STATE_ORDER, TRANSITIONS, Input

CLOSE_STATES = {"ESTABLISHED", "FIN_WAIT_1", "FIN_WAIT_2", "CLOSE_WAIT", "CLOSING", "LAST_ACK", "TIME_WAIT"}


def rows(close_only: bool = False) -> list[dict]:
    out = []
    for st in STATE_ORDER:
        for inp in INPUT_ORDER:
            rule = TRANSITIONS.get((st, inp))
            if rule is None:
                continue
            if close_only and (st.value not in CLOSE_STATES or inp in (Input.ABORT, Input.RCV_RST,
                                                                       Input.TIMEOUT_GIVE_UP)):
                continue
            out.append({"state": st.value, "input": inp.value, "next": rule.to.value,
                        "sends": rule.sends, "note": rule.note})
    return out


def run(args) -> int:
    data = rows(args.close_only)
    if args.format == "jsonl":
        import json
        for r in data:
            sys.stdout.write(json.dumps({"type": "rule", **r}) + "\n")
        return 0
    if args.format == "csv":
        import csv
        w = csv.DictWriter(sys.stdout, fieldnames=["state", "input", "next", "sends", "note"])
        w.writeheader()
        w.writerows(data)
        return 0
    from tabulate import tabulate
    table = [[r["state"], r["input"], "→ " + r["next"], r["sends"], r["note"]] for r in data]
    print(tabulate(table, headers=["state", "input", "next state", "sends", "note"], tablefmt=args.tablefmt))
    return 0
