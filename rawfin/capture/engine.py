"""The driver of the compiled lane (``rawfin/capture/_engine.c``) behind ``rawfin analyze``, ``check``
and ``annotate``.

The lane reads classic pcap and pcapng itself (what only ``rawfin.wire.pcapio`` reads, such
as damage, is read there from the frame the lane reached), decodes Ethernet (with VLAN
tags), Linux cooked and raw IP + TCP itself (everything else through ``rawfin.wire.decode``),
and follows connections that open with a SYN or are picked up mid-stream, exchange data
and close by FINs or RST. Whatever else happens on a connection is handed, with the
connection's history, to the Python observer, which is the reference: the output is the
same byte for byte (``tests/test_engine.py`` runs both on every capture it has).
"""

from __future__ import annotations

import functools
import ipaddress
import json
import os
import queue
import stat
import struct
import sys
import threading
from typing import Callable, Iterator

from rawfin.core.units import SEC
from rawfin.core.errors import CaptureError
from rawfin.core.events import Anomaly, ConnectionEnd, Transition
from rawfin.core.observer import Observer
from rawfin.core.segment import DESCRIBE_FLAGS, DESCRIBE_NO_FLAGS, DESCRIBE_NUMBERS, Segment
from rawfin.core.states import Input, State

STALE = ""  # why a lane that was built does not fit this Python (rawfin.wire.native)
try:  # the extension is optional: no compiler, no lane (rawfin then runs the reference)
    from rawfin.capture import _engine
except ImportError as exc:  # pragma: no cover - depends on the build
    _engine = None
    WHY_NOT = f"rawfin.capture._engine is not built ({exc}); reinstall rawfin with a C compiler to get it"
else:
    from rawfin.wire import native

    WHY_NOT = STALE = native.stale(_engine, native.LANE)
    if STALE:               # a lane that no longer fits this Python: the reference runs instead (choose() says so)
        _engine = None


def available() -> bool:
    return _engine is not None


#: Memory under pressure: a connection whose whole history is one SYN is kept in about 200 bytes
#: instead of 1 KB ("compact", lane/loop.c) once this many newer connections have been born and
#: nothing has answered it yet -- a SYN flood then holds at most this many full entries beside its
#: compact ones (about 250 KB), while an ordinary capture, whose SYNs are answered within a round trip,
#: never pays for compacting and replaying them. 0: every SYN alone at once (the test trigger of that
#: path: tests/test_engine.py, tests/test_limits.py). Without --max-connections only (with it the
#: bound is the limit itself).
COMPACT_AFTER = 256


@functools.lru_cache(maxsize=1)
def _table_loaded() -> bool:
    from rawfin.core.states import TRANSITIONS
    _engine.set_table([(st.name, inp.name, rule.to.name) for (st, inp), rule in TRANSITIONS.items()])
    return True


_LOADED: list = []


def _rules_loaded() -> None:
    """The rules in force (rawfin.core.machine.active()) handed to the lane, once per set of rules."""
    from rawfin.core import machine

    compiled = machine.active()
    if _LOADED and _LOADED[0] is compiled:
        return
    _engine.set_rules(lane_rules(compiled, _engine.vocabulary()))
    _LOADED[:] = [compiled]


