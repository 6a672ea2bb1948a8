"""The interpreter of :mod:`rawfin.core.rules`: the rows' text read once into a small intermediate form
(:func:`compile_program`), which this module runs for the Python endpoint and observer and which the
compiled lane is handed, as integers, at start (``rawfin/capture/engine.py``).

The intermediate form (IR), what both interpreters share:

* a predicate is ``(name, negated, args)``, an action ``(name, args)``;
* a value (in a comparison, a ``set`` or a template) is ``(who, name, offset)``: ``who`` is ``seg``
  (the segment), ``self`` (the endpoint running the program), ``tx``/``rx`` (the observer's sender and
  receiver), ``x`` (the endpoint a held segment is for), ``a``/``b`` (the connection's endpoints in the
  order they were first seen), ``client``, ``first_closer``, ``h`` (the held segment), ``now`` (the
  segment that shows it arrived), ``held:tx``/``held:rx``/``final:tx``... (held segments), ``conn``, or
  ``lit`` (a number); ``offset`` is added mod 2**32 (``fin_seq+1``);
* a comparison ``A op B`` of two sequence numbers is ``seq.sub(A, B) op 0`` (RFC 9293 arithmetic,
  the orientation as written); of anything else, plain integers. A comparison with an empty value
  (no FIN yet) is false.

Each primitive here is a few lines; :data:`PREDICATES`, :data:`ACTIONS` and :data:`VALUES` list their
names, which the lane checks against its own at start.
"""

from __future__ import annotations

import re
from typing import Callable

from rawfin.core import rules as R
from rawfin.core import seq as sq
from rawfin.core.delays import CLIENT, SERVER
from rawfin.core.states import Input, State

# --------------------------------------------------------------------------------------------- the IR

FLAG_BITS = {"FIN": 1, "SYN": 2, "RST": 4, "PSH": 8, "ACK": 16}
WHO = ("seg", "self", "tx", "rx", "x", "a", "b", "client", "first_closer", "h", "now",
       "held:tx", "held:rx", "final:tx", "final:rx", "conn", "lit", "peer", "server")
#: segment fields, TCB fields (sequence numbers), and the other values a rule may name
SEG_VALUES = ("seq", "ack", "end", "len", "fin", "win", "sport", "dport", "frame", "describe")
SEQ_FIELDS = ("iss", "irs", "snd_una", "snd_nxt", "rcv_nxt", "fin_seq", "peer_fin_seq", "snd_wnd")
EP_VALUES = SEQ_FIELDS + ("name", "state", "missing", "fin_gap", "retries", "2msl_s")
CONN_VALUES = ("first_fin",)
#: values that are sequence numbers (compared with RFC 9293 arithmetic)
SEQ_KIND = frozenset(("seq", "ack", "end", "fin", "first_fin") + SEQ_FIELDS[:-1])
OPTIONAL = frozenset(("fin_seq", "peer_fin_seq"))
_CONN_NAMES = {"first_fin": "conn"}

PREDICATES = ("flag", "pure_ack", "data", "occupies", "cmp", "isset", "state", "in_window", "ack_known",
              "config", "passive", "mark", "conn", "role", "some", "all", "took", "timer", "held", "held_flag",
              "crossed", "answered", "now", "reached", "rd_shut", "waiting", "lost_after", "lost_before",
              "dup_ack", "timewait_reply", "id_skip", "id_skips")
ACTIONS = ("stop", "move", "anomaly", "set", "send", "mark", "remote", "synchronized", "acked", "take_data",
           "queue", "close", "retransmit", "probe", "disarm_rto",
           "open", "open_at_syn_ack", "pick_up", "server", "know", "flag", "drop_candidates", "candidate",
           "note_fin", "unhold", "flush", "cross", "unhold_final", "deliver_final", "observe_send", "hold_final",
           "hold", "deliver_without_fin", "synack_seen", "deliver", "listening", "deliver_held", "synack_unseen",
           "unhold_x", "flush_x", "report_candidates",
           # a lossy, reordering link (issue 14): the observer's side of what a capture point cannot see
           "fin_unseen", "first_fin_lost", "first_fin_arrived", "wait_behind", "drop_lost_acks", "hold_rst",
           "deliver_rst",
           "rsts_unreceived", "evidence", "rtt", "syn_time", "hold_ahead", "flush_filled", "deliver_ack_only", "deliver_queue",
           "note_resent", "drop_resent", "note_hole", "drop_hole", "reordered", "note_prompt", "note_freed", "note_answer",
           # the capture cannot decide the next transition: the states the other reading enters, and when
           "infer",
           # who sent the first RST (a reset close names its sender)
           "note_rst")
CONFIG = ("observer", "close_on_fin", "hold_final_ack")
CONN_FLAGS = ("fins", "mid_stream", "refused", "rst_seen", "data_after_first_fin",
              "first_fin_acked_alone", "fins_complete", "candidates", "held", "final", "synack_unseen",
              "rtt", "rsts", "evicted", "timed_out")
#: what the observer keeps for a side (``rst:rx``...): RSTs held until nothing shows them lost, segments
#: waiting behind a FIN whose arrival is not shown yet, a FIN held ahead of a gap; ``filled``: the gap in
#: front of that FIN is filled; ``rst_late``: the side sent this more than a round trip after the RSTs;
#: ``quick``: this comes within a round trip and rules.ANSWER_QUICK_NS of the FIN held for the side; ``prompt``: the
#: side's pure ACK of that FIN came so (note_prompt), ``soon``: rules.FIN_SOON_NS ago at most; ``freed``: that FIN
#: acknowledged data of the side's not acknowledged before (note_freed); ``answer_soon``: the side's pure ACK of a FIN
#: delivered at it, sent at once (note_answer), rules.FIN_SOON_NS ago at most; ``copy_soon``, ``probe_soon``: this FIN's
#: first capture less than a round trip and rules.ANSWER_LATE_NS ago, or less than ANSWER_LATE_NS ago
WAITING = ("rst", "queue", "ahead", "filled", "rst_late", "acks", "late", "late_first", "ack_first", "quick", "prompt",
           "soon", "freed", "copy_soon", "answer_soon", "probe_soon")
