"""`rawfin annotate IN [-o OUT]`: a pcapng copy of IN with rawfin's findings as packet comments.

Thin: the copy is :func:`rawfin.render.annotate.annotate`; its analysis pass is the capture
driver's records (the compiled lane, or the reference), joined here by :func:`annotate_capture`.
stdout stays empty (unless ``-o -`` writes the capture there); what was written, and any
damage, goes to stderr.
"""

from __future__ import annotations

import os
import sys

from rawfin.core.errors import EXIT_DATAERR


def annotate_capture(path: str, output: str | None = None, *, msl_s: float = 30.0, progress: str = "never",
                     stream=None, run_size: int = 100_000, lane: bool = False, limits: dict | None = None,
                     relative_seq: bool = False):
    """Annotate ``path`` into ``output`` (see :func:`rawfin.render.annotate.annotate`), its analysis
    pass through the compiled lane when ``lane`` (the same records), else the reference.
    ``limits``: the half-open timeouts and --max-connections, as rawfin.capture.analysis.records
    takes them. With ``relative_seq`` the comments' texts show relative sequence numbers (--seq
    relative); the ACK-of-FIN verdict line keeps the wire's numbers (it is arithmetic on the raw
    fields, as tshark's tcp.ack_raw)."""
    from rawfin.capture import analysis, engine
    from rawfin.render.annotate import annotate
    from rawfin.render.progress import Progress

    stats = analysis.CaptureStats(path=path)

    def records():
        from rawfin.render.annotate import note_record as record

        with Progress(os.path.basename(path), engine.size_of(path), progress) as bar:
            if lane:
                yield from engine.records(path, msl_s=msl_s, progress=bar.callback, stats=stats, record=record,
                                          limits=limits, relative_seq=relative_seq)
            else:
                yield from analysis.records(path, msl_s=msl_s, progress=bar.callback, stats=stats, record=record,
                                            limits=limits, relative_seq=relative_seq)

    return annotate(path, output, records(), stats, stream=stream, run_size=run_size)


def run(args) -> int:
    from rawfin.cli import limits, relative_seq
    from rawfin.capture import engine
    from rawfin.render.annotate import frames_span

    lane = engine.choose(getattr(args, "engine", "auto"))
    out = args.output
    stream = None
    if out == "-":
        if sys.stdout.isatty():
            print("rawfin annotate: -o -: will not write a capture to a terminal; pipe it or name a file",
                  file=sys.stderr)
            return 2
        stream = sys.stdout.buffer
    res = annotate_capture(args.capture, None if stream is not None else out, msl_s=args.msl,
                   progress=getattr(args, "progress", "auto"), stream=stream, lane=lane, limits=limits(args),
                   relative_seq=relative_seq(args))
    if stream is not None:
        stream.flush()
    where = "stdout" if stream is not None else res.output
    summary = f"{res.frames:,} frames, {res.comments:,} rawfin comments on {res.commented:,} frames"
    if res.error is not None:
        print(f"rawfin annotate: {res.error}; wrote {where} with {frames_span(res.error.frame - 1)} only "
              f"({summary}; marked INCOMPLETE)", file=sys.stderr)
        return EXIT_DATAERR
    print(f"rawfin annotate: wrote {where} ({summary})", file=sys.stderr)
    return 0