def lane_rules(compiled, vocab: dict) -> dict:
    """rawfin.core.machine's IR as the integers the lane reads (``set_rules``), by the names the lane
    says it implements (``vocabulary()``); a name it does not know becomes -1, and a row that needs
    it hands its connection to the Python observer when it is reached."""
    from rawfin.core import machine as M

    index = {kind: {name: i for i, name in enumerate(names)} for kind, names in vocab.items()}

    def idx(kind: str, name) -> int:
        return index[kind].get(name, -1)

    values: dict[tuple, int] = {}
    templates: dict[tuple, int] = {}
    kinds: dict[str, int] = {}

    def val(v: tuple) -> int:
        who, name, off = v
        enc = (idx("who", who), len(vocab["values"]) if who == "lit" else idx("values", name), off)
        return values.setdefault(enc, len(values))

    def tpl(t: tuple) -> int:
        enc = tuple(p if isinstance(p, str) else (val(p), M.value_label(p)) for p in t)
        return templates.setdefault(enc, len(templates))

    def kind(k: str) -> int:
        return kinds.setdefault(k, len(kinds))

    def who(w: str) -> int:
        return idx("who", w)

    def pred(p: tuple) -> tuple:
        name, neg, args = p
        code = idx("preds", name)
        a: list = []
        if name == "flag" or name in ("some", "all", "reached"):
            a = [args[0]]
        elif name == "cmp":
            op, va, vb = args
            seqs = M.cmp_is_seq(va, vb)
            a = [idx("ops", op), val(va), val(vb), int(seqs)]
        elif name == "isset":
            a = [val(args[0])]
        elif name == "state":
            a = [who(args[0]), args[1]]
        elif name == "config":
            a = [idx("config", args[0])]
        elif name == "passive" or name == "crossed":
            a = [who(args[0])]
        elif name == "mark":
            a = [M.mark_bit(args[0])]
        elif name == "conn":
            a = [idx("conn", args[0])]
        elif name == "role":
            a = [who(args[0]), idx("roles", args[1])]
        elif name == "took":
            a = [args[0], args[1]]
        elif name == "timer":
            a = [idx("timers", args[0])]
        elif name == "held":
            k, side = args[0].split(":")
            a = [0 if k == "held" else 1, who(side)]
        elif name == "held_flag":
            a = [who(args[0]), args[1]]
        elif name == "waiting":
            a = [M.WAITING.index(args[0]), who(args[1]), *args[2:]]
        if -1 in a[:1] and name not in ("flag", "some", "all", "reached", "took", "mark"):
            code = -1
        return (code, int(neg), *(a + [0, 0, 0, 0])[:4])

    def act(x: tuple) -> tuple:
        name, args = x
        code = idx("acts", name)
        a: list = []
        if name == "move":
            a = [args[0], tpl(args[1])]
        elif name in ("anomaly",):
            a = [who(args[0]), kind(args[1]), tpl(args[2])]
        elif name == "candidate":
            a = [kind(args[0]), tpl(args[1])]
        elif name == "set":
            a = [val(args[0]), val(args[1])]
        elif name == "mark":
            a = [M.mark_bit(args[0])]
        elif name == "flag":
            a = [idx("conn", args[0])]
        elif name == "deliver_held":
            a = [idx("held_kinds", args[0])]
        elif name in ("server", "know", "unhold", "flush", "cross", "unhold_final", "deliver_final", "hold_final",
                      "hold", "wait_behind", "hold_rst", "deliver_rst", "hold_ahead", "flush_filled", "note_resent", "note_freed", "note_prompt", "note_answer",
                      "drop_resent"):
            a = [who(args[0])]
        elif name == "infer":         # up to two states the other reading enters, and when (a template)
            states, when = args
            a = [idx("states", states[0]), idx("states", states[1]) if len(states) > 1 else -1, tpl(when)]
            if len(states) > 2:
                code = -1
        elif name == "evidence":
            a = [int(args[0] == "down"), who(args[1])]
        return (code, *(a + [0, 0, 0])[:3])

    def program(pg: tuple) -> list:
        return [[([pred(p) for p in preds], [act(x) for x in acts]) for preds, acts in step] for step in pg]

    def cond(c: tuple) -> list:
        return [pred(p) for p in c]

    programs = [program(p) for p in compiled.receive] + [program(p) for p in compiled.observe_send] + [
        program(compiled.timers), program(compiled.birth), program(compiled.segment), program(compiled.flush),
        program(compiled.flush_at_end), program(compiled.end), program(compiled.rst_held)]
    spec = {
        "programs": programs,
        "close_kinds": [(k, cond(c), k in compiled.time_wait_closes, k in compiled.reset_closes)
                        for k, c in compiled.close_kinds],
        "time_wait_held": cond(compiled.time_wait_held),
        "settled": cond(compiled.settled),
        "new_syn": [(yes, cond(c)) for yes, c in compiled.new_syn],
        "fast_path": cond(compiled.fast_path),
        "timer_order": [idx("timer_order", t) for t in compiled.timer_order],
        "final_ack_hold_ns": compiled.final_ack_hold_ns,
        "id_skips_max": compiled.id_skips_max,
        "half_open": [(cond(c), idx("half_open_clocks", clock), idx("half_open_timeouts", which))
                      for c, clock, which in compiled.half_open],
    }
    limits = {"syn": compiled.syn_timeout_ns, "syn_ack": compiled.syn_ack_timeout_ns}
    spec["timeouts"] = [limits[t] for t in vocab["half_open_timeouts"]]
    spec["values"] = [v for v, _ in sorted(values.items(), key=lambda kv: kv[1])]
    spec["templates"] = [list(t) for t, _ in sorted(templates.items(), key=lambda kv: kv[1])]
    spec["kinds"] = [k for k, _ in sorted(kinds.items(), key=lambda kv: kv[1])]
    spec["describe"] = {"flags": [list(f) for f in DESCRIBE_FLAGS], "none": DESCRIBE_NO_FLAGS,
                        "numbers": [(idx("values", name), need, int(nonzero), name)
                                    for name, need, nonzero in DESCRIBE_NUMBERS]}
    return spec