#: the clocks rules.HALF_OPEN counts from, and its timeouts
HALF_OPEN_CLOCKS = ("synack_at", "syn_at")
HALF_OPEN_TIMEOUTS = ("syn_ack", "syn")
ROLES = ("client", "first_closer", "fin_noted", "known", "seen", "synack_unseen", "data_unanswered", "resent",
         "hole")
TIMERS = ("2msl_due", "fin_wait_2_due", "rto_due", "rto_armed", "unacked", "retries_exhausted",
          "user_timeout_expired", "loss_probe")
SENDS = ("ACK", "RST", "SYN,ACK", "SYN,ACK again")
HELD_KINDS = ("syn", "syn_without_data", "fin", "fin_at_now", "fin_at_queue", "ahead", "fin_last")
_OPS = ("<=", ">=", "=", "<", ">")


class RuleError(ValueError):
    """A row the interpreters cannot read (a typo in rawfin/core/rules.py)."""


_CONSTANTS: dict[str, int] = {}     # named numbers of the rules being compiled (compile_rules)


def _value(tok: str, ctx_who: str) -> tuple:
    m = re.fullmatch(r"(-?\d+)", tok)
    if m:
        return ("lit", "", int(tok))
    if tok in _CONSTANTS:
        return ("lit", "", _CONSTANTS[tok])
    m = re.fullmatch(r"(?:((?:held|final):(?:tx|rx)|[a-z_]+)\.)?([a-z_0-9]+)([+-]1)?", tok)
    if not m:
        raise RuleError(f"cannot read the value {tok!r}")
    who, name, off = m.group(1), m.group(2), int(m.group(3) or 0)
    if who is None:
        if name in SEG_VALUES:
            who = "seg"
        elif name in _CONN_NAMES:
            who = "conn"
        else:
            who = ctx_who
    if who not in WHO:
        raise RuleError(f"{tok!r}: {who!r} names no endpoint or segment")
    if who in ("seg", "h", "now", "held:tx", "held:rx", "final:tx", "final:rx"):
        if name not in SEG_VALUES:
            raise RuleError(f"{tok!r}: a segment has no {name!r}")
    elif who == "conn":
        if name not in CONN_VALUES:
            raise RuleError(f"{tok!r}: unknown value")
    elif name not in EP_VALUES:
        raise RuleError(f"{tok!r}: an endpoint has no {name!r}")
    return (who, name, off)


def _states(text: str) -> int:
    mask = 0
    for name in text.split("|"):
        if name not in State.__members__:
            raise RuleError(f"{name!r} is not a state")
        mask |= 1 << list(State).index(State[name])
    return mask


_MEMO: dict = {}        # (kind, token, ctx) -> IR, within one compile_rules (constants may differ)


def _memo(kind: str, make: Callable, text: str, ctx_who: str) -> tuple:
    key = (kind, text, ctx_who)
    got = _MEMO.get(key)
    if got is None:
        got = _MEMO[key] = make(text, ctx_who)
    return got


def compile_pred(tok: str, ctx_who: str = "self") -> tuple:
    """One predicate of a row's ``when`` as ``(name, negated, args)``."""
    return _memo("p", _compile_pred, tok, ctx_who)


def _compile_pred(tok: str, ctx_who: str) -> tuple:
    neg = tok.startswith("!")
    t = tok[1:] if neg else tok
    if t.startswith("#"):
        return ("mark", neg, (t[1:],))
    for op in _OPS:
        if op in t:
            a, b = t.split(op, 1)
            return ("cmp", neg, (op, _value(a, ctx_who), _value(b, ctx_who)))
    if t in FLAG_BITS:
        return ("flag", neg, (FLAG_BITS[t],))
    if t in ("pure_ack", "data", "occupies", "in_window", "ack_known", "answered", "now", "rd_shut", "dup_ack",
             "timewait_reply", "id_skip", "id_skips"):
        return (t, neg, ())
    if t in CONFIG:
        return ("config", neg, (t,))
    if t in CONN_FLAGS:
        return ("conn", neg, (t,))
    if t in TIMERS:
        return ("timer", neg, (t,))
    parts = t.split(":")
    if parts[0] in ("some", "all", "reached") and len(parts) == 2:
        return (parts[0], neg, (_states(parts[1]),))
    if parts[0] == "took" and len(parts) == 3:
        return ("took", neg, (_states(parts[1]), list(Input).index(Input[parts[2]])))
    if parts[0] in ("tx", "rx", "x") and len(parts) == 2 and parts[1] in ROLES:
        return ("role", neg, (parts[0], parts[1]))
    if parts[0] in WAITING and len(parts) == 2 and parts[1] in ("tx", "rx", "x"):
        if parts[0] in ("late", "late_first", "copy_soon", "probe_soon"):  # rules.ANSWER_LATE_NS (and a round trip)
            return ("waiting", neg, (parts[0], parts[1], _CONSTANTS["answer_late"]))
        if parts[0] in ("quick", "soon", "answer_soon"):   # rules.ANSWER_QUICK_NS (and a round trip), FIN_SOON_NS
            return ("waiting", neg, (parts[0], parts[1], _CONSTANTS["answer_quick" if parts[0] == "quick" else "fin_soon"]))
        return ("waiting", neg, (parts[0], parts[1]))
    if parts[0] in ("lost_after", "lost_before") and len(parts) == 2 and parts[1] in ("tx", "rx"):
        return (parts[0], neg, (parts[1],))
    if t in ("held:tx", "held:rx", "final:tx", "final:rx"):
        return ("held", neg, (t,))
    m = re.fullmatch(r"(?:([a-z_]+|(?:held|final):(?:tx|rx))\.)?(state:[A-Z_|0-9]+|[A-Za-z_]+)", t)
    if m:
        who, what = m.group(1) or ctx_who, m.group(2)
        if who == "held:rx" or who == "held:tx" or who == "h":
            if what in FLAG_BITS:
                return ("held_flag", neg, (who, FLAG_BITS[what]))
            if what == "crossed":
                return ("crossed", neg, (who,))
        if what.startswith("state:"):
            return ("state", neg, (who, _states(what[6:])))
        if what == "passive":
            return ("passive", neg, (who,))
        if what in OPTIONAL:
            return ("isset", neg, ((who, what, 0),))
    raise RuleError(f"cannot read the predicate {tok!r}")


