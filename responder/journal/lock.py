"""One responder per journal. The journal holds what makes the guardrails hold: the incidents that
fold repeats, the circuit breakers' windows, the notifications queue. Two responders (or a
responder and `serving-guard ingest` with its config) sharing one would each keep their own
breaker and notifier over the same rows. The commands a person acts with only record into it, and
take no lock.

The lock is an advisory exclusive lock on ``<journal>.lock``: the kernel drops it when the process
ends, so a crash never leaves a stale lock behind.
"""

from __future__ import annotations

import contextlib
import fcntl
import os

from responder.errors import UserError
from responder.journal.store import check_journal_path

SUFFIX = ".lock"


class JournalLock:
    def __init__(self, journal_path: str) -> None:
        self._journal = journal_path
        # Beside the file itself, wherever it is reached from: two responders given the journal by
        # two paths (a symlink to it, or to its directory) take the one lock.
        self.path = os.path.realpath(journal_path) + SUFFIX
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock, or raise UserError naming the process that holds it."""
        if self._fd is not None:
            return
        # The lock is the journal's first file opened: a journal path that cannot be one is said
        # here, as what it is (its lock's open would say "No such file or directory", or make
        # DIR.lock beside a directory given for the journal).
        check_journal_path(self._journal)
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise UserError(
                f"journal {self._journal}: cannot open its lock {self.path}: {exc.strerror}"
            ) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            raise UserError(
                f"journal {self._journal}: another responder is using it ({holder}; lock {self.path})."
                " One responder per journal: its incidents and circuit breakers live in it. Stop that"
                " one, or give this one its own journal.path"
            ) from None
        self._fd = fd  # held from here: release() closes it whatever follows
        with contextlib.suppress(OSError):  # the pid is for the message only
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())

    @property
    def fileno(self) -> int | None:
        """The lock's descriptor while held: a writer process started for the journal inherits it
        (Journal.open), so that the lock lasts as long as anything may still write."""
        return self._fd

    def release(self) -> None:
        """Close this process's hold on the lock (a writer process that inherited it holds it on
        until it exits)."""
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)  # closing drops the lock
            self._fd = None


def _read_holder(fd: int) -> str:
    with contextlib.suppress(OSError, ValueError):
        text = os.pread(fd, 32, 0).decode().strip()
        if text.isdigit():
            return f"pid {text}"
    return "pid unknown"
