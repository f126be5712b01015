"""The journal's durable commits: nothing is acknowledged before the fsync that follows its commit."""

from __future__ import annotations

import contextlib
import errno
import os
import sqlite3
import threading
import time
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import pytest

from responder.journal.store import Journal
from responder.journal.walsync import SyncFailed, WalSyncer
from tests.responder.test_journal import alert, open_journal


class GatedFsync:
    """An fsync that records which files it synced and can be held until the test lets it go."""

    def __init__(self, real: bool = True) -> None:
        self.synced: list[str] = []
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()
        self.fail_with: OSError | None = None
        self._real = real

    def __call__(self, descriptor: int) -> None:
        self.entered.set()
        assert self.gate.wait(10), "the test never let the fsync go"
        self.synced.append(os.readlink(f"/proc/self/fd/{descriptor}"))
        if self.fail_with is not None:
            raise self.fail_with
        if self._real:
            os.fsync(descriptor)


def committed_alerts(journal: Journal) -> int:
    with contextlib.closing(sqlite3.connect(journal.path)) as reader:
        return int(reader.execute("SELECT COUNT(*) FROM alerts").fetchone()[0])


def test_a_write_is_acknowledged_only_after_the_wal_is_synced(tmp_path: Path) -> None:
    fsync = GatedFsync()
    journal = open_journal(tmp_path, fsync=fsync)  # synchronous FULL, the default
    try:
        fsync.gate.clear()
        written = journal.submit(Journal.op_append_alert(alert(1), "http", 1))
        assert fsync.entered.wait(10)
        # Committed (a reader sees it) but not yet on disk: not acknowledged.
        assert committed_alerts(journal) == 1
        assert not written.done()
        fsync.gate.set()
        assert written.result(timeout=10) is True
        assert fsync.synced[0] == os.path.realpath(journal.path + "-wal")
    finally:
        fsync.gate.set()
        journal.close()


def test_one_fsync_covers_every_group_committed_before_it(tmp_path: Path) -> None:
    fsync = GatedFsync()
    journal = open_journal(tmp_path, commit_interval_seconds=0.0, fsync=fsync)
    try:
        journal.run_sync(Journal.op_append_alert(alert(0), "http", 1))
        fsync.gate.clear()
        fsync.entered.clear()
        first = journal.submit(Journal.op_append_alert(alert(1), "http", 1))
        assert fsync.entered.wait(10)  # the first group's fsync is under way, and held
        commits_held = journal.commits
        later = [journal.submit(Journal.op_append_alert(alert(n), "http", 1)) for n in range(2, 40)]
        deadline = time.monotonic() + 10
        while committed_alerts(journal) < 40 and time.monotonic() < deadline:
            time.sleep(0.01)
        # The writer committed the rest while the disk was busy, and acknowledged none of it.
        assert committed_alerts(journal) == 40 and journal.commits > commits_held
        assert not first.done() and not any(future.done() for future in later)
        syncs_held = len(fsync.synced)
        fsync.gate.set()
        assert first.result(timeout=10) is True
        assert all(future.result(timeout=10) is True for future in later)
        # The held fsync, then one for every group that waited behind it.
        assert len(fsync.synced) - syncs_held == 2
    finally:
        fsync.gate.set()
        journal.close()


def test_the_next_commit_starts_once_the_previous_group_is_on_disk(tmp_path: Path) -> None:
    # Group commit: a write that comes while the previous group is being synced waits for that
    # fsync, then commits at once, not after the rest of a commit interval (here far too long).
    fsync = GatedFsync()
    journal = open_journal(tmp_path, commit_interval_seconds=60.0, fsync=fsync)
    try:
        fsync.gate.clear()
        first = journal.submit(Journal.op_append_alert(alert(1), "http", 1))  # after a quiet spell: at once
        assert fsync.entered.wait(10)
        second = journal.submit(Journal.op_append_alert(alert(2), "http", 1))
        time.sleep(0.2)
        assert committed_alerts(journal) == 1, "committed while the previous group was not on disk"
        fsync.gate.set()
        assert first.result(timeout=10) is True
        assert second.result(timeout=10) is True  # waiting out the interval would take 60 s
        assert journal.commits == 2
    finally:
        fsync.gate.set()
        journal.close()


def test_a_slow_fsync_holds_the_next_commit_at_most_one_interval(tmp_path: Path) -> None:
    fsync = GatedFsync()
    journal = open_journal(tmp_path, commit_interval_seconds=0.05, fsync=fsync)
    try:
        fsync.gate.clear()
        first = journal.submit(Journal.op_append_alert(alert(1), "http", 1))
        assert fsync.entered.wait(10)
        second = journal.submit(Journal.op_append_alert(alert(2), "http", 1))
        deadline = time.monotonic() + 10
        while committed_alerts(journal) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        # Committed while the first group's fsync is still held: two groups in flight, neither
        # acknowledged before an fsync that followed its commit.
        assert committed_alerts(journal) == 2
        assert not first.done() and not second.done()
        fsync.gate.set()
        assert first.result(timeout=10) is True and second.result(timeout=10) is True
    finally:
        fsync.gate.set()
        journal.close()