def compile_action(act: tuple, ctx_who: str = "self") -> tuple:
    name, *args = act
    if name not in ACTIONS:
        raise RuleError(f"unknown action {name!r}")
    if name == "move":
        if args[0] not in Input.__members__:
            raise RuleError(f"{args[0]!r} is not an Input")
        return ("move", (list(Input).index(Input[args[0]]), compile_template(args[1], ctx_who)))
    if name == "anomaly":
        at, kind, detail = (ctx_who, *args) if len(args) == 2 else args
        return ("anomaly", (at, kind, compile_template(detail, ctx_who)))
    if name == "candidate":
        return ("candidate", (args[0], compile_template(args[1], ctx_who)))
    if name == "set":
        target = _value(args[0], ctx_who)
        if target[0] in ("seg", "lit", "conn") or target[1] not in SEQ_FIELDS or target[2]:
            raise RuleError(f"cannot set {args[0]!r}")
        return ("set", (target, _value(args[1], ctx_who)))
    if name == "send":
        if args[0] not in SENDS:
            raise RuleError(f"cannot send {args[0]!r}")
        return ("send", (args[0],))
    if name == "infer":
        states, when = args
        if not states or any(st not in State.__members__ for st in states):
            raise RuleError(f"infer: {states!r} are not states")
        return ("infer", (tuple(states), compile_template(when, ctx_who)))
    if name == "deliver_held" and args[0] not in HELD_KINDS:
        raise RuleError(f"deliver_held {args[0]!r}")
    return (name, tuple(args))


_FIELD = re.compile(r"\{([^{}]+)\}")


def compile_template(text: str, ctx_who: str = "self") -> tuple:
    """``"rcv FIN seq={fin}"`` as pieces: literal text and values, in order."""
    return _memo("t", _compile_template, text, ctx_who)


def _compile_template(text: str, ctx_who: str) -> tuple:
    pieces: list = []
    pos = 0
    for m in _FIELD.finditer(text):
        if m.start() > pos:
            pieces.append(text[pos:m.start()])
        pieces.append(_value(m.group(1), ctx_who))
        pos = m.end()
    if pos < len(text):
        pieces.append(text[pos:])
    return tuple(pieces)


def compile_program(program: tuple[R.Step, ...], ctx_who: str = "self") -> tuple:
    """A program's steps as ``((preds, actions), ...)`` rows per step."""
    return tuple(tuple((tuple(compile_pred(p, ctx_who) for p in r.when),
                        tuple(compile_action(a, ctx_who) for a in r.do)) for r in s.rows) for s in program)


def compile_condition(text: str, ctx_who: str = "self") -> tuple:
    return tuple(compile_pred(p, ctx_who) for p in text.split())


_COMPILED_PARTS = ("receive", "observe_send", "timers", "birth", "guess_server", "segment", "flush", "flush_at_end",
                   "end", "rst_held", "time_wait_form", "close_kinds", "time_wait_closes", "reset_closes", "time_wait_held", "settled", "new_syn", "fast_path", "timer_order",
                   "final_ack_hold_ns", "well_known_port", "half_open", "syn_timeout_ns",
                   "syn_ack_timeout_ns", "id_skips_max")


class Compiled:
    """Every program of :mod:`rawfin.core.rules`, read once: receive and observe_send per State (in
    State order), timers, birth, guess_server (BIRTH's guess alone), segment, flush, flush_at_end, end, rst_held,
    time_wait_form,
    close_kinds ((kind, condition), ...), time_wait_closes, reset_closes, time_wait_held, settled, new_syn ((accepts, condition), ...),
    fast_path, timer_order, final_ack_hold_ns, well_known_port, half_open ((condition, clock, timeout), ...),
    syn_timeout_ns, syn_ack_timeout_ns, id_skips_max."""

    __slots__ = _COMPILED_PARTS

    def __init__(self, **parts) -> None:
        for name in _COMPILED_PARTS:
            setattr(self, name, parts[name])


def compile_rules(rules=R) -> Compiled:
    _CONSTANTS.clear()
    _MEMO.clear()
    _CONSTANTS["well_known"] = rules.WELL_KNOWN_PORT
    _CONSTANTS["answer_late"] = rules.ANSWER_LATE_NS
    _CONSTANTS["answer_quick"] = rules.ANSWER_QUICK_NS
    _CONSTANTS["fin_soon"] = rules.FIN_SOON_NS
    try:
        return _compile_rules(rules)
    finally:
        _CONSTANTS.clear()
        _MEMO.clear()


