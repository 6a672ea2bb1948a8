"""Ladder diagrams of an emulated run: plain text (as the seed draws them) and Mermaid.

Both are drawn from a :class:`~rawfin.sim.emulator.Pair`'s log, so every arrow is a
segment that was really sent, with its real flags and numbers, and every state
is written where and when the endpoint took it. A segment the link lost ends
in an ``X``, as in the seed's section 5. The text form stays within 100
columns.
"""

from __future__ import annotations

import textwrap

from rawfin.sim.emulator import Arrival, Called, Moved, Noted, Pair, Sent
from rawfin.core.units import SEC
from rawfin.core.states import Input

TIME_W = 9          # "   61.041"
GAP = 56            # columns between the two lifelines
WIDTH = 100
LEFT = TIME_W + 1   # column of the client's lifeline
RIGHT = LEFT + GAP + 1
RIGHT_TEXT = WIDTH - RIGHT - 2
LONG_PAUSE_NS = SEC // 2

# anomalies the ladder leaves out: the state rows already tell them
_QUIET = {"address_in_use"}


def _state_text(m: Moved, pair: Pair | None = None) -> str:
    t = m.transition
    if t.from_ is t.to:
        if t.input is Input.RCV_FIN:
            return f"{t.to.name}: re-ACK the FIN, restart 2MSL"
        return f"{t.to.name} (again)"
    text = f"{t.from_.name} → {t.to.name}"
    if t.input is Input.TIMEOUT_2MSL:
        if pair is not None:
            msl = getattr(pair, m.side).config.msl_ns
            text += f" (2MSL = {2 * msl / SEC:g} s over)"
        else:
            text += " (2MSL over)"
    elif t.input is Input.RCV_NEW_SYN:
        text += " (new SYN: pair reused)"
    elif t.input is Input.TIMEOUT_GIVE_UP:
        text += " (gave up)"
    return text


def _seg_label(s: Sent) -> str:
    text = f"{s.number}. {s.seg.describe()}"
    tags = []
    if s.retransmission:
        tags.append("retransmission: RTO")
    if s.delay_ns:
        tags.append(f"delayed +{s.delay_ns / SEC:g} s")
    if s.duplicated:
        tags.append("duplicated")
    if s.reordered:
        tags.append("held back")
    if tags:
        text += " (" + ", ".join(tags) + ")"
    return text


def _rel(pair: Pair, t: int) -> float:
    return (t - pair.start_ns) / SEC


def _events(pair: Pair):
    """The log entries the diagrams draw, each with the connection it belongs to.

    An anomaly that comes with a transition of the same endpoint for the same
    segment (TIME_WAIT re-ACKing a retransmitted FIN) is left out: the state
    row says it.
    """
    conn = pair.connections()
    explained = {(e.side, e.ref) for e in pair.log if isinstance(e, Moved) and e.ref is not None}
    for e in pair.log:
        if isinstance(e, Arrival):
            continue
        if isinstance(e, Called) and e.error is None:
            continue
        if isinstance(e, Noted) and (e.anomaly.kind in _QUIET or (e.side, e.ref) in explained):
            continue
        yield e, conn.get(e.ep, 0)


def _roles(pair: Pair) -> dict[str, str]:
    """"active close" / "passive close" for each side, from who sent the first FIN."""
    first: dict[str, int] = {}
    fin_in: dict[str, int] = {}
    for i, e in enumerate(pair.log):
        if isinstance(e, Moved):
            t = e.transition
            if t.input is Input.CLOSE and t.from_.name in ("ESTABLISHED", "SYN_RECEIVED"):
                first.setdefault(e.side, i)
            if t.input is Input.RCV_FIN:
                fin_in.setdefault(e.side, i)
    roles = {}
    for side in ("client", "server"):
        if side in first and first[side] < fin_in.get(side, len(pair.log)):
            roles[side] = "active close"
        elif side in fin_in:
            roles[side] = "passive close"
    return roles


class _Text:
    def __init__(self, pair: Pair) -> None:
        self.pair = pair
        self.lines: list[str] = []
        self.last_t: int | None = None

    def row(self, t: int | None, middle: str, right: str = "", lifeline: str = "│") -> None:
        if t is not None and t != self.last_t:
            tcol = f"{_rel(self.pair, t):{TIME_W}.3f}"
            self.last_t = t
        else:
            tcol = " " * TIME_W
        mid = middle.ljust(GAP)[:GAP] if len(middle) <= GAP else middle[:GAP - 1] + "…"
        line = f"{tcol} {lifeline}{mid}{lifeline}"
        if right:
            line += " " + right
        self.lines.append(line.rstrip())

    def pause(self, t: int) -> None:
        if self.last_t is not None and t - self.last_t >= LONG_PAUSE_NS:
            gap = (t - self.last_t) / SEC
            self.row(None, f"{'(' + f'{gap:.3f} s pass' + ')':^{GAP}}", lifeline="┊")

    def side_note(self, t: int, side: str, text: str) -> None:
        if side == "client":
            for i, chunk in enumerate(textwrap.wrap(text, GAP - 2)):
                self.row(t if i == 0 else None, " " + chunk)
        else:
            for i, chunk in enumerate(textwrap.wrap(text, RIGHT_TEXT)):
                self.row(t if i == 0 else None, "", chunk)

    def arrow(self, s: Sent) -> None:
        label = _seg_label(s)
        rows = [label]
        if len(label) > GAP - 2 and " (" in label:
            head, _, tail = label.partition(" (")
            rows = [head, "(" + tail]
        for i, text in enumerate(rows):
            if len(text) > GAP - 2:
                text = text[:GAP - 3] + "…"
            self.row(s.time_ns if i == 0 else None, f"{text:^{GAP}}")
        if s.dropped:
            why = "lost" + (f": {s.rules[0]}" if s.rules else "")
            shaft = GAP // 2
            if s.sender == "client":
                mid = " " + "─" * (shaft - 1) + "X " + why
            else:
                mid = (why + " X" + "─" * (shaft - 1)).rjust(GAP - 1) + " "
            self.row(None, mid)
        elif s.sender == "client":
            self.row(None, " " + "─" * (GAP - 2) + "▶")
        else:
            self.row(None, "◀" + "─" * (GAP - 2) + " ")


