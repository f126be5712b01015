from __future__ import annotations

import io
import json
import logging
import sqlite3
import threading
import uuid
import zlib
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from responder.actions.outcome import ActionOutcome, OutcomeStatus
from responder.alert import Alert
from responder.alert_json import alert_from_mapping
from responder.audit.text import _action_text as action_text
from responder.audit.trail import _incident as audited_incident
from responder.errors import UserError
from responder.journal.rows import decode_payload, encode_payload
from responder.journal.schema import SCHEMA_VERSION
from responder.journal.store import IncidentRow, Journal, JournaledRepeats
from responder.logs import setup_logging


def alert(n: int, rule: str = "r") -> Alert:
    return alert_from_mapping(
        {
            "rule": rule,
            "priority": "Warning",
            "time": f"2026-01-01T00:00:{n % 60:02d}.{n:09d}Z",
            "output": "x" * 200,
            "output_fields": {"k8s.ns.name": "ml", "k8s.pod.name": f"p{n % 7}", "n": n},
        }
    )


@pytest.fixture(params=["thread", "process"])
def writer(request: pytest.FixtureRequest) -> str:
    """The journal's two writers (journal.writer): the tests that take this run on both."""
    return str(request.param)


def open_journal(tmp_path: Path, **kwargs: object) -> Journal:
    options: dict[str, object] = {"max_bytes": 64 * 1024 * 1024, "retention_seconds": 3600.0}
    options.update(kwargs)
    journal = Journal(str(tmp_path / "j.db"), **options)  # type: ignore[arg-type]
    journal.open()
    return journal


def test_payload_round_trip() -> None:
    original = alert(5)
    assert decode_payload(encode_payload(original)) == original


def test_payloads_are_the_bodies_as_received_and_older_compressed_ones_still_read() -> None:
    original = alert(5)
    raw = b"  " + json.dumps(original.to_falco_json()).encode()
    assert encode_payload(original, raw) == raw  # stored exactly as the sender sent it
    assert decode_payload(raw) == original
    assert decode_payload(zlib.compress(raw, 1)) == original


