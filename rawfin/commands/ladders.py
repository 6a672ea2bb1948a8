"""An emulated run as a ladder diagram (:mod:`rawfin.render.ladder` draws it).

This joins a driver's log (rawfin.sim.emulator) to a renderer, which only the command line may
import both of (tests/test_layers.py), so it sits here, beside ``rawfin scenario``.

Every arrow is a segment the run really sent, with its real flags and numbers, and every
state is written where and when the endpoint took it. A segment the link lost ends in an
``X``, as the lost final ACK is drawn in the textbook.
"""

from __future__ import annotations

from rawfin.core.segment import fmt_endpoint
from rawfin.core.states import Input
from rawfin.core.units import SEC
from rawfin.render.ladder import Diagram, Step, mermaid as _mermaid, text as _text
from rawfin.sim.emulator import Arrival, Called, Moved, Noted, Pair, Sent

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


def _seg_label(s: Sent, bases: dict | None = None) -> str:
    text = f"{s.number}. {s.seg.describe(bases)}"
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


def steps(pair: Pair, relative_seq: bool = False) -> list[Step]:
    """The log entries a diagram draws, each with the connection it belongs to.

    An anomaly that comes with a transition of the same endpoint for the same segment
    (TIME_WAIT re-ACKing a retransmitted FIN) is left out: the state row says it. With
    ``relative_seq`` the arrows' numbers are relative to each side's base in its connection
    (rawfin.core.seq.note_bases over the segments sent, in order).
    """
    from rawfin.core import seq as sq
    bases: dict[int, dict] = {}
    conn = pair.connections()
    explained = {(e.side, e.ref) for e in pair.log if isinstance(e, Moved) and e.ref is not None}
    out = []
    for e in pair.log:
        if isinstance(e, Arrival):
            continue
        if isinstance(e, Called) and e.error is None:
            continue
        if isinstance(e, Noted) and (e.anomaly.kind in _QUIET or (e.side, e.ref) in explained):
            continue
        c = conn.get(e.ep, 0)
        if isinstance(e, Sent):
            why = None
            if e.dropped:
                why = "lost" + (f": {e.rules[0]}" if e.rules else "")
            b = None
            if relative_seq:
                b = bases.setdefault(c, {})
                s = e.seg
                sq.note_bases(b, (s.src, s.sport), (s.dst, s.dport), s.seq, s.ack, s.syn, s.has_ack)
            out.append(Step(kind="arrow", time_ns=e.time_ns, side=e.sender, text=_seg_label(e, b), lost=why, conn=c))
        elif isinstance(e, Moved):
            out.append(Step(kind="state", time_ns=e.transition.time_ns, side=e.side, text=_state_text(e, pair),
                            conn=c))
        elif isinstance(e, Noted):
            out.append(Step(kind="note", time_ns=e.anomaly.time_ns, side=e.side,
                            text=f"{e.anomaly.kind}: {e.anomaly.detail}", paren=True, conn=c))
        elif isinstance(e, Called):
            out.append(Step(kind="note", time_ns=e.time_ns, side=e.side, text=f"{e.call} refused: {e.error}",
                            conn=c))
    return out


def of_pair(pair: Pair, title: str = "", description: str = "", relative_seq: bool = False) -> Diagram:
    c, s = pair.client, pair.server
    return Diagram(client=f"client {fmt_endpoint(c.ip, c.port)}", server=f"server {fmt_endpoint(s.ip, s.port)}",
                   start_ns=pair.start_ns, steps=steps(pair, relative_seq), roles=_roles(pair), title=title,
                   description=description,
                   footer=("Numbers are segment numbers (the frame numbers of the --capture-at sender capture); "
                           f"times are seconds of virtual time since the start; the link delay is "
                           f"{pair.link.delay_ns / SEC * 1000:g} ms each way."))


def ladder(pair: Pair, title: str = "", description: str = "", relative_seq: bool = False) -> str:
    """The run as a text ladder diagram, client on the left, server on the right."""
    return _text(of_pair(pair, title, description, relative_seq))


def mermaid(pair: Pair, title: str = "", relative_seq: bool = False) -> str:
    """The same run as a Mermaid ``sequenceDiagram``."""
    return _mermaid(of_pair(pair, title, relative_seq=relative_seq))