def ladder(pair: Pair, title: str = "", description: str = "") -> str:
    """The run as a text ladder diagram, client on the left, server on the right."""
    out = _Text(pair)
    head = []
    if title:
        head += textwrap.wrap(title, WIDTH)
    if description:
        head += [""] + textwrap.wrap(" ".join(description.split()), WIDTH)
    if head:
        head.append("")
    c, s = pair.client, pair.server
    from rawfin.core.segment import fmt_endpoint
    roles = _roles(pair)
    cname = f"client {fmt_endpoint(c.ip, c.port)}"
    sname = f"server {fmt_endpoint(s.ip, s.port)}"
    head.append(f"{'time (s)':>{TIME_W}} {cname:<{GAP + 1}}{sname}")
    if roles:
        crole = f"({roles['client']})" if "client" in roles else ""
        srole = f"({roles['server']})" if "server" in roles else ""
        head.append(f"{'':>{TIME_W}} {crole:<{GAP + 1}}{srole}".rstrip())
    out.lines = head
    out.row(None, "")
    cur_conn = 0
    for e, conn in _events(pair):
        t = e.time_ns if isinstance(e, (Sent, Called)) else (
            e.transition.time_ns if isinstance(e, Moved) else e.anomaly.time_ns)
        out.pause(t)
        if conn > cur_conn:
            cur_conn = conn
            out.row(None, f"{' connection ' + str(conn) + ' ':─^{GAP}}")
        if isinstance(e, Sent):
            out.arrow(e)
        elif isinstance(e, Moved):
            out.side_note(t, e.side, _state_text(e, pair))
        elif isinstance(e, Noted):
            out.side_note(t, e.side, f"({e.anomaly.kind}: {e.anomaly.detail})")
        elif isinstance(e, Called):
            out.side_note(t, e.side, f"{e.call} refused: {e.error}")
    out.row(None, "")
    out.lines.append("")
    out.lines += textwrap.wrap(
        "Numbers are segment numbers (the frame numbers of the --capture-at sender capture); "
        f"times are seconds of virtual time since the start; the link delay is "
        f"{pair.link.delay_ns / SEC * 1000:g} ms each way.", WIDTH)
    return "\n".join(out.lines) + "\n"


def _mm(text: str) -> str:
    """Mermaid message text: no ';' or '#' (entity syntax), no newlines."""
    return text.replace(";", ",").replace("#", "no. ").replace("\n", " ")


def mermaid(pair: Pair, title: str = "") -> str:
    """The same run as a Mermaid ``sequenceDiagram``."""
    from rawfin.core.segment import fmt_endpoint
    c, s = pair.client, pair.server
    lines = ["sequenceDiagram"]
    if title:
        lines.insert(0, f"%% {_mm(title)}")
    lines.append(f"    participant C as client {fmt_endpoint(c.ip, c.port)}")
    lines.append(f"    participant S as server {fmt_endpoint(s.ip, s.port)}")
    last: int | None = None
    cur_conn = 0
    for e, conn in _events(pair):
        t = e.time_ns if isinstance(e, (Sent, Called)) else (
            e.transition.time_ns if isinstance(e, Moved) else e.anomaly.time_ns)
        if last is not None and t - last >= LONG_PAUSE_NS:
            lines.append(f"    Note over C,S: {(t - last) / SEC:.3f} s pass")
        if last is None or t != last:
            stamp = f"t={_rel(pair, t):.3f} "
        else:
            stamp = ""
        last = t
        if conn > cur_conn:
            cur_conn = conn
            lines.append(f"    Note over C,S: connection {conn}")
        who = "C" if getattr(e, "side", getattr(e, "sender", "client")) == "client" else "S"
        where = "left of C" if who == "C" else "right of S"
        if isinstance(e, Sent):
            a, b = ("C", "S") if e.sender == "client" else ("S", "C")
            if e.dropped:
                lines.append(f"    {a}-x{b}: {_mm(stamp + _seg_label(e))} LOST")
            else:
                lines.append(f"    {a}->>{b}: {_mm(stamp + _seg_label(e))}")
        elif isinstance(e, Moved):
            lines.append(f"    Note {where}: {_mm(stamp + _state_text(e, pair))}")
        elif isinstance(e, Noted):
            lines.append(f"    Note {where}: {_mm(stamp + e.anomaly.kind + ': ' + e.anomaly.detail)}")
        elif isinstance(e, Called):
            lines.append(f"    Note {where}: {_mm(stamp + e.call + ' refused: ' + str(e.error))}")
    return "\n".join(lines) + "\n"
