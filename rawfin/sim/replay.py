"""Replay one side of a captured connection against a live peer: the sans-IO core.

``rawfin replay CAPTURE --as client`` plays the capture's client from the
recording (the same flags, payload lengths and order, the recorded gaps) while
the server is live: the emulator's endpoint or a real kernel socket. This
module decides, with no clock and no socket of its own:

- what the capture says (:func:`recording`): connection N's frames, each side's
  initial sequence number, which segments the capture implies were lost, and
  the application calls the recorded other side made (connect, send N bytes,
  shutdown or close at its FIN, abort at its RST);
- what to do next (:class:`Replayer`): when rawfin sends the next recorded
  segment, when the live side's application makes its next call, which live
  segment stands for which capture frame; recorded sequence and
  acknowledgment numbers are mapped onto the live numbering (the live side
  picks its own ISN) modulo 2**32;
- where the live run parted from the recording (:func:`divergences`), in plain
  words naming the capture frame;
- the connection as a scenario file (:func:`scenario_toml`).

The drivers (emulator, kernel over TUN) are in :mod:`rawfin.linux.replayrun`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from rawfin.core import seq as sq
from rawfin.core.units import MS, SEC
from rawfin.core.errors import EXIT_DATAERR, RawfinError
from rawfin.core.segment import Flags, Segment, flags_text, fmt_endpoint, parse_endpoint
from rawfin.core.states import State
from rawfin.sim.host import SIDES, other, payload
from rawfin.sim.tomlio import basic_string as toml_string

_SIGNIFICANT = int(Flags.SYN | Flags.FIN | Flags.RST | Flags.ACK)
DEFAULT_WAIT_NS = 3 * SEC      # how long a live segment the capture shows is waited for, past its time


class ReplayError(RawfinError):
    """A capture (or connection in it) that cannot be replayed: exit 65."""

    exit_code = EXIT_DATAERR


# -- what the capture says ---------------------------------------------------------------

@dataclass(frozen=True, slots=True, kw_only=True)
class Frame:
    """One segment of the recorded connection, as the replay uses it."""

    index: int                  # position in the replay script, from 0
    frame: int | None           # capture frame number; None for a handshake made up for --mid-stream
    time_ns: int
    sender: str                 # "client" / "server"
    seg: Segment
    rel_seq: int
    rel_ack: int | None
    retransmission: bool = False
    relative: bool = False      # described with relative numbers (--seq relative), else the wire's
    lost: bool = False          # the capture implies it never reached the other side
    lost_why: str = ""
    call: str | None = None     # the application call behind it: connect, send, close, shutdown, abort

    @property
    def label(self) -> str:
        return f"frame {self.frame}" if self.frame is not None else "(made-up handshake)"

    def describe(self) -> str:
        if not self.relative:
            return describe(self.seg.flags, self.seg.seq, self.seg.ack if self.seg.has_ack else None,
                            self.seg.data_len)
        return describe(self.seg.flags, self.rel_seq, self.rel_ack, self.seg.data_len)


def describe(flags: int, rel_seq: int, rel_ack: int | None, data_len: int) -> str:
    parts = [flags_text(flags & ~int(Flags.PSH) or flags), f"seq={rel_seq}"]
    if rel_ack is not None:
        parts.append(f"ack={rel_ack}")
    if data_len:
        parts.append(f"len={data_len}")
    return " ".join(parts)


@dataclass(frozen=True, slots=True, kw_only=True)
class Recording:
    path: str
    conn: int
    client: tuple[str, int]
    server: tuple[str, int]
    frames: tuple[Frame, ...]
    isn: dict                   # side -> the ISN relative numbers count from
    transitions: tuple[dict, ...]   # the analysis' transition records of this connection
    mid_stream: bool = False
    relative: bool = False      # texts show numbers relative to each side's ISN (--seq relative)

    def endpoint(self, side: str) -> tuple[str, int]:
        return self.client if side == "client" else self.server

    def name(self, side: str) -> str:
        return fmt_endpoint(*self.endpoint(side))

    def side_of(self, endpoint: str) -> str | None:
        return "client" if endpoint == self.name("client") else "server" if endpoint == self.name("server") \
            else None

    def path_of(self, side: str) -> list[tuple[State, State, int | None, str]]:
        """(from, to, frame, cause) of every recorded transition of one side."""
        name = self.name(side)
        return [(State(r["from"]), State(r["to"]), r["frame"], r["cause"]) for r in self.transitions
                if r["endpoint"] == name]

    def initial(self, side: str) -> State:
        if self.mid_stream:
            return State.ESTABLISHED
        return State.CLOSED if side == "client" else State.LISTEN

    def states_after(self, frame: int | None) -> dict[str, State]:
        """Each side's recorded state once ``frame`` has been seen (None: before the first)."""
        out = {s: self.initial(s) for s in SIDES}
        if frame is None:
            return out
        for r in self.transitions:
            if r["frame"] is not None and r["frame"] <= frame:
                side = self.side_of(r["endpoint"])
                if side:
                    out[side] = State(r["to"])
        return out


