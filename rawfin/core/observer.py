"""The both-endpoint observer: segments seen on a wire in, transitions and verdicts out.

Sans-IO like the core: it reads no file and no clock. A driver (``rawfin
analyze``, ``rawfin live``) feeds it segments in capture order, each with its
capture time; it returns typed events (``rawfin.core.events``) as they happen, and a
ConnectionEnd when a connection is finished and dropped, so memory follows the
connections open at once, not the capture's length.
"""

from __future__ import annotations

import heapq
import itertools
from collections import Counter
from dataclasses import replace
from types import MappingProxyType
from typing import Callable

from rawfin.core import seq as sq
from rawfin.core.units import SEC
from rawfin.core.endpoint import Config, Endpoint
from rawfin.core.events import Anomaly, ConnectionEnd, Result
from rawfin.core.segment import Segment, fmt_endpoint
from rawfin.core.states import State
from rawfin.core import machine as M
from rawfin.core.machine import STOP, Ctx, holds, run
from rawfin.core.delays import CLIENT, NO_ROUND_TRIPS, SERVER, RoundTrips
from rawfin.core.rules import LOSS_EVIDENCE

_EST = State.ESTABLISHED
_add, _gt, _between_incl = sq.add, sq.gt, sq.between_incl   # the fast path's helpers, bound once
_NOTHING: tuple = ()                # what the fast path returns: shared, so nobody may add to it
_NO_DICT = MappingProxyType({})     # shared and read-only: most connections never hold anything
_STATE_BIT = {st: 1 << i for i, st in enumerate(State)}
_NO_EVIDENCE: Counter = Counter()   # read-only in use: a connection outside an observer counts nothing


class _Roles:
    __slots__ = ("client", "server")


class _Ports:
    __slots__ = ("sport", "dport", "flags")

    def __init__(self, sport: int, dport: int) -> None:
        self.sport, self.dport, self.flags = sport, dport, 0


def guess_server(a: tuple[str, int], b: tuple[str, int]) -> tuple[str, int]:
    """With no SYN to tell which of two endpoints is the server: rules.BIRTH's guess (a well-known
    port is the server's, else the lower one)."""
    c = Ctx()
    c.conn, c.txk, c.rxk, c.seg = _Roles(), a, b, _Ports(a[1], b[1])
    c.conn.server = None
    run(PROGRAMS.guess_server, c)
    return c.conn.server


#: a connection picked up mid-stream (no ISN seen): how far below what was acknowledged a copy's
#: sequence number may lie (Connection.copy_of)
COPY_SPAN = 1 << 20


def _note(bases: dict, seg: Segment) -> None:
    """rawfin.core.seq.note_bases for one segment."""
    sq.note_bases(bases, (seg.src, seg.sport), (seg.dst, seg.dport), seg.seq, seg.ack, seg.syn, seg.has_ack)


def shown(conn, side: tuple[str, int], n: int) -> int:
    """A sequence number in ``side``'s space as the connection's texts show it (absolute, or relative)."""
    bases = conn.bases
    return n if bases is None else sq.relative(n, bases.get(side))


class Held:
    """What is held for a receiver (Connection.pending): the FIN (or SYN) that has not yet shown to reach it, and
    what the observer learns about it meanwhile. One shape, made by the hold action (rules' hold; the lane's
    held_t, made by its hold()): every rule's predicate reads a field that is always there."""

    __slots__ = ("seg", "crossed", "queue", "ahead", "prompt_ns", "freed")

    def __init__(self, seg: Segment) -> None:
        self.seg = seg
        self.crossed = False         # sent before the receiver's own segment that did not show it (rules' cross)
        self.queue: list[Segment] = []   # its sender's segments waiting behind it (rules' wait_behind, queue:)
        self.ahead = False           # ahead of a gap, waiting in the receiver's queue (hold_ahead, ahead:)
        self.prompt_ns: int | None = None   # the receiver's pure ACK of it, sent at once (note_prompt, prompt:)
        self.freed = False           # it acknowledged data of the receiver's not acknowledged before (freed:)


def _copy_of(conn, seg: Segment) -> bool:
    """Could ``seg`` be a copy of a segment ``conn`` (a Connection or its TimeWait) has seen from its
    sender (the same packet seen on another VLAN view)? Its sequence numbers say: a SYN with the sender's ISN; any
    other segment within what the sender has sent and, with an ACK, what its peer has."""
    tx = conn.eps.get((seg.src, seg.sport))
    if tx is None:
        return False
    rx = conn.eps[(seg.dst, seg.dport)]
    if seg.syn:
        return seg.seq == tx.iss and (not seg.has_ack or seg.ack == sq.add(rx.iss, 1))
    lo = tx.iss if not conn.mid_stream else sq.sub(tx.snd_una, COPY_SPAN)
    if not sq.between_incl(lo, seg.seq, tx.snd_nxt):
        return False
    rlo = rx.iss if not conn.mid_stream else sq.sub(rx.snd_una, COPY_SPAN)
    return not seg.has_ack or sq.between_incl(rlo, seg.ack, sq.add(rx.snd_nxt, 1))


