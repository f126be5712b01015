"""Pruning to the size bound keeps what an incident still needs (its opening alert while it is open
or has posts to go out), and removes old finished incidents too, so that a stream of incidents
cannot hold the journal full; retention removes posts never to be sent."""

from __future__ import annotations

import contextlib
import sqlite3
import time
from pathlib import Path

from responder.actions.outcome import ActionOutcome, OutcomeStatus
from responder.alert import Alert
from responder.cluster.verify import Verification, VerificationStatus
from responder.journal.store import IncidentRow, Journal, report_from_record
from responder.policy import Decision
from responder.records import decision_to_json, verification_to_json
from tests.responder.test_journal import alert, open_journal

MINUTE_NS = 60 * 10**9


def open_incident(
    journal: Journal, incident_id: str, first: Alert, seen_ns: int, *, pod_context_bytes: int = 0
) -> None:
    """An incident opened, decided and finished by ``first``, last seen at ``seen_ns``."""
    journal.run_sync(Journal.op_append_alert(first, "http", seen_ns))
    journal.run_sync(
        Journal.op_open_incident(
            IncidentRow(
                incident_id,
                "k",
                "r",
                "ml",
                "p1",
                "c",
                "h",
                first.alert_id,
                seen_ns,
                seen_ns,
                1,
                False,
                first.time_ns,
            )
        )
    )
    journal.run_sync(
        Journal.op_record_decision(
            incident_id,
            seen_ns,
            verification_to_json(Verification(VerificationStatus.VERIFIED, "ok")),
            decision_to_json(Decision(policy="p", actions=(), requested=())),
            {"padding": "x" * pod_context_bytes} if pod_context_bytes else None,
        )
    )
    journal.run_sync(Journal.op_finish_alert(first, incident_id, "opened", seen_ns))


def post(journal: Journal, incident_id: str, now_ns: int, state: str) -> int:
    notification_id = journal.run_sync(
        Journal.op_schedule_notification(incident_id, "incident", None, now_ns, now_ns)
    )
    assert isinstance(notification_id, int)
    if state != "pending":
        journal.run_sync(Journal.op_notification_state(notification_id, state))
    return notification_id


def count(journal: Journal, sql: str) -> int:
    with contextlib.closing(sqlite3.connect(journal.path)) as conn:
        return int(conn.execute(sql).fetchone()[0])


def opener_kept(journal: Journal, incident_id: str) -> bool:
    record = journal.incident_record(incident_id)
    return record is not None and record["first_alert"] is not None and report_from_record(record) is not None


def test_pruning_to_size_keeps_the_opening_alert_of_an_incident_open_or_with_a_post_to_go_out(
    tmp_path: Path,
) -> None:
    now = time.time_ns()
    journal = open_journal(tmp_path, max_bytes=64 * 1024, retention_seconds=30 * 86400.0)
    try:
        journal.keep_incidents_open_for(300)
        open_incident(journal, "inc-open", alert(1), now)  # within the dedupe window
        open_incident(journal, "inc-waiting", alert(2), now - 20 * MINUTE_NS)  # closed, Slack down
        post(journal, "inc-waiting", now, "pending")
        open_incident(journal, "inc-done", alert(3), now - 20 * MINUTE_NS)  # closed, posted
        post(journal, "inc-done", now, "sent")
        for n in range(10, 400):  # finished alerts that fill the journal
            journal.run_sync(Journal.op_append_alert(alert(n), "http", now))
            journal.run_sync(Journal.op_finish_alert(alert(n), None, "rejected", now))
        journal.run_sync(journal.op_prune(now))
        assert opener_kept(journal, "inc-open")
        assert opener_kept(journal, "inc-waiting")  # its post renders from it when Slack is back
        assert not opener_kept(journal, "inc-done")
        assert count(journal, "SELECT COUNT(*) FROM alerts") == 2
        # Once its post went out and the window passed, it goes as any finished alert.
        waiting = journal.due_notifications(now + 1)[0]
        journal.run_sync(Journal.op_notification_state(waiting.id, "sent"))
        journal.run_sync(journal.op_prune(now + 10 * MINUTE_NS))
        assert count(journal, "SELECT COUNT(*) FROM alerts") == 0
    finally:
        journal.close()


def test_pruning_to_size_removes_old_finished_incidents_but_none_with_work_left(tmp_path: Path) -> None:
    now = time.time_ns()
    journal = open_journal(tmp_path, max_bytes=1024 * 1024, retention_seconds=30 * 86400.0)
    try:
        journal.keep_incidents_open_for(300)
        # A stream of incidents, one per forged alert (each its own container id), long closed.
        for n in range(300):
            incident_id = f"inc-{n}"
            open_incident(journal, incident_id, alert(n), now - 60 * MINUTE_NS + n, pod_context_bytes=10_000)
            post(journal, incident_id, now, "sent")
            outcome = ActionOutcome(
                "annotate", OutcomeStatus.ANNOTATED, "x" * 2000, started_ns=now, finished_ns=now
            )
            journal.run_sync(Journal.op_record_action(incident_id, None, "ml", "p1", outcome))
        open_incident(journal, "inc-open", alert(1001), now)
        open_incident(journal, "inc-waiting", alert(1002), now - 60 * MINUTE_NS)
        post(journal, "inc-waiting", now, "pending")
        # Opened, and a crash before its alert was finished: it is resumed, reading its incident.
        resumed = alert(1003)
        journal.run_sync(Journal.op_append_alert(resumed, "http", now))
        journal.run_sync(
            Journal.op_open_incident(
                IncidentRow(
                    "inc-resumed",
                    "k",
                    "r",
                    "ml",
                    "p1",
                    "c",
                    "h",
                    resumed.alert_id,
                    now - 60 * MINUTE_NS,
                    now - 60 * MINUTE_NS,
                    1,
                    False,
                    resumed.time_ns,
                )
            )
        )
        journal.check_size()
        assert journal.full
        journal.run_sync(journal.op_prune(now))
        journal.check_size()
        assert not journal.full, "the journal stays full of incidents it could remove"
        left = count(
            journal,
            "SELECT COUNT(*) FROM incidents WHERE incident_id GLOB 'inc-[0-9]*'",
        )
        assert 0 < left < 300  # the oldest went, as many as it took
        assert count(journal, "SELECT COUNT(*) FROM actions") == left
        assert count(journal, "SELECT COUNT(*) FROM notifications WHERE state = 'sent'") == left
        assert {"inc-open", "inc-waiting", "inc-resumed"} <= set(
            journal.incidents_by_id(["inc-open", "inc-waiting", "inc-resumed"])
        )
        assert count(journal, "SELECT COUNT(*) FROM notifications WHERE state = 'pending'") == 1
        assert opener_kept(journal, "inc-open") and opener_kept(journal, "inc-waiting")
        assert [pending.alert.alert_id for pending in journal.pending_alerts()] == [resumed.alert_id]
    finally:
        journal.close()


def test_retention_removes_posts_never_to_be_sent(tmp_path: Path) -> None:
    journal = open_journal(tmp_path, retention_seconds=1.0)
    try:
        for n in range(5):
            post(journal, f"inc-{n}", 0, "dropped")  # not routed to Slack
        journal.run_sync(journal.op_prune(time.time_ns()))
        assert count(journal, "SELECT COUNT(*) FROM notifications") == 0
    finally:
        journal.close()