@functools.lru_cache(maxsize=4096)
def _fmt6(raw: bytes) -> str:
    return str(ipaddress.IPv6Address(raw))


def state_names() -> tuple[str, ...]:
    """The lane's state codes (a move's ``from`` and ``to``, see :func:`run`): the name of each."""
    return _engine.names()[0]


def run(path: str, write: Callable[[bytes], object], *, json_of: Callable | None = None, msl_s: float = 30.0,
        label: str | None = None, progress=None, stats=None, counters: dict | None = None, fileobj=None, bpf=None,
        on_first: Callable[[int], object] | None = None, emit: Callable[[list], object] | None = None,
        limits: dict | None = None, relative_seq: bool = False, moves: bool = False) -> bool:
    """Write every record of one capture as JSON lines through ``write`` (bytes). ``json_of(event)``:
    the JSON line (no newline) of an event the Python observer gives (rawfin.render.records.json_line:
    the record format is the output layer's). ``limits``: as rawfin.capture.analysis.records takes them.

    As ``rawfin.analysis.records`` gives them, serialized by the jsonl sink; raises
    CaptureError after the good part on damage. ``progress(pos, frames)`` is called now
    and then; ``stats`` (a CaptureStats) is filled in, and ``counters`` with the lane's own
    (``python_calls``: how many times a connection's event went to the Python observer; ``compacted``: how
    many connections a SYN alone made were made compact, see COMPACT_AFTER). False (nothing written) when the
    capture is one the lane cannot take: not a regular file (a pipe is read once), or
    timestamps outside 0..2**62 ns (a pcapng can say anything there); the caller then runs
    the reference.

    ``fileobj``: the capture is a stream (standard input, a gzip-compressed file): rawfin.wire.pcapio
    reads it and the lane takes each frame (``feed_frame``), once; ``on_first(time_ns)`` is called
    with its first frame's time before anything of it is written. ``bpf``: a
    :class:`rawfin.wire.bpf.Filter` the lane runs on every frame (libpcap's ``bpf_filter``).

    ``emit``: instead of JSON lines, the records as they are made, in lists (:func:`events` turns
    them into the core's typed events); ``write`` and ``json_of`` are then not used. ``moves`` (with
    ``emit``): what a consumer of state changes alone needs (the pile-up view), cheaply -- each
    transition of a connection the lane follows as a move ``(conn, time_ns, side, from, to, names)``:
    ``side`` 0 or 1, ``from``/``to`` state codes (:func:`state_names`), ``names`` the two sides' endpoint
    names ``(side 0, side 1)`` with the connection's first move and None after it; no anomaly; the
    rest (connection ends, and the events of connections the Python observer follows) as in :func:`events`,
    for :func:`event_of`.
    """
    if emit is None and json_of is None:
        raise TypeError("run() needs json_of (the output layer's JSON line of an event), or emit")
    from rawfin.wire.decode import decode, make_segment
    from rawfin.wire.pcapio import _MAX_BLOCK, caplen_limit, open_capture

    if fileobj is None:
        try:
            if not stat.S_ISREG(os.stat(path).st_mode):
                return False        # a pipe or a device can be read once only: the reference's
        except OSError:
            pass                    # open_capture says what is wrong with it
    _table_loaded()
    _rules_loaded()
    msl_ns = int(msl_s * SEC)
    limits = dict(limits or {})
    # the lane decides evictions (it asks the Python observer about the connections it holds)
    obs = Observer(msl_ns=msl_ns, relative_seq=relative_seq,
                   **{k: v for k, v in limits.items() if k != "max_connections"})
    suffix = "" if label is None else ',"file":' + json.dumps(label, ensure_ascii=False)
    hb = Handback(obs, decode)
    eng = _engine.Engine(**hb.callables(), dumps=json_of or _no_json, write=write, fmt6=_fmt6,
                         make_segment=make_segment, msl_ns=msl_ns, hold_ns=obs.hold_ns, file_suffix=suffix,
                         msl_text=f"{2 * msl_ns / SEC:g}", emit=emit, syn_timeout_ns=obs.limits["syn"],
                         syn_ack_timeout_ns=obs.limits["syn_ack"], max_connections=limits.get("max_connections") or 0,
                         relative_seq=relative_seq, compact_after=COMPACT_AFTER, moves=moves)
    obs.trips.pull = eng.take_trips     # the round trips the lane counted, taken in before a reading
    reader = open_capture(path, fileobj)
    if bpf is not None:
        eng.set_filter(*bpf.for_byte_order(reader.byte_order == "big").lane_args())
    error: CaptureError | None = None
    try:
        iface = reader.interfaces[0] if reader.interfaces else None
        lane_frames = 0         # frames the lane has read itself, when rawfin.wire.pcapio must go on
        if fileobj is not None and reader.format == "pcap" and not reader.modified and iface is not None:
            # a classic pcap stream (`tcpdump -w -`, a .pcap.gz): the lane reads its records from the stream
            stream = _StreamReader(fileobj, on_first)
            big = reader.byte_order == "big"
            head = stream.first(reader.detach(), big, reader.nanosecond)
            bad = eng.run_pcap("", 0, big, reader.nanosecond, iface.linktype, caplen_limit(iface.snaplen), progress,
                               stream, head)
            error = stream.error or (CaptureError(path, bad[0], frame=bad[1]) if bad is not None else None)
            if stream.error is not None and bad is not None:
                error = CaptureError(path, stream.error.message, frame=bad[1])
            status = 0
        elif fileobj is not None:
            status = 2
        elif reader.format == "pcap" and not reader.modified and iface is not None:
            bad = eng.run_pcap(path, 24, reader.byte_order == "big", reader.nanosecond,
                               iface.linktype, caplen_limit(iface.snaplen), progress)
            if bad is not None:
                error = CaptureError(path, bad[0], frame=bad[1])
            status = 0
        elif reader.format == "pcapng":
            # a dry walk first: every time must fit in 64-bit nanoseconds before anything is written
            status, _ = eng.run_pcapng(path, True, _idb, _MAX_BLOCK, None)
            if status == 1:
                return False
            if status == 0:
                status, lane_frames = eng.run_pcapng(path, False, _idb, _MAX_BLOCK, progress)
        else:
            status = 2
        if status == 2:
            # what only rawfin.wire.pcapio reads (damage, old block types, odd clocks): frame by frame
            if fileobj is None and lane_frames == 0 and not _fits(path):
                return False
            feed = eng.feed_frame
            try:
                for fr in reader:
                    if fr.frame <= lane_frames:
                        continue
                    if fileobj is not None and not 0 <= fr.time_ns < _TIME_LIMIT:
                        raise CaptureError(path, "a time stamp beyond what the compiled lane keeps (before 1970 or "
                                                 "after 2116): read it with --engine python", frame=fr.frame)
                    if on_first is not None:
                        on_first(fr.time_ns)
                        on_first = None
                    feed(fr.linktype, fr.data, fr.orig_len, fr.frame, fr.time_ns)
                    if progress is not None and not fr.frame & 0x3FFF:
                        progress(reader.tell(), fr.frame)
            except CaptureError as e:
                error = e
    finally:
        reader.close()
    eng.finish()
    st = eng.stats()
    if counters is not None:
        counters.update(st)
    if stats is not None:
        stats.frames = st["frames"]
        stats.filtered = st["filtered"]
        stats.tcp = st["tcp"]
        if st["first_time_ns"] is not None:
            stats.first_time = st["first_time_ns"] / 1e9
        stats.connections = st["connections"] + obs.connections_done
        stats.by_close.update(st["by_close"])
        stats.by_close.update(obs.by_close)
        stats.server_active_closes = st["server_active_closes"] + obs.server_active_closes
        for k, v in obs.stats.items():
            stats.skipped[k] += v
        stats.error = error
    if error is not None:
        raise error
    return True