class Connection:
    """One instance of a 4-tuple (and VLAN): two observer endpoints and what they did.

    What it infers is rawfin.core.rules' BIRTH, SEGMENT, FLUSH, FLUSH_AT_END, END and CLOSE_KINDS,
    run by rawfin.core.machine; this class holds the state those rows read and write.
    """

    __slots__ = ("id", "key", "eps", "client", "server", "server_guessed", "mid_stream", "first_frame",
                 "last_frame", "first_ns", "last_ns", "packets", "anomalies", "fins", "rst_seen",
                 "data_after_first_fin", "reached", "fin_ack_candidates", "first_fin_acked_alone",
                 "refused", "known", "vlan", "cfg", "born", "pending", "seen", "first", "alt_keys", "held_ack",
                 "synack_unseen", "hold_ns", "queued", "rules", "unanswered", "held_rst", "rtt_ns", "trip_ns", "evidence",
                 "trips",
                 "syn_ns", "fin_copy", "syn_at", "synack_at", "limits", "timed_out", "evicted", "reprieve", "resent", "bases",
                 "hole", "id_top", "id_skip", "id_skips", "id_hint", "answered")

    def __init__(self, cid: int, key: tuple, seg: Segment, cfg: Config, hold_ns: int = 0,
                 limits: dict | None = None) -> None:
        self.id = cid
        self.hold_ns = hold_ns
        self.limits = limits if limits is not None else PROGRAMS.limits   # rules.HALF_OPEN's timeouts (ns)
        self.syn_at: int | None = None      # the first SYN the client sent, the first SYN,ACK the server sent
        self.synack_at: int | None = None
        self.timed_out = False
        self.reprieve = False    # a segment of its own is arriving: its time is not up (Observer.feed)
        self.evicted = False
        self.key = key
        self.cfg = cfg
        self.rules = PROGRAMS
        self.vlan = seg.vlan
        self.first_frame = self.last_frame = seg.frame
        self.first_ns = self.last_ns = seg.time_ns or 0
        self.packets = 0
        self.anomalies: Counter | None = None     # containers stay None until needed: memory
        self.fins: list[tuple[tuple[str, int], int, int | None]] = []  # (sender, fin seq, frame)
        self.rst_seen: tuple[str, int] | bool = False    # the sender of the first RST seen (rules' note_rst)
        self.data_after_first_fin = False
        self.reached = 0         # the states either endpoint has entered (a bit per state, rules' reached:)
        self.fin_ack_candidates: list[Anomaly] | None = None
        self.first_fin_acked_alone = False
        self.refused = False
        # receiver -> the FIN (or SYN) held for it, and what is known about it (Held)
        self.pending: dict[tuple[str, int], Held] = _NO_DICT
        self.seen = 0            # bit 1: the first sender has sent, bit 2: the other side has
        self.unanswered = 0      # same bits: that side got data and its application has sent nothing since
        self.resent = 0          # same bits: that side has sent data again that its peer already had (rules' resent)
        self.hole = 0            # same bits: that side's duplicate ACK showed a hole in what it got (rules' hole)
        # (first sender's, other's): the highest IPv4 ID each side's segments carried so far, -1: none (note_id);
        # id_skip: the segment being taken carries its sender's highest but one more (rules' id_skip); id_hint:
        # those, for a segment whose ID is not known (the lane's replay, Observer.adopt: its kind's bits)
        self.id_top = (-1, -1)
        self.id_skip = False
        self.id_skips = False   # ... three to rules.ID_SKIPS_MAX past (rules' id_skips)
        self.id_hint = 0
        self.held_ack: dict[tuple[str, int], Segment] = _NO_DICT
        self.queued: int | None = None      # the deadline this connection has in the observer's heap
        self.synack_unseen: tuple[str, int] | None = None
        self.held_rst: dict[tuple[str, int], list] = _NO_DICT   # receiver -> RSTs held until it is silent
        self.rtt_ns: int | None = None     # the handshake's round trip, as the capture point saw it
        # (client's, server's): the handshake's halves, each a round trip from the capture point to that side and
        # back (at most rtt_ns: a half counted from a first SYN or SYN,ACK sent again is not), rules' late:
        self.trip_ns: tuple[int, int] | None = None
        self.syn_ns = seg.time_ns or 0      # the client's latest SYN (the round trip counts from it: Karn)
        # receiver -> (FIN seq, time): the first capture of the FIN held for it (rules' late:)
        self.fin_copy: dict[tuple[str, int], tuple[int, int]] = _NO_DICT
        # side -> its pure ACK of its peer's FIN, sent at once, that delivered that FIN (note_answer, answer_soon:)
        self.answered: dict[tuple[str, int], int] = _NO_DICT
        self.evidence: Counter = _NO_EVIDENCE   # the observer's: (host, "up"/"down") -> segments lost there
        self.trips: RoundTrips = NO_ROUND_TRIPS   # the observer's: the capture's round trips to each side
        self.alt_keys: tuple = ()
        src, dst = (seg.src, seg.sport), (seg.dst, seg.dport)
        a = Endpoint(local=src, remote=dst, config=cfg, vlan=seg.vlan)
        b = Endpoint(local=dst, remote=src, config=cfg, vlan=seg.vlan)
        # relative sequence numbers (--seq relative): each side's base as the capture shows it, for every
        # text the connection's rows write (rawfin.core.seq.note_bases); None: absolute
        self.bases: dict | None = None
        if cfg.relative_seq:
            self.bases = a.bases = b.bases = {}
            _note(self.bases, seg)
        self.eps = {src: a, dst: b}
        self.first = src
        self.client, self.server = src, dst
        self.known = 0           # same bits: whose rcv_nxt is known
        self.server_guessed = False
        self.mid_stream = False
        born: list = []
        run(PROGRAMS.birth, self._ctx(seg, seg.time_ns or 0, born))
        self.born: tuple[Anomaly, ...] = tuple(ev for _, _, ev in born)

    def _ctx(self, seg: Segment | None, now: int, out: list) -> Ctx:
        c = Ctx()
        c.conn, c.seg, c.now, c.out = self, seg, now, out
        if seg is not None:
            c.txk, c.rxk = (seg.src, seg.sport), (seg.dst, seg.dport)
            c.tx, c.rx = self.eps[c.txk], self.eps[c.rxk]
        return c

    def fast(self, seg: Segment, now: int) -> bool:
        """In-order data or a plain ACK on an established connection decides nothing (rules.FAST_PATH):
        apply it here without the programs (the result is the same; the tests compare both).
        False when the segment needs the full treatment (it is then left untouched)."""
        if seg.flags & 0x17 != 0x10 or self.fins or self.pending:
            return False              # (the first predicates of FAST_PATH, ahead of making a context)
        c = Ctx()
        c.conn, c.seg = self, seg
        c.txk, c.rxk = (seg.src, seg.sport), (seg.dst, seg.dport)
        eps = self.eps
        c.tx, c.rx = eps[c.txk], eps[c.rxk]
        for p in PROGRAMS.fast_path:
            if not p(c):
                return False
        if self.bases is not None and len(self.bases) < 2:
            _note(self.bases, seg)
        self.note_id(seg)
        sender, receiver = c.tx, c.rx
        self.packets += 1
        self.last_frame = seg.frame
        self.last_ns = now
        end = _add(seg.seq, seg.data_len)
        receiver.rcv_nxt = end
        if _gt(end, sender.snd_nxt):
            sender.snd_nxt = end
        receiver.snd_una = seg.ack
        receiver.snd_wnd = seg.window
        self._answered(seg)
        return True

    def copy_of(self, seg: Segment) -> bool:
        """Could ``seg`` be a copy, seen on another VLAN view, of a segment this connection has seen?"""
        return _copy_of(self, seg)

    def note_id(self, seg: Segment) -> None:
        """rules' id_skip for ``seg``, and its sender's highest IPv4 ID. Linux numbers the IPv4 IDs of a connected
        socket's segments one by one (ip_select_ident_segs); a segment whose ID is two past the highest its sender's
        earlier segments carried comes after one the capture has not shown (lost before the capture point, or
        overtaken); three to rules.ID_SKIPS_MAX past, after two or more (rules' id_skips). IDs 0 (Linux's replies from no
        connected socket) and SYNs (a listener's SYN,ACK) do not count."""
        ip = seg.ip_id
        if ip is None:                  # IPv6, or the lane's replay: its verdict
            self.id_skip, self.id_skips = bool(self.id_hint & 0x40), bool(self.id_hint & 0x20)
            return
        self.id_skip = self.id_skips = False
        if not ip or seg.flags & 2:
            return
        i = 0 if (seg.src, seg.sport) == self.first else 1
        top = self.id_top[i]
        if top >= 0:
            step = (ip - top) & 0xFFFF
            self.id_skip = step == 2
            self.id_skips = 2 < step <= self.rules.id_skips_max
            if not 0 < step < 0x8000:
                return                  # behind the highest (reordered): the highest stays
        self.id_top = (ip, self.id_top[1]) if i == 0 else (self.id_top[0], ip)

    def process(self, seg: Segment, now: int, out: list) -> None:
        self.packets += 1
        self.last_frame = seg.frame
        self.last_ns = now
        src = (seg.src, seg.sport)
        self.seen |= 1 if src == self.first else 2
        self.note_id(seg)
        if self.bases is not None and len(self.bases) < 2:
            _note(self.bases, seg)
        if seg.syn:                         # the clocks of rules.HALF_OPEN
            if not seg.has_ack:
                if self.syn_at is None and src == self.client:
                    self.syn_at = now
            elif self.synack_at is None and src == self.server:
                self.synack_at = now
        run(PROGRAMS.segment, self._ctx(seg, now, out))
        self._answered(seg)

    def _answered(self, seg: Segment) -> None:
        """rules' data_unanswered: data makes its receiver owe an answer; the application answers with data
        (or a FIN, or a SYN), not with the stack's bare ACK."""
        tx = 1 if (seg.src, seg.sport) == self.first else 2
        u = self.unanswered
        if seg.data_len or seg.flags & 3:
            u &= ~tx
        if seg.data_len:
            u |= 3 ^ tx
        self.unanswered = u

    def _hold(self, which: str, ep: tuple[str, int], value) -> None:
        held = getattr(self, which)
        if held is _NO_DICT:
            held = {}
            setattr(self, which, held)
        held[ep] = value

    def _unhold(self, which: str, ep: tuple[str, int]):
        held = getattr(self, which)
        value = held.pop(ep)
        if not held:
            setattr(self, which, _NO_DICT)    # an emptied dict keeps its table: let it go
        return value

    def _flush(self, ep: tuple[str, int], now_seg: Segment | None, out: list, infer: tuple | None = None,
               filled: bool = False) -> None:
        """Deliver the FIN (or SYN) held for ``ep`` as rules.FLUSH has it; ``infer``: the reading not
        taken, for the transition it makes; ``filled``: ``now_seg`` filled the gap in front of it."""
        c = Ctx()
        c.conn, c.out, c.nowseg, c.infer, c.filled = self, out, now_seg, infer, filled
        c.h = self._unhold("pending", ep)
        c.xk, c.x = ep, self.eps[ep]
        run(PROGRAMS.flush, c)

    def _deliver_rst(self, ep: tuple[str, int], out: list) -> None:
        """The RSTs held for ``ep``, each after rules.RST_HELD (which may name the reading not taken)."""
        x = self.eps[ep]
        for seg in self._unhold("held_rst", ep):
            c = Ctx()
            c.conn, c.out, c.nowseg, c.h, c.xk, c.x = self, out, None, Held(seg), ep, x
            run(PROGRAMS.rst_held, c)
            self._collect(x.receive(seg, seg.time_ns or 0), out, c.infer)

    def _deliver_final_ack(self, ep: tuple[str, int], out: list) -> None:
        seg = self._unhold("held_ack", ep)
        self._collect(self.eps[ep].receive(seg, seg.time_ns or 0), out)

    def flush_all(self, out: list) -> None:
        """The end: the final ACKs held are delivered, then what is held for each side (rules.FLUSH_AT_END)."""
        for ep in list(self.held_ack):
            self._deliver_final_ack(ep, out)
        for ep in list(self.held_rst):
            self._deliver_rst(ep, out)
        for ep in list(self.pending):
            c = Ctx()
            c.conn, c.out, c.nowseg = self, out, None
            c.h = self.pending[ep]
            c.xk, c.x = ep, self.eps[ep]
            run(PROGRAMS.flush_at_end, c)

    def _collect(self, res: Result, out: list, infer: tuple | None = None) -> tuple | None:
        """``infer``: (alternative states, when they would hold) for the first transition of ``res``: the
        capture cannot decide it; returned when no transition took it."""
        for t in res.transitions:
            self.reached |= _STATE_BIT[t.to]
            if infer:
                t, infer = replace(t, alternative=tuple(infer[0]), inferred=infer[1]), None
            out.append(("t", self, t))
        for a in res.anomalies:
            self._note(a)
            out.append(("a", self, a))
        return infer

    def _note(self, a: Anomaly) -> None:
        """Count an anomaly of this connection (and, rules.LOSS_EVIDENCE, what it shows of where segments
        get lost)."""
        if self.anomalies is None:
            self.anomalies = Counter()
        self.anomalies[a.kind] += 1
        where = LOSS_EVIDENCE.get(a.kind)
        if where is not None and self.evidence is not _NO_EVIDENCE:
            e = next(e for e in self.eps.values() if e.name == a.endpoint)
            self.evidence[M.host_of(e.name if where[1] == "local" else e.peer_name), where[0]] += 1

    def fire_timers(self, until: int, out: list) -> None:
        """rules.OBSERVER_TIMERS: held final ACKs whose hold is over, then each endpoint's own; then
        rules.HALF_OPEN: a connection still half-open when its time is up is given up on."""
        self._fire_timers(until, out)
        h = self.half_open_deadline()
        if h is not None and h <= until:
            self.timed_out = True

    def _fire_timers(self, until: int, out: list) -> None:
        for what in PROGRAMS.timer_order:
            if what == "final_ack":        # (and held RSTs: the same hold)
                for ep, seg in list(self.held_ack.items()):
                    if (seg.time_ns or 0) + self.hold_ns <= until:
                        self._deliver_final_ack(ep, out)
                for ep, segs in list(self.held_rst.items()):
                    if (segs[-1].time_ns or 0) + self.hold_ns <= until:
                        self._deliver_rst(ep, out)
            else:
                for ep in self.eps.values():
                    d = ep.next_deadline()
                    while d is not None and d <= until:
                        self._collect(ep.handle_timer(d), out)
                        nd = ep.next_deadline()
                        if nd == d:
                            break
                        d = nd

    def next_deadline(self) -> int | None:
        ds = [d for d in (ep.next_deadline() for ep in self.eps.values()) if d is not None]
        ds += [(seg.time_ns or 0) + self.hold_ns for seg in self.held_ack.values()]
        ds += [(segs[-1].time_ns or 0) + self.hold_ns for segs in self.held_rst.values()]
        h = self.half_open_deadline()
        if h is not None:
            ds.append(h)
        return min(ds) if ds else None

    def half_open_deadline(self) -> int | None:
        """rules.HALF_OPEN: when this connection is given up on, if it is half-open (else None).
        Not while a segment of its own is arriving: that segment shows it is still there (a capture
        whose clock jumps must not cut a connection in two); it is given up on at the next expiry
        if it is still half-open then."""
        if self.timed_out or self.reprieve:
            return None
        c = None
        for cond, clock, which in PROGRAMS.half_open:
            if c is None:
                c = self._conn_ctx()
            if holds(cond, c):
                start, limit = getattr(self, clock), self.limits[which]
                if start is None or not limit:
                    return None
                return start + limit
        return None

    def all_closed(self) -> bool:
        return all(ep.state is State.CLOSED for ep in self.eps.values())

    def _conn_ctx(self) -> Ctx:
        c = Ctx()
        c.conn = self
        eps = list(self.eps.values())
        c.a, c.b = eps
        c.first_closer = self.eps[self.fins[0][0]] if self.fins else None
        return c

    def settled(self) -> bool:
        """rules.SETTLED: what the record says can no longer change but for the final states."""
        return holds(PROGRAMS.settled, self._conn_ctx())

    def take_new_syn(self, seg: Segment, now: int, out: list) -> None:
        """A SYN that starts a new connection: a TIME_WAIT side takes it (and closes), as Linux does."""
        rx = self.eps[(seg.dst, seg.dport)]
        if rx.state is State.TIME_WAIT:
            self._collect(rx.receive(seg, now), out)

    def accepts_new_syn(self, seg: Segment) -> bool:
        """A SYN on this pair that starts a new connection instance (rules.NEW_SYN)."""
        c = self._ctx(seg, seg.time_ns or 0, [])
        for yes, cond in PROGRAMS.new_syn:
            if holds(cond, c):
                return yes
        return False

    # -- verdicts -----------------------------------------------------------------
    def close_kind(self) -> str:
        c = self._conn_ctx()
        for kind, cond in PROGRAMS.close_kinds:
            if holds(cond, c):
                return kind
        raise AssertionError("rules.CLOSE_KINDS has no last row")  # pragma: no cover

    def _fins_complete(self) -> bool:
        """Both FINs sent and both acknowledged."""
        if len(self.fins) < 2:
            return False
        for ep in self.eps.values():
            if ep.fin_seq is None or sq.lt(ep.snd_una, sq.add(ep.fin_seq, 1)):
                return False
        return True

    def active_closer(self) -> tuple[str, int] | None:
        return self.fins[0][0] if self.fins else None

    def end_anomalies(self, out: list) -> None:
        """What only the end of the capture (or of the connection) can tell (rules.END)."""
        self.flush_all(out)
        c = self._conn_ctx()
        c.out = out
        run(PROGRAMS.end, c)

    def end(self) -> ConnectionEnd:
        """The connection's verdict, as it stands."""
        closer = self.active_closer()
        client, server = fmt_endpoint(*self.client), fmt_endpoint(*self.server)
        kind = self.close_kind()
        return ConnectionEnd(
            conn=self.id, client=client, server=server, server_guessed=self.server_guessed,
            active_closer=fmt_endpoint(*closer) if closer else None,
            passive_closer=(fmt_endpoint(*(self.server if closer == self.client else self.client)) if closer else None),
            reset_by=(fmt_endpoint(*self.rst_seen) if kind in PROGRAMS.reset_closes and self.rst_seen is not True
                      else None),
            close=kind, final=((client, self.eps[self.client].state.value), (server, self.eps[self.server].state.value)),
            first_frame=self.first_frame, last_frame=self.last_frame, first_time_ns=self.first_ns,
            last_time_ns=self.last_ns, packets=self.packets, mid_stream=self.mid_stream,
            server_active_close=(closer == self.server and kind in PROGRAMS.time_wait_closes
                                 and holds(PROGRAMS.time_wait_held, self._conn_ctx())),
            anomalies=tuple(sorted(self.anomalies.items())) if self.anomalies else (), vlan=tuple(self.vlan))


