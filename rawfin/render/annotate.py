"""``rawfin annotate``: a copy of a capture with rawfin's findings as packet comments.

Two streaming passes over the input, so a capture larger than memory is fine:

1. :func:`collect_notes` reads the analysis records it is given (the command layer runs
   ``rawfin.capture.analysis.records`` or the compiled lane), turns the records into
   ``(frame, comment)`` pairs with :func:`iter_notes` (pure; only frames with something
   to say) and keeps them in a :class:`NoteSpool` (in memory up to a bound, then sorted
   runs in temporary files);
2. :func:`annotate` copies every packet record through
   :class:`~rawfin.wire.pcapio.PcapngWriter` (bytes, original length, timestamp at its
   stored resolution, interface with the same id and options, the comments it already
   had), merging rawfin's comments back in frame order and appending them.

Every comment rawfin adds starts with :data:`PREFIX` (``"rawfin: "``), so a user can
filter them (``frame.comment contains "rawfin: "``) and a second run replaces them
instead of piling up copies.

Damaged input (:class:`~rawfin.core.errors.CaptureError` after some good frames): the good
part is written, the section header comment and a comment on the last frame say the
file holds frames 1..N-1 only, and the caller exits 65. When not one frame is readable
nothing is written. The writer works under a temporary name and renames on success, so
no run ever leaves a half-written file under the output name.
"""

from __future__ import annotations

import heapq
import json
import os
import stat
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from rawfin.core import seq as sq
from rawfin.render.records import record
from rawfin.core.errors import CaptureError, OutputError, UsageError  # noqa: F401 (OutputError re-exported)

__all__ = ["PREFIX", "annotate", "default_output", "collect_notes", "iter_notes", "notes_from_records",
           "NoteSpool", "transition_comment", "connection_comment", "fin_ack_verdict", "anomaly_comment", "frames_span",
           "AnnotateResult", "Pass1", "OutputError", "SameFileError"]

#: Every comment rawfin writes starts with this.
PREFIX = "rawfin: "

#: The moves the ACK of this side's FIN makes (RST and timeouts make some of them too,
#: but their causes name no ack and FIN seq).
_FIN_ACKED = frozenset((("FIN_WAIT_1", "FIN_WAIT_2"), ("CLOSING", "TIME_WAIT"), ("LAST_ACK", "CLOSED")))


class SameFileError(UsageError):
    """``-o`` names the input itself: annotating in place would replace the original capture."""


def frames_span(last: int) -> str:
    """``frame 1`` / ``frames 1..17``: what a cut-short output holds."""
    return "frame 1" if last == 1 else f"frames 1..{last}"


# --------------------------------------------------------------------------- comment text


def transition_comment(rec: dict) -> str:
    """``rawfin: 192.0.2.1:80 ESTABLISHED → CLOSE_WAIT (rcv FIN seq=1006)``."""
    text = f"{PREFIX}{rec['endpoint']} {rec['from']} → {rec['to']} ({rec['cause']})"
    if "inferred" in rec:           # the capture cannot decide it: the other reading, named
        text += f"; inferred: {rec['inferred']}"
    return text


def fin_ack_verdict(ack: int, fin_seq: int) -> str:
    """The arithmetic and the verdict for an ACK that answers a FIN.

    ``ack 1007 = FIN seq 1006 + 1: covers the FIN``, or
    ``ack 1006 ≠ FIN seq 1006 + 1 = 1007: does not cover the FIN (expected ack 1007)``.
    "Covers" is judged mod 2**32 the way TCP judges it: the FIN is covered when ack is
    FIN seq + 1 or beyond (within half the sequence space).
    """
    want = sq.add(fin_seq, 1)
    wrap = " (mod 2**32)" if want < fin_seq else ""
    if ack == want:
        return f"{PREFIX}ack {ack} = FIN seq {fin_seq} + 1{wrap}: covers the FIN"
    if sq.gt(ack, want):
        return f"{PREFIX}ack {ack} > FIN seq {fin_seq} + 1 = {want}{wrap}: covers the FIN"
    return (f"{PREFIX}ack {ack} ≠ FIN seq {fin_seq} + 1 = {want}{wrap}: does not cover the FIN "
            f"(expected ack {want})")


def _fin_ack_numbers(rec: dict, fin: str) -> tuple[int, int] | None:
    """(ack, FIN seq) a record names, from the numbers its text was made of (:func:`note_record`)."""
    values = rec.get("values") or {}
    ack, fin_seq = values.get("ack"), values.get(fin)
    return (ack, fin_seq) if isinstance(ack, int) and isinstance(fin_seq, int) else None