def _endpoint(text: str) -> tuple[str, int]:
    return parse_endpoint(text)


def recording(path: str, segments: list[Segment], records: list[dict], conn: int, *,
              mid_stream: bool = False, relative_seq: bool = False) -> Recording:
    """Connection ``conn`` of a capture, from its TCP segments and ``rawfin analyze``'s records.

    Raises :class:`ReplayError` when there is no such connection, or it has no
    handshake in the capture and ``mid_stream`` is not given.
    """
    conns = [r for r in records if r["type"] == "connection"]
    if not segments:
        raise ReplayError(f"{path}: no TCP segments in the capture: nothing to replay")
    mine = next((r for r in conns if r["conn"] == conn), None)
    if mine is None:
        have = f"connections 0..{len(conns) - 1}" if conns else "no connections"
        raise ReplayError(f"{path}: no connection {conn} (the capture has {have})")
    pair = {mine["client"], mine["server"]}
    same = sorted((r for r in conns if {r["client"], r["server"]} == pair), key=lambda r: r["first_frame"])
    later = [r["first_frame"] for r in same if r["first_frame"] > mine["first_frame"]]
    end = min(later) if later else None
    segs = [s for s in segments if {s.src_ep, s.dst_ep} == pair and s.frame is not None
            and s.frame >= mine["first_frame"] and (end is None or s.frame < end)]
    client, server = _endpoint(mine["client"]), _endpoint(mine["server"])
    cname = mine["client"]
    side = {True: "client", False: "server"}
    syn = next((s for s in segs if s.syn and not s.has_ack and s.src_ep == cname), None)
    synack = next((s for s in segs if s.syn and s.has_ack and s.src_ep != cname), None)
    if syn is None or mine.get("mid_stream"):
        if not mid_stream:
            raise ReplayError(f"{path}: connection {conn} has no handshake in the capture (it starts at frame "
                              f"{mine['first_frame']}, mid-stream); give --mid-stream to replay it from its "
                              f"first segment after a handshake rawfin makes up")
        segs = [s for s in segs if not s.syn]
        if not segs:
            raise ReplayError(f"{path}: connection {conn} has nothing but SYNs: nothing to replay")
        isn = {}
        for sd in SIDES:
            name = cname if sd == "client" else mine["server"]
            first = next((s.seq for s in segs if s.src_ep == name), None)
            if first is None:
                first = next((s.ack for s in segs if s.src_ep != name and s.has_ack), None)
            if first is None:
                raise ReplayError(f"{path}: connection {conn}: the {sd}'s sequence numbers cannot be told "
                                  f"(it sends nothing and nothing it sent is acknowledged)")
            isn[sd] = sq.add(first, -1)
        made_up = True
    else:
        isn = {"client": syn.seq, "server": synack.seq if synack is not None else None}
        if isn["server"] is None:
            a = next((s.ack for s in segs if s.src_ep == cname and s.has_ack and not s.syn), None)
            isn["server"] = sq.add(a, -1) if a is not None else 0
        made_up = False

    mine_frames = {s.frame for s in segs}
    # a transition another connection's segment caused (TIME_WAIT giving way to a new SYN) is not this one's
    trans = tuple(r for r in records if r["type"] == "transition" and r["conn"] == conn
                  and (r["frame"] is None or r["frame"] in mine_frames))
    frames: list[Frame] = []
    if made_up:
        t0 = segs[0].time_ns or 0
        c, s = isn["client"], isn["server"]
        hs = [("client", Segment(src=client[0], dst=server[0], sport=client[1], dport=server[1], seq=c,
                                 flags=Flags.SYN)),
              ("server", Segment(src=server[0], dst=client[0], sport=server[1], dport=client[1], seq=s,
                                 ack=sq.add(c, 1), flags=Flags.SYN | Flags.ACK)),
              ("client", Segment(src=client[0], dst=server[0], sport=client[1], dport=server[1],
                                 seq=sq.add(c, 1), ack=sq.add(s, 1), flags=Flags.ACK))]
        for sd, seg in hs:
            frames.append(_frame(len(frames), None, t0, sd, seg.with_(time_ns=t0), isn))
    for s in segs:
        frames.append(_frame(len(frames), s.frame, s.time_ns or 0, side[s.src_ep == cname], s, isn))
    frames = _mark_retransmissions(frames)
    frames = _mark_losses(frames)
    frames = _mark_calls(frames, trans, cname, mine["server"])
    if relative_seq:
        frames = [replace(f, relative=True) for f in frames]
    return Recording(path=path, conn=conn, client=client, server=server, frames=tuple(frames), isn=isn,
                     transitions=trans, mid_stream=made_up, relative=relative_seq)