# -- the observer's primitives: what the actions of rawfin.core.rules do to a Connection ---------------------

def _side(who: str):
    return ("txk", "tx") if who == "tx" else ("rxk", "rx") if who == "rx" else ("xk", "x")


def _observer_anomaly(at: str, kind: str, tpl: tuple, end: bool = False):
    _, attr = _side(at) if at in ("tx", "rx", "x") else (None, at)

    def f(c):
        conn = c.conn
        ep = getattr(c, attr)
        if end:       # END: dated at the connection's last segment, on the frame of that side's FIN
            when, frame = conn.last_ns, next((x[2] for x in conn.fins if x[0] == ep.local), None)
        else:
            when, frame = c.now, c.seg.frame
        detail, values = M.render_template(tpl, c)
        a = Anomaly(endpoint=ep.name, kind=kind, detail=detail, time_ns=when, frame=frame, values=values)
        conn._note(a)
        c.out.append(("a", conn, a))
    return f


def _open(c: Ctx) -> None:
    conn = c.conn
    conn.client, conn.server = c.txk, c.rxk
    c.rx.passive = True      # CLOSED until its answer shows it was listening (see rules.FLUSH)
    conn.known = 3


def _open_at_syn_ack(c: Ctx) -> None:
    conn, seg, a, b = c.conn, c.seg, c.tx, c.rx
    conn.client, conn.server = c.rxk, c.txk
    b.state = State.SYN_SENT
    b.iss = b.snd_una = sq.add(seg.ack, -1)
    b.snd_nxt = seg.ack
    a.state = State.SYN_RECEIVED
    a.passive = True
    a.irs = sq.add(seg.ack, -1)
    a.rcv_nxt = seg.ack
    a.iss = a.snd_una = seg.seq
    a.snd_nxt = seg.seq_end
    conn.known = 3


def _pick_up(c: Ctx) -> None:
    conn, seg = c.conn, c.seg
    conn.mid_stream = True
    conn.server_guessed = True
    ack = seg.has_ack
    c.tx.pick_up(state=State.ESTABLISHED, snd_nxt=seg.seq, rcv_nxt=seg.ack if ack else None, remote=c.rxk)
    c.rx.pick_up(state=State.ESTABLISHED, snd_nxt=seg.ack if ack else 0, rcv_nxt=seg.seq, remote=c.txk)
    conn.known = (1 if ack else 0) | 2


def _server(who: str):
    def f(c):
        if who == "tx":
            c.conn.server, c.conn.client = c.txk, c.rxk
        else:
            c.conn.server, c.conn.client = c.rxk, c.txk
    return f


def _know(who: str):
    key = _side(who)[0]

    def f(c):
        c.conn.known |= 1 if getattr(c, key) == c.conn.first else 2
    return f