def note_record(ev, file: str | None = None) -> dict:
    """An event's record as annotate reads it: the record every format gives, with the numbers its
    text was made of (``values``: ``{"ack": 1102, "fin_seq": 1101}``), so none is read back from text."""
    rec = record(ev, file)
    values = getattr(ev, "values", None)
    if values:
        rec["values"] = dict(values)
    return rec


def anomaly_comment(rec: dict) -> str:
    """``rawfin: anomaly fin_retransmission at 192.0.2.1:80: FIN seq=1006 sent again``."""
    ep = rec.get("endpoint")
    at = f" at {ep}" if ep and ep != "-" else ""
    return f"{PREFIX}anomaly {rec['kind']}{at}: {rec['detail']}"


# --------------------------------------------------------------------------- pass 1


def connection_comment(rec: dict, after_first: dict[str, str]) -> str:
    """``rawfin: conn 0: client A, server B; after this frame SYN_SENT/SYN_RECEIVED; close four_way;
    closed first by the client`` (a reset close says ``; reset by the server`` before it): on a connection's first frame, its last comment there (the
    Wireshark post-dissector, rawfin/render/rawfin.lua, reads it: roles, the states after the
    frame, and what the close was, for every packet of the connection)."""
    client, server = rec["client"], rec["server"]
    final = rec.get("final") or {}
    states = [after_first.get(ep) or final.get(ep, "?") for ep in (client, server)]
    text = (f"{PREFIX}conn {rec['conn']}: client {client}, server {server}; after this frame "
            f"{states[0]}/{states[1]}; close {rec.get('close')}")
    closer, rst = rec.get("active_closer"), rec.get("reset_by")
    if rst:
        text += f"; reset by the {'client' if rst == client else 'server'}"
    if closer:
        text += f"; closed first by the {'client' if closer == client else 'server'}"
    if rec.get("mid_stream"):
        text += "; picked up mid-stream"
    return text


def iter_notes(recs: Iterable[dict]) -> Iterator[tuple[int, str]]:
    """``(frame, comment)`` for analysis records, as they come.

    Transitions and anomalies go on their frame. Those with no frame (a timer such as
    2MSL expiring, or an anomaly only the end of the connection shows) go on the
    connection's last frame and say so; they come out when the connection's record
    does. Anomalies with neither frame nor connection are dropped (there is no packet
    to put them on). Every connection's first frame also gets :func:`connection_comment`,
    when its record comes.
    """
    pending: dict[int, list[dict]] = {}   # conn -> frameless records, until its connection record
    # conn -> {endpoint: [frame of its first transition, the state it came from, where it was after
    # that frame]}: its state after the connection's first frame, when the connection's record says
    # which frame that was
    first: dict[int, dict[str, list]] = {}
    for rec in recs:
        kind = rec["type"]
        if kind == "connection":
            held = pending.pop(rec["conn"], None)
            last = rec.get("last_frame")
            if held and last is not None:
                for r in held:
                    yield last, _frameless(r, rec)
            eps = first.pop(rec["conn"], {})
            if rec.get("first_frame") is not None and "client" in rec:
                after = {ep: (v[2] if v[0] == rec["first_frame"] else v[1]) for ep, v in eps.items()}
                yield rec["first_frame"], connection_comment(rec, after)
            continue
        frame = rec.get("frame")
        if frame is None:
            if rec.get("conn") is not None:
                pending.setdefault(rec["conn"], []).append(rec)
            continue
        if kind == "transition":
            c = rec.get("conn")
            if c is not None:
                v = first.setdefault(c, {}).setdefault(rec["endpoint"], [frame, rec["from"], rec["to"]])
                if v[0] == frame:
                    v[2] = rec["to"]
            yield frame, transition_comment(rec)
            if (rec["from"], rec["to"]) in _FIN_ACKED:
                nums = _fin_ack_numbers(rec, "fin_seq")
                if nums:
                    yield frame, fin_ack_verdict(*nums)
        elif kind == "anomaly":
            yield frame, anomaly_comment(rec)
            if rec["kind"] == "ack_not_covering_fin":
                nums = _fin_ack_numbers(rec, "first_fin")
                if nums:
                    yield frame, fin_ack_verdict(*nums)


def notes_from_records(recs: Iterable[dict]) -> dict[int, list[str]]:
    """``{frame: [comments]}`` (record order within a frame): :func:`iter_notes`, in memory."""
    notes: dict[int, list[str]] = {}
    for frame, text in iter_notes(recs):
        notes.setdefault(frame, []).append(text)
    return notes