def _frame(i: int, frame: int | None, t: int, sender: str, seg: Segment, isn: dict) -> Frame:
    rel_seq = sq.sub(seg.seq, isn[sender]) & sq.MASK
    rel_ack = (sq.sub(seg.ack, isn[other(sender)]) & sq.MASK) if seg.has_ack else None
    return Frame(index=i, frame=frame, time_ns=t, sender=sender, seg=seg, rel_seq=rel_seq, rel_ack=rel_ack)


def _replace(f: Frame, **kw) -> Frame:
    d = {k: getattr(f, k) for k in Frame.__slots__}
    d.update(kw)
    return Frame(**d)


def _mark_retransmissions(frames: list[Frame]) -> list[Frame]:
    high: dict[str, int | None] = {s: None for s in SIDES}
    out = []
    for f in frames:
        seg = f.seg
        rt = False
        if seg.seg_len and not seg.rst:
            h = high[f.sender]
            rt = h is not None and sq.le(seg.seq_end, h)
            if h is None or sq.gt(seg.seq_end, h):
                high[f.sender] = seg.seq_end
        out.append(_replace(f, retransmission=rt) if rt else f)
    return out


def _mark_losses(frames: list[Frame]) -> list[Frame]:
    """The segments the capture implies never arrived.

    - a segment with data (or SYN/FIN) its sender sent again, when nothing the
      other side sent in between acknowledged it;
    - a pure ACK, when the other side later sent again what that ACK covered
      (it never saw it), unless the capture proves the other side had that
      acknowledgment anyway (a later segment of the ACK's sender, carrying an
      ACK as high and acknowledged itself, came in between).
    """
    lost: dict[int, str] = {}
    n = len(frames)
    for i, f in enumerate(frames):
        seg = f.seg
        if seg.seg_len and not seg.rst:
            for j in range(i + 1, n):
                g = frames[j]
                if g.sender != f.sender and g.seg.has_ack and sq.ge(g.seg.ack, seg.seq_end):
                    break
                if g.sender == f.sender and g.retransmission and g.seg.seq == seg.seq:
                    lost[i] = (f"its sender sent it again in {g.label} and nothing the other side sent "
                               f"before that acknowledged it")
                    break
    for j, g in enumerate(frames):
        if not g.retransmission:
            continue
        e = g.seg.seq_end
        first = next((k for k in range(j) if frames[k].sender == g.sender and frames[k].seg.seq == g.seg.seq
                      and frames[k].seg.seg_len), 0)
        for i in range(first + 1, j):
            a = frames[i]
            s = a.seg
            if a.sender == g.sender or s.seg_len or s.rst or not s.has_ack or not sq.ge(s.ack, e):
                continue
            if i in lost:
                continue
            proven = False
            for m in range(i + 1, j):
                b = frames[m]
                if b.sender == a.sender and b.seg.seg_len and b.seg.has_ack and sq.ge(b.seg.ack, e):
                    if any(frames[q].sender == g.sender and frames[q].seg.has_ack
                           and sq.ge(frames[q].seg.ack, b.seg.seq_end) for q in range(m + 1, j)):
                        proven = True
                        break
            if not proven:
                lost[i] = (f"the {g.sender} sent again in {g.label} what this ACK acknowledged: "
                           f"it never saw it")
    return [_replace(f, lost=True, lost_why=lost[f.index]) if f.index in lost else f for f in frames]


