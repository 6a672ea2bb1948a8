"""Output sinks: one per ``--format``. They consume records (dicts) as they stream in."""

from __future__ import annotations

import csv
import os
import textwrap
import sys
from typing import IO

from rawfin.render.records import to_json

ARROW = "→"

CSV_COLUMNS = ("type", "file", "conn", "frame", "time", "endpoint", "peer", "from", "to", "cause",
               "kind", "detail", "client", "server", "server_guessed", "active_closer", "close",
               "final", "anomalies", "first_frame", "last_frame", "mid_stream", "server_active_close")


class Sink:
    def __init__(self, out: IO[str] | None = None) -> None:
        self.out = out or sys.stdout

    def write(self, rec: dict) -> None:  # pragma: no cover - interface
        raise NotImplementedError

    def close(self) -> None:
        self.out.flush()


class JsonlSink(Sink):
    def __init__(self, out: IO[str] | None = None, flush_each: bool = False) -> None:
        super().__init__(out)
        self.flush_each = flush_each

    def write(self, rec: dict) -> None:
        self.out.write(to_json(rec) + "\n")
        if self.flush_each:
            self.out.flush()


class CsvSink(Sink):
    def __init__(self, out: IO[str] | None = None) -> None:
        super().__init__(out)
        self.writer = csv.DictWriter(self.out, fieldnames=CSV_COLUMNS, extrasaction="ignore")
        self.writer.writeheader()

    def write(self, rec: dict) -> None:
        row = dict(rec)
        if isinstance(row.get("final"), dict):
            row["final"] = "; ".join(f"{k}={v}" for k, v in row["final"].items())
        if isinstance(row.get("anomalies"), dict):
            row["anomalies"] = "; ".join(f"{k}={v}" for k, v in row["anomalies"].items())
        self.writer.writerow(row)


def fmt_time(t: float | None, origin: float | None) -> str:
    if t is None:
        return ""
    return f"{t - (origin or 0.0):.6f}"


HEADERS = ["frame", "time", "endpoint", "transition", "cause"]
TABLE_WIDTH = 100
ANOMALIES_PER_KIND = 4


