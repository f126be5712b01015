"""A journal path that cannot be one is said as what it is, naming it: a directory ("disk I/O error"
from `audit --journal`, "unable to open database file" at start), or a parent directory that does
not exist ("cannot open its lock ...: No such file or directory"); checked before any file is made."""

from __future__ import annotations

from pathlib import Path

import pytest

from responder.cli import main
from responder.errors import UserError
from responder.journal.lock import JournalLock
from responder.journal.store import Journal, journal_path_problem
from tests.responder.test_commands import Seeded, write_config


def refused(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    """The error line of a command's refusal: exit status 2, one line, no traceback."""
    code = main(argv)
    out, err = capsys.readouterr()
    assert code == 2, out + err
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    return err.strip()


def test_audit_of_a_directory_says_it_is_one(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert refused(["audit", "--journal", str(tmp_path)], capsys) == (
        f"serving-guard: error: journal {tmp_path}: is a directory: give the journal's file"
        f" (e.g. {tmp_path / 'journal.db'})"
    )


def test_the_lock_is_not_made_beside_a_directory_nor_under_a_missing_one(tmp_path: Path) -> None:
    directory = tmp_path / "journals"
    directory.mkdir()
    with pytest.raises(UserError) as caught:
        JournalLock(str(directory)).acquire()
    assert str(caught.value) == (
        f"journal {directory}: is a directory: give the journal's file (e.g. {directory / 'journal.db'})"
    )
    assert not (tmp_path / "journals.lock").exists()
    missing = tmp_path / "no" / "such" / "journal.db"
    with pytest.raises(UserError) as caught:
        JournalLock(str(missing)).acquire()
    assert str(caught.value) == f"journal {missing}: parent directory {missing.parent} does not exist"
    file = tmp_path / "file"
    file.write_text("x")
    with pytest.raises(UserError) as caught:
        JournalLock(str(file / "journal.db")).acquire()
    assert str(caught.value) == f"journal {file / 'journal.db'}: its parent {file} is not a directory"
    with pytest.raises(UserError) as caught:
        JournalLock(str(file / "sub" / "journal.db")).acquire()
    assert str(caught.value) == (
        f"journal {file / 'sub' / 'journal.db'}: parent directory {file / 'sub'} does not exist"
        " (a file stands on its path)"
    )


@pytest.mark.parametrize("writer", ["thread", "process"])
def test_opening_a_directory_as_the_journal_says_it_is_one(tmp_path: Path, writer: str) -> None:
    with pytest.raises(UserError) as caught:
        Journal(str(tmp_path), max_bytes=1 << 20, retention_seconds=1, writer=writer).open()
    assert str(caught.value) == (
        f"journal {tmp_path}: is a directory: give the journal's file (e.g. {tmp_path / 'journal.db'})"
    )


def test_a_journal_opened_without_its_lock_still_gets_its_directory_made(tmp_path: Path) -> None:
    """The writer makes a missing parent (as it always has): only the lock, first, requires it."""
    path = tmp_path / "new" / "journal.db"
    assert journal_path_problem(str(path), parent_must_exist=False) is None
    with Journal(str(path), max_bytes=1 << 20, retention_seconds=1):
        pass
    assert path.exists()
    assert journal_path_problem(str(path)) is None


def test_a_responder_started_on_such_a_path_says_what_is_wrong(
    tmp_path: Path, seeded: Seeded, capsys: pytest.CaptureFixture[str]
) -> None:
    _, _, kubeconfig = seeded
    source = tmp_path / "alerts.jsonl"
    source.write_text("")
    directory = tmp_path / "journals"
    directory.mkdir()
    config = write_config(tmp_path, kubeconfig, journal={"path": str(directory)})
    assert refused(["ingest", str(source), "--config", str(config), "--settle-seconds", "0"], capsys) == (
        f"serving-guard: error: journal {directory}: is a directory: give the journal's file"
        f" (e.g. {directory / 'journal.db'})"
    )
    missing = tmp_path / "missing" / "journal.db"
    config = write_config(tmp_path, kubeconfig, journal={"path": str(missing)})
    assert refused(["ingest", str(source), "--config", str(config), "--settle-seconds", "0"], capsys) == (
        f"serving-guard: error: journal {missing}: parent directory {missing.parent} does not exist"
    )
    assert not missing.parent.exists()
