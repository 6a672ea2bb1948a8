"""The capture driver: frames from a file, decoded, through the observer, as records.

Thin on purpose: the reading is ``rawfin.wire.pcapio``, the decoding ``rawfin.wire.decode``,
the reasoning ``rawfin.core.observer``. This module only wires them together, counts,
and says how far it has read (a ``progress(pos, frames)`` callback: the bar is the command
layer's, ``rawfin.render.progress``).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import BinaryIO, Callable, Iterator

from rawfin.core.units import SEC
from rawfin.core.errors import CaptureError
from rawfin.core.observer import Connection, Observer
from rawfin.core.segment import Segment


@dataclass
class CaptureStats:
    path: str
    frames: int = 0
    filtered: int = 0       # frames --filter passed over
    tcp: int = 0
    skipped: Counter = field(default_factory=Counter)
    first_time: float | None = None
    connections: int = 0
    by_close: Counter = field(default_factory=Counter)
    server_active_closes: int = 0
    error: CaptureError | None = None

    def line(self) -> str:
        def n(k: int, what: str) -> str:
            return f"{k:,} {what}{'' if k == 1 else 's'}"
        parts = [n(self.frames, "frame")]
        if self.filtered:
            parts[0] += f" ({self.frames - self.filtered:,} matched the filter)"
        parts += [n(self.tcp, "TCP segment"), n(self.connections, "connection")]
        skipped = ", ".join(f"{v:,} {k.replace('_', '-')}" for k, v in sorted(self.skipped.items()) if v)
        if skipped:
            parts.append(f"passed over: {skipped}")
        if self.server_active_closes:
            parts.append(f"{self.server_active_closes} closed first by the server (TIME_WAIT on the server)")
        if self.by_close.get("timeout"):
            parts.append(f"{self.by_close['timeout']:,} half-open given up on (timeout)")
        if self.by_close.get("evicted"):
            parts.append(f"{self.by_close['evicted']:,} evicted to stay within --max-connections")
        return f"{self.path}: " + "; ".join(parts)


def records(path: str, *, msl_s: float = 30.0, label: str | None = None,
            select: Callable[[Connection], bool] | None = None,
            progress: Callable[[int, int], None] | None = None, stats: CaptureStats | None = None,
            fileobj: BinaryIO | None = None, bpf=None, record: Callable | None = None,
            limits: dict | None = None, relative_seq: bool = False) -> Iterator:
    """What the observer makes of one capture, in order: its typed events (rawfin.core.events), or
    ``record(event, label)`` of each when ``record`` is given (rawfin.render.records.record makes the
    records every format shows). Raises CaptureError (after the good part) on damage.

    ``progress(pos, frames)`` is called every 16,384 frames with the bytes read so far.

    ``fileobj``: read the capture from this stream (``path`` then only names it); ``bpf``: a
    :class:`rawfin.wire.bpf.Filter`: only the frames it passes are analysed (the others are
    counted in ``stats.filtered`` and keep their frame numbers). ``limits``: the observer's
    (``syn_timeout_ns``, ``syn_ack_timeout_ns``, ``max_connections``; default: the rules').
    ``relative_seq``: the texts show sequence numbers relative to each side's base (--seq relative)."""
    from rawfin.wire.decode import decode
    from rawfin.wire.pcapio import open_capture

    stats = stats if stats is not None else CaptureStats(path=path)
    obs = Observer(msl_ns=int(msl_s * SEC), select=select, relative_seq=relative_seq, **(limits or {}))
    if record is not None:
        made = _made(record, label)
        feed = lambda seg: made(obs.feed(seg))                                     # noqa: E731
        note_skip = lambda *a: made(obs.note_skip(*a))                             # noqa: E731
        finish = lambda: made(obs.finish())                                        # noqa: E731
    else:
        feed, note_skip, finish = obs.feed, obs.note_skip, obs.finish
    reader = open_capture(path, fileobj)
    match = bpf.for_byte_order(reader.byte_order == "big").match if bpf is not None else None
    filtered = 0
    n = 0
    try:
        try:
            for fr in reader:
                n += 1
                if stats.first_time is None:
                    stats.first_time = fr.time_ns / 1e9
                if progress is not None and not n & 0x3FFF:
                    progress(reader.tell(), n)
                if match is not None and not match(fr.linktype, fr.data, fr.orig_len):
                    filtered += 1
                    continue
                r = decode(fr.linktype, fr.data, fr.orig_len, fr.frame, fr.time_ns)
                if r.__class__ is Segment:
                    stats.tcp += 1
                    out = feed(r)
                else:
                    out = note_skip(r.kind, fr.frame, fr.time_ns, r.reason)
                if out:
                    yield from out
        except CaptureError as e:
            stats.error = e
        finally:
            reader.close()
        stats.frames = n
        stats.filtered = filtered
        yield from finish()
    finally:
        stats.connections = obs.connections_done
        stats.by_close = obs.by_close
        stats.server_active_closes = obs.server_active_closes
        for k, v in obs.stats.items():
            stats.skipped[k] += v
    if stats.error is not None:
        raise stats.error


def _made(record: Callable, label: str | None) -> Callable:
    def made(events) -> list:
        return [record(ev, label) for ev in events] if events else []
    return made
