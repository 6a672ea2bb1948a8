"""The record contract shared by every command's ``--format jsonl`` and ``csv``.

Three record types, always the same keys in the same order:
``transition``, ``anomaly`` and ``connection``. See README "JSON lines".
"""

from __future__ import annotations

import json

from rawfin.core.events import Anomaly, Transition
from rawfin.core.units import seconds_of

RECORD_TYPES = ("transition", "anomaly", "connection")


def to_json(rec: dict) -> str:
    """One record as its JSON line (without the newline): what every ``--format jsonl`` prints."""
    return json.dumps(rec, ensure_ascii=False, separators=(",", ":"))


def seconds(time_ns: int | None) -> float | None:
    """A record's time: rawfin.core.units.seconds_of (integer rounding to microseconds)."""
    return seconds_of(time_ns)


def transition_record(t: Transition, conn: int, file: str | None = None) -> dict:
    rec = {"type": "transition", "conn": conn, "frame": t.frame, "time": seconds(t.time_ns),
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


def anomaly_record(a: Anomaly, conn: int, file: str | None = None) -> dict:
    rec = {"type": "anomaly", "conn": conn, "frame": a.frame, "time": seconds(a.time_ns),
           "endpoint": a.endpoint, "kind": a.kind, "detail": a.detail}
    if file is not None:
        rec["file"] = file
    return rec