def _flag(name: str):
    def f(c):
        setattr(c.conn, name, True)
    return f


def _drop_candidates(c: Ctx) -> None:
    c.conn.fin_ack_candidates = None


def _candidate(kind: str, tpl: tuple):
    def f(c):
        conn, seg = c.conn, c.seg
        if conn.fin_ack_candidates is None:
            conn.fin_ack_candidates = []
        detail, values = M.render_template(tpl, c)
        conn.fin_ack_candidates.append(Anomaly(endpoint=c.tx.name, kind=kind, detail=detail,
                                               time_ns=seg.time_ns or 0, frame=seg.frame, values=values))
    return f


def _note_rst(c: Ctx) -> None:
    if not c.conn.rst_seen:
        c.conn.rst_seen = c.txk


def _note_fin(c: Ctx) -> None:
    c.conn.fins.append((c.txk, c.seg.fin_seq, c.seg.frame))


def _on(who: str, fn):
    key = _side(who)[0]
    return lambda c: fn(c, getattr(c, key))


def _deliver_held(kind: str):
    def f(c):
        seg, x, conn = c.h.seg, c.x, c.conn
        if kind == "syn":
            conn._collect(x.receive(seg, seg.time_ns or 0), c.out)
            return
        if kind == "syn_without_data":
            if seg.data_len:
                seg = seg.with_(payload=b"", data_len=0)     # data on the SYN, not accepted
            conn._collect(x.receive(seg, seg.time_ns or 0), c.out)
            return
        if kind == "ahead":        # data and FIN, where the gap was filled or the receiver showed it had it
            when = c.nowseg if (c.filled or c.h.crossed) and c.nowseg is not None else seg
            c.infer = conn._collect(x.receive(seg.with_(frame=when.frame, time_ns=when.time_ns), when.time_ns or 0),
                                    c.out, c.infer)
            return
        if kind == "fin_last":     # what waited behind the FIN overtook it: that first, the FIN where now shows it
            for q in c.h.queue:
                c.infer = conn._collect(x.receive(q, q.time_ns or 0), c.out, c.infer)
        when = c.nowseg if kind in ("fin_at_now", "fin_last") else c.h.queue[0] if kind == "fin_at_queue" else seg
        fin = seg.with_(seq=seg.fin_seq, payload=b"", data_len=0, flags=1 | (seg.flags & 16),
                        frame=when.frame, time_ns=when.time_ns)
        c.infer = conn._collect(x.receive(fin, when.time_ns or 0), c.out, c.infer)
    return f


# -- a lossy, reordering link (issue 14) -----------------------------------------------------------------------

def _fin_unseen(c: Ctx) -> None:
    """tx's bare ACK is one past everything it was seen to send: its FIN, not captured, went before it."""
    conn, seg, tx = c.conn, c.seg, c.tx
    fseq = tx.snd_nxt
    peer = conn.pending.get(c.txk)
    infer = None
    if peer is not None and not peer.seg.syn:
        first = next((f[2] for f in conn.fins if f[0] == c.rxk), None)
        if first is not None and peer.seg.frame != first:
            # the peer sent its FIN again before this ACK: nothing had come back for the first copy, so
            # this side's answer (its FIN, carrying the ACK) was lost: it had the peer's FIN first
            conn._flush(c.txk, None, c.out, infer=(
                (State.FIN_WAIT_1, State.CLOSING), f"its FIN seq={shown(conn, c.txk, fseq)} (not captured) crossed "
                f"the peer's FIN in "
                f"frame {first}"))
        else:
            infer = ((State.CLOSE_WAIT, State.LAST_ACK),
                     f"the peer's FIN in frame {peer.seg.frame} reached it before it sent its FIN "
                     f"seq={shown(conn, c.txk, fseq)} (not "
                     f"captured), and its ACK of that FIN was lost before the capture point too")
    a = Anomaly(endpoint=tx.name, kind="fin_not_captured",
                detail=(f"{seg.describe(conn.bases)} is one past everything seen sent: a FIN "
                        f"seq={shown(conn, c.txk, fseq)} not in the capture"),
                time_ns=c.now, frame=seg.frame)
    conn._collect(Result(anomalies=(a,)), c.out)
    conn._collect(tx.observe_send(seg.with_(seq=fseq, flags=0x11), c.now), c.out, infer)
    conn.fins.append((c.txk, fseq, seg.frame))


def _first_fin(lost: bool):
    """The FIN held for rx, which crossed rx's own, sent again before rx acknowledged it: the first copy
    was lost after the capture point (rx took what its sender sent after it first: FIN_WAIT_2), or it
    arrived and rx's ACK of it was lost before the capture point (CLOSING). Which one, the rows say."""
    def f(c):
        conn, again, ep, rx = c.conn, c.seg, c.rxk, c.rx
        held = conn.pending[ep]
        first, queue = held.seg, held.queue
        after = queue[0].frame if queue else again.frame
        if not lost:
            conn._flush(ep, None if queue else again, c.out, infer=(
                (State.FIN_WAIT_2,), f"the FIN in frame {first.frame} was lost after the capture point (it took "
                f"frame {after} first)"))
            return
        conn._unhold("pending", ep)
        a = Anomaly(endpoint=rx.name, kind="fin_lost",
                    detail=(f"the FIN seq={shown(conn, (first.src, first.sport), first.fin_seq)} in frame {first.frame} "
                            f"never reached {rx.name}: it was "
                            f"sent again in frame {again.frame} before any ACK of it"),
                    time_ns=c.now, frame=again.frame)
        conn._collect(Result(anomalies=(a,)), c.out)
        infer = ((State.CLOSING,), f"the FIN in frame {first.frame} arrived before frame {after} and its ACK was "
                 f"lost before the capture point")
        for q in queue:
            infer = conn._collect(rx.receive(q, q.time_ns or 0), c.out, infer)
        c.infer = infer        # (none waited: the FIN sent again, its ACK field, moves rx first)
    return f


def _wait_behind(c: Ctx, k) -> None:
    c.conn.pending[k].queue.append(c.seg)


def _drop_lost_acks(c: Ctx, k) -> None:
    """k sends its FIN again while segments for it wait behind a FIN it had not taken: those that
    acknowledged its FIN were lost after the capture point (its FIN would not be sent again)."""
    conn, me, held = c.conn, c.conn.eps[k], c.conn.pending[k]
    want = sq.add(me.fin_seq, 1)
    keep = []
    for q in held.queue:
        if q.has_ack and sq.ge(q.ack, want) and not q.fin and not q.data_len:
            a = Anomaly(endpoint=me.name, kind="final_ack_lost",
                        detail=(f"the ACK ack={shown(conn, k, q.ack)} in frame {q.frame} never reached {me.name}: it "
                                f"sent its FIN seq={shown(conn, k, me.fin_seq)} again"), time_ns=c.now,
                        frame=c.seg.frame)
            conn._collect(Result(anomalies=(a,)), c.out)
        else:
            keep.append(q)
    held.queue = keep


def _hold_rst(c: Ctx, k) -> None:
    conn = c.conn
    if k in conn.held_rst:
        conn.held_rst[k].append(c.seg)
    else:
        conn._hold("held_rst", k, [c.seg])


def _rsts_unreceived(c: Ctx, k) -> None:
    """k kept sending: the RSTs held for it had not reached it. One its window would no longer take
    exactly (a FIN just delivered came first) is judged as it would be; the others were lost."""
    conn, me, seg = c.conn, c.conn.eps[k], c.seg
    for rst in conn._unhold("held_rst", k):
        if rst.seq != me.rcv_nxt:
            conn._collect(me.receive(rst, rst.time_ns or 0), c.out)
            continue
        a = Anomaly(endpoint=me.name, kind="rst_not_received",
                    detail=(f"the RST seq={shown(conn, me.remote, rst.seq)} in frame {rst.frame} had not reached "
                            f"{me.name}: it sent {seg.describe(conn.bases)} after it"), time_ns=c.now, frame=seg.frame)
        conn._collect(Result(anomalies=(a,)), c.out)


def _evidence(where: str, who: str):
    attr = _side(who)[1]

    def f(c):
        if c.conn.evidence is not _NO_EVIDENCE:
            c.conn.evidence[M.host_of(getattr(c, attr).name), where] += 1
    return f


def _rtt(c: Ctx) -> None:
    """The handshake's round trip; its two halves are round trips from the capture point to each side (the SYN
    to the server and its SYN,ACK back; the SYN,ACK to the client and its ACK back): rawfin.core.delays."""
    conn = c.conn
    conn.rtt_ns = rtt = c.now - conn.syn_ns
    syn, synack = conn.syn_at, conn.synack_at
    conn.trip_ns = (rtt, rtt)
    if syn is not None and synack is not None and syn <= synack <= c.now:
        conn.trip_ns = (min(c.now - synack, rtt), min(synack - syn, rtt))
    if conn.trips is not NO_ROUND_TRIPS and syn is not None and synack is not None and syn <= synack <= c.now:
        conn.trips.add(SERVER, synack - syn)
        conn.trips.add(CLIENT, c.now - synack)


