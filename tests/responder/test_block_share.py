"""One pod gets a share of the block breaker (guardrails.max_blocks.per_pod): an attacker in a pod
who makes it reach decoy addresses cannot spend the cluster's blocks, and a pod that reaches more
places than its share (or than its block policy holds) has its egress quarantined instead
(block_destination.escalate_to_quarantine), within the quarantine breaker. Against the emulator
over real HTTP, with the pipeline and a clock the test moves."""

from __future__ import annotations

from pathlib import Path

from responder.actions.outcome import BLOCK_SHARE_USED
from responder.cluster.api import KubeGateway
from responder.service import Responder
from simulators.cluster_emulator import RunningCluster
from simulators.seed import SeededPod
from tests.helpers import FakeClock, responder_config
from tests.responder.test_block_breaker import actions_of
from tests.responder.test_block_destination import EGRESS_RULE, egress_alert, settled
from tests.responder.test_pipeline import labels, submit_all

Seeded = tuple[RunningCluster, dict[str, SeededPod], str]
LABEL = "serving-guard.io/quarantine"


async def started(
    tmp_path: Path, kubeconfig: str, clock: FakeClock, *, escalate: bool = True, **limits: object
) -> Responder:
    """The shipped defaults (20 blocks, 5 per pod, 5 quarantines, per 300 s; 32 addresses per pod)
    unless ``limits`` says otherwise; one policy that blocks the anomalous egress's destination."""
    blocks = {"count": 20, "window_seconds": 300, "per_pod": limits.get("per_pod", 5)}
    extra = {
        "inputs": {},
        "policies": [
            {
                "name": "block-egress",
                "match": {"rules": [EGRESS_RULE]},
                "actions": ["notify", "block_destination"],
            }
        ],
        "dedupe": {"window_seconds": limits.get("incident_seconds", 300)},
        "block_destination": {
            "max_per_pod": limits.get("max_per_pod", 32),
            "escalate_to_quarantine": escalate,
        },
        "guardrails": {
            "max_blocks": blocks,
            "max_quarantines": {"count": limits.get("quarantines", 5), "window_seconds": 300},
        },
    }
    config = responder_config(tmp_path, kubeconfig, extra=extra)
    responder = Responder(config, KubeGateway.from_config(config.cluster), clock_ns=clock)
    await responder.start()
    return responder


async def reach(responder: Responder, pod: SeededPod, addresses: list[str]) -> None:
    for address in addresses:
        await submit_all(responder, [egress_alert(pod, address)])
        await settled(responder)


def decoys(count: int, start: int = 1) -> list[str]:
    return [f"203.0.113.{n}" for n in range(start, start + count)]


async def test_decoys_in_one_pod_quarantine_its_egress_and_leave_the_blocks_to_the_others(
    tmp_path: Path, seeded: Seeded
) -> None:
    running, pods, kubeconfig = seeded
    responder = await started(tmp_path, kubeconfig, FakeClock())
    try:
        vllm, triton = pods["vllm"], pods["triton"]
        await reach(responder, vllm, [*decoys(20), "198.51.100.66"])  # 20 decoys, then its real C2
        rows = actions_of(responder)
        statuses = [status for status, _, _ in rows]
        assert statuses[:5] == ["blocked"] * 5 and statuses[5] == "quarantined", statuses
        escalation = rows[5][1]
        assert BLOCK_SHARE_USED in escalation and "its egress is quarantined instead" in escalation
        assert labels(running, vllm)[LABEL] == "true-egress"
        # Every address after it (the C2 too) is out of reach through the quarantine: no more slots.
        assert set(statuses[6:]) == {"blocked"} and all("quarantine" in outcome for _, outcome, _ in rows[6:])
        assert responder.pipeline is not None
        assert responder.pipeline._block_breaker.recent(FakeClock().now) == 5
        await reach(responder, triton, ["198.51.100.9"])  # another pod's genuine block still goes
        assert actions_of(responder)[-1][0] == "blocked"
        assert LABEL not in labels(running, triton)
    finally:
        await responder.stop()


