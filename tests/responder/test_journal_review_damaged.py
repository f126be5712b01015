"""A damaged journal at start: a page SQLite cannot read stops the start with an error that names
the journal and what to do, never a traceback; one damaged record is logged by its id and passed
over, and recovery goes on."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sqlite3
import time
from pathlib import Path

import pytest
import yaml

from responder.actions.outcome import ActionOutcome, OutcomeStatus
from responder.cli import main
from responder.cluster.api import KubeGateway
from responder.cluster.verify import Verification, VerificationStatus
from responder.config import ActionName
from responder.dedupe import incident_id_for
from responder.journal.store import IncidentRow, Journal
from responder.policy import Decision
from responder.records import decision_to_json, verification_to_json
from responder.service import Responder
from tests.helpers import Records, responder_config
from tests.responder.test_journal import alert, open_journal
from tests.responder.test_pipeline import LABEL, Seeded, labels, rows, shell


def test_a_damaged_page_stops_the_start_with_the_journal_named_and_no_traceback(
    tmp_path: Path, seeded: Seeded, capsys: pytest.CaptureFixture[str]
) -> None:
    _, _, kubeconfig = seeded
    journal = open_journal(tmp_path, writer="thread")
    futures = [journal.submit(Journal.op_append_alert(alert(n), "http", n)) for n in range(3000)]
    assert all(future.result(timeout=30) for future in futures)
    journal.close()
    size = os.path.getsize(journal.path)
    with open(journal.path, "r+b") as damaged:  # one page in the middle, as a bad sector leaves it
        damaged.seek(size // 2 // 4096 * 4096)
        damaged.write(b"\xa5" * 4096)
    config = tmp_path / "config.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "cluster": {"kubeconfig": kubeconfig},
                "journal": {"path": journal.path},
                "policies": [{"name": "p", "match": {"rules": ["r"]}, "actions": ["notify"]}],
                "logging": {"level": "warning", "format": "text"},
            }
        )
    )
    assert main(["ingest", os.devnull, "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert f"error: journal {journal.path}: cannot be read: database disk image is malformed" in err
    assert "move it aside" in err and ".recover" in err


def decided(incident_id: str, first: object, now: int) -> tuple[IncidentRow, tuple[str, str]]:
    """An incident row of ``first`` and its decision's JSON (verification, decision)."""
    assert hasattr(first, "alert_id") and hasattr(first, "time_ns")
    row = IncidentRow(
        incident_id, "k", "r", "ml", "p1", "c", "h", first.alert_id, now, now, 1, False, first.time_ns
    )
    verification = json.dumps(verification_to_json(Verification(VerificationStatus.VERIFIED, "ok")))
    decision = json.dumps(
        decision_to_json(Decision(policy="p", actions=(ActionName.NOTIFY,), requested=(ActionName.NOTIFY,)))
    )
    return row, (verification, decision)


def set_decision(path: str, incident_id: str, now: int, verification: str, decision: str) -> None:
    with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as conn:
        conn.execute(
            "UPDATE incidents SET decided_ns = ?, verification = ?, decision = ? WHERE incident_id = ?",
            (now, verification, decision, incident_id),
        )


async def test_an_incident_whose_record_cannot_be_read_is_logged_and_passed_over(
    tmp_path: Path, seeded: Seeded
) -> None:
    _, _, kubeconfig = seeded
    config = responder_config(tmp_path, kubeconfig, extra={"inputs": {}})
    now = time.time_ns()
    journal = Journal(config.journal.path, max_bytes=64 << 20, retention_seconds=3600)
    with journal:
        for n, incident_id in ((1, "inc-damaged"), (2, "inc-whole")):
            first = alert(n)
            row, (verification, decision) = decided(incident_id, first, now)
            journal.run_sync(Journal.op_append_alert(first, "http", now))
            journal.run_sync(Journal.op_open_incident(row))
            journal.run_sync(Journal.op_finish_alert(first, incident_id, "opened", now))
            set_decision(journal.path, incident_id, now, verification, decision)
    with contextlib.closing(sqlite3.connect(config.journal.path, isolation_level=None)) as conn:
        conn.execute("UPDATE incidents SET verification = '{\"status\":' WHERE incident_id = 'inc-damaged'")
    responder = Responder(config, KubeGateway.from_config(config.cluster))
    with Records("serving_guard", logging.ERROR) as records:
        await responder.start()
    try:
        assert responder.pipeline is not None
        assert responder.pipeline.incidents.by_id("inc-damaged") is None
        restored = responder.pipeline.incidents.by_id("inc-whole")
        assert restored is not None and restored.report is not None
        unreadable = [r for r in records.records if "unreadable" in r.getMessage()]
        assert [r.__dict__.get("incident") for r in unreadable] == ["inc-damaged"]
    finally:
        await responder.stop()


def test_an_action_whose_record_cannot_be_read_counts_against_the_breakers(tmp_path: Path) -> None:
    now = time.time_ns()
    journal = open_journal(tmp_path)
    try:
        # A quarantine that failed and a block, their records cut short: the breakers' windows are
        # rebuilt without them read, counting them (towards holding actions back, not more).
        failed = ActionOutcome(
            "quarantine", OutcomeStatus.FAILED, "api down", started_ns=now, finished_ns=now
        )
        blocked = ActionOutcome(
            "block_destination", OutcomeStatus.BLOCKED, "1.2.3.4", started_ns=now, finished_ns=now + 1
        )
        ids = [
            journal.run_sync(Journal.op_record_action("i", None, "ml", "p1", o)) for o in (failed, blocked)
        ]
        with contextlib.closing(sqlite3.connect(journal.path, isolation_level=None)) as conn:
            conn.execute("UPDATE actions SET outcome = '{\"action\"'")
        with Records("serving_guard.journal", logging.ERROR) as records:
            assert journal.quarantine_times_since(0) == [now]
            assert journal.block_times_since(0) == [now + 1]
        assert [r.__dict__["action_id"] for r in records.records] == ids
    finally:
        journal.close()


async def test_a_resumed_opener_whose_decision_cannot_be_read_is_decided_again(
    tmp_path: Path, seeded: Seeded
) -> None:
    running, pods, kubeconfig = seeded
    config = responder_config(tmp_path, kubeconfig, extra={"inputs": {}})
    now = time.time_ns()
    attack = shell(pods["torchserve"])
    incident_id = incident_id_for(attack)
    journal = Journal(config.journal.path, max_bytes=64 << 20, retention_seconds=3600)
    with journal:
        # Opened and decided, then a crash before the alert was finished: it is resumed.
        row, (verification, _) = decided(incident_id, attack, now)
        journal.run_sync(Journal.op_append_alert(attack, "http", now))
        journal.run_sync(Journal.op_open_incident(row))
        set_decision(journal.path, incident_id, now, verification, "[1, 2")
    responder = Responder(config, KubeGateway.from_config(config.cluster))
    await responder.start()
    try:
        assert responder.pipeline is not None
        assert await responder.pipeline.drain(timeout=20)
        assert labels(running, pods["torchserve"])[LABEL] == "true"
        assert [tuple(r) for r in rows(config, "SELECT state, outcome FROM alerts")] == [("done", "opened")]
        (decision,) = rows(config, "SELECT decision FROM incidents WHERE incident_id = ?", incident_id)
        assert json.loads(decision[0])["policy"] == "isolate-shells"  # decided again, and readable
    finally:
        await responder.stop()