def _syn_time(c: Ctx) -> None:
    c.conn.syn_ns = c.now


def _hold(c: Ctx, k) -> None:
    """Hold this segment for k; a FIN's first capture is kept across its copies (rules' late:)."""
    conn, seg = c.conn, c.seg
    conn._hold("pending", k, Held(seg))
    if seg.flags & 0x01:
        fin = seg.fin_seq
        had = conn.fin_copy.get(k)
        if had is None or had[0] != fin:
            conn._hold("fin_copy", k, (fin, seg.time_ns or 0))


def _hold_ahead(c: Ctx, k) -> None:
    """The FIN (just held for k) is ahead of a gap: it waits in k's queue; the ACK in it counts now."""
    c.conn.pending[k].ahead = True
    rx = c.conn.eps[k]
    body = c.seg.with_(flags=c.seg.flags & 0xFE, seq=rx.rcv_nxt, payload=b"", data_len=0)
    c.conn._collect(rx.receive(body, c.now), c.out)


def _deliver_ack_only(c: Ctx) -> None:
    rx = c.rx
    body = c.seg.with_(flags=c.seg.flags & 0xFE, seq=rx.rcv_nxt, payload=b"", data_len=0)
    c.infer = c.conn._collect(rx.receive(body, c.now), c.out, c.infer)


def _deliver_queue(c: Ctx) -> None:
    for q in c.h.queue:
        c.conn._collect(c.x.receive(q, q.time_ns or 0), c.out)


def _report_candidates(c: Ctx) -> None:
    for a in c.conn.fin_ack_candidates:
        c.conn._note(a)
        c.out.append(("a", c.conn, a))


def _flush_on(c: Ctx, k) -> None:
    """Deliver what is held for k; a reading the rules named (``infer``) goes with its first transition."""
    infer, c.infer = c.infer, None
    c.conn._flush(k, c.seg, c.out, infer=infer)


def _deliver(c: Ctx) -> None:
    c.infer = c.conn._collect(c.rx.receive(c.seg, c.now), c.out, c.infer)


def _observe_send(c: Ctx) -> None:
    c.infer = c.conn._collect(c.tx.observe_send(c.seg, c.now), c.out, c.infer)


def _note_prompt(c: Ctx, k) -> None:
    """k's pure ACK of the FIN held for it came at once: its time (rules' prompt:, soon:); the FIN stays held."""
    c.conn.pending[k].prompt_ns = c.now


def _note_answer(c: Ctx, k) -> None:
    """k's pure ACK of the FIN held for it came at once and delivers it: its time (rules' answer_soon:)."""
    c.conn._hold("answered", k, c.now)


def _note_freed(c: Ctx, k) -> None:
    """The FIN just held for k acknowledged data of k's not acknowledged before (rules' freed:)."""
    c.conn.pending[k].freed = True


def _cross(c: Ctx, k) -> None:
    c.conn.pending[k].crossed = True


def _note_resent(c: Ctx, k) -> None:
    c.conn.resent |= 1 if k == c.conn.first else 2


def _drop_resent(c: Ctx, k) -> None:
    c.conn.resent &= ~(1 if k == c.conn.first else 2)


def _note_hole(c: Ctx, k) -> None:
    c.conn.hole |= 1 if k == c.conn.first else 2


def _drop_hole(c: Ctx, k) -> None:
    c.conn.hole &= ~(1 if k == c.conn.first else 2)


def _reordered(c: Ctx) -> None:
    """A hole filled with nothing sent again: segments reached a host out of order (rawfin.core.delays)."""
    if c.conn.trips is not NO_ROUND_TRIPS:
        c.conn.trips.reordered += 1


def _listening(c: Ctx) -> None:
    c.x.state = State.LISTEN


def _observer_action(a: tuple, end: bool = False):  # noqa: C901 - one small case per primitive
    name, args = a
    if name == "stop":
        return lambda c: STOP
    if name == "anomaly":
        return _observer_anomaly(*args, end=end)
    if name == "set":
        return M.setter(*args)
    if name == "open":
        return _open
    if name == "open_at_syn_ack":
        return _open_at_syn_ack
    if name == "pick_up":
        return _pick_up
    if name == "server":
        return _server(args[0])
    if name == "know":
        return _know(args[0])
    if name == "flag":
        return _flag(args[0])
    if name == "drop_candidates":
        return _drop_candidates
    if name == "candidate":
        return _candidate(*args)
    if name == "note_fin":
        return _note_fin
    if name == "note_rst":
        return _note_rst
    if name == "unhold":
        return _on(args[0], lambda c, k: c.conn._unhold("pending", k))
    if name == "flush":
        return _on(args[0], _flush_on)
    if name == "cross":
        return _on(args[0], _cross)
    if name == "unhold_final":
        return _on(args[0], lambda c, k: c.conn._unhold("held_ack", k))
    if name == "deliver_final":
        return _on(args[0], lambda c, k: c.conn._deliver_final_ack(k, c.out))
    if name == "hold_final":
        return _on(args[0], lambda c, k: c.conn._hold("held_ack", k, c.seg))
    if name == "hold":
        return _on(args[0], _hold)
    if name == "observe_send":       # a reading the rules named goes with its first transition (as the lane's)
        return _observe_send
    if name == "deliver_without_fin":
        return lambda c: c.conn._collect(c.rx.receive(c.seg.with_(flags=c.seg.flags & 0xFE), c.now), c.out, c.infer)
    if name == "deliver":
        return _deliver
    if name == "synack_seen":
        return lambda c: setattr(c.conn, "synack_unseen", None)
    if name == "synack_unseen":
        return lambda c: setattr(c.conn, "synack_unseen", c.xk)
    if name == "listening":
        return _listening
    if name == "deliver_held":
        return _deliver_held(args[0])
    if name == "unhold_x":
        return lambda c: c.conn._unhold("pending", c.xk)
    if name == "flush_x":
        return lambda c: c.conn._flush(c.xk, None, c.out)
    if name == "report_candidates":
        return _report_candidates
    if name == "mark":
        return M.marker(args[0])
    if name == "fin_unseen":
        return _fin_unseen
    if name in ("first_fin_lost", "first_fin_arrived"):
        return _first_fin(name == "first_fin_lost")
    if name == "wait_behind":
        return _on(args[0], _wait_behind)
    if name == "drop_lost_acks":
        return _on(args[0], _drop_lost_acks)
    if name == "hold_rst":
        return _on(args[0], _hold_rst)
    if name == "deliver_rst":
        return _on(args[0], lambda c, k: c.conn._deliver_rst(k, c.out))
    if name == "rsts_unreceived":
        return _on(args[0], _rsts_unreceived)
    if name == "evidence":
        return _evidence(*args)
    if name == "rtt":
        return _rtt
    if name == "syn_time":
        return _syn_time
    if name == "hold_ahead":
        return _on(args[0], _hold_ahead)
    if name == "flush_filled":
        return _on(args[0], lambda c, k: c.conn._flush(k, c.seg, c.out, filled=True))
    if name == "deliver_ack_only":
        return _deliver_ack_only
    if name == "deliver_queue":
        return _deliver_queue
    if name == "note_resent":
        return _on(args[0], _note_resent)
    if name == "note_prompt":
        return _on(args[0], _note_prompt)
    if name == "note_freed":
        return _on(args[0], _note_freed)
    if name == "note_answer":
        return _on(args[0], _note_answer)
    if name == "drop_resent":
        return _on(args[0], _drop_resent)
    if name == "note_hole":
        return _on(args[0], _note_hole)
    if name == "drop_hole":
        return _on(args[0], _drop_hole)
    if name == "reordered":
        return _reordered
    if name == "infer":
        states, when = args[0], args[1]
        alt = tuple(State[st] for st in states)
        return lambda c: setattr(c, "infer", (alt, M.render_template(when, c)[0]))
    raise M.RuleError(f"the observer cannot {name!r}")


def _end_action(a: tuple):
    return _observer_action(a, end=True)


