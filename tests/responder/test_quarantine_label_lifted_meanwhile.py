"""A release, or the label taken off by hand, landing between the label patch and the policy listing
leaves the pod out of the deny-all: the quarantine reads the pod once more after the leak check and
never reports it QUARANTINED then. Against the emulated API server over real HTTP."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from responder.actions.outcome import OutcomeStatus
from responder.actions.pod_records import A_QUARANTINED_AT, A_RELEASE_REASON, A_RELEASED_AT, A_RELEASED_BY
from responder.config import Isolation, Quarantine
from simulators.cluster_emulator import Fault, RunningCluster
from simulators.seed import SeededPod
from tests.responder.test_quarantine import LABEL, Harness, shell_alert

Seeded = tuple[RunningCluster, dict[str, SeededPod], str]


@pytest.fixture
def harness(seeded: Seeded) -> Harness:
    running, _, kubeconfig = seeded
    return Harness(running, kubeconfig)


def _before_the_listing(harness: Harness, meanwhile: Callable[[], None]) -> None:
    """``meanwhile`` runs once, just before the quarantine lists the namespace's policies."""
    listing = harness.gateway.list_network_policies
    done: list[bool] = []

    def first_runs_meanwhile(namespace: str) -> list[dict[str, Any]]:
        if not done:
            done.append(True)
            meanwhile()
        return listing(namespace)

    harness.gateway.list_network_policies = first_runs_meanwhile  # type: ignore[method-assign]


def _patch(harness: Harness, pod: SeededPod, metadata: dict[str, Any]) -> None:
    harness.gateway.patch_pod(pod.namespace, pod.name, {"metadata": metadata})


def test_a_label_taken_off_by_hand_meanwhile_is_not_isolated(harness: Harness, seeded: Seeded) -> None:
    vllm = seeded[1]["vllm"]
    _before_the_listing(harness, lambda: _patch(harness, vllm, {"labels": {LABEL: None}}))
    outcome = harness.actions.quarantine(harness.pod(vllm), shell_alert(vllm), "inc", "r", dry_run=False)
    assert outcome.status is OutcomeStatus.FAILED and not outcome.labelled, outcome.detail
    assert outcome.detail.startswith(
        "NOT isolated: the quarantine label was taken off the pod while it was being quarantined, with no"
        " release recorded"
    )


def test_a_release_meanwhile_is_the_persons_word(harness: Harness, seeded: Seeded) -> None:
    vllm = seeded[1]["vllm"]
    release = {
        "labels": {LABEL: None},
        "annotations": {
            A_QUARANTINED_AT: None,
            A_RELEASED_AT: "2099-01-01T00:00:00Z",
            A_RELEASED_BY: "alice",
            A_RELEASE_REASON: "false positive",
        },
    }
    _before_the_listing(harness, lambda: _patch(harness, vllm, release))
    outcome = harness.actions.quarantine(harness.pod(vllm), shell_alert(vllm), "inc", "r", dry_run=False)
    assert outcome.status is OutcomeStatus.WITHHELD, outcome.detail
    assert outcome.detail.startswith("the pod was released by alice at 2099-01-01T00:00:00Z")


def test_a_label_narrowed_meanwhile_is_leaky_in_what_it_no_longer_cuts(
    harness: Harness, seeded: Seeded
) -> None:
    vllm = seeded[1]["vllm"]
    _before_the_listing(harness, lambda: _patch(harness, vllm, {"labels": {LABEL: "true-egress"}}))
    outcome = harness.actions.quarantine(harness.pod(vllm), shell_alert(vllm), "inc", "r", dry_run=False)
    assert outcome.status is OutcomeStatus.LEAKY, outcome.detail
    assert outcome.leaking_directions == ("ingress",) and outcome.cut_only == "egress"
    assert "it now cuts egress only, so its ingress is not cut" in outcome.detail


def test_a_label_widened_meanwhile_still_holds(seeded: Seeded) -> None:
    running, pods, kubeconfig = seeded
    harness = Harness(running, kubeconfig, Quarantine(isolate=Isolation.EGRESS))
    vllm = pods["vllm"]
    harness.actions.ensure_deny_all(vllm.namespace, Isolation.BOTH)
    _before_the_listing(harness, lambda: _patch(harness, vllm, {"labels": {LABEL: "true"}}))
    outcome = harness.actions.quarantine(harness.pod(vllm), shell_alert(vllm), "inc", "r", dry_run=False)
    assert outcome.status is OutcomeStatus.QUARANTINED, outcome.detail


def test_a_failed_read_after_the_leak_check_is_not_proven(harness: Harness, seeded: Seeded) -> None:
    vllm = seeded[1]["vllm"]
    fault = Fault(status=500, method="GET", plural="pods", name=vllm.name, times=10, message="etcd down")
    _before_the_listing(harness, lambda: harness.fail(fault))
    outcome = harness.actions.quarantine(harness.pod(vllm), shell_alert(vllm), "inc", "r", dry_run=False)
    assert outcome.status is OutcomeStatus.LEAKY, outcome.detail
    assert "isolation not proven: the pod could not be read again to confirm its label" in outcome.detail
