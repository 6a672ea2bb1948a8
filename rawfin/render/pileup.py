"""The pile-up view: ``rawfin analyze --by server|client|host``.

Which server is piling up TIME_WAIT (it closes first) or CLOSE_WAIT (its application does not
close), how many at the worst moment and when, and for how long a socket sat in CLOSE_WAIT.

It consumes the records every other output consumes (``transition`` and ``connection``), as
they stream: a group's counters move with each transition into or out of TIME_WAIT and
CLOSE_WAIT, at the transition's capture time. What it keeps follows the groups (servers,
clients, hosts) and the short window in which records can arrive out of time order, not the
connections: per open connection only which side is the server (from its first transition,
as the observer decided it) and when a socket entered CLOSE_WAIT.

Groups:

* ``server``: one row per server address:port; the server side's sockets are counted.
* ``client``: one row per client address (its ports are ephemeral); the client side's sockets.
* ``host``: one row per address, each socket counted at its own address, whatever its role.

Several captures are read as one timeline (a directory of rotated captures): connections do
not carry over from one file to the next (each file's observer starts afresh).
"""

from __future__ import annotations

import heapq
import math
import os
from array import array
from collections import Counter
from typing import IO, Callable

from rawfin.core.events import ConnectionEnd, Transition
from rawfin.core.observer import guess_server
from rawfin.core.units import seconds_of

GROUP_BY = ("server", "client", "host")
WATCHED = ("TIME_WAIT", "CLOSE_WAIT")
TW, CW = 0, 1
_INDEX = {"TIME_WAIT": TW, "CLOSE_WAIT": CW}

#: records may come out of capture-time order by up to the observer's holds (a FIN's effect
#: waits for its receiver's answer, a final ACK for a retransmitted FIN): events wait this long
REORDER_S = 10.0
#: buckets per group for the sparkline and the plot (the bucket width doubles as time goes on)
SERIES = 128
SPARK = " ▁▂▃▄▅▆▇█"
SPARK_WIDTH = 10


def _split(endpoint: str) -> tuple[str, int]:
    host, _, port = endpoint.rpartition(":")
    return (host[1:-1] if host.startswith("[") else host), int(port)


def _host(endpoint: str) -> str:
    host = endpoint.rpartition(":")[0]
    return host[1:-1] if host.startswith("[") else host


def _roles(rec: dict) -> tuple[str, str]:
    """(client, server) of a connection from its first transition, as the observer decided them:
    the SYN's sender is the client (CLOSED → SYN_SENT; a SYN,ACK seen first leaves the client in
    SYN_SENT and the server in SYN_RECEIVED); with no handshake the server is guessed by port
    (rawfin.core.observer.guess_server)."""
    ep, peer, frm, to = rec["endpoint"], rec["peer"], rec["from"], rec["to"]
    if to == "SYN_SENT" or frm == "SYN_SENT":
        return ep, peer
    if to in ("SYN_RECEIVED", "LISTEN") or frm in ("SYN_RECEIVED", "LISTEN"):
        return peer, ep
    server = guess_server(_split(ep), _split(peer))
    return (peer, ep) if server == _split(ep) else (ep, peer)