def _compile_rules(rules) -> Compiled:
    return Compiled(
        receive=tuple(compile_program(rules.RECEIVE[st]) for st in State),
        observe_send=tuple(compile_program(rules.OBSERVE_SEND[st]) for st in State),
        timers=compile_program(rules.TIMERS),
        birth=compile_program(rules.BIRTH, "tx"),
        guess_server=compile_program(tuple(s for s in rules.BIRTH if s.name == "guess_server"), "tx"),
        segment=compile_program(rules.SEGMENT, "rx"),
        flush=compile_program(rules.FLUSH, "x"),
        flush_at_end=compile_program(rules.FLUSH_AT_END, "x"),
        end=compile_program(rules.END, "a"),
        rst_held=compile_program(rules.RST_HELD, "x"),
        time_wait_form=compile_program(rules.TIME_WAIT_FORM, "rx"),
        close_kinds=tuple((k, compile_condition(c, "a")) for k, c in rules.CLOSE_KINDS),
        time_wait_closes=frozenset(rules.TIME_WAIT_CLOSES),
        reset_closes=frozenset(rules.RESET_CLOSES),
        time_wait_held=compile_condition(rules.TIME_WAIT_HELD, "a"),
        settled=compile_condition(rules.SETTLED, "a"),
        new_syn=tuple((y, compile_condition(c, "tx")) for y, c in rules.NEW_SYN),
        fast_path=compile_condition(rules.FAST_PATH, "rx"),
        timer_order=tuple(rules.OBSERVER_TIMERS),
        final_ack_hold_ns=rules.FINAL_ACK_HOLD_NS,
        well_known_port=rules.WELL_KNOWN_PORT,
        half_open=tuple(_half_open_row(*r) for r in rules.HALF_OPEN),
        syn_timeout_ns=rules.SYN_TIMEOUT_NS,
        syn_ack_timeout_ns=rules.SYN_ACK_TIMEOUT_NS,
        id_skips_max=rules.ID_SKIPS_MAX,
    )


def _half_open_row(cond: str, clock: str, timeout: str) -> tuple:
    if clock not in HALF_OPEN_CLOCKS or timeout not in HALF_OPEN_TIMEOUTS:
        raise RuleError(f"HALF_OPEN: {clock!r} / {timeout!r}: clocks {HALF_OPEN_CLOCKS}, timeouts {HALF_OPEN_TIMEOUTS}")
    return (compile_condition(cond, "a"), clock, timeout)


# ----------------------------------------------------------------------------------- the Python side

class Ctx:
    """What a program runs on. Endpoint programs use ep/seg/now/out; the observer's the rest."""

    __slots__ = ("ep", "seg", "now", "out", "marks", "conn", "tx", "rx", "txk", "rxk", "x", "xk", "h", "nowseg",
                 "a", "b", "first_closer", "infer", "filled")

    def __init__(self) -> None:
        self.marks = 0
        self.infer = None       # (alternative states, when they would hold) for the next transition
        self.filled = False     # FLUSH: the gap in front of the held FIN was just filled


STOP = object()
_STATE_BIT = {st: 1 << i for i, st in enumerate(State)}
_INPUTS = list(Input)


def _ep_of(who: str) -> Callable:
    if who == "self":
        return lambda c: c.ep
    if who in ("tx", "rx", "x", "a", "b", "first_closer"):
        return lambda c, w=who: getattr(c, w)
    if who == "client":
        return lambda c: c.conn.eps[c.conn.client]
    if who == "server":
        return lambda c: c.conn.eps[c.conn.server]
    raise RuleError(f"{who!r} is not an endpoint")


def _seg_of(who: str) -> Callable:
    if who == "seg":
        return lambda c: c.seg
    if who == "h":
        return lambda c: c.h.seg
    if who == "now":
        return lambda c: c.nowseg
    kind, side = who.split(":")
    attr = "pending" if kind == "held" else "held_ack"
    key = "txk" if side == "tx" else "rxk"
    if kind == "held":
        return lambda c: c.conn.pending[getattr(c, key)].seg
    return lambda c: c.conn.held_ack[getattr(c, key)]


def _seg_value(name: str) -> Callable:
    return {"seq": lambda s: s.seq, "ack": lambda s: s.ack, "end": lambda s: s.seq_end, "len": lambda s: s.data_len,
            "fin": lambda s: s.fin_seq, "win": lambda s: s.window, "sport": lambda s: s.sport,
            "dport": lambda s: s.dport, "frame": lambda s: s.frame, "describe": lambda s: s.describe()}[name]


def value_getter(v: tuple) -> Callable:
    """``(who, name, offset)`` -> a function of the context (None for an empty value)."""
    who, name, off = v
    if who == "lit":
        return lambda c: off
    if who == "conn":
        base = lambda c: c.conn.fins[0][1]              # noqa: E731 (first_fin)
    elif who in ("seg", "h", "now") or ":" in who:
        seg, get = _seg_of(who), _seg_value(name)
        base = lambda c: get(seg(c))                   # noqa: E731
    else:
        ep = _ep_of(who)
        if name == "name":
            base = lambda c: ep(c).name                # noqa: E731
        elif name == "state":
            base = lambda c: ep(c).state.name          # noqa: E731
        elif name == "missing":
            base = lambda c: -sq.sub(ep(c).rcv_nxt, c.seg.seq)   # noqa: E731
        elif name == "fin_gap":
            base = lambda c: sq.sub(c.seg.fin_seq, ep(c).rcv_nxt)   # noqa: E731
        elif name == "retries":
            base = lambda c: ep(c)._retries            # noqa: E731
        elif name == "2msl_s":
            base = lambda c: f"{2 * ep(c).config.msl_ns / 1_000_000_000:g}"   # noqa: E731
        else:
            base = lambda c, n=name: getattr(ep(c), n)   # noqa: E731
    if not off:
        return base

    def shifted(c):
        x = base(c)
        return None if x is None else sq.add(x, off)
    return shifted