def test_concurrent_writers_are_group_committed(tmp_path: Path, writer: str) -> None:
    journal = open_journal(tmp_path, writer=writer, commit_interval_seconds=0.005)
    try:
        futures = []
        lock = threading.Lock()

        def write_from(start: int) -> None:
            for n in range(start, start + 250):
                future = journal.submit(Journal.op_append_alert(alert(n), "http", n))
                with lock:
                    futures.append(future)

        threads = [threading.Thread(target=write_from, args=(i * 1000,)) for i in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert all(f.result(timeout=30) is True for f in futures)
        assert journal.ops_committed == 1000
        assert journal.commits < 1000 / 5, "writes were not grouped"
        assert journal.pending_count() == 1000
    finally:
        journal.close()


def test_the_same_alert_is_stored_once(tmp_path: Path, writer: str) -> None:
    journal = open_journal(tmp_path, writer=writer)
    try:
        assert journal.run_sync(Journal.op_append_alert(alert(1), "http", 1)) is True
        assert journal.run_sync(Journal.op_append_alert(alert(1), "grpc", 2)) is False
        assert journal.pending_count() == 1
    finally:
        journal.close()


def test_a_failing_write_fails_alone(tmp_path: Path) -> None:
    journal = open_journal(tmp_path, commit_interval_seconds=0.01)
    try:

        def broken(conn: object) -> None:
            raise ValueError("boom")

        bad = journal.submit(broken)
        good = journal.submit(Journal.op_append_alert(alert(2), "http", 1))
        with pytest.raises(ValueError, match="boom"):
            bad.result(timeout=10)
        assert good.result(timeout=10) is True
    finally:
        journal.close()


def test_pending_alerts_survive_a_reopen_in_order(tmp_path: Path, writer: str) -> None:
    journal = open_journal(tmp_path, writer=writer)
    for n in range(5):
        journal.run_sync(Journal.op_append_alert(alert(n), "http", n))
    journal.run_sync(Journal.op_finish_alert(alert(2), "inc", "opened", 99))
    journal.close()
    again = open_journal(tmp_path, writer=writer)
    try:
        pending = again.pending_alerts()
        assert [p.alert for p in pending] == [alert(n) for n in (0, 1, 3, 4)]
        assert pending[0].input == "http" and pending[1].received_ns == 1
    finally:
        again.close()


def test_retention_drops_old_finished_records_but_never_pending_ones(tmp_path: Path, writer: str) -> None:
    journal = open_journal(tmp_path, writer=writer, retention_seconds=10.0)
    try:
        for n in range(6):
            journal.run_sync(Journal.op_append_alert(alert(n), "http", n * 1_000_000_000))
        for n in range(4):
            journal.run_sync(Journal.op_finish_alert(alert(n), None, "opened", 1))
        removed = journal.run_sync(journal.op_prune(now_ns=13_000_000_000))
        assert removed == 3  # alerts 0-2 are older than 10 s and done; 3 is recent; 4-5 pending
        assert journal.pending_count() == 2
    finally:
        journal.close()


def test_size_bound_prunes_and_then_reports_full(tmp_path: Path, writer: str) -> None:
    import os as _os

    journal = open_journal(tmp_path, writer=writer, max_bytes=1024 * 1024, commit_interval_seconds=0)
    try:
        # Incompressible outputs: 200 alerts of ~12 KB each are well past the 1 MiB bound.
        big = [
            alert_from_mapping({**alert(n).to_falco_json(), "output": _os.urandom(6000).hex()})
            for n in range(200)
        ]
        for item in big:
            journal.run_sync(Journal.op_append_alert(item, "http", 1))
        journal.check_size()
        assert journal.full  # everything is pending: nothing may be pruned
        for _ in range(3):
            journal.run_sync(journal.op_prune(now_ns=3))
        journal.check_size()
        assert journal.full and journal.pending_count() == 200  # pending alerts are never pruned
        for item in big:
            journal.run_sync(Journal.op_finish_alert(item, None, "opened", 2))
        for _ in range(30):
            journal.run_sync(journal.op_prune(now_ns=3))
        journal.check_size()
        # The file does not shrink, but its freed pages are reused: the bound clears.
        assert not journal.full
        with journal.reader() as conn:
            left = conn.execute("SELECT COUNT(*) FROM alerts").fetchone()[0]
        assert 0 < left < 200
        # And it stays clear after a restart (the state is measured, not remembered).
        journal.close()
        journal = open_journal(tmp_path, writer=writer, max_bytes=1024 * 1024)
        journal.check_size()
        assert not journal.full
    finally:
        journal.close()


def test_an_unusable_journal_path_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(UserError, match="cannot create"):
        Journal(str(blocker / "j.db"), max_bytes=1 << 20, retention_seconds=1).open()
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(UserError, match="cannot open"):
        Journal(str(garbage), max_bytes=1 << 20, retention_seconds=1).open()


def test_json_logs_carry_the_alert_id() -> None:
    stream = io.StringIO()
    setup_logging("info", "json", stream)
    logging.getLogger("serving_guard.test").info(
        "incident decided", extra={"alert_id": "abc123", "rule": "r"}
    )
    entry = json.loads(stream.getvalue().splitlines()[-1])
    assert entry["alert_id"] == "abc123" and entry["msg"] == "incident decided" and entry["level"] == "info"


def test_log_lines_written_while_processing_an_alert_carry_its_id() -> None:
    from responder.logs import current_alert_id

    stream = io.StringIO()
    setup_logging("info", "json", stream)
    token = current_alert_id.set("feedface")
    try:
        logging.getLogger("serving_guard.cluster").warning("kubernetes call failed, retrying")
    finally:
        current_alert_id.reset(token)
    logging.getLogger("serving_guard.cluster").warning("unrelated")
    first, second = (json.loads(line) for line in stream.getvalue().splitlines()[-2:])
    assert first["alert_id"] == "feedface"
    assert "alert_id" not in second


def test_audit_returns_the_newest_matches_oldest_first(tmp_path: Path) -> None:
    from responder.audit.query import AuditQuery
    from responder.audit.trail import load_trail

    journal = open_journal(tmp_path, commit_interval_seconds=0)
    try:
        tagged = {n for n in range(0, 2500, 500)}
        for n in range(2500):
            payload = alert(n).to_falco_json()
            if n in tagged:
                payload["output"] += f" sg-run=run-{n}"
            journal.submit(Journal.op_append_alert(alert_from_mapping(payload), "http", n))
        journal.run_sync(lambda conn: None)
        with journal.reader() as conn:
            newest = load_trail(conn, AuditQuery(limit=3))
            runs = load_trail(conn, AuditQuery(run_id="sg-run=run-", limit=2))
            one = load_trail(conn, AuditQuery(run_id="sg-run=run-500", limit=10))
        assert [e["received_ns"] for e in newest] == [2497, 2498, 2499]
        assert [e["received_ns"] for e in runs] == [1500, 2000]
        assert [e["received_ns"] for e in one] == [500]
    finally:
        journal.close()


@pytest.mark.parametrize("mode", ["FULL", "NORMAL"])
def test_both_durability_modes_store_and_read_back(tmp_path: Path, mode: str, writer: str) -> None:
    journal = open_journal(tmp_path, synchronous=mode, writer=writer)
    try:
        assert journal.run_sync(Journal.op_append_alert(alert(1), "http", 1)) is True
        with journal.reader() as conn:
            assert conn.execute("PRAGMA synchronous").fetchone()[0] in (1, 2)
    finally:
        journal.close()
    assert open_journal(tmp_path).pending_alerts()[0].alert == alert(1)


def test_a_group_of_rows_stores_each_id_once_and_bumps_each_incident_once(
    tmp_path: Path, writer: str
) -> None:
    journal = open_journal(tmp_path, writer=writer, commit_interval_seconds=0.05)
    try:
        journal.run_sync(
            Journal.op_open_incident(
                IncidentRow("inc-1", "k", "r", "ml", "p", "c", "h", "a0", 1, 1, 1, False, None)
            )
        )
        first = alert(1)
        ops = [
            Journal.op_append_alert(first, "http", 10),
            Journal.op_append_duplicate(alert(2), "http", 20, None, "inc-1", 2),
            Journal.op_append_duplicate(alert(2), "http", 21, None, "inc-1", 3),  # the same id again
            Journal.op_append_duplicate(alert(3), "http", 30, None, "inc-1", 4),
            Journal.op_append_alert(first, "grpc", 40),  # a redelivery
        ]
        futures = [journal.submit(op) for op in ops]
        assert [f.result(timeout=10) for f in futures] == [True, True, False, True, False]
        with journal.reader() as conn:
            rows = conn.execute("SELECT alert_id, state, outcome, input FROM alerts ORDER BY seq").fetchall()
            incident = conn.execute("SELECT count, last_seen_ns FROM incidents").fetchone()
        assert [(r["state"], r["outcome"]) for r in rows] == [
            ("pending", None),
            ("done", "duplicate"),
            ("done", "duplicate"),
        ]
        assert rows[0]["input"] == "http"
        assert tuple(incident) == (4, 30)
    finally:
        journal.close()


def test_an_incidents_count_covers_its_repeats_without_indexing_them(tmp_path: Path) -> None:
    """Repeats are counted by the incident's counter (bumped with each write); the index on
    incident ids holds only its other alerts, and the count is still exact if the counter lags."""
    journal = open_journal(tmp_path)
    try:
        opener, folded = alert(1), alert(5)
        journal.run_sync(Journal.op_append_alert(opener, "http", 10))
        journal.run_sync(Journal.op_append_alert(folded, "http", 11))
        journal.run_sync(
            Journal.op_open_incident(
                IncidentRow("inc-1", "k", "r", "ml", "p", "c", "h", opener.alert_id, 10, 10, 1, False, 1)
            )
        )
        journal.run_sync(Journal.op_finish_alert(opener, "inc-1", "opened", 12))
        for count, n in enumerate((2, 3, 4), start=2):
            assert journal.run_sync(
                Journal.op_append_duplicate(alert(n), "http", 20 + n, None, "inc-1", count)
            )
        journal.run_sync(Journal.op_fold_duplicate(folded, "inc-1", 5, 30, 31))
        assert [row.count for row in journal.incidents_since(0)] == [5]
        record = journal.incident_record("inc-1")
        assert record is not None and record["count"] == 5
        with journal.reader() as conn:
            indexed = conn.execute(
                "SELECT COUNT(*) FROM alerts INDEXED BY alerts_incident_kept"
                " WHERE incident_id = 'inc-1' AND outcome IS NOT 'duplicate'"
            ).fetchone()[0]
            plan = " ".join(
                str(row[3])
                for row in conn.execute(
                    "EXPLAIN QUERY PLAN SELECT COUNT(*) FROM alerts a"
                    " WHERE a.incident_id = ? AND a.outcome IS NOT 'duplicate'",
                    ("inc-1",),
                )
            )
        assert indexed == 1  # the opener; none of the four repeats
        assert "alerts_incident_kept" in plan
        journal.run_sync(lambda conn: conn.execute("UPDATE incidents SET count = 0"))
        assert [row.count for row in journal.incidents_since(0)] == [1]
    finally:
        journal.close()


def test_an_incidents_record_holds_its_own_pods_actions_and_audit_every_row(tmp_path: Path) -> None:
    """An earlier version let `quarantine --incident` journal an action on another pod under an
    incident: what a restart and the incident's Slack post read of it leaves that row out (its
    rechecks must not go by it); audit still shows it, as journaled."""
    journal = open_journal(tmp_path)
    try:
        opener = alert(1)
        journal.run_sync(Journal.op_append_alert(opener, "http", 10))
        journal.run_sync(
            Journal.op_open_incident(
                IncidentRow("inc-1", "k", "r", "ml", "p1", "c", "h", opener.alert_id, 10, 10, 1, False, 1)
            )
        )
        own = ActionOutcome("annotate", OutcomeStatus.ANNOTATED, "annotated", started_ns=11, finished_ns=11)
        other = ActionOutcome(
            "quarantine", OutcomeStatus.QUARANTINED, "isolated", started_ns=12, finished_ns=12
        )
        legacy = ActionOutcome(
            "annotate", OutcomeStatus.ANNOTATED, "no pod named", started_ns=13, finished_ns=13
        )
        journal.run_sync(Journal.op_record_action("inc-1", opener.alert_id, "ml", "p1", own))
        journal.run_sync(Journal.op_record_action_by_hand("inc-1", "ml", "p2", other, "bob", 12))
        journal.run_sync(Journal.op_record_action("inc-1", None, None, None, legacy))
        record = journal.incident_record("inc-1")
        assert record is not None
        assert [o.detail for o in record["outcomes"]] == ["annotated", "no pod named"]
        with journal.reader() as conn:
            audited = audited_incident(conn, "inc-1")
        assert [(a["detail"], a["actor"], a.get("other_pod")) for a in audited["actions"]] == [
            ("annotated", "responder", None),
            ("isolated", "bob", "ml/p2"),
            ("no pod named", "responder", None),
        ]
        assert action_text(audited["actions"][1]).endswith("by bob on ml/p2, not this incident's pod")
    finally:
        journal.close()


def test_incidents_by_id_and_the_repeats_journaled_after_a_row(tmp_path: Path) -> None:
    """What recovery asks for its resumed alerts: incidents by id (in statements of at most 500
    ids), and the repeats journaled into given incidents after a given row."""
    journal = open_journal(tmp_path)
    try:
        opener = alert(1)
        journal.run_sync(Journal.op_append_alert(opener, "http", 10))
        journal.run_sync(
            Journal.op_open_incident(
                IncidentRow("inc-1", "k", "r", "ml", "p", "c", "h", opener.alert_id, 10, 10, 1, False, 1)
            )
        )
        repeats = [("inc-1", 20), ("inc-missing", 30), ("inc-missing", 40), ("inc-other", 50)]
        for n, (incident_id, received_ns) in enumerate(repeats, start=2):
            journal.run_sync(Journal.op_append_duplicate(alert(n), "http", received_ns, None, incident_id, 2))
        with journal.reader() as conn:
            seq = {row["alert_id"]: row["seq"] for row in conn.execute("SELECT alert_id, seq FROM alerts")}
        opener_seq = seq[opener.alert_id]
        assert [item.seq for item in journal.pending_alerts()] == [opener_seq]

        absent = [f"inc-absent-{n}" for n in range(1200)]
        found = journal.incidents_by_id([*absent[:700], "inc-1", "inc-missing", *absent[700:]])
        assert list(found) == ["inc-1"]
        assert (found["inc-1"].first_alert_id, found["inc-1"].count) == (opener.alert_id, 2)
        assert journal.incidents_by_id([]) == {}

        assert journal.repeats_after(opener_seq, ["inc-missing", "inc-1", "inc-none"]) == {
            "inc-missing": JournaledRepeats(2, 40),
            "inc-1": JournaledRepeats(1, 20),
        }
        # Only the rows after the given one count.
        assert journal.repeats_after(seq[alert(3).alert_id], ["inc-missing"]) == {
            "inc-missing": JournaledRepeats(1, 40)
        }
        assert journal.repeats_after(opener_seq, []) == {}
    finally:
        journal.close()


def test_the_full_incident_index_of_older_journals_is_replaced(tmp_path: Path) -> None:
    open_journal(tmp_path).close()
    conn = sqlite3.connect(tmp_path / "j.db")
    conn.execute("DROP INDEX alerts_incident_kept")
    conn.execute("CREATE INDEX alerts_incident ON alerts(incident_id)")
    conn.commit()
    conn.close()
    open_journal(tmp_path).close()
    conn = sqlite3.connect(tmp_path / "j.db")
    names = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
    conn.close()
    assert "alerts_incident_kept" in names and "alerts_incident" not in names


def test_a_damaged_record_does_not_stop_recovery(tmp_path: Path, writer: str) -> None:
    journal = open_journal(tmp_path, writer=writer)
    try:
        first = alert(1)
        journal.run_sync(Journal.op_append_alert(first, "http", 1))
        journal.run_sync(
            Journal.op_open_incident(
                IncidentRow(
                    "inc-x", "k", "r", "ml", "p", "c", "h", first.alert_id, 1, 1, 1, False, first.time_ns
                )
            )
        )
        damage = sqlite3.connect(tmp_path / "j.db", isolation_level=None)  # from outside the journal
        damage.execute("UPDATE alerts SET payload = ?", (b"garbage",))
        damage.close()
        record = journal.incident_record("inc-x")
        assert record is not None and record["first_alert"] is None
        assert journal.pending_alerts() == []  # unreadable, logged, skipped
    finally:
        journal.close()


def test_a_schema_2_journal_gains_the_workload_thread_column(tmp_path: Path) -> None:
    """A journal from before workload threads: its notifications keep their state and read as top-level
    posts (no thread)."""
    path = tmp_path / "j.db"
    open_journal(tmp_path).close()
    legacy = sqlite3.connect(path, isolation_level=None)
    legacy.execute("ALTER TABLE notifications DROP COLUMN slack_thread_ts")
    legacy.execute("ALTER TABLE notifications DROP COLUMN action_id")
    legacy.execute("ALTER TABLE alerts DROP COLUMN sender")  # schema 7's
    legacy.execute("UPDATE meta SET value = '2' WHERE key = 'schema'")
    legacy.execute(
        "INSERT INTO notifications(incident_id, kind, channel, state, next_attempt_ns, created_ns, slack_ts)"
        " VALUES ('inc-1', 'incident', '#sec', 'sent', 1, 1, '1.000100')"
    )
    legacy.close()
    journal = open_journal(tmp_path)
    try:
        with journal.reader() as conn:
            assert conn.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()[0] == str(
                SCHEMA_VERSION
            )
        parent, _ = journal.incident_thread("inc-1")
        assert parent is not None and parent.slack_ts == "1.000100" and parent.slack_thread_ts is None
    finally:
        journal.close()


def test_a_schema_3_journal_gains_the_by_hand_action_column(tmp_path: Path) -> None:
    """A journal from before quarantines by hand were told in Slack: its notifications keep their
    state, report no action, and a by-hand one can be queued at once."""
    path = tmp_path / "j.db"
    open_journal(tmp_path).close()
    legacy = sqlite3.connect(path, isolation_level=None)
    legacy.execute("ALTER TABLE notifications DROP COLUMN action_id")
    legacy.execute("ALTER TABLE alerts DROP COLUMN sender")  # schema 7's
    legacy.execute("UPDATE meta SET value = '3' WHERE key = 'schema'")
    legacy.execute(
        "INSERT INTO notifications(incident_id, kind, channel, state, next_attempt_ns, created_ns, slack_ts)"
        " VALUES ('inc-1', 'incident', '#sec', 'pending', 1, 1, NULL)"
    )
    legacy.close()
    journal = open_journal(tmp_path)
    try:
        with journal.reader() as conn:
            assert conn.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()[0] == str(
                SCHEMA_VERSION
            )
        [row] = journal.due_notifications(10)
        assert (row.kind, row.state, row.action_id) == ("incident", "pending", None)
    finally:
        journal.close()


def test_a_schema_1_journal_is_upgraded_in_place(tmp_path: Path) -> None:
    """Journals written before alert ids lost their own unique index open, keep every record, and
    behave as new ones: redeliveries found, resumable alerts resumed, incidents restored."""

    path = tmp_path / "j.db"
    legacy = sqlite3.connect(path, isolation_level=None)
    legacy.executescript((Path(__file__).parents[1] / "fixtures/journal/schema-v1.sql").read_text())
    legacy.execute("INSERT INTO meta(key, value) VALUES ('schema', '1')")
    opening, repeat, pending = alert(1), alert(2), alert(3)
    insert = (
        "INSERT INTO alerts(alert_id, received_ns, input, rule, priority, namespace, pod, event_ns, payload,"
        " state, incident_id, outcome, finished_ns) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)"
    )
    for item, state, outcome in (
        (opening, "done", "opened"),
        (repeat, "done", "duplicate"),
        (pending, "pending", None),
    ):
        incident = "inc-1" if outcome else None
        legacy.execute(
            insert,
            (
                item.alert_id,
                10,
                "http",
                item.rule,
                int(item.priority),
                item.namespace,
                item.pod,
                item.time_ns,
                zlib.compress(json.dumps(item.to_falco_json()).encode()),
                state,
                incident,
                outcome,
                11 if outcome else None,
            ),
        )
    for gone in (alert(40), alert(41)):  # written, then pruned: their sequence numbers stay used
        legacy.execute(
            insert,
            (
                gone.alert_id,
                10,
                "http",
                gone.rule,
                4,
                None,
                None,
                gone.time_ns,
                b"{}",
                "done",
                None,
                None,
                11,
            ),
        )
    legacy.execute("DELETE FROM alerts WHERE seq > 3")
    legacy.execute(
        "INSERT INTO incidents(incident_id, key_digest, rule, namespace, pod, container_id, hostname,"
        " first_alert_id, opened_ns, last_seen_ns, count)"
        " VALUES ('inc-1', 'k', 'r', 'ml', 'p1', 'c', 'h', ?, 10, 10, 2)",
        (opening.alert_id,),
    )
    legacy.close()

    journal = Journal(str(path), max_bytes=64 * 1024 * 1024, retention_seconds=3600.0)
    journal.open()
    try:
        with journal.reader() as conn:
            assert conn.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()[0] == str(
                SCHEMA_VERSION
            )
            columns = [r[1] for r in conn.execute("PRAGMA table_info(notifications)")]
            assert {"slack_thread_ts", "action_id"} <= set(columns)
            assert [r[0] for r in conn.execute("SELECT alert_id FROM alerts ORDER BY seq")] == [
                opening.alert_id,
                repeat.alert_id,
                pending.alert_id,
            ]
        # A redelivery of a stored alert is still recognised; a new alert is still stored.
        assert journal.run_sync(Journal.op_append_alert(repeat, "http", 20)) is False
        assert journal.run_sync(Journal.op_append_alert(alert(4), "http", 20)) is True
        with journal.reader() as conn:
            assert conn.execute("SELECT MAX(seq) FROM alerts").fetchone()[0] == 6  # not 4: 4 and 5 were used
        assert [p.alert.alert_id for p in journal.pending_alerts()] == [pending.alert_id, alert(4).alert_id]
        (restored,) = journal.incidents_since(0)
        assert restored.first_event_ns == opening.time_ns
        record = journal.incident_record("inc-1")
        assert record is not None and record["first_alert"] == opening
        journal.run_sync(Journal.op_finish_alert(pending, None, "opened", 30))
        assert [p.alert.alert_id for p in journal.pending_alerts()] == [alert(4).alert_id]
    finally:
        journal.close()
    reopened = Journal(str(path), max_bytes=64 * 1024 * 1024, retention_seconds=3600.0)
    reopened.open()  # opening an upgraded journal again changes nothing
    reopened.close()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    steps=st.lists(st.tuples(st.integers(0, 11), st.booleans()), min_size=1, max_size=40),
    recent_ids=st.integers(1, 4),
)
def test_each_alert_is_stored_once_however_it_is_redelivered(
    tmp_path: Path, steps: list[tuple[int, bool]], recent_ids: int
) -> None:
    """Most new alerts go in without a lookup (RecentAlerts); redeliveries are still recognised
    within a run, across restarts, across the id set's rollover, and out of time order."""
    path = tmp_path / f"j-{uuid.uuid4().hex}.db"
    pool = [alert(n * 7 % 12 + 1) for n in range(12)]  # event times out of pool order

    def reopen() -> Journal:
        journal = Journal(
            str(path), max_bytes=64 * 1024 * 1024, retention_seconds=3600.0, recent_ids=recent_ids
        )
        journal.open()
        return journal

    journal = reopen()
    seen: set[str] = set()
    try:
        for index, restart in steps:
            if restart:
                journal.close()
                journal = reopen()
            item = pool[index]
            assert journal.run_sync(Journal.op_append_alert(item, "http", 1)) is (item.alert_id not in seen)
            seen.add(item.alert_id)
        with journal.reader() as conn:
            stored = [r[0] for r in conn.execute("SELECT alert_id FROM alerts")]
        assert sorted(stored) == sorted(seen)
    finally:
        journal.close()