def _mark_calls(frames: list[Frame], trans: tuple[dict, ...], client: str, server: str) -> list[Frame]:
    """The application call behind each frame a side sent of its own accord."""
    out = []
    fin_seen = {s: False for s in SIDES}
    aborts = {(r["endpoint"], r["frame"]) for r in trans if r["cause"].startswith("snd RST")}
    for f in frames:
        seg = f.seg
        call = None
        me = client if f.sender == "client" else server
        if seg.syn and not seg.has_ack and f.sender == "client" and not f.retransmission:
            call = "connect"
        elif seg.rst:
            if (me, f.frame) in aborts:
                call = "abort"
        elif seg.fin and not fin_seen[f.sender] and not f.retransmission:
            fin_seen[f.sender] = True
            more = any(g.index > f.index and g.sender != f.sender and g.seg.data_len and not g.retransmission
                       for g in frames)
            call = "shutdown" if more else "close"
        elif seg.data_len and not f.retransmission and not seg.syn:
            call = "send"
        out.append(_replace(f, call=call) if call else f)
    return out


# -- the replay ---------------------------------------------------------------------------

@dataclass(frozen=True, slots=True, kw_only=True)
class Send:
    """rawfin sends the recorded side's next segment (``lost``: it is logged, not delivered)."""

    seg: Segment
    frame: Frame
    lost: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class Call:
    """The live side's application makes a call: listen, connect, send (``nbytes``), close,
    shutdown, abort. ``data`` is what close() carries on its FIN."""

    call: str
    frame: Frame | None
    nbytes: int = 0


@dataclass(slots=True, kw_only=True)
class Wire:
    """One segment of the live run, as it crossed between rawfin and the live side."""

    time_ns: int
    order: tuple
    sender: str
    seg: Segment
    rel_seq: int | None
    rel_ack: int | None
    frame: Frame | None = None      # the capture frame it replays (rawfin) or stands for (live)
    lost: bool = False              # rawfin dropped it, as the capture implies
    live: bool = False
    relative: bool = False          # described with relative numbers (--seq relative), else the wire's

    def describe(self) -> str:
        if self.rel_seq is None:
            return self.seg.describe()
        if not self.relative:
            return describe(self.seg.flags, self.seg.seq, self.seg.ack if self.seg.has_ack else None,
                            self.seg.data_len)
        return describe(self.seg.flags, self.rel_seq, self.rel_ack, self.seg.data_len)


