"""A journal write about an incident that fails is heard, and the alert is not finished "opened".

The journal is made to refuse one op, for one incident only, by wrapping its builder
(``Journal.op_record_decision`` / ``Journal.op_open_incident``): the pipeline hands the writer an op
that raises ``sqlite3.OperationalError`` when the writer runs it inside its transaction, as a full
disk or an I/O error would (or, held, first waits there until the test lets it fail: a write in
flight). Everything else is real: the journal (its thread writer, so that the op need not be
importable by a writer process), the pipeline, and the Kubernetes API emulator served on loopback.
A restart is a second responder on the same journal, which takes every write again.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import threading
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from responder.alert import Alert
from responder.alert_json import alert_from_mapping
from responder.audit.query import AuditQuery
from responder.audit.trail import load_trail
from responder.cluster.api import KubeGateway
from responder.dedupe import incident_id_for
from responder.ingest.sink import Accepted, InputName
from responder.journal.ops import Touch
from responder.journal.store import IncidentRow, Journal
from responder.journal.writer import Op
from responder.pipeline import Pipeline
from responder.service import Responder
from simulators.cluster_emulator import RunningCluster
from simulators.falco_json import falco_alert
from simulators.seed import SeededPod, seed_serving_cluster
from tests.helpers import SHELL_RULE, FakeClock, responder_config

LABEL = "serving-guard.io/quarantine"
REFUSAL = "disk I/O error (refused by the test)"


@dataclass(frozen=True, slots=True)
class Refused:
    """An op the journal's writer runs and that fails there, as a write to a broken disk does."""

    what: str

    def __call__(self, conn: sqlite3.Connection) -> None:
        raise sqlite3.OperationalError(f"{self.what}: {REFUSAL}")


def refuse_open_incident(monkeypatch: pytest.MonkeyPatch, incident_id: str) -> None:
    real = Journal.op_open_incident

    def op_open_incident(row: IncidentRow) -> Op:
        return Refused("open_incident") if row.incident_id == incident_id else real(row)

    monkeypatch.setattr(Journal, "op_open_incident", staticmethod(op_open_incident))


def refuse_record_decision(monkeypatch: pytest.MonkeyPatch, incident_id: str) -> None:
    real = Journal.op_record_decision

    def op_record_decision(incident: str, *rest: Any) -> Op:
        return Refused("record_decision") if incident == incident_id else real(incident, *rest)

    monkeypatch.setattr(Journal, "op_record_decision", staticmethod(op_record_decision))


@dataclass(frozen=True, slots=True)
class Held:
    """An op that, run by the journal's writer, waits there until ``gate`` is set and then fails: a
    write in flight that the journal refuses in the end. ``entered`` is set once the writer runs it.
    (The writer waits with it: what is written meanwhile is committed after it.)"""

    what: str
    entered: threading.Event
    gate: threading.Event

    def __call__(self, conn: sqlite3.Connection) -> None:
        self.entered.set()
        self.gate.wait(timeout=30)
        raise sqlite3.OperationalError(f"{self.what}: {REFUSAL}")


def hold_open_incident(
    monkeypatch: pytest.MonkeyPatch, incident_id: str
) -> tuple[threading.Event, threading.Event]:
    """Hold, then refuse, the incident's ``open_incident`` write; returns (entered, gate)."""
    entered, gate = threading.Event(), threading.Event()
    real = Journal.op_open_incident

    def op_open_incident(row: IncidentRow) -> Op:
        return Held("open_incident", entered, gate) if row.incident_id == incident_id else real(row)

    monkeypatch.setattr(Journal, "op_open_incident", staticmethod(op_open_incident))
    return entered, gate


REFUSE: dict[str, Callable[[pytest.MonkeyPatch, str], None]] = {
    "open_incident": refuse_open_incident,
    "record_decision": refuse_record_decision,
}


def shell(pod: SeededPod, n: int) -> Alert:
    """A shell alert in ``pod``: the same n-independent incident key (rule, pod, container,
    node), a distinct alert id per ``n``."""
    return alert_from_mapping(
        falco_alert(pod, SHELL_RULE, "Notice", "shell", {"proc.name": "sh", "proc.cmdline": f"sh -c {n}"})
    )


@dataclass
class World:
    tmp_path: Path
    cluster: RunningCluster
    pods: dict[str, SeededPod]
    kubeconfig: str
    clock: FakeClock


