"""Going back a version, and reading what another version wrote. A journal of the release before
the "lapsed" status (schema 4) is brought to schema 5 with every record kept; a later version's
journal is refused, naming the file and both numbers, by the writer before it writes anything and by
`serving-guard audit`, never with a traceback; a journal of an earlier schema is read by audit as
it is; and a status word this version does not know, read back from the journal, is kept and shown
as written rather than stopping the reader (the release that added "lapsed" without a new schema
number crashed the one before it on such a row)."""

from __future__ import annotations

import json
import logging
import sqlite3
from pathlib import Path

import pytest

from responder.actions.outcome import (
    BLOCK_DESTINATION,
    LAPSED_ACTION,
    RECHECK,
    ActionOutcome,
    OutcomeStatus,
    UnknownStatus,
    status_of,
)
from responder.cli import main
from responder.errors import UserError
from responder.journal.rows import encode_payload
from responder.journal.schema import SCHEMA_VERSION
from responder.journal.store import Journal, report_from_record
from responder.notify.render import render_incident
from tests.helpers import Records
from tests.responder.test_journal import alert, open_journal

SCHEMA_V4 = Path(__file__).parents[1] / "fixtures/journal/schema-v4.sql"
INCIDENT = "inc-0123456789abcdef0123"


@pytest.fixture(params=["thread", "process"])
def writer(request: pytest.FixtureRequest) -> str:
    """The journal's two writers (journal.writer): each runs the schema checks itself."""
    return str(request.param)


def sql(path: Path, *statements: str | tuple[str, tuple[object, ...]]) -> None:
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        for statement in statements:
            if isinstance(statement, tuple):
                conn.execute(*statement)
            else:
                conn.execute(statement)
    finally:
        conn.close()


def query(path: Path, text: str) -> list[tuple[object, ...]]:
    conn = sqlite3.connect(path)
    try:
        return [tuple(row) for row in conn.execute(text)]
    finally:
        conn.close()


def schema_of(path: Path) -> str:
    [(value,)] = query(path, "SELECT value FROM meta WHERE key = 'schema'")
    return str(value)


QUARANTINED = ActionOutcome(
    "quarantine", OutcomeStatus.QUARANTINED, "deny-all", started_ns=30, finished_ns=40
)


def incident_rows(path: Path, status_word: str | None = None) -> None:
    """An incident in the journal at ``path`` as the writer leaves one: its opening alert, its
    decision, its quarantine (with ``status_word`` in place of "quarantined", if given) and its
    sent Slack post; and another alert still pending."""
    opening, pending = alert(1), alert(2)
    outcome = QUARANTINED.to_json()
    if status_word is not None:
        outcome["status"] = status_word
    insert_alert = (
        "INSERT INTO alerts(alert_id, received_ns, input, rule, priority, namespace, pod, event_ns, payload,"
        " state, incident_id, outcome, finished_ns) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)"
    )
    sql(
        path,
        (
            insert_alert,
            (
                *(opening.alert_id, 10, "http", opening.rule, int(opening.priority), "ml", "p1"),
                *(opening.time_ns, encode_payload(opening), "done", INCIDENT, "opened", 50),
            ),
        ),
        (
            insert_alert,
            (
                *(pending.alert_id, 60, "http", pending.rule, int(pending.priority), "ml", "p2"),
                *(pending.time_ns, encode_payload(pending), "pending", None, None, None),
            ),
        ),
        (
            "INSERT INTO incidents(incident_id, key_digest, rule, namespace, pod, container_id, hostname,"
            " first_alert_id, first_event_ns, opened_ns, last_seen_ns, count, decided_ns, verification,"
            " decision) VALUES (?, 'k', ?, 'ml', 'p1', 'c', 'h', ?, ?, 10, 10, 1, 20, ?, ?)",
            (
                INCIDENT,
                opening.rule,
                opening.alert_id,
                opening.time_ns,
                json.dumps({"status": "verified", "reason": "", "container_name": "c"}),
                json.dumps({"policy": "shells", "actions": ["quarantine"], "requested": ["quarantine"]}),
            ),
        ),
        (
            "INSERT INTO actions(incident_id, namespace, pod, action, status, detail, outcome, started_ns,"
            " finished_ns, actor)"
            " VALUES (?, 'ml', 'p1', 'quarantine', ?, 'deny-all', ?, 30, 40, 'responder')",
            (INCIDENT, outcome["status"], json.dumps(outcome)),
        ),
        (
            "INSERT INTO notifications(incident_id, kind, channel, state, next_attempt_ns, created_ns,"
            " sent_ns, slack_channel, slack_ts) VALUES (?, 'incident', '#sec', 'sent', 45, 45, 46, 'C1',"
            " '1.000100')",
            (INCIDENT,),
        ),
    )


