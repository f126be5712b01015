"""One responder per journal, whatever path reaches it, for as long as anything may write to it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from responder.errors import UserError
from responder.journal.lock import JournalLock
from responder.journal.store import Journal
from tests.responder.test_journal import alert


def test_a_journal_reached_through_a_symlink_takes_the_same_lock(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    journal = tmp_path / "data" / "journal.db"
    (tmp_path / "linked.db").symlink_to(journal)  # as a volume's file may be given
    held = JournalLock(str(journal))
    held.acquire()
    try:
        with pytest.raises(UserError, match="another responder is using it"):
            JournalLock(str(tmp_path / "linked.db")).acquire()
    finally:
        held.release()


def test_the_writer_process_holds_the_lock_until_it_exits(tmp_path: Path) -> None:
    path = str(tmp_path / "journal.db")
    lock = JournalLock(path)
    lock.acquire()
    journal = Journal(path, max_bytes=64 << 20, retention_seconds=3600, writer="process")
    journal.open(lock_fd=lock.fileno)
    try:
        assert journal.run_sync(Journal.op_append_alert(alert(1), "http", 1)) is True
        # The responder's hold gone (as when it is killed), its writer may still commit: the
        # journal is not free for another responder yet.
        lock.release()
        with pytest.raises(UserError, match="another responder is using it"):
            JournalLock(path).acquire()
    finally:
        journal.close()
    free = JournalLock(path)
    free.acquire()  # the writer exited: the lock went with it
    free.release()
    assert os.path.exists(path + ".lock")
