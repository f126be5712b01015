"""The journal's SQLite schema, its migrations, and how its connections are opened."""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path

from responder.errors import UserError
from responder.journal.walsync import WriterFailed

log = logging.getLogger("serving_guard.journal")

# Bumped with every change an earlier version could not read: tables and columns, and the words
# stored in them (an outcome status, a notification kind, a verification status): an earlier
# version then refuses the journal with a clear message (its writer checks the number) instead of
# failing on a row mid-run.
# tests/responder/test_journal_schema_version.py pins the words of each version.
SCHEMA_VERSION = 9
MIN_SQLITE = (3, 33, 0)
_ALERTS_TABLE = """
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
    finished_ns INTEGER{later_columns}
)
"""
# The queue a notification waits in, by its kind: 0 a reply telling what a person did, what no
# longer holds or what a retry did, 1 an incident's post, 2 a throttled update (a repeat count, a
# workload thread's summary: set up to the repeat interval ahead), 3 any other update. ``{n}``: the
# table's alias and a dot, or nothing. A query that names a queue must spell it so, to be read
# through its index.
NOTIFICATION_QUEUE = (
    "CASE WHEN {n}kind IN ('by_hand', 'lapse', 'retry') THEN 0 WHEN {n}kind = 'incident' THEN 1"
    " WHEN {n}kind IN ('repeat', 'thread') THEN 2 ELSE 3 END"
)
# An incident checked against its live pod and found to match it (its post goes first in Slack);
# ``{i}`` as ``{n}`` above. A damaged record is not one (json_extract would refuse it, and the write
# with it, in an index).
VERIFIED_INCIDENT = "json_valid({i}verification) AND json_extract({i}verification, '$.status') = 'verified'"
# Slack's order of due notifications, read in index order (journal.Journal.due_notifications): each
# queue's waiting rows by when they are due, the verified incidents and each incident's waiting post,
# so that a batch reads about as many rows as it takes and never sorts a backlog (Slack down for a
# while during a storm).
# Indexes only: made at every open where missing, read and kept up to date by earlier versions as
# any index, so the schema's number stays.
QUEUE_INDEXES = f"""
CREATE INDEX IF NOT EXISTS notifications_queue
    ON notifications(({NOTIFICATION_QUEUE.format(n="")}), next_attempt_ns)
    WHERE state IN ('pending', 'sending');
CREATE INDEX IF NOT EXISTS incidents_verified ON incidents(incident_id)
    WHERE {VERIFIED_INCIDENT.format(i="")};
CREATE INDEX IF NOT EXISTS notifications_waiting_post ON notifications(incident_id, next_attempt_ns)
    WHERE kind = 'incident' AND state IN ('pending', 'sending');
"""
# As schemas 2 to 6 had it: what the migration from schema 1 makes (later migrations add to it).
ALERTS_TABLE_V2 = _ALERTS_TABLE.format(later_columns="")
# Schema 7: who sent each alert (responder.sender.Sender's record, JSON; NULL: an input that names none).
ALERTS_TABLE = _ALERTS_TABLE.format(later_columns=",\n    sender TEXT")
SCHEMA = (
    """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""
    + ALERTS_TABLE
    + """;
CREATE INDEX IF NOT EXISTS alerts_pending ON alerts(seq) WHERE state = 'pending';
CREATE INDEX IF NOT EXISTS alerts_deferred ON alerts(seq) WHERE state = 'deferred';
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
    -- The workload thread (its root post's ts) an incident post went into; NULL: top level.
    slack_thread_ts TEXT,
    count_sent INTEGER,
    -- What a 'by_hand' notification reports: the action a person took (actions.id).
    action_id INTEGER
);
CREATE INDEX IF NOT EXISTS notifications_due ON notifications(next_attempt_ns)
    WHERE state IN ('pending', 'sending');
CREATE INDEX IF NOT EXISTS notifications_incident ON notifications(incident_id);
"""
    + QUEUE_INDEXES
)

# The columns schema 1 had, copied by its migration.
ALERT_COLUMNS_V1 = (
    "alert_id, received_ns, input, rule, priority, namespace, pod, event_ns, payload, state, incident_id,"
    " outcome, finished_ns"
)
# The columns an alert row is written with (rows.AlertRow.params, in this order).
ALERT_COLUMNS = ALERT_COLUMNS_V1 + ", sender"

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
    ALERTS_TABLE_V2,
    f"INSERT INTO alerts(seq, {ALERT_COLUMNS_V1}) SELECT seq, {ALERT_COLUMNS_V1} FROM alerts_v1",  # noqa: S608
    # Keep the AUTOINCREMENT high-water mark: sequence numbers of deleted rows are never reused
    # (the audit trail pages by them).
    "UPDATE sqlite_sequence SET seq = MAX(seq, (SELECT seq FROM sqlite_sequence WHERE name = 'alerts_v1'))"
    " WHERE name = 'alerts'",
    "INSERT INTO sqlite_sequence(name, seq) SELECT 'alerts', seq FROM sqlite_sequence"
    " WHERE name = 'alerts_v1' AND NOT EXISTS (SELECT 1 FROM sqlite_sequence WHERE name = 'alerts')",
    "DROP TABLE alerts_v1",
    "UPDATE meta SET value = '2' WHERE key = 'schema'",
)

# Schema 2 -> 3: an incident post may go into a workload's thread (slack.thread_by_workload).
MIGRATE_2_TO_3 = (
    "ALTER TABLE notifications ADD COLUMN slack_thread_ts TEXT",
    "UPDATE meta SET value = '3' WHERE key = 'schema'",
)

# Schema 3 -> 4: a quarantine by hand under an incident is told in that incident's Slack thread.
MIGRATE_3_TO_4 = (
    "ALTER TABLE notifications ADD COLUMN action_id INTEGER",
    "UPDATE meta SET value = '4' WHERE key = 'schema'",
)
# Schema 4 -> 5: outcomes may say "lapsed" (recheck) and notifications be of kind "lapse": no table
# changes; the number alone makes schema-4 versions refuse the journal, not crash on such a row.
MIGRATE_4_TO_5 = ("UPDATE meta SET value = '5' WHERE key = 'schema'",)
# Schema 5 -> 6: an alert may be "deferred" (taken while the pipeline was full, processed once it has
# room): schema-5 versions would leave such rows unprocessed for good; the number makes them refuse.
# (Its index is made with the tables, as every index is.)
MIGRATE_5_TO_6 = ("UPDATE meta SET value = '6' WHERE key = 'schema'",)
# Schema 6 -> 7: each alert records who sent it (the HTTP input's sender); earlier rows have none.
MIGRATE_6_TO_7 = (
    "ALTER TABLE alerts ADD COLUMN sender TEXT",
    "UPDATE meta SET value = '7' WHERE key = 'schema'",
)
# Schema 7 -> 8: an incident's verification may say "not_listed_yet" (its container was starting or
# restarting): no table changes; the number makes schema-7 versions refuse the journal.
MIGRATE_7_TO_8 = ("UPDATE meta SET value = '8' WHERE key = 'schema'",)
# Schema 8 -> 9: notifications may be of kind "retry" (what an isolation withheld for a passing
# reason did when tried again, dedupe.retry_withheld_seconds), in the first queue: the queue's index
# is made again with it (at the open, as every index).
MIGRATE_8_TO_9 = (
    "DROP INDEX IF EXISTS notifications_queue",
    "UPDATE meta SET value = '9' WHERE key = 'schema'",
)
MIGRATIONS = {
    1: MIGRATE_1_TO_2,
    2: MIGRATE_2_TO_3,
    3: MIGRATE_3_TO_4,
    4: MIGRATE_4_TO_5,
    5: MIGRATE_5_TO_6,
    6: MIGRATE_6_TO_7,
    7: MIGRATE_7_TO_8,
    8: MIGRATE_8_TO_9,
}

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


def unreadable_journal(path: str, exc: sqlite3.DatabaseError, failed: str) -> UserError:
    """The UserError for a journal SQLite fails to open or read (``failed``: which), naming it and
    the error; for a damaged file (or one that is no database), what to do about it."""
    message = f"journal {path}: {failed}: {exc}"
    if is_damage(exc):
        message += (
            " (a damaged journal, or not one: move it aside with its -wal and -shm files, and a new one"
            f" is made at start; `sqlite3 {path} .recover | sqlite3 {path}.recovered` saves what it still"
            " holds)"
        )
    return UserError(message)


def is_damage(exc: BaseException) -> bool:
    """Whether SQLite says the journal's file is damaged (or is no database at all)."""
    code = (getattr(exc, "sqlite_errorcode", None) or 0) & 0xFF
    return isinstance(exc, sqlite3.DatabaseError) and code in (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB)


class JournalDamaged(WriterFailed):
    """SQLite found the journal damaged while the responder ran (a read or a write met a page it
    cannot read). Final, as a failed fsync is: a restart takes it up, and the message says how to
    recover what the file holds."""

    @classmethod
    def found(cls, path: str, exc: sqlite3.DatabaseError) -> JournalDamaged:
        return cls(str(unreadable_journal(path, exc, "damaged")))


def stored_schema(conn: sqlite3.Connection, path: str) -> int | None:
    """The journal's schema number; None for a new journal (no meta table, or no number in it yet).
    UserError, naming the journal, for a number that is not one (a damaged or foreign file)."""
    from responder.errors import UserError

    has_meta = conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta'").fetchone()
    if has_meta is None:
        return None
    row = conn.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
    if row is None:
        return None
    value = str(row[0])
    if not (value.isascii() and value.isdigit()):
        raise UserError(
            f"journal {path}: its schema number is {value[:40]!r}, not a number: not a Serving Guard"
            f" journal, or a damaged one (this version reads schema {SCHEMA_VERSION} and earlier)"
        )
    return int(value)


def newer_schema_message(path: str, version: int) -> str:
    """How every reader and the writer refuse a journal a later version wrote."""
    return (
        f"journal {path}: schema {version}, this version reads {SCHEMA_VERSION} (written by a newer"
        " version of Serving Guard: use that version, or move the journal aside to start a new one)"
    )


def check_readable(conn: sqlite3.Connection, path: str) -> None:
    """Refuse (UserError) a journal written by a newer version: its rows may hold what this one
    cannot read. (An older journal is brought up to date by the next writer to open it; readers
    read it as it is.)"""
    from responder.errors import UserError

    version = stored_schema(conn, path)
    if version is not None and version > SCHEMA_VERSION:
        raise UserError(newer_schema_message(path, version))


def migrate(conn: sqlite3.Connection, path: str = "journal") -> None:
    """Bring a journal written by an earlier version to this schema, in one transaction. Leaves
    alone a new journal, this schema's, and one it has no way up from (a later version's: the
    caller refuses those, before writing anything)."""
    version = stored_schema(conn, path)
    if version is None or version not in MIGRATIONS:
        return
    log.info("upgrading the journal's schema", extra={"from": version, "to": SCHEMA_VERSION})
    conn.execute("BEGIN IMMEDIATE")
    try:
        while version in MIGRATIONS:
            for statement in MIGRATIONS[version]:
                conn.execute(statement)
            version += 1
        conn.execute("COMMIT")
    except sqlite3.Error:
        conn.execute("ROLLBACK")
        raise