# -- schema 4 -> 5 ------------------------------------------------------------------------------


def test_a_schema_4_journal_of_the_release_before_is_brought_to_5_with_every_record(
    tmp_path: Path, writer: str
) -> None:
    path = tmp_path / "j.db"
    legacy = sqlite3.connect(path, isolation_level=None)
    legacy.executescript(SCHEMA_V4.read_text())
    legacy.execute("INSERT INTO meta(key, value) VALUES ('schema', '4')")
    legacy.close()
    incident_rows(path)
    tables_before = query(path, "SELECT type, name, sql FROM sqlite_master ORDER BY name")

    with Records("serving_guard.journal", logging.INFO) as records:
        journal = open_journal(tmp_path, writer=writer)
    try:
        assert schema_of(path) == str(SCHEMA_VERSION)
        assert "upgrading the journal's schema" in records.messages
        # Only the alerts table changed (7: its sender column); else the number moved (5: lapses;
        # 6: deferred alerts, with their index). Indexes an earlier version reads and keeps up to
        # date as any (Slack's order of due posts) are made at open, without a number.
        tables_after = query(path, "SELECT type, name, sql FROM sqlite_master ORDER BY name")
        assert [row[1] for row in tables_after if row not in tables_before] == [
            "alerts",
            "alerts_deferred",
            "incidents_verified",
            "notifications_queue",
            "notifications_waiting_post",
        ]
        assert all(row in tables_after for row in tables_before if row[1] != "alerts")
        record = journal.incident_record(INCIDENT)
        assert record is not None and record["outcomes"] == [QUARANTINED]
        assert report_from_record(record) is not None
        assert [p.alert for p in journal.pending_alerts()] == [alert(2)]
        assert journal.quarantine_times_since(0) == [40]
        parent, _ = journal.incident_thread(INCIDENT)
        assert parent is not None and parent.slack_ts == "1.000100"
        # What schema 5 is for: a lapse recorded and read back.
        lapse = ActionOutcome(
            RECHECK,
            OutcomeStatus.LAPSED,
            "deny-all deleted",
            started_ns=70,
            finished_ns=80,
            extra={LAPSED_ACTION: "quarantine"},
        )
        journal.run_sync(Journal.op_record_lapse(INCIDENT, "ml", "p1", lapse, 80, tell=False))
        record = journal.incident_record(INCIDENT)
        assert record is not None and record["outcomes"] == [QUARANTINED, lapse]
    finally:
        journal.close()
    open_journal(tmp_path, writer=writer).close()  # opened again, up to date: nothing to do
    assert schema_of(path) == str(SCHEMA_VERSION)


# -- a later version's journal ----------------------------------------------------------------


def later_versions(path: Path) -> Path:
    """A journal as a later version could leave it: a new number, and a table and an index of
    this version's gone (moved or dropped by that version)."""
    made = Journal(str(path), max_bytes=64 * 1024 * 1024, retention_seconds=3600.0)
    made.open()
    made.close()
    sql(
        path,
        ("UPDATE meta SET value = ? WHERE key = 'schema'", (str(SCHEMA_VERSION + 1),)),
        "DROP INDEX alerts_received",
        "DROP TABLE notifications",
    )
    return path


def test_the_writer_refuses_a_later_versions_journal_before_writing_to_it(
    tmp_path: Path, writer: str
) -> None:
    path = later_versions(tmp_path / "j.db")
    before = query(path, "SELECT type, name, sql FROM sqlite_master ORDER BY name")
    with pytest.raises(UserError) as refused:
        open_journal(tmp_path, writer=writer)
    assert str(refused.value) == (
        f"journal {path}: schema {SCHEMA_VERSION + 1}, this version reads {SCHEMA_VERSION} (written by a"
        " newer version of Serving Guard: use that version, or move the journal aside to start a new one)"
    )
    # Left as the later version wrote it: none of this version's tables or indexes made over it.
    assert query(path, "SELECT type, name, sql FROM sqlite_master ORDER BY name") == before
    assert schema_of(path) == str(SCHEMA_VERSION + 1)