def value_label(v: tuple) -> str:
    """The name a template gave a value: ``ack``, ``fin_seq+1``, ``rx.iss``."""
    who, name, off = v
    base = name if who in ("seg", "self", "conn", "x", "lit") else f"{who}.{name}"
    return base + ("" if not off else f"{off:+d}")


#: sequence-number values by whose space they are in: the segment's sender's, its receiver's; an
#: endpoint's own, its peer's
_SENDER_SPACE = frozenset(("seq", "end", "fin"))
_OWN_SPACE = frozenset(("iss", "snd_una", "snd_nxt", "fin_seq"))
_PEER_SPACE = frozenset(("irs", "rcv_nxt", "peer_fin_seq"))


def space_getter(v: tuple) -> Callable | None:
    """For a value that is a sequence number: a function of the context giving the side (its
    ``(ip, port)``) whose sequence space it is in, the side whose base a relative number is counted
    from; for ``describe``, the segment itself (it is shown relative to both sides); None for any
    other value. The compiled lane decides the same in interp.c (space_of)."""
    who, name, off = v
    if who == "lit":
        return None
    if who == "conn":
        return (lambda c: c.conn.fins[0][0] if c.conn.fins else None) if name == "first_fin" else None
    if who in ("seg", "h", "now") or ":" in who:
        seg = _seg_of(who)
        if name in _SENDER_SPACE:
            return lambda c: (lambda s: (s.src, s.sport))(seg(c))
        if name == "ack":
            return lambda c: (lambda s: (s.dst, s.dport))(seg(c))
        if name == "describe":
            return seg
        return None
    if name not in _OWN_SPACE and name not in _PEER_SPACE:
        return None
    ep = _ep_of(who)
    if name in _OWN_SPACE:
        return lambda c: ep(c).local
    return lambda c: ep(c).remote


def bases_of(c: Ctx):
    """The bases relative sequence numbers are counted from (``(ip, port) -> base``), or None when
    numbers are shown absolute: the connection's (the observer's), else the endpoint's own."""
    conn = getattr(c, "conn", None)
    if conn is not None:
        return conn.bases
    ep = getattr(c, "ep", None)
    return None if ep is None else ep.bases


_TEXTS: dict = {}


def render_template(template: tuple, c: Ctx) -> tuple[str, tuple]:
    """A template's text and the values it names: ``("rcv FIN seq=1101", (("fin", 1101),))``. With
    relative sequence numbers on (:func:`bases_of`), the text shows each sequence number relative to
    its side's base (rawfin.core.seq.relative); the values stay absolute."""
    got = _TEXTS.get(template)
    if got is None:
        got = _TEXTS[template] = tuple((p, None, None, None, False) if p.__class__ is str
                                       else (None, value_getter(p), value_label(p), space_getter(p),
                                             p[1] == "describe") for p in template)
    parts = []
    values = []
    bases = bases_of(c)
    for p, g, label, space, desc in got:
        if g is None:
            parts.append(p)
        else:
            v = g(c)
            values.append((label, v))
            if space is not None and v is not None and bases is not None:
                if desc:
                    v = space(c).describe(bases)
                else:
                    v = sq.relative(v, bases.get(space(c)))
            parts.append(str(v))
    return "".join(parts), tuple(values)


def cmp_is_seq(va: tuple, vb: tuple) -> bool:
    """A comparison of sequence numbers (RFC 9293 arithmetic), or of plain integers."""
    return (va[1] in SEQ_KIND and vb[1] in SEQ_KIND or (va[0] == "lit" and vb[1] in SEQ_KIND)
            or (vb[0] == "lit" and va[1] in SEQ_KIND))


def _cmp(op: str, va: tuple, vb: tuple) -> Callable:
    ga, gb = value_getter(va), value_getter(vb)
    seqs = cmp_is_seq(va, vb)
    if seqs:
        test = {"=": lambda d: d == 0, "<": lambda d: d < 0, ">": lambda d: d > 0, "<=": lambda d: d <= 0,
                ">=": lambda d: d >= 0}[op]

        def f(c):
            a = ga(c)
            if a is None:
                return False
            b = gb(c)
            if b is None:
                return False
            return a == b if op == "=" else test(sq.sub(a, b))
        return f
    test2 = {"=": lambda a, b: a == b, "<": lambda a, b: a < b, ">": lambda a, b: a > b,
             "<=": lambda a, b: a <= b, ">=": lambda a, b: a >= b}[op]

    def g(c):
        a, b = ga(c), gb(c)
        return a is not None and b is not None and test2(a, b)
    return g


_MARKS: dict[str, int] = {}


def mark_bit(name: str) -> int:
    return _MARKS.setdefault(name, 1 << len(_MARKS))


def marker(name: str) -> Callable:
    """The action ``mark``: sets the mark ``name`` for the rows after it (``#name``)."""
    bit = mark_bit(name)

    def mark(c) -> None:
        c.marks |= bit
    return mark


def build_pred(p: tuple) -> Callable:
    name, neg, args = p
    f = _build_pred(name, args)
    if neg:
        return lambda c: not f(c)
    return f


