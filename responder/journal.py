"""The journal: an embedded SQLite (WAL) record of every accepted alert, decision, action and
notification. It is the source of truth: an input answers only after the alert is here, and
recovery after a crash is "resume every alert that has no final outcome".

One writer thread owns the write connection and commits in groups: every write waiting in
its queue goes into one transaction (one fsync), so durability costs little per alert.
Readers (audit, recovery) use their own connections; WAL lets them run beside the writer.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import os
import queue
import sqlite3
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from responder.actions.outcome import ActionOutcome
from responder.alert import Alert, AlertError
from responder.alert_json import parse_falco_json
from responder.errors import UserError
from responder.walsync import WalSyncer

if TYPE_CHECKING:
    from responder.incident import IncidentReport

log = logging.getLogger("serving_guard.journal")

T = TypeVar("T")
Op = Callable[[sqlite3.Connection], Any]


class LoopCallback:
    """A waiter that is a function called on its event loop with ``(value, error)`` once its op is
    committed: no future and no extra turn of the loop per op, for the ingest hot path."""

    __slots__ = ("_loop", "function")

    def __init__(
        self, loop: asyncio.AbstractEventLoop, function: Callable[[Any, BaseException | None], None]
    ):
        self._loop = loop
        self.function = function

    def get_loop(self) -> asyncio.AbstractEventLoop:
        return self._loop


# Who waits for an op: a thread (``submit``/``run_sync``), a coroutine on some event loop (``run``),
# or a callback on some event loop (``schedule_call``).
Waiter = Future[Any] | asyncio.Future[Any] | LoopCallback
# What the writer's queue carries: one op from a thread, the ops of one turn of the event loop, or
# None to stop.
QueueItem = tuple[Op, Waiter] | list[tuple[Op, Waiter]] | None

SCHEMA_VERSION = 2
MIN_SQLITE = (3, 33, 0)
ALERTS_TABLE = """
CREATE TABLE IF NOT EXISTS alerts (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    -- Unique, kept so by the single writer (append_rows), found through alerts_event: a content
    -- id is a hash, and an index on it alone took a random page per insert (half a storm's cost).
    alert_id TEXT NOT NULL,
    received_ns INTEGER NOT NULL,
    input TEXT NOT NULL,
    rule TEXT NOT NULL,
    priority INTEGER NOT NULL,
    namespace TEXT,
    pod TEXT,
    event_ns INTEGER NOT NULL,
    payload BLOB NOT NULL,
    state TEXT NOT NULL DEFAULT 'pending',
    incident_id TEXT,
    outcome TEXT,
    finished_ns INTEGER
)
"""
SCHEMA = (
    """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""
    + ALERTS_TABLE
    + """;
CREATE INDEX IF NOT EXISTS alerts_pending ON alerts(seq) WHERE state = 'pending';
CREATE INDEX IF NOT EXISTS alerts_received ON alerts(received_ns);
-- An incident's alerts other than its repeats: the repeats of a storm are counted by
-- incidents.count, bumped in the same transaction that stores them. Indexing them too put each
-- repeat on the leaf page of its incident's run: one more page in the WAL per row and commit,
-- 60% of the writer's work under a storm of 50 incidents (bench/README.md, round 5).
DROP INDEX IF EXISTS alerts_incident;
CREATE INDEX IF NOT EXISTS alerts_incident_kept ON alerts(incident_id) WHERE outcome IS NOT 'duplicate';
CREATE INDEX IF NOT EXISTS alerts_event ON alerts(event_ns, alert_id);
CREATE TABLE IF NOT EXISTS incidents (
    incident_id TEXT PRIMARY KEY,
    key_digest TEXT NOT NULL,
    rule TEXT NOT NULL,
    namespace TEXT NOT NULL,
    pod TEXT NOT NULL,
    container_id TEXT NOT NULL,
    hostname TEXT NOT NULL,
    first_alert_id TEXT NOT NULL,
    first_event_ns INTEGER,
    opened_ns INTEGER NOT NULL,
    last_seen_ns INTEGER NOT NULL,
    count INTEGER NOT NULL,
    decided_ns INTEGER,
    verification TEXT,
    decision TEXT,
    pod_context TEXT
);
CREATE INDEX IF NOT EXISTS incidents_last_seen ON incidents(last_seen_ns);
CREATE INDEX IF NOT EXISTS incidents_pod ON incidents(namespace, pod);
CREATE TABLE IF NOT EXISTS actions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    incident_id TEXT,
    alert_id TEXT,
    namespace TEXT,
    pod TEXT,
    action TEXT NOT NULL,
    status TEXT NOT NULL,
    detail TEXT NOT NULL,
    outcome TEXT NOT NULL,
    started_ns INTEGER NOT NULL,
    finished_ns INTEGER NOT NULL,
    actor TEXT
);
CREATE INDEX IF NOT EXISTS actions_finished ON actions(finished_ns);
CREATE INDEX IF NOT EXISTS actions_incident ON actions(incident_id);
CREATE TABLE IF NOT EXISTS notifications (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    incident_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    channel TEXT,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_ns INTEGER NOT NULL,
    created_ns INTEGER NOT NULL,
    sent_ns INTEGER,
    last_error TEXT,
    slack_channel TEXT,
    slack_ts TEXT,
    count_sent INTEGER
);
CREATE INDEX IF NOT EXISTS notifications_due ON notifications(next_attempt_ns)
    WHERE state IN ('pending', 'sending');
CREATE INDEX IF NOT EXISTS notifications_incident ON notifications(incident_id);
"""
)