def test_audit_refuses_a_later_versions_journal_naming_it_and_both_numbers(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = later_versions(tmp_path / "j.db")
    assert main(["audit", "--journal", str(path)]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err == (
        f"serving-guard: error: journal {path}: schema {SCHEMA_VERSION + 1}, this version reads"
        f" {SCHEMA_VERSION} (written by a newer version of Serving Guard: use that version, or move the"
        " journal aside to start a new one)\n"
    )


@pytest.mark.parametrize("value", ["five", "", "\u0665", "-1"])
def test_a_schema_number_that_is_no_number_is_refused_clearly(
    tmp_path: Path, value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "j.db"
    open_journal(tmp_path).close()
    sql(path, ("UPDATE meta SET value = ? WHERE key = 'schema'", (value,)))
    said = f"journal {path}: its schema number is {value!r}, not a number"
    with pytest.raises(UserError, match="not a Serving Guard journal, or a damaged one") as refused:
        open_journal(tmp_path)
    assert str(refused.value).startswith(said)
    assert main(["audit", "--journal", str(path)]) == 2
    err = capsys.readouterr().err
    assert said in err and "Traceback" not in err
    assert schema_of(path) == value


# -- a journal of an earlier schema, read as it is ----------------------------------------------


@pytest.mark.parametrize(("schema", "dropped"), [(3, ("action_id",)), (2, ("action_id", "slack_thread_ts"))])
def test_audit_reads_a_journal_of_an_earlier_schema_as_it_is(
    tmp_path: Path, schema: int, dropped: tuple[str, ...], capsys: pytest.CaptureFixture[str]
) -> None:
    """A reader does not upgrade a journal (the next writer to open it does): the columns an earlier
    schema has not got read as their rows then had them."""
    path = tmp_path / "j.db"
    open_journal(tmp_path).close()
    incident_rows(path)
    sql(
        path,
        *(f"ALTER TABLE notifications DROP COLUMN {column}" for column in dropped),
        ("UPDATE meta SET value = ? WHERE key = 'schema'", (str(schema),)),
    )
    assert main(["audit", "--journal", str(path), "--format", "json"]) == 0
    opened = json.loads(capsys.readouterr().out)[0]
    [notification] = opened["incident"]["notifications"]
    assert (notification["kind"], notification["slack_ts"], notification["slack_thread_ts"]) == (
        "incident",
        "1.000100",
        None,
    )
    assert "action_id" not in notification
    assert schema_of(path) == str(schema)  # read, not upgraded


# -- a status word this version does not know -------------------------------------------------


def test_an_unknown_status_word_decodes_to_itself() -> None:
    assert status_of("lapsed") is OutcomeStatus.LAPSED
    stored = {**QUARANTINED.to_json(), "status": "sealed", "detail": "by a later version"}
    outcome = ActionOutcome.from_json(stored)
    assert outcome.status == UnknownStatus("sealed")
    assert not isinstance(outcome.status, OutcomeStatus) and str(outcome.status) == "sealed"
    assert not outcome.ok and not outcome.labelled and outcome.lapse is None
    assert outcome.describe() == "sealed: by a later version"
    assert outcome.to_json() == stored  # kept as written, not lost


def test_an_unknown_status_read_back_from_the_journal_is_kept_and_shown(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The schema number keeps a later version's words out; a word that came anyway (a damaged row,
    or a version that forgot the number, as the one that added "lapsed" did) is read as written by
    each reader, never a ValueError mid-run."""
    path = tmp_path / "j.db"
    open_journal(tmp_path).close()
    incident_rows(path, status_word="sealed")
    sealed = {**QUARANTINED.to_json(), "action": BLOCK_DESTINATION, "status": "sealed"}
    sql(
        path,
        (
            "INSERT INTO actions(incident_id, namespace, pod, action, status, detail, outcome, started_ns,"
            " finished_ns, actor) VALUES (NULL, 'ml', 'p1', ?, 'sealed', '', ?, 30, 41, 'carol')",
            (BLOCK_DESTINATION, json.dumps(sealed)),
        ),
    )
    journal = open_journal(tmp_path)
    try:
        record = journal.incident_record(INCIDENT)  # what a restart reads, and the Slack updates
        assert record is not None
        [outcome] = record["outcomes"]
        assert outcome.status == UnknownStatus("sealed") and outcome.action == "quarantine"
        report = report_from_record(record)
        assert report is not None
        assert "sealed" in json.dumps(render_incident(report).blocks)
        assert journal.block_times_since(0) == []  # read, and not counted as a block made
        by_hand = journal.action_by_hand(2)
        assert by_hand is not None and by_hand.outcome.status == UnknownStatus("sealed")
    finally:
        journal.close()
    assert main(["audit", "--journal", str(path)]) == 0
    out, err = capsys.readouterr()
    assert "quarantine=sealed" in out and err == ""
    assert main(["audit", "--journal", str(path), "--format", "summary"]) == 0
    assert "quarantine sealed" in capsys.readouterr().out
