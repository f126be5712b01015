"""`serving-guard release` without the responder's config refuses a pod blocked under another block
label, found by the block policy the pod owns; a policy the pod owns for other reasons (an
operator's per-pod policy) is not a block, and the release goes ahead (review 47, finding 6). Against
the emulated API server; what the cluster enforces is judged by a reading of the NetworkPolicy spec
that does not use the responder's code."""

from __future__ import annotations

from typing import Any

import pytest

from responder.actions import destination
from responder.actions.events import EventRecorder
from responder.actions.outcome import OutcomeStatus
from responder.actions.quarantine import ClusterActions
from responder.config import BlockDestination, Quarantine
from simulators.cluster_emulator import RunningCluster
from simulators.seed import SeededPod
from tests.responder.spec_reading import OPEN, direction_state
from tests.responder.test_block_destination import egress_alert
from tests.responder.test_quarantine import LABEL, NP, Harness, shell_alert

Seeded = tuple[RunningCluster, dict[str, SeededPod], str]
OTHER_BLOCK_LABEL = "example.com/egress-block"


def _labels(harness: Harness, pod: SeededPod) -> dict[str, str]:
    stored = harness.stored("v1/pods", pod.namespace, pod.name)
    assert stored is not None
    return dict(stored["metadata"].get("labels") or {})


def _state(harness: Harness, pod: SeededPod, direction: str) -> str:
    policies: list[dict[str, Any]] = harness.running.call(
        harness.running.emulator.list_objects, NP, pod.namespace
    )
    return direction_state(policies, _labels(harness, pod), direction)


def _owned(harness: Harness, pod: SeededPod, name: str, spec: dict[str, Any], **labels: str) -> None:
    """A NetworkPolicy owned by ``pod`` (deleted with it), as an operator's per-pod policy is."""
    uid = harness.pod(pod).uid
    manifest = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {
            "name": name,
            "namespace": pod.namespace,
            "labels": labels,
            "ownerReferences": [{"apiVersion": "v1", "kind": "Pod", "name": pod.name, "uid": uid}],
        },
        "spec": spec,
    }
    harness.running.call(harness.running.emulator.put_object, NP, manifest)


def _near_misses(key: str) -> dict[str, tuple[dict[str, Any], dict[str, str]]]:
    """Owned policies that are not a block: (spec, pod labels to add so that it selects the pod)."""
    everywhere = [{"to": [{"ipBlock": {"cidr": "0.0.0.0/0"}}]}]
    return {
        "ingress by app": (
            {
                "podSelector": {"matchLabels": {"app": "vllm"}},
                "policyTypes": ["Ingress"],
                "ingress": [{"ports": [{"port": 9090}]}],
            },
            {},
        ),
        "egress by app": (
            {
                "podSelector": {"matchLabels": {"app": "vllm"}},
                "policyTypes": ["Egress"],
                "egress": everywhere,
            },
            {},
        ),
        "pod key, both ways": (
            {
                "podSelector": {"matchLabels": {"example.com/pod": key}},
                "policyTypes": ["Ingress", "Egress"],
                "egress": everywhere,
            },
            {"example.com/pod": key},
        ),
        "pod key, egress on one port": (
            {
                "podSelector": {"matchLabels": {"example.com/pod": key}},
                "policyTypes": ["Egress"],
                "egress": [{"to": everywhere[0]["to"], "ports": [{"port": 443}]}],
            },
            {"example.com/pod": key},
        ),
    }


@pytest.mark.parametrize(
    "case", ["ingress by app", "egress by app", "pod key, both ways", "pod key, egress on one port"]
)
def test_a_policy_the_pod_owns_that_is_not_a_block_does_not_hold_back_the_release(
    seeded: Seeded, case: str
) -> None:
    running, pods, kubeconfig = seeded
    harness = Harness(running, kubeconfig)
    vllm = pods["vllm"]
    pod = harness.pod(vllm)
    key = destination.pod_key(pod.uid)
    quarantined = harness.actions.quarantine(pod, shell_alert(vllm), "inc-1", "Notice: shell", dry_run=False)
    assert quarantined.status is OutcomeStatus.QUARANTINED, quarantined.detail
    spec, extra = _near_misses(key)[case]
    if extra:
        stored = harness.stored("v1/pods", vllm.namespace, vllm.name)
        assert stored is not None
        stored["metadata"]["labels"].update(extra)
        running.call(running.emulator.put_object, "v1/pods", stored)
    # Named like a block policy, managed-by serving-guard: neither makes it one without the shape.
    name = f"serving-guard-block-{key}" if "pod key" in case else "vllm-0-metrics"
    _owned(harness, vllm, name, spec, **{"app.kubernetes.io/managed-by": "serving-guard"})

    released = harness.actions.release(
        vllm.namespace, vllm.name, by="oncall", reason="investigated", labels_known=False
    )

    assert released.status is OutcomeStatus.RELEASED, released.detail
    assert released.detail == "released by oncall: investigated"
    assert LABEL not in _labels(harness, vllm)
    assert harness.stored(NP, vllm.namespace, name) is not None  # the pod's own policy is left alone
    if case == "ingress by app":
        assert _state(harness, vllm, "egress") == OPEN
        assert _state(harness, vllm, "ingress") == f"partial via {name}"
    else:
        assert _state(harness, vllm, "egress") == f"partial via {name}"