async def test_without_escalation_a_pod_past_its_share_is_withheld_not_the_others(
    tmp_path: Path, seeded: Seeded
) -> None:
    running, pods, kubeconfig = seeded
    responder = await started(tmp_path, kubeconfig, FakeClock(), escalate=False)
    try:
        await reach(responder, pods["vllm"], decoys(8))
        statuses = [status for status, _, _ in actions_of(responder)]
        assert statuses[:5] == ["blocked"] * 5 and set(statuses[5:]) == {"withheld"}, statuses
        assert "escalate_to_quarantine is off" in actions_of(responder)[5][1]
        assert LABEL not in labels(running, pods["vllm"])
        await reach(responder, pods["triton"], ["198.51.100.9"])
        assert actions_of(responder)[-1][0] == "blocked"
    finally:
        await responder.stop()


async def test_an_incident_opened_past_the_pods_share_quarantines_its_egress_at_once(
    tmp_path: Path, seeded: Seeded
) -> None:
    running, pods, kubeconfig = seeded
    clock = FakeClock()
    responder = await started(tmp_path, kubeconfig, clock, incident_seconds=60)
    try:
        vllm = pods["vllm"]
        await reach(responder, vllm, decoys(5))
        clock.advance(61)  # a new incident (its window passed), within the block breaker's window
        await reach(responder, vllm, ["198.51.100.66"])
        status, outcome, incident = actions_of(responder)[-1]
        assert status == "quarantined" and outcome.count(BLOCK_SHARE_USED) == 1
        assert incident != actions_of(responder)[0][2]
        assert labels(running, vllm)[LABEL] == "true-egress"
    finally:
        await responder.stop()


async def test_a_full_block_policy_quarantines_the_egress_instead_of_leaving_it_leaky(
    tmp_path: Path, seeded: Seeded
) -> None:
    running, pods, kubeconfig = seeded
    clock = FakeClock()
    responder = await started(tmp_path, kubeconfig, clock, per_pod=2, max_per_pod=3)
    try:
        vllm = pods["vllm"]
        await reach(responder, vllm, decoys(2))
        clock.advance(301)  # a new window: the share is free again, the policy holds 2 of 3
        await reach(responder, vllm, decoys(2, start=3))
        statuses = [status for status, _, _ in actions_of(responder)]
        assert statuses == ["blocked", "blocked", "blocked", "quarantined"], statuses
        assert "block_destination.max_per_pod is 3" in actions_of(responder)[-1][1]
        assert labels(running, vllm)[LABEL] == "true-egress"
    finally:
        await responder.stop()


async def test_the_quarantine_breaker_holds_an_escalation_back_in_words(
    tmp_path: Path, seeded: Seeded
) -> None:
    running, pods, kubeconfig = seeded
    responder = await started(tmp_path, kubeconfig, FakeClock(), per_pod=1, quarantines=1)
    try:
        await reach(responder, pods["triton"], decoys(2))  # its escalation takes the one quarantine
        await reach(responder, pods["vllm"], decoys(2, start=10))
        status, outcome, _ = actions_of(responder)[-1]
        assert status == "withheld" and BLOCK_SHARE_USED in outcome and "circuit breaker open" in outcome
        assert LABEL not in labels(running, pods["vllm"])
    finally:
        await responder.stop()


async def test_a_pods_share_is_rebuilt_from_the_journal_after_a_restart(
    tmp_path: Path, seeded: Seeded
) -> None:
    running, pods, kubeconfig = seeded
    clock = FakeClock()
    responder = await started(tmp_path, kubeconfig, clock, incident_seconds=60)
    try:
        await reach(responder, pods["vllm"], decoys(5))
    finally:
        await responder.stop()
    clock.advance(61)  # a new incident after the restart, within the block breaker's window
    restarted = await started(tmp_path, kubeconfig, clock, incident_seconds=60)
    try:
        await reach(restarted, pods["vllm"], ["198.51.100.66"])
        status, outcome, _ = actions_of(restarted)[-1]
        assert status == "quarantined" and BLOCK_SHARE_USED in outcome
        assert labels(running, pods["vllm"])[LABEL] == "true-egress"
    finally:
        await restarted.stop()