_ALERT_COLUMNS = (
    "alert_id, received_ns, input, rule, priority, namespace, pod, event_ns, payload, state, incident_id,"
    " outcome, finished_ns"
)

# Schema 1 -> 2: alert ids lose their own unique index (found through (event_ns, alert_id) now) and
# incidents remember their first alert's event time. The alerts table is rebuilt: SQLite cannot
# drop a column constraint in place.
MIGRATE_1_TO_2 = (
    "ALTER TABLE incidents ADD COLUMN first_event_ns INTEGER",
    "UPDATE incidents SET first_event_ns ="
    " (SELECT a.event_ns FROM alerts a WHERE a.alert_id = incidents.first_alert_id)",
    "ALTER TABLE alerts RENAME TO alerts_v1",
    "DROP INDEX IF EXISTS alerts_pending",
    "DROP INDEX IF EXISTS alerts_received",
    "DROP INDEX IF EXISTS alerts_incident",
    ALERTS_TABLE,
    f"INSERT INTO alerts(seq, {_ALERT_COLUMNS}) SELECT seq, {_ALERT_COLUMNS} FROM alerts_v1",  # noqa: S608
    # Keep the AUTOINCREMENT high-water mark: sequence numbers of deleted rows are never reused
    # (the audit trail pages by them).
    "UPDATE sqlite_sequence SET seq = MAX(seq, (SELECT seq FROM sqlite_sequence WHERE name = 'alerts_v1'))"
    " WHERE name = 'alerts'",
    "INSERT INTO sqlite_sequence(name, seq) SELECT 'alerts', seq FROM sqlite_sequence"
    " WHERE name = 'alerts_v1' AND NOT EXISTS (SELECT 1 FROM sqlite_sequence WHERE name = 'alerts')",
    "DROP TABLE alerts_v1",
    "UPDATE meta SET value = '2' WHERE key = 'schema'",
)

FINAL_ALERT_OUTCOMES = ("opened", "duplicate", "rejected")

# Incidents with ``seen``, how many alerts each has seen: the larger of its counter (which counts
# every repeat) and its journaled alerts that are not repeats (found through alerts_incident_kept).
# Callers add their WHERE on ``i``.
INCIDENTS_WITH_SEEN_SQL = (
    "SELECT i.*, MAX(i.count, (SELECT COUNT(*) FROM alerts a"
    " WHERE a.incident_id = i.incident_id AND a.outcome IS NOT 'duplicate')) AS seen FROM incidents i"
)


class JournalFull(Exception):
    """The journal is at its size bound with nothing old enough to prune."""


@dataclass(frozen=True, slots=True)
class PendingAlert:
    alert: Alert
    input: str
    received_ns: int


@dataclass(frozen=True, slots=True)
class IncidentRow:
    incident_id: str
    key_digest: str
    rule: str
    namespace: str
    pod: str
    container_id: str
    hostname: str
    first_alert_id: str
    opened_ns: int
    last_seen_ns: int
    count: int
    decided: bool
    # The first alert's event time: with its id, how its row is found. None: that row is gone.
    first_event_ns: int | None


@dataclass(frozen=True, slots=True)
class NotificationRow:
    id: int
    incident_id: str
    kind: str
    channel: str | None
    state: str
    attempts: int
    next_attempt_ns: int
    created_ns: int
    slack_channel: str | None
    slack_ts: str | None


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


def decode_payload(blob: bytes) -> Alert:
    if blob[:1] == bytes((_ZLIB_MAGIC,)):
        blob = zlib.decompress(blob)
    return parse_falco_json(blob)


