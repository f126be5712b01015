"""A release, or the label taken off by hand, landing between the label patch and the policy listing
leaves the pod out of the deny-all: the quarantine reads the pod once more after the leak check and
never reports it QUARANTINED then. A label changed to another cut meanwhile puts the pod in that cut's
deny-all, which must be there and cut it (as listed), or isolation is not proven. Against the
emulated API server over real HTTP."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from responder.actions import netpol
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
    harness.actions.ensure_deny_all(vllm.namespace, Isolation.EGRESS)
    _before_the_listing(harness, lambda: _patch(harness, vllm, {"labels": {LABEL: "true-egress"}}))
    outcome = harness.actions.quarantine(harness.pod(vllm), shell_alert(vllm), "inc", "r", dry_run=False)
    assert outcome.status is OutcomeStatus.LEAKY, outcome.detail
    assert outcome.leaking_directions == ("ingress",) and outcome.cut_only == "egress"
    assert outcome.detail.endswith("it now cuts egress only, so its ingress is not cut")


def test_a_label_narrowed_meanwhile_to_a_cut_whose_deny_all_is_missing_is_not_proven_either(
    harness: Harness, seeded: Seeded
) -> None:
    vllm = seeded[1]["vllm"]
    _before_the_listing(harness, lambda: _patch(harness, vllm, {"labels": {LABEL: "true-egress"}}))
    outcome = harness.actions.quarantine(harness.pod(vllm), shell_alert(vllm), "inc", "r", dry_run=False)
    assert outcome.status is OutcomeStatus.LEAKY, outcome.detail
    assert outcome.detail.endswith(
        "it now cuts egress only, so its ingress is not cut; isolation not proven for its egress cut"
        " either: NetworkPolicy serving-guard-quarantine-egress is gone"
    )


def test_a_label_widened_meanwhile_still_holds(seeded: Seeded) -> None:
    running, pods, kubeconfig = seeded
    harness = Harness(running, kubeconfig, Quarantine(isolate=Isolation.EGRESS))
    vllm = pods["vllm"]
    harness.actions.ensure_deny_all(vllm.namespace, Isolation.BOTH)
    _before_the_listing(harness, lambda: _patch(harness, vllm, {"labels": {LABEL: "true"}}))
    outcome = harness.actions.quarantine(harness.pod(vllm), shell_alert(vllm), "inc", "r", dry_run=False)
    assert outcome.status is OutcomeStatus.QUARANTINED, outcome.detail


# The both cut's deny-all as the pod widened by hand finds it: missing (a cluster without the chart's
# policies), or altered to allow egress.
NOT_CUTTING = {
    "missing": (None, "NetworkPolicy serving-guard-quarantine is gone"),
    "allowing egress": (
        {**netpol.deny_all_spec(LABEL, "true"), "egress": [{}]},
        "NetworkPolicy serving-guard-quarantine no longer cuts egress",
    ),
}


@pytest.mark.parametrize(("spec", "gap"), NOT_CUTTING.values(), ids=NOT_CUTTING.keys())
def test_a_label_widened_meanwhile_to_a_cut_whose_deny_all_does_not_cut_is_not_proven(
    seeded: Seeded, spec: dict[str, Any] | None, gap: str
) -> None:
    running, pods, kubeconfig = seeded
    harness = Harness(running, kubeconfig, Quarantine(isolate=Isolation.EGRESS))
    vllm = pods["vllm"]
    if spec is not None:
        harness.put_policy(vllm.namespace, "serving-guard-quarantine", spec)
    _before_the_listing(harness, lambda: _patch(harness, vllm, {"labels": {LABEL: "true"}}))
    outcome = harness.actions.quarantine(harness.pod(vllm), shell_alert(vllm), "inc", "r", dry_run=False)
    assert outcome.status is OutcomeStatus.LEAKY, outcome.detail
    assert outcome.detail.endswith(
        f"isolation not proven: its quarantine label was changed to the both cut meanwhile, and {gap}"
    )
    # As the recheck words it.
    assert harness.lapse(harness.pod(vllm), cut=Isolation.EGRESS) == gap


def test_a_failed_read_after_the_leak_check_is_not_proven(harness: Harness, seeded: Seeded) -> None:
    vllm = seeded[1]["vllm"]
    fault = Fault(status=500, method="GET", plural="pods", name=vllm.name, times=10, message="etcd down")
    _before_the_listing(harness, lambda: harness.fail(fault))
    outcome = harness.actions.quarantine(harness.pod(vllm), shell_alert(vllm), "inc", "r", dry_run=False)
    assert outcome.status is OutcomeStatus.LEAKY, outcome.detail
    assert "isolation not proven: the pod could not be read again to confirm its label" in outcome.detail