def test_the_breaker_window_rebuilt_after_a_restart_counts_the_responders_quarantines_only(
    tmp_path: Path,
) -> None:
    """A person's quarantines by hand are not the circuit breaker's, after a restart as before it."""
    from responder.actions.outcome import ActionOutcome, OutcomeStatus

    journal = open_journal(tmp_path)
    try:
        outcome = ActionOutcome("quarantine", OutcomeStatus.QUARANTINED, started_ns=5, finished_ns=10)
        journal.run_sync(Journal.op_record_action("inc-1", None, "ml", "a", outcome))
        journal.run_sync(Journal.op_record_action_by_hand("inc-1", "ml", "b", outcome, "carol", 11))
        assert journal.quarantine_times_since(0) == [10]
    finally:
        journal.close()


def test_a_workload_threads_replies_count_blocks_and_a_block_kept_out_is_no_block(tmp_path: Path) -> None:
    """The thread's root counts each reply by its latest action: a block that found its address
    already out of reach is not counted as blocked."""
    from responder.actions.outcome import (
        BLOCK_DESTINATION,
        KEPT_OUT,
        THREAD_KEPT_OUT,
        ActionOutcome,
        KeptOut,
        OutcomeStatus,
    )

    journal = open_journal(tmp_path)
    try:
        made = ActionOutcome(BLOCK_DESTINATION, OutcomeStatus.BLOCKED, started_ns=1, finished_ns=2)
        kept_out = ActionOutcome(
            BLOCK_DESTINATION,
            OutcomeStatus.BLOCKED,
            started_ns=1,
            finished_ns=2,
            extra={KEPT_OUT: KeptOut.QUARANTINE.value},
        )
        quarantined = ActionOutcome("quarantine", OutcomeStatus.QUARANTINED, started_ns=1, finished_ns=2)
        actions = {"inc-a": [made], "inc-b": [kept_out], "inc-c": [kept_out, quarantined], "inc-d": []}
        for incident, outcomes in actions.items():
            for outcome in outcomes:
                journal.run_sync(Journal.op_record_action(incident, None, "ml", incident, outcome))
        conn = sqlite3.connect(tmp_path / "j.db", isolation_level=None)
        for n, incident in enumerate(actions):
            conn.execute(
                "INSERT INTO notifications(incident_id, kind, channel, state, next_attempt_ns, created_ns,"
                " slack_ts, slack_channel, slack_thread_ts) VALUES (?, 'incident', '#sec', 'sent', 1, 1, ?,"
                " 'C1', '1.000100')",
                (incident, f"1.00020{n}"),
            )
        conn.close()
        assert journal.thread_replies("C1", "1.000100") == ["blocked", THREAD_KEPT_OUT, "quarantined", None]
    finally:
        journal.close()


def test_audit_tells_a_deferred_alert_from_a_pending_one(tmp_path: Path) -> None:
    from responder.audit.query import AuditQuery
    from responder.audit.trail import load_trail

    journal = open_journal(tmp_path)
    try:
        journal.run_sync(Journal.op_append_alert(alert(1), "http", 10))
        journal.run_sync(Journal.op_append_deferred(alert(2), "http", 11))
        with journal.reader() as conn:
            trail = load_trail(conn, AuditQuery())
        assert [(e["state"], e["outcome"]) for e in trail] == [
            ("pending", "pending"),
            ("deferred", "deferred"),
        ]
        assert journal.deferred_backlog() == (1, 11)
        assert journal.pending_count() == 2
    finally:
        journal.close()
