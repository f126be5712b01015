"""The journal's writer: one thread owns the write connection and commits in groups. Every write
waiting in its queue goes into one transaction (one fsync), so durability costs little per write.

It knows nothing of who waits for a write: each op travels with an opaque waiter, and once the op
is committed (and, with ``synchronous=FULL``, synced) the writer hands ``(waiter, value, error)``
triples to its ``settle`` function. The journal runs this writer in the responder's process or in
one of its own (``responder/journal/process.py``); the code is the same.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from responder.errors import UserError
from responder.journal.rows import AlertRow, RecentAlerts, WriteConnection, append_rows
from responder.journal.schema import (
    MIN_SQLITE,
    SCHEMA,
    SCHEMA_VERSION,
    WAL_SIZE_LIMIT,
    JournalDamaged,
    check_readable,
    connect,
    is_damage,
    migrate,
    stored_schema,
    unreadable_journal,
)
from responder.journal.walsync import WalSyncer

log = logging.getLogger("serving_guard.journal")

Op = Callable[[sqlite3.Connection], Any]
W = TypeVar("W")
# What the writer hands back per op: its waiter, and the op's value or error.
Result = tuple[W, Any, BaseException | None]
SYNCHRONOUS = ("FULL", "NORMAL")
# The most ops in one transaction: bounds a commit's length (and a group's memory) under a storm.
MAX_GROUP = 5000


@dataclass(frozen=True, slots=True)
class WriterOptions:
    """What a writer needs to open the journal; plain values, so a writer process gets them too."""

    path: str
    commit_interval_seconds: float = 0.002
    synchronous: str = "FULL"
    recent_ids: int = 10_000

    def __post_init__(self) -> None:
        if self.synchronous not in SYNCHRONOUS:
            raise ValueError(f"synchronous must be FULL or NORMAL, got {self.synchronous!r}")


def open_write_connection(options: WriterOptions) -> WriteConnection:
    """The journal's one write connection, its schema brought up to date. UserError names the
    journal and what is wrong with it."""
    if sqlite3.sqlite_version_info < MIN_SQLITE:  # UPDATE ... FROM (the storm's batched bumps)
        raise UserError(f"journal: SQLite {sqlite3.sqlite_version} is too old; 3.33 or newer is needed")
    path = options.path
    directory = os.path.dirname(os.path.abspath(path))
    conn: WriteConnection | None = None
    try:
        os.makedirs(directory, exist_ok=True)
        opened = connect(path, factory=WriteConnection)
        assert isinstance(opened, WriteConnection)
        conn = opened
        conn.execute("PRAGMA journal_mode = WAL")
        # NORMAL for SQLite either way: with FULL the syncer fsyncs each commit before any of
        # its writes is acknowledged (see responder/journal/walsync.py); NORMAL skips that step.
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute(f"PRAGMA journal_size_limit = {WAL_SIZE_LIMIT}")
        # A later version's journal is refused before anything is written to it: this version's
        # tables and indexes are not made over its own (it may have moved or dropped them).
        check_readable(conn, path)
        migrate(conn, path)
        version = stored_schema(conn, path)
        if version is not None and version != SCHEMA_VERSION:  # one no migration comes from
            raise UserError(f"journal {path}: schema {version}, this version reads {SCHEMA_VERSION}")
        conn.executescript(SCHEMA)
        if version is None:
            conn.execute("INSERT INTO meta(key, value) VALUES ('schema', ?)", (str(SCHEMA_VERSION),))
        newest = conn.execute("SELECT MAX(event_ns) FROM alerts").fetchone()[0]
        conn.recent = RecentAlerts(newest if newest is not None else -(1 << 63), options.recent_ids)
        _check_writable(conn)
    except sqlite3.DatabaseError as exc:
        if conn is not None:
            conn.close()
        code = (getattr(exc, "sqlite_errorcode", None) or 0) & 0xFF
        if code == sqlite3.SQLITE_READONLY or (code == sqlite3.SQLITE_CANTOPEN and not _writable(path)):
            raise UserError(
                f"journal {path}: not writable: {exc} (the file, its -wal and -shm files, its directory or"
                " its filesystem is read-only for this user)"
            ) from None
        raise unreadable_journal(path, exc, "cannot open") from None
    except OSError as exc:
        raise UserError(f"journal {path}: cannot create {directory}: {exc.strerror}") from None
    except BaseException:
        if conn is not None:
            conn.close()
        raise
    return conn


def _writable(path: str) -> bool:
    """Whether this process may write the journal's directory (for its -wal and -shm files) and
    the journal, if it exists (False on a read-only filesystem, even for root)."""
    directory = os.path.dirname(os.path.abspath(path))
    return os.access(directory, os.W_OK) and (not os.path.exists(path) or os.access(path, os.W_OK))


def _check_writable(conn: sqlite3.Connection) -> None:
    """Write to the journal and roll it back: an existing journal SQLite can read but not write (a
    read-only file, or a directory where its -wal file cannot be made) opens without an error, and
    then every write would fail. Raises the write's sqlite3 error."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.execute("UPDATE meta SET value = value WHERE key = 'schema'")
    finally:
        if conn.in_transaction:
            conn.execute("ROLLBACK")