class TableSink(Sink):
    """A transition table per connection, printed when the connection's record arrives.

    With ``summary=True`` only one row per connection, printed at the end.
    """

    def __init__(self, out: IO[str] | None = None, tablefmt: str = "simple", summary: bool = False,
                 time_origin: float | None = None, flush_each: bool = False) -> None:
        super().__init__(out)
        self.tablefmt = tablefmt
        self.summary = summary
        self.origin = time_origin
        self.flush_each = flush_each
        self.pending: dict[tuple, list[dict]] = {}
        self.rows: list[list] = []
        self.first = True

    def set_origin(self, origin: float | None) -> None:
        if self.origin is None:
            self.origin = origin

    def write(self, rec: dict) -> None:
        key = (rec.get("file"), rec.get("conn"))
        if rec["type"] != "connection":
            if not self.summary:
                self.pending.setdefault(key, []).append(rec)
            return
        items = self.pending.pop(key, [])
        if self.summary:
            self.rows.append(summary_row(rec))
            return
        self._print_connection(rec, items)

    def _print_connection(self, conn: dict, items: list[dict]) -> None:
        from tabulate import tabulate

        out = self.out
        if not self.first:
            out.write("\n")
        self.first = False
        out.write(connection_heading(conn) + "\n")
        roles = {}
        if "client" in conn:
            roles = {conn["client"]: "client", conn["server"]: "server"}
        items = sorted(items, key=lambda r: (r["time"] if r["time"] is not None else 0.0))
        rows = []
        for r in items:
            if r["type"] == "transition":
                rows.append([r["frame"] if r["frame"] is not None else "", fmt_time(r["time"], self.origin),
                             roles.get(r["endpoint"], r["endpoint"]), f"{r['from']} {ARROW} {r['to']}",
                             r["cause"]])
        if rows:
            used = sum(max(len(str(row[i])) for row in rows + [HEADERS]) + 2 for i in range(4))
            width = max(28, TABLE_WIDTH - used)
            out.write(tabulate(rows, headers=HEADERS, tablefmt=self.tablefmt, disable_numparse=True,
                               maxcolwidths=[None, None, None, None, width]) + "\n")
        else:
            out.write("  (no state changes seen)\n")
        anomalies = [r for r in items if r["type"] == "anomaly"]
        if anomalies:
            out.write("  anomalies:\n")
            shown: dict[str, int] = {}
            for a in anomalies:
                n = shown[a["kind"]] = shown.get(a["kind"], 0) + 1
                if n > ANOMALIES_PER_KIND:
                    continue
                fr = f"frame {a['frame']}" if a["frame"] is not None else "end"
                out.write(textwrap.fill(f"{a['kind']}: {a['detail']}", TABLE_WIDTH,
                                        initial_indent=f"    {fr:>11}  ", subsequent_indent=" " * 19) + "\n")
            for kind, n in shown.items():
                if n > ANOMALIES_PER_KIND:
                    out.write(f"    {'':>11}  ... and {n - ANOMALIES_PER_KIND} more {kind} "
                              f"(--format jsonl lists them all)\n")
        if self.flush_each:
            out.flush()

    def close(self) -> None:
        from tabulate import tabulate

        # connections whose records came without a closing connection record (scenario output)
        for key, items in list(self.pending.items()):
            if items:
                self._print_connection({"conn": key[1], "file": key[0]}, items)
        self.pending.clear()
        if self.summary and self.rows:
            self.out.write(tabulate(self.rows, headers=SUMMARY_HEADERS, tablefmt=self.tablefmt,
                                    disable_numparse=True) + "\n")
        super().close()


SUMMARY_HEADERS = ["conn", "client", "server", "close", "final client/server", "anomalies"]


def summary_row(c: dict) -> list:
    final = c.get("final") or {}
    closer = c.get("active_closer")
    close = c.get("close", "")
    if closer:
        close += " by client" if closer == c.get("client") else " by SERVER"
    server = c["server"] + (" ?" if c.get("server_guessed") else "")
    conn = str(c["conn"]) if "file" not in c else f"{os.path.basename(c['file'])}#{c['conn']}"
    an = c.get("anomalies") or {}
    return [conn, c["client"], server, close,
            f"{final.get(c['client'], '?')}/{final.get(c['server'], '?')}", sum(an.values()) or ""]


def connection_heading(c: dict) -> str:
    if "client" not in c:
        return f"conn {c.get('conn')}"
    head = f"conn {c['conn']}"
    if c.get("file"):
        head += f" [{c['file']}]"
    head += f": client {c['client']} {ARROW} server {c['server']}"
    if c.get("vlan"):
        head += f" (vlan {'.'.join(map(str, c['vlan']))})"
    bits = []
    if c.get("mid_stream"):
        bits.append("picked up mid-stream")
    if c.get("server_guessed"):
        bits.append("server guessed by port")
    close = c.get("close")
    if close:
        closer = c.get("active_closer")
        who = ""
        if closer:
            who = " by client" if closer == c["client"] else " by SERVER"
        bits.append(f"close: {close}{who}")
    if c.get("server_active_close"):
        bits.append("TIME_WAIT on the server's port")
    return head + ("\n  " + "; ".join(bits) if bits else "")


def make_sink(fmt: str, *, out: IO[str] | None = None, tablefmt: str = "simple", summary: bool = False,
              flush_each: bool = False) -> Sink:
    if fmt == "jsonl":
        return JsonlSink(out, flush_each=flush_each)
    if fmt == "csv":
        return CsvSink(out)
    if fmt == "table":
        return TableSink(out, tablefmt=tablefmt, summary=summary, flush_each=flush_each)
    raise ValueError(f"unknown format {fmt!r}")