async def test_an_escalation_held_back_in_a_repeat_is_offered_by_hand_said_once_and_tried_again(
    tmp_path: Path, seeded: Seeded
) -> None:
    _, pods, kubeconfig = seeded
    clock = FakeClock()
    responder = await started(tmp_path, kubeconfig, clock, per_pod=1, quarantines=1)
    try:
        await reach(responder, pods["triton"], decoys(2))  # its escalation takes the one quarantine
        await reach(responder, pods["vllm"], decoys(2, start=10))  # blocked, then held back
        status, _, incident = actions_of(responder)[-1]
        assert status == "withheld"
        assert responder.pipeline is not None
        state = responder.pipeline.incidents.by_id(incident)
        assert state is not None and state.report is not None
        command = state.report.quarantine_command()
        assert command is not None and "--isolate egress" in command
        for _ in range(3):  # the same address, past the re-decide wait each time: said once
            clock.advance(11)
            await reach(responder, pods["vllm"], ["203.0.113.11"])
        assert [s for s, _, _ in actions_of(responder)].count("withheld") == 1
        clock.advance(301)  # both windows pass, same incident: the address is taken on again
        await reach(responder, pods["vllm"], ["203.0.113.11"])
        status, outcome, _ = actions_of(responder)[-1]
        assert status == "blocked" and "203.0.113.11" in outcome  # the pod's share is free again
    finally:
        await responder.stop()


async def test_a_full_policys_escalation_held_back_is_tried_again_once_the_breaker_closes(
    tmp_path: Path, seeded: Seeded
) -> None:
    running, pods, kubeconfig = seeded
    clock = FakeClock()
    responder = await started(
        tmp_path, kubeconfig, clock, per_pod=100, max_per_pod=2, quarantines=1, incident_seconds=900
    )
    try:
        await reach(responder, pods["triton"], decoys(3, start=100))  # its full policy takes the slot
        await reach(responder, pods["vllm"], decoys(3))  # 2 blocked, the 3rd: full, breaker open
        status, outcome, _ = actions_of(responder)[-1]
        assert status == "withheld" and "circuit breaker open" in outcome
        assert outcome.count("quarantine the pod's egress instead") == 0  # its words, not the block's advice
        clock.advance(301)
        await reach(responder, pods["vllm"], [decoys(3)[-1]])
        assert labels(running, pods["vllm"]).get(LABEL) == "true-egress"
    finally:
        await responder.stop()


async def test_an_escalation_held_back_at_an_incidents_opening_says_what_it_stood_for(
    tmp_path: Path, seeded: Seeded
) -> None:
    _, pods, kubeconfig = seeded
    clock = FakeClock()
    responder = await started(tmp_path, kubeconfig, clock, per_pod=1, quarantines=1, incident_seconds=60)
    try:
        await reach(responder, pods["triton"], decoys(2))  # its escalation takes the one quarantine
        await reach(responder, pods["vllm"], decoys(1, start=10))  # one block: its share used
        clock.advance(61)  # a new incident, within both breakers' windows
        await reach(responder, pods["vllm"], decoys(1, start=11))
        status, outcome, incident = actions_of(responder)[-1]
        assert status == "withheld"
        assert BLOCK_SHARE_USED in outcome and "its egress is not quarantined instead" in outcome
        assert responder.pipeline is not None
        state = responder.pipeline.incidents.by_id(incident)
        assert state is not None and state.report is not None
        command = state.report.quarantine_command()
        assert command is not None and "--isolate egress" in command
    finally:
        await responder.stop()
