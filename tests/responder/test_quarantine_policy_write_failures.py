"""What a quarantine makes of the NetworkPolicy writes and reads that fail after the pod is labelled
(review 75): a deny-all deleted between the read and its repair is read again and created, never
taken for the pod gone; a failure after the label is FAILED with the pod said labelled; a patched
policy that cannot be read back, or recorded on the pod, is said for what it is. Against the
emulated API server over real HTTP."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from responder.actions import netpol
from responder.actions.outcome import OutcomeStatus, failure_outcome
from responder.actions.pod_patch import CONFLICT_RETRIES
from responder.actions.pod_records import A_PATCHED
from responder.cluster.api import KubeError
from responder.config import Isolation, Quarantine
from simulators.cluster_emulator import Fault, RunningCluster
from simulators.seed import LEAKY_POLICY, SeededPod
from tests.responder.kmock_cluster import delete_policy_before_each_put
from tests.responder.test_deny_all_takeover import STALE
from tests.responder.test_quarantine import LABEL, NP, Harness, shell_alert

Seeded = tuple[RunningCluster, dict[str, SeededPod], str]
DENY_ALL = "serving-guard-quarantine"


def _tamper(harness: Harness, namespace: str) -> None:
    """The deny-all is there, opened by hand: the quarantine repairs it with a PUT."""
    harness.actions.ensure_deny_all(namespace)
    opened = harness.gateway.get_network_policy(namespace, DENY_ALL)
    assert opened is not None
    opened["spec"]["ingress"] = [{}]
    harness.gateway.replace_network_policy(namespace, DENY_ALL, opened)


def _labels(harness: Harness, pod: SeededPod) -> dict[str, str]:
    stored = harness.stored("v1/pods", pod.namespace, pod.name)
    assert stored is not None
    return dict(stored["metadata"].get("labels") or {})


def _quarantine(harness: Harness, pod: SeededPod, isolate: Isolation | None = None) -> Any:
    return harness.actions.quarantine(
        harness.pod(pod), shell_alert(pod), "inc-1", "r", dry_run=False, isolate=isolate
    )


def test_a_404_to_a_policy_write_is_not_the_pod_gone() -> None:
    policy = "/apis/networking.k8s.io/v1/namespaces/pods/networkpolicies/serving-guard-quarantine"
    failed = failure_outcome("quarantine", KubeError(404, "not found", verb="PUT", path=policy), 1, 2)
    assert failed.status is OutcomeStatus.FAILED and "HTTP 404" in failed.detail
    pod = "/api/v1/namespaces/models/pods/vllm-0"
    for verb in ("GET", "PATCH"):
        gone = failure_outcome("release", KubeError(404, "not found", verb=verb, path=pod), 1, 2)
        assert gone.status is OutcomeStatus.POD_GONE


def test_a_404_to_the_deny_alls_repair_reads_it_again_and_repairs_it(seeded: Seeded) -> None:
    running, pods, kubeconfig = seeded
    harness = Harness(running, kubeconfig)
    vllm = pods["vllm"]
    _tamper(harness, vllm.namespace)
    harness.fail(Fault(status=404, method="PUT", plural="networkpolicies", message="not found"))
    outcome = _quarantine(harness, vllm)
    assert outcome.status is OutcomeStatus.QUARANTINED, outcome.detail
    assert "repaired altered NetworkPolicy serving-guard-quarantine" in outcome.detail
    assert _labels(harness, vllm)[LABEL] == "true"
    stored = harness.stored(NP, vllm.namespace, DENY_ALL)
    assert stored is not None and stored["spec"] == netpol.deny_all_spec(LABEL, "true")


def test_a_deny_all_deleted_between_its_read_and_its_repair_is_created_again(seeded: Seeded) -> None:
    running, pods, kubeconfig = seeded
    harness = Harness(running, kubeconfig)
    vllm = pods["vllm"]
    _tamper(harness, vllm.namespace)
    delete_policy_before_each_put(harness.gateway)
    outcome = _quarantine(harness, vllm)
    assert outcome.status is OutcomeStatus.QUARANTINED, outcome.detail
    assert "created NetworkPolicy serving-guard-quarantine" in outcome.detail
    assert outcome.labelled
    stored = harness.stored(NP, vllm.namespace, DENY_ALL)
    assert stored is not None and stored["spec"] == netpol.deny_all_spec(LABEL, "true")
    assert "Quarantined" in [e["reason"] for e in harness.events(vllm.namespace)]


def test_a_deny_all_deleted_and_not_created_again_leaves_a_failure_that_says_the_pod_is_labelled(
    seeded: Seeded,
) -> None:
    running, pods, kubeconfig = seeded
    harness = Harness(running, kubeconfig)
    vllm = pods["vllm"]
    _tamper(harness, vllm.namespace)
    delete_policy_before_each_put(harness.gateway)
    harness.fail(Fault(status=403, method="POST", plural="networkpolicies", message="forbidden"))
    outcome = _quarantine(harness, vllm)
    assert outcome.status is OutcomeStatus.FAILED
    assert outcome.detail.startswith(
        "the pod is labelled, but NetworkPolicy serving-guard-quarantine is not ensured: forbidden by RBAC"
    )
    # Counted against the circuit breaker, decided again on a repeat, and told.
    assert outcome.labelled
    assert _labels(harness, vllm)[LABEL] == "true"
    assert harness.stored(NP, vllm.namespace, DENY_ALL) is None
    assert "QuarantineFailed" in [e["reason"] for e in harness.events(vllm.namespace)]


def test_a_patched_policy_not_recorded_on_the_pod_leaves_the_proof_standing(seeded: Seeded) -> None:
    running, pods, kubeconfig = seeded
    harness = Harness(running, kubeconfig, Quarantine(patch_other_policies=True))
    triton = pods["triton"]
    patch_pod = harness.gateway.patch_pod

    def refusing_the_record(namespace: str, name: str, patch: Mapping[str, Any]) -> dict[str, Any]:
        if A_PATCHED in (patch.get("metadata") or {}).get("annotations", {}):
            raise KubeError(503, "apiserver overloaded", verb="PATCH", path="/api/v1/namespaces/x/pods/y")
        return patch_pod(namespace, name, patch)

    harness.gateway.patch_pod = refusing_the_record  # type: ignore[method-assign]
    outcome = _quarantine(harness, triton)
    assert outcome.status is OutcomeStatus.QUARANTINED, outcome.detail
    assert outcome.patched_policies == (LEAKY_POLICY,)
    assert "could not be checked" not in outcome.detail
    assert "the NetworkPolicies it patched could not be recorded on the pod" in outcome.detail
    # The release finds the policy by its mark all the same.
    del harness.gateway.patch_pod  # the gateway's own again
    released = harness.actions.release(triton.namespace, triton.name, by="alice", reason="fp")
    assert released.status is OutcomeStatus.RELEASED and released.patched_policies == (LEAKY_POLICY,)


def test_patched_policies_not_read_back_are_kept_and_recorded(seeded: Seeded) -> None:
    running, pods, kubeconfig = seeded
    harness = Harness(running, kubeconfig, Quarantine(patch_other_policies=True))
    triton = pods["triton"]
    listings = 0
    list_policies = harness.gateway.list_network_policies

    def failing_the_read_back(namespace: str) -> list[dict[str, Any]]:
        nonlocal listings
        listings += 1
        # The first read ensures the deny-all before the label (patch_other_policies), the second is
        # the leak check's, the third the proof of the patches.
        if listings == 3:
            raise KubeError(503, "apiserver overloaded", verb="GET", path="/apis/networking.k8s.io/v1")
        return list_policies(namespace)

    harness.gateway.list_network_policies = failing_the_read_back  # type: ignore[method-assign]
    outcome = _quarantine(harness, triton)
    assert outcome.status is OutcomeStatus.LEAKY
    assert outcome.patched_policies == (LEAKY_POLICY,)
    assert "the NetworkPolicies patched to exclude it could not be read back" in outcome.detail
    stored = harness.stored("v1/pods", triton.namespace, triton.name)
    assert stored is not None and stored["metadata"]["annotations"][A_PATCHED] == LEAKY_POLICY


def test_a_listing_that_fails_does_not_create_a_deny_all_beside_another_configs(seeded: Seeded) -> None:
    """Listing the policies fails after the label: the deny-all is ensured from its own read, and
    not created where another cut's deny-all selects another config's label (as when listed)."""
    running, pods, kubeconfig = seeded
    harness = Harness(running, kubeconfig)
    vllm = pods["vllm"]
    egress = f"{DENY_ALL}-egress"
    theirs = netpol.deny_all_policy(vllm.namespace, egress, STALE, "true-egress", ("egress",))
    harness.running.call(harness.running.emulator.put_object, NP, theirs)
    harness.fail(Fault(status=403, method="GET", plural="networkpolicies", action="list"))
    outcome = _quarantine(harness, vllm, Isolation.BOTH)
    assert outcome.status is OutcomeStatus.FAILED and outcome.labelled
    assert (
        f"NetworkPolicy {DENY_ALL} was not created: NetworkPolicy {egress} selects {STALE}=true-egress"
        in outcome.detail
    )
    assert harness.stored(NP, vllm.namespace, DENY_ALL) is None


def test_a_deny_all_whose_creation_conflicts_on_every_try_says_it_was_being_created(seeded: Seeded) -> None:
    """Not 'repaired': no deny-all was there to repair (each create met a 409, and each read after
    it found none)."""
    running, pods, kubeconfig = seeded
    harness = Harness(running, kubeconfig)
    vllm = pods["vllm"]
    assert harness.stored(NP, vllm.namespace, DENY_ALL) is None
    harness.fail(
        Fault(status=409, method="POST", plural="networkpolicies", times=CONFLICT_RETRIES, message="conflict")
    )
    outcome = _quarantine(harness, vllm)
    assert outcome.status is OutcomeStatus.FAILED
    assert f"NetworkPolicy {DENY_ALL} kept changing while being created" in outcome.detail, outcome.detail
    assert "repaired" not in outcome.detail