class _StreamReader:
    """``read(n)`` for the lane reading a stream: a damaged stream (a gzip error) ends it, its
    error kept for the caller."""

    def __init__(self, fileobj, on_first) -> None:
        self.f = fileobj
        self.on_first = on_first
        self.error: CaptureError | None = None

    def first(self, head: bytes, big: bool, nano: bool) -> bytes:
        """``head`` (what was read past the file header), read on until the first record's time
        is there, which goes to ``on_first``."""
        if self.on_first is not None:
            while len(head) < 16:
                more = self(65536)
                if not more:
                    break
                head += more
            if len(head) >= 16:
                sec, frac = struct.unpack_from(">II" if big else "<II", head)
                self.on_first(sec * SEC + frac * (1 if nano else 1000))
        return head

    def __call__(self, n: int) -> bytes:
        try:
            return self.f.read(n)
        except CaptureError as e:
            self.error = e
            return b""


class Handback:
    """The Python side of the hand-off between the compiled lane and the Python observer: what the lane
    calls (handed to it as these callables at start) and what comes back, always plain data. The lane
    reads nothing else of Python's.

    The lane hands over a segment on a pair the Python observer owns (``feed``), a connection whose
    next row needs a primitive only Python has, with everything it saw of it (``take``, then ``fire``
    for the timer that found it out), a frame it cannot decode (``decode``), and the end (``end_*``).
    Every answer that can change the Python observer's timers also says which is first now (``timer``:
    ``(deadline, connection id)`` or None), so the lane merges both heaps in the reference's order
    without reading Python's. Connection numbers are shared: ``feed`` takes the lane's next one and
    gives back Python's. Records come back as the reference's own (``records``: dicts the lane writes
    with the reference serializer); connections handed over come back as opaque handles.
    """

    def __init__(self, obs: Observer, decode: Callable) -> None:
        self.obs = obs
        self._decode = decode

    def callables(self) -> dict:
        """What the lane is given at start: these callables, and (``loss_evidence``) which anomaly kinds show
        where segments get lost, as plain ``(kind, after the capture point?, the reporter's own segment?)``
        (rawfin.core.rules.LOSS_EVIDENCE)."""
        return {"feed": self.feed, "expire_one": self.expire_one, "take": self.take, "fire": self.fire,
                "decode": self.decode, "has_pair": self.has_pair, "key_of": self.key_of, "active": self.active,
                "end_conns": self.end_conns, "end_prepare": self.end_prepare, "end_finish": self.end_finish,
                "end_clear": self.end_clear, "evidence": self.evidence,
                "tracked": self.tracked, "evict": self.evict, "evict_taken": self.evict_taken,
                "reprieve": self.reprieve,
                "loss_evidence": [(kind, where == "down", whose == "local")
                                  for kind, (where, whose) in self.obs.loss_evidence.items()]}

    def evidence(self, notes: list) -> None:
        """What a lane call that stands showed of where segments get lost: ``[(host, after the capture
        point?)]``, counted with the Python observer's own (Observer.evidence, which the loss rows read)."""
        ev = self.obs.evidence
        for host, down in notes:
            ev[host, "down" if down else "up"] += 1

    def timer(self) -> tuple[int, int] | None:
        return self.obs.first_timer()

    def feed(self, seg, next_id: int) -> tuple:
        """A segment of a pair the Python observer owns: (records, its next connection number, timer)."""
        obs = self.obs
        obs.next_id = next_id
        recs = obs.feed(seg)
        return recs, obs.next_id, obs.first_timer()

    def expire_one(self, now: int) -> tuple:
        return self.obs.expire_one(now), self.obs.first_timer()

    def take(self, cid: int, events: list, first: tuple, other: tuple, queued: int, vlan: tuple,
             id_top: tuple = (-1, -1)) -> tuple:
        """A connection the lane followed so far, with its history and its sides' highest IPv4 IDs: (handle, pair
        key, timer)."""
        conn = self.obs.adopt(cid, events, first, other, queued, vlan, id_top)
        return conn, self.obs.key_of_conn(conn), self.obs.first_timer()

    def fire(self, handle, deadline: int, now: int) -> tuple:
        return self.obs.fire_entry(handle, deadline, now), self.obs.first_timer()

    def decode(self, linktype: int, data: bytes, orig_len: int, frame: int, time_ns: int) -> tuple:
        """A frame the lane does not decode: ("skip", records) or ("seg", segment, src, dst, sport, dport,
        seq, ack, flags, window, data_len, vlan, IPv4 ID or -1)."""
        r = self._decode(linktype, data, orig_len, frame, time_ns)
        if r.__class__ is not Segment:
            return "skip", self.obs.note_skip(r.kind, frame, time_ns, r.reason)
        return ("seg", r, r.src, r.dst, r.sport, r.dport, r.seq, r.ack, r.flags, r.window, r.data_len, r.vlan,
                -1 if r.ip_id is None else r.ip_id)

    def has_pair(self, a: str, ap: int, b: str, bp: int) -> bool:
        """Does the Python observer hold a connection of this 4-tuple (VLAN-tagged or not)?"""
        return self.obs.holds_pair((a, ap), (b, bp))

    def key_of(self, seg) -> tuple:
        return self.obs.key_of(seg)

    def active(self, keys: list) -> list[bool]:
        """Which of these pairs the Python observer still follows."""
        return [self.obs.follows(k) for k in keys]

    def end_conns(self) -> list[tuple]:
        return [(c.id, c) for c in self.obs.end_conns()]

    def end_prepare(self, handle, now: int) -> list:
        return self.obs.end_prepare(handle, now)

    def end_finish(self, handle) -> list:
        return self.obs.end_finish(handle)

    def end_clear(self) -> None:
        self.obs.end_clear()

    # --max-connections: the lane decides which connection goes (the least recently active pair)
    def reprieve(self, key) -> None:
        """The expiry a segment of this pair brings does not give up on its connection (None: over)."""
        self.obs.reprieve(key)

    def tracked(self) -> int:
        """How many connections the Python observer follows now."""
        return self.obs.tracked()

    def evict(self, key) -> tuple | None:
        """Write out the connection the Python observer follows on this pair (its key), as it stands:
        (records, timer), or None when it follows none there any more."""
        recs = self.obs.evict(key)
        return None if recs is None else (recs, self.obs.first_timer())

    def evict_taken(self, handle) -> tuple:
        """The same for a connection the lane has just handed over: (records, timer)."""
        return self.obs.evict_conn(handle), self.obs.first_timer()


