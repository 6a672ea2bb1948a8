"""`rawfin states`: the one transition table and the rules around it, as the core (and the compiled
lane) runs them: rawfin/core/states.py and rawfin/core/rules.py."""

from __future__ import annotations

import sys
import textwrap

from rawfin.core import rules as R
from rawfin.core.states import INPUT_ORDER, STATE_ORDER, TRANSITIONS, Input, State

CLOSE_STATES = {"ESTABLISHED", "FIN_WAIT_1", "FIN_WAIT_2", "CLOSE_WAIT", "CLOSING", "LAST_ACK", "TIME_WAIT"}
WIDTH = 100

LEGEND = """\
How to read the rules: each program runs its steps in order; in a step the first row whose
conditions all hold does what it says, then the next step runs (unless it says stop).
  seq ack end len fin  the segment: seq, ack, seq + its length, payload length, its FIN's seq
  SYN ACK FIN RST      its flags; data: it has payload; occupies: it takes sequence space
  rcv_nxt snd_nxt snd_una iss irs fin_seq peer_fin_seq   the endpoint's TCB (RFC 9293)
  #name                a mark set by an earlier step of the same call;  !x  x does not hold
  tx rx                (observer) the side sending the segment, the side it goes to
  held:rx final:tx     a FIN (or SYN) held until rx shows it has it; tx's final ACK, held
  comparisons of sequence numbers are mod 2**32 (RFC 9293 3.4)"""


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


def programs(close_only: bool = False) -> list[tuple[str, str | None, str, tuple]]:
    """(program, state or None, title, steps) in the order they are printed."""
    out = []
    for st in State:
        if close_only and st.value not in CLOSE_STATES:
            continue
        out.append(("receive", st.value, f"{st.value}: a segment arrives", R.RECEIVE[st]))
    for st in State:
        if close_only and st.value not in CLOSE_STATES:
            continue
        out.append(("send", st.value, f"{st.value}: the wire shows it sending (the application call behind it)",
                    R.OBSERVE_SEND[st]))
    out.append(("timers", None, "an endpoint's timers, in the order they fire", R.TIMERS))
    out.append(("birth", None, "observer: a connection's first segment (who is who)", R.BIRTH))
    out.append(("segment", None, "observer: each segment of a connection", R.SEGMENT))
    out.append(("flush", None, "observer: delivering what was held for x (h), shown by the segment now",
                R.FLUSH))
    out.append(("flush_at_end", None, "observer: what is still held for x at the end", R.FLUSH_AT_END))
    out.append(("rst_held", None, "observer: an RST held for x, as it is delivered", R.RST_HELD))
    out.append(("time_wait_form", None, "observer: a segment for a settled connection's compact form (tx, rx)",
                R.TIME_WAIT_FORM))
    out.append(("end", None, "observer: what only the end of a connection tells (a, b: its two sides)", R.END))
    return out


def rule_rows(close_only: bool = False) -> list[dict]:
    out = []
    for prog, state, _title, steps in programs(close_only):
        for step in steps:
            for r in step.rows:
                out.append({"program": prog, "state": state, "step": step.name, "when": " ".join(r.when),
                            "do": "; ".join(R.act_text(a) for a in r.do) or "go on"})
    return out


def _conditions() -> list[tuple[str, str]]:
    out = [(f"close is {k}", c or "(otherwise)") for k, c in R.CLOSE_KINDS]
    out.append(("settled (TIME_WAIT form)", R.SETTLED))
    out += [(f"new SYN: {'a new connection' if y else 'the same one'}", c or "(otherwise)") for y, c in R.NEW_SYN]
    out.append(("fast path applies", R.FAST_PATH))
    out.append(("final-ACK hold", f"{R.FINAL_ACK_HOLD_NS / 1e9:g} s of capture time"))
    out.append(("observer's timer order", ", ".join(R.OBSERVER_TIMERS)))
    return out


def _text_rules(close_only: bool) -> str:
    w_step, w_when = 16, 40
    w_do = WIDTH - 2 - w_step - w_when - 2
    lines = [LEGEND, ""]
    for _prog, _state, title, steps in programs(close_only):
        lines.append(title)
        for step in steps:
            name = step.name
            for r in step.rows:
                when = textwrap.wrap(" ".join(r.when) or "-", w_when) or ["-"]
                do = textwrap.wrap("; ".join(R.act_text(a) for a in r.do) or "go on", w_do,
                                   subsequent_indent="  ") or [""]
                for i in range(max(len(when), len(do))):
                    lines.append(f"  {name if i == 0 else '':<{w_step}}{(when[i] if i < len(when) else ''):<{w_when}}"
                                 f"  {do[i] if i < len(do) else ''}".rstrip())
                name = ""
        lines.append("")
    lines.append("observer: conditions")
    for what, cond in _conditions():
        for i, part in enumerate(textwrap.wrap(cond, WIDTH - 2 - 30) or [""]):
            lines.append(f"  {what if i == 0 else '':<30}{part}".rstrip())
    return "\n".join(lines)


def run(args) -> int:
    part = getattr(args, "part", "all")
    close_only = args.close_only
    if args.format == "jsonl":
        from rawfin.render.records import to_json
        if part in ("all", "transitions"):
            for r in rows(close_only):
                sys.stdout.write(to_json({"type": "rule", **r}) + "\n")
        if part in ("all", "rules"):
            for r in rule_rows(close_only):
                sys.stdout.write(to_json({"type": "row", **r}) + "\n")
        return 0
    if args.format == "csv":
        import csv
        if part == "rules":
            w = csv.DictWriter(sys.stdout, fieldnames=["program", "state", "step", "when", "do"])
            w.writeheader()
            w.writerows(rule_rows(close_only))
            return 0
        w = csv.DictWriter(sys.stdout, fieldnames=["state", "input", "next", "sends", "note"])
        w.writeheader()
        w.writerows(rows(close_only))
        return 0
    if part in ("all", "transitions"):
        from tabulate import tabulate
        table = [[r["state"], r["input"], "→ " + r["next"], r["sends"], r["note"]] for r in rows(close_only)]
        print(tabulate(table, headers=["state", "input", "next state", "sends", "note"], tablefmt=args.tablefmt))
    if part in ("all", "rules"):
        if part == "all":
            print()
        print(_text_rules(close_only))
    return 0