class Replayer:
    """Decides, from the recording, what happens next in a live replay. No clock, no socket.

    ``as_side`` is the side rawfin plays; the other is live. ``addrs`` are the
    live run's addresses (``{"client": (ip, port), "server": (ip, port)}``).
    ``speed`` scales the recorded gaps (2: twice as fast; 0: no waiting but
    for the live side). ``settle_ns``: the least time between a segment of
    rawfin's and the live application's next call (the segment must have
    arrived first, as it had in the capture). ``wait_ns``: how long past its due time a segment the
    capture shows from the live side is waited for before it is declared
    missing.

    The script advances frame by frame: a frame of rawfin's side is sent once
    the frame before it is done and the recorded gap has passed; a frame of the
    live side is done when a live segment matches it (same flags, relative
    seq/ack and length) or its wait runs out; its application call, if any, is
    made when it is due.
    """

    def __init__(self, rec: Recording, as_side: str, addrs: dict, *, speed: float = 1.0,
                 wait_ns: int = DEFAULT_WAIT_NS, settle_ns: int = 0) -> None:
        if as_side not in SIDES:
            raise ValueError(f"as_side must be client or server, got {as_side!r}")
        if speed < 0:
            raise ValueError("speed cannot be negative")
        self.rec = rec
        self.me = as_side
        self.live = other(as_side)
        self.addrs = addrs
        self.speed = speed
        self.wait_ns = wait_ns
        self.settle_ns = settle_ns      # the least time a segment of rawfin's takes to reach the live side
        self.frames = rec.frames
        # the live numbering: rawfin keeps its recorded ISN, the live side picks its own
        self.isn = {self.me: rec.isn[self.me], self.live: None}
        self.k = 0
        self.start_ns: int | None = None
        self.done_at: dict[int, int] = {}
        self.status: dict[int, str] = {}        # index -> sent / lost / matched / missing
        self.called: set[int] = set()
        self.match: dict[int, Wire] = {}
        self.wire: list[Wire] = []
        self.calls: list[tuple[int, str, Frame | None]] = []
        self.finished_at: int | None = None
        self._order = 0

    # -- numbering ---------------------------------------------------------------------
    def to_live(self, side: str, rec_value: int) -> int:
        """A recorded sequence number of ``side``'s space on the live run's numbering."""
        base = self.isn[side]
        if base is None:
            raise RuntimeError(f"the live {side}'s ISN is not known yet")
        return sq.add(base, sq.sub(rec_value, self.rec.isn[side]))

    def rel(self, side: str, value: int) -> int | None:
        base = self.isn[side]
        return None if base is None else sq.sub(value, base) & sq.MASK

    def next_order(self, time_ns: int) -> tuple:
        self._order += 1
        return (time_ns, self._order)

    # -- the script ------------------------------------------------------------------------
    def _gap(self, i: int) -> int:
        if i == 0:
            return 0
        least = 0
        f, prev = self.frames[i], self.frames[i - 1]
        if f.sender == self.live and prev.sender == self.me:
            crossed = prev.seg.seg_len and not (f.seg.has_ack and sq.ge(f.seg.ack, prev.seg.seq_end))
            if not crossed:
                least = self.settle_ns  # the live application acts once rawfin's segment has arrived
        if self.speed == 0:
            return least
        g = self.frames[i].time_ns - self.frames[i - 1].time_ns
        return max(least, round(g / self.speed))

    def _due(self, i: int) -> int:
        prev = self.done_at.get(i - 1, self.start_ns) if i else self.start_ns
        return prev + self._gap(i)

    @property
    def finished(self) -> bool:
        return self.finished_at is not None

    def start(self, now: int) -> list:
        self.start_ns = now
        acts: list = []
        if self.live == "server":
            acts.append(self._call(now, Call(call="listen", frame=None)))
        return acts + self.poll(now)

    def _call(self, now: int, c: Call) -> Call:
        self.calls.append((now, c.call, c.frame))
        return c

    def next_deadline(self) -> int | None:
        if self.finished or self.start_ns is None:
            return None
        i = self.k
        f = self.frames[i]
        due = self._due(i)
        if f.sender == self.me or (f.call and i not in self.called):
            return due
        return due + self.wait_ns

    def poll(self, now: int) -> list:
        """Everything due at ``now``: segments for rawfin to send, calls for the live application."""
        acts: list = []
        while not self.finished:
            i = self.k
            f = self.frames[i]
            due = self._due(i)
            if f.sender == self.me:
                if now < due:
                    break
                acts.append(self._send(f, now))
            else:
                if f.call and i not in self.called:
                    if now < due:
                        break
                    self.called.add(i)
                    n = f.seg.data_len
                    acts.append(self._call(now, Call(call=f.call, frame=f, nbytes=n)))
                if i in self.match:
                    self.done_at[i] = self.match[i].time_ns
                elif now >= due + self.wait_ns or any(j > i for j in self.match):
                    self.status[i] = "missing"
                    self.done_at[i] = now
                else:
                    break
            self.k += 1
            if self.k >= len(self.frames):
                self.finished_at = now
        return acts

    def _send(self, f: Frame, now: int) -> Send:
        rec = f.seg
        src, dst = self.addrs[self.me], self.addrs[self.live]
        seq = self.to_live(self.me, rec.seq)
        ack = self.to_live(self.live, rec.ack) if rec.has_ack else 0
        data = rec.payload if len(rec.payload) == rec.data_len else payload(rec.data_len)
        seg = Segment(src=src[0], dst=dst[0], sport=src[1], dport=dst[1], seq=seq, ack=ack, flags=rec.flags,
                      window=rec.window, payload=data, time_ns=now)
        self.status[f.index] = "lost" if f.lost else "sent"
        self.done_at[f.index] = now
        self.wire.append(Wire(time_ns=now, order=self.next_order(now), sender=self.me, seg=seg,
                              rel_seq=self.rel(self.me, seq), rel_ack=self.rel(self.live, ack) if rec.has_ack
                              else None, frame=f, lost=f.lost, relative=self.rec.relative))
        return Send(seg=seg, frame=f, lost=f.lost)

    def on_live(self, seg: Segment, now: int) -> list:
        """A segment from the live side: which capture frame it stands for; then what is due."""
        if self.isn[self.live] is None and seg.syn:
            self.isn[self.live] = seg.seq
        rs = self.rel(self.live, seg.seq)
        ra = self.rel(self.me, seg.ack) if seg.has_ack else None
        w = Wire(time_ns=now, order=self.next_order(now), sender=self.live, seg=seg, rel_seq=rs, rel_ack=ra,
                 live=True, relative=self.rec.relative)
        if rs is not None:
            sig = (seg.flags & _SIGNIFICANT, rs, ra, seg.data_len)
            for j in range(self.k, len(self.frames)):
                f = self.frames[j]
                if f.sender != self.live or j in self.match or j in self.status:
                    continue
                if (f.seg.flags & _SIGNIFICANT, f.rel_seq, f.rel_ack, f.seg.data_len) == sig:
                    self.match[j] = w
                    self.status[j] = "matched"
                    w.frame = f
                    w.lost = f.lost
                    break
        self.wire.append(w)
        return self.poll(now)


