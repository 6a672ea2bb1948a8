"""The progress bar: one line on stderr while a capture is read, only where stderr is a terminal.

A terminal concern, so it lives with the output and is driven from the command layer: the
readers (``rawfin.capture.analysis.records``, ``rawfin.capture.engine.run``) only call a
``progress(pos, frames)`` callback now and then, which :meth:`Progress.update` is.
"""

from __future__ import annotations

import sys
import time


class Progress:
    """A one-line progress bar on stderr: ``mode`` auto (only on a terminal), always or never.

    ``size`` is the input's size in bytes (None: unknown, a pipe), ``update(pos, frames)``
    redraws it at most four times a second, ``done()`` clears it. ``callback`` is ``update``
    when the bar is on, else None (so a reader does not even call it).
    """

    def __init__(self, label: str, size: int | None, mode: str = "auto") -> None:
        self.on = mode == "always" or (mode == "auto" and sys.stderr.isatty())
        self.label = label if len(label) <= 32 else label[:31] + "…"
        self.size = size
        self.last = 0.0
        self.start = time.monotonic()

    @property
    def callback(self):
        return self.update if self.on else None

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

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        self.done()


__all__ = ["Progress"]
