"""A cut's deny-all widened by hand beyond the cut's label (emptied: a namespace lockdown; or by the
label's key alone; or changed to another key that selects pods not quarantined, as listed) is
never narrowed back to the label, which would give every other pod it holds its traffic back: left as
it is while it still cuts every pod of the cut, and said; refused (FAILED, said why) when it no
longer cuts or leaves a pod of the cut out, since neither repair is safe. A selector that selects no
other pod is repaired as before. Nor is one narrowed that cuts a pod of another of the config's
cuts in a direction its own cut leaves alone: its own deny-all would not hold it there. Against the
emulated API server over real HTTP."""

from __future__ import annotations

from typing import Any

import pytest

from responder.actions import netpol
from responder.actions.outcome import OutcomeStatus
from responder.config import Isolation, Quarantine
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
# Lockdowns by another key: no superset of the label, but they hold every serving pod of the namespace.
LOCKDOWNS = {
    "app Exists": {"matchExpressions": [{"key": "app", "operator": "Exists"}]},
    "serving Exists": {"matchExpressions": [{"key": "serving-guard.io/serving", "operator": "Exists"}]},
}
# A lockdown of one pod, not the one quarantined.
TRITON_ONLY = {"matchExpressions": [{"key": "app", "operator": "In", "values": ["triton"]}]}


def _state(harness: Harness, pod: SeededPod) -> tuple[str, str]:
    stored = harness.stored("v1/pods", pod.namespace, pod.name)
    assert stored is not None
    policies = harness.running.call(harness.running.emulator.list_objects, NP, pod.namespace)
    labels = stored["metadata"]["labels"]
    return direction_state(policies, labels, "ingress"), direction_state(policies, labels, "egress")


def _widen(
    harness: Harness, namespace: str, spec: dict[str, Any], name: str = DENY_ALL, **labels: str
) -> None:
    stored = harness.stored(NP, namespace, name)
    assert stored is not None
    stored["spec"] = spec
    stored["metadata"]["labels"] = {**stored["metadata"].get("labels", {}), **labels}
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


@pytest.mark.parametrize("selector", LOCKDOWNS.values(), ids=LOCKDOWNS.keys())
def test_a_lockdown_by_another_key_is_left_as_it_is(seeded: Seeded, selector: dict[str, Any]) -> None:
    """Not a superset of the label, but it selects pods nobody quarantined (triton and the others):
    narrowing it to the label would give every one of them its traffic back."""
    running, pods, kubeconfig = seeded
    harness = Harness(running, kubeconfig)
    vllm, triton = pods["vllm"], pods["triton"]
    harness.actions.ensure_deny_all(vllm.namespace)
    _widen(harness, vllm.namespace, {"podSelector": selector, "policyTypes": ["Ingress", "Egress"]})
    before = _state(harness, triton)
    assert before[1] == CLOSED

    outcome = harness.actions.quarantine(harness.pod(vllm), shell_alert(vllm), "inc", "r", dry_run=False)

    assert outcome.status is OutcomeStatus.QUARANTINED, outcome.detail
    assert outcome.detail.startswith(
        f"left NetworkPolicy {DENY_ALL} as it is: its podSelector {selector} selects more pods than the"
        " both cut's label (widened by hand: a lockdown?)"
    )
    assert "helm upgrade" not in outcome.detail  # the responder made it, not the chart
    stored = harness.stored(NP, vllm.namespace, DENY_ALL)
    assert stored is not None and stored["spec"]["podSelector"] == selector
    assert _state(harness, vllm) == (CLOSED, CLOSED)
    assert _state(harness, triton) == before  # still locked down


def test_a_lockdown_the_chart_renders_says_an_upgrade_ends_it(seeded: Seeded) -> None:
    running, pods, kubeconfig = seeded
    harness = Harness(running, kubeconfig)
    vllm = pods["vllm"]
    harness.actions.ensure_deny_all(vllm.namespace)
    lockdown = {"podSelector": LOCKDOWNS["app Exists"], "policyTypes": ["Ingress", "Egress"]}
    _widen(harness, vllm.namespace, lockdown, **{"app.kubernetes.io/managed-by": "Helm"})

    outcome = harness.actions.quarantine(harness.pod(vllm), shell_alert(vllm), "inc", "r", dry_run=False)

    assert outcome.status is OutcomeStatus.QUARANTINED, outcome.detail
    assert (
        "narrowing it would give them their traffic back (Helm manages the policy: the next `helm upgrade`"
        " renders its podSelector back to the label, which does the same)" in outcome.detail
    )


