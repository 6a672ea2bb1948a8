"""`rawfin annotate IN [-o OUT]`: a pcapng copy of IN with rawfin's findings as packet comments.

Thin: the work is :func:`rawfin.annotate.annotate`. stdout stays empty (unless ``-o -``
writes the capture there); what was written, and any damage, goes to stderr.
"""

from __future__ import annotations

import sys

from rawfin.core.errors import EXIT_DATAERR


def run(args) -> int:
    from rawfin.capture import engine
    from rawfin.render.annotate import annotate, frames_span

    lane = engine.choose(getattr(args, "engine", "auto"))
    out = args.output
    stream = None
    if out == "-":
        if sys.stdout.isatty():
            print("rawfin annotate: -o -: will not write a capture to a terminal; pipe it or name a file",
                  file=sys.stderr)
            return 2
        stream = sys.stdout.buffer
    res = annotate(args.capture, None if stream is not None else out, msl_s=args.msl,
                   progress=getattr(args, "progress", "auto"), stream=stream, lane=lane)
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