# -- where the live run parted from the recording ---------------------------------------

@dataclass(frozen=True, slots=True, kw_only=True)
class Divergence:
    """``severity``: ``state`` (the live side's states differ), ``segment`` (a SYN, FIN, RST or
    data segment on one side only), ``ack`` (an ACK alone differs: timing, not behaviour)."""

    frame: int | None
    time_ns: int | None
    severity: str
    kind: str
    text: str

    def record(self, conn: int) -> dict:
        return {"type": "divergence", "conn": conn, "frame": self.frame,
                "time": None if self.time_ns is None else round(self.time_ns / 1e9, 6),
                "severity": self.severity, "kind": self.kind, "detail": self.text}


def _ms(ns: int) -> str:
    return f"{ns / MS:.0f} ms" if abs(ns) < 10 * SEC else f"{ns / SEC:.1f} s"


def _path(moves, established: bool = False) -> list[int]:
    """Indexes of the transitions after the first arrival in ESTABLISHED (``established``: from the
    start, for a connection picked up mid-stream), without re-entries (TIME_WAIT's re-ACK)."""
    out = []
    on = established
    for i, (frm, to) in enumerate(moves):
        if to is State.ESTABLISHED and not on:
            on = True
            continue
        if on and frm is not to:
            out.append(i)
    return out