def test_a_selector_that_holds_no_other_pod_is_repaired(seeded: Seeded) -> None:
    """`app: vllm` looks like a lockdown, but no pod of the namespace without the label has it."""
    running, pods, kubeconfig = seeded
    harness = Harness(running, kubeconfig)
    vllm = pods["vllm"]
    harness.actions.ensure_deny_all(vllm.namespace)
    selector = {"matchExpressions": [{"key": "app", "operator": "In", "values": ["vllm"]}]}
    _widen(harness, vllm.namespace, {"podSelector": selector, "policyTypes": ["Ingress", "Egress"]})

    outcome = harness.actions.quarantine(harness.pod(vllm), shell_alert(vllm), "inc", "r", dry_run=False)

    assert outcome.status is OutcomeStatus.QUARANTINED, outcome.detail
    assert outcome.detail == f"repaired altered NetworkPolicy {DENY_ALL}"
    stored = harness.stored(NP, vllm.namespace, DENY_ALL)
    assert stored is not None and stored["spec"] == netpol.deny_all_spec(LABEL, "true")


def test_a_lockdown_that_leaves_out_the_pod_is_not_repaired_either(seeded: Seeded) -> None:
    """It holds triton, not the pod labelled: leaving it leaves the pod uncut, narrowing it frees
    triton. Refused, for a person to decide."""
    running, pods, kubeconfig = seeded
    harness = Harness(running, kubeconfig)
    vllm, triton = pods["vllm"], pods["triton"]
    harness.actions.ensure_deny_all(vllm.namespace)
    lockdown = {"podSelector": TRITON_ONLY, "policyTypes": ["Ingress", "Egress"]}
    _widen(harness, vllm.namespace, lockdown)

    outcome = harness.actions.quarantine(harness.pod(vllm), shell_alert(vllm), "inc", "r", dry_run=False)

    assert outcome.status is OutcomeStatus.FAILED and outcome.labelled, outcome.detail
    assert (
        f"NetworkPolicy {DENY_ALL} selects pods nobody quarantined ({triton.name}) by its podSelector"
        f" {lockdown['podSelector']} (changed by hand, a lockdown?) but not {vllm.name} of the both cut: it"
        " was left as it is" in outcome.detail
    )
    stored = harness.stored(NP, vllm.namespace, DENY_ALL)
    assert stored is not None and stored["spec"] == lockdown
    assert _state(harness, triton)[1] == CLOSED


def test_a_lockdown_that_leaves_out_the_pod_stops_a_widening_before_the_label(seeded: Seeded) -> None:
    """Widening an egress cut to both ensures the both cut's deny-all first: a lockdown there that
    would not hold the pod once labelled is refused before the label, so the pod stays in its egress
    cut rather than leave it for a policy that does not select it."""
    running, pods, kubeconfig = seeded
    harness = Harness(running, kubeconfig, Quarantine(isolate=Isolation.EGRESS))
    vllm = pods["vllm"]
    first = harness.actions.quarantine(harness.pod(vllm), shell_alert(vllm), "inc", "r", dry_run=False)
    assert first.status is OutcomeStatus.QUARANTINED, first.detail
    harness.actions.ensure_deny_all(vllm.namespace, Isolation.BOTH)
    lockdown = {"podSelector": TRITON_ONLY, "policyTypes": ["Ingress", "Egress"]}
    _widen(harness, vllm.namespace, lockdown)

    outcome = harness.actions.quarantine(
        harness.pod(vllm), shell_alert(vllm), "inc", "r", dry_run=False, isolate=Isolation.BOTH
    )

    assert outcome.status is OutcomeStatus.FAILED and not outcome.labelled, outcome.detail
    assert outcome.detail.startswith(f"the pod was not labelled: NetworkPolicy {DENY_ALL} is not ensured:")
    assert f"but not {vllm.name} of the both cut" in outcome.detail  # the pod named, as listed
    stored = harness.stored("v1/pods", vllm.namespace, vllm.name)
    assert stored is not None and stored["metadata"]["labels"][LABEL] == "true-egress"
    assert _state(harness, vllm)[1] == CLOSED  # its egress cut holds


