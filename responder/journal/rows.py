"""Alert rows: how accepted alerts are stored, many to a statement, and recognised when
redelivered. Used by the journal's writer, in whichever process it runs."""

from __future__ import annotations

import dataclasses
import functools
import json
import sqlite3
import zlib
from typing import Any

from responder.alert import Alert, field_text
from responder.alert_json import parse_falco_json
from responder.journal.schema import ALERT_COLUMNS
from responder.sender import Sender

# One compact encoder for every payload: json.dumps with non-default separators builds a new
# encoder per call, which cost as much as the encoding itself.
_COMPACT_JSON = json.JSONEncoder(separators=(",", ":"))
# Payloads were once stored as zlib streams; a zlib stream starts with 0x78 ('x'), which no JSON
# text can start with, so both forms are told apart by their first byte.
_ZLIB_MAGIC = 0x78


def encode_payload(alert: Alert, raw: bytes | None = None) -> bytes:
    """The alert as Falco JSON. ``raw`` is the body as received (already validated into ``alert``):
    stored as is, it saves re-encoding on the hot path and keeps exactly what the sender sent.
    Not compressed: zlib cost ~25 µs per alert on the writer thread (more than the insert itself)
    to save ~40% of a record that retention removes anyway."""
    if raw is not None:
        return raw
    return _COMPACT_JSON.encode(alert.to_falco_json()).encode()


def estimated_payload_bytes(alert: Alert) -> int:
    """About the bytes :func:`encode_payload` makes of an alert with no body as received (gRPC's):
    its output and fields as text, and the rest of its JSON (counted, not encoded)."""
    fields = sum(len(name) + len(field_text(value)) for name, value in alert.fields.items())
    return _JSON_FRAME_BYTES + len(alert.rule) + len(alert.output) + fields


# Falco JSON around the rule, output and fields: keys, time, priority, source, hostname, tags.
_JSON_FRAME_BYTES = 256


def decode_payload(blob: bytes, sender: Sender | None = None) -> Alert:
    if blob[:1] == bytes((_ZLIB_MAGIC,)):
        blob = zlib.decompress(blob)
    return parse_falco_json(blob, sender)


def decode_journaled(blob: bytes, alert_id: str, sender: str | None = None) -> Alert:
    """A journaled alert under the id it was journaled with: an earlier version computed some ids
    otherwise (before output fields counted), and that id names its row, incident and actions.
    ``sender``: its row's sender column (Sender.record)."""
    alert = decode_payload(blob, Sender.from_record(sender))
    return alert if alert.alert_id == alert_id else dataclasses.replace(alert, alert_id=alert_id)


# Two parameters a row: within the 999 bound variables of the oldest SQLite builds.
_EXISTING_CHUNK = 400
# Rows per multi-row statement: 14 parameters a row stays within the 999 bound variables of the
# oldest SQLite builds. One statement per chunk, not one step per row: the writer thread gives the
# GIL up around every SQLite step, and getting it back while the event loop is busy is what cost
# the most under a storm.
_ROWS_PER_STATEMENT = 64
_BUMPS_PER_STATEMENT = 300


@functools.lru_cache(maxsize=64)
def _existing_sql(rows: int) -> str:
    # A join on the (event_ns, alert_id) index: one seek per key. (`(a, b) IN (VALUES ...)` scanned
    # the whole index; two IN lists sought every pair of their product, quadratic in redeliveries.)
    marks = ",".join(["(?,?)"] * rows)
    # Only placeholders are formatted in; the keys themselves are bound parameters.
    return (
        f"SELECT a.alert_id FROM (VALUES {marks}) AS v"  # noqa: S608
        " CROSS JOIN alerts AS a ON a.event_ns = v.column1 AND a.alert_id = v.column2"
    )


@functools.lru_cache(maxsize=_ROWS_PER_STATEMENT)
def _insert_alerts_sql(rows: int) -> str:
    marks = ",".join(["(?,?,?,?,?,?,?,?,?,?,?,?,?,?)"] * rows)
    return f"INSERT INTO alerts({ALERT_COLUMNS}) VALUES {marks}"  # noqa: S608 (placeholders only)


@functools.lru_cache(maxsize=_BUMPS_PER_STATEMENT)
def _bump_incidents_sql(rows: int) -> str:
    marks = ",".join(["(?,?,?)"] * rows)
    return (
        "UPDATE incidents SET count = MAX(incidents.count, v.column2),"  # noqa: S608 (placeholders only)
        " last_seen_ns = MAX(incidents.last_seen_ns, v.column3)"
        f" FROM (VALUES {marks}) AS v WHERE incidents.incident_id = v.column1"
    )


def _insert_alerts(conn: sqlite3.Connection, rows: list[tuple[Any, ...]]) -> None:
    for start in range(0, len(rows), _ROWS_PER_STATEMENT):
        chunk = rows[start : start + _ROWS_PER_STATEMENT]
        conn.execute(_insert_alerts_sql(len(chunk)), [value for row in chunk for value in row])


def _bump_incidents(conn: sqlite3.Connection, bumps: list[tuple[str, int, int]]) -> None:
    for start in range(0, len(bumps), _BUMPS_PER_STATEMENT):
        chunk = bumps[start : start + _BUMPS_PER_STATEMENT]
        conn.execute(_bump_incidents_sql(len(chunk)), [value for bump in chunk for value in bump])