def divergences(rp: Replayer, live_moves: list[tuple[int, State, State]], live_name: str) -> list[Divergence]:
    """Every point where the live side did what the recorded side did not, or the reverse.

    ``live_moves``: (time_ns, from, to) of the live side, from the tracepoint or the emulator.
    ``live_name``: "kernel" or "emulator".
    """
    rec = rp.rec
    L = rp.live
    out: list[Divergence] = []
    frames = rec.frames
    # segments the capture shows from the live side that the live run did not send
    for f in frames:
        if f.sender != L or rp.status.get(f.index) != "missing":
            continue
        seg = f.seg
        sev = "ack" if not (seg.seg_len or seg.rst) else "segment"
        what = f"the {L} sent {f.describe()}"
        why = f"the live {live_name} did not"
        if f.retransmission:
            first = next((g for g in frames if g.index < f.index and g.sender == L and g.seg.seq == seg.seq
                          and g.seg.seg_len), None)
            thing = "FIN" if seg.fin else "SYN" if seg.syn else "data"
            if first is not None:
                what = f"the {L} retransmitted its {thing} {_ms(f.time_ns - first.time_ns)} after {first.label}"
            acker = next((g for g in frames if first is not None and first.index < g.index < f.index
                          and g.sender == rp.me and g.seg.has_ack and sq.ge(g.seg.ack, seg.seq_end)
                          and not g.lost), None)
            if acker is not None:
                why = f"the live {live_name} had received the ACK in {acker.label} and did not"
            else:
                why = f"the live {live_name} did not (within {_ms(rp.wait_ns)} of its time)"
        elif not seg.seg_len and not seg.rst:
            why = f"the live {live_name} sent no such ACK (it may have acknowledged later, or together)"
        out.append(Divergence(frame=f.frame, time_ns=None, severity=sev, kind="missing",
                              text=f"capture {f.label}: {what}; {why}"))
    # segments the live side sent that the capture does not show
    last_frame: Frame | None = None
    for w in rp.wire:
        if not w.live:
            if w.frame is not None:
                last_frame = w.frame
            continue
        if w.frame is not None:
            last_frame = w.frame
            continue
        seg = w.seg
        sev = "ack" if not (seg.seg_len or seg.rst) else "segment"
        where = f"after capture {last_frame.label}" if last_frame is not None else "at the start"
        t = (w.time_ns - rp.start_ns) if rp.start_ns is not None else 0
        thing = w.describe()
        again = any(x.live and x is not w and x.seg.seq == seg.seq and x.seg.seg_len and x.order < w.order
                    and seg.seg_len for x in rp.wire)
        if again:
            text = (f"{where}: the live {live_name} sent {thing} again (a retransmission) at "
                    f"{_ms(t)}; in the capture the {L} did not")
        elif seg.rst:
            text = f"{where}: the live {live_name} answered with {thing} at {_ms(t)}; the capture shows no RST " \
                   f"from the {L} there"
        else:
            text = f"{where}: the live {live_name} sent {thing} at {_ms(t)}; the capture shows no such segment " \
                   f"from the {L}"
        out.append(Divergence(frame=last_frame.frame if last_frame else None, time_ns=w.time_ns, severity=sev,
                              kind="extra", text=text))
    # the live side's states
    rec_moves = rec.path_of(L)
    wi = _path([(a, b) for a, b, _, _ in rec_moves], established=rec.mid_stream)
    gi = _path([(a, b) for _, a, b in live_moves])
    want = [(rec_moves[i][0], rec_moves[i][1]) for i in wi]
    got = [(live_moves[i][1], live_moves[i][2]) for i in gi]
    frames_of = {n: rec_moves[i][2] for n, i in enumerate(wi)}
    times_of = [live_moves[i][0] for i in gi]
    for n in range(max(len(want), len(got))):
        w_ = want[n] if n < len(want) else None
        g_ = got[n] if n < len(got) else None
        if w_ == g_:
            continue
        fr = frames_of.get(n) if w_ is not None else None
        if w_ is not None and g_ is not None:
            text = (f"capture {('frame ' + str(fr)) if fr is not None else '(by time)'}: the {L} went "
                    f"{w_[0].value} → {w_[1].value}; the live {live_name} went {g_[0].value} → {g_[1].value}")
        elif w_ is not None:
            text = (f"capture {('frame ' + str(fr)) if fr is not None else '(by time)'}: the {L} went "
                    f"{w_[0].value} → {w_[1].value}; the live {live_name} stayed in {w_[0].value}"
                    if n == len(got) else
                    f"capture frame {fr}: the {L} went {w_[0].value} → {w_[1].value}; the live {live_name} "
                    f"did not")
        else:
            after = frames_of.get(len(want) - 1) if want else None
            text = (f"after capture {('frame ' + str(after)) if after is not None else 'the last frame'}: the live "
                    f"{live_name} went {g_[0].value} → {g_[1].value}; in the capture the {L} stayed in "
                    f"{g_[0].value}")
        t = times_of[n] if n < len(times_of) else None
        out.append(Divergence(frame=fr, time_ns=t, severity="state", kind="state", text=text))
        break
    return out


def diverged(divs: list[Divergence]) -> bool:
    return any(d.severity in ("state", "segment") for d in divs)


# -- the connection as a scenario file ------------------------------------------------------

def _secs(ns: int) -> str:
    return f"{ns / SEC:.6f}".rstrip("0").rstrip(".") if ns else "0.0"


