"""Output sinks: one per ``--format``. They consume records (dicts) as they stream in.

Every sink writes as it goes and keeps only what it must: the table holds a connection's
transitions until the connection's record says who it was (client, server, close) and
then prints its block; anomalies it keeps only as many of each kind as it shows, with a
count of the rest. ``--summary`` means one record per connection in every format.

The compiled lane has a writer of its own for the same formats
(``rawfin/capture/lane/writer.c``, driven through :func:`layout`), which must write the
same characters as these sinks: ``tests/test_writers.py`` compares them.
"""

from __future__ import annotations

import csv
import os
import sys
from typing import IO

from rawfin.render.records import to_json
from rawfin.render.tables import WRAP_FIRST_FLOOR, Layout, terminal_width, wrap

try:  # optional, as the lane is: without a C compiler the Python sinks below do the same
    from rawfin.render import _writer
except ImportError:  # pragma: no cover - depends on the build
    _writer = None
else:
    from rawfin.wire import native

    if native.stale(_writer, native.WRITER):    # built from other sources: the Python sinks, the same output
        _writer = None

ARROW = "→"

#: csv columns: every record type's fields, in the order the records have them
CSV_COLUMNS = ("type", "file", "conn", "frame", "time", "endpoint", "peer", "from", "to", "cause",
               "kind", "detail", "client", "server", "server_guessed", "active_closer", "passive_closer", "reset_by",
               "close", "final", "first_frame", "last_frame", "first_time", "last_time", "packets",
               "mid_stream", "server_active_close", "anomalies", "vlan")
#: ``--summary --format csv``: one row per connection, the ``connection`` record's fields
CSV_SUMMARY_COLUMNS = ("file", "conn", "client", "server", "server_guessed", "active_closer", "passive_closer",
                       "reset_by", "close", "final", "first_frame", "last_frame", "first_time", "last_time", "packets",
                       "mid_stream", "server_active_close", "anomalies", "vlan")

HEADERS = ("frame", "time", "endpoint", "transition", "cause")

SUMMARY_HEADERS = ("conn", "client", "server", "close", "final client/server", "anomalies")
#: the columns that wrap first when a table is too wide: free text (the cause; a file name, the close)
WRAP_FIRST = (4,)
SUMMARY_WRAP_FIRST = (0, 3)
#: anomalies of one kind a connection's table lists; the rest are counted
ANOMALIES_PER_KIND = 4
#: --summary aligns its columns on this many connections, then streams with those widths
SUMMARY_BATCH = 1000

#: the words of the table, in one place (the lane's writer is given them: see layout())
PHRASES = {
    "arrow": ARROW,
    "client": "client",
    "server": "server",
    "by_client": " by client",
    "by_server": " by SERVER",
    "after_fin": " after a FIN",
    "after_own_fin": " after its FIN",
    "mid_stream": "picked up mid-stream",
    "guessed": "server guessed by port",
    "close": "close: ",
    "server_tw": "TIME_WAIT on the server's port",
    "no_changes": "  (no state changes seen)",
    "anomalies": "  anomalies:",
    "end": "end",
    "more": "... and {n} more {kind} (--format jsonl lists them all)",
    "no_conn": "not in any connection",
    "guess_mark": " ?",
    # a transition the capture cannot decide: " ?" after it, the other reading after its cause
    "inferred_mark": " ?",
    "inferred_open": " [",
    "inferred_close": "]",
}
#: an anomaly's line: indented, the frame right-aligned in a field of its own, the text after
ANOMALY_INDENT, ANOMALY_WHERE = 4, 11
ANOMALY_REST = " " * (ANOMALY_INDENT + ANOMALY_WHERE + 4)


def _anomaly_prefix(where: str) -> str:
    return " " * ANOMALY_INDENT + where.rjust(ANOMALY_WHERE) + "  "


class Sink:
    def __init__(self, out: IO[str] | None = None) -> None:
        self.out = out or sys.stdout

    def write(self, rec: dict) -> None:  # pragma: no cover - interface
        raise NotImplementedError

    def start_file(self) -> None:
        """A capture begins (several may go into the same sink)."""

    def set_origin(self, origin: float | None) -> None:
        """What the table's times count from: the capture's first frame."""

    def end_file(self) -> None:
        """One capture is done."""

    def close(self) -> None:
        self.out.flush()


class JsonlSink(Sink):
    def __init__(self, out: IO[str] | None = None, flush_each: bool = False, summary: bool = False) -> None:
        super().__init__(out)
        self.flush_each = flush_each
        self.summary = summary

    def write(self, rec: dict) -> None:
        if self.summary and rec["type"] != "connection":
            return
        self.out.write(to_json(rec) + "\n")
        if self.flush_each:
            self.out.flush()