def test_a_lockdown_met_before_and_after_the_label_is_said_once(seeded: Seeded) -> None:
    """A widening from the egress cut ensures the both cut's deny-all before the label and again
    after it: a lockdown that holds the pod is found both times, and said once."""
    running, pods, kubeconfig = seeded
    harness = Harness(running, kubeconfig, Quarantine(isolate=Isolation.EGRESS))
    vllm = pods["vllm"]
    first = harness.actions.quarantine(harness.pod(vllm), shell_alert(vllm), "inc", "r", dry_run=False)
    assert first.status is OutcomeStatus.QUARANTINED, first.detail
    harness.actions.ensure_deny_all(vllm.namespace, Isolation.BOTH)
    _widen(
        harness,
        vllm.namespace,
        {"podSelector": LOCKDOWNS["app Exists"], "policyTypes": ["Ingress", "Egress"]},
    )

    outcome = harness.actions.quarantine(
        harness.pod(vllm), shell_alert(vllm), "inc", "r", dry_run=False, isolate=Isolation.BOTH
    )

    assert outcome.status is OutcomeStatus.QUARANTINED, outcome.detail
    assert outcome.detail.count(f"left NetworkPolicy {DENY_ALL} as it is") == 1, outcome.detail
    assert _state(harness, vllm) == (CLOSED, CLOSED)


# Quarantined pods only: vllm (being quarantined) and torchserve (in the egress cut).
VLLM_AND_TORCHSERVE = {
    "matchExpressions": [{"key": "app", "operator": "In", "values": ["vllm", "torchserve"]}]
}


def _torchserve_in_the_egress_cut(harness: Harness, torchserve: SeededPod) -> None:
    first = harness.actions.quarantine(
        harness.pod(torchserve),
        shell_alert(torchserve),
        "inc-0",
        "r",
        dry_run=False,
        isolate=Isolation.EGRESS,
    )
    assert first.status is OutcomeStatus.QUARANTINED, first.detail
    assert _state(harness, torchserve)[1] == CLOSED


def test_a_deny_all_cutting_another_cuts_pod_beyond_its_cut_is_left_as_it_is(seeded: Seeded) -> None:
    """The both cut's deny-all changed by hand to hold torchserve (egress cut) too, both ways: its
    ingress is cut by this policy alone. Narrowing it to the label would open torchserve's ingress:
    left as it is, and said; both pods stay cut where they were."""
    running, pods, kubeconfig = seeded
    harness = Harness(running, kubeconfig)
    vllm, torchserve = pods["vllm"], pods["torchserve"]
    _torchserve_in_the_egress_cut(harness, torchserve)
    harness.actions.ensure_deny_all(vllm.namespace)
    _widen(
        harness, vllm.namespace, {"podSelector": VLLM_AND_TORCHSERVE, "policyTypes": ["Ingress", "Egress"]}
    )
    assert _state(harness, torchserve) == (CLOSED, CLOSED)

    outcome = harness.actions.quarantine(harness.pod(vllm), shell_alert(vllm), "inc", "r", dry_run=False)

    assert outcome.status is OutcomeStatus.QUARANTINED, outcome.detail
    assert f"left NetworkPolicy {DENY_ALL} as it is" in outcome.detail
    stored = harness.stored(NP, vllm.namespace, DENY_ALL)
    assert stored is not None and stored["spec"]["podSelector"] == VLLM_AND_TORCHSERVE
    assert _state(harness, torchserve) == (CLOSED, CLOSED)
    assert _state(harness, vllm) == (CLOSED, CLOSED)