class _Programs(M.Lazy):
    """The observer's programs, built from the rules in force (rawfin.core.machine.install)."""

    __slots__ = ("_compiled", "birth", "guess_server", "segment", "flush", "flush_at_end", "end", "close_kinds",
                 "rst_held", "time_wait_form", "time_wait_closes", "reset_closes", "time_wait_held", "settled", "new_syn", "fast_path", "timer_order", "final_ack_hold_ns",
                 "half_open", "limits", "id_skips_max")
    builders = {
        "birth": lambda c: M.build_program(c.birth, _observer_action),
        "guess_server": lambda c: M.build_program(c.guess_server, _observer_action),
        "segment": lambda c: M.build_program(c.segment, _observer_action),
        "flush": lambda c: M.build_program(c.flush, _observer_action),
        "flush_at_end": lambda c: M.build_program(c.flush_at_end, _observer_action),
        "end": lambda c: M.build_program(c.end, _end_action),
        "rst_held": lambda c: M.build_program(c.rst_held, _observer_action),
        "time_wait_form": lambda c: M.build_program(c.time_wait_form, _observer_action),
        "close_kinds": lambda c: tuple((k, M.build_condition(cond)) for k, cond in c.close_kinds),
        "time_wait_closes": lambda c: c.time_wait_closes,
        "reset_closes": lambda c: c.reset_closes,
        "time_wait_held": lambda c: M.build_condition(c.time_wait_held),
        "settled": lambda c: M.build_condition(c.settled),
        "new_syn": lambda c: tuple((y, M.build_condition(cond)) for y, cond in c.new_syn),
        "fast_path": lambda c: M.build_condition(c.fast_path),
        "timer_order": lambda c: c.timer_order,
        "final_ack_hold_ns": lambda c: c.final_ack_hold_ns,
        "half_open": lambda c: tuple((M.build_condition(cond), clock, which) for cond, clock, which in c.half_open),
        "limits": lambda c: {"syn": c.syn_timeout_ns, "syn_ack": c.syn_ack_timeout_ns},
        "id_skips_max": lambda c: c.id_skips_max,
    }


PROGRAMS = _Programs()
M.on_install(PROGRAMS.load)


class TimeWait:
    """A settled connection, shrunk the way Linux hands a closed socket to a timewait minisock.

    A busy capture's last 2MSL holds tens of thousands of these, so only what can still matter
    stays, in a few slots: each TIME_WAIT side's sequence state as one tuple (made into an
    Endpoint again for the moment a segment or a timer needs it: it re-ACKs a retransmitted FIN,
    takes a new SYN, expires), the record's fixed parts, and the counters. Its records equal the
    full Connection's (a test runs every capture both ways).
    """

    __slots__ = ("id", "key", "alt_keys", "a", "b", "bits", "close", "first_frame", "first_ns", "anomalies",
                 "packets", "last_frame", "last_ns", "cfg", "client", "server", "client_iss", "first", "seen",
                 "queued", "closed_fin", "evicted", "bases", "evidence")

    # what an Endpoint in TIME_WAIT needs to be itself again
    _FIELDS = ("iss", "irs", "snd_una", "snd_nxt", "rcv_nxt", "fin_seq", "peer_fin_seq", "passive",
               "time_wait_at")

    def __init__(self, conn: Connection) -> None:
        self.id, self.key, self.alt_keys, self.cfg = conn.id, conn.key, conn.alt_keys, conn.cfg
        _, ka, kb = conn.key                      # one tuple object per address, shared by all below
        canon = {ka: ka, kb: kb}
        self.first, self.seen = canon[conn.first], conn.seen
        self.client, self.server = canon[conn.client], canon[conn.server]
        ea, eb = conn.eps[ka], conn.eps[kb]
        self.a, self.b = self._pack(ea), self._pack(eb)
        closer = conn.active_closer()
        self.close = conn.close_kind()
        self.bits = ((1 if conn.server_guessed else 0) | (2 if conn.mid_stream else 0)
                     | (4 if closer == self.server and self.close in PROGRAMS.time_wait_closes
                        and holds(PROGRAMS.time_wait_held, conn._conn_ctx()) else 0)
                     | (8 if closer == self.client else 16 if closer == self.server else 0))
        self.first_frame, self.first_ns = conn.first_frame, conn.first_ns
        # what a CLOSED side still needs to be itself: its FIN's number (a late copy of it is news)
        closed = ea if ea.state is State.CLOSED else eb if eb.state is State.CLOSED else None
        self.closed_fin = closed.fin_seq if closed is not None else None
        self.anomalies = conn.anomalies
        self.packets, self.last_frame, self.last_ns = conn.packets, conn.last_frame, conn.last_ns
        self.client_iss = conn.eps[conn.client].iss
        self.queued = conn.queued          # the heap entry names the key: it now finds this object
        self.evicted = False
        self.bases = conn.bases
        self.evidence = conn.evidence      # the observer's (shared): where segments get lost (rules' lost_after:)

    @classmethod
    def _pack(cls, e: Endpoint) -> tuple | None:
        """A TIME_WAIT endpoint as a tuple of its fields; None for a CLOSED one."""
        if e.state is not State.TIME_WAIT:
            return None
        return tuple(getattr(e, f) for f in cls._FIELDS)

    def _endpoint(self, ep: tuple[str, int]) -> Endpoint:
        """The endpoint at ``ep``, made again: from its fields in TIME_WAIT, else as CLOSED answers."""
        _, ka, kb = self.key
        packed = self.a if ep == ka else self.b
        e = Endpoint(local=ep, remote=kb if ep == ka else ka, config=self.cfg, vlan=self.key[0],
                     state=State.TIME_WAIT if packed is not None else State.CLOSED)
        e.bases = self.bases
        if packed is not None:
            for f, v in zip(self._FIELDS, packed):
                setattr(e, f, v)
        else:
            e.fin_seq = self.closed_fin
        return e

    def _store(self, ep: tuple[str, int], e: Endpoint) -> None:
        packed = self._pack(e)
        if ep == self.key[1]:
            self.a = packed
        else:
            self.b = packed

    @property
    def eps(self) -> dict:
        """The two endpoint addresses (what a --filter looks at)."""
        _, ka, kb = self.key
        return {ka: None, kb: None}

    def fast(self, seg: Segment, now: int) -> bool:
        return False

    def accepts_new_syn(self, seg: Segment) -> bool:
        return not ((seg.src, seg.sport) == self.client and seg.seq == self.client_iss)

    def take_new_syn(self, seg: Segment, now: int, out: list) -> None:
        ep = (seg.dst, seg.dport)
        if (self.a if ep == self.key[1] else self.b) is not None:   # TIME_WAIT takes the SYN
            e = self._endpoint(ep)
            self._collect(e.receive(seg, now), out)
            self._store(ep, e)

    def copy_of(self, seg: Segment) -> bool:
        """Could ``seg`` be a copy, seen on another VLAN view, of a segment this connection has seen?"""
        return _copy_of(self, seg)

    def process(self, seg: Segment, now: int, out: list) -> None:
        self.packets += 1
        self.last_frame = seg.frame
        self.last_ns = now
        src, dst = (seg.src, seg.sport), (seg.dst, seg.dport)
        self.seen |= 1 if src == self.first else 2
        sender, receiver = self._endpoint(src), self._endpoint(dst)
        self._collect(sender.observe_send(seg, now), out)
        c = Ctx()           # rules.TIME_WAIT_FORM: what the capture cannot decide (the reading not taken)
        c.conn, c.seg, c.now, c.out, c.txk, c.rxk, c.tx, c.rx = self, seg, now, out, src, dst, sender, receiver
        run(PROGRAMS.time_wait_form, c)
        self._collect(receiver.receive(seg, now), out, c.infer)
        self._store(src, sender)
        self._store(dst, receiver)

    def _collect(self, res: Result, out: list, infer: tuple | None = None) -> None:
        """``infer``: (alternative states, when they would hold) for the first transition of ``res``."""
        for t in res.transitions:
            if infer:
                t, infer = replace(t, alternative=tuple(infer[0]), inferred=infer[1]), None
            out.append(("t", self, t))
        for a in res.anomalies:
            if self.anomalies is None:
                self.anomalies = Counter()
            self.anomalies[a.kind] += 1
            out.append(("a", self, a))

    def next_deadline(self) -> int | None:
        ds = [p[-1] for p in (self.a, self.b) if p is not None and p[-1] is not None]
        return min(ds) if ds else None

    def fire_timers(self, until: int, out: list) -> None:
        for ep, packed in ((self.key[1], self.a), (self.key[2], self.b)):
            if packed is not None and packed[-1] is not None and packed[-1] <= until:
                e = self._endpoint(ep)
                self._collect(e.handle_timer(packed[-1]), out)
                self._store(ep, e)

    def all_closed(self) -> bool:
        return self.a is None and self.b is None

    def flush_all(self, out: list) -> None:
        pass

    def end_anomalies(self, out: list) -> None:
        pass

    def end(self) -> ConnectionEnd:
        """As Connection.end gives it."""
        bits = self.bits
        client, server = fmt_endpoint(*self.client), fmt_endpoint(*self.server)
        closer = client if bits & 8 else server if bits & 16 else None
        passive = (server if bits & 8 else client) if closer else None
        _, ka, kb = self.key
        states = {ka: "CLOSED" if self.a is None else "TIME_WAIT", kb: "CLOSED" if self.b is None else "TIME_WAIT"}
        evicted = self.evicted         # rules.CLOSE_KINDS' first row (a settled connection has no other)
        return ConnectionEnd(
            conn=self.id, client=client, server=server, server_guessed=bool(bits & 1), active_closer=closer,
            passive_closer=passive, reset_by=None, close="evicted" if evicted else self.close,
            final=((client, states[self.client]), (server, states[self.server])), first_frame=self.first_frame,
            last_frame=self.last_frame, first_time_ns=self.first_ns, last_time_ns=self.last_ns, packets=self.packets,
            mid_stream=bool(bits & 2), server_active_close=bool(bits & 4) and not evicted,
            anomalies=tuple(sorted(self.anomalies.items())) if self.anomalies else (), vlan=tuple(self.key[0]))