_TIME_LIMIT = 1 << 62
_I64 = 1 << 63


def _idb(body: bytes, big: bool):
    """A pcapng interface description, for the lane: (linktype, mul, div, offset ns, caplen limit)
    as rawfin.wire.pcapio reads it, or None when its clock does not fit the lane's 64 bits."""
    from rawfin.wire.pcapio import idb_clock, parse_idb

    iface = parse_idb(body, ">" if big else "<")
    mul, div, off, limit = idb_clock(iface)
    if not (-_I64 <= off < _I64 and div < 2 * _I64 and mul < 2 * _I64):
        return None
    return iface.linktype, mul, div, off, limit


def _fits(path: str) -> bool:
    """A classic pcap's times always fit (32-bit seconds); a pcapng's are read through first."""
    from rawfin.wire.pcapio import open_capture

    with open_capture(path) as reader:
        if reader.format == "pcap":
            return True
        try:
            for fr in reader:
                if not 0 <= fr.time_ns < _TIME_LIMIT:
                    return False
        except CaptureError:
            pass            # the real pass meets it again, at the same frame
    return True


def size_of(path: str) -> int | None:
    try:
        return os.path.getsize(path)
    except OSError:
        return None


def first_time(path: str) -> float | None:
    """The capture's first frame time in seconds (what the table's relative times count from)."""
    from rawfin.wire.pcapio import open_capture

    try:
        with open_capture(path) as reader:
            for fr in reader:
                return fr.time_ns / 1e9
    except CaptureError:
        pass
    return None