class ThreadWriter(Generic[W]):
    def __init__(
        self,
        options: WriterOptions,
        settle: Callable[[list[Result[W]]], None],
        fsync: Callable[[int], None] | None = None,
    ) -> None:
        self._options = options
        self._settle = settle
        self._fsync = fsync  # None: walsync.DURABLE_SYNC (fdatasync)
        self._queue: queue.SimpleQueue[list[tuple[Op, W]] | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        # synchronous FULL: commits are made durable by this thread's fsync, off the writer's path.
        self._syncer: WalSyncer[list[Result[W]]] | None = None
        self._write: WriteConnection | None = None
        # Set, for good, when a write met a damaged page (is_damage): every later write is refused.
        self._damaged: JournalDamaged | None = None
        self.commits = 0
        self.ops_committed = 0

    @property
    def failure(self) -> str | None:
        """Why writes fail now and until a restart, or None. (The writer's loop catches every op's
        error; its thread ends only when stopped.)"""
        if self._thread is not None and not self._thread.is_alive():
            return "journal writer thread stopped"
        if self._damaged is not None:
            return self._damaged.refusal
        if self._syncer is not None and self._syncer.failure is not None:
            return self._syncer.failure.refusal
        return None

    def start(self) -> None:
        self._write = open_write_connection(self._options)
        if self._options.synchronous == "FULL":
            self._syncer = WalSyncer(self._options.path, self._release_synced, self._fsync)
            self._syncer.start()
        self._thread = threading.Thread(target=self._run, name="journal-writer", daemon=True)
        self._thread.start()

    def put(self, group: list[tuple[Op, W]]) -> None:
        """Queue ops, committed in this order (possibly with others, in one transaction)."""
        self._queue.put(group)

    def stop(self, timeout: float = 30.0) -> None:
        """Commit and sync what is queued, settle it, then end the threads."""
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(timeout)
            self._thread = None
        if self._syncer is not None:
            self._syncer.stop(timeout)
            self._syncer = None
        if self._write is not None:
            self._write.close()
            self._write = None

    def _run(self) -> None:
        assert self._write is not None
        conn = self._write
        interval = self._options.commit_interval_seconds
        stopping = False
        last_commit = 0.0
        # Writes queued up during the previous commit (the writer is busy), as seen before that
        # commit's writers were answered: a sender's next write, sent on its answer, is not one.
        busy = False
        while not stopping:
            item = self._queue.get()
            if item is None:
                break
            batch = list(item)
            # Group commit. Writes that arrive while the previous group is being committed and
            # synced share the next commit, which starts once that group is on disk, or at the
            # latest one interval after the previous commit began (a slow disk then has two groups
            # in flight). With synchronous=NORMAL (no fsync to wait for), writes that queued up
            # during a commit wait out the interval: at most one commit per interval under load.
            # A write that finds the writer idle commits at once (with FULL, once the disk has
            # caught up with the previous group).
            # Why not a fixed spacing alone: a sender waits for its answer before it sends again
            # (Falco's http_output, one alert at a time), so its next write came right after the
            # previous commit, and waited out the rest of the interval for nothing: with FULL, at
            # few senders (bench/README.md, round 12); with NORMAL, one sender got at most one
            # alert per interval (round 13).
            wait = interval - (time.monotonic() - last_commit)
            if wait > 0:
                if self._syncer is not None:
                    self._syncer.wait_caught_up(wait)
                elif busy:
                    time.sleep(wait)
            while len(batch) < MAX_GROUP:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    stopping = True
                    break
                batch.extend(more)
            last_commit = time.monotonic()
            busy = self._commit_batch(conn, batch)

    def _commit_batch(self, conn: sqlite3.Connection, batch: list[tuple[Op, W]]) -> bool:
        """Commit the group and answer its writers; returns whether more writes queued up
        meanwhile (looked at before the answers go out)."""
        # Fast path: the whole group in one transaction, no per-op savepoints. Only when an op
        # fails is the group rolled back and redone op by op under savepoints (below), so the
        # outcome is the same either way: one bad write fails alone, the rest commit together.
        final = self._damaged or (self._syncer.failure if self._syncer is not None else None)
        if final is not None:
            # Nothing more is committed once an fsync failed (WalSyncer.failure): a row committed
            # and never acknowledged would be taken for a redelivery when its sender retries. Nor
            # into a damaged file: writing on would bury what the journal's recovery could save.
            queued = not self._queue.empty()
            self._settle([(waiter, None, final.again()) for _, waiter in batch])
            return queued
        try:
            conn.execute("BEGIN IMMEDIATE")
            results: list[Result[W]] = []
            try:
                results = _run_grouped(conn, batch)
            except Exception:
                conn.execute("ROLLBACK")
                conn.execute("BEGIN IMMEDIATE")
                results = _run_isolated(conn, batch)
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            log.error("journal commit failed", extra={"error": str(exc), "batch": len(batch)})
            queued = not self._queue.empty()
            self._settle(self._damage_said([(waiter, None, exc) for _, waiter in batch]))
            return queued
        self.commits += 1
        self.ops_committed += len(batch)
        queued = not self._queue.empty()
        results = self._damage_said(results)
        if self._syncer is not None:
            self._syncer.committed(results)  # acknowledged once the fsync that follows is done
        else:
            self._settle(results)
        return queued

    def _damage_said(self, results: list[Result[W]]) -> list[Result[W]]:
        """``results``, each write that met a damaged page failed as JournalDamaged; the first such
        write makes the writer refuse every later one, logged with how to recover the file."""
        if not any(error is not None and is_damage(error) for _, _, error in results):
            return results
        if self._damaged is None:
            damage = next(error for _, _, error in results if error is not None and is_damage(error))
            assert isinstance(damage, sqlite3.DatabaseError)
            self._damaged = JournalDamaged.found(self._options.path, damage)
            log.critical(
                "journal: damaged; every later write fails until the responder restarts",
                extra={"error": str(self._damaged)},
            )
        damaged = self._damaged
        return [
            (waiter, value, damaged.again() if error is not None and is_damage(error) else error)
            for waiter, value, error in results
        ]

    def _release_synced(self, results: list[Result[W]], error: BaseException | None) -> None:
        if error is not None:  # committed, but maybe not on disk: not acknowledged as written
            results = [(waiter, None, own or error) for waiter, _, own in results]
        self._settle(results)


def _run_grouped(conn: sqlite3.Connection, batch: list[tuple[Op, W]]) -> list[Result[W]]:
    """Run the group in order; runs of consecutive alert rows go in together (most of a busy
    group), which costs a fraction of one statement per row."""
    results: list[Result[W]] = []
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
        rows: list[AlertRow] = [row for row, _ in run]  # type: ignore[misc]
        stored = append_rows(conn, rows)
        results.extend((row_waiter, value, None) for (_, row_waiter), value in zip(run, stored, strict=True))
        index = end
    return results


def _run_isolated(conn: sqlite3.Connection, batch: list[tuple[Op, W]]) -> list[Result[W]]:
    results: list[Result[W]] = []
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
