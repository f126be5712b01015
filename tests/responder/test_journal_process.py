"""The journal's writer in its own process: the same results as in the responder's process, errors
that say what failed, and no write acknowledged that did not reach the writer."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from responder.errors import UserError
from responder.journal.ops import OpenIncident
from responder.journal.process import JournalUnavailable, ProcessWriter
from responder.journal.store import IncidentRow, Journal
from tests.helpers import Records
from tests.responder.test_journal import alert, open_journal

SCHEMA_V1 = Path(__file__).parents[1] / "fixtures/journal/schema-v1.sql"


def writer_pid(journal: Journal) -> int:
    writer = journal._writer
    assert isinstance(writer, ProcessWriter) and writer._process is not None
    return writer._process.pid


def wait_gone(pid: int, seconds: float = 10.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        # A zombie (exited, not yet reaped by its parent) is gone too.
        try:
            if Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z":
                return True
        except FileNotFoundError:
            return True
        time.sleep(0.05)
    return False


def test_the_writer_runs_in_another_process_and_its_writes_are_read_back(tmp_path: Path) -> None:
    journal = open_journal(tmp_path, writer="process")
    try:
        assert writer_pid(journal) != os.getpid()
        futures = [journal.submit(Journal.op_append_alert(alert(n), "http", n)) for n in range(200)]
        assert [f.result(timeout=30) for f in futures] == [True] * 200
        assert journal.run_sync(Journal.op_append_alert(alert(7), "grpc", 999)) is False  # redelivery
        assert journal.ops_committed == 201 and 0 < journal.commits < 201
        assert [p.alert for p in journal.pending_alerts()] == [alert(n) for n in range(200)]
    finally:
        journal.close()


def test_ops_from_the_event_loop_are_settled_on_it(tmp_path: Path) -> None:
    journal = open_journal(tmp_path, writer="process")

    async def scenario() -> list[Any]:
        loop = asyncio.get_running_loop()
        called: asyncio.Future[tuple[Any, BaseException | None]] = loop.create_future()
        append = Journal.op_append_alert(alert(1), "http", 1)

        def settle(value: Any, error: BaseException | None) -> None:
            called.set_result((value, error))

        journal.schedule_call(append, settle)
        incident = IncidentRow("inc-1", "k", "r", "ml", "p1", "c", "h", alert(1).alert_id, 1, 1, 1, False, 1)
        opened = journal.schedule(Journal.op_open_incident(incident))
        notified = await journal.run(Journal.op_schedule_notification("inc-1", "incident", None, 5, 5))
        await opened  # the op returns nothing: settled without an error is what counts
        return [await called, opened.exception(), notified]

    try:
        (value, error), opened_error, notification_id = asyncio.run(scenario())
        assert (value, error, opened_error) == (True, None, None)
        assert isinstance(notification_id, int)
        assert [row.incident_id for row in journal.incidents_since(0)] == ["inc-1"]
    finally:
        journal.close()


def test_a_failing_op_fails_alone_with_its_own_error(tmp_path: Path) -> None:
    journal = open_journal(tmp_path, writer="process", commit_interval_seconds=0.01)
    try:
        bad = journal.submit(OpenIncident(()))  # 12 parameters wanted, none given
        good = journal.submit(Journal.op_append_alert(alert(2), "http", 1))
        with pytest.raises(sqlite3.ProgrammingError, match="bindings"):
            bad.result(timeout=10)
        assert good.result(timeout=10) is True
    finally:
        journal.close()


class Stubborn(Exception):
    """An error that pickles but does not unpickle: its constructor wants what it does not keep."""

    def __init__(self, code: int, detail: str) -> None:
        super().__init__(f"{code}: {detail}")


class RaiseStubborn:
    """An op (importable by the writer process: tests run from the repository's root)."""

    def __call__(self, conn: sqlite3.Connection) -> None:
        raise Stubborn(7, "kept")


def test_an_error_that_cannot_come_back_whole_comes_back_as_its_text(tmp_path: Path) -> None:
    journal = open_journal(tmp_path, writer="process")
    try:
        with pytest.raises(RuntimeError, match="Stubborn: 7: kept"):
            journal.run_sync(RaiseStubborn())
        assert journal.run_sync(Journal.op_append_alert(alert(1), "http", 1)) is True
    finally:
        journal.close()


def settled_by_waiter(writer: ProcessWriter, group: list[tuple[Any, int]]) -> dict[int, tuple[Any, Any]]:
    """Put the group on the writer and collect what each waiter is settled with."""
    settled: list[Any] = []
    original = writer._settle
    writer._settle = settled.extend
    try:
        writer.put(group)
        deadline = time.monotonic() + 10
        while len(settled) < len(group) and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        writer._settle = original
    return {waiter: (value, error) for waiter, value, error in settled}


def test_an_op_that_cannot_cross_to_the_writer_fails_alone_and_says_why(tmp_path: Path) -> None:
    journal = open_journal(tmp_path, writer="process")
    try:
        writer = journal._writer
        assert isinstance(writer, ProcessWriter)
        group = [(Journal.op_append_alert(alert(1), "http", 1), 1), (lambda conn: None, 2)]
        by_waiter = settled_by_waiter(writer, group)
        assert by_waiter[1] == (True, None)
        error = by_waiter[2][1]
        assert isinstance(error, TypeError) and "cannot go to the writer process" in str(error)
    finally:
        journal.close()


class MainScriptOp:
    """An op as a script would define it: its class lives in ``__main__``."""

    def __call__(self, conn: sqlite3.Connection) -> None:
        pass


class MainScriptValue:
    """A value of a class in ``__main__``, inside an op whose own class the writer can import."""


class CarryValue:
    """An op the writer process can import, carrying any value."""

    def __init__(self, value: object) -> None:
        self.value = value

    def __call__(self, conn: sqlite3.Connection) -> None:
        pass


def as_if_in_main(monkeypatch: pytest.MonkeyPatch, cls: type) -> None:
    # Pickled by reference to __main__ (the responder's script); the writer process's __main__ is
    # responder.journal.process, which has no such class.
    monkeypatch.setattr(cls, "__module__", "__main__")
    monkeypatch.setattr(sys.modules["__main__"], cls.__qualname__, cls, raising=False)


def test_an_op_class_defined_in_main_fails_alone_and_says_why(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    as_if_in_main(monkeypatch, MainScriptOp)
    journal = open_journal(tmp_path, writer="process")
    try:
        writer = journal._writer
        assert isinstance(writer, ProcessWriter)
        group = [(Journal.op_append_alert(alert(1), "http", 1), 1), (MainScriptOp(), 2)]
        by_waiter = settled_by_waiter(writer, group)
        assert by_waiter[1] == (True, None)
        error = by_waiter[2][1]
        assert isinstance(error, TypeError)
        assert "MainScriptOp is defined in __main__" in str(error)
        assert journal.run_sync(Journal.op_append_alert(alert(2), "http", 2)) is True
        assert writer.failure is None
    finally:
        journal.close()


def test_writes_the_writer_cannot_load_fail_with_why_and_the_writer_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    as_if_in_main(monkeypatch, MainScriptValue)
    journal = open_journal(tmp_path, writer="process")
    try:
        writer = journal._writer
        assert isinstance(writer, ProcessWriter)
        with Records("serving_guard", logging.ERROR) as records:
            # One frame: the writer cannot tell its ops apart, so both fail, and say why.
            group = [(Journal.op_append_alert(alert(1), "http", 1), 1), (CarryValue(MainScriptValue()), 2)]
            by_waiter = settled_by_waiter(writer, group)
        for waiter in (1, 2):
            value, error = by_waiter[waiter]
            assert value is None and isinstance(error, TypeError)
            assert "writer process cannot load" in str(error) and "MainScriptValue" in str(error)
        assert any("cannot load" in message for message in records.messages)
        # The writer lives on; nothing of that frame was written.
        assert writer.failure is None
        assert journal.run_sync(Journal.op_append_alert(alert(2), "http", 2)) is True
        assert [pending.alert for pending in journal.pending_alerts()] == [alert(2)]
    finally:
        journal.close()


def test_when_the_writer_process_dies_waiting_and_later_writes_fail_clearly(tmp_path: Path) -> None:
    journal = open_journal(tmp_path, writer="process")
    try:
        assert journal.run_sync(Journal.op_append_alert(alert(1), "http", 1)) is True
        os.kill(writer_pid(journal), signal.SIGKILL)
        with Records("serving_guard.journal", logging.CRITICAL) as records:
            later = journal.submit(Journal.op_append_alert(alert(2), "http", 2))
            with pytest.raises(JournalUnavailable, match=r"writer process (exited with code -9|unreachable)"):
                later.result(timeout=10)
            # Logged by the thread that saw the writer's socket close, maybe after the failure above.
            deadline = time.monotonic() + 10
            while not any("writer process is gone" in m for m in records.messages):
                assert time.monotonic() < deadline, "the writer's death was not logged"
                time.sleep(0.01)
        with pytest.raises(JournalUnavailable):
            journal.run_sync(Journal.op_append_alert(alert(3), "http", 3))
        assert journal.pending_count() == 1  # what was acknowledged is there
    finally:
        started = time.monotonic()
        journal.close()
        assert time.monotonic() - started < 5


def test_opening_errors_come_back_as_the_journals_own(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(UserError, match=f"journal {blocker / 'j.db'}: cannot create"):
        Journal(str(blocker / "j.db"), max_bytes=1 << 20, retention_seconds=1, writer="process").open()
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(UserError, match="cannot open"):
        Journal(str(garbage), max_bytes=1 << 20, retention_seconds=1, writer="process").open()


def test_the_writers_log_records_reach_the_responders_log(tmp_path: Path) -> None:
    legacy = sqlite3.connect(tmp_path / "j.db", isolation_level=None)
    legacy.executescript(SCHEMA_V1.read_text())
    legacy.execute("INSERT INTO meta(key, value) VALUES ('schema', '1')")
    legacy.close()
    with Records("serving_guard.journal", logging.INFO) as records:
        journal = open_journal(tmp_path, writer="process")
        journal.close()
    assert "upgrading the journal's schema" in records.messages


def test_the_writer_ignores_ctrl_c_and_stops_when_told(tmp_path: Path) -> None:
    journal = open_journal(tmp_path, writer="process")
    pid = writer_pid(journal)
    try:
        # What a terminal sends the whole process group (Ctrl-C, a hang-up: a closed session), and
        # `timeout` or systemd: the responder stops on each, its last writes still to commit.
        os.kill(pid, signal.SIGINT)
        os.kill(pid, signal.SIGTERM)
        os.kill(pid, signal.SIGHUP)
        assert journal.run_sync(Journal.op_append_alert(alert(1), "http", 1)) is True
    finally:
        journal.close()
    assert wait_gone(pid)


def test_the_writer_exits_when_the_responder_dies(tmp_path: Path) -> None:
    """A responder killed outright leaves no writer behind: the writer sees its socket close."""
    script = textwrap.dedent(
        f"""
        import os, sys
        from responder.journal.store import Journal
        from tests.responder.test_journal import alert
        journal = Journal(
            {str(tmp_path / "j.db")!r}, max_bytes=1 << 24, retention_seconds=60, writer="process"
        )
        journal.open()
        assert journal.run_sync(Journal.op_append_alert(alert(1), "http", 1)) is True
        print(journal._writer._process.pid, flush=True)
        os.kill(os.getpid(), 9)
        """
    )
    repo = Path(__file__).parents[2]
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=repo, capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == -signal.SIGKILL, result.stderr
    assert wait_gone(int(result.stdout.strip()))
    reopened = open_journal(tmp_path)
    try:
        assert [p.alert for p in reopened.pending_alerts()] == [alert(1)]
    finally:
        reopened.close()


def test_an_fsync_function_is_for_the_thread_writer_only(tmp_path: Path) -> None:
    path = str(tmp_path / "j.db")
    with pytest.raises(ValueError, match="thread writer"):
        Journal(path, max_bytes=1 << 20, retention_seconds=1, writer="process", fsync=os.fsync)
    with pytest.raises(ValueError, match="process or thread"):
        Journal(path, max_bytes=1 << 20, retention_seconds=1, writer="fork")


@pytest.mark.parametrize(
    ("argv", "stdin", "expected"),
    [
        ([], b"{}", "usage: python -m responder.journal.process FD"),
        (["x"], b"{}", "usage: python -m responder.journal.process FD"),
        (["\u00b2"], b"{}", "usage: python -m responder.journal.process FD"),  # isdigit, yet not int()
        (["0"], b"not json", "bad options on stdin"),
        (["0"], b"[1]", "bad options on stdin"),
        (["0"], b'{"path": "j.db", "colour": 1}', "bad options on stdin"),
        (["0"], b'{"path": "j.db", "synchronous": "SOMETIMES"}', "synchronous must be FULL or NORMAL"),
        (["987"], b'{"path": "j.db"}', "file descriptor 987: Bad file descriptor"),
    ],
)
def test_the_writer_entry_point_names_what_is_wrong_without_a_traceback(
    argv: list[str], stdin: bytes, expected: str
) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "responder.journal.process", *argv],
        input=stdin,
        capture_output=True,
        timeout=60,
        check=False,
    )
    error = result.stderr.decode()
    assert result.returncode == 2 and expected in error and "Traceback" not in error
