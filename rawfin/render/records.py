"""The record contract shared by every command's ``--format jsonl`` and ``csv``.

Three record types, always the same keys in the same order:
``transition``, ``anomaly`` and ``connection``. See README "JSON lines".
"""

from __future__ import annotations

import json

from typing import Iterable, Iterator

from rawfin.core.events import Anomaly, ConnectionEnd, Transition
from rawfin.core.units import seconds_of

RECORD_TYPES = ("transition", "anomaly", "connection")


def to_json(rec: dict) -> str:
    """One record as its JSON line (without the newline): what every ``--format jsonl`` prints."""
    return json.dumps(rec, ensure_ascii=False, separators=(",", ":"))


def seconds(time_ns: int | None) -> float | None:
    """A record's time: rawfin.core.units.seconds_of (integer rounding to microseconds)."""
    return seconds_of(time_ns)


def record(ev, file: str | None = None) -> dict:
    """The record of a typed event of the core (rawfin.core.events), as every format gives it."""
    if ev.__class__ is Transition:
        return transition_record(ev, file=file)
    if ev.__class__ is Anomaly:
        return anomaly_record(ev, file=file)
    if ev.__class__ is ConnectionEnd:
        return connection_record(ev, file=file)
    raise TypeError(f"no record for {ev!r}")


def records_of(events: Iterable, file: str | None = None) -> Iterator[dict]:
    """The records of a stream of events (``rawfin.capture.analysis.events``, the observer's)."""
    for ev in events:
        yield record(ev, file)


def json_line(file: str | None = None):
    """``ev -> its JSON line`` (without the newline), for a file label: what ``--format jsonl`` writes."""
    return lambda ev: to_json(record(ev, file))


def transition_record(t: Transition, conn: int | None = None, file: str | None = None) -> dict:
    rec = {"type": "transition", "conn": t.conn if conn is None else conn, "frame": t.frame, "time": seconds(t.time_ns),
           "endpoint": t.endpoint, "peer": t.peer, "from": t.from_.value, "to": t.to.value,
           "cause": t.cause}
    if t.alternative:
        rec["inferred"] = inferred_text(t)
        rec["alternative"] = [s.value for s in t.alternative]
    if file is not None:
        rec["file"] = file
    return rec


def inferred_text(t: Transition) -> str:
    """``or CLOSING if the FIN in frame 12 arrived and its ACK was lost before the capture point``."""
    return f"or {' → '.join(s.value for s in t.alternative)} if {t.inferred}"


def anomaly_record(a: Anomaly, conn: int | None = None, file: str | None = None) -> dict:
    rec = {"type": "anomaly", "conn": a.conn if conn is None else conn, "frame": a.frame, "time": seconds(a.time_ns),
           "endpoint": a.endpoint, "kind": a.kind, "detail": a.detail}
    if file is not None:
        rec["file"] = file
    return rec


def connection_record(c: ConnectionEnd, file: str | None = None) -> dict:
    rec = {"type": "connection", "conn": c.conn, "client": c.client, "server": c.server,
           "server_guessed": c.server_guessed, "active_closer": c.active_closer, "passive_closer": c.passive_closer,
           "reset_by": c.reset_by,
           "close": c.close, "final": dict(c.final), "first_frame": c.first_frame, "last_frame": c.last_frame,
           "first_time": seconds(c.first_time_ns), "last_time": seconds(c.last_time_ns), "packets": c.packets,
           "mid_stream": c.mid_stream, "server_active_close": c.server_active_close, "anomalies": dict(c.anomalies)}
    if c.vlan:
        rec["vlan"] = list(c.vlan)
    if file is not None:
        rec["file"] = file
    return rec
