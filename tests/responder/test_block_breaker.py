"""The block circuit breaker (guardrails.max_blocks) against the emulated API server: it counts
the destinations newly blocked, holds back the ones past its limit (a decision's block and a
repeat's follow-up alike) with the command to block by hand, gives a slot back for an address
found already blocked, and is rebuilt from the journal after a restart."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

from responder.actions import destination
from responder.actions.outcome import ActionOutcome, OutcomeStatus
from responder.cluster.api import KubeGateway
from responder.config import ActionName
from responder.journal.store import report_from_record
from responder.notify.render import render_incident
from responder.service import Responder
from tests.helpers import FakeClock, responder_config
from tests.notify.slack_fixtures import make_decision, make_report
from tests.notify.test_slack_render import text_of
from tests.responder.test_block_destination import (
    EGRESS_RULE,
    Seeded,
    block_policy_of,
    egress_alert,
    settled,
)
from tests.responder.test_pipeline import submit_all
from tests.responder.test_quarantine import Harness

HELD = "block circuit breaker open"


async def started(
    tmp_path: Path,
    kubeconfig: str,
    clock: FakeClock,
    *,
    count: int,
    window: float = 600,
    incident_seconds: float = 60,
    quarantine: bool = False,
    quarantines: int | None = None,
) -> Responder:
    """A responder whose one policy blocks the anomalous egress's destination, at most ``count``
    new blocks per ``window`` seconds; with ``quarantine``, it also quarantines the pod's ingress
    (at most ``count`` quarantines per ``window``), so the block is still made."""
    policy: dict[str, object] = {
        "name": "block-egress-destination",
        "match": {"rules": [EGRESS_RULE]},
        "actions": ["notify", "quarantine", "block_destination"]
        if quarantine
        else ["notify", "block_destination"],
    }
    if quarantine:
        policy["isolate"] = "ingress"
    extra = {
        "inputs": {},
        "policies": [policy],
        "dedupe": {"window_seconds": incident_seconds},
        "guardrails": {
            "max_blocks": {"count": count, "window_seconds": window},
            "max_quarantines": {"count": quarantines or count, "window_seconds": window},
        },
    }
    config = responder_config(tmp_path, kubeconfig, extra=extra)
    responder = Responder(config, KubeGateway.from_config(config.cluster), clock_ns=clock)
    await responder.start()
    return responder


def actions_of(responder: Responder) -> list[tuple[str, str, str]]:
    """Each action's status and the first words of its detail, in order."""
    with closing(sqlite3.connect(responder.config.journal.path)) as conn:
        rows = conn.execute("SELECT status, outcome, incident_id FROM actions ORDER BY id").fetchall()
    return [(status, outcome, incident) for status, outcome, incident in rows]


def gauge(responder: Responder) -> float:
    value = responder.metrics.registry.get_sample_value("serving_guard_block_circuit_breaker_open")
    assert value is not None
    return value


async def test_past_the_limit_a_block_is_held_back_told_and_offered_by_hand(
    tmp_path: Path, seeded: Seeded
) -> None:
    running, pods, kubeconfig = seeded
    responder = await started(tmp_path, kubeconfig, FakeClock(), count=1)
    try:
        await submit_all(responder, [egress_alert(pods["vllm"], "203.0.113.7")])
        await submit_all(responder, [egress_alert(pods["triton"], "198.51.100.9")])
        recorded = actions_of(responder)
        assert [status for status, _, _ in recorded] == ["blocked", "withheld"]
        assert HELD in recorded[1][1] and "198.51.100.9" in recorded[1][1]
        harness = Harness(running, kubeconfig)
        assert block_policy_of(harness, pods["vllm"]) is not None
        assert block_policy_of(harness, pods["triton"]) is None  # nothing made for the held one
        assert gauge(responder) == 1
        # What on-call reads: held back, why, and the exact command to block it by hand.
        record = responder.journal.incident_record(recorded[1][2])
        assert record is not None
        report = report_from_record(record)
        assert report is not None and report.decision.block_breaker_open
        text = text_of(render_incident(report))
        assert "*block_destination withheld*, because:" in text
        assert "1 destination blocked in the last 600s (limit 1)" in text
        triton = pods["triton"]
        assert (
            f"serving-guard block --namespace {triton.namespace} {triton.name} --address 198.51.100.9"
            f" --incident {recorded[1][2]}" in text
        )
    finally:
        await responder.stop()