class Group:
    """One server (or client, or host): its counters, worst moments and series."""

    __slots__ = ("key", "connections", "closes", "first_closer", "now", "worst", "worst_at", "longest_cw",
                 "longest_cw_since", "longest_cw_conn", "series", "interval_max", "touched")

    def __init__(self, key: str) -> None:
        self.key = key
        self.connections = 0
        self.closes: Counter = Counter()
        self.first_closer: Counter = Counter()       # "client"/"server" -> connections it closed first
        self.now = [0, 0]                            # sockets in TIME_WAIT, CLOSE_WAIT now
        self.worst = [0, 0]
        self.worst_at: list[int | None] = [None, None]
        self.longest_cw = 0                          # ns
        self.longest_cw_since: int | None = None
        self.longest_cw_conn: tuple | None = None
        self.series = (array("l"), array("l"))       # max per bucket
        self.interval_max = [0, 0]                   # --interval: the max within the current interval
        self.touched = False

    def record(self, *, by: str, time_origin: float | None, end_ns: int | None, file: str | None) -> dict:
        def t(ns):
            return None if ns is None else round(ns / 1e9, 6)
        rec = {"type": "pileup", "by": by, "group": self.key, "connections": self.connections,
               "closes": dict(sorted(self.closes.items())),
               "closed_first_by_client": self.first_closer["client"],
               "closed_first_by_server": self.first_closer["server"],
               "time_wait_end": self.now[TW], "time_wait_worst": self.worst[TW], "time_wait_worst_time":
               t(self.worst_at[TW]), "close_wait_end": self.now[CW], "close_wait_worst": self.worst[CW],
               "close_wait_worst_time": t(self.worst_at[CW]),
               "longest_close_wait_s": round(self.longest_cw / 1e9, 6),
               "longest_close_wait_since": t(self.longest_cw_since),
               "longest_close_wait_conn": None if self.longest_cw_conn is None else self.longest_cw_conn[1]}
        if self.longest_cw_conn is not None and self.longest_cw_conn[0] is not None:
            rec["longest_close_wait_file"] = self.longest_cw_conn[0]
        return rec