def csv_cell(v):
    """A record's value as csv writes it: dicts as ``k=v; k=v``, lists space-separated."""
    if v.__class__ is dict:
        return "; ".join(f"{k}={x}" for k, x in v.items())
    if v.__class__ is list:
        return " ".join(str(x) for x in v)
    return v


class CsvSink(Sink):
    def __init__(self, out: IO[str] | None = None, summary: bool = False) -> None:
        super().__init__(out)
        self.summary = summary
        self.columns = CSV_SUMMARY_COLUMNS if summary else CSV_COLUMNS
        self.writer = csv.writer(self.out)
        self.writer.writerow(self.columns)

    def write(self, rec: dict) -> None:
        if self.summary and rec["type"] != "connection":
            return
        get = rec.get
        self.writer.writerow([csv_cell(get(c)) for c in self.columns])


def fmt_time(t: float | None, origin: float | None) -> str:
    if t is None:
        return ""
    return f"{t - (origin or 0.0):.6f}"


def _time_key(rec: dict) -> float:
    t = rec["time"]
    return t if t is not None else 0.0


class _Pending:
    """What the table holds of one connection until its record comes."""

    __slots__ = ("transitions", "kinds", "order")

    def __init__(self) -> None:
        self.transitions: list[dict] = []
        self.kinds: dict[str, list] = {}    # kind -> [count, kept: [(time, order, record)], at most N]
        self.order = 0

    def add(self, rec: dict) -> None:
        if rec["type"] == "transition":
            self.transitions.append(rec)
            return
        self.order += 1
        entry = self.kinds.get(rec["kind"])
        if entry is None:
            entry = self.kinds[rec["kind"]] = [0, []]
        entry[0] += 1
        kept = entry[1]
        item = (_time_key(rec), self.order, rec)
        if len(kept) < ANOMALIES_PER_KIND:
            kept.append(item)
        elif item[:2] < kept[-1][:2]:
            kept[-1] = item
        else:
            return
        kept.sort(key=lambda x: x[:2])      # the earliest N of the kind, by time then arrival