def _build_pred(name: str, args: tuple) -> Callable:  # noqa: C901 - one small case per primitive
    if name == "flag":
        bit = args[0]
        return lambda c: bool(c.seg.flags & bit)
    if name == "pure_ack":
        return lambda c: c.seg.flags & 0x17 == 0x10
    if name == "dup_ack":           # a bare ACK of nothing new while the peer's data is outstanding (a duplicate ACK)
        return lambda c: (c.seg.flags & 0x17 == 0x10 and not c.seg.data_len and c.seg.ack == c.rx.snd_una
                          and c.rx.snd_una != c.rx.snd_nxt)
    if name == "data":
        return lambda c: c.seg.data_len > 0
    if name == "occupies":
        return lambda c: c.seg.seg_len > 0
    if name == "rd_shut":
        return lambda c: c.ep.rd_shut
    if name == "cmp":
        return _cmp(*args)
    if name == "isset":
        g = value_getter(args[0])
        return lambda c: g(c) is not None
    if name == "state":
        ep, mask = _ep_of(args[0]), args[1]
        if args[0] == "first_closer":         # none before the first FIN
            return lambda c: c.first_closer is not None and bool(_STATE_BIT[c.first_closer.state] & mask)
        return lambda c: bool(_STATE_BIT[ep(c).state] & mask)
    if name == "in_window":
        return lambda c: sq.acceptable(c.seg.seq, c.seg.seg_len, c.ep.rcv_nxt, c.ep.rcv_wnd)
    if name == "ack_known":
        def ack_known(c):
            rx, ack = c.rx, c.seg.ack
            return ack == rx.snd_nxt or sq.between_incl(rx.snd_una, ack, rx.snd_nxt)
        return ack_known
    if name == "config":
        what = args[0]
        if what == "hold_final_ack":
            return lambda c: bool(c.conn.hold_ns)
        return lambda c, w=what: getattr(c.ep.config, w)
    if name == "passive":
        ep = _ep_of(args[0])
        return lambda c: ep(c).passive
    if name == "mark":
        bit = mark_bit(args[0])
        return lambda c: bool(c.marks & bit)
    if name == "conn":
        return _conn_flag(args[0])
    if name == "role":
        return _role(*args)
    if name in ("some", "all"):
        mask = args[0]
        if name == "some":
            return lambda c: any(_STATE_BIT[e.state] & mask for e in c.conn.eps.values())
        return lambda c: all(_STATE_BIT[e.state] & mask for e in c.conn.eps.values())
    if name == "reached":
        mask = args[0]
        return lambda c: bool(c.conn.reached & mask)
    if name == "took":
        mask, inp = args[0], _INPUTS[args[1]]
        return lambda c: any(r[0] == "t" and r[2].input is inp and _STATE_BIT[r[2].from_] & mask for r in c.out)
    if name == "timer":
        return _timer(args[0])
    if name == "held":
        kind, side = args[0].split(":")
        key = "txk" if side == "tx" else "rxk"
        if kind == "held":
            return lambda c: getattr(c, key) in c.conn.pending
        return lambda c: getattr(c, key) in c.conn.held_ack
    if name == "held_flag":
        seg, bit = _seg_of(args[0]), args[1]
        return lambda c: bool(seg(c).flags & bit)
    if name == "crossed":
        if args[0] == "h":
            return lambda c: c.h.crossed
        key = "txk" if args[0].endswith("tx") else "rxk"
        return lambda c: c.conn.pending[getattr(c, key)].crossed
    if name == "answered":
        return lambda c: (c.nowseg is not None and c.nowseg.syn
                          and (c.nowseg.src, c.nowseg.sport) == c.xk)
    if name == "now":
        return lambda c: c.nowseg is not None
    if name == "timewait_reply":  # now is x's, its IPv4 ID 0: a Linux timewait socket's reply (Segment.ip_id)
        return _timewait_reply
    if name == "id_skip":         # the segment's IPv4 ID two past its sender's highest so far (Connection.note_id)
        return lambda c: c.conn.id_skip
    if name == "id_skips":        # ... three to rules.ID_SKIPS_MAX past: two or more segments missing
        return lambda c: c.conn.id_skips
    if name == "waiting":
        return _waiting(*args)
    if name == "lost_after":
        return _lost_after(args[0])
    if name == "lost_before":
        return _lost_before(args[0])
    raise RuleError(f"no predicate {name!r}")


