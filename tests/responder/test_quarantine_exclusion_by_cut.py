"""quarantine.patch_other_policies takes a quarantined pod out of a leaking policy only with the pods
of the cuts that stop every direction that policy governs (`<label> NotIn` their values), so a pod
quarantined in another cut keeps the policy in the direction its cut leaves alone (audit defect 2).
Policies an earlier version patched (`<label> DoesNotExist`) are still recognised and released;
a release restores a policy only when no quarantined pod its exclusion takes out remains.
Isolation is judged by a reading of the NetworkPolicy spec that does not use the responder's code."""

from __future__ import annotations

from typing import Any

import pytest

from responder.actions import netpol
from responder.actions.outcome import OutcomeStatus
from responder.config import Isolation, Quarantine
from simulators.cluster_emulator import RunningCluster
from simulators.seed import LEAKY_POLICY, SeededPod
from tests.responder.exclusions import legacy_patched
from tests.responder.spec_reading import CLOSED, OPEN, direction_state
from tests.responder.test_quarantine import LABEL, NP, Harness, shell_alert

Seeded = tuple[RunningCluster, dict[str, SeededPod], str]
FROM_GATEWAY = [
    {"from": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "gateway"}}}]}
]
TO_DNS = [{"ports": [{"protocol": "UDP", "port": 53}]}]
CUT_VALUES = Quarantine().cut_values()


def _patching(seeded: Seeded) -> Harness:
    running, _, kubeconfig = seeded
    return Harness(running, kubeconfig, Quarantine(patch_other_policies=True))


def _state(harness: Harness, pod: SeededPod, direction: str) -> str:
    policies: list[dict[str, Any]] = harness.running.call(
        harness.running.emulator.list_objects, NP, pod.namespace
    )
    stored = harness.stored("v1/pods", pod.namespace, pod.name)
    assert stored is not None
    return direction_state(policies, stored["metadata"]["labels"], direction)


def _selector(harness: Harness, namespace: str, name: str) -> dict[str, Any]:
    stored = harness.stored(NP, namespace, name)
    assert stored is not None
    selector: dict[str, Any] = stored["spec"]["podSelector"]
    return selector


def _quarantine(harness: Harness, pod: SeededPod, isolate: Isolation) -> Any:
    return harness.actions.quarantine(
        harness.pod(pod), shell_alert(pod), "inc", "r", dry_run=False, isolate=isolate
    )


@pytest.mark.parametrize(
    ("types", "rules", "first_cut", "second_cut", "kept_direction", "values"),
    [
        # Audit s1: an Ingress-only policy for every pod; the egress-cut pod keeps it.
        (
            ["Ingress"],
            {"ingress": FROM_GATEWAY},
            Isolation.EGRESS,
            Isolation.BOTH,
            "ingress",
            ["true", "true-ingress"],
        ),
        # The mirror: an Egress-only policy; the ingress-cut pod keeps it.
        (
            ["Egress"],
            {"egress": TO_DNS},
            Isolation.INGRESS,
            Isolation.EGRESS,
            "egress",
            ["true", "true-egress"],
        ),
    ],
)
def test_a_patch_never_takes_a_pod_of_another_cut_out_of_the_policy(
    seeded: Seeded,
    types: list[str],
    rules: dict[str, Any],
    first_cut: Isolation,
    second_cut: Isolation,
    kept_direction: str,
    values: list[str],
) -> None:
    harness = _patching(seeded)
    pods = seeded[1]
    first, second = pods["torchserve"], pods["vllm"]
    harness.put_policy(first.namespace, "namespace-wide", {"podSelector": {}, "policyTypes": types, **rules})

    earlier = _quarantine(harness, first, first_cut)
    assert earlier.status is OutcomeStatus.QUARANTINED and earlier.patched_policies == (), earlier.detail
    held = _state(harness, first, kept_direction)
    assert held == "partial via namespace-wide"  # restricted by the policy, not open

    outcome = _quarantine(harness, second, second_cut)
    assert outcome.status is OutcomeStatus.QUARANTINED, outcome.detail
    assert outcome.patched_policies == ("namespace-wide",)
    assert _selector(harness, second.namespace, "namespace-wide") == {
        "matchExpressions": [{"key": LABEL, "operator": "NotIn", "values": values}]
    }
    # The pod quarantined before is still governed by the policy in the direction its cut leaves
    # alone (with DoesNotExist it was in no policy of that type: open to all).
    assert _state(harness, first, kept_direction) == held
    assert _state(harness, second, kept_direction) == CLOSED