class Pileup:
    """The aggregation: feed it records (:meth:`write`), then :meth:`finish`.

    ``interval_ns``: also a time series, one ``pileup_sample`` per group and interval in which
    it had a socket in TIME_WAIT or CLOSE_WAIT (``emit`` receives them as they are complete)."""

    def __init__(self, by: str = "server", interval_ns: int | None = None, emit=None) -> None:
        if by not in GROUP_BY:
            raise ValueError(f"group by {by!r}")
        self.by = by
        self.interval_ns = interval_ns
        self.emit = emit or (lambda rec: None)
        self.groups: dict[str, Group] = {}
        self.open: dict[tuple, list] = {}             # (file, conn) -> [client, server, {endpoint: cw since}]
        self.heap: list = []                         # (time_ns, seq, group, which, delta, conn key, endpoint)
        self.seq = 0
        self.latest = None                           # the latest capture time seen (ns)
        self.first = None                            # the first capture time (ns): series origin
        self.width = None                            # series bucket width (ns)
        self.interval_start: int | None = None       # --interval: the current interval's start (ns)
        self.late = 0                                # events that came later than REORDER_S (counted)
        self.mismatched = 0                          # connections whose roles the first transition misread
        self.swept = None                            # the time the sweep has reached

    # -- input ------------------------------------------------------------------------------
    def set_origin(self, seconds: float | None) -> None:
        if seconds is not None and self.first is None:
            self.first = int(round(seconds * 1e9))

    def _group(self, key: str) -> Group:
        g = self.groups.get(key)
        if g is None:
            g = self.groups[key] = Group(key)
        return g

    def _keys(self, endpoint: str, roles: list) -> str | None:
        if self.by == "host":
            return _host(endpoint)
        if self.by == "server":
            return endpoint if endpoint == roles[1] else None
        return _host(endpoint) if endpoint == roles[0] else None

    def write(self, rec: dict) -> None:
        typ = rec["type"]
        if typ == "transition":
            self._transition(rec)
        elif typ == "connection":
            self._connection(rec)

    def _transition(self, rec: dict) -> None:
        self.move((rec.get("file"), rec["conn"]), rec["time"], rec["endpoint"], rec["peer"], rec["from"], rec["to"])

    def opened(self, ck: tuple, ep: str, peer: str, frm: str, to: str, names: tuple | None = None) -> list:
        """A connection's first transition: its roles (``names``: its sides' endpoint names, when its
        moves name a side instead of an endpoint)."""
        client, server = _roles({"endpoint": ep, "peer": peer, "from": frm, "to": to})
        st = self.open[ck] = [client, server, None, names]
        return st

    def move(self, ck: tuple, time_s: float | None, ep: str, peer: str, frm: str, to: str) -> None:
        """One transition record's fields: connection key (file, conn), time, endpoint, peer, from, to."""
        st = self.open.get(ck)
        if st is None:
            st = self.opened(ck, ep, peer, frm, to)
        a, b = _INDEX.get(frm), _INDEX.get(to)
        if a is None and b is None:
            return
        self.moved(ck, st, int(round(time_s * 1e9)) if time_s is not None else (self.latest or 0), ep, a, b)

    def moved(self, ck: tuple, st: list, t: int, ep: str, a: int | None, b: int | None) -> None:
        """A move into or out of TIME_WAIT or CLOSE_WAIT (``a``/``b``: TW, CW or None) of ``ep`` at ``t``
        (ns, as the record's time gives it), on the connection ``st`` (:meth:`opened`)."""
        self._seen(t)
        key = self._keys(ep, st)
        if key is None:
            return
        if b == CW and a != CW:
            if st[2] is None:
                st[2] = {}
            st[2][ep] = t
        if a == CW and b != CW and st[2] and ep in st[2]:
            self._close_wait_ended(key, ck, st[2].pop(ep), t)
        if a is not None:
            self._push(t, key, a, -1)
        if b is not None:
            self._push(t, key, b, +1)

    def _connection(self, rec: dict) -> None:
        self.ended((rec.get("file"), rec["conn"]), rec["client"], rec["server"], rec["close"],
                   rec.get("active_closer"), rec.get("last_time"))

    def ended(self, ck: tuple, client: str, server: str, close: str, closer: str | None,
              last_time_s: float | None) -> None:
        """A connection record's fields: connection key (file, conn), client, server, close kind, active
        closer, last time (s, as the record gives it)."""
        st = self.open.pop(ck, None)
        if st is not None and (st[0], st[1]) != (client, server):
            self.mismatched += 1
        if last_time_s is not None:
            self._seen(int(round(last_time_s * 1e9)))
        if self.by == "host":
            keys = {_host(client), _host(server)}
        else:
            keys = {server if self.by == "server" else _host(client)}
        for k in keys:
            g = self._group(k)
            g.connections += 1
            g.closes[close] += 1
            if closer:
                g.first_closer["client" if closer == client else "server"] += 1
        if st is not None and st[2]:
            # still in CLOSE_WAIT at the end of the capture (or of its file): as long as it was seen
            for ep, since in st[2].items():
                key = self._keys(ep, [client, server])
                if key is not None:
                    self._close_wait_ended(key, ck, since, max(since, self.latest or since))

    def _close_wait_ended(self, key: str, ck: tuple, since: int, end: int) -> None:
        g = self._group(key)
        if g.longest_cw_conn is None or end - since > g.longest_cw:
            g.longest_cw = end - since
            g.longest_cw_since = since
            g.longest_cw_conn = ck

    # -- the sweep in time order -----------------------------------------------------------------
    def _seen(self, t: int) -> None:
        if self.first is None:
            self.first = t
        if self.latest is None or t > self.latest:
            self.latest = t
            self._sweep(t - int(REORDER_S * 1e9))

    def _push(self, t: int, key: str, which: int, delta: int) -> None:
        if self.swept is not None and t < self.swept:
            self.late += 1
            t = self.swept
        self.seq += 1
        heapq.heappush(self.heap, (t, self.seq, key, which, delta))

    def _sweep(self, upto: int) -> None:
        heap = self.heap
        while heap and heap[0][0] <= upto:
            t, _, key, which, delta = heapq.heappop(heap)
            self._apply(t, key, which, delta)
        if self.swept is None or upto > self.swept:
            self.swept = upto

    def _apply(self, t: int, key: str, which: int, delta: int) -> None:
        self._interval_to(t)
        g = self._group(key)
        i = self._index(t)
        for w in (TW, CW):              # buckets up to this one exist; new ones start at the count then
            sw = g.series[w]
            while len(sw) <= i:
                sw.append(g.now[w])
        g.now[which] += delta
        n = g.now[which]
        if n > g.worst[which]:
            g.worst[which] = n
            g.worst_at[which] = t
        if n > g.interval_max[which]:
            g.interval_max[which] = n
        g.touched = True
        sw = g.series[which]
        if n > sw[i]:
            sw[i] = n

    # -- series for the sparkline and the plot --------------------------------------------------
    def _index(self, t: int) -> int:
        origin = self.first if self.first is not None else t
        if self.width is None:
            self.width = 1_000_000          # 1 ms, doubled as the capture goes on
        i = max(0, (t - origin) // self.width)
        while i >= SERIES:
            self._widen()
            i = max(0, (t - origin) // self.width)
        return i

    def _widen(self) -> None:
        self.width *= 2
        for g in self.groups.values():
            for sw in g.series:
                sw[:] = array("l", (max(sw[j:j + 2]) for j in range(0, len(sw), 2)))

    def series(self, g: Group) -> tuple[list[int], list[int]]:
        """(TIME_WAIT, CLOSE_WAIT) maxima per bucket from the first capture time to the last."""
        if self.width is None or self.first is None or self.latest is None:
            return [], []
        n = min(SERIES, (self.latest - self.first) // self.width + 1)
        out = []
        for w in (TW, CW):
            s = list(g.series[w])
            s += [g.now[w]] * (n - len(s))
            out.append(s[:n])
        return out[0], out[1]

    # -- --interval samples ------------------------------------------------------------------------
    def _interval_to(self, t: int) -> None:
        iv = self.interval_ns
        if iv is None:
            return
        if self.interval_start is None:
            origin = self.first if self.first is not None else t
            self.interval_start = origin
        while t >= self.interval_start + iv:
            self._emit_interval(self.interval_start + iv)
            self.interval_start += iv

    def _emit_interval(self, end: int) -> None:
        for g in self.groups.values():
            if not (g.touched or any(g.now) or any(g.interval_max)):
                continue
            self.emit({"type": "pileup_sample", "by": self.by, "group": g.key, "time": round(end / 1e9, 6),
                       "interval_s": self.interval_ns / 1e9,
                       "time_wait": g.now[TW], "close_wait": g.now[CW],
                       "time_wait_max": max(g.interval_max[TW], g.now[TW]),
                       "close_wait_max": max(g.interval_max[CW], g.now[CW])})
            g.interval_max = [g.now[TW], g.now[CW]]
            g.touched = False

    # -- the end -------------------------------------------------------------------------------
    def finish(self) -> list[Group]:
        """Every event swept, the last interval written; the groups, worst pile-up first."""
        self._sweep(1 << 62)
        if self.interval_ns is not None and self.interval_start is not None and self.latest is not None:
            while self.interval_start <= self.latest:
                self._emit_interval(self.interval_start + self.interval_ns)
                self.interval_start += self.interval_ns
        return sorted(self.groups.values(),
                      key=lambda g: (-(g.worst[CW] + g.worst[TW]), -g.longest_cw, -g.connections, g.key))


# --------------------------------------------------------------------------- rendering


def sparkline(values: list[int], width: int = SPARK_WIDTH, top: int | None = None) -> str:
    """``values`` squeezed into ``width`` characters (the max of each cell), scaled to ``top``
    (default: their own maximum): a blank is 0, a full block ``top``."""
    if not values:
        return ""
    if len(values) > width:
        step = len(values) / width
        values = [max(values[int(i * step):max(int((i + 1) * step), int(i * step) + 1)]) for i in range(width)]
    top = max(values) if top is None else top
    if top <= 0:
        return SPARK[0] * len(values)
    return "".join(SPARK[0] if v <= 0 else SPARK[min(8, max(1, math.ceil(v * 8 / top)))] for v in values)


def _ago(ns: int | None, origin: int | None) -> str:
    if ns is None:
        return ""
    return f"{(ns - (origin or 0)) / 1e9:.1f}s"


def _dur(ns: int) -> str:
    s = ns / 1e9
    if s < 1:
        return f"{s * 1000:.0f}ms" if s >= 0.001 else "<1ms"
    if s < 120:
        return f"{s:.1f}s"
    if s < 7200:
        return f"{s / 60:.1f}min"
    return f"{s / 3600:.1f}h"


_CLOSE_SHORT = {"four_way": "4way", "three_way": "3way", "simultaneous": "simul", "half_close": "half",
                "reset": "rst", "refused": "refused", "incomplete": "incompl", "none": "open"}


class PileupSink:
    """``--by``: the records aggregated, written at the end as a table, JSON lines or csv
    (samples of ``--interval`` are written as they complete in jsonl), and a plot with ``plot``."""

    def __init__(self, fmt: str, *, by: str, interval_s: float | None = None, tablefmt: str = "simple",
                 out: IO[str] | None = None, plot: str | None = None) -> None:
        import sys

        self.fmt = fmt
        self.out = out or sys.stdout
        self.tablefmt = tablefmt
        self.plot = plot
        self.samples: list[dict] = []
        self.csv = None
        if fmt == "csv":
            import csv
            self.csv = csv.DictWriter(self.out, fieldnames=CSV_COLUMNS, extrasaction="ignore")
            self.csv.writeheader()
        self.agg = Pileup(by, None if interval_s is None else int(round(interval_s * 1e9)), emit=self._sample)

    def set_origin(self, seconds: float | None) -> None:
        self.agg.set_origin(seconds)

    def write(self, rec: dict) -> None:
        self.agg.write(rec)

    def moves(self, label: str | None, states: tuple, event_of) -> Callable[[list], None]:
        """What takes the compiled lane's hand-over in moves mode (rawfin.capture.engine.run(moves=True)),
        for one capture (``label``: its "file", None for one capture alone): lists of

        * moves ``(conn, time_ns, side, from, to, names)``: ``from``/``to`` codes of ``states`` (their
          names), ``names`` the two sides' endpoint names with a connection's first move (None after);
        * anything else as ``event_of`` makes it the core's typed event: Transition and ConnectionEnd
          (the lane's connection ends, and the events of the connections the Python observer follows).

        No text is read back: the states by code, the time in ns (made the record's time, to the
        microsecond, as the reference's records give it)."""
        agg = self.agg
        known = agg.open.get
        watched = tuple(_INDEX.get(n) for n in states)

        def take(batch: list) -> None:
            for t in batch:
                conn = t[0] if t.__class__ is tuple else None
                if conn.__class__ is int:               # a move
                    ck = (label, conn)
                    st = known(ck)
                    if st is None:
                        names, side = t[5], t[2]
                        if names is None:
                            raise RuntimeError(f"the lane's first move of connection {conn} names nobody")
                        st = agg.opened(ck, names[side], names[1 - side], states[t[3]], states[t[4]], names)
                    a, b = watched[t[3]], watched[t[4]]
                    if a is None and b is None:
                        continue
                    agg.moved(ck, st, int(round((t[1] + 500) // 1000 / 1_000_000 * 1e9)), st[3][t[2]], a, b)
                    continue
                ev = event_of(t)
                cls = ev.__class__
                if cls is Transition:
                    agg.move((label, ev.conn), seconds_of(ev.time_ns), ev.endpoint, ev.peer, ev.from_.name,
                             ev.to.name)
                elif cls is ConnectionEnd:
                    agg.ended((label, ev.conn), ev.client, ev.server, ev.close, ev.active_closer,
                              seconds_of(ev.last_time_ns))
        return take

    def _sample(self, rec: dict) -> None:
        if self.fmt == "jsonl":
            from rawfin.render.records import to_json
            self.out.write(to_json(rec) + "\n")
        elif self.fmt == "csv":
            self.csv.writerow(_csv_row(rec))
        else:
            self.samples.append(rec)

    def close(self) -> None:
        agg = self.agg
        groups = agg.finish()
        recs = [g.record(by=agg.by, time_origin=None, end_ns=agg.latest, file=None) for g in groups]
        for g, r in zip(groups, recs):
            tw, cw = agg.series(g)
            r["series_bucket_s"] = (agg.width or 0) / 1e9
            r["time_wait_series"] = tw
            r["close_wait_series"] = cw
        if self.plot:           # first: the file asked for is written even if stdout closes early (| head)
            write_svg(self.plot, agg, groups)
        if self.fmt == "jsonl":
            from rawfin.render.records import to_json
            for r in recs:
                self.out.write(to_json(r) + "\n")
        elif self.fmt == "csv":
            for r in recs:
                self.csv.writerow(_csv_row(r))
        else:
            self._table(groups, recs)
        self.out.flush()

    def _table(self, groups: list[Group], recs: list[dict]) -> None:
        from rawfin.render.tables import terminal_width, wrap

        agg = self.agg
        origin = agg.first
        width = terminal_width(self.out)
        # the sparkline gives up steps on a narrow terminal before its column has to wrap
        steps = SPARK_WIDTH if width >= 100 else max(4, SPARK_WIDTH - (100 - width) // 3)
        top = max([1, *(max(g.worst) for g in groups)])
        rows = []
        for g, r in zip(groups, recs):
            closes = " ".join(f"{_CLOSE_SHORT.get(k, k)} {v}" for k, v in
                              sorted(g.closes.items(), key=lambda kv: -kv[1]))

            def pile(w: int) -> str:
                if not g.worst[w]:
                    return "0"
                return f"{g.now[w]}  {g.worst[w]} ({_ago(g.worst_at[w], origin)})"
            tw, cw = r["time_wait_series"], r["close_wait_series"]
            trend = [f"{name} {sparkline(v, steps, top=top)}" for name, v in (("TW", tw), ("CW", cw)) if any(v)]
            rows.append([g.key, f"{g.connections:,}", closes,
                         f"{g.first_closer['client']}/{g.first_closer['server']}",
                         pile(TW), pile(CW), _dur(g.longest_cw) if g.longest_cw_conn is not None else "",
                         "\n".join(trend)])
        headers = [agg.by, "conns", "closes", "first\ncloser\nclient/\nserver", "TIME_WAIT\nend  max\n(at)",
                   "CLOSE_WAIT\nend  max\n(at)", "longest\nCLOSE_\nWAIT", "over time"]
        out = self.out
        if rows:
            out.write(_grid(headers, rows, self.tablefmt, width, first=(0, 2)))
        else:
            out.write("no connections\n")
        span = (agg.latest - agg.first) / 1e9 if agg.latest is not None and agg.first is not None else 0
        sockets = {"server": "each server's own sockets", "client": "each client's own sockets",
                   "host": "every socket, at its own address"}[agg.by]
        note = (f"Counts are {sockets}: in TIME_WAIT (TW) and CLOSE_WAIT (CW) at the end of the capture and "
                f"at the worst moment (capture time since the first frame). Over time: {span:.1f} s in "
                f"{steps} steps, the worst of each, on one scale (a full block is {top}).")
        out.write("\n" + "\n".join(wrap(note, width)) + "\n")
        if self.samples:
            out.write("\n")
            srows = [[_ago(int(round(s["time"] * 1e9)), origin), s["group"], str(s["time_wait"]),
                      str(s["time_wait_max"]), str(s["close_wait"]), str(s["close_wait_max"])] for s in self.samples]
            out.write(_grid(["until", agg.by, "TIME_WAIT", "max", "CLOSE_WAIT", "max"], srows, self.tablefmt,
                            width, first=(1,)))


def _grid(headers: list[str], rows: list[list[str]], tablefmt: str, width: int, first: tuple = ()) -> str:
    """A table in rawfin's layout, fitted to ``width`` (``simple``), or in another of tabulate's formats."""
    if tablefmt == "simple":
        from rawfin.render.tables import simple_table
        return simple_table(headers, rows, width, first, lines=True)
    from tabulate import tabulate
    return tabulate(rows, headers=headers, tablefmt=tablefmt, disable_numparse=True) + "\n"


CSV_COLUMNS = ("type", "by", "group", "time", "interval_s", "time_wait", "close_wait", "time_wait_max",
               "close_wait_max", "connections", "closes", "closed_first_by_client", "closed_first_by_server",
               "time_wait_end", "time_wait_worst", "time_wait_worst_time", "close_wait_end", "close_wait_worst",
               "close_wait_worst_time", "longest_close_wait_s", "longest_close_wait_since",
               "longest_close_wait_conn", "longest_close_wait_file")


def _csv_row(rec: dict) -> dict:
    row = dict(rec)
    if isinstance(row.get("closes"), dict):
        row["closes"] = "; ".join(f"{k}={v}" for k, v in row["closes"].items())
    return row


# --------------------------------------------------------------------------- the plot


_COLOURS = {TW: "#1f77b4", CW: "#d62728"}


def _esc(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")


def svg(agg: Pileup, groups: list[Group], top: int = 8) -> str:
    """TIME_WAIT and CLOSE_WAIT over capture time, one panel per group (the ``top`` worst)."""
    shown = [g for g in groups if g.worst[TW] or g.worst[CW]][:top]
    width, panel_h, left, right, top_pad = 760, 120, 64, 16, 40
    height = top_pad + max(1, len(shown)) * (panel_h + 36) + 24
    span = ((agg.latest or 0) - (agg.first or 0)) / 1e9
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12">',
             f'<rect width="{width}" height="{height}" fill="white"/>',
             f'<text x="{left}" y="20" font-size="14" font-weight="bold">sockets in TIME_WAIT and CLOSE_WAIT '
             f'by {agg.by}</text>',
             f'<text x="{width - right}" y="20" text-anchor="end"><tspan fill="{_COLOURS[TW]}">━ TIME_WAIT</tspan>'
             f'  <tspan fill="{_COLOURS[CW]}">━ CLOSE_WAIT</tspan></text>']
    if not shown:
        parts.append(f'<text x="{left}" y="{top_pad + 20}">no socket was in TIME_WAIT or CLOSE_WAIT</text>')
    plot_w = width - left - right
    for k, g in enumerate(shown):
        y0 = top_pad + k * (panel_h + 36) + 18
        tw, cw = agg.series(g)
        n = max(len(tw), 1)
        peak = max([*tw, *cw, 1])
        parts.append(f'<text x="{left}" y="{y0 - 4}" font-weight="bold">{_esc(g.key)}</text>')
        parts.append(f'<rect x="{left}" y="{y0}" width="{plot_w}" height="{panel_h}" fill="none" stroke="#999"/>')
        parts.append(f'<text x="{left - 6}" y="{y0 + 10}" text-anchor="end">{peak}</text>')
        parts.append(f'<text x="{left - 6}" y="{y0 + panel_h}" text-anchor="end">0</text>')
        for which, values in ((TW, tw), (CW, cw)):
            if not any(values):
                continue
            pts = []
            for i, v in enumerate(values):
                x0 = left + plot_w * i / n
                x1 = left + plot_w * (i + 1) / n
                y = y0 + panel_h - panel_h * v / peak
                pts += [f"{x0:.1f},{y:.1f}", f"{x1:.1f},{y:.1f}"]
            parts.append(f'<polyline fill="none" stroke="{_COLOURS[which]}" stroke-width="1.5" '
                         f'points="{" ".join(pts)}"/>')
        parts.append(f'<text x="{left}" y="{y0 + panel_h + 14}">0 s</text>')
        parts.append(f'<text x="{width - right}" y="{y0 + panel_h + 14}" text-anchor="end">{span:.1f} s '
                     f'(capture time)</text>')
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def write_svg(path: str, agg: Pileup, groups: list[Group]) -> None:
    from rawfin.core.errors import OutputError

    text = svg(agg, groups)
    tmp = f"{path}.part{os.getpid()}"
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except OSError as e:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise OutputError(f"{path}: cannot write the plot: {e.strerror or e}") from None