class AlertRow:
    """Journal one accepted alert: pending (to be processed) or, for a repeat of a journaled
    incident, already at its final outcome. Returns whether it is new (False: this alert id is
    already journaled, a redelivery).

    The writer stores consecutive rows of a group with one existence query and one
    ``executemany`` (see :func:`append_rows`); called alone it is a plain insert. Pickled (to a
    writer process) it is reduced to its row's SQL parameters: the alert itself stays behind."""

    __slots__ = (
        "_params",
        "alert",
        "alert_id",
        "count",
        "deferred",
        "event_ns",
        "incident_id",
        "input",
        "raw",
        "received_ns",
    )

    def __init__(
        self,
        alert: Alert | None,
        input_name: str,
        received_ns: int,
        raw: bytes | None,
        incident_id: str | None = None,
        count: int = 0,
        *,
        deferred: bool = False,
    ) -> None:
        self.alert = alert
        self.deferred = deferred  # taken while the pipeline was full: processed once it has room
        self.input = input_name
        self.received_ns = received_ns
        self.raw = raw
        self.incident_id = incident_id  # set: a repeat, final at once
        self.count = count
        self._params: tuple[Any, ...] | None = None
        if alert is not None:
            self.alert_id = alert.alert_id
            self.event_ns = alert.time_ns

    def params(self) -> tuple[Any, ...]:
        if self._params is not None:
            return self._params
        alert = self.alert
        assert alert is not None  # only a restored row has no alert, and it has its params
        repeat = self.incident_id is not None
        return (
            alert.alert_id,
            self.received_ns,
            self.input,
            alert.rule,
            int(alert.priority),
            alert.namespace,
            alert.pod,
            alert.time_ns,
            encode_payload(alert, self.raw),
            "done" if repeat else "deferred" if self.deferred else "pending",
            self.incident_id,
            "duplicate" if repeat else None,
            self.received_ns if repeat else None,
            # Who sent it, as its input authenticated it.
            alert.sender.record() if alert.sender is not None else None,
        )

    def __reduce__(self) -> tuple[Any, ...]:
        return (_restore_alert_row, (self.params(), self.incident_id, self.count))

    def __call__(self, conn: sqlite3.Connection) -> bool:
        return append_rows(conn, [self])[0]


def _restore_alert_row(params: tuple[Any, ...], incident_id: str | None, count: int) -> AlertRow:
    # params: alert_id, received_ns, input, rule, priority, namespace, pod, event_ns, payload, ...
    row = AlertRow(None, params[2], params[1], None, incident_id, count)
    row.alert_id = params[0]
    row.event_ns = params[7]
    row._params = params
    return row


class RecentAlerts:
    """Which new alerts the writer may store without looking for an earlier copy.

    A redelivery can only match a stored row, and every stored row either has an event time at or
    below ``floor_ns`` or was written through this writer's connection since (``ids``). A new alert
    is almost always neither, so most of a storm goes in without a lookup (one statement fewer per
    group, and every statement is a GIL round trip with the busy event loop). The id set is bounded
    (10,000 ids, ~1.5 MB): when full, the floor rises to the newest event time written and the set
    starts again."""

    def __init__(self, floor_ns: int, max_ids: int = 10_000) -> None:
        self.floor_ns = floor_ns
        self.ids: set[str] = set()
        self._newest_ns = floor_ns
        self._max_ids = max_ids

    def may_exist(self, event_ns: int, alert_id: str) -> bool:
        return event_ns <= self.floor_ns or alert_id in self.ids

    def add(self, event_ns: int, alert_id: str) -> None:
        """Called for every row written, before its commit: a rolled-back row stays "may exist",
        which only costs a lookup."""
        if event_ns > self.floor_ns:
            self.ids.add(alert_id)
            self._newest_ns = max(self._newest_ns, event_ns)
        if len(self.ids) > self._max_ids:
            self.floor_ns = self._newest_ns
            self.ids.clear()


class WriteConnection(sqlite3.Connection):
    """The writer thread's connection: the only one that inserts alerts, so it is where the record
    of what was inserted lives."""

    recent: RecentAlerts | None = None


def append_rows(conn: sqlite3.Connection, rows: list[AlertRow]) -> list[bool]:
    """Store rows whose alert id is not journaled yet (the first of equal ids in the group wins);
    bump each repeated incident once. One round trip per step instead of per row."""
    recent = conn.recent if isinstance(conn, WriteConnection) else None
    ids = [row.alert_id for row in rows]
    existing: set[str] = set()
    maybe_stored = [row for row in rows if recent is None or recent.may_exist(row.event_ns, row.alert_id)]
    for start in range(0, len(maybe_stored), _EXISTING_CHUNK):
        chunk = maybe_stored[start : start + _EXISTING_CHUNK]
        keys = [value for row in chunk for value in (row.event_ns, row.alert_id)]
        existing.update(r[0] for r in conn.execute(_existing_sql(len(chunk)), keys))
    new: list[bool] = []
    inserts: list[tuple[Any, ...]] = []
    bumps: dict[str, tuple[int, int]] = {}
    for row, alert_id in zip(rows, ids, strict=True):
        if alert_id in existing:
            new.append(False)
            continue
        existing.add(alert_id)
        new.append(True)
        inserts.append(row.params())
        if recent is not None:
            recent.add(row.event_ns, row.alert_id)
        if row.incident_id is not None:
            count, seen = bumps.get(row.incident_id, (0, 0))
            bumps[row.incident_id] = (max(count, row.count), max(seen, row.received_ns))
    if inserts:
        _insert_alerts(conn, inserts)
    if bumps:
        _bump_incidents(conn, [(incident, count, seen) for incident, (count, seen) in bumps.items()])
    return new