def _waiting(what: str, side: str, late_ns: int = 0) -> Callable:
    key = "txk" if side == "tx" else "rxk" if side == "rx" else "xk"
    if what == "rst":
        return lambda c: getattr(c, key) in c.conn.held_rst
    entry = (lambda c: c.h) if side == "x" else (lambda c: c.conn.pending.get(getattr(c, key)))
    if what == "queue":           # the held entry's fields: rawfin.core.observer.Held
        return lambda c: bool((e := entry(c)) and e.queue)
    if what == "ahead":
        return lambda c: bool((e := entry(c)) and e.ahead)
    if what == "acks":            # a segment waiting behind the FIN acknowledges its receiver's FIN
        def acks(c):
            e, me = entry(c), getattr(c, key[:-1])
            if not (e and e.queue) or me.fin_seq is None:
                return False
            end = sq.add(me.fin_seq, 1)
            return any(q.has_ack and sq.ge(q.ack, end) for q in e.queue)
        return acks
    if what == "ack_first":       # the link reorders after the capture point, and the receiver's answer (now) came
        #                           later after the first segment waiting behind the FIN that acknowledges its FIN
        #                           than most round trips to its side (rawfin.core.delays)
        def ack_first(c):
            e, me = entry(c), getattr(c, key[:-1])
            if c.nowseg is None or not (e and e.queue) or me.fin_seq is None:
                return False
            # the capture has seen segments reach a host out of order, and nothing shows segments missing before
            # the capture point (it saw them as they were sent: the reordering happened after it)
            if not c.conn.trips.reorders():
                return False
            ev = c.conn.evidence
            if any(ev.get((host_of(n), "up"), 0) for n in (me.name, me.peer_name)):
                return False
            end = sq.add(me.fin_seq, 1)
            q = next((q for q in e.queue if q.has_ack and sq.ge(q.ack, end)), None)
            if q is None:
                return False
            side = CLIENT if getattr(c, key) == c.conn.client else SERVER
            return c.conn.trips.mostly_below(side, (c.nowseg.time_ns or 0) - (q.time_ns or 0))
        return ack_first
    if what == "late":            # a round trip to the side (the handshake's half; unknown: never late) and late_ns after
        #                           the held FIN: the FIN's way from the capture point to the side and its answer's back
        def late(c):
            e, conn = entry(c), c.conn
            if not e or conn.rtt_ns is None:
                return False
            trip = conn.trip_ns[0 if getattr(c, key) == conn.client else 1]
            return c.now - (e.seg.time_ns or 0) >= late_ns + trip
        return late
    if what == "late_first":      # within a round trip of the held copy of a FIN sent again, late after its first
        def late_first(c):
            e, rtt = entry(c), c.conn.rtt_ns
            if not e or rtt is None or c.now - (e.seg.time_ns or 0) >= rtt:
                return False
            first = c.conn.fin_copy.get(getattr(c, key))
            return bool(first is not None and first[0] == e.seg.fin_seq and c.now - first[1] >= late_ns + rtt)
        return late_first
    if what == "quick":           # within a round trip (the handshake's; unknown: never) and late_ns of the held FIN
        return lambda c: bool((e := entry(c)) and c.conn.rtt_ns is not None
                              and c.now - (e.seg.time_ns or 0) <= late_ns + c.conn.rtt_ns)
    if what == "prompt":          # the side's pure ACK of the held FIN came at once (the observer's note_prompt)
        return lambda c: bool((e := entry(c)) and e.prompt_ns is not None)
    if what == "soon":            # ... and this segment within late_ns of that ACK
        return lambda c: bool((e := entry(c)) and e.prompt_ns is not None and c.now - e.prompt_ns <= late_ns)
    def fin_first(c):            # when this FIN was first captured: the one held for the side, else the side's
        #                           last FIN's first capture (None: no FIN here, or not that FIN)
        seg = c.seg
        if seg is None or not seg.flags & 0x01:
            return None
        e = entry(c)
        if e is not None:
            return e.seg.time_ns or 0
        first = c.conn.fin_copy.get(getattr(c, key))
        return first[1] if first is not None and first[0] == seg.fin_seq else None

    if what == "copy_soon":       # this FIN, the one held for the side (else the side's last FIN: its first capture),
        #                           captured less than a round trip (the handshake's) and late_ns before
        def copy_soon(c):
            rtt = c.conn.rtt_ns
            at = fin_first(c) if rtt is not None else None
            return at is not None and c.now - at < min(rtt, late_ns)
        return copy_soon
    if what == "probe_soon":      # this FIN's first capture (as copy_soon's) less than late_ns before: sent again sooner
        #                           than Linux's shortest retransmission timeout (a loss probe), or copied
        def probe_soon(c):
            at = fin_first(c)
            return at is not None and c.now - at < late_ns
        return probe_soon
    if what == "answer_soon":     # the side's pure ACK of a FIN delivered at it came at once (note_answer), late_ns ago
        return lambda c: ((t := c.conn.answered.get(getattr(c, key))) is not None and c.now - t <= late_ns)
    if what == "freed":           # the held FIN acknowledged data of the side's not acknowledged before (note_freed)
        return lambda c: bool((e := entry(c)) and e.freed)
    if what == "filled":
        def filled(c):
            e = entry(c)
            return bool(e and e.ahead and sq.ge(getattr(c, key[:2]).rcv_nxt, e.seg.seq))
        return filled
    if what == "rst_late":          # a round trip (twice the handshake's, and a millisecond) after the last
        def late(c):
            rsts = c.conn.held_rst[getattr(c, key)]
            return c.now - (rsts[-1].time_ns or 0) > 2 * (c.conn.rtt_ns or 0) + 1_000_000
        return late
    raise RuleError(what)


def host_of(name: str) -> str:
    """``192.0.2.1`` of ``192.0.2.1:80``, ``[2001:db8::1]`` of ``[2001:db8::1]:80``: the key of a host's
    evidence (the compiled lane keys it the same way, by the names it writes)."""
    return name.rpartition(":")[0]


def _lost_after(side: str) -> Callable:
    """The capture point shows where this pair's segments get lost: after it (segments it saw that never
    arrived), and nothing shows losses before it (segments it never saw). The evidence of the whole
    capture so far, for both hosts of the connection."""
    def f(c):
        ev = c.conn.evidence
        hosts = (host_of(c.tx.name), host_of(c.rx.name))
        up = sum(ev.get((h, "up"), 0) for h in hosts)
        down = sum(ev.get((h, "down"), 0) for h in hosts)
        return down > 0 and not up
    return f


def _timewait_reply(c) -> bool:
    """``now`` is x's, with IPv4 ID 0: what answers for a Linux socket handed to a timewait socket (its connected
    sockets count IDs), and nothing shows segments lost (or overtaken) before the capture point: it sees each
    side's segments in the order they were sent, so this one was x's first answer (a capture next to the
    receivers may show a timewait socket's later reply before the answer its full socket sent first)."""
    now = c.nowseg
    if now is None or now.ip_id != 0 or (now.src, now.sport) != c.xk:
        return False
    ev = c.conn.evidence
    return not any(ev.get((host_of(n), "up"), 0) for n in (c.x.name, c.x.peer_name))


def _lost_before(side: str) -> Callable:
    """The capture point shows this pair's segments lost before it (segments it never saw): the evidence of the
    whole capture so far, for both hosts of the connection. Without it, what the capture point saw sent may not
    have arrived (``!lost_before:``: it may sit anywhere between the hosts)."""
    def f(c):
        ev = c.conn.evidence
        return any(ev.get((host_of(n), "up"), 0) for n in (c.tx.name, c.rx.name))
    return f