_DONE = object()


def chunks(path: str, **kw) -> Iterator[bytes]:
    """:func:`run` in a worker thread: its output chunks, here, as they come; returns (as a
    generator does) what :func:`run` returned, and raises what it raised, after the chunks.

    The lane holds the GIL while it works and lets go at each chunk (and while the short
    queue is full), so a consumer that lets go of the GIL while it works (the C writer of
    ``rawfin.render.sinks.FastSink``) runs beside it on another core.
    """
    q: queue.Queue = queue.Queue(maxsize=4)
    if kw.get("emit", 0) is None:           # events(): the lists of records through the same queue
        kw["emit"] = q.put

    def work() -> None:
        try:
            ok = run(path, kw.pop("write", q.put), **kw)
            q.put((_DONE, ok, None))
        except BaseException as exc:  # handed to the reader, raised there
            q.put((_DONE, None, exc))

    worker = threading.Thread(target=work, name="rawfin-lane", daemon=True)
    worker.start()
    while True:
        item = q.get()
        if item.__class__ is tuple and item[0] is _DONE:
            break
        yield item
    worker.join()
    _, ok, exc = item
    if exc is not None:
        raise exc
    return ok


def run_beside(path: str, consume: Callable[[bytes], object], **kw) -> bool:
    """:func:`run`, with ``consume`` taking its output in this thread while the lane goes on
    in another (see :func:`chunks`)."""
    it = chunks(path, **kw)
    while True:
        try:
            chunk = next(it)
        except StopIteration as stop:
            return stop.value
        consume(chunk)