class TableSink(Sink):
    """A transition table per connection, printed when the connection's record arrives.

    With ``summary=True`` one row per connection instead. ``tablefmt`` other than
    ``simple`` goes through tabulate (slower; its summary is one table at the end).
    """

    def __init__(self, out: IO[str] | None = None, tablefmt: str = "simple", summary: bool = False,
                 time_origin: float | None = None, flush_each: bool = False, width: int | None = None) -> None:
        super().__init__(out)
        self.tablefmt = tablefmt
        self.summary = summary
        self.origin = time_origin
        self.flush_each = flush_each
        self.width = terminal_width(self.out) if width is None else width
        self.pending: dict[tuple, _Pending] = {}
        self.rows: list[list[str]] = []      # summary rows not yet printed
        self.layout: Layout | None = None    # the summary's widths, once its first batch is out
        self.first = True

    def set_origin(self, origin: float | None) -> None:
        if self.origin is None:
            self.origin = origin

    def start_file(self) -> None:
        self.origin = None      # each capture's times count from its own first frame

    def write(self, rec: dict) -> None:
        kind = rec["type"]
        if kind == "connection":
            key = (rec.get("file"), rec.get("conn"))
            held = self.pending.pop(key, None)
            if self.summary:
                self._summary_row(summary_row(rec))
            else:
                self._print_connection(rec, held)
        elif not self.summary and (kind == "transition" or kind == "anomaly"):
            key = (rec.get("file"), rec["conn"])
            held = self.pending.get(key)
            if held is None:
                held = self.pending[key] = _Pending()
            held.add(rec)

    # -- one connection's block ----------------------------------------------------------------
    def _print_connection(self, conn: dict, held: _Pending | None) -> None:
        out = self.out
        width = self.width
        if not self.first:
            out.write("\n")
        self.first = False
        out.write(connection_heading(conn, width) + "\n")
        roles = {}
        if "client" in conn:
            roles = {conn["client"]: PHRASES["client"], conn["server"]: PHRASES["server"]}
        trans = sorted(held.transitions, key=_time_key) if held is not None else []
        if trans:
            origin = self.origin
            arrow = f" {ARROW} "
            rows = [[str(r["frame"]) if r["frame"] is not None else "", fmt_time(r["time"], origin),
                     roles.get(r["endpoint"], r["endpoint"]), r["from"] + arrow + r["to"] + _mark(r), _cause(r)]
                    for r in trans]
            out.write(self._table(HEADERS, rows))
        else:
            out.write(PHRASES["no_changes"] + "\n")
        if held is not None and held.kinds:
            self._anomalies(held)
        if self.flush_each:
            out.flush()

    def _anomalies(self, held: _Pending) -> None:
        out = self.out
        out.write(PHRASES["anomalies"] + "\n")
        kept = sorted((x for _, k in held.kinds.values() for x in k), key=lambda x: x[:2])
        order: list[str] = []
        for _, _, a in kept:
            if a["kind"] not in order:
                order.append(a["kind"])
            where = f"frame {a['frame']}" if a["frame"] is not None else PHRASES["end"]
            out.write("\n".join(wrap(f"{a['kind']}: {a['detail']}", self.width,
                                     _anomaly_prefix(where), ANOMALY_REST)) + "\n")
        for kind in order:
            n = held.kinds[kind][0] - ANOMALIES_PER_KIND
            if n > 0:
                out.write(_anomaly_prefix("") + PHRASES["more"].format(n=n, kind=kind) + "\n")

    def _table(self, headers, rows) -> str:
        if self.tablefmt == "simple":
            lay = Layout(headers, rows, self.width, WRAP_FIRST if headers is HEADERS else SUMMARY_WRAP_FIRST)
            return lay.head() + "".join(lay.row(r) for r in rows)
        from tabulate import tabulate
        used = sum(max(len(row[i]) for row in rows + [list(headers)]) + 2 for i in range(len(headers) - 1))
        return tabulate(rows, headers=headers, tablefmt=self.tablefmt, disable_numparse=True,
                        maxcolwidths=[None] * (len(headers) - 1) + [max(20, self.width - used)]) + "\n"

    # -- --summary -------------------------------------------------------------------------------
    def _summary_row(self, row: list[str]) -> None:
        if self.layout is not None:
            self.out.write(self.layout.row(row))
            return
        self.rows.append(row)
        if len(self.rows) >= SUMMARY_BATCH and self.tablefmt == "simple":
            self._summary_batch()

    def _summary_batch(self) -> None:
        rows, self.rows = self.rows, []
        if not rows:
            return
        if self.tablefmt != "simple":
            self.out.write(self._table(SUMMARY_HEADERS, rows))
            return
        self.layout = Layout(SUMMARY_HEADERS, rows, self.width, SUMMARY_WRAP_FIRST)
        self.out.write(self.layout.head() + "".join(self.layout.row(r) for r in rows))

    def end_file(self) -> None:
        # what came without a connection record (malformed packets: no connection) is printed now
        for key in list(self.pending):
            held = self.pending.pop(key)
            self._print_connection({"conn": key[1], "file": key[0]}, held)

    def close(self) -> None:
        self.end_file()
        if self.summary:
            self._summary_batch()
        super().close()


def _by(who: str, c: dict) -> str:
    return PHRASES["by_client"] if who == c.get("client") else PHRASES["by_server"]


def close_words(c: dict) -> str:
    """A connection record's close and who did it: ``four_way by client`` (who sent the first FIN),
    ``reset by SERVER`` (who sent the RST), ``reset by SERVER after a FIN by client`` (both), ``reset
    by client after its FIN``."""
    closer, rst = c.get("active_closer"), c.get("reset_by")
    words = c["close"]
    if rst:
        words += _by(rst, c)
        if closer == rst:
            return words + PHRASES["after_own_fin"]
        if closer:
            words += PHRASES["after_fin"]
    if closer:
        words += _by(closer, c)
    return words


def summary_row(c: dict) -> list[str]:
    final = c.get("final") or {}
    close = close_words(c) if c.get("close") else _by(c.get("active_closer"), c) if c.get("active_closer") else ""
    server = c["server"] + (PHRASES["guess_mark"] if c.get("server_guessed") else "")
    conn = str(c["conn"]) if "file" not in c else f"{os.path.basename(c['file'])}#{c['conn']}"
    an = c.get("anomalies") or {}
    total = sum(an.values())
    return [conn, c["client"], server, close,
            f"{final.get(c['client'], '?')}/{final.get(c['server'], '?')}", str(total) if total else ""]