def _conn_flag(what: str) -> Callable:
    if what == "fins":
        return lambda c: bool(c.conn.fins)
    if what == "fins_complete":
        return lambda c: c.conn._fins_complete()
    if what == "candidates":
        return lambda c: bool(c.conn.fin_ack_candidates)
    if what == "held":
        return lambda c: bool(c.conn.pending)
    if what == "final":
        return lambda c: bool(c.conn.held_ack)
    if what == "synack_unseen":
        return lambda c: c.conn.synack_unseen is not None
    if what == "rtt":
        return lambda c: c.conn.rtt_ns is not None
    if what == "rsts":
        return lambda c: bool(c.conn.held_rst)
    return lambda c, w=what: bool(getattr(c.conn, w))


def _role(who: str, role: str) -> Callable:
    key = {"tx": "txk", "rx": "rxk", "x": "xk"}[who]
    bit = (lambda c: 1 if getattr(c, key) == c.conn.first else 2)
    if role == "client":
        return lambda c: getattr(c, key) == c.conn.client
    if role == "first_closer":
        return lambda c: getattr(c, key) == c.conn.fins[0][0]
    if role == "fin_noted":
        return lambda c: any(f[0] == getattr(c, key) for f in c.conn.fins)
    if role == "known":
        return lambda c: bool(c.conn.known & bit(c))
    if role == "seen":
        return lambda c: bool(c.conn.seen & bit(c))
    if role == "synack_unseen":
        return lambda c: c.conn.synack_unseen == getattr(c, key)
    if role == "data_unanswered":
        return lambda c: bool(c.conn.unanswered & bit(c))
    if role == "resent":
        return lambda c: bool(c.conn.resent & bit(c))
    if role == "hole":
        return lambda c: bool(c.conn.hole & bit(c))
    raise RuleError(role)


def _timer(what: str) -> Callable:
    if what == "2msl_due":
        return lambda c: c.ep.time_wait_at is not None and c.now >= c.ep.time_wait_at
    if what == "fin_wait_2_due":
        return lambda c: c.ep.fin_wait_2_at is not None and c.now >= c.ep.fin_wait_2_at
    if what == "rto_due":
        return lambda c: c.ep.rto_at is not None and c.now >= c.ep.rto_at
    if what == "rto_armed":
        return lambda c: c.ep.rto_at is not None
    if what == "unacked":
        return lambda c: bool(c.ep._unacked)
    if what == "retries_exhausted":
        return lambda c: c.ep._retries >= c.ep.config.max_retries
    if what == "user_timeout_expired":
        return lambda c: c.ep.user_timeout_expired(c.now)
    if what == "loss_probe":
        return lambda c: c.ep.probing
    raise RuleError(what)


def build_program(program: tuple, actions: Callable[[tuple], Callable]) -> tuple:
    """A compiled program as Python functions: ``((preds, acts), ...)`` per step."""
    return tuple(tuple((tuple(build_pred(p) for p in preds), tuple(actions(a) for a in acts))
                       for preds, acts in step) for step in program)


def build_condition(cond: tuple) -> tuple:
    return tuple(build_pred(p) for p in cond)


def holds(preds: tuple, c: Ctx) -> bool:
    for p in preds:
        if not p(c):
            return False
    return True


def run(program: tuple, c: Ctx) -> bool:
    """Run a built program; True when a row stopped it."""
    for rows in program:
        for preds, acts in rows:
            for p in preds:
                if not p(c):
                    break
            else:
                for a in acts:
                    if a(c) is STOP:
                        return True
                break
    return False


def setter(target: tuple, value: tuple) -> Callable:
    who, name, _ = target
    ep, get = _ep_of(who), value_getter(value)

    def f(c):
        setattr(ep(c), name, get(c))
    return f


# ------------------------------------------------------------------------------- the rules in force

_LOADERS: list[Callable[[Compiled], None]] = []
_ACTIVE: list[Compiled] = []


def on_install(load: Callable[[Compiled], None]) -> None:
    """``load(compiled)`` now and whenever other rules are installed (the endpoint's and observer's
    built programs)."""
    if not _ACTIVE:
        _ACTIVE.append(compile_rules())
    _LOADERS.append(load)
    load(_ACTIVE[-1])


def active() -> Compiled:
    """The rules in force, compiled (what the compiled lane is handed at start)."""
    if not _ACTIVE:
        _ACTIVE.append(compile_rules())
    return _ACTIVE[-1]


def install(compiled: Compiled) -> Compiled:
    """Put other rules in force (a test changing one rule); returns the ones they replace."""
    old = active()
    _ACTIVE[-1] = compiled
    for load in _LOADERS:
        load(compiled)
    return old


class Lazy:
    """Programs built from the rules in force the first time they are needed (with the compiled lane,
    the Python ones are needed only when it hands a connection over). ``builders``: name -> function of
    the Compiled rules; a subclass lists the names in ``__slots__`` with ``_compiled``."""

    __slots__ = ()
    builders: dict = {}

    def load(self, compiled: Compiled) -> None:
        object.__setattr__(self, "_compiled", compiled)
        for name in self.builders:
            try:
                object.__delattr__(self, name)
            except AttributeError:
                pass

    def __getattr__(self, name: str):
        build = type(self).builders.get(name)
        if build is None:
            raise AttributeError(name)
        value = build(object.__getattribute__(self, "_compiled"))
        object.__setattr__(self, name, value)
        return value


class PerState(dict):
    """A program per State, each built the first time it runs."""

    def __init__(self, programs: tuple, build: Callable[[tuple], tuple]) -> None:
        super().__init__()
        self.programs, self.build = dict(zip(State, programs)), build

    def __missing__(self, state: State) -> tuple:
        built = self[state] = self.build(self.programs[state])
        return built