async def test_an_address_found_blocked_already_gives_its_slot_back(tmp_path: Path, seeded: Seeded) -> None:
    """A new incident re-asserting a block in force changes nothing and takes no slot: another
    pod's block still fits under the limit."""
    _, pods, kubeconfig = seeded
    clock = FakeClock()
    responder = await started(tmp_path, kubeconfig, clock, count=2)
    try:
        await submit_all(responder, [egress_alert(pods["vllm"], "203.0.113.7")])
        clock.advance(61)  # past the dedupe window: a new incident for the same pod and address
        await submit_all(responder, [egress_alert(pods["vllm"], "203.0.113.7")])
        await submit_all(responder, [egress_alert(pods["triton"], "198.51.100.9")])
        assert [status for status, _, _ in actions_of(responder)] == ["blocked", "blocked", "blocked"]
        assert len({incident for _, _, incident in actions_of(responder)}) == 3
        await submit_all(responder, [egress_alert(pods["torchserve"], "192.0.2.80")])  # the third new one
        assert [status for status, _, _ in actions_of(responder)][-1] == "withheld"
    finally:
        await responder.stop()


async def test_a_repeats_follow_up_block_counts_is_held_back_once_and_goes_ahead_later(
    tmp_path: Path, seeded: Seeded
) -> None:
    running, pods, kubeconfig = seeded
    clock = FakeClock()
    responder = await started(tmp_path, kubeconfig, clock, count=1, window=30, incident_seconds=300)
    try:
        vllm = pods["vllm"]
        await submit_all(responder, [egress_alert(vllm, "203.0.113.7")])
        # The attack switches destinations: the breaker (1 block per 30 s) holds the new one back.
        for _ in range(3):
            await submit_all(responder, [egress_alert(vllm, "198.51.100.9")])
            await settled(responder)
            clock.advance(11)  # past the retry delay: each repeat tries again, told once
        recorded = actions_of(responder)
        assert [status for status, _, _ in recorded] == ["blocked", "withheld"]
        assert HELD in recorded[1][1] and "198.51.100.9 is not blocked" in recorded[1][1]
        assert len({incident for _, _, incident in recorded}) == 1
        # Once the window has passed, the next repeat blocks it, under the same incident.
        clock.advance(31)
        await submit_all(responder, [egress_alert(vllm, "198.51.100.9")])
        await settled(responder)
        recorded = actions_of(responder)
        assert [status for status, _, _ in recorded] == ["blocked", "withheld", "blocked"]
        assert len({incident for _, _, incident in recorded}) == 1
        policy = block_policy_of(Harness(running, kubeconfig), vllm)
        assert policy is not None
        assert {str(a) for a in destination.blocked_by(policy["spec"])} == {"203.0.113.7", "198.51.100.9"}
        record = responder.journal.incident_record(recorded[0][2])
        assert record is not None
        report = report_from_record(record)
        assert report is not None and report.block_command() is None  # blocked since: nothing to do
    finally:
        await responder.stop()


async def test_a_restart_remembers_the_blocks_of_the_window(tmp_path: Path, seeded: Seeded) -> None:
    _, pods, kubeconfig = seeded
    clock = FakeClock()
    responder = await started(tmp_path, kubeconfig, clock, count=2)
    try:
        await submit_all(responder, [egress_alert(pods["vllm"], "203.0.113.7")])
        clock.advance(61)  # a new incident re-asserting the block: not counted
        await submit_all(responder, [egress_alert(pods["vllm"], "203.0.113.7")])
        with closing(sqlite3.connect(responder.config.journal.path)) as conn:
            finished = [row[0] for row in conn.execute("SELECT finished_ns FROM actions ORDER BY id")]
        assert len(finished) == 2
        assert responder.journal.block_times_since(0) == finished[:1]
    finally:
        await responder.stop()
    restarted = await started(tmp_path, kubeconfig, clock, count=1)
    try:
        assert restarted.pipeline is not None and restarted.pipeline.block_breaker_open()
        await submit_all(restarted, [egress_alert(pods["triton"], "198.51.100.9")])
        assert [status for status, _, _ in actions_of(restarted)] == ["blocked", "blocked", "withheld"]
    finally:
        await restarted.stop()
    clock.advance(600)
    later = await started(tmp_path, kubeconfig, clock, count=1)
    try:
        assert later.pipeline is not None and not later.pipeline.block_breaker_open()
    finally:
        await later.stop()


