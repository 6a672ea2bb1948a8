"""The drivers of ``rawfin replay``: read the capture, run the live side, collect what happened.

The decisions are :mod:`rawfin.sim.replay`'s (sans-IO); this module owns the
clocks and the sockets:

- the command layer reads the capture into a :class:`~rawfin.sim.replay.Recording`
  (``rawfin.commands.replay.load``: the capture driver's records and the segments);
- :func:`run_emulator` puts the core's :class:`~rawfin.core.endpoint.Endpoint` on
  the live side, on a virtual clock (nothing sleeps);
- :func:`run_kernel` puts a real Linux socket there, in a network namespace
  with a TUN device of rawfin's own (:class:`~rawfin.linux.peer.PeerRun`, which
  always removes them), its transitions from the tracepoint.
"""

from __future__ import annotations

import errno
import heapq
import time
from dataclasses import dataclass, field

from rawfin.core import seq as sq
from rawfin.core.units import SEC, US
from rawfin.core.endpoint import Config
from rawfin.core.errors import RawfinError, StateError
from rawfin.core.events import Result
from rawfin.linux.kernelapp import KernelApp
from rawfin.sim.emulator import EPOCH_NS
from rawfin.sim.host import Host, HostError, payload, perform
from rawfin.sim.replay import (DEFAULT_WAIT_NS, Call, Recording, Replayer, Send, Wire, diverged, divergences,
                               other)
from rawfin.core.events import Transition
from rawfin.core.segment import Segment, fmt_endpoint
from rawfin.core.states import Input, State



@dataclass
class Move:
    """A transition of one side in the live run."""

    order: tuple
    side: str
    from_: State
    to: State
    cause: str = ""
    source: str = ""
    app: bool = False       # an application's call that sends (connect, close, abort) made it


#: the calls that send a segment as they move the endpoint
_SENDS = frozenset({Input.CONNECT, Input.CLOSE, Input.ABORT})


@dataclass
class Outcome:
    rec: Recording
    rp: Replayer
    against: str                            # "emulator" / "kernel"
    live_moves: list = field(default_factory=list)     # Move, the live side's
    rawfin_moves: list = field(default_factory=list)   # Move, rawfin's side (the observer on the live wire)
    notes: list = field(default_factory=list)          # (time_ns, text): what the live application met
    divergences: list = field(default_factory=list)
    truth: str = ""
    live_addr: tuple = ()
    rawfin_addr: tuple = ()

    @property
    def diverged(self) -> bool:
        return diverged(self.divergences)


def _observe(rp: Replayer) -> list[Move]:
    """rawfin's side's states in the live run: the both-endpoint observer at rawfin's end of the
    link: what rawfin sent (also what the link then lost, as the capture implies) and what it took
    in (not the live side's segments it ignored, as the capture implies)."""
    from rawfin.core.observer import Observer
    obs = Observer(final_ack_hold_ns=0, relative_seq=rp.rec.relative)
    recs = []
    for i, w in enumerate(rp.wire):
        if w.lost and w.live:
            continue
        recs += obs.feed(w.seg.with_(frame=i, time_ns=w.time_ns))
    recs += obs.finish()
    me = fmt_endpoint(*rp.addrs[rp.me])
    live = fmt_endpoint(*rp.addrs[rp.live])
    out = []
    for t in recs:
        if t.__class__ is not Transition or t.endpoint not in (me, live):
            continue
        w = rp.wire[t.frame] if t.frame is not None else None
        order = w.order if w is not None else (t.time_ns, 1 << 60)
        out.append(Move(order=order, side=rp.me if t.endpoint == me else rp.live, from_=t.from_, to=t.to,
                        cause=t.cause, source="observer"))
    return out


def _finish(o: Outcome) -> Outcome:
    moves = _observe(o.rp)
    o.rawfin_moves = [m for m in moves if m.side == o.rp.me]
    if not o.live_moves and o.truth.startswith("unavailable"):
        o.live_moves = [m for m in moves if m.side == o.rp.live]
    o.live_moves.sort(key=lambda m: m.order)
    o.divergences = divergences(o.rp, [(m.order[0], m.from_, m.to) for m in o.live_moves], o.against)
    return o


