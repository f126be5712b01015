"""A release racing a quarantine (audit defect 4): the release decides from a listing of the
quarantined pods that a patched policy may be restored; a quarantine lands right after that
listing, finds the policy still patched and reports the pod QUARANTINED; then the release restores
the policy. The release lists the pods again after restoring and puts the exclusion back, and says
so. The interleaving is forced by wrapping the releasing gateway's pod listing; the quarantine is
another replica's (its own gateway), as in a cluster."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from responder.actions.outcome import OutcomeStatus
from responder.config import Quarantine
from simulators.cluster_emulator import Fault, RunningCluster
from simulators.seed import LEAKY_POLICY, SeededPod
from tests.responder.spec_reading import CLOSED, direction_state
from tests.responder.test_quarantine import LABEL, NP, Harness, shell_alert

Seeded = tuple[RunningCluster, dict[str, SeededPod], str]
EXCLUSION = {"key": LABEL, "operator": "NotIn", "values": ["true", "true-ingress"]}


def _after_pod_listings(harness: Harness, *meanwhile: Callable[[], None]) -> None:
    """Run ``meanwhile[n]`` right after the n-th pod listing ``harness``'s gateway answers."""
    gateway = harness.gateway
    list_pods = gateway.list_pods
    pending = list(meanwhile)

    def listing(namespace: str, label_selector: str | None = None) -> list[dict[str, Any]]:
        found = list_pods(namespace, label_selector=label_selector)
        if pending:
            pending.pop(0)()
        return found

    gateway.list_pods = listing  # type: ignore[method-assign]


def _second_triton(harness: Harness, pod: SeededPod) -> None:
    """``pod`` becomes a second replica of triton (the leaking policy selects app=triton)."""
    stored = harness.stored("v1/pods", pod.namespace, pod.name)
    assert stored is not None
    stored["metadata"]["labels"]["app"] = "triton"
    harness.running.call(harness.running.emulator.put_object, "v1/pods", stored)


def _setup(seeded: Seeded) -> tuple[Harness, Harness, SeededPod, SeededPod]:
    running, pods, kubeconfig = seeded
    settings = Quarantine(patch_other_policies=True)
    releasing, replica = Harness(running, kubeconfig, settings), Harness(running, kubeconfig, settings)
    triton, second = pods["triton"], pods["torchserve"]
    first = releasing.actions.quarantine(
        releasing.pod(triton), shell_alert(triton), "inc-1", "r", dry_run=False
    )
    assert first.patched_policies == (LEAKY_POLICY,)
    _second_triton(releasing, second)
    return releasing, replica, triton, second


def _ingress_of(harness: Harness, pod: SeededPod) -> str:
    policies: list[dict[str, Any]] = harness.running.call(
        harness.running.emulator.list_objects, NP, pod.namespace
    )
    stored = harness.stored("v1/pods", pod.namespace, pod.name)
    assert stored is not None
    return direction_state(policies, stored["metadata"]["labels"], "ingress")


def test_a_quarantine_landing_during_a_release_gets_its_exclusion_back(seeded: Seeded) -> None:
    releasing, replica, triton, second = _setup(seeded)
    reported: list[Any] = []

    def quarantine_second() -> None:
        outcome = replica.actions.quarantine(
            replica.pod(second), shell_alert(second), "inc-2", "r", dry_run=False
        )
        reported.append(outcome)

    _after_pod_listings(releasing, quarantine_second)
    released = releasing.actions.release(triton.namespace, triton.name, by="oncall", reason="false positive")

    (quarantined,) = reported
    # It read the policy still patched: nothing leaks, nothing for it to patch.
    assert quarantined.status is OutcomeStatus.QUARANTINED and quarantined.patched_policies == ()
    assert released.status is OutcomeStatus.RELEASED
    assert released.patched_policies == ()
    assert (
        f"put the exclusion back on {LEAKY_POLICY} (a pod it takes out was quarantined while they were"
        " being restored)" in released.detail
    ), released.detail
    policy = releasing.stored(NP, triton.namespace, LEAKY_POLICY)
    assert policy is not None and policy["spec"]["podSelector"]["matchExpressions"] == [EXCLUSION]
    # What its QUARANTINED said: per the spec, nothing lets traffic in.
    assert _ingress_of(releasing, second) == CLOSED


def test_an_exclusion_that_cannot_be_put_back_is_said(seeded: Seeded) -> None:
    releasing, replica, triton, second = _setup(seeded)

    def quarantine_second() -> None:
        replica.actions.quarantine(replica.pod(second), shell_alert(second), "inc-2", "r", dry_run=False)

    def refuse_policy_writes() -> None:
        # After the restore (the listing that re-checks it): putting the exclusion back is refused.
        refuse = Fault(403, method="PUT", plural="networkpolicies", name=LEAKY_POLICY, times=3, message="no")
        releasing.running.call(releasing.running.emulator.inject, refuse)

    _after_pod_listings(releasing, quarantine_second, refuse_policy_writes)
    released = releasing.actions.release(triton.namespace, triton.name, by="oncall", reason="false positive")
    assert released.status is OutcomeStatus.RELEASED
    assert (
        f"restored {LEAKY_POLICY} while a pod their exclusion takes out was being quarantined"
        in released.detail
    )
    assert "may be LEAKY through them" in released.detail
    assert _ingress_of(releasing, second) == f"partial via {LEAKY_POLICY}"


def test_without_a_race_the_release_restores_as_before(seeded: Seeded) -> None:
    releasing, _, triton, _ = _setup(seeded)
    released = releasing.actions.release(triton.namespace, triton.name, by="oncall", reason="false positive")
    assert released.patched_policies == (LEAKY_POLICY,) and "put the exclusion back" not in released.detail
    policy = releasing.stored(NP, triton.namespace, LEAKY_POLICY)
    assert policy is not None and "matchExpressions" not in policy["spec"]["podSelector"]


def test_with_patching_turned_off_since_the_release_puts_no_exclusion_back(seeded: Seeded) -> None:
    """quarantine.patchOtherPolicies turned off after a policy was patched: the release still takes
    the exclusion off, and a quarantine landing meanwhile is said exposed rather than excluded again
    (the chart's admission policy refuses adding it without the setting)."""
    running, _, kubeconfig = seeded
    patched, replica, triton, second = _setup(seeded)
    del patched
    releasing = Harness(running, kubeconfig, Quarantine(patch_other_policies=False))
    writes: list[str] = []
    replace = releasing.gateway.replace_network_policy

    def counted(namespace: str, name: str, body: Mapping[str, Any]) -> dict[str, Any]:
        writes.append(name)
        return replace(namespace, name, body)

    releasing.gateway.replace_network_policy = counted  # type: ignore[method-assign]

    def quarantine_second() -> None:
        replica.actions.quarantine(replica.pod(second), shell_alert(second), "inc-2", "r", dry_run=False)

    _after_pod_listings(releasing, quarantine_second)
    released = releasing.actions.release(triton.namespace, triton.name, by="oncall", reason="false positive")
    assert released.status is OutcomeStatus.RELEASED
    assert writes == [LEAKY_POLICY]  # the restore only
    assert (
        f"restored {LEAKY_POLICY} while a pod their exclusion takes out was being quarantined"
        in released.detail
    ), released.detail
    assert _ingress_of(releasing, second) == f"partial via {LEAKY_POLICY}"
