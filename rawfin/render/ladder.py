"""Ladder diagrams: plain text (as the 4-way close is drawn on a whiteboard) and Mermaid.

What is drawn is a :class:`Diagram`: two lifelines (client left, server right) and a list of
:class:`Step` s in time order: arrows (a segment that was sent, its real flags and numbers;
one the link lost ends in an ``X``), the states each side takes, where and when it takes
them, and notes. Two producers make diagrams: :func:`rawfin.sim.diagram.of_pair` from an
emulated run, and :func:`from_capture` here from a captured connection (the records
``rawfin analyze`` writes and the connection's segments), so ``rawfin scenario --format
ladder`` and ``rawfin analyze --conn N --format ladder`` draw alike. The text form stays
within 100 columns.
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass, field

from rawfin.core.units import SEC

TIME_W = 9          # "   61.041"
GAP = 56            # columns between the two lifelines
WIDTH = 100
LEFT = TIME_W + 1   # column of the client's lifeline
RIGHT = LEFT + GAP + 1
RIGHT_TEXT = WIDTH - RIGHT - 2
LONG_PAUSE_NS = SEC // 2


@dataclass(frozen=True, slots=True, kw_only=True)
class Step:
    """One thing a ladder draws. ``kind``: "arrow" (``side`` sent it; ``lost``: why it never
    arrived), "state" (``side`` took a state: ``text``) or "note" (a remark at ``side``;
    ``paren``: the text form puts it in parentheses)."""

    kind: str
    time_ns: int
    side: str
    text: str
    lost: str | None = None
    paren: bool = False
    conn: int = 0


@dataclass(kw_only=True)
class Diagram:
    client: str                      # "client 192.0.2.2:50001"
    server: str
    start_ns: int
    steps: list[Step] = field(default_factory=list)
    roles: dict[str, str] = field(default_factory=dict)   # side -> "active close" / "passive close"
    title: str = ""
    description: str = ""
    footer: str = ""


class _Text:
    def __init__(self, start_ns: int) -> None:
        self.start_ns = start_ns
        self.lines: list[str] = []
        self.last_t: int | None = None

    def row(self, t: int | None, middle: str, right: str = "", lifeline: str = "│") -> None:
        if t is not None and t != self.last_t:
            tcol = f"{(t - self.start_ns) / SEC:{TIME_W}.3f}"
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

    def arrow(self, s: Step) -> None:
        label = s.text
        rows = [label]
        if len(label) > GAP - 2 and " (" in label:
            head, _, tail = label.partition(" (")
            rows = [head, "(" + tail]
        for i, text in enumerate(rows):
            if len(text) > GAP - 2:
                text = text[:GAP - 3] + "…"
            self.row(s.time_ns if i == 0 else None, f"{text:^{GAP}}")
        if s.lost is not None:
            shaft = GAP // 2
            if s.side == "client":
                mid = " " + "─" * (shaft - 1) + "X " + s.lost
            else:
                mid = (s.lost + " X" + "─" * (shaft - 1)).rjust(GAP - 1) + " "
            self.row(None, mid)
        elif s.side == "client":
            self.row(None, " " + "─" * (GAP - 2) + "▶")
        else:
            self.row(None, "◀" + "─" * (GAP - 2) + " ")


def text(d: Diagram) -> str:
    """The diagram as text, client on the left, server on the right."""
    out = _Text(d.start_ns)
    head = []
    if d.title:
        head += textwrap.wrap(d.title, WIDTH)
    if d.description:
        head += [""] + textwrap.wrap(" ".join(d.description.split()), WIDTH)
    if head:
        head.append("")
    names = f"{'time (s)':>{TIME_W}} {d.client:<{GAP + 1}}{d.server}"
    if len(names) <= WIDTH:
        head.append(names)
    else:                           # long (IPv6) names: the server's on a line of its own
        head += [f"{'time (s)':>{TIME_W}} {d.client} (left)", f"{'':>{TIME_W}} {d.server} (right)"]
    if d.roles:
        crole = f"({d.roles['client']})" if "client" in d.roles else ""
        srole = f"({d.roles['server']})" if "server" in d.roles else ""
        head.append(f"{'':>{TIME_W}} {crole:<{GAP + 1}}{srole}".rstrip())
    out.lines = head
    out.row(None, "")
    cur_conn = 0
    for s in d.steps:
        out.pause(s.time_ns)
        if s.conn > cur_conn:
            cur_conn = s.conn
            out.row(None, f"{' connection ' + str(s.conn) + ' ':─^{GAP}}")
        if s.kind == "arrow":
            out.arrow(s)
        else:
            out.side_note(s.time_ns, s.side, f"({s.text})" if s.paren else s.text)
    out.row(None, "")
    if d.footer:
        out.lines.append("")
        out.lines += textwrap.wrap(d.footer, WIDTH)
    return "\n".join(out.lines) + "\n"


def _mm(text: str) -> str:
    """Mermaid message text: no ';' or '#' (entity syntax), no newlines."""
    return text.replace(";", ",").replace("#", "no. ").replace("\n", " ")


def mermaid(d: Diagram) -> str:
    """The same diagram as a Mermaid ``sequenceDiagram``."""
    lines = ["sequenceDiagram"]
    if d.title:
        lines.insert(0, f"%% {_mm(d.title)}")
    lines.append(f"    participant C as {d.client}")
    lines.append(f"    participant S as {d.server}")
    last: int | None = None
    cur_conn = 0
    for s in d.steps:
        t = s.time_ns
        if last is not None and t - last >= LONG_PAUSE_NS:
            lines.append(f"    Note over C,S: {(t - last) / SEC:.3f} s pass")
        stamp = f"t={(t - d.start_ns) / SEC:.3f} " if last is None or t != last else ""
        last = t
        if s.conn > cur_conn:
            cur_conn = s.conn
            lines.append(f"    Note over C,S: connection {s.conn}")
        who = "C" if s.side == "client" else "S"
        if s.kind == "arrow":
            a, b = ("C", "S") if who == "C" else ("S", "C")
            if s.lost is not None:
                lines.append(f"    {a}-x{b}: {_mm(stamp + s.text)} LOST")
            else:
                lines.append(f"    {a}->>{b}: {_mm(stamp + s.text)}")
        else:
            where = "left of C" if who == "C" else "right of S"
            lines.append(f"    Note {where}: {_mm(stamp + s.text)}")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- a captured connection


def _state_words(rec: dict, msl_s: float | None) -> str:
    frm, to = rec["from"], rec["to"]
    if frm == to:
        if frm == "TIME_WAIT" and "FIN" in rec.get("cause", ""):
            return f"{to}: re-ACK the FIN, restart 2MSL"
        return f"{to} (again)"
    words = f"{frm} → {to}"
    if rec["frame"] is None and frm == "TIME_WAIT":
        words += f" (2MSL = {2 * msl_s:g} s over)" if msl_s else " (2MSL over)"
    return words


def from_capture(conn: dict, items: list[dict], segments: list, *, source: str = "",
                 msl_s: float | None = None, relative_seq: bool = False) -> Diagram:
    """A captured connection as a :class:`Diagram`.

    ``conn`` is its ``connection`` record, ``items`` its ``transition`` and ``anomaly`` records,
    ``segments`` its :class:`~rawfin.core.segment.Segment` s (with frame numbers and times) as
    the capture has them. Arrows are numbered by frame; an ACK that acknowledges a FIN says so
    (``ack=x+1``); a retransmission is marked on its arrow; a segment the capture saw but that
    never reached its receiver (the final ACK before a retransmitted FIN) ends in an ``X``;
    anomalies are notes at the side they belong to; each side's states are drawn where the
    wire shows them, the sender's before its segment, the receiver's after. With ``relative_seq``
    the arrows' numbers are relative to each side's base, as the records' texts then are
    (rawfin.core.seq.note_bases over the connection's segments in order).
    """
    from rawfin.core import seq as sq
    from rawfin.core.segment import fmt_endpoint

    client, server = conn["client"], conn["server"]
    side_of = {client: "client", server: "server"}
    start = segments[0].time_ns if segments else int(round((conn.get("first_time") or 0) * SEC))
    by_frame: dict[int, list[dict]] = {}
    timed: list[dict] = []          # caused by time, or by a frame that is not one of these segments
    drawn = {s.frame for s in segments}
    for r in items:
        (by_frame.setdefault(r["frame"], []) if r.get("frame") in drawn else timed).append(r)
    retrans = {r["frame"] for r in items if r["type"] == "anomaly" and "retransmission" in r["kind"]}
    # a final ACK the capture saw but its receiver never got: the last ACK of that FIN before
    # the anomaly's frame (the receiver retransmitted its FIN)
    lost: dict[int, str] = {}
    fins: dict[str, int] = {}
    for r in items:
        if r["type"] == "anomaly" and r["kind"] == "final_ack_lost" and r.get("frame") is not None:
            for s in reversed([s for s in segments if s.frame is not None and s.frame < r["frame"]]):
                if s.fin and s.frame == r["frame"]:
                    continue
                if s.has_ack and not s.fin and not s.data_len and fmt_endpoint(s.dst, s.dport) == r["endpoint"]:
                    lost[s.frame] = "lost after capture"
                    break
    steps: list[Step] = []
    frame_time = {s.frame: s.time_ns for s in segments}
    # what the drawing already says: a retransmission on its arrow, an anomaly of an endpoint
    # whose state row for the same frame tells it (TIME_WAIT re-ACKing a retransmitted FIN)
    moved = {(r["endpoint"], r["frame"]) for r in items if r["type"] == "transition"}

    def said(r: dict) -> bool:
        return r["frame"] in retrans and "retransmission" in r["kind"] or (r["endpoint"], r["frame"]) in moved

    def notes(recs: list[dict], when: str, sender: str | None) -> None:
        for r in recs:
            side = side_of.get(r["endpoint"], "client")
            t = frame_time.get(r["frame"]) if r.get("frame") is not None else None
            if t is None:
                t = int(round(r["time"] * SEC)) if r.get("time") is not None else start
            if r["type"] == "transition":
                is_sender = r["endpoint"] == sender
                if (when == "before") != is_sender:
                    continue
                words = _state_words(r, msl_s)
                if r.get("frame") is not None and r["frame"] not in drawn:
                    words += f" (at frame {r['frame']})"
                steps.append(Step(kind="state", time_ns=t, side=side, text=words))
            elif when == "after" and not said(r):
                steps.append(Step(kind="note", time_ns=t, side=side, text=f"{r['kind']}: {r['detail']}",
                                  paren=True))

    bases: dict | None = {} if relative_seq else None
    first_ack_of_fin: set[tuple[str, int]] = set()
    pending_timed = sorted(timed, key=lambda r: r["time"] or 0)
    for s in segments:
        while pending_timed and int(round(pending_timed[0]["time"] * SEC)) <= s.time_ns:
            notes([pending_timed.pop(0)], "after", None)
        sender = fmt_endpoint(s.src, s.sport)
        recs = by_frame.get(s.frame, [])
        notes(recs, "before", sender)
        if bases is not None:
            sq.note_bases(bases, (s.src, s.sport), (s.dst, s.dport), s.seq, s.ack, s.syn, s.has_ack)
        label = f"{s.frame}. {s.describe(bases)}"
        if s.fin:
            fins[sender] = sq.add(s.seq, s.data_len + (1 if s.syn else 0))
        peer = fmt_endpoint(s.dst, s.dport)
        tags = []
        if s.has_ack and peer in fins and s.ack == sq.add(fins[peer], 1) and (sender, s.ack) not in first_ack_of_fin:
            first_ack_of_fin.add((sender, s.ack))
            fin = fins[peer] if bases is None else sq.relative(fins[peer], bases.get((s.dst, s.dport)))
            tags.append(f"ack = FIN {fin} + 1")
        if s.frame in retrans:
            tags.append("retransmission")
        if tags:
            label += " (" + ", ".join(tags) + ")"
        steps.append(Step(kind="arrow", time_ns=s.time_ns, side=side_of.get(sender, "client"), text=label,
                          lost=lost.get(s.frame)))
        notes(recs, "after", sender)
    for r in pending_timed:
        notes([r], "after", None)
    roles = {}
    closer = conn.get("active_closer")
    if closer:
        roles = {side_of[closer]: "active close",
                 ("server" if side_of[closer] == "client" else "client"): "passive close"}
    head = f"conn {conn['conn']}"
    if conn.get("file"):
        head += f" of {conn['file']}"
    close = conn.get("close", "")
    rst = conn.get("reset_by")
    what = f"close: {close}"
    if rst and rst in side_of:             # who sent the RST, and the FIN before it
        what += f" by the {side_of[rst]}"
        if closer:
            what += " after its FIN" if closer == rst else f" after a FIN by the {side_of[closer]}"
    elif closer:
        what += f", closed first by the {side_of[closer]}"
    footer = ("Numbers are frame numbers" + (f" of {source}" if source else "") + "; times are seconds since "
              "the connection's first frame. States are drawn where the wire shows them: the capture sits "
              "somewhere between the two hosts, so a receiver's state changes when its answer shows it got "
              "the segment.")
    return Diagram(client=f"client {client}", server=f"server {server}", start_ns=start, steps=steps,
                   roles=roles, title=f"{head}: {what}", footer=footer)