def test_a_deny_all_cutting_another_cuts_pod_beyond_its_cut_but_not_the_pod_is_refused(
    seeded: Seeded,
) -> None:
    """Holding torchserve both ways but not vllm: narrowing frees torchserve's ingress, leaving it
    leaves vllm uncut. For a person to decide, naming torchserve and why."""
    running, pods, kubeconfig = seeded
    harness = Harness(running, kubeconfig)
    vllm, torchserve = pods["vllm"], pods["torchserve"]
    _torchserve_in_the_egress_cut(harness, torchserve)
    harness.actions.ensure_deny_all(vllm.namespace)
    only_torchserve = {"matchExpressions": [{"key": "app", "operator": "In", "values": ["torchserve"]}]}
    _widen(harness, vllm.namespace, {"podSelector": only_torchserve, "policyTypes": ["Ingress", "Egress"]})

    outcome = harness.actions.quarantine(harness.pod(vllm), shell_alert(vllm), "inc", "r", dry_run=False)

    assert outcome.status is OutcomeStatus.FAILED, outcome.detail
    assert (
        f"NetworkPolicy {DENY_ALL} selects pods of this config's other cuts beyond what their cut stops"
        f" ({torchserve.name}) by its podSelector {only_torchserve} (changed by hand, a lockdown?) but not"
        f" {vllm.name} of the both cut: it was left as it is" in outcome.detail
    )
    assert _state(harness, torchserve) == (CLOSED, CLOSED)


def test_a_deny_all_cutting_another_cuts_pod_only_where_its_cut_does_is_repaired(seeded: Seeded) -> None:
    """Holding torchserve (egress cut) in egress only: its own deny-all holds it there, so the
    repair frees nothing."""
    running, pods, kubeconfig = seeded
    harness = Harness(running, kubeconfig)
    vllm, torchserve = pods["vllm"], pods["torchserve"]
    _torchserve_in_the_egress_cut(harness, torchserve)
    harness.actions.ensure_deny_all(vllm.namespace)
    _widen(harness, vllm.namespace, {"podSelector": VLLM_AND_TORCHSERVE, "policyTypes": ["Egress"]})

    outcome = harness.actions.quarantine(harness.pod(vllm), shell_alert(vllm), "inc", "r", dry_run=False)

    assert outcome.status is OutcomeStatus.QUARANTINED, outcome.detail
    assert outcome.detail == f"repaired altered NetworkPolicy {DENY_ALL}"
    assert _state(harness, torchserve)[1] == CLOSED
    assert _state(harness, vllm) == (CLOSED, CLOSED)


def test_a_deny_all_restricting_another_cuts_pod_beyond_its_cut_is_left_as_it_is(seeded: Seeded) -> None:
    """Not cut but restricted: the both cut's deny-all changed by hand to hold torchserve (egress
    cut) and to let only the monitoring pods reach it. Narrowing it to the label left torchserve's
    ingress open to all (review-session-44 M1): left as it is."""
    running, pods, kubeconfig = seeded
    harness = Harness(running, kubeconfig)
    vllm, torchserve = pods["vllm"], pods["torchserve"]
    _torchserve_in_the_egress_cut(harness, torchserve)
    harness.actions.ensure_deny_all(vllm.namespace)
    monitoring_only = [{"from": [{"podSelector": {"matchLabels": {"app": "monitoring"}}}]}]
    spec = {
        "podSelector": VLLM_AND_TORCHSERVE,
        "policyTypes": ["Ingress", "Egress"],
        "ingress": monitoring_only,
    }
    _widen(harness, vllm.namespace, spec)

    outcome = harness.actions.quarantine(harness.pod(vllm), shell_alert(vllm), "inc", "r", dry_run=False)

    stored = harness.stored(NP, vllm.namespace, DENY_ALL)
    assert stored is not None and stored["spec"] == spec
    assert outcome.status is OutcomeStatus.FAILED, outcome.detail  # it no longer cuts vllm's ingress
    assert (
        f"NetworkPolicy {DENY_ALL} selects pods of this config's other cuts beyond what their cut stops"
        f" ({torchserve.name})" in outcome.detail
    )
    policies = harness.running.call(harness.running.emulator.list_objects, NP, torchserve.namespace)
    stored_torchserve = harness.stored("v1/pods", torchserve.namespace, torchserve.name)
    assert stored_torchserve is not None
    assert netpol.open_to_all(policies, stored_torchserve["metadata"]["labels"]) == set()
