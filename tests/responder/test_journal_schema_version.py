"""The journal's schema number moves with every word an earlier version could not read, so that
going back a version is refused with a clear message instead of failing on a row mid-run (the
release that added the "lapsed" status without a new number crashed the one before it)."""

from __future__ import annotations

import dataclasses
import json
import re
import sqlite3
from pathlib import Path

import pytest

from responder.actions.outcome import OutcomeStatus
from responder.cli import main
from responder.cluster.verify import VerificationStatus
from responder.errors import UserError
from responder.journal.rows import encode_payload
from responder.journal.schema import SCHEMA_VERSION
from responder.journal.store import Journal
from responder.notify.render import MessageKind
from responder.sender import Proof, Sender
from tests.responder.test_journal import alert

# What each schema's rows may say. A new status or kind is a new schema: add it here with the next
# number, a migration to it (responder/journal/schema.py) and a line in its comment.
_STATUSES_5 = frozenset(
    {
        "quarantined",
        "leaky",
        "annotated",
        "dry_run",
        "withheld",
        "pod_gone",
        "failed",
        "released",
        "blocked",
        "lapsed",
    }
)
_KINDS_5 = frozenset({"incident", "repeat", "by_hand", "lapse"})
# An alert row's states, from schema 6 on ("deferred": taken while the pipeline was full).
ALERT_STATES_BY_SCHEMA = {
    6: {"pending", "deferred", "done"},
    7: {"pending", "deferred", "done"},
    8: {"pending", "deferred", "done"},
    9: {"pending", "deferred", "done"},
}
_VERIFICATIONS_7 = frozenset({"verified", "unverified", "pod_not_found", "no_pod_identity", "lookup_failed"})
# Schema 6 added no status and no kind (an alert state, above); schema 7 a column (alerts.sender);
# schema 8 a verification status; schema 9 a message kind ("retry").
WORDS_BY_SCHEMA = {
    5: (set(_STATUSES_5), set(_KINDS_5), set(_VERIFICATIONS_7)),
    6: (set(_STATUSES_5), set(_KINDS_5), set(_VERIFICATIONS_7)),
    7: (set(_STATUSES_5), set(_KINDS_5), set(_VERIFICATIONS_7)),
    8: (set(_STATUSES_5), set(_KINDS_5), _VERIFICATIONS_7 | {"not_listed_yet"}),
    9: (set(_STATUSES_5), _KINDS_5 | {"retry"}, _VERIFICATIONS_7 | {"not_listed_yet"}),
}


def test_a_new_status_or_message_kind_comes_with_a_new_schema_number() -> None:
    assert SCHEMA_VERSION in WORDS_BY_SCHEMA, (
        f"schema {SCHEMA_VERSION} has no pinned words: add them to WORDS_BY_SCHEMA"
    )
    statuses, kinds, verifications = WORDS_BY_SCHEMA[SCHEMA_VERSION]
    assert {s.value for s in OutcomeStatus} == statuses, (
        "OutcomeStatus changed: an earlier version cannot read the new word; bump SCHEMA_VERSION"
    )
    assert {k.value for k in MessageKind} == kinds, (
        "MessageKind changed: an earlier version cannot read the new word; bump SCHEMA_VERSION"
    )
    assert {v.value for v in VerificationStatus} == verifications, (
        "VerificationStatus changed: an earlier version cannot read the new word; bump SCHEMA_VERSION"
    )


def schema_of(path: Path) -> str:
    conn = sqlite3.connect(path)
    try:
        return str(conn.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()[0])
    finally:
        conn.close()


def set_schema(path: Path, value: int) -> None:
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("UPDATE meta SET value = ? WHERE key = 'schema'", (str(value),))
    finally:
        conn.close()


def made(path: Path) -> Path:
    journal = Journal(str(path), max_bytes=64 * 1024 * 1024, retention_seconds=3600.0)
    journal.open()
    journal.close()
    return path


def test_an_alert_state_comes_with_a_new_schema_number() -> None:
    """The states an alert row may be in, as the code writes them (journal.rows, journal.ops)."""
    written: set[str] = set()
    for module in ("rows.py", "ops.py", "schema.py"):
        text = (Path(__file__).parents[2] / "responder" / "journal" / module).read_text()
        written.update(re.findall(r"state = '([a-z_]+)'", text))
        written.update(re.findall(r'"(pending|deferred|done)" if', text))
    alert_states = written - {"sending", "dropped"}  # notifications' states, in the same modules
    assert alert_states == ALERT_STATES_BY_SCHEMA[SCHEMA_VERSION], (
        "an alert state changed: an earlier version cannot read the new word; bump SCHEMA_VERSION"
    )