def _no_json(ev) -> str:  # pragma: no cover - events mode never serializes
    raise TypeError("JSON lines asked of the lane in events mode")


_INPUT_OF = tuple(Input)


def event_of(t):
    """A record the lane made (a tuple, see lane/out.c), as the core's typed event; the Python
    observer's own events pass as they are."""
    if t.__class__ is not tuple:
        return t
    kind = t[0]
    if kind == "t":
        _, conn, frame, now, ep, peer, a, b, inp, cause, values, alt, when = t
        if alt is not None:         # the capture cannot decide it: the other reading (rules' "infer")
            return Transition(endpoint=ep, peer=peer, from_=State[a], to=State[b], input=_INPUT_OF[inp], cause=cause,
                              time_ns=now, frame=frame, conn=conn, values=values or (),
                              alternative=tuple(State[st] for st in alt), inferred=when)
        return Transition(endpoint=ep, peer=peer, from_=State[a], to=State[b], input=_INPUT_OF[inp], cause=cause,
                          time_ns=now, frame=frame, conn=conn, values=values or ())
    if kind == "a":
        _, conn, frame, now, ep, akind, detail, values = t
        return Anomaly(endpoint=ep, kind=akind, detail=detail, time_ns=now, frame=frame, conn=conn,
                       values=values or ())
    (_, conn, client, server, guessed, active, passive, reset_by, close, cstate, sstate, first_frame, last_frame,
     first_ns, last_ns, packets, mid, server_active, anomalies, vlan) = t
    return ConnectionEnd(conn=conn, client=client, server=server, server_guessed=guessed, active_closer=active,
                         passive_closer=passive, reset_by=reset_by, close=close, final=((client, cstate), (server, sstate)),
                         first_frame=first_frame, last_frame=last_frame, first_time_ns=first_ns, last_time_ns=last_ns,
                         packets=packets, mid_stream=mid, server_active_close=server_active, anomalies=anomalies,
                         vlan=vlan)


def events(path: str, *, msl_s: float = 30.0, label: str | None = None, progress=None, stats=None, fileobj=None,
           bpf=None, on_first: Callable[[int], object] | None = None, limits: dict | None = None,
           relative_seq: bool = False) -> Iterator:
    """``rawfin.capture.analysis.records`` through the lane: the same typed events, in the same order, as a
    generator (the lane hands them over as it makes them: no text is read back). The lane runs in a
    worker thread (:func:`chunks`); when it declines the capture, the reference gives the events."""
    it = chunks(path, write=_no_write, emit=None, msl_s=msl_s, label=label, progress=progress, stats=stats,
                fileobj=fileobj, bpf=bpf, on_first=on_first, limits=limits, relative_seq=relative_seq)
    while True:
        try:
            batch = next(it)
        except StopIteration as stop:
            ok = stop.value
            break
        for t in batch:
            yield event_of(t)
    if not ok:
        from rawfin.capture.analysis import records as reference

        yield from reference(path, msl_s=msl_s, label=label, stats=stats, bpf=bpf, limits=limits,
                             relative_seq=relative_seq)


def _no_write(data: bytes) -> None:  # pragma: no cover - events mode writes nothing
    raise TypeError("bytes from the lane in events mode")


def records(path: str, *, record: Callable, json_of: Callable | None = None, msl_s: float = 30.0,
            label: str | None = None, progress=None, stats=None, fileobj=None, bpf=None,
            limits: dict | None = None, relative_seq: bool = False) -> Iterator[dict]:
    """``rawfin.capture.analysis.records(..., record=record)`` through the lane: ``record(event, label)`` of
    each of :func:`events` (for ``check`` and ``annotate``, which pull their records)."""
    for ev in events(path, msl_s=msl_s, label=label, progress=progress, stats=stats, fileobj=fileobj, bpf=bpf,
                     limits=limits, relative_seq=relative_seq):
        yield record(ev, label)