def _frameless(rec: dict, conn: dict) -> str:
    if rec["type"] == "transition":
        when = ""
        if rec.get("time") is not None and conn.get("last_time") is not None:
            when = f" {rec['time'] - conn['last_time']:.3f} s after this frame"
        return (f"{transition_comment(rec)} [caused by time{when}, not by a packet; "
                "shown on the connection's last frame]")
    return (f"{anomaly_comment(rec)} [seen at the end of the connection, not at one packet; "
            "shown on its last frame]")


class NoteSpool:
    """Comments keyed by frame, kept in frame order for pass 2 at bounded memory.

    Comments mostly arrive in frame order, but not all (end-of-connection findings go
    on earlier frames), so this is a small external sort: up to ``run_size`` comments
    are held in memory; beyond that each sorted run goes to an anonymous temporary file,
    and :meth:`by_frame` merges the runs.
    """

    def __init__(self, run_size: int = 100_000) -> None:
        self.run_size = run_size
        self._buf: list[tuple[int, int, str]] = []
        self._runs: list = []
        self._n = 0                  # arrival counter: keeps record order within a frame
        self.count = 0

    def add(self, frame: int, text: str) -> None:
        self._buf.append((frame, self._n, text))
        self._n += 1
        self.count += 1
        if len(self._buf) >= self.run_size:
            self._spill()

    def _spill(self) -> None:
        import tempfile

        self._buf.sort()
        f = tempfile.TemporaryFile("w+", encoding="utf-8", newline="\n")
        f.writelines(f"{fr}\t{n}\t{json.dumps(t, ensure_ascii=False)}\n" for fr, n, t in self._buf)
        f.seek(0)
        self._runs.append(f)
        self._buf = []

    @staticmethod
    def _read(f) -> Iterator[tuple[int, int, str]]:
        for line in f:
            fr, n, t = line.split("\t", 2)
            yield int(fr), int(n), json.loads(t)

    def by_frame(self) -> Iterator[tuple[int, list[str]]]:
        """``(frame, [comments])`` in increasing frame order (once)."""
        self._buf.sort()
        merged = heapq.merge(self._buf, *(self._read(f) for f in self._runs))
        cur, texts = None, []
        for fr, _n, t in merged:
            if fr != cur:
                if texts:
                    yield cur, texts
                cur, texts = fr, []
            texts.append(t)
        if texts:
            yield cur, texts
        self.close()

    def close(self) -> None:
        for f in self._runs:
            f.close()
        self._runs = []
        self._buf = []


@dataclass
class Pass1:
    notes: NoteSpool
    frames: int                     # packet records read (good ones)
    error: CaptureError | None


def collect_notes(records: Iterable[dict], stats, *, run_size: int = 100_000) -> Pass1:
    """Pass 1: the comments for ``records`` (the analysis of the capture, as a lazy iterable that
    raises CaptureError after the good part when the capture is damaged), how many frames were good
    (``stats.frames`` once the records are exhausted) and the damage if any."""
    error: list[CaptureError] = []

    def recs() -> Iterator[dict]:
        try:
            yield from records
        except CaptureError as e:
            error.append(e)

    spool = NoteSpool(run_size)
    try:
        for frame, text in iter_notes(recs()):
            spool.add(frame, text)
    except BaseException:
        spool.close()
        raise
    return Pass1(spool, stats.frames, error[0] if error else None)


# --------------------------------------------------------------------------- pass 2


@dataclass
class AnnotateResult:
    input: str
    output: str
    frames: int = 0                 # packets written
    commented: int = 0              # of which carry rawfin comments
    comments: int = 0               # rawfin comments written
    error: CaptureError | None = None   # the input's damage; the output holds frames before it

    @property
    def complete(self) -> bool:
        return self.error is None


def default_output(path: str) -> str:
    """``dir/name.pcap`` -> ``dir/name.rawfin.pcapng`` (next to the input)."""
    d, base = os.path.split(path)
    stem, ext = os.path.splitext(base)
    if ext.lower() not in (".pcap", ".pcapng", ".cap", ".dmp", ".ntar"):
        stem = base
    return os.path.join(d, f"{stem}.rawfin.pcapng")


def _same_file(a: str, b: str) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def _strip_own(options: bytes, big_endian: bool) -> bytes:
    """Packet options without comments a previous rawfin run added (raw, source byte order)."""
    e = ">" if big_endian else "<"
    out = []
    pos, n = 0, len(options)
    own = PREFIX.encode()
    while pos + 4 <= n:
        code, length = struct.unpack_from(e + "HH", options, pos)
        nxt = pos + 4 + ((length + 3) & ~3)
        if not (code == 1 and options[pos + 4:pos + 4 + length].startswith(own)):
            out.append(options[pos:nxt])
        pos = nxt
    return b"".join(out)