def test_a_failed_fsync_fails_the_writes_that_waited_on_it(tmp_path: Path) -> None:
    fsync = GatedFsync()
    journal = open_journal(tmp_path, fsync=fsync)
    try:
        journal.run_sync(Journal.op_append_alert(alert(0), "http", 1))
        fsync.fail_with = OSError(errno.EIO, "Input/output error")
        with pytest.raises(SyncFailed, match="journal fsync failed: Input/output error"):
            journal.run_sync(Journal.op_append_alert(alert(1), "http", 1))
        fsync.fail_with = None
        # Fatal to the writer: a later fsync may succeed without the frames the failed one lost
        # (tests/responder/test_journal_review_fsync.py).
        with pytest.raises(SyncFailed):
            journal.run_sync(Journal.op_append_alert(alert(2), "http", 1))
    finally:
        journal.close()


def test_synchronous_normal_acknowledges_without_an_fsync(tmp_path: Path) -> None:
    fsync = GatedFsync()
    journal = open_journal(tmp_path, synchronous="NORMAL", fsync=fsync)
    try:
        assert journal.run_sync(Journal.op_append_alert(alert(1), "http", 1)) is True
        assert fsync.synced == []
    finally:
        journal.close()


@pytest.mark.parametrize("writer", ["thread", "process"])
def test_synchronous_normal_commits_a_write_that_finds_the_writer_idle_at_once(
    tmp_path: Path, writer: str
) -> None:
    # One sender, waiting for each answer before it sends again (Falco's http_output): its writes
    # came right after the previous commit, and each waited out the rest of the interval.
    journal = open_journal(tmp_path, synchronous="NORMAL", writer=writer, commit_interval_seconds=60.0)
    try:
        for n in range(3):
            written = journal.submit(Journal.op_append_alert(alert(n), "http", 1))
            assert written.result(timeout=10) is True  # waiting out the interval would take 60 s
        assert journal.commits == 3
    finally:
        journal.close()


def test_a_write_sent_on_the_previous_answer_is_not_taken_for_one_that_queued_up(tmp_path: Path) -> None:
    """The sender's next write may reach the queue before the writer looks at it again (its answer
    went out first): it came after the commit, not during it, and commits at once. (Under load
    the thread that sends it can beat the writer's loop; here it is sent from the answer itself.)"""
    journal = open_journal(tmp_path, synchronous="NORMAL", writer="thread", commit_interval_seconds=60.0)
    try:
        last: list[Future[Any]] = []

        def send_next(n: int) -> None:
            written = journal.submit(Journal.op_append_alert(alert(n), "http", 1))
            last.append(written)
            if n < 2:
                written.add_done_callback(lambda _: send_next(n + 1))  # runs as the answer goes out

        send_next(0)
        deadline = time.monotonic() + 10
        while len(last) < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(last) == 3 and last[2].result(timeout=10) is True  # not after the 60 s interval
        assert journal.commits == 3
    finally:
        journal.close()


def test_synchronous_normal_spaces_commits_of_writes_that_queued_up_during_a_commit(tmp_path: Path) -> None:
    journal = open_journal(tmp_path, synchronous="NORMAL", writer="thread", commit_interval_seconds=1.0)
    try:
        entered, release = threading.Event(), threading.Event()

        def held(conn: sqlite3.Connection) -> None:
            entered.set()
            assert release.wait(10), "the test never let the commit go"

        first = journal.submit(held)
        assert entered.wait(10)
        second = journal.submit(Journal.op_append_alert(alert(1), "http", 1))
        third = journal.submit(Journal.op_append_alert(alert(2), "http", 1))
        release.set()
        first.result(timeout=10)
        # Queued up while the writer was busy: they share the next commit, one interval after the
        # previous one began, not at once.
        time.sleep(0.3)
        assert not second.done() and committed_alerts(journal) == 0
        assert second.result(timeout=10) is True and third.result(timeout=10) is True
        assert journal.commits == 2
    finally:
        release.set()
        journal.close()


def test_the_syncer_syncs_the_database_when_there_is_no_wal(tmp_path: Path) -> None:
    database = tmp_path / "j.db"
    database.write_bytes(b"")
    fsync = GatedFsync()
    released: list[tuple[str, BaseException | None]] = []
    syncer: WalSyncer[str] = WalSyncer(
        str(database), lambda group, error: released.append((group, error)), fsync
    )
    syncer.start()
    syncer.committed("group")
    syncer.stop()
    assert released == [("group", None)]
    assert fsync.synced == [str(database.resolve())]


def test_stopping_releases_the_groups_still_waiting(tmp_path: Path) -> None:
    wal = tmp_path / "j.db-wal"
    wal.write_bytes(b"")
    fsync = GatedFsync(real=False)
    fsync.gate.clear()
    released: list[str] = []
    syncer: WalSyncer[str] = WalSyncer(
        str(tmp_path / "j.db"), lambda group, error: released.append(group), fsync
    )
    syncer.start()
    syncer.committed("a")
    assert fsync.entered.wait(10)
    syncer.committed("b")
    syncer.committed("c")
    fsync.gate.set()
    syncer.stop()
    assert released == ["a", "b", "c"]
