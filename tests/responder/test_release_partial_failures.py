"""A release whose pod patch went through is a release (review 75): what fails after it (restoring
the policies quarantines patched, emptying the block policy) is said in its detail, never a failed
release, which would tell no one and which a rerun would call nothing to release. Against the
emulated API server over real HTTP."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from responder.actions import destination
from responder.actions.outcome import OutcomeStatus
from responder.cluster.api import KubeError
from responder.config import Quarantine
from simulators.cluster_emulator import Fault, RunningCluster
from simulators.seed import LEAKY_POLICY, SeededPod
from tests.responder.kmock_cluster import delete_policy_before_each_put
from tests.responder.test_block_destination import BLOCK_LABEL, egress_alert
from tests.responder.test_quarantine import LABEL, NP, Harness, shell_alert

Seeded = tuple[RunningCluster, dict[str, SeededPod], str]


def _released_events(harness: Harness, pod: SeededPod) -> list[dict[str, Any]]:
    return [e for e in harness.events(pod.namespace) if e["reason"] == "QuarantineReleased"]


def _quarantined_with_a_patch(seeded: Seeded) -> tuple[Harness, SeededPod]:
    running, pods, kubeconfig = seeded
    harness = Harness(running, kubeconfig, Quarantine(patch_other_policies=True))
    triton = pods["triton"]
    outcome = harness.actions.quarantine(
        harness.pod(triton), shell_alert(triton), "inc-1", "r", dry_run=False
    )
    assert outcome.patched_policies == (LEAKY_POLICY,)
    return harness, triton


def _excluding(harness: Harness, pod: SeededPod) -> bool:
    policy = harness.stored(NP, pod.namespace, LEAKY_POLICY)
    assert policy is not None
    return bool(policy["spec"]["podSelector"].get("matchExpressions"))


def test_policies_not_restored_after_the_label_came_off_are_said_and_the_release_told(
    seeded: Seeded,
) -> None:
    harness, triton = _quarantined_with_a_patch(seeded)
    harness.fail(Fault(status=403, method="GET", plural="networkpolicies", action="list"))
    released = harness.actions.release(triton.namespace, triton.name, by="alice", reason="fp")
    assert released.status is OutcomeStatus.RELEASED, released.detail
    assert released.detail.startswith("released by alice: fp")
    assert "the NetworkPolicies quarantines patched could not all be restored" in released.detail
    assert "release it again to restore them" in released.detail
    stored = harness.stored("v1/pods", triton.namespace, triton.name)
    assert stored is not None and LABEL not in stored["metadata"]["labels"]
    assert len(_released_events(harness, triton)) == 1
    assert _excluding(harness, triton)
    # As the detail says: released again, the policy is restored.
    again = harness.actions.release(triton.namespace, triton.name, by="alice", reason="fp")
    assert again.status is OutcomeStatus.RELEASED and again.patched_policies == (LEAKY_POLICY,)
    assert "restored NetworkPolicies " + LEAKY_POLICY in again.detail
    assert not _excluding(harness, triton)


def test_a_policy_deleted_before_its_restore_is_not_the_pod_gone(seeded: Seeded) -> None:
    harness, triton = _quarantined_with_a_patch(seeded)
    delete_policy_before_each_put(harness.gateway)
    released = harness.actions.release(triton.namespace, triton.name, by="alice", reason="fp")
    assert released.status is OutcomeStatus.RELEASED, released.detail
    assert "could not" not in released.detail and released.patched_policies == ()
    assert len(_released_events(harness, triton)) == 1


def test_a_block_policy_not_emptied_after_the_label_came_off_is_said(seeded: Seeded) -> None:
    running, pods, kubeconfig = seeded
    harness = Harness(running, kubeconfig)
    vllm = pods["vllm"]
    pod = harness.pod(vllm)
    blocked = harness.actions.block_destination(pod, egress_alert(vllm, "203.0.113.7"), dry_run=False)
    assert blocked.status is OutcomeStatus.BLOCKED
    name = destination.block_policy_name("serving-guard-block", pod.uid)
    harness.fail(Fault(status=403, method="GET", plural="networkpolicies", name=name))
    released = harness.actions.release(vllm.namespace, vllm.name, by="carol", reason="fp")
    assert released.status is OutcomeStatus.RELEASED, released.detail
    assert "lifted its destination block" in released.detail
    assert "its block policy could not be emptied" in released.detail
    stored = harness.stored("v1/pods", vllm.namespace, vllm.name)
    assert stored is not None and BLOCK_LABEL not in stored["metadata"]["labels"]
    assert len(_released_events(harness, vllm)) == 1


def _quarantined_with_two_patches(seeded: Seeded) -> tuple[Harness, SeededPod]:
    """Triton quarantined with two other policies patched to leave it out: LEAKY_POLICY and a second."""
    running, pods, kubeconfig = seeded
    harness = Harness(running, kubeconfig, Quarantine(patch_other_policies=True))
    triton = pods["triton"]
    harness.put_policy(
        triton.namespace,
        "allow-metrics",
        {"podSelector": {"matchLabels": {"app": "triton"}}, "policyTypes": ["Ingress"], "ingress": [{}]},
    )
    outcome = harness.actions.quarantine(
        harness.pod(triton), shell_alert(triton), "inc-1", "r", dry_run=False
    )
    assert sorted(outcome.patched_policies) == sorted(("allow-metrics", LEAKY_POLICY))
    return harness, triton


def test_a_policy_the_api_refuses_to_restore_does_not_hide_the_ones_restored(seeded: Seeded) -> None:
    """Each policy is restored on its own: one refused (a 403 on its PUT) is said by name, those
    restored before and after it are named (and checked against pods quarantined meanwhile)."""
    harness, triton = _quarantined_with_two_patches(seeded)
    harness.fail(Fault(status=403, method="PUT", plural="networkpolicies", name="allow-metrics", times=3))
    calls = harness.record_calls()
    released = harness.actions.release(triton.namespace, triton.name, by="alice", reason="fp")
    assert released.status is OutcomeStatus.RELEASED, released.detail
    assert released.patched_policies == (LEAKY_POLICY,)
    assert f"restored NetworkPolicies {LEAKY_POLICY}" in released.detail
    assert "could not all be restored (allow-metrics: " in released.detail
    assert not _excluding(harness, triton)
    # The recheck ran for what was restored: the quarantined pods were listed after the restore too.
    listings = [path for verb, path in calls if verb == "GET" and path.endswith("/pods")]
    assert len(listings) == 2


def test_a_restore_whose_answer_was_lost_counts_as_restored(seeded: Seeded) -> None:
    """The PUT went through and its answer was lost: the client's retry meets a conflict, and the
    policy read again carries no exclusion of ours. It was this release's restore, and is named."""
    harness, triton = _quarantined_with_two_patches(seeded)
    replace_policy = harness.gateway.replace_network_policy
    lost: list[str] = []

    def answer_lost(namespace: str, name: str, body: Mapping[str, Any]) -> dict[str, Any]:
        written = replace_policy(namespace, name, body)
        if not lost:
            lost.append(name)
            raise KubeError(409, "the object has been modified", verb="PUT", path=f"/{name}")
        return written

    harness.gateway.replace_network_policy = answer_lost  # type: ignore[method-assign]
    released = harness.actions.release(triton.namespace, triton.name, by="alice", reason="fp")
    assert lost and released.status is OutcomeStatus.RELEASED, released.detail
    assert sorted(released.patched_policies) == sorted(("allow-metrics", LEAKY_POLICY))
    assert "could not all be restored" not in released.detail