class Observer:
    """Tracks every connection in a stream of segments; returns what happens as it happens, as typed
    events (rawfin.core.events: Transition, Anomaly with their connection's number, ConnectionEnd);
    rawfin.render.records makes records of them."""

    def __init__(self, *, msl_ns: int = 30 * SEC,
                 select: Callable[[Connection], bool] | None = None, fast_path: bool = True,
                 final_ack_hold_ns: int | None = None, compact_time_wait: bool = True,
                 syn_timeout_ns: int | None = None, syn_ack_timeout_ns: int | None = None,
                 max_connections: int | None = None, relative_seq: bool = False) -> None:
        """``final_ack_hold_ns``: how long a final ACK waits before LAST_ACK -> CLOSED is
        reported, in case a retransmitted FIN shows it was lost (0: report at once, as
        ``rawfin live`` does, which must print each transition the moment it happens).
        ``syn_timeout_ns``, ``syn_ack_timeout_ns``: rules.HALF_OPEN's timeouts (None: the rules'
        defaults, Linux's; 0: never). ``max_connections``: at most this many connections at once;
        after a segment that makes one more, the least recently active (the one whose last segment
        is the oldest) is written out as it stands, close kind ``evicted`` (None: no limit)."""
        self.hold_ns = PROGRAMS.final_ack_hold_ns if final_ack_hold_ns is None else final_ack_hold_ns
        limits = dict(PROGRAMS.limits)
        if syn_timeout_ns is not None:
            limits["syn"] = syn_timeout_ns
        if syn_ack_timeout_ns is not None:
            limits["syn_ack"] = syn_ack_timeout_ns
        self.limits = limits
        self.compact = compact_time_wait
        self.cfg = Config(msl_ns=msl_ns, observer=True, relative_seq=relative_seq)
        self.fast_path = fast_path
        self.select = select
        self.linger_ns = 2 * msl_ns
        self.active: dict[tuple, Connection] = {}
        self.by_tuple: dict[tuple, Connection] = {}
        #: keys of a pair's other VLAN view that sees the same packets again (Observer._adopt): its
        #: segments are counted (stats["vlan_copy"]) and passed over, never analysed twice
        self.mirrors: set[tuple] = set()
        self.next_id = 0
        self._timers: list[tuple] = []     # (deadline, conn id, order, connection key)
        self._order = itertools.count()
        self.now = 0
        self.connections_done = 0
        self.stats: Counter = Counter()
        self.by_close: Counter = Counter()
        self.server_active_closes = 0
        #: where segments get lost, as the capture so far shows it: (host, "up"/"down") -> how often
        #: (rules.LOSS_EVIDENCE; the compiled lane adds what its connections show, evidence_kinds says which)
        self.evidence: Counter = Counter()
        self.loss_evidence = LOSS_EVIDENCE
        #: the round trips from the capture point to the clients' and to the servers' side the capture so far
        #: shows (rawfin.core.delays; the compiled lane counts those of its connections: trips.pull)
        self.trips = RoundTrips()
        self.max_connections = max_connections or None
        #: connection id -> connection, the least recently active first (kept with a limit only)
        self.recent: dict[int, object] | None = {} if self.max_connections else None
        self.evictions = 0
        self.open_count = 0             # connections tracked now (the lane asks: tracked())
        self._reprieved: Connection | None = None

    @staticmethod
    def key_of(seg: Segment) -> tuple:
        a, b = (seg.src, seg.sport), (seg.dst, seg.dport)
        return (seg.vlan, a, b) if a <= b else (seg.vlan, b, a)

    def feed(self, seg: Segment) -> list | tuple:
        """One segment, in capture order; returns the records it produced (a shared empty tuple
        when there are none, which the caller must not try to add to)."""
        now = seg.time_ns or 0
        if now > self.now:
            self.now = now
        timers = self._timers
        key = self.key_of(seg)
        conn = self.active.get(key)
        due = bool(timers) and timers[0][0] <= now
        if self.mirrors and key in self.mirrors:
            return self._copy(key, now, due)
        if conn is not None and self.fast_path and not due and conn.fast(seg, now):
            if self.recent is not None:
                self._touch(conn)
            return _NOTHING             # (fast() applies the segment: ask it only when nothing else is due)
        out: list = []
        recs: list = []
        if due:
            self.reprieve(key)
            self._expire(now, out, recs)
            self.reprieve(None)
            conn = self.active.get(key)     # expiry may have finished it or shrunk it to TIME_WAIT form
        if conn is None and (seg.vlan or self.by_tuple):
            conn = self._adopt(key, seg)
            if conn is not None and key in self.mirrors:     # the first copy of a mirror view
                self.stats["vlan_copy"] += 1
                self._records(out, recs)
                return recs or _NOTHING
        if conn is not None and seg.syn and not seg.has_ack and conn.accepts_new_syn(seg):
            conn.take_new_syn(seg, now, out)   # the SYN itself counts in the new connection
            self._records(out, recs)
            out.clear()
            self._finish(conn, recs)
            conn = None
        if conn is None:
            conn = Connection(self.next_id, key, seg, self.cfg, self.hold_ns, self.limits)
            conn.evidence = self.evidence
            conn.trips = self.trips
            self.open_count += 1
            self.next_id += 1
            self.active[key] = conn
            if seg.vlan:
                self.by_tuple[key[1:]] = conn
            out.extend(("a", conn, a) for a in conn.born)
        conn.process(seg, now, out)
        if self.compact and conn.__class__ is Connection and conn.settled():
            conn = self._to_time_wait(conn)
        d = conn.next_deadline()
        if d is not None:
            self._schedule(conn, d)
        elif conn.all_closed():
            self._schedule(conn, now + self.linger_ns)
        self._records(out, recs)
        if self.recent is not None:
            self._touch(conn)
            while len(self.recent) > self.max_connections:    # the least recently active makes room
                self._evict(next(iter(self.recent.values())), recs)
        return recs

    def _copy(self, key: tuple, now: int, due: bool) -> list | tuple:
        """A segment on a mirror view (the same packet seen again on another VLAN view): time
        passes, the copy is counted, nothing else."""
        recs: list = []
        if due:
            out: list = []
            self.reprieve(key)
            self._expire(now, out, recs)
            self.reprieve(None)
            self._records(out, recs)
        self.stats["vlan_copy"] += 1
        return recs or _NOTHING

    def _touch(self, conn) -> None:
        """``conn`` is now the most recently active."""
        recent = self.recent
        recent.pop(conn.id, None)
        recent[conn.id] = conn

    def _evict(self, conn, recs: list) -> None:
        """Written out as it stands (its end, its record: close kind ``evicted``), to make room."""
        self.evictions += 1
        conn.evicted = True
        self._finish(conn, recs)

    def reprieve(self, key: tuple | None) -> None:
        """The connection on this pair is not given up on by the expiry its own segment brings
        (rules.HALF_OPEN); None: the expiry is over."""
        held = self._reprieved
        if held is not None:
            held.reprieve = False
            self._reprieved = None
        conn = self.active.get(key) if key is not None else None
        if conn is not None and conn.__class__ is Connection:
            conn.reprieve = True
            self._reprieved = conn

    def tracked(self) -> int:
        """How many connections are tracked now (the compiled lane counts these with its own)."""
        return self.open_count

    def evict(self, key: tuple) -> list[dict] | None:
        """The compiled lane evicts the connection tracked under ``key`` (None: there is none now)."""
        conn = self.active.get(key)
        if conn is None:
            return None
        recs: list = []
        self._evict(conn, recs)
        return recs

    def evict_conn(self, conn) -> list[dict]:
        """The compiled lane evicts a connection it has just handed over."""
        recs: list = []
        self._evict(conn, recs)
        return recs

    def _schedule(self, conn, when: int) -> None:
        """One heap entry a connection at a time: an earlier entry re-schedules when it fires."""
        if conn.queued is not None and conn.queued <= when:
            return
        conn.queued = when
        heapq.heappush(self._timers, (when, conn.id, next(self._order), conn.key))

    def _to_time_wait(self, conn: Connection) -> TimeWait:
        """Swap a settled connection for its small TIME_WAIT form everywhere it is held."""
        tw = TimeWait(conn)
        for k in (conn.key, *conn.alt_keys):
            if self.active.get(k) is conn:
                self.active[k] = tw
        if self.recent is not None and conn.id in self.recent:
            self.recent[conn.id] = tw       # (in its place: the order is the order of activity)
        if self.by_tuple.get(conn.key[1:]) is conn:
            self.by_tuple[conn.key[1:]] = tw
        return tw

    def _adopt(self, key: tuple, seg: Segment) -> Connection | None:
        """The pair held on another VLAN view (another tag, another stack of tags, or none), and is
        this segment that connection's? One direction on one VLAN and the other on another (a router
        on a stick) is, as long as this direction has not been seen yet; so is a copy of what was
        seen there (a capture that sees each packet twice, on the trunk and untagged, or with one
        tag and with two): the same connection, once, as tshark's tcp.stream and Zeek (its
        five-tuple key, the default) count it. Another connection of the same pair on another VLAN
        (overlapping address spaces) has sequence numbers of its own: it stays its own."""
        other = self.by_tuple.get(key[1:])
        if other is None and seg.vlan:
            other = self.active.get(((),) + key[1:])        # the untagged view of the pair
        if other is None or other.key == key or self.active.get(other.key) is not other \
                or other.__class__ is not Connection:
            return None
        if other.seen & (1 if (seg.src, seg.sport) == other.first else 2):
            if not other.copy_of(seg):
                return None
            self.mirrors.add(key)
        self.active[key] = other
        other.alt_keys += (key,)
        return other

    def tick(self, now: int) -> list:
        """Time passes with no segment (a live capture): fire what is due, e.g. 2MSL expiry."""
        out: list = []
        recs: list = []
        if now > self.now:
            self.now = now
        self._expire(now, out, recs)
        self._records(out, recs)
        return recs

    def note_skip(self, kind: str, frame: int | None, time_ns: int | None, detail: str) -> list:
        """A frame that is not a TCP segment rawfin can use: counted; malformed ones reported."""
        self.stats[kind] += 1
        if kind == "malformed":
            return [Anomaly(endpoint="-", kind="malformed_packet", detail=detail, time_ns=time_ns or 0, frame=frame)]
        return []

    def _expire(self, now: int, out: list, recs: list) -> None:
        timers = self._timers
        while timers and timers[0][0] <= now:
            self._expire_entry(now, out, recs)

    def _expire_entry(self, now: int, out: list, recs: list) -> None:
        """Pop the first heap entry and fire it, unless its connection is gone or has an earlier one."""
        d, cid, _, key = heapq.heappop(self._timers)
        conn = self.active.get(key)
        if conn is not None and conn.id == cid and conn.queued == d:
            self._fire(conn, d, now, out, recs)

    def _fire(self, conn, d: int, now: int, out: list, recs: list) -> None:
        """A connection's heap entry for deadline ``d`` is due at ``now``."""
        conn.queued = None
        conn.fire_timers(d, out)
        if conn.__class__ is Connection and conn.timed_out:    # rules.HALF_OPEN: given up on
            self._records(out, recs)
            out.clear()
            self._finish(conn, recs)
            return
        if self.compact and conn.__class__ is Connection and conn.settled():
            conn = self._to_time_wait(conn)
        nd = conn.next_deadline()
        if nd is not None:
            self._schedule(conn, max(nd, d + 1))
            return
        if conn.all_closed():
            quiet_until = conn.last_ns + self.linger_ns
            if quiet_until <= now:
                self._records(out, recs)
                out.clear()
                self._finish(conn, recs)
            else:
                self._schedule(conn, quiet_until)

    # -- the compiled lane's side of the observer (rawfin/capture/_engine.c, rawfin/capture/engine.Handback) ---
    def first_timer(self) -> tuple[int, int] | None:
        """The first entry of the timer heap: (deadline, connection id), or None."""
        t = self._timers
        return (t[0][0], t[0][1]) if t else None

    def holds_pair(self, a: tuple[str, int], b: tuple[str, int]) -> bool:
        """A connection of this 4-tuple (in either order) is held, VLAN-tagged or untagged."""
        pair = (a, b) if a <= b else (b, a)
        return pair in self.by_tuple or ((),) + pair in self.active

    def follows(self, key: tuple) -> bool:
        """The pair with this key still has a connection here."""
        return key in self.active

    @staticmethod
    def key_of_conn(conn) -> tuple:
        return conn.key

    def expire_one(self, now: int) -> list:
        """Pop one heap entry due at ``now`` (the lane merges its own heap with this one)."""
        out: list = []
        recs: list = []
        self._expire_entry(now, out, recs)
        self._records(out, recs)
        return recs

    def fire_entry(self, conn, d: int, now: int) -> list:
        """A heap entry the lane popped for a connection it has just handed over."""
        out: list = []
        recs: list = []
        self._fire(conn, d, now, out, recs)
        self._records(out, recs)
        return recs

    def adopt(self, cid: int, events: list[tuple], first: tuple[str, int], other: tuple[str, int],
              queued: int, vlan: tuple[int, ...] = (), id_top: tuple[int, int] = (-1, -1)):
        """Take over a connection the lane has followed so far: replay what it saw.

        ``events`` are (kind, frame, time_ns, seq, ack, flags, window, data_len): kind 0 or 1 (| 0x80: its IPv4
        ID was 0, the lane's KIND_ID0; | 0x40, 0x20: rules' id_skip, id_skips held for it, KIND_IDSKIP, KIND_IDSKIPS) a
        segment sent by ``first`` or ``other``, 2 a timer fired at time_ns (4: while a segment of its own
        was arriving, see reprieve), 3 the end's flush.
        The records this replay makes were written by the lane already and are dropped;
        what is left is the connection exactly as this observer would have it.
        """
        ends = (first, other)
        out: list = []
        conn = None
        for kind, frame, t, seqno, ackno, flags, window, dlen in events:
            ip_id, skip, kind = (0 if kind & 0x80 else None), kind & 0x60, kind & 0x1F
            if kind < 2:
                (src, sport), (dst, dport) = ends[kind], ends[1 - kind]
                seg = Segment(src=src, dst=dst, sport=sport, dport=dport, seq=seqno, ack=ackno, flags=flags,
                              window=window, data_len=dlen, frame=frame if frame >= 0 else None, time_ns=t,
                              vlan=vlan, ip_id=ip_id)
                if conn is None:
                    conn = Connection(cid, self.key_of(seg), seg, self.cfg, self.hold_ns, self.limits)
                    out.extend(("a", conn, a) for a in conn.born)
                if conn.__class__ is Connection:
                    conn.id_hint = skip
                if not conn.fast(seg, t):
                    conn.process(seg, t, out)
            elif kind == 2:
                conn.fire_timers(t, out)
            elif kind == 4:                 # fired while a segment of its own was arriving (reprieve)
                if conn.__class__ is Connection:
                    conn.reprieve = True
                conn.fire_timers(t, out)
                if conn.__class__ is Connection:
                    conn.reprieve = False
            else:
                conn.flush_all(out)
            if self.compact and conn.__class__ is Connection and conn.settled():
                conn = TimeWait(conn)
            out.clear()
        self.active[conn.key] = conn
        conn.evidence = self.evidence         # (its replay counted nothing: the lane had; a TimeWait form too)
        if conn.__class__ is Connection:
            conn.trips = self.trips
            conn.id_hint = 0
            conn.id_top = id_top                # (the replay knew no IDs: the lane's)
        self.open_count += 1
        if vlan:
            self.by_tuple[conn.key[1:]] = conn
        conn.queued = None
        if queued >= 0:
            self._schedule(conn, queued)
        return conn

    def end_conns(self) -> list:
        """The connections left at the end of the capture, by id."""
        return sorted({c.id: c for c in self.active.values()}.values(), key=lambda c: c.id)

    def end_prepare(self, conn, now: int) -> list:
        """The end, first pass: deliver what is held, fire what capture time allows."""
        out: list = []
        recs: list = []
        conn.flush_all(out)
        conn.fire_timers(max(now, self.now), out)
        self._records(out, recs)
        return recs

    def end_finish(self, conn) -> list:
        """The end, second pass: the connection's last anomalies and its record."""
        recs: list = []
        self._finish(conn, recs)
        return recs

    def end_clear(self) -> None:
        self._timers.clear()

    def _records(self, out: list, recs: list) -> None:
        """The events of ``out`` (kind, connection, event), each with its connection's number."""
        select = self.select
        for _kind, conn, ev in out:
            if select is not None and not select(conn):
                continue
            recs.append(replace(ev, conn=conn.id))

    def _finish(self, conn: Connection, recs: list) -> None:
        out: list = []
        conn.end_anomalies(out)
        self._records(out, recs)
        end = conn.end()
        if self.select is None or self.select(conn):
            recs.append(end)
        self.by_close[end.close] += 1
        if end.server_active_close:
            self.server_active_closes += 1
        self.connections_done += 1
        self.open_count -= 1
        if self.recent is not None:
            self.recent.pop(conn.id, None)
        for k in [conn.key, *conn.alt_keys]:
            if self.active.get(k) is conn:
                del self.active[k]
                self.mirrors.discard(k)
        if self.by_tuple.get(conn.key[1:]) is conn:
            del self.by_tuple[conn.key[1:]]

    def finish(self) -> list:
        """The end of the capture: fire what capture time allows, then report every connection left."""
        recs: list = []
        conns = self.end_conns()
        for conn in conns:
            recs += self.end_prepare(conn, self.now)
        for conn in conns:
            recs += self.end_finish(conn)
        self.end_clear()
        return recs
