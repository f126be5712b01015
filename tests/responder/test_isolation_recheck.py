"""A quarantine or block is proven when made and proven again while the attack goes on: the label
alone proves nothing. A deny-all deleted or edited, a policy that came to let the pod's traffic
through, a label moved to a narrower cut, a block policy gone: each is noticed by the next recheck,
and the next repeat opens a new incident that isolates (or says LEAKY) again. Against the emulator
over real HTTP."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import pytest

from responder.actions import destination
from responder.actions.events import EventRecorder
from responder.actions.outcome import OutcomeStatus
from responder.actions.quarantine import ClusterActions
from responder.config import BlockDestination, Isolation, Quarantine
from responder.service import Responder
from simulators.cluster_emulator import Fault, RunningCluster
from simulators.seed import SeededPod
from tests.helpers import FakeClock
from tests.responder.spec_reading import CLOSED, direction_state
from tests.responder.test_block_destination import block_policy_of, egress_alert
from tests.responder.test_pipeline import labels, rows, shell, start_with_clock, submit_all
from tests.responder.test_quarantine import NP, Harness, shell_alert

Seeded = tuple[RunningCluster, dict[str, SeededPod], str]
LABEL = "serving-guard.io/quarantine"
DENY_ALL = "serving-guard-quarantine"
ALLOW_ALL = {"podSelector": {}, "policyTypes": ["Ingress", "Egress"], "ingress": [{}], "egress": [{}]}


@pytest.fixture
def harness(seeded: Seeded) -> Harness:
    running, _, kubeconfig = seeded
    return Harness(running, kubeconfig)


def quarantined(harness: Harness, pod: SeededPod, isolate: Isolation = Isolation.BOTH) -> None:
    outcome = harness.actions.quarantine(
        harness.pod(pod), shell_alert(pod), "inc-1", "Notice: shell", dry_run=False, isolate=isolate
    )
    assert outcome.status is OutcomeStatus.QUARANTINED, outcome.detail


def delete_policy(harness: Harness, namespace: str, name: str) -> None:
    harness.gateway.request(
        "DELETE", f"/apis/networking.k8s.io/v1/namespaces/{namespace}/networkpolicies/{name}"
    )
    assert harness.stored(NP, namespace, name) is None


def edit_policy(harness: Harness, namespace: str, name: str, **spec: Any) -> None:
    stored = harness.stored(NP, namespace, name)
    assert stored is not None
    stored["spec"].update(spec)
    harness.running.call(harness.running.emulator.put_object, NP, stored)


def relabel(harness: Harness, pod: SeededPod, value: str) -> None:
    harness.gateway.patch_pod(pod.namespace, pod.name, {"metadata": {"labels": {LABEL: value}}})


# -- ClusterActions.lapse_of: what the recheck reads ---------------------------------------------


def test_a_quarantine_as_made_holds(harness: Harness, seeded: Seeded) -> None:
    vllm = seeded[1]["vllm"]
    quarantined(harness, vllm)
    assert harness.lapse(harness.pod(vllm), cut=Isolation.BOTH) is None


def test_a_policy_that_came_to_let_traffic_through_undoes_it_unless_reported_when_made(
    harness: Harness, seeded: Seeded
) -> None:
    vllm = seeded[1]["vllm"]
    quarantined(harness, vllm)
    harness.put_policy(vllm.namespace, "debug-allow-all", ALLOW_ALL)
    lapse = harness.lapse(harness.pod(vllm), cut=Isolation.BOTH)
    assert lapse == "NetworkPolicy debug-allow-all now allows its ingress+egress"
    # A quarantine reported LEAKY through it when made is held to that, no more.
    known = harness.lapse(harness.pod(vllm), cut=Isolation.BOTH, known_leaks={"debug-allow-all"})
    assert known is None


def test_a_one_way_cut_widened_by_another_quarantine_is_held_to_its_own_direction(
    harness: Harness, seeded: Seeded
) -> None:
    """An egress incident, then a shell's quarantine of both ways, LEAKY on ingress through the
    gateway's policy: the egress incident still holds (nothing changed in its direction), and is
    undone once the egress of the policy the pod is in now is opened."""
    triton = seeded[1]["triton"]
    quarantined(harness, triton, Isolation.EGRESS)
    assert harness.lapse(harness.pod(triton), cut=Isolation.EGRESS) is None
    widened = harness.actions.quarantine(
        harness.pod(triton), shell_alert(triton), "inc-2", "Notice: shell", dry_run=False
    )
    assert widened.status is OutcomeStatus.LEAKY and widened.leaky_policies == ("allow-gateway-to-triton",)
    # The gateway's policy admits requests only: its egress is cut, and the outcome says so (Slack).
    assert widened.leaking_directions == ("ingress",)
    policies = harness.running.call(harness.running.emulator.list_objects, NP, triton.namespace)
    stored = harness.stored("v1/pods", triton.namespace, triton.name)
    assert stored is not None and stored["metadata"]["labels"][LABEL] == "true"
    pod_labels = stored["metadata"]["labels"]
    assert direction_state(policies, pod_labels, "egress") == CLOSED
    assert direction_state(policies, pod_labels, "ingress") == "partial via allow-gateway-to-triton"

    assert harness.lapse(harness.pod(triton), cut=Isolation.EGRESS) is None
    # The widening incident is held to its own report: the leak it was LEAKY through is known to it.
    assert (
        harness.lapse(harness.pod(triton), cut=Isolation.BOTH)
        == "NetworkPolicy allow-gateway-to-triton now allows its ingress"
    )
    assert (
        harness.lapse(harness.pod(triton), cut=Isolation.BOTH, known_leaks={"allow-gateway-to-triton"})
        is None
    )
    # The egress cut is now the both-ways deny-all's: opened there, the egress incident is undone.
    edit_policy(harness, triton.namespace, DENY_ALL, egress=[{}])
    assert (
        harness.lapse(harness.pod(triton), cut=Isolation.EGRESS)
        == "NetworkPolicy serving-guard-quarantine no longer cuts egress"
    )


def test_a_policy_allowing_only_the_direction_left_alone_does_not_undo_a_one_way_cut(
    harness: Harness, seeded: Seeded
) -> None:
    vllm = seeded[1]["vllm"]
    quarantined(harness, vllm, Isolation.EGRESS)
    harness.put_policy(vllm.namespace, "ingress-from-anywhere", {"podSelector": {}, "ingress": [{}]})
    assert harness.lapse(harness.pod(vllm), cut=Isolation.EGRESS) is None


@pytest.mark.parametrize(
    ("change", "said"),
    [
        ("deleted", "NetworkPolicy serving-guard-quarantine is gone"),
        ("egress opened", "NetworkPolicy serving-guard-quarantine no longer cuts egress"),
        ("type dropped", "NetworkPolicy serving-guard-quarantine no longer cuts egress"),
        ("selector changed", "NetworkPolicy serving-guard-quarantine no longer selects the pod"),
    ],
)
def test_a_deny_all_deleted_or_edited_undoes_it(
    harness: Harness, seeded: Seeded, change: str, said: str
) -> None:
    vllm = seeded[1]["vllm"]
    quarantined(harness, vllm)
    if change == "deleted":
        delete_policy(harness, vllm.namespace, DENY_ALL)
    elif change == "egress opened":
        edit_policy(harness, vllm.namespace, DENY_ALL, egress=[{}])
    elif change == "type dropped":
        edit_policy(harness, vllm.namespace, DENY_ALL, policyTypes=["Ingress"])
    else:
        edit_policy(harness, vllm.namespace, DENY_ALL, podSelector={"matchLabels": {LABEL: "no"}})
    assert harness.lapse(harness.pod(vllm), cut=Isolation.BOTH) == said


def test_a_label_moved_to_a_narrower_cut_or_removed_undoes_it(harness: Harness, seeded: Seeded) -> None:
    vllm = seeded[1]["vllm"]
    quarantined(harness, vllm)
    relabel(harness, vllm, "true-ingress")
    assert (
        harness.lapse(harness.pod(vllm), cut=Isolation.BOTH)
        == "its quarantine label now cuts ingress only, not both"
    )
    # Wider than made is no lapse: an ingress cut widened to both by a later quarantine still cuts ingress.
    relabel(harness, vllm, "true")
    assert harness.lapse(harness.pod(vllm), cut=Isolation.INGRESS) is None
    relabel(harness, vllm, "someone-else")
    assert harness.lapse(harness.pod(vllm), cut=Isolation.BOTH) == "its quarantine label is gone"


def test_a_block_policy_gone_or_no_longer_blocking_the_address_undoes_the_block(
    harness: Harness, seeded: Seeded
) -> None:
    vllm = seeded[1]["vllm"]
    outcome = harness.actions.block_destination(
        harness.pod(vllm), egress_alert(vllm, "203.0.113.7"), dry_run=False
    )
    assert outcome.status is OutcomeStatus.BLOCKED, outcome.detail
    pod = harness.pod(vllm)
    assert harness.lapse(pod, cut=None, blocked={"203.0.113.7"}) is None
    policy = block_policy_of(harness, vllm)
    assert policy is not None
    name = policy["metadata"]["name"]
    edit_policy(harness, vllm.namespace, name, egress=[{}])
    assert (
        harness.lapse(harness.pod(vllm), cut=None, blocked={"203.0.113.7"})
        == f"NetworkPolicy {name} no longer blocks 203.0.113.7"
    )
    delete_policy(harness, vllm.namespace, name)
    assert harness.lapse(harness.pod(vllm), cut=None, blocked={"203.0.113.7"}) == (
        f"NetworkPolicy {name} is gone"
    )
    assert name == destination.block_policy_name("serving-guard-block", pod.uid)


# -- a block under an egress quarantine: the label proves nothing -------------------------------


def test_a_block_under_a_labelled_quarantine_whose_deny_all_failed_is_not_said_blocked(
    harness: Harness, seeded: Seeded
) -> None:
    vllm = seeded[1]["vllm"]
    harness.fail(Fault(status=403, method="POST", plural="networkpolicies", times=10))
    failed = harness.actions.quarantine(
        harness.pod(vllm), shell_alert(vllm), "inc-1", "Notice: shell", dry_run=False
    )
    assert failed.status is OutcomeStatus.FAILED and failed.labelled
    harness.running.emulator.faults.clear()
    block = harness.actions.block_destination(
        harness.pod(vllm), egress_alert(vllm, "203.0.113.7"), dry_run=False
    )
    assert block.status is OutcomeStatus.LEAKY
    assert (
        "203.0.113.7 (fd.sip) is not blocked: the pod's quarantine label cuts its egress, but"
        " NetworkPolicy serving-guard-quarantine is gone, so nothing cuts it" in block.detail
    )
    predicted = harness.actions.block_destination(
        harness.pod(vllm), egress_alert(vllm, "203.0.113.7"), dry_run=True
    )
    assert predicted.status is OutcomeStatus.DRY_RUN and "is not blocked" in predicted.detail


def test_a_block_under_an_egress_quarantine_whose_deny_all_was_opened_is_not_said_blocked(
    harness: Harness, seeded: Seeded
) -> None:
    vllm = seeded[1]["vllm"]
    quarantined(harness, vllm)
    edit_policy(harness, vllm.namespace, DENY_ALL, egress=[{}])
    block = harness.actions.block_destination(
        harness.pod(vllm), egress_alert(vllm, "203.0.113.7"), dry_run=False
    )
    assert block.status is OutcomeStatus.LEAKY
    assert "NetworkPolicy serving-guard-quarantine no longer cuts egress" in block.detail
    # Repaired by the next quarantine, the cut keeps the address out again.
    quarantined(harness, vllm)
    again = harness.actions.block_destination(
        harness.pod(vllm), egress_alert(vllm, "203.0.113.7"), dry_run=False
    )
    assert again.status is OutcomeStatus.BLOCKED
    assert "a quarantine cuts the pod's egress (NetworkPolicy serving-guard-quarantine)" in again.detail


# -- the pipeline: noticed by a recheck, isolated again by the next repeat ------------------------


async def rechecked(responder: Responder) -> bool:
    """Wait for the background recheck; whether it reopened the incident."""
    pipeline = responder.pipeline
    assert pipeline is not None
    for _ in range(250):
        if not pipeline._background:
            break
        await asyncio.sleep(0.02)
    else:
        raise AssertionError("the recheck is still running")
    [state] = pipeline.incidents._open.values()
    return state.reopen_after_ns is not None


async def test_a_policy_that_opens_a_quarantined_pod_is_noticed_and_said_leaky_once(
    tmp_path: Path, seeded: Seeded, caplog: pytest.LogCaptureFixture
) -> None:
    running, pods, kubeconfig = seeded
    clock = FakeClock()
    harness = Harness(running, kubeconfig)
    responder = await start_with_clock(tmp_path, kubeconfig, clock)
    try:
        vllm = pods["vllm"]
        await submit_all(responder, [shell(vllm, n=0)])
        assert labels(running, vllm)[LABEL] == "true"
        clock.advance(16)
        await submit_all(responder, [shell(vllm, n=1)])  # a recheck: it holds
        assert not await rechecked(responder)
        harness.put_policy(vllm.namespace, "debug-allow-all", ALLOW_ALL)
        clock.advance(16)
        with caplog.at_level(logging.WARNING):
            await submit_all(responder, [shell(vllm, n=2)])
            assert await rechecked(responder)
        assert any(
            "no longer holds (NetworkPolicy debug-allow-all now allows its ingress+egress)" in r.getMessage()
            for r in caplog.records
        )
        await submit_all(responder, [shell(vllm, n=3)])  # a new incident: said LEAKY through it
        actions = rows(responder.config, "SELECT status, detail FROM actions ORDER BY id")
        # The lapse is journaled under the first incident (its audit trail tells it).
        assert [a["status"] for a in actions] == ["quarantined", "lapsed", "leaky"]
        assert "debug-allow-all allows ingress+egress" in actions[-1]["detail"]
        # Said once: the new incident knows the leak, its rechecks do not reopen it again.
        clock.advance(16)
        await submit_all(responder, [shell(vllm, n=4)])
        assert not await rechecked(responder)
        assert rows(responder.config, "SELECT COUNT(*) FROM incidents")[0][0] == 2
    finally:
        await responder.stop()


async def test_a_deleted_deny_all_is_noticed_and_made_again_by_the_next_repeat(
    tmp_path: Path, seeded: Seeded
) -> None:
    running, pods, kubeconfig = seeded
    clock = FakeClock()
    harness = Harness(running, kubeconfig)
    responder = await start_with_clock(tmp_path, kubeconfig, clock)
    try:
        vllm = pods["vllm"]
        await submit_all(responder, [shell(vllm, n=0)])
        delete_policy(harness, vllm.namespace, DENY_ALL)
        clock.advance(16)
        await submit_all(responder, [shell(vllm, n=1)])
        assert await rechecked(responder)
        await submit_all(responder, [shell(vllm, n=2)])
        assert harness.stored(NP, vllm.namespace, DENY_ALL) is not None
        latest = rows(responder.config, "SELECT status, detail FROM actions ORDER BY id DESC")[0]
        assert latest["status"] == "quarantined" and f"created NetworkPolicy {DENY_ALL}" in latest["detail"]
    finally:
        await responder.stop()


async def test_a_pod_deleted_or_replaced_since_ends_the_rechecks_without_a_lapse(
    tmp_path: Path, seeded: Seeded
) -> None:
    """Deleting a quarantined pod is the usual remedy, and its StatefulSet makes it again under its
    name: neither is a lapse ("no longer holds ... while the attack goes on"), and the incident no
    longer offers a release of a quarantine that went with its pod."""
    running, pods, kubeconfig = seeded
    clock = FakeClock()
    harness = Harness(running, kubeconfig)
    responder = await start_with_clock(tmp_path, kubeconfig, clock)
    pipeline = responder.pipeline
    assert pipeline is not None
    try:
        vllm = pods["vllm"]
        await submit_all(responder, [shell(vllm, n=0)])
        stored = harness.stored("v1/pods", vllm.namespace, vllm.name)
        assert stored is not None and stored["metadata"]["labels"][LABEL] == "true"
        # Replaced: the same name, a new uid, without the label.
        stored["metadata"] = {
            "name": vllm.name,
            "namespace": vllm.namespace,
            "uid": "0f1e2d3c-aaaa-bbbb-cccc-000000000002",
            "labels": {k: v for k, v in stored["metadata"]["labels"].items() if k != LABEL},
        }
        running.call(running.emulator.put_object, "v1/pods", stored)
        clock.advance(16)
        await submit_all(responder, [shell(vllm, n=1)])
        assert not await rechecked(responder)
        [state] = pipeline.incidents._open.values()
        assert state.report is not None and not state.report.labelled
        assert state.report.release_command() is None
        # The rechecks stop: a later repeat reads nothing more.
        clock.advance(16)
        await submit_all(responder, [shell(vllm, n=2)])
        assert not await rechecked(responder)
        actions = rows(responder.config, "SELECT action, status, detail FROM actions ORDER BY id")
        assert [(a["action"], a["status"]) for a in actions] == [
            ("quarantine", "quarantined"),
            ("recheck", "pod_gone"),
        ]
        assert (
            "replaced since by a new pod of its name (uid 0f1e2d3c-aaaa-bbbb-cccc-000000000002)"
            in actions[-1]["detail"]
        )
    finally:
        await responder.stop()


async def test_a_pod_deleted_since_is_told_gone(tmp_path: Path, seeded: Seeded) -> None:
    running, pods, kubeconfig = seeded
    clock = FakeClock()
    harness = Harness(running, kubeconfig)
    responder = await start_with_clock(tmp_path, kubeconfig, clock)
    try:
        vllm = pods["vllm"]
        await submit_all(responder, [shell(vllm, n=0)])
        harness.gateway.request("DELETE", f"/api/v1/namespaces/{vllm.namespace}/pods/{vllm.name}")
        clock.advance(16)
        await submit_all(responder, [shell(vllm, n=1)])
        assert not await rechecked(responder)
        latest = rows(responder.config, "SELECT action, status, detail FROM actions ORDER BY id DESC")[0]
        assert (latest["action"], latest["status"]) == ("recheck", "pod_gone")
        assert latest["detail"].startswith("the pod was deleted since")
    finally:
        await responder.stop()


# -- the record of patched policies goes only onto the pod that was quarantined --------------------


def test_the_patched_policies_record_never_lands_on_a_pod_recreated_meanwhile(seeded: Seeded) -> None:
    running, pods, kubeconfig = seeded
    harness = Harness(running, kubeconfig, Quarantine(patch_other_policies=True))
    vllm = pods["vllm"]
    harness.put_policy(vllm.namespace, "ingress-from-anywhere", {"podSelector": {}, "ingress": [{}]})
    pod = harness.pod(vllm)
    exclude = harness.gateway.replace_network_policy

    def exclude_then_recreate(namespace: str, name: str, body: Any) -> dict[str, Any]:
        # The pod is deleted and made again under its name (a StatefulSet) just after the exclusion.
        written = exclude(namespace, name, body)
        stored = harness.stored("v1/pods", vllm.namespace, vllm.name)
        assert stored is not None
        stored["metadata"] = {
            "name": vllm.name,
            "namespace": vllm.namespace,
            "uid": "0f1e2d3c-aaaa-bbbb-cccc-000000000001",
            "labels": {k: v for k, v in stored["metadata"]["labels"].items() if k != LABEL},
        }
        running.call(running.emulator.put_object, "v1/pods", stored)
        return written

    harness.gateway.replace_network_policy = exclude_then_recreate  # type: ignore[method-assign]
    outcome = harness.actions.quarantine(pod, shell_alert(vllm), "inc-1", "Notice: shell", dry_run=False)
    assert outcome.patched_policies == ("ingress-from-anywhere",)
    recreated = harness.stored("v1/pods", vllm.namespace, vllm.name)
    assert recreated is not None
    assert "serving-guard.io/patched-policies" not in (recreated["metadata"].get("annotations") or {})
    # The quarantine that could not record its patch does not claim the pod isolated, and says why.
    assert outcome.status is OutcomeStatus.LEAKY, outcome.detail
    assert "isolation not proven: the pod was deleted or replaced since it was labelled (" in outcome.detail
    assert "could not be checked" not in outcome.detail


# -- release without the responder's config ------------------------------------------------------


def test_release_without_the_config_refuses_a_pod_blocked_under_another_block_label(seeded: Seeded) -> None:
    running, pods, kubeconfig = seeded
    harness = Harness(running, kubeconfig)
    custom = ClusterActions(
        harness.gateway,
        Quarantine(),
        EventRecorder(harness.gateway),
        blocks=BlockDestination(label="example.com/egress-block"),
    )
    vllm = pods["vllm"]
    blocked = custom.block_destination(harness.pod(vllm), egress_alert(vllm, "203.0.113.7"), dry_run=False)
    assert blocked.status is OutcomeStatus.BLOCKED, blocked.detail
    # `serving-guard release` without --config: the default labels.
    refused = harness.actions.release(
        vllm.namespace, vllm.name, by="oncall", reason="test", labels_known=False
    )
    assert refused.status is OutcomeStatus.FAILED
    assert refused.detail.startswith(
        "the pod is blocked under the label example.com/egress-block (NetworkPolicy"
    )
    assert "run release with the responder's --config" in refused.detail
    assert "example.com/egress-block" in labels(running, vllm)
    # With the responder's config it is released.
    released = custom.release(vllm.namespace, vllm.name, by="oncall", reason="test", labels_known=True)
    assert released.status is OutcomeStatus.RELEASED and "lifted its destination block" in released.detail
    assert "example.com/egress-block" not in labels(running, vllm)
    # A pod that was never blocked is still nothing to release, without the config too.
    kserve = pods["kserve"]
    nothing = harness.actions.release(
        kserve.namespace, kserve.name, by="oncall", reason="test", labels_known=False
    )
    assert nothing.status is OutcomeStatus.RELEASED and "nothing to release" in nothing.detail


# -- a config with another quarantine label never takes over the deny-all others rely on ----------


def test_a_quarantine_under_another_label_does_not_repair_away_the_pods_quarantined_under_the_first(
    seeded: Seeded,
) -> None:
    running, pods, kubeconfig = seeded
    harness = Harness(running, kubeconfig)
    kserve, vllm = pods["kserve"], pods["vllm"]
    quarantined(harness, kserve)
    # A stale copy of the config on a workstation: another quarantine label.
    stale = ClusterActions(
        harness.gateway, Quarantine(label="example.com/isolated"), EventRecorder(harness.gateway)
    )
    outcome = stale.quarantine(harness.pod(vllm), shell_alert(vllm), "inc-2", "by hand", dry_run=False)
    assert outcome.status is OutcomeStatus.FAILED
    # Which of the two configs is in force cannot be told from the cluster: each is said, neither blamed.
    assert (
        f"NetworkPolicy {DENY_ALL} selects {LABEL}=true, but this config's label for its both cut is"
        " example.com/isolated=true: one of the two configs is stale" in outcome.detail
    )
    assert "1 pod relies on it" in outcome.detail
    assert f"serving-guard release --namespace {kserve.namespace} {kserve.name} " in outcome.detail
    policy = harness.stored(NP, kserve.namespace, DENY_ALL)
    assert policy is not None and policy["spec"]["podSelector"] == {"matchLabels": {LABEL: "true"}}
    assert harness.lapse(harness.pod(kserve), cut=Isolation.BOTH) is None  # still isolated


def test_a_deny_all_widened_to_every_pod_is_left_as_it_is(harness: Harness, seeded: Seeded) -> None:
    # Widened by hand to every pod (a namespace lockdown), it still cuts the quarantined pods: a
    # "repair" back to the label would give every other pod of the namespace its traffic back.
    kserve, vllm = seeded[1]["kserve"], seeded[1]["vllm"]
    quarantined(harness, kserve)
    edit_policy(harness, kserve.namespace, DENY_ALL, podSelector={})
    outcome = harness.actions.quarantine(
        harness.pod(vllm), shell_alert(vllm), "inc-2", "shell", dry_run=False
    )
    assert outcome.status is OutcomeStatus.QUARANTINED, outcome.detail
    assert f"left NetworkPolicy {DENY_ALL} as it is: its podSelector {{}} selects more pods" in outcome.detail
    policy = harness.stored(NP, kserve.namespace, DENY_ALL)
    assert policy is not None and policy["spec"]["podSelector"] == {}


def test_a_way_out_of_the_network_namespace_found_since_undoes_a_proven_quarantine_only(
    harness: Harness, seeded: Seeded
) -> None:
    """A LEAKY quarantine was never said to hold: the recheck holds only a proven one to it."""
    vllm = seeded[1]["vllm"]
    quarantined(harness, vllm)
    stored = harness.stored("v1/pods", vllm.namespace, vllm.name)
    assert stored is not None
    stored["spec"]["ephemeralContainers"] = [
        {"name": "debugger", "image": "busybox", "securityContext": {"capabilities": {"add": ["SYS_ADMIN"]}}}
    ]
    harness.running.call(harness.running.emulator.put_object, "v1/pods", stored)
    lapse = harness.lapse(harness.pod(vllm), cut=Isolation.BOTH, proven=True)
    assert lapse is not None and lapse.startswith("the pod can leave its network namespace")
    assert "ephemeral container debugger" in lapse
    assert harness.lapse(harness.pod(vllm), cut=Isolation.BOTH) is None
