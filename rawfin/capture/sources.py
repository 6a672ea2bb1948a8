"""Where captures come from, as tcpdump and tshark users name them.

``rawfin analyze a.pcap -r b.pcapng -r - logs/`` reads, in the order given: a file, another,
standard input (``tcpdump -w - | rawfin analyze -``), and every capture in a directory (its
files in name order, not descending into subdirectories; files that are not captures are
passed over and counted). A gzip-compressed capture (``trace.pcap.gz``) is read as it is,
recognised by its content, not its name, as tshark does.

A :class:`Source` is what the readers need: a name for messages and records, and either a
regular file the compiled lane opens itself (``path``) or a stream opened by :meth:`Source.open`.
"""

from __future__ import annotations

import contextlib
import gzip
import os
import stat
import sys
import zlib
from dataclasses import dataclass, field
from typing import BinaryIO

from rawfin.core.errors import CaptureError, UsageError

STDIN = "-"
_GZIP_MAGIC = b"\x1f\x8b"
_CAPTURE_MAGICS = (b"\xd4\xc3\xb2\xa1", b"\xa1\xb2\xc3\xd4", b"\x4d\x3c\xb2\xa1", b"\xa1\xb2\x3c\x4d",
                   b"\x34\xcd\xb2\xa1", b"\xa1\xb2\xcd\x34", b"\x0a\x0d\x0d\x0a")


@dataclass(frozen=True)
class Source:
    """One capture to read. ``name`` is what the user gave (``-`` for standard input)."""

    name: str
    kind: str = "file"          # "file": a regular file; "gzip": compressed; "stdin"; "stream": a pipe/FIFO

    @property
    def path(self) -> str | None:
        """The file the compiled lane may open itself, or None for anything read as a stream."""
        return self.name if self.kind == "file" else None

    @property
    def streamed(self) -> bool:
        return self.kind != "file"

    def open(self) -> BinaryIO:
        """The capture's bytes, uncompressed, read as they arrive."""
        if self.kind == "stdin":
            return _Stream(sys.stdin.buffer)
        if self.kind == "gzip":
            return _Gunzip(self.name)
        if self.kind == "stream":
            return _Stream(open(self.name, "rb", buffering=1 << 16))  # noqa: SIM115
        return open(self.name, "rb")  # noqa: SIM115

    def size(self) -> int | None:
        """Bytes on disk (compressed for gzip; None for a stream): for the progress bar."""
        if self.kind in ("stdin", "stream"):
            return None
        try:
            return os.path.getsize(self.name)
        except OSError:
            return None


class _Stream:
    """A pipe read as it arrives: ``read(n)`` returns what is there (at least one byte unless the
    stream ended) instead of waiting for ``n``, so `tcpdump -U -w - | rawfin analyze -` reports
    connections as they close. The first read waits for a whole file header."""

    def __init__(self, raw) -> None:
        self.raw = raw
        self.first = True
        self.name = getattr(raw, "name", STDIN)

    def read(self, n: int = -1) -> bytes:
        if n is None or n < 0:
            return self.raw.read()
        if self.first:
            self.first = False
            out = bytearray()
            while len(out) < 64:
                more = self.raw.read1(n - len(out)) if hasattr(self.raw, "read1") else self.raw.read(n - len(out))
                if not more:
                    break
                out += more
            return bytes(out)
        return self.raw.read1(n) if hasattr(self.raw, "read1") else self.raw.read(n)

    def fileno(self) -> int:
        return self.raw.fileno()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self.raw is not sys.stdin.buffer:
            self.raw.close()


class _Gunzip:
    """A gzip-compressed capture, uncompressed as it is read; damage in the compressed data is a
    CaptureError (exit 65) naming the file, after everything before it."""

    def __init__(self, path: str) -> None:
        self.name = path
        self.f = gzip.open(path, "rb")
        self.error: CaptureError | None = None

    def read(self, n: int = -1) -> bytes:
        """Up to ``n`` bytes; what came out before damage is returned first, the error on the next call."""
        if self.error is not None:
            raise self.error
        out = bytearray()
        want = n if n is not None and n >= 0 else 1 << 62
        while len(out) < want:
            try:
                more = self.f.read1(min(want - len(out), 1 << 20))
            except (OSError, EOFError, zlib.error) as e:
                why = "compressed data cut short (file truncated?)" if isinstance(e, EOFError) else f"gzip: {e}"
                self.error = CaptureError(self.name, why)
                if not out:
                    raise self.error from None
                break
            if not more:
                break
            out += more
        return bytes(out)

    def tell(self) -> int:
        return self.f.fileobj.tell() if self.f.fileobj is not None else 0   # compressed bytes, for progress

    def fileno(self) -> int:
        return self.f.fileno()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self.f.close()


@contextlib.contextmanager
def opened(source: Source):
    """``(name, fileobj)`` for the readers: fileobj is None for a regular file (read by name)."""
    if not source.streamed:
        yield source.name, None
        return
    f = source.open()
    try:
        yield source.name, f
    finally:
        f.close()


def _head(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read(4)


def _kind_of_file(path: str, st: os.stat_result) -> str:
    if not stat.S_ISREG(st.st_mode):
        return "stream"
    return "gzip" if _head(path)[:2] == _GZIP_MAGIC else "file"


def _is_capture(path: str) -> bool:
    try:
        head = _head(path)
        if head[:2] == _GZIP_MAGIC:
            with gzip.open(path, "rb") as g:
                head = g.read(4)
    except (OSError, EOFError, gzip.BadGzipFile):
        return False
    return head in _CAPTURE_MAGICS


@dataclass
class Inputs:
    """The captures named on a command line, expanded: ``sources`` in reading order, and what
    was passed over in directories (``skipped``: paths of files that are not captures)."""

    sources: list[Source] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


def expand(names: list[str]) -> Inputs:
    """Positional captures and ``-r`` files, in the order given, directories opened.

    A name that does not exist raises FileNotFoundError (exit 66); standard input may be named once."""
    out = Inputs()
    stdin_seen = False
    for name in names:
        if name == STDIN:
            if stdin_seen:
                raise UsageError("standard input ('-') can be read only once")
            stdin_seen = True
            out.sources.append(Source(STDIN, "stdin"))
            continue
        try:
            st = os.stat(name)
        except FileNotFoundError:
            raise FileNotFoundError(2, "no such file", name) from None
        if stat.S_ISDIR(st.st_mode):
            for entry in sorted(os.listdir(name)):
                if entry.startswith("."):
                    continue
                p = os.path.join(name, entry)
                try:
                    est = os.stat(p)
                except OSError:
                    continue
                if not stat.S_ISREG(est.st_mode):
                    continue
                if _is_capture(p):
                    out.sources.append(Source(p, _kind_of_file(p, est)))
                else:
                    out.skipped.append(p)
            continue
        out.sources.append(Source(name, _kind_of_file(name, st)))
    return out


def from_args(args) -> Inputs:
    """The ``captures`` positional arguments and the ``-r`` options of a command, together;
    a usage error when there is none."""
    names = list(getattr(args, "captures", None) or []) + list(getattr(args, "read", None) or [])
    if not names:
        raise UsageError("no capture given: name one (or more), '-r FILE', '-' for standard input, or a directory")
    inputs = expand(names)
    if not inputs.sources:
        raise UsageError("no capture found in " + ", ".join(names))
    return inputs