def as_schema_6(path: Path) -> Path:
    """A journal as schema 6 left it: no alerts.sender column."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("ALTER TABLE alerts DROP COLUMN sender")
    finally:
        conn.close()
    set_schema(path, 6)
    return path


def test_a_schema_4_to_8_journal_is_brought_to_9(tmp_path: Path) -> None:
    for earlier in (4, 5, 6, 7, 8):
        path = made(tmp_path / f"j{earlier}.db")
        if earlier < 7:
            as_schema_6(path)
        set_schema(path, earlier)  # schema 4's and 5's tables are 6's (its index is made on open)
        made(path)
        assert schema_of(path) == "9"


def queue_index_sql(path: Path) -> str:
    conn = sqlite3.connect(path)
    try:
        row = conn.execute("SELECT sql FROM sqlite_master WHERE name = 'notifications_queue'").fetchone()
        return str(row[0])
    finally:
        conn.close()


def test_a_schema_8_journals_queue_index_is_made_again_with_retry_replies_first(tmp_path: Path) -> None:
    """Schema 8's index of the notifications' queues put a "retry" reply in the last queue; the
    queries spell schema 9's, so its index would not be read: the migration makes it again."""
    path = made(tmp_path / "j8.db")
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("DROP INDEX notifications_queue")
        conn.execute(
            "CREATE INDEX notifications_queue ON notifications((CASE WHEN kind IN ('by_hand', 'lapse') THEN 0"
            " WHEN kind = 'incident' THEN 1 WHEN kind IN ('repeat', 'thread') THEN 2 ELSE 3 END),"
            " next_attempt_ns) WHERE state IN ('pending', 'sending')"
        )
    finally:
        conn.close()
    set_schema(path, 8)
    assert "'retry'" not in queue_index_sql(path)
    made(path)
    assert schema_of(path) == "9"
    assert "('by_hand', 'lapse', 'retry') THEN 0" in queue_index_sql(path)


def test_a_schema_6_journal_keeps_its_alerts_which_name_no_sender(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Alerts journaled before senders were recorded: read as they are by `audit` (before and after
    the next writer brings the journal to schema 7), with no sender; new ones name theirs."""
    path = made(tmp_path / "j.db")
    journal = Journal(str(path), max_bytes=64 * 1024 * 1024, retention_seconds=3600.0)
    journal.open()
    try:
        journal.run_sync(Journal.op_append_alert(alert(1), "http", 10))
    finally:
        journal.close()
    as_schema_6(path)
    for _ in range(2):  # as it is, then brought up to date by a writer
        assert main(["audit", "--journal", str(path), "--format", "json"]) == 0
        [entry] = json.loads(capsys.readouterr().out)
        assert entry["alert_id"] == alert(1).alert_id and entry["sender"] is None
        made(path)
    assert schema_of(path) == str(SCHEMA_VERSION)
    journal = Journal(str(path), max_bytes=64 * 1024 * 1024, retention_seconds=3600.0)
    journal.open()
    try:
        sender = Sender("10.0.0.7", Proof.CERTIFICATE, ("falco-node-a",))
        sent = dataclasses.replace(alert(2), sender=sender)
        assert journal.run_sync(Journal.op_append_alert(sent, "http", 20, encode_payload(sent))) is True
    finally:
        journal.close()
    assert main(["audit", "--journal", str(path), "--format", "json"]) == 0
    entries = json.loads(capsys.readouterr().out)
    assert [entry["sender"] for entry in entries] == [
        None,
        {"address": "10.0.0.7", "proof": "certificate", "certificate": ["falco-node-a"]},
    ]


def test_a_journal_of_a_newer_version_is_refused_by_the_writer_with_both_numbers(tmp_path: Path) -> None:
    path = made(tmp_path / "j.db")
    set_schema(path, SCHEMA_VERSION + 1)
    with pytest.raises(UserError) as refused:
        made(path)
    said = str(refused.value)
    assert str(path) in said
    assert f"schema {SCHEMA_VERSION + 1}, this version reads {SCHEMA_VERSION}" in said
    assert "written by a newer version of Serving Guard" in said
    assert schema_of(path) == str(SCHEMA_VERSION + 1)  # left as it was


def test_a_journal_of_a_newer_version_is_refused_by_audit_without_a_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = made(tmp_path / "j.db")
    set_schema(path, SCHEMA_VERSION + 1)
    assert main(["audit", "--journal", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"journal {path}: schema {SCHEMA_VERSION + 1}, this version reads {SCHEMA_VERSION}" in err
    assert "written by a newer version of Serving Guard" in err and "Traceback" not in err


def test_audit_reads_a_journal_of_its_own_schema(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = made(tmp_path / "j.db")
    assert main(["audit", "--journal", str(path), "--format", "json"]) == 0
    assert capsys.readouterr().out.strip() == "[]"