def choose(choice: str) -> bool:
    """``--engine``: True for the lane (auto: when it is built); a usage error for c without it."""
    from rawfin.core.errors import UsageError

    if choice == "python":
        return False
    if choice == "c" and not available():
        raise UsageError(f"--engine c: {WHY_NOT}")
    if STALE and not _warned:
        _warned.append(1)
        sys.stderr.write(f"rawfin: {WHY_NOT}; the Python engine runs instead (same output, slower)\n")
    return available()


_warned: list = []      # (the stale-build note, once a process)


class Stream:
    """The lane for frames that arrive over time (``rawfin live``): frames go in with
    :meth:`feed`, JSON lines come out through ``write`` (bytes) as they happen.

    :meth:`tick` lets capture time pass with no frame (TIME_WAIT's 2MSL ends on time);
    :meth:`flush` writes out what is held (a live capture calls it after each batch);
    :meth:`finish` ends the capture. ``hold_ns`` is the final-ACK hold (0, as ``live``
    wants: each transition the moment it happens). Without the lane (no C compiler),
    the Python observer does it all, with the same records in the same order.
    """

    def __init__(self, write: Callable[[bytes], object], *, json_of: Callable, msl_ns: int = 30 * SEC,
                 hold_ns: int = 0, label: str | None = None, lane: bool | None = None,
                 limits: dict | None = None, relative_seq: bool = False) -> None:
        self.write = write
        self.json_of = json_of
        limits = dict(limits or {})
        self.lane = available() if lane is None else lane
        # with the lane, the lane decides evictions (as in run); alone, the observer does
        self.obs = Observer(msl_ns=msl_ns, final_ack_hold_ns=hold_ns, relative_seq=relative_seq,
                            **{k: v for k, v in limits.items() if k != "max_connections" or not self.lane})
        self.frames = self.tcp = 0
        if self.lane:
            _table_loaded()
            _rules_loaded()
            from rawfin.wire.decode import decode, make_segment

            suffix = "" if label is None else ',"file":' + json.dumps(label, ensure_ascii=False)
            self.eng = _engine.Engine(**Handback(self.obs, decode).callables(), dumps=json_of, write=write,
                                      fmt6=_fmt6, make_segment=make_segment, msl_ns=msl_ns, hold_ns=hold_ns,
                                      file_suffix=suffix, msl_text=f"{2 * msl_ns / SEC:g}",
                                      syn_timeout_ns=self.obs.limits["syn"],
                                      syn_ack_timeout_ns=self.obs.limits["syn_ack"],
                                      max_connections=limits.get("max_connections") or 0,
                                      relative_seq=relative_seq, compact_after=COMPACT_AFTER)
            self.feed = self.eng.feed_frame
            self.tick = self.eng.tick
            self.flush = self.eng.flush
        else:
            from rawfin.wire.decode import decode

            self.eng = None
            self._decode = decode
            self._held: list[str] = []

    # -- the reference's side (no lane)
    def feed(self, linktype: int, data, orig_len: int, frame: int, time_ns: int) -> None:  # type: ignore[no-redef]
        from rawfin.core.segment import Segment

        self.frames += 1
        r = self._decode(linktype, bytes(data), orig_len, frame, time_ns)
        if r.__class__ is Segment:
            self.tcp += 1
            self._take(self.obs.feed(r))
        else:
            self._take(self.obs.note_skip(r.kind, frame, time_ns, r.reason))

    def tick(self, now_ns: int) -> None:  # type: ignore[no-redef]
        self._take(self.obs.tick(now_ns))
        self.flush()

    def flush(self) -> None:  # type: ignore[no-redef]
        if self._held:
            data, self._held = "".join(self._held).encode(), []
            self.write(data)

    def _take(self, events: list) -> None:
        for ev in events:
            self._held.append(self.json_of(ev) + "\n")

    # -- both
    def finish(self) -> dict:
        """The end of the capture: every connection left is reported; returns the counts
        (frames, tcp, connections, by_close, server_active_closes)."""
        if self.eng is not None:
            self.eng.finish()
            st = self.eng.stats()
            frames, tcp, done = st["frames"], st["tcp"], st["connections"]
            by_close = dict(st["by_close"])
            server_active = st["server_active_closes"]
        else:
            self._take(self.obs.finish())
            self.flush()
            frames, tcp, done, by_close, server_active = self.frames, self.tcp, 0, {}, 0
        for k, v in self.obs.by_close.items():
            by_close[k] = by_close.get(k, 0) + v
        return {"frames": frames, "tcp": tcp, "connections": done + self.obs.connections_done, "by_close": by_close,
                "server_active_closes": server_active + self.obs.server_active_closes}