# Two parameters a row: within the 999 bound variables of the oldest SQLite builds.
_EXISTING_CHUNK = 400
# Rows per multi-row statement: 13 parameters a row stays within the 999 bound variables of the
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
    marks = ",".join(["(?,?,?,?,?,?,?,?,?,?,?,?,?)"] * rows)
    return f"INSERT INTO alerts({_ALERT_COLUMNS}) VALUES {marks}"  # noqa: S608 (placeholders only)


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
    ``executemany`` (see :func:`append_rows`); called alone it is a plain insert."""

    __slots__ = ("alert", "count", "incident_id", "input", "raw", "received_ns")

    def __init__(
        self,
        alert: Alert,
        input_name: str,
        received_ns: int,
        raw: bytes | None,
        incident_id: str | None = None,
        count: int = 0,
    ) -> None:
        self.alert = alert
        self.input = input_name
        self.received_ns = received_ns
        self.raw = raw
        self.incident_id = incident_id  # set: a repeat, final at once
        self.count = count

    def params(self) -> tuple[Any, ...]:
        alert = self.alert
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
            "done" if repeat else "pending",
            self.incident_id,
            "duplicate" if repeat else None,
            self.received_ns if repeat else None,
        )

    def __call__(self, conn: sqlite3.Connection) -> bool:
        return append_rows(conn, [self])[0]


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

    def may_exist(self, alert: Alert) -> bool:
        return alert.time_ns <= self.floor_ns or alert.alert_id in self.ids

    def add(self, alert: Alert) -> None:
        """Called for every row written, before its commit: a rolled-back row stays "may exist",
        which only costs a lookup."""
        if alert.time_ns > self.floor_ns:
            self.ids.add(alert.alert_id)
            self._newest_ns = max(self._newest_ns, alert.time_ns)
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
    ids = [row.alert.alert_id for row in rows]
    existing: set[str] = set()
    maybe_stored = [row for row in rows if recent is None or recent.may_exist(row.alert)]
    for start in range(0, len(maybe_stored), _EXISTING_CHUNK):
        chunk = maybe_stored[start : start + _EXISTING_CHUNK]
        keys = [value for row in chunk for value in (row.alert.time_ns, row.alert.alert_id)]
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
            recent.add(row.alert)
        if row.incident_id is not None:
            count, seen = bumps.get(row.incident_id, (0, 0))
            bumps[row.incident_id] = (max(count, row.count), max(seen, row.received_ns))
    if inserts:
        _insert_alerts(conn, inserts)
    if bumps:
        _bump_incidents(conn, [(incident, count, seen) for incident, (count, seen) in bumps.items()])
    return new


def used_bytes(conn: sqlite3.Connection) -> int:
    """Bytes of live records: the database's pages minus its free list (the file does not shrink
    when rows are deleted; its free pages are reused)."""
    pages = conn.execute("PRAGMA page_count").fetchone()[0]
    free = conn.execute("PRAGMA freelist_count").fetchone()[0]
    size = conn.execute("PRAGMA page_size").fetchone()[0]
    return int((pages - free) * size)


# The write-ahead log is reset at each checkpoint; this caps the file it leaves behind.
WAL_SIZE_LIMIT = 64 * 1024 * 1024


def connect(
    path: str, *, readonly: bool = False, factory: type[sqlite3.Connection] = sqlite3.Connection
) -> sqlite3.Connection:
    if readonly:
        uri = f"file:{Path(path).as_posix()}?mode=ro"
        conn = sqlite3.connect(uri, uri=True, check_same_thread=False, timeout=30)
    else:
        conn = sqlite3.connect(
            path, check_same_thread=False, timeout=30, isolation_level=None, factory=factory
        )
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA busy_timeout = 30000")
    return conn


class Journal:
    def __init__(
        self,
        path: str,
        *,
        max_bytes: int,
        retention_seconds: float,
        commit_interval_seconds: float = 0.002,
        synchronous: str = "FULL",
        clock_ns: Callable[[], int] = time.time_ns,
        recent_ids: int = 10_000,
        fsync: Callable[[int], None] | None = None,
    ) -> None:
        self.path = path
        self._fsync = fsync  # None: os.fsync
        self._max_bytes = max_bytes
        self._retention_ns = int(retention_seconds * 1e9)
        self._commit_interval = commit_interval_seconds
        if synchronous not in ("FULL", "NORMAL"):
            raise ValueError(f"synchronous must be FULL or NORMAL, got {synchronous!r}")
        self._synchronous = synchronous
        self._clock_ns = clock_ns
        self._recent_ids = recent_ids
        self._queue: queue.SimpleQueue[tuple[Op, Waiter] | list[tuple[Op, Waiter]] | None] = (
            queue.SimpleQueue()
        )
        # Ops scheduled by the event loop since its last hand-over (see ``schedule``).
        self._scheduled: list[tuple[Op, Waiter]] = []
        self._scheduling_loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        # synchronous FULL: commits are made durable by this thread's fsync, off the writer's path.
        self._syncer: WalSyncer[list[tuple[Waiter, Any, BaseException | None]]] | None = None
        self._write: sqlite3.Connection | None = None
        self._read_local = threading.local()
        self._full = False
        self.commits = 0
        self.ops_committed = 0

    # -- lifecycle ----------------------------------------------------------------------------

    def open(self) -> None:
        if sqlite3.sqlite_version_info < MIN_SQLITE:  # UPDATE ... FROM (the storm's batched bumps)
            raise UserError(f"journal: SQLite {sqlite3.sqlite_version} is too old; 3.33 or newer is needed")
        directory = os.path.dirname(os.path.abspath(self.path))
        try:
            os.makedirs(directory, exist_ok=True)
            conn = connect(self.path, factory=WriteConnection)
            conn.execute("PRAGMA journal_mode = WAL")
            # NORMAL for SQLite either way: with FULL the syncer fsyncs each commit before any of
            # its writes is acknowledged (see responder/walsync.py); NORMAL skips that step.
            conn.execute("PRAGMA synchronous = NORMAL")
            conn.execute(f"PRAGMA journal_size_limit = {WAL_SIZE_LIMIT}")
            _migrate(conn)
            conn.executescript(SCHEMA)
            row = conn.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
            if row is None:
                conn.execute("INSERT INTO meta(key, value) VALUES ('schema', ?)", (str(SCHEMA_VERSION),))
            elif int(row["value"]) != SCHEMA_VERSION:
                raise UserError(
                    f"journal {self.path}: schema {row['value']}, this version reads {SCHEMA_VERSION}"
                )
            newest = conn.execute("SELECT MAX(event_ns) FROM alerts").fetchone()[0]
            assert isinstance(conn, WriteConnection)
            conn.recent = RecentAlerts(newest if newest is not None else -(1 << 63), self._recent_ids)
        except sqlite3.DatabaseError as exc:
            raise UserError(f"journal {self.path}: cannot open: {exc}") from None
        except OSError as exc:
            raise UserError(f"journal {self.path}: cannot create {directory}: {exc.strerror}") from None
        self._write = conn
        if self._synchronous == "FULL":
            self._syncer = WalSyncer(self.path, self._release_synced, self._fsync)
            self._syncer.start()
        self._thread = threading.Thread(target=self._writer, name="journal-writer", daemon=True)
        self._thread.start()

    def close(self) -> None:
        if self._thread is not None:
            self._hand_over()
            self._queue.put(None)
            self._thread.join(timeout=30)
            self._thread = None
        if self._syncer is not None:
            self._syncer.stop()
            self._syncer = None
        if self._write is not None:
            self._write.close()
            self._write = None

    def __enter__(self) -> Journal:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the writer thread ---------------------------------------------------------------------

    def _writer(self) -> None:
        assert self._write is not None
        conn = self._write
        stopping = False
        last_commit = 0.0
        while not stopping:
            item = self._queue.get()
            if item is None:
                break
            batch = item if isinstance(item, list) else [item]
            # Group commit: at most one commit per interval. Writes that arrive while the previous
            # commit runs (or during what is left of its interval) share the next one; a write after
            # a quiet spell commits at once instead of always sleeping a full interval first.
            wait = self._commit_interval - (time.monotonic() - last_commit)
            if wait > 0:
                time.sleep(wait)
            while len(batch) < 5000:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    stopping = True
                    break
                if isinstance(more, list):
                    batch.extend(more)
                else:
                    batch.append(more)
            last_commit = time.monotonic()
            self._commit_batch(conn, batch)

    def _commit_batch(self, conn: sqlite3.Connection, batch: list[tuple[Op, Waiter]]) -> None:
        # Fast path: the whole group in one transaction, no per-op savepoints. Only when an op
        # fails is the group rolled back and redone op by op under savepoints (below), so the
        # outcome is the same either way: one bad write fails alone, the rest commit together.
        try:
            conn.execute("BEGIN IMMEDIATE")
            results: list[tuple[Waiter, Any, BaseException | None]] = []
            try:
                results = self._run_grouped(conn, batch)
            except Exception:
                conn.execute("ROLLBACK")
                conn.execute("BEGIN IMMEDIATE")
                results = self._run_isolated(conn, batch)
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            log.error("journal commit failed", extra={"error": str(exc), "batch": len(batch)})
            self._settle([(waiter, None, exc) for _, waiter in batch])
            return
        self.commits += 1
        self.ops_committed += len(batch)
        if self._syncer is not None:
            self._syncer.committed(results)  # acknowledged once the fsync that follows is done
        else:
            self._settle(results)

    def _release_synced(
        self, results: list[tuple[Waiter, Any, BaseException | None]], error: BaseException | None
    ) -> None:
        if error is not None:  # committed, but maybe not on disk: not acknowledged as written
            results = [(waiter, None, own or error) for waiter, _, own in results]
        self._settle(results)

    @staticmethod
    def _run_grouped(
        conn: sqlite3.Connection, batch: list[tuple[Op, Waiter]]
    ) -> list[tuple[Waiter, Any, BaseException | None]]:
        """Run the group in order; runs of consecutive alert rows go in together (most of a busy
        group), which costs a fraction of one statement per row."""
        results: list[tuple[Waiter, Any, BaseException | None]] = []
        index = 0
        while index < len(batch):
            op, waiter = batch[index]
            if not isinstance(op, AlertRow):
                results.append((waiter, op(conn), None))
                index += 1
                continue
            end = index
            while end < len(batch) and isinstance(batch[end][0], AlertRow):
                end += 1
            run = batch[index:end]
            rows = [row for row, _ in run]
            stored = append_rows(conn, rows)  # type: ignore[arg-type]
            results.extend(
                (row_waiter, value, None) for (_, row_waiter), value in zip(run, stored, strict=True)
            )
            index = end
        return results

    @staticmethod
    def _run_isolated(
        conn: sqlite3.Connection, batch: list[tuple[Op, Waiter]]
    ) -> list[tuple[Waiter, Any, BaseException | None]]:
        results: list[tuple[Waiter, Any, BaseException | None]] = []
        for index, (op, waiter) in enumerate(batch):
            # A savepoint per op: one bad write fails alone, the group still commits.
            conn.execute(f"SAVEPOINT op{index}")
            try:
                results.append((waiter, op(conn), None))
                conn.execute(f"RELEASE op{index}")
            except Exception as exc:
                conn.execute(f"ROLLBACK TO op{index}")
                conn.execute(f"RELEASE op{index}")
                results.append((waiter, None, exc))
        return results

    @staticmethod
    def _settle(results: list[tuple[Waiter, Any, BaseException | None]]) -> None:
        """Hand each result to its waiter. Coroutines waiting in ``run`` are woken with one
        ``call_soon_threadsafe`` per event loop and group, not one per op: each wake-up is a
        write to the loop's self-pipe and a GIL hand-over, which dominated the journal's cost."""
        by_loop: dict[
            asyncio.AbstractEventLoop,
            list[tuple[asyncio.Future[Any] | LoopCallback, Any, BaseException | None]],
        ]
        by_loop = {}
        for waiter, value, error in results:
            if isinstance(waiter, Future):
                if waiter.done():  # cancelled by its caller: nobody is waiting for the result
                    continue
                if error is not None:
                    waiter.set_exception(error)
                else:
                    waiter.set_result(value)
            else:
                by_loop.setdefault(waiter.get_loop(), []).append((waiter, value, error))
        for loop, settled in by_loop.items():
            with contextlib.suppress(RuntimeError):  # that loop is closed: nobody is waiting
                loop.call_soon_threadsafe(_resolve_all, settled)

    def submit(self, op: Op) -> Future[Any]:
        if self._thread is None:
            raise RuntimeError("journal is not open")
        future: Future[Any] = Future()
        if self._scheduled and _running_loop() is self._scheduling_loop:
            # Called on the loop with ops of this turn still to hand over: keep the loop's order.
            self._scheduled.append((op, future))
        else:
            self._queue.put((op, future))
        return future

    def schedule(self, op: Callable[[sqlite3.Connection], T]) -> asyncio.Future[T]:
        """Queue an op from the running event loop; the future is settled on that loop once the op
        is committed. Cheaper than a task per write: the pipeline folds duplicates with a callback."""
        loop = self._scheduling()
        future: asyncio.Future[T] = loop.create_future()
        self._scheduled.append((op, future))
        return future

    def schedule_call(
        self,
        op: Callable[[sqlite3.Connection], T],
        callback: Callable[[T | None, BaseException | None], None],
    ) -> None:
        """Like :meth:`schedule`, but ``callback(value, error)`` is called on the running loop once
        the op is committed (value) or has failed (error), instead of settling a future."""
        loop = self._scheduling()
        self._scheduled.append((op, LoopCallback(loop, callback)))

    def _scheduling(self) -> asyncio.AbstractEventLoop:
        """The running loop, with a hand-over to the writer arranged for this turn."""
        if self._thread is None:
            raise RuntimeError("journal is not open")
        loop = asyncio.get_running_loop()
        # Ops scheduled in one turn of the loop go to the writer together: one queue put and one
        # wake-up of the writer thread (each a GIL hand-over) per turn, not per op.
        if not self._scheduled:
            self._scheduling_loop = loop
            loop.call_soon(self._hand_over)
        return loop

    def _hand_over(self) -> None:
        scheduled, self._scheduled = self._scheduled, []
        if scheduled:
            self._queue.put(scheduled)

    async def run(self, op: Callable[[sqlite3.Connection], T]) -> T:
        return await self.schedule(op)

    def run_sync(self, op: Callable[[sqlite3.Connection], T]) -> T:
        return self.submit(op).result()  # type: ignore[no-any-return]

    # -- reads ----------------------------------------------------------------------------------

    @contextlib.contextmanager
    def reader(self) -> Iterator[sqlite3.Connection]:
        conn = getattr(self._read_local, "conn", None)
        if conn is None:
            conn = connect(self.path)
            self._read_local.conn = conn
        yield conn

    # -- operations (each runs inside the writer's transaction) --------------------------------

    @property
    def full(self) -> bool:
        return self._full

    def check_size(self) -> int:
        """Remember whether the live records exceed the bound (then inputs get 503); returns the
        size on disk. Pages freed by pruning are reused, so the file need not shrink for this to clear."""
        with self.reader() as conn:
            self._full = used_bytes(conn) > self._max_bytes
        return self.size_bytes()

    def size_bytes(self) -> int:
        total = 0
        for suffix in ("", "-wal"):
            with contextlib.suppress(OSError):
                total += os.path.getsize(self.path + suffix)
        return total

    @staticmethod
    def op_append_alert(
        alert: Alert, input_name: str, received_ns: int, raw: bytes | None = None
    ) -> AlertRow:
        return AlertRow(alert, input_name, received_ns, raw)

    @staticmethod
    def op_append_duplicate(
        alert: Alert,
        input_name: str,
        received_ns: int,
        raw: bytes | None,
        incident_id: str,
        count: int,
    ) -> AlertRow:
        """A repeat of an incident whose opening alert is already journaled: stored directly at its
        final outcome, with the incident's counter, in one write (most of a storm takes this path)."""
        return AlertRow(alert, input_name, received_ns, raw, incident_id, count)

    @staticmethod
    def op_finish_alert(alert: Alert, incident_id: str | None, outcome: str, finished_ns: int) -> Op:
        def op(conn: sqlite3.Connection) -> None:
            conn.execute(
                "UPDATE alerts SET state = 'done', incident_id = ?, outcome = ?, finished_ns = ?"
                " WHERE event_ns = ? AND alert_id = ?",
                (incident_id, outcome, finished_ns, alert.time_ns, alert.alert_id),
            )

        return op

    @staticmethod
    def op_open_incident(row: IncidentRow) -> Op:
        def op(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT INTO incidents(incident_id, key_digest, rule, namespace, pod, container_id, hostname,"
                " first_alert_id, first_event_ns, opened_ns, last_seen_ns, count)"
                " VALUES (?,?,?,?,?,?,?,?,?,?,?,?)"
                " ON CONFLICT(incident_id) DO NOTHING",
                (
                    row.incident_id,
                    row.key_digest,
                    row.rule,
                    row.namespace,
                    row.pod,
                    row.container_id,
                    row.hostname,
                    row.first_alert_id,
                    row.first_event_ns,
                    row.opened_ns,
                    row.last_seen_ns,
                    row.count,
                ),
            )

        return op

    @staticmethod
    def op_bump_incident(incident_id: str, count: int, last_seen_ns: int) -> Op:
        def op(conn: sqlite3.Connection) -> None:
            conn.execute(
                "UPDATE incidents SET count = MAX(count, ?), last_seen_ns = MAX(last_seen_ns, ?)"
                " WHERE incident_id = ?",
                (count, last_seen_ns, incident_id),
            )

        return op

    @staticmethod
    def op_fold_duplicate(
        alert: Alert, incident_id: str, count: int, last_seen_ns: int, finished_ns: int
    ) -> Op:
        """A repeat folded into its incident: bump the incident and finish the alert in one write."""
        bump = Journal.op_bump_incident(incident_id, count, last_seen_ns)
        finish = Journal.op_finish_alert(alert, incident_id, "duplicate", finished_ns)

        def op(conn: sqlite3.Connection) -> None:
            bump(conn)
            finish(conn)

        return op

    @staticmethod
    def op_record_decision(
        incident_id: str,
        decided_ns: int,
        verification: dict[str, Any],
        decision: dict[str, Any],
        pod_context: dict[str, Any] | None,
    ) -> Op:
        def op(conn: sqlite3.Connection) -> None:
            conn.execute(
                "UPDATE incidents SET decided_ns = ?, verification = ?, decision = ?, pod_context = ?"
                " WHERE incident_id = ?",
                (
                    decided_ns,
                    json.dumps(verification),
                    json.dumps(decision),
                    json.dumps(pod_context) if pod_context is not None else None,
                    incident_id,
                ),
            )

        return op

    @staticmethod
    def op_record_action(
        incident_id: str | None,
        alert_id: str | None,
        namespace: str | None,
        pod: str | None,
        outcome: ActionOutcome,
        actor: str = "responder",
    ) -> Op:
        def op(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT INTO actions(incident_id, alert_id, namespace, pod, action, status, detail, outcome,"
                " started_ns, finished_ns, actor) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                (
                    incident_id,
                    alert_id,
                    namespace,
                    pod,
                    outcome.action,
                    outcome.status.value,
                    outcome.detail,
                    json.dumps(outcome.to_json()),
                    outcome.started_ns,
                    outcome.finished_ns,
                    actor,
                ),
            )

        return op

    @staticmethod
    def op_schedule_notification(
        incident_id: str, kind: str, channel: str | None, due_ns: int, now_ns: int
    ) -> Op:
        """Queue a notification; a repeat is coalesced with one already waiting for the incident."""

        def op(conn: sqlite3.Connection) -> int | None:
            if kind == "incident":
                # One post per incident, even when a crash makes us decide it twice.
                exists = conn.execute(
                    "SELECT id FROM notifications WHERE incident_id = ? AND kind = 'incident'", (incident_id,)
                ).fetchone()
                if exists is not None:
                    return None
            if kind == "repeat":
                waiting = conn.execute(
                    "SELECT id FROM notifications"
                    " WHERE incident_id = ? AND kind = 'repeat' AND state = 'pending'",
                    (incident_id,),
                ).fetchone()
                if waiting is not None:
                    return None
            cursor = conn.execute(
                "INSERT INTO notifications(incident_id, kind, channel, state, next_attempt_ns, created_ns)"
                " VALUES (?, ?, ?, 'pending', ?, ?)",
                (incident_id, kind, channel, due_ns, now_ns),
            )
            return cursor.lastrowid

        return op

    @staticmethod
    def op_notification_state(
        notification_id: int,
        state: str,
        *,
        attempts: int | None = None,
        next_attempt_ns: int | None = None,
        error: str | None = None,
        slack_channel: str | None = None,
        slack_ts: str | None = None,
        sent_ns: int | None = None,
        count_sent: int | None = None,
    ) -> Op:
        def op(conn: sqlite3.Connection) -> None:
            conn.execute(
                "UPDATE notifications SET state = ?, attempts = COALESCE(?, attempts),"
                " next_attempt_ns = COALESCE(?, next_attempt_ns), last_error = COALESCE(?, last_error),"
                " slack_channel = COALESCE(?, slack_channel), slack_ts = COALESCE(?, slack_ts),"
                " sent_ns = COALESCE(?, sent_ns), count_sent = COALESCE(?, count_sent) WHERE id = ?",
                (
                    state,
                    attempts,
                    next_attempt_ns,
                    error,
                    slack_channel,
                    slack_ts,
                    sent_ns,
                    count_sent,
                    notification_id,
                ),
            )

        return op

    @staticmethod
    def op_reset_actions(incident_id: str) -> Op:
        """Forget the actions of an interrupted run: the resumed run redoes them (idempotently)
        and its records are the incident's one final set."""

        def op(conn: sqlite3.Connection) -> None:
            conn.execute("DELETE FROM actions WHERE incident_id = ?", (incident_id,))

        return op

    def op_prune(self, now_ns: int) -> Op:
        """Retention: drop finished records older than the retention period; if still over the size
        bound, drop the oldest finished alerts (never pending ones: they are not done yet)."""
        cutoff = now_ns - self._retention_ns
        max_bytes = self._max_bytes

        def op(conn: sqlite3.Connection) -> int:
            removed = conn.execute(
                "DELETE FROM alerts WHERE state = 'done' AND received_ns < ?", (cutoff,)
            ).rowcount
            conn.execute("DELETE FROM actions WHERE finished_ns < ?", (cutoff,))
            conn.execute(
                "DELETE FROM notifications WHERE state IN ('sent', 'failed') AND created_ns < ?", (cutoff,)
            )
            conn.execute("DELETE FROM incidents WHERE last_seen_ns < ?", (cutoff,))
            if used_bytes(conn) > max_bytes:
                # Pages freed by deletes are reused by SQLite, so deleting bounds growth.
                total = conn.execute("SELECT COUNT(*) FROM alerts WHERE state = 'done'").fetchone()[0]
                drop = max(total // 10, 1) if total else 0
                if drop:
                    removed += conn.execute(
                        "DELETE FROM alerts WHERE seq IN (SELECT seq FROM alerts WHERE state = 'done'"
                        " ORDER BY seq LIMIT ?)",
                        (drop,),
                    ).rowcount
            return removed

        return op

    # -- recovery and queries -----------------------------------------------------------------

    def pending_alerts(self) -> list[PendingAlert]:
        with self.reader() as conn:
            rows = conn.execute(
                "SELECT alert_id, input, received_ns, payload FROM alerts"
                " WHERE state = 'pending' ORDER BY seq"
            ).fetchall()
        pending = []
        for row in rows:
            try:
                pending.append(PendingAlert(decode_payload(row["payload"]), row["input"], row["received_ns"]))
            except (AlertError, ValueError, zlib.error) as exc:
                log.error(
                    "journaled alert unreadable", extra={"alert_id": row["alert_id"], "error": str(exc)}
                )
        return pending

    def pending_count(self) -> int:
        with self.reader() as conn:
            return int(conn.execute("SELECT COUNT(*) FROM alerts WHERE state = 'pending'").fetchone()[0])

    def incidents_since(self, since_ns: int) -> list[IncidentRow]:
        with self.reader() as conn:
            rows = conn.execute(
                INCIDENTS_WITH_SEEN_SQL + " WHERE i.last_seen_ns >= ?",
                (since_ns,),
            ).fetchall()
        return [
            IncidentRow(
                incident_id=row["incident_id"],
                key_digest=row["key_digest"],
                rule=row["rule"],
                namespace=row["namespace"],
                pod=row["pod"],
                container_id=row["container_id"],
                hostname=row["hostname"],
                first_alert_id=row["first_alert_id"],
                first_event_ns=row["first_event_ns"],
                opened_ns=row["opened_ns"],
                last_seen_ns=row["last_seen_ns"],
                count=row["seen"],
                decided=row["decided_ns"] is not None,
            )
            for row in rows
        ]

    def quarantine_times_since(self, since_ns: int) -> list[int]:
        with self.reader() as conn:
            rows = conn.execute(
                "SELECT finished_ns FROM actions"
                " WHERE action = 'quarantine' AND status IN ('quarantined', 'leaky')"
                " AND finished_ns >= ? ORDER BY finished_ns",
                (since_ns,),
            ).fetchall()
        return [int(row[0]) for row in rows]

    def due_notifications(self, now_ns: int, limit: int = 100) -> list[NotificationRow]:
        with self.reader() as conn:
            rows = conn.execute(
                "SELECT * FROM notifications WHERE state IN ('pending', 'sending') AND next_attempt_ns <= ?"
                " ORDER BY next_attempt_ns, id LIMIT ?",
                (now_ns, limit),
            ).fetchall()
        return [_notification(row) for row in rows]

    def next_notification_due(self) -> int | None:
        with self.reader() as conn:
            row = conn.execute(
                "SELECT MIN(next_attempt_ns) FROM notifications WHERE state IN ('pending', 'sending')"
            ).fetchone()
        return None if row is None or row[0] is None else int(row[0])

    def incident_thread(self, incident_id: str) -> tuple[NotificationRow | None, NotificationRow | None]:
        """The sent incident post and the latest sent repeat reply (for threading and updates)."""
        with self.reader() as conn:
            parent = conn.execute(
                "SELECT * FROM notifications WHERE incident_id = ? AND kind = 'incident' AND state = 'sent'"
                " ORDER BY id LIMIT 1",
                (incident_id,),
            ).fetchone()
            reply = conn.execute(
                "SELECT * FROM notifications WHERE incident_id = ? AND kind = 'repeat' AND state = 'sent'"
                " AND slack_ts IS NOT NULL ORDER BY id DESC LIMIT 1",
                (incident_id,),
            ).fetchone()
        return (_notification(parent) if parent else None, _notification(reply) if reply else None)

    def last_repeat_sent_ns(self, incident_id: str) -> int | None:
        with self.reader() as conn:
            row = conn.execute(
                "SELECT MAX(sent_ns) FROM notifications"
                " WHERE incident_id = ? AND kind = 'repeat' AND state = 'sent'",
                (incident_id,),
            ).fetchone()
        return None if row is None or row[0] is None else int(row[0])

    def incident_record(self, incident_id: str) -> dict[str, Any] | None:
        with self.reader() as conn:
            row = conn.execute(
                INCIDENTS_WITH_SEEN_SQL + " WHERE i.incident_id = ?",
                (incident_id,),
            ).fetchone()
            if row is None:
                return None
            record = dict(row)
            record["count"] = record.pop("seen")
            first = conn.execute(
                "SELECT payload FROM alerts WHERE event_ns = ? AND alert_id = ?",
                (row["first_event_ns"], row["first_alert_id"]),
            ).fetchone()
            record["first_alert"] = None
            if first is not None:
                try:
                    record["first_alert"] = decode_payload(first["payload"])
                except (AlertError, ValueError, zlib.error) as exc:
                    # One damaged record must not stop recovery: this incident is skipped, logged.
                    log.error(
                        "journaled alert unreadable", extra={"incident": incident_id, "error": str(exc)}
                    )
            record["outcomes"] = [
                ActionOutcome.from_json(json.loads(r["outcome"]))
                for r in conn.execute(
                    "SELECT outcome FROM actions WHERE incident_id = ? ORDER BY id", (incident_id,)
                ).fetchall()
            ]
        return record


def _migrate(conn: sqlite3.Connection) -> None:
    """Bring a journal written by an earlier version to this schema, in one transaction."""
    has_meta = conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta'").fetchone()
    if has_meta is None:
        return  # a new journal
    row = conn.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
    if row is None or int(row[0]) != 1:
        return
    log.info("upgrading the journal's schema", extra={"from": 1, "to": SCHEMA_VERSION})
    conn.execute("BEGIN IMMEDIATE")
    try:
        for statement in MIGRATE_1_TO_2:
            conn.execute(statement)
        conn.execute("COMMIT")
    except sqlite3.Error:
        conn.execute("ROLLBACK")
        raise


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def _resolve_all(settled: list[tuple[asyncio.Future[Any] | LoopCallback, Any, BaseException | None]]) -> None:
    for future, value, error in settled:
        if isinstance(future, LoopCallback):
            try:
                future.function(value, error)
            except Exception:  # one failing callback must not strand the rest of the group
                log.exception("journal: callback failed")
            continue
        if future.done():  # the awaiting task was cancelled
            continue
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(value)


def report_from_record(record: dict[str, Any]) -> IncidentReport | None:
    """Rebuild an incident's report from its journal record (after a restart)."""
    from responder.incident import IncidentKey, IncidentReport
    from responder.records import decision_from_json, pod_from_json, verification_from_json

    first = record.get("first_alert")
    if first is None or record.get("decision") is None or record.get("verification") is None:
        return None
    pod = json.loads(record["pod_context"]) if record.get("pod_context") else None
    return IncidentReport(
        incident_id=record["incident_id"],
        key=IncidentKey.of(first),
        alert=first,
        count=int(record["count"]),
        first_seen_ns=int(record["opened_ns"]),
        last_seen_ns=int(record["last_seen_ns"]),
        pod=pod_from_json(pod) if pod else None,
        verification=verification_from_json(json.loads(record["verification"])),
        decision=decision_from_json(json.loads(record["decision"])),
        outcomes=tuple(record.get("outcomes") or ()),
    )


def _notification(row: sqlite3.Row) -> NotificationRow:
    return NotificationRow(
        id=row["id"],
        incident_id=row["incident_id"],
        kind=row["kind"],
        channel=row["channel"],
        state=row["state"],
        attempts=row["attempts"],
        next_attempt_ns=row["next_attempt_ns"],
        created_ns=row["created_ns"],
        slack_channel=row["slack_channel"],
        slack_ts=row["slack_ts"],
    )