# -- the emulator ----------------------------------------------------------------------

def run_emulator(rec: Recording, as_side: str, *, speed: float = 1.0, live_isn: int | None = None,
                 delay_ns: int = 50 * US, tail_ns: int = 3 * SEC, wait_ns: int = DEFAULT_WAIT_NS,
                 write: str | None = None, config: Config | None = None) -> Outcome:
    """Replay ``as_side`` against the emulator's endpoint, on a virtual clock."""
    L = other(as_side)
    addrs = {"client": rec.client, "server": rec.server}
    if live_isn is None:
        live_isn = sq.add(rec.isn[L], 0x5EED0000)       # not the recorded ISN: the mapping must work
    host = Host(L, addrs[L], config or Config(relative_seq=rec.relative), live_isn)
    rp = Replayer(rec, as_side, addrs, speed=speed, wait_ns=wait_ns, settle_ns=2 * delay_ns)
    o = Outcome(rec=rec, rp=rp, against="emulator", truth="the emulator's endpoint (rawfin's core)",
                live_addr=addrs[L], rawfin_addr=addrs[as_side])
    queue: list = []
    n = [0]

    def push(t: int, kind: str, seg: Segment) -> None:
        n[0] += 1
        heapq.heappush(queue, (t, n[0], kind, seg))

    def absorb(steps, now: int) -> None:
        for t in (t for st in steps for t in st.result.transitions):
            o.live_moves.append(Move(order=rp.next_order(now), side=L, from_=t.from_, to=t.to, cause=t.cause,
                                     source="emulator", app=t.input in _SENDS))
        for seg in (seg for st in steps for seg in st.result.segments):
            push(now + delay_ns, "to_rawfin", seg)

    def act(actions, now: int) -> None:
        for a in actions:
            if isinstance(a, Send):
                if not a.lost:
                    push(now + delay_ns, "to_live", a.seg)
                continue
            try:
                absorb([perform(host, a.call, now, remote=addrs[as_side], data=payload(a.nbytes))], now)
            except (StateError, HostError) as e:
                o.notes.append((now, f"the live application's {a.call}() failed: {e}"))

    now = EPOCH_NS
    act(rp.start(now), now)
    steps = 0
    while True:
        cands = [d for d in (rp.next_deadline(), host.next_deadline(), queue[0][0] if queue else None)
                 if d is not None]
        if not cands:
            break
        t = min(cands)
        if rp.finished and t > rp.finished_at + tail_ns:
            break
        now = max(now, t)
        if queue and queue[0][0] <= now:
            _, _, kind, seg = heapq.heappop(queue)
            if kind == "to_live":
                absorb(host.deliver(seg, now), now)
            else:
                act(rp.on_live(seg, now), now)
        elif host.next_deadline() is not None and host.next_deadline() <= now:
            absorb(host.due(now), now)
        else:
            act(rp.poll(now), now)
        steps += 1
        if steps > 200_000:
            raise RawfinError("the replay did not settle after 200000 events")
    if write:
        _write(write, [w for w in rp.wire if w.live or not w.lost])
    return _finish(o)


def _write(path: str, wire: list[Wire]) -> None:
    from rawfin.wire.codec import to_bytes
    from rawfin.wire.pcapio import LINKTYPE_RAW, PcapWriter
    w = PcapWriter(path, LINKTYPE_RAW, nanosecond=True)
    try:
        for x in wire:
            w.write(to_bytes(x.seg), x.time_ns)
    except BaseException:
        w.abort()
        raise
    w.close()


# -- the kernel --------------------------------------------------------------------------

class _Rawfin:
    """Stands where :class:`~rawfin.linux.peer.PeerRun` keeps rawfin's endpoint: the replayer instead."""

    def __init__(self, drv: "_KernelDriver") -> None:
        self.drv = drv

    @property
    def state(self) -> State:
        return State.ESTABLISHED if self.drv.rp.start_ns is not None else State.CLOSED

    def next_deadline(self) -> int | None:
        return self.drv.rp.next_deadline()

    def handle_timer(self, now: int) -> Result:
        return self.drv.result(self.drv.rp.poll(now), now)

    def receive(self, seg: Segment, now: int) -> Result:
        if seg.src != self.drv.kernel_addr[0] or seg.sport != self.drv.kernel_addr[1]:
            return Result()
        return self.drv.result(self.drv.rp.on_live(seg, now), now)