def scenario_toml(rec: Recording) -> str:
    """Connection ``rec.conn`` as a scenario file (docs/scenario-format.md).

    Each side's application calls at their capture times (from the first
    frame), and the faults the capture implies: each lost segment as ``drop N``
    where N is its number on the emulator's link. That number is the frame's
    place in the recorded connection, which the emulator reproduces as long as
    both sides send what the capture shows.
    """
    t0 = rec.frames[0].time_ns if rec.frames else 0
    lines = [f"summary = {toml_string(f'replayed from {rec.path}, connection {rec.conn}')}",
             "description = " + toml_string(
                 f"Made by rawfin replay --export scenario from {rec.path} (connection {rec.conn}, client "
                 f"{rec.name('client')}, server {rec.name('server')})."), ""]
    rto = _implied_rto(rec)
    lines += ["[config]", "msl = 30.0", f"rto = {rto}", "", "[link]"]
    delay = _implied_delay(rec)
    lines += [f"delay = {delay}", ""]
    on_fin = {sd: _closes_on_fin(rec, sd) for sd in SIDES}
    for sd in SIDES:
        ip, port = rec.endpoint(sd)
        lines.append(f"[{sd}]")
        if on_fin[sd] is not None:
            lines.append("close_on_fin = true   # its FIN carried the ACK of the peer's: a three-segment close")
        lines.append(f"address6 = {toml_string(ip)}" if ":" in ip else f"address = {toml_string(ip)}")
        lines.append(f"port = {port}")
        lines.append(f"isn = {rec.isn[sd]}")
        calls = []
        if sd == "server":
            calls.append('{ at = 0.0, call = "listen" }')
        for f in rec.frames:
            if f.sender != sd or not f.call or f is on_fin[sd]:
                continue
            at = _secs(max(0, f.time_ns - t0))
            if f.call in ("send",):
                calls.append(f'{{ at = {at}, call = "send", bytes = {f.seg.data_len} }}')
            elif f.call in ("close", "shutdown") and f.seg.data_len:
                # the FIN carries the last data; shutdown when the peer still sent after it (a close()
                # would have reset that data, as Linux does)
                calls.append(f'{{ at = {at}, call = "{f.call}", bytes = {f.seg.data_len} }}')
            else:
                calls.append(f'{{ at = {at}, call = "{f.call}" }}')
        lines.append("calls = [")
        lines += [f"  {c}," for c in calls]
        lines.append("]")
        lines.append("")
    for f in rec.frames:
        if f.lost:
            lines += ["[[fault]]", f'rule = "drop {f.index + 1}"   # capture {f.label}: {f.lost_why}', ""]
    return "\n".join(lines)


def _closes_on_fin(rec: Recording, side: str) -> Frame | None:
    """The side's FIN frame when it acknowledged the peer's FIN itself (no ACK alone before it)."""
    peer_fin = None
    for f in rec.frames:
        if f.sender != side and f.seg.fin and peer_fin is None:
            peer_fin = f
        elif f.sender == side and peer_fin is not None and f.seg.has_ack \
                and sq.ge(f.seg.ack, peer_fin.seg.seq_end):
            return f if (f.seg.fin and f.call == "close" and not f.seg.data_len) else None
    return None


def _implied_delay(rec: Recording) -> float:
    """The gap between the first SYN and the SYN,ACK: the one-way delay the capture shows."""
    fs = rec.frames
    if len(fs) >= 2 and fs[0].seg.syn and fs[1].seg.syn and fs[1].seg.has_ack:
        d = fs[1].time_ns - fs[0].time_ns     # times are at each sender: the gap is one way
        if d > 0:
            return round(d / SEC, 6)
    return 0.001


def _implied_rto(rec: Recording) -> float:
    """The first retransmission's distance from its original: the RTO the capture shows (else 1 s)."""
    for f in rec.frames:
        if f.retransmission:
            first = next((g for g in rec.frames if g.index < f.index and g.sender == f.sender
                          and g.seg.seq == f.seg.seq and g.seg.seg_len), None)
            if first is not None:
                return round(max(1, (f.time_ns - first.time_ns) // MS) / 1000, 3)
    return 1.0


__all__ = ["Frame", "Recording", "Replayer", "Send", "Call", "Wire", "Divergence", "ReplayError", "recording",
           "divergences", "diverged", "scenario_toml", "SIDES", "other"]