def test_a_block_under_another_label_and_prefix_is_still_found_and_the_release_refused(
    seeded: Seeded,
) -> None:
    running, pods, kubeconfig = seeded
    harness = Harness(running, kubeconfig)
    custom = ClusterActions(
        harness.gateway,
        Quarantine(),
        EventRecorder(harness.gateway),
        blocks=BlockDestination(label=OTHER_BLOCK_LABEL, network_policy_prefix="acme-egress-block"),
    )
    vllm = pods["vllm"]
    blocked = custom.block_destination(harness.pod(vllm), egress_alert(vllm, "203.0.113.7"), dry_run=False)
    assert blocked.status is OutcomeStatus.BLOCKED, blocked.detail
    name = destination.block_policy_name("acme-egress-block", harness.pod(vllm).uid)
    assert _state(harness, vllm, "egress") == f"partial via {name}"
    # An operator's policy the pod owns as well, listed first: it does not stand in for the block.
    _owned(
        harness,
        vllm,
        "a-vllm-0-metrics",
        {"podSelector": {"matchLabels": {"app": "vllm"}}, "policyTypes": ["Ingress"], "ingress": [{}]},
    )

    refused = harness.actions.release(
        vllm.namespace, vllm.name, by="oncall", reason="test", labels_known=False
    )

    assert refused.status is OutcomeStatus.FAILED
    assert refused.detail == (
        f"the pod is blocked under the label {OTHER_BLOCK_LABEL} (NetworkPolicy {name}), not"
        " serving-guard.io/block: it was blocked under another block_destination.label; nothing was"
        " changed: run release with the responder's --config"
    )
    assert OTHER_BLOCK_LABEL in _labels(harness, vllm)
    assert _state(harness, vllm, "egress") == f"partial via {name}"
    released = custom.release(vllm.namespace, vllm.name, by="oncall", reason="test", labels_known=True)
    assert released.status is OutcomeStatus.RELEASED and "lifted its destination block" in released.detail
    assert OTHER_BLOCK_LABEL not in _labels(harness, vllm)


def test_a_release_rerun_without_config_on_a_pod_blocked_since_under_another_label_is_refused(
    seeded: tuple[RunningCluster, dict[str, SeededPod], str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Released once (the record names the default label), then blocked by a config with another
    block label: a rerun without --config must not read "released already" and hide the block
    (review-session-51 L5: the rerun shortcut came before the check for such a block)."""
    running, pods, kubeconfig = seeded
    harness = Harness(running, kubeconfig)
    vllm = pods["vllm"]
    quarantined = harness.actions.quarantine(harness.pod(vllm), shell_alert(vllm), "inc", "r", dry_run=False)
    assert quarantined.status is OutcomeStatus.QUARANTINED, quarantined.detail
    released = harness.actions.release(vllm.namespace, vllm.name, by="alice", reason="fp", labels_known=True)
    assert released.status is OutcomeStatus.RELEASED, released.detail
    other = ClusterActions(
        harness.gateway,
        Quarantine(label="acme.io/isolated"),
        EventRecorder(harness.gateway),
        blocks=BlockDestination(label=OTHER_BLOCK_LABEL, network_policy_prefix="acme-egress-block"),
    )
    blocked = other.block_destination(harness.pod(vllm), egress_alert(vllm, "203.0.113.7"), dry_run=False)
    assert blocked.status is OutcomeStatus.BLOCKED, blocked.detail
    listed: list[str] = []
    list_policies = harness.gateway.list_network_policies

    def counted(namespace: str) -> Any:
        listed.append(namespace)
        return list_policies(namespace)

    monkeypatch.setattr(harness.gateway, "list_network_policies", counted)
    again = harness.actions.release(vllm.namespace, vllm.name, by="bob", reason="x", labels_known=False)
    assert again.status is OutcomeStatus.FAILED and "blocked under the label" in again.detail, again.detail
    assert listed == [vllm.namespace]  # the block looked for once, not again on the refusal's path
    monkeypatch.undo()
    assert OTHER_BLOCK_LABEL in _labels(harness, vllm)
    # Known to be the default config's own (labels known): its release is recorded already, said so.
    rerun = harness.actions.release(vllm.namespace, vllm.name, by="bob", reason="x", labels_known=True)
    assert "is recorded already (by alice at" in rerun.detail, rerun.detail
