"""The capture driver: frames from a file, decoded, through the observer, as records.

Thin on purpose: the reading is ``rawfin.wire.pcapio``, the decoding ``rawfin.wire.decode``,
the reasoning ``rawfin.core.observer``. This module only wires them together, counts,
and reports progress.
"""

from __future__ import annotations

import os
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import BinaryIO, Callable, Iterator

from rawfin.core.units import SEC
from rawfin.core.errors import CaptureError
from rawfin.core.observer import Connection, Observer
from rawfin.core.segment import Segment


class Progress:
    """A one-line progress bar on stderr, only where stderr is a terminal (or when forced)."""

    def __init__(self, label: str, size: int | None, mode: str = "auto") -> None:
        self.on = mode == "always" or (mode == "auto" and sys.stderr.isatty())
        self.label = label if len(label) <= 32 else label[:31] + "…"
        self.size = size
        self.last = 0.0
        self.start = time.monotonic()

    def update(self, pos: int, frames: int) -> None:
        if not self.on:
            return
        now = time.monotonic()
        if now - self.last < 0.25:
            return
        self.last = now
        rate = frames / max(now - self.start, 1e-9)
        if self.size:
            pct = min(100.0, 100.0 * pos / self.size)
            bar = "#" * int(pct / 5)
            line = f"\r{self.label}: [{bar:<20}] {pct:5.1f}%  {frames:,} frames  {rate:,.0f}/s"
        else:
            line = f"\r{self.label}: {frames:,} frames  {rate:,.0f}/s"
        sys.stderr.write(line[:99])
        sys.stderr.flush()

    def done(self) -> None:
        if self.on and self.last:
            sys.stderr.write("\r" + " " * 99 + "\r")
            sys.stderr.flush()


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
        return f"{self.path}: " + "; ".join(parts)


def records(path: str, *, msl_s: float = 30.0, label: str | None = None,
            select: Callable[[Connection], bool] | None = None, progress: str = "never",
            stats: CaptureStats | None = None, fileobj: BinaryIO | None = None, bpf=None) -> Iterator[dict]:
    """Every record of one capture, in order; raises CaptureError (after the good part) on damage.

    ``fileobj``: read the capture from this stream (``path`` then only names it); ``bpf``: a
    :class:`rawfin.wire.bpf.Filter`: only the frames it passes are analysed (the others are
    counted in ``stats.filtered`` and keep their frame numbers)."""
    from rawfin.wire.decode import decode
    from rawfin.wire.pcapio import open_capture

    stats = stats if stats is not None else CaptureStats(path=path)
    obs = Observer(msl_ns=int(msl_s * SEC), file=label, select=select)
    reader = open_capture(path, fileobj)
    match = bpf.for_byte_order(reader.byte_order == "big").match if bpf is not None else None
    filtered = 0
    bar = Progress(os.path.basename(path), reader.size, progress)
    feed = obs.feed
    note_skip = obs.note_skip
    n = 0
    try:
        try:
            for fr in reader:
                n += 1
                if stats.first_time is None:
                    stats.first_time = fr.time_ns / 1e9
                if not n & 0x3FFF:
                    bar.update(reader.tell(), n)
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
            bar.done()
        stats.frames = n
        stats.filtered = filtered
        yield from obs.finish()
    finally:
        stats.connections = obs.connections_done
        stats.by_close = obs.by_close
        stats.server_active_closes = obs.server_active_closes
        for k, v in obs.stats.items():
            stats.skipped[k] += v
    if stats.error is not None:
        raise stats.error