def annotate(path: str, output: str | None, records: Iterable[dict], stats, *, stream=None,
             run_size: int = 100_000) -> AnnotateResult:
    """Write ``output`` (pcapng): every packet of ``path`` with rawfin's comments added.

    ``records`` is the analysis of ``path`` (pass 1), lazy: it is only read once the input and
    the output have been checked; ``stats`` is anything whose ``frames`` says how many frames
    the analysis read once ``records`` is exhausted (a ``rawfin.capture.analysis.CaptureStats``).
    The command layer makes both (``rawfin.commands.annotate.annotate_capture``).

    ``output`` None means :func:`default_output`; ``stream`` (a binary file object)
    writes there instead (for ``-o -``). Raises CaptureError when ``path`` is not a
    capture or not one frame of it is readable (nothing written); when it is damaged
    later, returns with ``error`` set and the output holding the good frames, marked
    incomplete. Raises OutputError when the output cannot be created. ``run_size``: how
    many comments pass 1 holds in memory before it sorts them out to a temporary file.
    """
    from rawfin.wire.pcapio import open_capture

    if stream is None:
        output = default_output(path) if output is None else output
        if _same_file(path, output):
            raise SameFileError(f"{output}: is the input itself; name another output with -o")
    else:
        output = "-"
    # annotate reads its input twice: a pipe or a terminal cannot be read again
    if os.path.exists(path) and not stat.S_ISREG(os.stat(path).st_mode):
        raise CaptureError(path, "not a regular file: annotate reads its input twice (analysis, then the copy); "
                                 "save the capture to a file first")
    # Open the input once up front so a missing or non-capture file fails before any work.
    open_capture(path).close()

    p1 = collect_notes(records, stats, run_size=run_size)
    try:
        return _copy(path, output, stream, p1)
    finally:
        p1.notes.close()


def _copy(path: str, output: str, stream, p1: Pass1) -> AnnotateResult:
    """Pass 2: every packet record through the writer, with the comments for its frame."""
    from rawfin import __version__
    from rawfin.wire.pcapio import PcapngWriter, open_capture

    err = p1.error
    if err is not None and (p1.frames == 0 or err.frame is None):
        raise err
    res = AnnotateResult(input=path, output=output, error=err)
    shb = f"annotated by rawfin {__version__} from {os.path.basename(path)}"
    if err is not None:
        shb = (f"INCOMPLETE: {os.path.basename(path)} is damaged at frame {err.frame} ({err.message}); "
               f"this file holds {frames_span(err.frame - 1)} only; {shb}")
    try:
        writer = PcapngWriter(stream if stream is not None else output, comment=shb)
    except OSError as e:
        raise OutputError(f"{output}: cannot create: {e.strerror or e}") from None

    notes = p1.notes.by_frame()          # (frame, comments) in frame order, like the packets
    nxt = next(notes, None)
    limit = p1.frames
    with writer as w, open_capture(path) as cap:
        ifaces = cap.interfaces
        added = 0
        last = None
        for fr in cap if limit else ():
            while added < len(ifaces):      # every IDB in input order: interface ids stay the same
                w.add_source_interface(ifaces[added])
                added += 1
            while nxt is not None and nxt[0] < fr.frame:
                nxt = next(notes, None)     # a frame that is not a packet (cannot happen; be safe)
            extra: list[str] | tuple = ()
            if nxt is not None and nxt[0] == fr.frame:
                extra = nxt[1]
                nxt = next(notes, None)
            if res.frames == limit - 1 and err is not None:
                extra = [*extra, f"{PREFIX}INCOMPLETE: the input is damaged after this frame "
                                 f"(frame {err.frame}: {err.message}); nothing after it is in this file"]
            if fr.comments and any(c.startswith(PREFIX) for c in fr.comments):
                fr = fr._replace(options=_strip_own(fr.options, ifaces[fr.iface].big_endian))
            w.write_frame(fr, ifaces[fr.iface], comments=extra)
            res.frames += 1
            if extra:
                res.commented += 1
                res.comments += len(extra)
            last = fr.frame
            if res.frames >= limit:
                break   # stop where pass 1 stopped: before the damage, or before what a growing file added
        if err is None:
            while added < len(ifaces):      # interfaces described after the last packet
                w.add_source_interface(ifaces[added])
                added += 1
        if res.frames != limit:
            raise CaptureError(path, f"changed while being annotated: pass 1 read {limit} frames, "
                                     f"pass 2 only {res.frames}", frame=(last or 0) + 1)
    return res