async def test_with_both_breakers_open_each_action_is_held_with_its_reason_and_command(
    tmp_path: Path, seeded: Seeded
) -> None:
    _, pods, kubeconfig = seeded
    responder = await started(tmp_path, kubeconfig, FakeClock(), count=1, quarantine=True)
    try:
        await submit_all(responder, [egress_alert(pods["vllm"], "203.0.113.7")])
        await submit_all(responder, [egress_alert(pods["torchserve"], "198.51.100.9")])
        recorded = actions_of(responder)
        first, second = recorded[0][2], recorded[-1][2]
        assert [status for status, _, incident in recorded if incident == first] == ["quarantined", "blocked"]
        record = responder.journal.incident_record(second)
        assert record is not None
        report = report_from_record(record)
        assert report is not None
        assert report.decision.breaker_open and report.decision.block_breaker_open
        held = sorted((o.action, o.detail.split(":")[0]) for o in report.outcomes)
        assert held == [("block_destination", HELD), ("quarantine", "circuit breaker open")]
        torchserve = pods["torchserve"]
        command = report.block_command()
        assert command is not None and "--address 198.51.100.9" in command
        assert report.quarantine_command() is not None
        text = text_of(render_incident(report))
        assert "*quarantine and block_destination withheld*, because:" in text
        assert text.count("withheld*") == 1  # said once, with both reasons under it
        assert f"serving-guard block --namespace {torchserve.namespace} {torchserve.name}" in text
    finally:
        await responder.stop()


async def test_a_block_held_at_the_decision_is_taken_on_by_a_later_repeat_in_the_same_incident(
    tmp_path: Path, seeded: Seeded
) -> None:
    """Not a new incident (and Slack post) every few seconds while the breaker is open: the
    incident stays, and the first repeat after the window blocks."""
    running, pods, kubeconfig = seeded
    clock = FakeClock()
    responder = await started(
        tmp_path, kubeconfig, clock, count=1, window=30, incident_seconds=300, quarantine=True, quarantines=5
    )
    try:
        await submit_all(responder, [egress_alert(pods["vllm"], "203.0.113.7")])
        torchserve = pods["torchserve"]
        clock.advance(1)
        for _ in range(3):
            await submit_all(responder, [egress_alert(torchserve, "198.51.100.9")])
            await settled(responder)
            clock.advance(11)
        held = [r for r in actions_of(responder) if "198.51.100.9" in r[1] or HELD in r[1]]
        assert [status for status, _, _ in held] == ["withheld"]
        clock.advance(31)  # the first block's slot has aged out
        await submit_all(responder, [egress_alert(torchserve, "198.51.100.9")])
        await settled(responder)
        with closing(sqlite3.connect(responder.config.journal.path)) as conn:
            incidents = conn.execute("SELECT COUNT(*) FROM incidents").fetchone()[0]
        assert incidents == 2  # vllm's and torchserve's, no more
        policy = block_policy_of(Harness(running, kubeconfig), torchserve)
        assert policy is not None
        assert {str(a) for a in destination.blocked_by(policy["spec"])} == {"198.51.100.9"}
        record = responder.journal.incident_record(held[0][2])
        assert record is not None
        report = report_from_record(record)
        assert report is not None and report.block_command() is None  # done since
    finally:
        await responder.stop()


def test_the_command_by_hand_is_for_an_address_still_held_back() -> None:
    """Two held back, the later one blocked since: the command is the earlier one's. One found
    out of reach since (not labelled) needs no command either."""

    def held(address: str) -> ActionOutcome:
        return ActionOutcome(
            "block_destination", OutcomeStatus.WITHHELD, f"{HELD}: 1 destinations", extra={"address": address}
        )

    def blocked(address: str, *, labelled: bool = True) -> ActionOutcome:
        extra: dict[str, object] = {"address": address, **({"labelled": True} if labelled else {})}
        return ActionOutcome("block_destination", OutcomeStatus.BLOCKED, "blocked", extra=extra)

    blocking = (ActionName.NOTIFY, ActionName.BLOCK_DESTINATION)
    decision = make_decision(actions=blocking, requested=blocking)

    def command(*outcomes: ActionOutcome) -> str | None:
        return make_report(decision=decision, outcomes=outcomes).block_command()

    assert "--address 192.0.2.1 " in (
        command(held("192.0.2.1"), held("192.0.2.2"), blocked("192.0.2.2")) or ""
    )
    assert command(held("192.0.2.1"), blocked("192.0.2.1", labelled=False)) is None
    assert "--address 192.0.2.2 " in (command(held("192.0.2.1"), held("192.0.2.2")) or "")