def test_a_release_restores_a_policy_once_no_pod_it_takes_out_remains(seeded: Seeded) -> None:
    """Restored on the last release of a pod it takes out, while a pod of a cut it leaves in (it
    relies on the policy) stays quarantined."""
    harness = _patching(seeded)
    pods = seeded[1]
    triton, torchserve = pods["triton"], pods["torchserve"]
    namespace = triton.namespace
    harness.put_policy(
        namespace, "namespace-wide", {"podSelector": {}, "policyTypes": ["Ingress"], "ingress": FROM_GATEWAY}
    )
    assert _quarantine(harness, torchserve, Isolation.EGRESS).ok
    quarantined = _quarantine(harness, triton, Isolation.BOTH)
    assert set(quarantined.patched_policies) == {LEAKY_POLICY, "namespace-wide"}

    released = harness.actions.release(namespace, triton.name, by="alice", reason="done")
    assert released.status is OutcomeStatus.RELEASED
    assert released.patched_policies == tuple(sorted([LEAKY_POLICY, "namespace-wide"])), released.detail
    assert "kept exclusion" not in released.detail
    restored = harness.stored(NP, namespace, "namespace-wide")
    assert restored is not None and restored["spec"]["podSelector"] == {}
    assert netpol.PATCHED_ANNOTATION not in (restored["metadata"].get("annotations") or {})
    assert _state(harness, torchserve, "ingress") == "partial via namespace-wide"


def test_a_policy_an_earlier_version_patched_is_recognised_and_released(seeded: Seeded) -> None:
    """`DoesNotExist` takes out every quarantined pod: an egress-cut pod's outcome names the policy
    (its ingress rules no longer apply to it), the release keeps it while any labelled pod remains,
    and restores it after the last; the next patch is by cut."""
    harness = _patching(seeded)
    pods = seeded[1]
    vllm, torchserve = pods["vllm"], pods["torchserve"]
    namespace = vllm.namespace
    policy = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": "namespace-wide", "namespace": namespace},
        "spec": {"podSelector": {}, "policyTypes": ["Ingress"], "ingress": FROM_GATEWAY},
    }
    harness.running.call(harness.running.emulator.put_object, NP, legacy_patched(policy, LABEL))
    assert _quarantine(harness, vllm, Isolation.BOTH).status is OutcomeStatus.QUARANTINED

    egress_cut = _quarantine(harness, torchserve, Isolation.EGRESS)
    assert egress_cut.excluded_beyond == ("namespace-wide",), egress_cut.detail
    assert "namespace-wide still exclude quarantined pods" in egress_cut.detail
    assert _state(harness, torchserve, "ingress") == OPEN  # what the earlier patch did

    kept = harness.actions.release(namespace, vllm.name, by="alice", reason="done")
    assert "kept exclusion on namespace-wide" in kept.detail and kept.patched_policies == ()
    restored = harness.actions.release(namespace, torchserve.name, by="alice", reason="done")
    assert restored.patched_policies == ("namespace-wide",), restored.detail
    assert _selector(harness, namespace, "namespace-wide") == {}

    again = _quarantine(harness, vllm, Isolation.BOTH)
    assert again.patched_policies == ("namespace-wide",)
    assert _selector(harness, namespace, "namespace-wide") == {
        "matchExpressions": [{"key": LABEL, "operator": "NotIn", "values": ["true", "true-ingress"]}]
    }


def test_exclusions_are_told_apart_from_the_owners_expressions() -> None:
    label = LABEL
    owner = {"key": "app", "operator": "NotIn", "values": ["true"]}
    policy = {
        "metadata": {"name": "p"},
        "spec": {"podSelector": {"matchExpressions": [owner]}, "ingress": [{}]},
    }
    patched = netpol.with_exclusion(policy, label, ["true", "true-ingress"])
    assert netpol.is_patched_by_us(patched, label)
    assert netpol.excludes(patched, label, CUT_VALUES, "true-ingress")
    assert not netpol.excludes(patched, label, CUT_VALUES, "true-egress")
    assert not netpol.excludes(patched, label, CUT_VALUES, None)
    # Not ours unless marked so, whatever its expressions say.
    assert not netpol.excludes(policy, label, CUT_VALUES, "true")
    legacy = legacy_patched(policy, label)
    assert netpol.excludes(legacy, label, CUT_VALUES, "true-egress")
    for patched_policy in (patched, legacy):
        assert netpol.without_exclusion(patched_policy, label, CUT_VALUES)["spec"]["podSelector"] == {
            "matchExpressions": [owner]
        }
    # A NotIn on the label with values no cut has is not an exclusion of ours.
    assert not netpol.is_exclusion(
        {"key": label, "operator": "NotIn", "values": ["canary"]}, label, CUT_VALUES
    )
    assert not netpol.is_exclusion({"key": label, "operator": "NotIn", "values": []}, label, CUT_VALUES)


def test_exclusion_values_cover_every_direction_the_policy_governs() -> None:
    settings = Quarantine(label_value="yes", isolate=Isolation.EGRESS)
    assert settings.covering_values(("ingress",)) == ["yes", "yes-ingress"]
    assert settings.covering_values(("egress",)) == ["yes", "yes-egress"]
    assert settings.covering_values(("ingress", "egress")) == ["yes"]
    assert netpol.policy_directions({"egress": [{}]}) == ("ingress", "egress")  # defaulted types
    assert netpol.policy_directions({"policyTypes": ["Egress"]}) == ("egress",)
