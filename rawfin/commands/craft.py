"""`rawfin craft`: a TCP close (the 4-way close or a variant) as real segments, printed and written."""

from __future__ import annotations

import sys

from rawfin.render.records import to_json

from rawfin.core.errors import UsageError
from rawfin.core.segment import flags_text, fmt_endpoint
from rawfin.core.segment import parse_endpoint as segment_parse_endpoint


def parse_endpoint(text: str, what: str) -> tuple[str, int]:
    try:
        return segment_parse_endpoint(text)
    except ValueError as e:
        raise UsageError(f"--{what}: {e}") from None


def build(args):
    from rawfin.sim import craft

    client = parse_endpoint(args.client, "client")
    server = parse_endpoint(args.server, "server")
    if (":" in client[0]) != (":" in server[0]):
        raise UsageError("--client and --server must be the same IP version")
    data = args.data.encode()
    kw = dict(closer=args.closer)
    if args.kind == "4way":
        segs = craft.close_4way(client, server, args.x, args.y, **kw)
    elif args.kind == "3way":
        segs = craft.close_3way(client, server, args.x, args.y, **kw)
    elif args.kind == "fin-with-data":
        segs = craft.close_fin_with_data(client, server, args.x, args.y, data=data, **kw)
    elif args.kind == "simultaneous":
        segs = craft.close_simultaneous(client, server, args.x, args.y, **kw)
    elif args.kind == "rst":
        segs = craft.rst(client, server, args.x, args.y, **kw)
    else:
        return craft.connection(client, server, args.x, args.y, closer=args.closer,
                                requests=((b"", data),) if data else ())
    return craft.timed(segs)


def run(args) -> int:
    segs = build(args)
    if args.write:
        from rawfin.wire.codec import to_bytes
        from rawfin.wire.pcapio import LINKTYPE_RAW, PcapWriter

        with PcapWriter(args.write, linktype=LINKTYPE_RAW) as w:
            for s in segs:
                w.write(to_bytes(s), time_ns=s.time_ns or 0)
        print(f"rawfin craft: wrote {len(segs)} segments to {args.write}", file=sys.stderr)
    rows = []
    for i, s in enumerate(segs, 1):
        rows.append({"frame": i, "src": fmt_endpoint(s.src, s.sport), "dst": fmt_endpoint(s.dst, s.dport),
                     "flags": flags_text(s.flags), "seq": s.seq, "ack": s.ack if s.has_ack else None,
                     "len": s.data_len})
    if args.format == "jsonl":
        for r in rows:
            sys.stdout.write(to_json({"type": "segment", **r}) + "\n")
        return 0
    from rawfin.render.tables import table
    if args.seq == "relative":      # the table (not the jsonl fields) counts from each side's base, as Wireshark
        from rawfin.core import seq as sq
        bases: dict = {}
        for r, s in zip(rows, segs):
            sq.note_bases(bases, (s.src, s.sport), (s.dst, s.dport), s.seq, s.ack, s.syn, s.has_ack)
            r["seq"] = sq.relative(s.seq, bases[(s.src, s.sport)])
            if r["ack"] is not None:
                r["ack"] = sq.relative(s.ack, bases.get((s.dst, s.dport)))
    print(table(["frame", "from", "", "to", "flags", "seq", "ack", "len"],
                [[r["frame"], r["src"], "→", r["dst"], r["flags"], r["seq"], r["ack"], r["len"]] for r in rows],
                args.tablefmt))
    return 0
