"""A cut's deny-all widened by hand beyond the cut's label (emptied: a namespace lockdown; or by the
label's key alone) is never narrowed back to the label, which would give every other pod it holds
its traffic back: left as it is while it still cuts, and said; refused (FAILED, said why) when it no
longer cuts, since neither repair is safe. Against the emulated API server over real HTTP."""

from __future__ import annotations

from typing import Any

import pytest

from responder.actions import netpol
from responder.actions.outcome import OutcomeStatus
from simulators.cluster_emulator import RunningCluster
from simulators.seed import SeededPod
from tests.responder.spec_reading import CLOSED, direction_state
from tests.responder.test_quarantine import LABEL, NP, Harness, shell_alert

Seeded = tuple[RunningCluster, dict[str, SeededPod], str]
DENY_ALL = "serving-guard-quarantine"
WIDER = {
    "emptied": {},
    "by the label's key": {"matchExpressions": [{"key": LABEL, "operator": "Exists"}]},
}


def _state(harness: Harness, pod: SeededPod) -> tuple[str, str]:
    stored = harness.stored("v1/pods", pod.namespace, pod.name)
    assert stored is not None
    policies = harness.running.call(harness.running.emulator.list_objects, NP, pod.namespace)
    labels = stored["metadata"]["labels"]
    return direction_state(policies, labels, "ingress"), direction_state(policies, labels, "egress")


def _widen(harness: Harness, namespace: str, spec: dict[str, Any]) -> None:
    stored = harness.stored(NP, namespace, DENY_ALL)
    assert stored is not None
    stored["spec"] = spec
    harness.running.call(harness.running.emulator.put_object, NP, stored)


@pytest.mark.parametrize("selector", WIDER.values(), ids=WIDER.keys())
def test_a_deny_all_widened_by_hand_is_left_as_it_is(seeded: Seeded, selector: dict[str, Any]) -> None:
    running, pods, kubeconfig = seeded
    harness = Harness(running, kubeconfig)
    vllm, kserve = pods["vllm"], pods["kserve"]
    harness.actions.ensure_deny_all(vllm.namespace)
    _widen(harness, vllm.namespace, {"podSelector": selector, "policyTypes": ["Ingress", "Egress"]})
    before = _state(harness, kserve)

    outcome = harness.actions.quarantine(harness.pod(vllm), shell_alert(vllm), "inc", "r", dry_run=False)

    assert outcome.status is OutcomeStatus.QUARANTINED, outcome.detail
    assert outcome.detail.startswith(
        f"left NetworkPolicy {DENY_ALL} as it is: its podSelector {selector} selects more pods than the"
        " both cut's label"
    )
    stored = harness.stored(NP, vllm.namespace, DENY_ALL)
    assert stored is not None and stored["spec"]["podSelector"] == selector
    assert _state(harness, vllm) == (CLOSED, CLOSED)
    assert _state(harness, kserve) == before  # the other pods keep what the widened policy does to them


def test_a_widened_deny_all_that_no_longer_cuts_is_not_repaired_either(seeded: Seeded) -> None:
    running, pods, kubeconfig = seeded
    harness = Harness(running, kubeconfig)
    vllm = pods["vllm"]
    harness.actions.ensure_deny_all(vllm.namespace)
    opened = {"podSelector": {}, "policyTypes": ["Ingress", "Egress"], "egress": [{}]}
    _widen(harness, vllm.namespace, opened)

    outcome = harness.actions.quarantine(harness.pod(vllm), shell_alert(vllm), "inc", "r", dry_run=False)

    assert outcome.status is OutcomeStatus.FAILED and outcome.labelled, outcome.detail
    assert (
        f"NetworkPolicy {DENY_ALL} selects more pods than {LABEL}=true (its podSelector is {{}}: widened by"
        " hand?) and no longer cuts ingress+egress: it was left as it is" in outcome.detail
    )
    stored = harness.stored(NP, vllm.namespace, DENY_ALL)
    assert stored is not None and stored["spec"] == opened


def test_selects_beyond_is_exact() -> None:
    assert netpol.selects_beyond({}, LABEL, "true")
    assert netpol.selects_beyond(
        {"matchExpressions": [{"key": LABEL, "operator": "In", "values": ["true", "x"]}]}, LABEL, "true"
    )
    assert not netpol.selects_beyond({"matchLabels": {LABEL: "true"}}, LABEL, "true")  # as built
    assert not netpol.selects_beyond({"matchLabels": {LABEL: "true", "app": "a"}}, LABEL, "true")  # narrower
    assert not netpol.selects_beyond(
        {"matchExpressions": [{"key": "app", "operator": "Exists"}]}, LABEL, "true"
    )
    assert not netpol.selects_beyond(
        {"matchExpressions": [{"key": LABEL, "operator": "NotIn", "values": ["true"]}]}, LABEL, "true"
    )
    # Selectors that merely look wider select the label's pods alone: repaired as before.
    assert not netpol.selects_beyond(
        {"matchExpressions": [{"key": LABEL, "operator": "In", "values": ["true"]}]}, LABEL, "true"
    )
    assert not netpol.selects_beyond(
        {"matchLabels": {LABEL: "true"}, "matchExpressions": [{"key": LABEL, "operator": "Exists"}]},
        LABEL,
        "true",
    )
    # Wider: the key with any value, or not the one value.
    assert netpol.selects_beyond({"matchExpressions": [{"key": LABEL, "operator": "Exists"}]}, LABEL, "true")
