"""Durable commits without the writer waiting for the disk: the journal's fsync on its own thread.

With ``synchronous=FULL`` SQLite fsyncs the WAL inside every COMMIT, so the writer thread sits idle
for the disk (0.5 to 2 ms here) while the next group of alerts waits behind it. Instead the writer
commits with ``synchronous=NORMAL`` (SQLite still syncs around checkpoints, so the database file
never depends on an unsynced WAL) and hands each committed group to this thread, which fsyncs the
WAL and only then lets the group's waiters hear that their writes are done. One fsync covers every
group committed before it started. The writer's next commit waits for it, but at most a commit
interval (``wait_caught_up``): on a slow disk two groups are in flight, and no acknowledgement
comes before the disk has the data.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from typing import Generic, TypeVar

log = logging.getLogger("serving_guard.journal")

G = TypeVar("G")


# fdatasync flushes the data and the metadata needed to read it back (the file's size), which is
# what an acknowledged write needs; it skips the timestamps, so a WAL rewritten in place after a
# checkpoint syncs without an ext4 journal commit (~0.2 against ~0.25-0.4 ms here). SQLite itself
# syncs with fdatasync on Linux. Where there is none (macOS), fsync.
DURABLE_SYNC: Callable[[int], None] = getattr(os, "fdatasync", os.fsync)


class WriterFailed(OSError):
    """A failure fatal to the journal's writer: every later write is refused until the responder
    restarts, and /healthz fails so that it does."""

    @property
    def refusal(self) -> str:
        """Why the writer refuses writes from now on (its ``failure``)."""
        return f"{self.strerror or self}: writes are refused until the responder restarts"

    def again(self) -> WriterFailed:
        """The same failure, for another write: one exception raised in many places would gather
        all their tracebacks."""
        return type(self)(*self.args)


class SyncFailed(WriterFailed):
    """The journal's fsync failed: writes of this group, and of every group committed after it,
    may not be on disk. Fatal to the writer: see WalSyncer.failure."""


class WalSyncer(Generic[G]):
    def __init__(
        self,
        database_path: str,
        release: Callable[[G, BaseException | None], None],
        fsync: Callable[[int], None] | None = None,
    ) -> None:
        self._database = database_path
        self._wal = database_path + "-wal"
        self._release = release
        self._fsync = fsync if fsync is not None else DURABLE_SYNC
        self._groups: list[G] = []
        self._ready = threading.Condition()
        self._stopping = False
        self._directory_synced = False
        self._thread = threading.Thread(target=self._run, name="journal-sync", daemon=True)
        # Groups handed over and groups released: equal when the disk has caught up with the writer.
        self._handed_over = 0
        self._released = 0
        # Set by the first failed fsync, for good. After a failed fsync the kernel may have dropped
        # the dirty pages it could not write (and a later fsync then succeeds without them), and
        # SQLite's WAL recovery stops at the first frame missing: no later write can be made
        # durable, so every group from then on is released as failed, and the writer refuses
        # writes until a restart (its recovery resumes whatever rows did reach the disk).
        self.failure: SyncFailed | None = None

    def start(self) -> None:
        self._thread.start()

    def committed(self, group: G) -> None:
        """A group whose transaction has committed; released once it is on disk."""
        with self._ready:
            self._groups.append(group)
            self._handed_over += 1
            self._ready.notify_all()  # one condition for the sync thread and the writer's wait

    def wait_caught_up(self, timeout: float) -> None:
        """Wait until every group committed so far is synced and released, at most ``timeout``
        seconds (the writer's group commit: see ThreadWriter._run)."""
        with self._ready:
            self._ready.wait_for(lambda: self._released == self._handed_over, timeout)

    def stop(self, timeout: float = 30.0) -> None:
        """Sync and release what is still waiting, then end the thread."""
        with self._ready:
            self._stopping = True
            self._ready.notify_all()
        self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            with self._ready:
                while not self._groups and not self._stopping:
                    self._ready.wait()
                if not self._groups:
                    return
                groups, self._groups = self._groups, []
            error = self._sync()
            for group in groups:
                try:
                    self._release(group, error)
                except Exception:  # one bad release must not strand the groups behind it
                    log.exception("journal: releasing a synced group failed")
            with self._ready:
                self._released += len(groups)
                self._ready.notify_all()  # the writer, if it waits in wait_caught_up

    def _sync(self) -> BaseException | None:
        if self.failure is not None:
            return self.failure.again()
        try:
            self._sync_file(self._wal)
            if not self._directory_synced:
                # The WAL's own directory entry: a file created since the last boot is only
                # durable once its directory is.
                self._sync_file(os.path.dirname(os.path.abspath(self._database)) or ".")
                self._directory_synced = True
        except FileNotFoundError:
            # No WAL file: SQLite removed it after checkpointing it all into the database.
            try:
                self._sync_file(self._database)
            except OSError as exc:
                return self._failed(exc)
        except OSError as exc:
            return self._failed(exc)
        return None

    def _sync_file(self, path: str) -> None:
        # Opened per sync, not kept: the fsync must reach the file SQLite writes now, whatever
        # happened to an earlier one of that name.
        descriptor = os.open(path, os.O_RDONLY)
        try:
            self._fsync(descriptor)
        finally:
            os.close(descriptor)

    def _failed(self, exc: OSError) -> SyncFailed:
        log.critical(
            "journal: fsync failed; the writes waiting on it and every later one fail until the"
            " responder restarts",
            exc_info=exc,
        )
        self.failure = SyncFailed(exc.errno or 0, f"journal fsync failed: {exc.strerror or exc}")
        return self.failure