def connection_heading(c: dict, width: int | None = None) -> str:
    """The lines above a connection's table: who it was, then how it closed."""
    width = terminal_width() if width is None else width
    if "client" not in c:
        head = f"conn {c.get('conn')}" if c.get("conn") is not None else PHRASES["no_conn"]
        if c.get("file"):
            head += f" [{c['file']}]"
        return "\n".join(wrap(head, width, "", "  "))
    head = f"conn {c['conn']}"
    if c.get("file"):
        head += f" [{c['file']}]"
    head += f": {PHRASES['client']} {c['client']} {ARROW} {PHRASES['server']} {c['server']}"
    if c.get("vlan"):
        head += f" (vlan {'.'.join(map(str, c['vlan']))})"
    bits = []
    if c.get("mid_stream"):
        bits.append(PHRASES["mid_stream"])
    if c.get("server_guessed"):
        bits.append(PHRASES["guessed"])
    if c.get("close"):
        bits.append(PHRASES["close"] + close_words(c))
    if c.get("server_active_close"):
        bits.append(PHRASES["server_tw"])
    lines = wrap(head, width, "", "  ")
    if bits:
        lines += wrap("; ".join(bits), width, "  ", "  ")
    return "\n".join(lines)


def layout(fmt: str, summary: bool, width: int) -> dict:
    """What the lane's writer is given at start: the format, the columns and the words."""
    return {"format": fmt, "summary": summary, "width": width, "headers": HEADERS,
            "summary_headers": SUMMARY_HEADERS, "wrap_first": WRAP_FIRST, "summary_wrap_first": SUMMARY_WRAP_FIRST,
            "wrap_first_floor": WRAP_FIRST_FLOOR,
            "csv_columns": CSV_SUMMARY_COLUMNS if summary else CSV_COLUMNS, "phrases": PHRASES,
            "anomalies_per_kind": ANOMALIES_PER_KIND, "summary_batch": SUMMARY_BATCH,
            "anomaly_indent": ANOMALY_INDENT, "anomaly_where": ANOMALY_WHERE}


class FastSink(Sink):
    """The table (``simple``), ``--summary``, csv and ``--summary`` JSON lines of the sinks above,
    written by ``rawfin/render/_writer.c`` from JSON lines: ``feed`` takes the lane's output as
    it comes, ``write`` a record dict (serialized first)."""

    def __init__(self, fmt: str, out: IO[str] | None = None, summary: bool = False,
                 width: int | None = None) -> None:
        super().__init__(out)
        self.out.flush()
        raw = getattr(self.out, "buffer", None)
        if raw is not None:
            write = raw.write
        else:                   # a text stream only (tests): the writer's chunks end at a line's end
            def write(b: bytes, text=self.out) -> None:
                text.write(b.decode("utf-8"))
        width = terminal_width(self.out) if width is None else width
        self.writer = _writer.Writer(layout(fmt, summary, width), write)
        self.feed = self.writer.feed
        self.origin: float | None = None

    @staticmethod
    def handles(fmt: str, tablefmt: str = "simple", summary: bool = False) -> bool:
        return _writer is not None and (fmt == "csv" or (fmt == "table" and tablefmt == "simple")
                                        or (fmt == "jsonl" and summary))

    def set_origin(self, origin: float | None) -> None:
        if self.origin is None and origin is not None:
            self.origin = origin
            self.writer.set_origin(origin)

    def start_file(self) -> None:
        self.origin = None
        self.writer.set_origin(None)

    def write(self, rec: dict) -> None:
        self.feed((to_json(rec) + "\n").encode("utf-8"))

    def end_file(self) -> None:
        self.writer.end_file()

    def close(self) -> None:
        self.writer.close()
        super().close()


def make_sink(fmt: str, *, out: IO[str] | None = None, tablefmt: str = "simple", summary: bool = False,
              flush_each: bool = False, width: int | None = None, fast: bool = False) -> Sink:
    """The sink for ``--format fmt``; ``fast``: the C writer where it has the format (and is built)."""
    if fast and not flush_each and FastSink.handles(fmt, tablefmt, summary):
        return FastSink(fmt, out, summary=summary, width=width)
    if fmt == "jsonl":
        return JsonlSink(out, flush_each=flush_each, summary=summary)
    if fmt == "csv":
        return CsvSink(out, summary=summary)
    if fmt == "table":
        return TableSink(out, tablefmt=tablefmt, summary=summary, flush_each=flush_each, width=width)
    raise ValueError(f"unknown format {fmt!r}")


def _mark(rec: dict) -> str:
    """A transition the capture cannot decide is marked `` ?`` in the table ..."""
    return PHRASES["inferred_mark"] if "inferred" in rec else ""


def _cause(rec: dict) -> str:
    """... and its cause names the other reading: ``rcv FIN seq=1101 [or FIN_WAIT_2 if ...]``."""
    inferred = rec.get("inferred")
    return rec["cause"] + PHRASES["inferred_open"] + inferred + PHRASES["inferred_close"] if inferred else rec["cause"]