@pytest.fixture
def world(tmp_path: Path, cluster: RunningCluster) -> World:
    pods = cluster.call(seed_serving_cluster, cluster.emulator)
    kubeconfig = cluster.write_kubeconfig(str(tmp_path / "kubeconfig.json"))
    return World(tmp_path, cluster, pods, kubeconfig, FakeClock())


async def start(world: World) -> Responder:
    config = responder_config(
        world.tmp_path,
        world.kubeconfig,
        extra={"inputs": {}, "journal": {"writer": "thread"}},
    )
    responder = Responder(config, KubeGateway.from_config(config.cluster), clock_ns=world.clock)
    await responder.start()
    return responder


@pytest.fixture
async def responder(world: World) -> AsyncIterator[Responder]:
    running = await start(world)
    yield running
    await running.stop()


class Errors:
    """The pipeline's error records during the test."""

    def __init__(self, caplog: pytest.LogCaptureFixture) -> None:
        self._caplog = caplog

    def all(self) -> list[logging.LogRecord]:
        # caplog.records is the current phase's list: read it when asked, not at setup.
        return [
            r
            for r in self._caplog.records
            if r.name == "serving_guard.pipeline" and r.levelno >= logging.ERROR
        ]

    def saying(self, message: str) -> list[logging.LogRecord]:
        return [r for r in self.all() if r.getMessage() == message]