def test_a_policy_another_writer_rewrote_meanwhile_is_not_claimed_as_restored(seeded: Seeded) -> None:
    """A conflict that is another writer's (a GitOps sync rewriting the policy without our mark), not
    our own write coming back: the policy is not this release's restore, and not named as one."""
    harness, triton = _quarantined_with_two_patches(seeded)
    replace_policy = harness.gateway.replace_network_policy
    synced: list[str] = []

    def synced_meanwhile(namespace: str, name: str, body: Mapping[str, Any]) -> dict[str, Any]:
        if name == "allow-metrics" and not synced:
            synced.append(name)
            spec = {
                "podSelector": {"matchLabels": {"app": "triton", "synced": "yes"}},
                "policyTypes": ["Ingress"],
            }
            harness.put_policy(namespace, name, {**spec, "ingress": [{}]})
            raise KubeError(409, "the object has been modified", verb="PUT", path=f"/{name}")
        return replace_policy(namespace, name, body)

    harness.gateway.replace_network_policy = synced_meanwhile  # type: ignore[method-assign]
    released = harness.actions.release(triton.namespace, triton.name, by="alice", reason="fp")
    assert synced and released.status is OutcomeStatus.RELEASED, released.detail
    assert released.patched_policies == (LEAKY_POLICY,)