class _KernelDriver:
    def __init__(self, run, rp: Replayer, o: Outcome) -> None:
        self.run = run
        self.rp = rp
        self.o = o
        self.kernel_addr = run.kernel
        self.app = KernelApp(run.ns, run.kernel, connect_reuse_addr=True)
        self.pending: list[Call] = []

    def result(self, actions, now: int) -> Result:
        from rawfin.linux.peer import Rule
        segs = []
        for a in actions:
            if isinstance(a, Send):
                if a.lost:
                    target = a.seg
                    label = f"lost in the capture, {a.frame.label}"
                    self.run.rules.append(Rule("out", label, lambda s, run, t=target: s is t))
                segs.append(a.seg)
            else:
                self.pending.append(a)
        self.calls()
        return Result(segments=tuple(segs))

    def calls(self) -> None:
        app = self.app
        if app.sock is None:
            app.accept()
        while self.pending:
            a = self.pending[0]
            if a.call not in ("listen", "connect") and app.sock is None:
                return          # the connection is not accepted yet: a blocking socket would wait too
            self.pending.pop(0)
            now = time.time_ns()
            try:
                # the data rides on the FIN, as recorded
                perform(app, a.call, now, remote=self.run.local, reuse_addr=True,
                        data=payload(a.nbytes) if a.nbytes and a.call != "abort" else b"")
            except OSError as e:
                name = errno.errorcode.get(e.errno, str(e.errno)) if e.errno else str(e)
                self.o.notes.append((now, f"the live application's {a.call}() failed: {name}"))


def run_kernel(rec: Recording, as_side: str, *, speed: float = 1.0, tail_s: float = 1.0,
               wait_ns: int = DEFAULT_WAIT_NS, write: str | None = None, bound_s: float = 120.0) -> Outcome:
    """Replay ``as_side`` against a real Linux socket in a namespace of rawfin's own."""
    import random

    from rawfin.linux.peer import KERNEL, RAWFIN_IP, PeerRun
    L = other(as_side)
    if L == "server":
        kernel = KERNEL
        mine = (RAWFIN_IP, random.randrange(49152, 65536))
    else:
        kernel = (KERNEL[0], random.randrange(49152, 65536))
        mine = (RAWFIN_IP, 80)
    addrs = {L: kernel, as_side: mine}
    rp = Replayer(rec, as_side, addrs, speed=speed, wait_ns=wait_ns, settle_ns=1_000_000)
    o = Outcome(rec=rec, rp=rp, against="kernel", live_addr=kernel, rawfin_addr=mine)
    run = PeerRun(port=mine[1], write=write, kernel=kernel)
    with run:
        o.truth = run.out.kernel_truth
        drv = _KernelDriver(run, rp, o)
        try:
            run.ep = _Rawfin(drv)
            now = time.time_ns()
            run.apply(drv.result(rp.start(now), now), now)
            end = time.monotonic() + bound_s
            while True:
                run.pump(0.02)
                drv.calls()
                drv.app.read()
                if rp.finished and time.time_ns() >= rp.finished_at + int(tail_s * SEC):
                    break
                if time.monotonic() > end:
                    o.notes.append((time.time_ns(), f"stopped after {bound_s:g} s: the replay did not finish"))
                    break
            run.settle(0.1)
            kmoves = list(run.out.kernel)
        finally:
            drv.app.close_all()
    for k in kmoves:
        o.live_moves.append(Move(order=(k.time_ns, 0), side=L, from_=k.from_, to=k.to,
                                 cause=k.kernel + (f" ({k.note})" if k.note else ""), source=k.source))
    return _finish(o)


__all__ = ["run_emulator", "run_kernel", "Outcome", "Move"]