@pytest.fixture
def errors(caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> Errors:
    """(``setup_logging``, if an earlier test ran it, stops ``serving_guard`` records at its own
    handler, out of caplog's reach: let them through.)"""
    monkeypatch.setattr(logging.getLogger("serving_guard"), "propagate", True)
    caplog.set_level(logging.ERROR, logger="serving_guard.pipeline")
    return Errors(caplog)


def pipeline_of(responder: Responder) -> Pipeline:
    assert responder.pipeline is not None
    return responder.pipeline


async def process(responder: Responder, alert: Alert) -> None:
    """Submit the alert and wait until nothing is in flight and every journal write so far is settled.

    A failed write is logged by a callback on the thread that settles it; the journal settles in
    commit order on that thread, so once a later write is settled the earlier callbacks have run."""
    pipeline = pipeline_of(responder)
    accepted = await pipeline.submit(alert, InputName.JSONL)
    assert accepted.new and accepted.alert_id == alert.alert_id
    assert await pipeline.drain(timeout=20)
    await responder.journal.run(Touch())


async def refuse_the_opening_while_repeats_come(
    responder: Responder, patch: pytest.MonkeyPatch, first: Alert, repeats: list[Alert]
) -> None:
    """``first`` opens its incident; while the writer is inside that opening write, ``repeats``
    come and are journaled as the incident's duplicates (each answered as accepted); then the
    opening write is refused."""
    pipeline = pipeline_of(responder)
    answers: list[Accepted | BaseException] = []
    entered, gate = hold_open_incident(patch, incident_id_for(first))
    try:
        assert (await pipeline.submit(first, InputName.JSONL)).new
        assert await asyncio.to_thread(entered.wait, 20)
        for repeat in repeats:
            assert pipeline.offer(repeat, InputName.JSONL, None, answers.append)
    finally:
        gate.set()  # the opening write fails now
    assert await pipeline.drain(timeout=20)
    await responder.journal.run(Touch())
    assert answers == [Accepted(repeat.alert_id, new=True) for repeat in repeats]


async def restart_reopening(world: World, first: Alert, count: int) -> Responder:
    """Restart (the journal takes every write again) and wait until ``first``, resumed, has opened
    its own incident again: decided, finished "opened", with the resumed run's one set of action
    records (the interrupted run's, taken while its opening write was refused, replaced), counting
    ``count`` alerts, and nothing left pending. The caller stops the responder."""
    restarted = await start(world)
    try:
        assert await pipeline_of(restarted).drain(timeout=20)
        await restarted.journal.run(Touch())
        incident_id = incident_id_for(first)
        entry = trail_entry(restarted, first)
        assert (entry["state"], entry["outcome"], entry["incident_id"]) == ("done", "opened", incident_id)
        assert entry["incident"]["decision"] is not None
        assert [(a["action"], a["status"]) for a in entry["incident"]["actions"]] == [
            ("quarantine", "quarantined")
        ]
        row = incident_row(restarted, incident_id)
        assert row is not None and row["first_alert_id"] == first.alert_id
        assert row["count"] == count
        assert restarted.journal.pending_alerts() == []
    except BaseException:
        await restarted.stop()
        raise
    return restarted


def trail_entry(responder: Responder, alert: Alert) -> dict[str, Any]:
    """The alert's entry in the audit trail (what ``GET /v1/audit`` and ``audit`` answer)."""
    with responder.journal.reader() as conn:
        entries = load_trail(conn, AuditQuery(namespace=alert.namespace, pod=alert.pod))
    mine = [entry for entry in entries if entry["alert_id"] == alert.alert_id]
    assert len(mine) == 1, entries
    return mine[0]


def incident_row(responder: Responder, incident_id: str) -> sqlite3.Row | None:
    with responder.journal.reader() as conn:
        row: sqlite3.Row | None = conn.execute(
            "SELECT * FROM incidents WHERE incident_id = ?", (incident_id,)
        ).fetchone()
    return row


def extra(record: logging.LogRecord) -> dict[str, Any]:
    """The fields a log call gave in ``extra`` (those the JSON log line carries) that a test reads."""
    fields = ("op", "alert_id", "incident", "error")
    return {key: record.__dict__[key] for key in fields if key in record.__dict__}


@pytest.mark.parametrize("op", sorted(REFUSE))
async def test_a_refused_incident_write_is_logged_leaves_the_alert_pending_and_a_repeat_opens_afresh(
    responder: Responder,
    world: World,
    errors: Errors,
    monkeypatch: pytest.MonkeyPatch,
    op: str,
) -> None:
    vllm = world.pods["vllm"]
    first = shell(vllm, 0)
    refused_incident = incident_id_for(first)
    REFUSE[op](monkeypatch, refused_incident)

    await process(responder, first)

    # Heard at once, as an error naming the op, the alert and the incident.
    failures = errors.saying("journal write failed")
    assert len(failures) == 1, [r.getMessage() for r in errors.all()]
    failure = failures[0]
    assert failure.levelno == logging.ERROR
    assert extra(failure) == {
        "op": op,
        "alert_id": first.alert_id,
        "incident": refused_incident,
        "error": f"OperationalError: {op}: {REFUSAL}",
    }
    assert isinstance(failure.exc_info, tuple) and isinstance(failure.exc_info[1], sqlite3.OperationalError)
    # The alert's processing failed for that reason, and is left for a restart to resume.
    processing = errors.saying("alert processing failed")
    assert len(processing) == 1 and extra(processing[0])["alert_id"] == first.alert_id
    stats = pipeline_of(responder).stats
    assert stats.failed == 1 and stats.processed == 0
    assert list(stats.stuck) == [first.alert_id]
    assert stats.last_error.startswith("JournalWriteFailed: journal refused ")
    assert f"{op}: OperationalError: {op}: {REFUSAL}" in stats.last_error

    # Not finished "opened": the journal still has the alert pending (and a restart resumes it).
    entry = trail_entry(responder, first)
    assert (entry["state"], entry["outcome"]) == ("pending", "pending")
    assert [p.alert.alert_id for p in responder.journal.pending_alerts()] == [first.alert_id]
    if op == "open_incident":
        assert incident_row(responder, refused_incident) is None
    else:
        row = incident_row(responder, refused_incident)
        assert row is not None and row["decided_ns"] is None and row["decision"] is None
    # The action itself was taken (the refusal came after it): an attack is not left alone.
    assert (
        world.cluster.call(world.cluster.emulator.get_object, "v1/pods", vllm.namespace, vllm.name)[
            "metadata"
        ]["labels"][LABEL]
        == "true"
    )

    # A later repeat (same rule, pod, container, node; the clock has not moved) is not folded into
    # the incident the journal does not hold: it opens one of its own, decided and journaled.
    repeat = shell(vllm, 1)
    await process(responder, repeat)
    assert errors.saying("journal write failed") == [failure]
    again = trail_entry(responder, repeat)
    assert (again["state"], again["outcome"]) == ("done", "opened")
    assert again["incident_id"] == incident_id_for(repeat) != refused_incident
    assert again["incident"]["decision"] is not None
    assert again["incident"]["decided_ns"] is not None
    assert [a["action"] for a in again["incident"]["actions"]] == ["quarantine"]
    reopened = incident_row(responder, incident_id_for(repeat))
    assert reopened is not None and reopened["first_alert_id"] == repeat.alert_id and reopened["count"] == 1
    # The first alert is still pending, not relabelled a duplicate of the new incident.
    assert trail_entry(responder, first)["outcome"] == "pending"
    assert pipeline_of(responder).stats.processed == 1


async def test_a_refused_decision_is_resumed_and_finished_opened_after_a_restart(
    world: World, errors: Errors, monkeypatch: pytest.MonkeyPatch
) -> None:
    torchserve = world.pods["torchserve"]
    alert = shell(torchserve, 0)
    incident_id = incident_id_for(alert)
    responder = await start(world)
    try:
        with monkeypatch.context() as patch:
            refuse_record_decision(patch, incident_id)
            await process(responder, alert)
        assert trail_entry(responder, alert)["outcome"] == "pending"
        assert len(errors.saying("journal write failed")) == 1
    finally:
        await responder.stop()

    restarted = await start(world)  # the journal takes every write again
    try:
        assert await pipeline_of(restarted).drain(timeout=20)
        await restarted.journal.run(Touch())
        entry = trail_entry(restarted, alert)
        assert (entry["state"], entry["outcome"], entry["incident_id"]) == ("done", "opened", incident_id)
        assert entry["incident"]["decision"] is not None
        # The interrupted run's action records were replaced by the resumed run's one set.
        assert [a["action"] for a in entry["incident"]["actions"]] == ["quarantine"]
        assert restarted.journal.pending_alerts() == []
        assert len(errors.saying("journal write failed")) == 1  # nothing more failed
    finally:
        await restarted.stop()


async def test_when_the_journal_takes_every_write_the_alert_is_finished_opened(
    responder: Responder, world: World, errors: Errors
) -> None:
    vllm = world.pods["vllm"]
    alert = shell(vllm, 0)
    await process(responder, alert)

    assert errors.all() == []
    entry = trail_entry(responder, alert)
    assert (entry["state"], entry["outcome"]) == ("done", "opened")
    assert entry["incident_id"] == incident_id_for(alert)
    incident = entry["incident"]
    assert incident["decision"] is not None and incident["decided_ns"] is not None
    assert incident["verification"] is not None and incident["verification"]["status"] == "verified"
    assert [(a["action"], a["status"]) for a in incident["actions"]] == [("quarantine", "quarantined")]
    assert responder.journal.pending_alerts() == []
    stats = pipeline_of(responder).stats
    assert (stats.processed, stats.failed, list(stats.stuck)) == (1, 0, [])
    # A repeat now folds into the incident, as before.
    repeat = shell(vllm, 1)
    await process(responder, repeat)
    folded = trail_entry(responder, repeat)
    assert (folded["state"], folded["outcome"], folded["incident_id"]) == (
        "done",
        "duplicate",
        incident_id_for(alert),
    )
    assert errors.all() == []


async def test_repeats_journaled_while_a_refused_opening_write_was_in_flight_count_when_it_is_reopened(
    world: World, errors: Errors, monkeypatch: pytest.MonkeyPatch
) -> None:
    vllm = world.pods["vllm"]
    first = shell(vllm, 0)
    incident_id = incident_id_for(first)
    repeats = [shell(vllm, n) for n in range(1, 4)]
    responder = await start(world)
    try:
        with monkeypatch.context() as patch:
            await refuse_the_opening_while_repeats_come(responder, patch, first, repeats)
        assert [extra(r)["op"] for r in errors.saying("journal write failed")] == ["open_incident"]
        # The journal lacks the incident, and holds its opener pending and its repeats final.
        assert incident_row(responder, incident_id) is None
        assert trail_entry(responder, first)["outcome"] == "pending"
        for repeat in repeats:
            entry = trail_entry(responder, repeat)
            assert (entry["state"], entry["outcome"]) == ("done", "duplicate")
            assert entry["incident_id"] == incident_id
    finally:
        await responder.stop()

    # Re-opened, the incident counts its opener and the repeats journaled into it.
    restarted = await restart_reopening(world, first, 1 + len(repeats))
    try:
        # And counts on from there: the next repeat folds into it.
        later = shell(vllm, len(repeats) + 1)
        await process(restarted, later)
        assert trail_entry(restarted, later)["incident_id"] == incident_id
        row = incident_row(restarted, incident_id)
        assert row is not None and row["count"] == 2 + len(repeats)
        assert len(errors.saying("journal write failed")) == 1  # nothing more failed
    finally:
        await restarted.stop()


async def test_a_resumed_opener_is_decided_as_its_incidents_opener_though_a_later_incident_holds_its_key(
    world: World, errors: Errors, monkeypatch: pytest.MonkeyPatch
) -> None:
    torchserve = world.pods["torchserve"]
    first, later = shell(torchserve, 0), shell(torchserve, 1)
    first_incident, later_incident = incident_id_for(first), incident_id_for(later)
    responder = await start(world)
    try:
        with monkeypatch.context() as patch:
            refuse_record_decision(patch, first_incident)
            await process(responder, first)
        undecided = incident_row(responder, first_incident)
        assert undecided is not None and undecided["decided_ns"] is None
        assert trail_entry(responder, first)["outcome"] == "pending"
        # A repeat after the refusal opens an incident of its own (same key), decided.
        world.clock.advance(1)
        await process(responder, later)
        opened = trail_entry(responder, later)
        assert (opened["outcome"], opened["incident_id"]) == ("opened", later_incident)
        later_row = incident_row(responder, later_incident)
        assert later_row is not None and later_row["decided_ns"] is not None
        later_before = dict(later_row)
        later_actions = opened["incident"]["actions"]
    finally:
        await responder.stop()

    restarted = await start(world)  # the journal takes every write again
    try:
        assert await pipeline_of(restarted).drain(timeout=20)
        await restarted.journal.run(Touch())
        # The first alert is resumed as its own incident's opener: decided, finished "opened".
        entry = trail_entry(restarted, first)
        assert (entry["state"], entry["outcome"], entry["incident_id"]) == ("done", "opened", first_incident)
        assert entry["incident"]["decision"] is not None and entry["incident"]["decided_ns"] is not None
        # The interrupted run's action records were replaced by the resumed run's one set.
        assert [a["action"] for a in entry["incident"]["actions"]] == ["quarantine"]
        first_row = incident_row(restarted, first_incident)
        assert first_row is not None and first_row["count"] == 1
        assert restarted.journal.pending_alerts() == []
        # The later incident is unchanged (the first alert was not folded into it)...
        later_row = incident_row(restarted, later_incident)
        assert later_row is not None and dict(later_row) == later_before
        assert trail_entry(restarted, later)["incident"]["actions"] == later_actions
        # ... and still the live one for the key: a new repeat folds into it.
        repeat = shell(torchserve, 2)
        await process(restarted, repeat)
        folded = trail_entry(restarted, repeat)
        assert (folded["outcome"], folded["incident_id"]) == ("duplicate", later_incident)
        later_row = incident_row(restarted, later_incident)
        assert later_row is not None and later_row["count"] == later_before["count"] + 1
        assert len(errors.saying("journal write failed")) == 1  # nothing more failed
    finally:
        await restarted.stop()


async def test_a_resumed_opener_whose_refused_incident_has_repeats_opens_it_though_a_later_one_is_live(
    world: World, errors: Errors, monkeypatch: pytest.MonkeyPatch
) -> None:
    kserve = world.pods["kserve"]
    first = shell(kserve, 0)
    first_incident = incident_id_for(first)
    repeats = [shell(kserve, n) for n in range(1, 3)]
    later = shell(kserve, 3)
    later_incident = incident_id_for(later)
    responder = await start(world)
    try:
        with monkeypatch.context() as patch:
            await refuse_the_opening_while_repeats_come(responder, patch, first, repeats)
        # The next alert of the key opens an incident of its own, which the journal holds.
        world.clock.advance(1)
        await process(responder, later)
        opened = trail_entry(responder, later)
        assert (opened["outcome"], opened["incident_id"]) == ("opened", later_incident)
        later_row = incident_row(responder, later_incident)
        assert later_row is not None
        later_before = dict(later_row)
        assert incident_row(responder, first_incident) is None
    finally:
        await responder.stop()

    # The first alert opens the incident its repeats name (not folded into the later one)...
    restarted = await restart_reopening(world, first, 1 + len(repeats))
    try:
        for repeat in repeats:
            assert trail_entry(restarted, repeat)["incident_id"] == first_incident
        # ... and the later incident is unchanged and still live: a new repeat folds into it.
        later_row = incident_row(restarted, later_incident)
        assert later_row is not None and dict(later_row) == later_before
        repeat = shell(kserve, 4)
        await process(restarted, repeat)
        folded = trail_entry(restarted, repeat)
        assert (folded["outcome"], folded["incident_id"]) == ("duplicate", later_incident)
        assert len(errors.saying("journal write failed")) == 1  # nothing more failed
    finally:
        await restarted.stop()
