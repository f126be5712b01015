"""A deny-all that selects by another config's quarantine label is never repaired to this config's
(review 47, finding 2): a stale copy of the config fails at its first quarantine instead of
retargeting the namespace's deny-all (after which the responder in force could quarantine nothing
there), and the responder in force, finding a deny-all already retargeted, fails without calling
itself stale: it says what each selects, who relies on the policy and how to release them. A deny-all
altered by hand under this config's own label (selector emptied or narrowed, types narrowed, rules
added) is still repaired. Against the emulated API server; what the cluster enforces is judged by a
reading of the NetworkPolicy spec that does not use the responder's code."""

from __future__ import annotations

from typing import Any

import pytest

from responder.actions import netpol
from responder.actions.events import EventRecorder
from responder.actions.lockdown import SHOWN_PODS
from responder.actions.outcome import OutcomeStatus
from responder.actions.quarantine import ClusterActions
from responder.config import Isolation, Quarantine
from simulators.cluster_emulator import RunningCluster
from simulators.seed import SeededPod
from tests.responder.spec_reading import CLOSED, OPEN, direction_state
from tests.responder.test_quarantine import LABEL, NP, Harness, shell_alert

Seeded = tuple[RunningCluster, dict[str, SeededPod], str]
DENY_ALL = "serving-guard-quarantine"
STALE = "example.com/isolated"
NAMESPACE = "ml-serving"
# What the chart puts on the deny-all it renders (templates/quarantine-networkpolicies.yaml).
CHART_METADATA = {
    "labels": {
        "app.kubernetes.io/managed-by": "Helm",
        "app.kubernetes.io/component": "quarantine",
        "app.kubernetes.io/part-of": "serving-guard",
    },
    "annotations": {
        "helm.sh/resource-policy": "keep",
        "meta.helm.sh/release-name": "serving-guard",
        "meta.helm.sh/release-namespace": "falco",
    },
}


def _put(harness: Harness, name: str, spec: dict[str, Any], metadata: dict[str, Any] | None = None) -> None:
    manifest = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": name, "namespace": NAMESPACE, **(metadata or {})},
        "spec": spec,
    }
    harness.running.call(harness.running.emulator.put_object, NP, manifest)


def _stored_spec(harness: Harness, name: str = DENY_ALL) -> dict[str, Any]:
    stored = harness.stored(NP, NAMESPACE, name)
    assert stored is not None
    spec: dict[str, Any] = stored["spec"]
    return spec


def _labels(harness: Harness, pod: SeededPod) -> dict[str, str]:
    stored = harness.stored("v1/pods", pod.namespace, pod.name)
    assert stored is not None
    return dict(stored["metadata"].get("labels") or {})


def _state(harness: Harness, pod: SeededPod) -> tuple[str, str]:
    """(ingress, egress) as the cluster enforces them for the pod, as stored now."""
    policies: list[dict[str, Any]] = harness.running.call(
        harness.running.emulator.list_objects, NP, pod.namespace
    )
    labels = _labels(harness, pod)
    return direction_state(policies, labels, "ingress"), direction_state(policies, labels, "egress")


def _label_by_hand(harness: Harness, pod: SeededPod, key: str, value: str) -> None:
    """Labelled and recorded as quarantined, as a quarantine under ``key`` leaves a pod."""
    stored = harness.stored("v1/pods", pod.namespace, pod.name)
    assert stored is not None
    stored["metadata"]["labels"][key] = value
    annotations = stored["metadata"].setdefault("annotations", {})
    annotations["serving-guard.io/quarantined-at"] = "2026-12-01T10:00:00Z"
    harness.running.call(harness.running.emulator.put_object, "v1/pods", stored)


def _actions(harness: Harness, settings: Quarantine) -> ClusterActions:
    return ClusterActions(harness.gateway, settings, EventRecorder(harness.gateway))


def _quarantine(
    actions: ClusterActions, harness: Harness, pod: SeededPod, isolate: Isolation | None = None
) -> Any:
    return actions.quarantine(
        harness.pod(pod), shell_alert(pod), "inc-1", "Notice: shell", dry_run=False, isolate=isolate
    )


# -- a stale copy meets the deny-all of the config in force -----------------------------------------


@pytest.mark.parametrize(
    ("isolate", "name", "theirs", "ours"),
    [
        (Isolation.BOTH, DENY_ALL, f"{LABEL}=true", f"{STALE}=true"),
        (Isolation.EGRESS, f"{DENY_ALL}-egress", f"{LABEL}=true-egress", f"{STALE}=true-egress"),
    ],
)
def test_a_stale_copy_fails_at_its_first_quarantine_and_leaves_the_deny_all_to_the_config_in_force(
    seeded: Seeded, isolate: Isolation, name: str, theirs: str, ours: str
) -> None:
    """The chart's deny-all, with no pod quarantined: the stale copy used to retarget it (nobody was
    stranded), after which the responder failed every quarantine in the namespace."""
    running, pods, kubeconfig = seeded
    harness = Harness(running, kubeconfig)
    vllm, torchserve = pods["vllm"], pods["torchserve"]
    chart = netpol.deny_all_spec(LABEL, theirs.split("=")[1], isolate.directions)
    _put(harness, name, chart, CHART_METADATA)

    stale = _quarantine(_actions(harness, Quarantine(label=STALE)), harness, vllm, isolate)

    assert stale.status is OutcomeStatus.FAILED and stale.labelled
    assert stale.detail == (
        f"the pod is labelled, but NetworkPolicy {name} is not ensured: NetworkPolicy {name} selects"
        f" {theirs}, but this config's label for its {isolate.value} cut is {ours}: one of the two"
        " configs is stale (Helm manages the policy: `helm get values serving-guard -n falco` shows"
        f" the label of the responder it deploys); the policy was left as it is. No pod is labelled"
        f" {theirs}. If this config is the one in force, set the policy's podSelector to {ours}"
        f" (kubectl -n {NAMESPACE} edit networkpolicy {name}). If the config whose label is {theirs}"
        " is the one in force, act with it, not this one."
    )
    assert _stored_spec(harness, name) == chart
    # The stale quarantine isolated nothing, and says so (FAILED, the pod labelled).
    assert _state(harness, vllm) == (OPEN, OPEN)

    # The responder in force quarantines in the namespace as before.
    inforce = _quarantine(harness.actions, harness, torchserve, isolate)
    assert inforce.status is OutcomeStatus.QUARANTINED, inforce.detail
    assert inforce.detail == ""  # the policy was as built: nothing created, nothing repaired
    expected = (CLOSED, CLOSED) if isolate is Isolation.BOTH else (OPEN, CLOSED)
    assert _state(harness, torchserve) == expected
    assert harness.lapse(harness.pod(torchserve), cut=isolate) is None


def test_a_stale_copy_fails_where_pods_are_quarantined_and_names_them_without_calling_either_stale(
    seeded: Seeded,
) -> None:
    running, pods, kubeconfig = seeded
    harness = Harness(running, kubeconfig)
    kserve, vllm = pods["kserve"], pods["vllm"]
    first = _quarantine(harness.actions, harness, kserve)
    assert first.status is OutcomeStatus.QUARANTINED, first.detail

    stale = _quarantine(_actions(harness, Quarantine(label=STALE)), harness, vllm)

    assert stale.status is OutcomeStatus.FAILED
    assert (
        f"NetworkPolicy {DENY_ALL} selects {LABEL}=true, but this config's label for its both cut is"
        f" {STALE}=true: one of the two configs is stale; the policy was left as it is. 1 pod relies on"
        " it. If this config is the one in force, release it with the config whose label is"
        f" {LABEL}=true: serving-guard release --namespace {NAMESPACE} {kserve.name} --reason"
        " '<why it is safe>' --by '<you>' --config <that config>; then set the policy's podSelector"
        f" to {STALE}=true" in stale.detail
    )
    assert "not the one in force" not in stale.detail
    assert _stored_spec(harness) == netpol.deny_all_spec(LABEL, "true")
    assert _state(harness, kserve) == (CLOSED, CLOSED)
    assert harness.lapse(harness.pod(kserve), cut=Isolation.BOTH) is None


# -- the responder in force meets a deny-all already retargeted ---------------------------------------


def test_the_config_in_force_meeting_a_retargeted_deny_all_names_who_relies_on_it_and_recovers(
    seeded: Seeded,
) -> None:
    """As an earlier version's guard left it: the deny-all retargeted by a stale copy, vllm
    quarantined under it. The responder fails the quarantine, keeps vllm isolated, and its advice,
    followed, lets it quarantine again."""
    running, pods, kubeconfig = seeded
    harness = Harness(running, kubeconfig)
    vllm, triton, torchserve = pods["vllm"], pods["triton"], pods["torchserve"]
    retargeted = netpol.deny_all_spec(STALE, "true")
    _put(harness, DENY_ALL, retargeted, CHART_METADATA)
    _label_by_hand(harness, vllm, STALE, "true")
    assert _state(harness, vllm) == (CLOSED, CLOSED)

    failed = _quarantine(harness.actions, harness, triton)

    assert failed.status is OutcomeStatus.FAILED and failed.labelled
    assert failed.detail == (
        f"the pod is labelled, but NetworkPolicy {DENY_ALL} is not ensured: NetworkPolicy {DENY_ALL}"
        f" selects {STALE}=true, but this config's label for its both cut is {LABEL}=true: one of the"
        " two configs is stale (Helm manages the policy: `helm get values serving-guard -n falco` shows"
        " the label of the responder it deploys); the policy was left as it is. 1 pod relies on it. If"
        f" this config is the one in force, release it with the config whose label is {STALE}=true:"
        f" serving-guard release --namespace {NAMESPACE} vllm-0 --reason '<why it is safe>' --by"
        f" '<you>' --config <that config>; then set the policy's podSelector to {LABEL}=true (kubectl"
        f" -n {NAMESPACE} edit networkpolicy {DENY_ALL}). If the config whose label is {STALE}=true is"
        " the one in force, act with it, not this one."
    )
    assert "use the responder's own config" not in failed.detail
    assert _stored_spec(harness) == retargeted
    assert _state(harness, vllm) == (CLOSED, CLOSED)  # not released by a repair
    assert _state(harness, triton) == ("partial via allow-gateway-to-triton", OPEN)

    # The advice: release vllm with the config it was quarantined under, then set the selector back.
    released = _actions(harness, Quarantine(label=STALE)).release(
        NAMESPACE, vllm.name, by="oncall", reason="wrong config", labels_known=True
    )
    assert released.status is OutcomeStatus.RELEASED, released.detail
    assert STALE not in _labels(harness, vllm)
    again = _quarantine(harness.actions, harness, torchserve)
    assert again.status is OutcomeStatus.FAILED  # no pod relies on it, and still it is not taken over
    assert f"No pod is labelled {STALE}=true." in again.detail
    _put(harness, DENY_ALL, netpol.deny_all_spec(LABEL, "true"), CHART_METADATA)
    recovered = _quarantine(harness.actions, harness, torchserve)
    assert recovered.status is OutcomeStatus.QUARANTINED, recovered.detail
    assert _state(harness, torchserve) == (CLOSED, CLOSED)
    # triton, labelled by the failed quarantine, is cut now too (its ingress is left to the gateway's policy).
    assert _state(harness, triton) == ("partial via allow-gateway-to-triton", CLOSED)


def test_many_pods_relying_on_another_configs_deny_all_are_counted_and_listed_by_a_command(
    seeded: Seeded,
) -> None:
    running, pods, kubeconfig = seeded
    harness = Harness(running, kubeconfig)
    _put(harness, DENY_ALL, netpol.deny_all_spec(LABEL, "isolated"))  # no chart labels: no Helm hint
    relying = [pods[key] for key in ("vllm", "kserve", "embeddings", "torchserve")]
    for pod in relying:
        _label_by_hand(harness, pod, LABEL, "isolated")

    failed = _quarantine(harness.actions, harness, pods["triton"])

    assert failed.status is OutcomeStatus.FAILED
    first = sorted(pod.name for pod in relying)[:3]
    assert (
        f"NetworkPolicy {DENY_ALL} selects {LABEL}=isolated, but this config's label for its both cut"
        f" is {LABEL}=true: one of the two configs is stale; the policy was left as it is. 4 pods rely"
        f" on it. If this config is the one in force, release them with the config whose label is"
        f" {LABEL}=isolated: serving-guard release --namespace {NAMESPACE} {' '.join(first)} --reason"
        " '<why it is safe>' --by '<you>' --config <that config> (and 1 more: kubectl -n"
        f" {NAMESPACE} get pods -l {LABEL}=isolated); then set the policy's podSelector to {LABEL}=true"
        in failed.detail
    )
    assert all(_state(harness, pod) == (CLOSED, CLOSED) for pod in relying)


# -- altered by hand under this config's own label: still repaired -----------------------------------


@pytest.mark.parametrize(
    "altered",
    [
        # (A selector widened beyond the label, emptied or by the label's key alone, is left as it
        # is: tests/responder/test_netpol_label_opens.py.)
        {
            "podSelector": {"matchLabels": {LABEL: "true", "app": "sklearn-iris"}},
            "policyTypes": ["Ingress", "Egress"],
        },
        {"podSelector": {"matchLabels": {LABEL: "true"}}, "policyTypes": ["Ingress"]},
        {
            "podSelector": {"matchLabels": {LABEL: "true"}},
            "policyTypes": ["Ingress", "Egress"],
            "egress": [{}],
        },
    ],
    ids=["selector narrowed", "type dropped", "rule added"],
)
def test_a_deny_all_altered_by_hand_under_this_configs_label_is_repaired(
    seeded: Seeded, altered: dict[str, Any]
) -> None:
    """With a pod in another of this config's cuts in the namespace (egress: it relies on its own
    cut's deny-all, not on this one), which an earlier guard counted as stranded by the repair."""
    running, pods, kubeconfig = seeded
    harness = Harness(running, kubeconfig)
    kserve, torchserve, vllm = pods["kserve"], pods["torchserve"], pods["vllm"]
    egress = _quarantine(harness.actions, harness, torchserve, Isolation.EGRESS)
    assert egress.status is OutcomeStatus.QUARANTINED, egress.detail
    assert _quarantine(harness.actions, harness, kserve).status is OutcomeStatus.QUARANTINED
    _put(harness, DENY_ALL, altered, CHART_METADATA)

    outcome = _quarantine(harness.actions, harness, vllm)

    assert outcome.status is OutcomeStatus.QUARANTINED, outcome.detail
    assert outcome.detail == f"repaired altered NetworkPolicy {DENY_ALL}"
    assert _stored_spec(harness) == netpol.deny_all_spec(LABEL, "true")
    assert _state(harness, vllm) == _state(harness, kserve) == (CLOSED, CLOSED)
    assert _state(harness, torchserve) == (OPEN, CLOSED)
    assert _state(harness, pods["embeddings"]) == (OPEN, OPEN)  # an emptied selector no longer cuts it


def test_an_altered_deny_all_that_pods_under_another_label_rely_on_is_not_repaired(seeded: Seeded) -> None:
    running, pods, kubeconfig = seeded
    harness = Harness(running, kubeconfig)
    vllm, triton = pods["vllm"], pods["triton"]
    # Altered by hand to hold only pods quarantined under another label (one holding pods nobody
    # quarantined is a lockdown, left as it is: below).
    by_stale = {"matchExpressions": [{"key": STALE, "operator": "Exists"}]}
    _put(harness, DENY_ALL, {"podSelector": by_stale, "policyTypes": ["Ingress", "Egress"]})
    _label_by_hand(harness, vllm, STALE, "true")

    failed = _quarantine(harness.actions, harness, triton)

    assert failed.status is OutcomeStatus.FAILED
    assert failed.detail == (
        f"the pod is labelled, but NetworkPolicy {DENY_ALL} is not ensured: NetworkPolicy {DENY_ALL}"
        f" selects pods by {by_stale}, and 1 pod quarantined under another label relies on it (vllm-0):"
        f" repairing it to this config's {LABEL}=true (both cut) would release it; nothing was"
        " changed to the policy: release it with the config it was quarantined under, or put the"
        f" policy's podSelector back to {LABEL}=true by hand"
    )
    assert _state(harness, vllm) == (CLOSED, CLOSED)


def test_a_lockdown_holding_pods_quarantined_under_another_label_and_others_is_left_as_it_is(
    seeded: Seeded,
) -> None:
    """`app Exists` holds every serving pod: putting its podSelector back to the label (the advice
    for a deny-all only quarantined pods rely on) would free them all. Left as it is: it still cuts
    the pod being quarantined, and every pod it held stays cut."""
    running, pods, kubeconfig = seeded
    harness = Harness(running, kubeconfig)
    vllm, triton = pods["vllm"], pods["triton"]
    by_app = {"matchExpressions": [{"key": "app", "operator": "Exists"}]}
    _put(harness, DENY_ALL, {"podSelector": by_app, "policyTypes": ["Ingress", "Egress"]})
    _label_by_hand(harness, vllm, STALE, "true")

    outcome = _quarantine(harness.actions, harness, triton)

    assert outcome.status is not OutcomeStatus.FAILED, outcome.detail
    assert (
        f"left NetworkPolicy {DENY_ALL} as it is: its podSelector {by_app} selects more pods"
        in outcome.detail
    )
    assert "put the policy's podSelector back" not in outcome.detail
    assert _stored_spec(harness)["podSelector"] == by_app
    held = {key: pod for key, pod in pods.items() if pod.namespace == NAMESPACE and key != "triton"}
    assert len(held) >= 4
    assert {key: _state(harness, pod) for key, pod in held.items()} == {key: (CLOSED, CLOSED) for key in held}
    assert _state(harness, triton)[1] == CLOSED  # its ingress: the gateway's policy (LEAKY, said)


# -- a lockdown by one matchLabels of another label reads like another config's deny-all (review 43 L3)

BY_APP_VLLM = {"matchLabels": {"app": "vllm"}}


def test_a_deny_all_by_another_label_that_holds_the_pod_is_left_as_it_is(seeded: Seeded) -> None:
    """`app: vllm`, and vllm-0, whom nobody quarantined, is being quarantined: a lockdown of it, or
    another config's deny-all whose label someone put on it by hand. Either way it cuts the pod and
    is never narrowed (a narrowing would retarget the other config's): left as it is, both readings
    said."""
    running, pods, kubeconfig = seeded
    harness = Harness(running, kubeconfig)
    vllm = pods["vllm"]
    _put(harness, DENY_ALL, {"podSelector": BY_APP_VLLM, "policyTypes": ["Ingress", "Egress"]})

    outcome = _quarantine(harness.actions, harness, vllm)

    assert outcome.status is OutcomeStatus.QUARANTINED, outcome.detail
    assert outcome.detail == (
        f"left NetworkPolicy {DENY_ALL} as it is: it selects app=vllm, not the both cut's label: another"
        " config's deny-all (one of the two configs is stale) or a lockdown made by hand; it cuts this"
        " pod all the same"
    )
    assert _stored_spec(harness)["podSelector"] == BY_APP_VLLM
    assert _state(harness, vllm) == (CLOSED, CLOSED)


def test_a_deny_all_by_another_label_that_leaves_out_the_pod_fails_without_advice_that_frees_it(
    seeded: Seeded,
) -> None:
    """Quarantining triton-0: the policy holds vllm-0, whom nobody quarantined. Read only as another
    config's deny-all, the failure told to release vllm-0 "with the config whose label is app=vllm"
    and then set the podSelector to the label, which would give vllm-0 its traffic back. Both
    readings are said, no such advice: left as it is, for a person to fix, vllm-0 still cut."""
    running, pods, kubeconfig = seeded
    harness = Harness(running, kubeconfig)
    vllm, triton = pods["vllm"], pods["triton"]
    _put(harness, DENY_ALL, {"podSelector": BY_APP_VLLM, "policyTypes": ["Ingress", "Egress"]})

    failed = _quarantine(harness.actions, harness, triton)

    assert failed.status is OutcomeStatus.FAILED
    assert (
        f"NetworkPolicy {DENY_ALL} selects app=vllm, not this config's {LABEL}=true (both cut): another"
        " config's deny-all (one of the two configs is stale) or a lockdown made by hand; it holds pods"
        f" nobody quarantined ({vllm.name}) but not {triton.name} of the both cut: it was left as it is"
        " (narrowing it to the label would free the other pods it selects); fix it by hand" in failed.detail
    )
    assert "release" not in failed.detail and "set the policy's podSelector" not in failed.detail
    assert _stored_spec(harness)["podSelector"] == BY_APP_VLLM
    assert _state(harness, vllm) == (CLOSED, CLOSED)


def test_a_lockdown_of_a_pod_whose_quarantine_label_was_taken_off_by_hand_is_never_advised_away(
    seeded: Seeded,
) -> None:
    """vllm-0 was quarantined by this config; on-call took the label off by hand and locked it down by
    `app: vllm` on the deny-all instead. Its record stays, but names the label it no longer carries:
    nobody's quarantine holds it but the lockdown. Read as quarantined under another label, the
    failure told to release it with another config and put the podSelector back, which frees it
    (review-session-44 L4); read as what it is, the lockdown is left as it is, without that advice."""
    running, pods, kubeconfig = seeded
    harness = Harness(running, kubeconfig)
    vllm, triton = pods["vllm"], pods["triton"]
    assert _quarantine(harness.actions, harness, vllm).status is OutcomeStatus.QUARANTINED
    stored = harness.stored("v1/pods", vllm.namespace, vllm.name)
    assert stored is not None
    assert stored["metadata"]["annotations"]["serving-guard.io/quarantine-labels"] == f"{LABEL}=true"
    del stored["metadata"]["labels"][LABEL]
    harness.running.call(harness.running.emulator.put_object, "v1/pods", stored)
    _put(harness, DENY_ALL, {"podSelector": BY_APP_VLLM, "policyTypes": ["Ingress", "Egress"]})

    failed = _quarantine(harness.actions, harness, triton)

    assert failed.status is OutcomeStatus.FAILED
    assert (
        f"it holds pods nobody quarantined ({vllm.name}) but not {triton.name} of the both cut: it was left"
        " as it is (narrowing it to the label would free the other pods it selects); fix it by hand"
    ) in failed.detail
    assert "release" not in failed.detail and "set the policy's podSelector" not in failed.detail
    assert _stored_spec(harness)["podSelector"] == BY_APP_VLLM
    assert _state(harness, vllm) == (CLOSED, CLOSED)


def test_a_pod_still_carrying_the_label_its_record_names_is_quarantined_under_it(seeded: Seeded) -> None:
    """The record of another config's quarantine names that config's label, which the pod carries:
    it relies on the altered deny-all, which is not repaired (as a record naming no label)."""
    running, pods, kubeconfig = seeded
    harness = Harness(running, kubeconfig)
    vllm, triton = pods["vllm"], pods["triton"]
    by_stale = {"matchExpressions": [{"key": STALE, "operator": "Exists"}]}
    _put(harness, DENY_ALL, {"podSelector": by_stale, "policyTypes": ["Ingress", "Egress"]})
    _label_by_hand(harness, vllm, STALE, "true")
    stored = harness.stored("v1/pods", vllm.namespace, vllm.name)
    assert stored is not None
    stored["metadata"]["annotations"]["serving-guard.io/quarantine-labels"] = f"{STALE}=true"
    harness.running.call(harness.running.emulator.put_object, "v1/pods", stored)

    failed = _quarantine(harness.actions, harness, triton)

    assert failed.status is OutcomeStatus.FAILED
    assert "1 pod quarantined under another label relies on it (vllm-0)" in failed.detail
    # The record names the label: so does the advice.
    assert f"release it with the config it was quarantined under (quarantine.label {STALE})," in failed.detail
    assert _stored_spec(harness)["podSelector"] == by_stale
    assert _state(harness, vllm) == (CLOSED, CLOSED)


def _by_hand(harness: Harness, pod: SeededPod, key: str, value: str, *, recorded: bool) -> None:
    """``key=value`` put on the pod by hand; ``recorded``: with a quarantine record, as a
    quarantine leaves it."""
    stored = harness.stored("v1/pods", pod.namespace, pod.name)
    assert stored is not None
    stored["metadata"]["labels"][key] = value
    if recorded:
        stored["metadata"].setdefault("annotations", {})["serving-guard.io/quarantined-at"] = (
            "2026-12-01T10:00:00Z"
        )
    harness.running.call(harness.running.emulator.put_object, "v1/pods", stored)


@pytest.mark.parametrize("metadata", [None, CHART_METADATA], ids=["made by the responder", "chart"])
def test_a_stale_copy_never_retargets_the_deny_all_in_force_held_by_a_pod_labelled_by_hand(
    seeded: Seeded, metadata: dict[str, Any] | None
) -> None:
    """The config in force labels STALE; on-call put STALE=true on triton by hand (no record). A
    stale copy quarantines triton: the deny-all in force holds it, so it is left as it is, never
    repaired to the stale copy's label (after which the config in force would fail every
    quarantine there; review-session-44 H2)."""
    running, pods, kubeconfig = seeded
    harness = Harness(running, kubeconfig)
    triton = pods["triton"]
    theirs = netpol.deny_all_spec(STALE, "true")
    _put(harness, DENY_ALL, theirs, metadata)
    _by_hand(harness, triton, STALE, "true", recorded=False)

    outcome = _quarantine(
        _actions(harness, Quarantine(label=STALE.replace("isolated", "other"))), harness, triton
    )

    assert outcome.status is not OutcomeStatus.FAILED, outcome.detail
    assert "one of the two configs is stale" in outcome.detail
    assert _stored_spec(harness) == theirs


def test_another_configs_deny_all_holding_its_pods_and_one_labelled_by_hand_says_both_readings(
    seeded: Seeded,
) -> None:
    """The config in force (STALE) holds vllm (quarantined by it) and torchserve (labelled by hand).
    This config quarantines triton: neither narrowed nor retargeted; the words name whom it holds,
    each as what it is (review-session-44 M2)."""
    running, pods, kubeconfig = seeded
    harness = Harness(running, kubeconfig)
    vllm, triton, torchserve = pods["vllm"], pods["triton"], pods["torchserve"]
    theirs = netpol.deny_all_spec(STALE, "true")
    _put(harness, DENY_ALL, theirs)
    _by_hand(harness, vllm, STALE, "true", recorded=True)
    _by_hand(harness, torchserve, STALE, "true", recorded=False)

    failed = _quarantine(harness.actions, harness, triton)

    assert failed.status is OutcomeStatus.FAILED
    assert (
        f"NetworkPolicy {DENY_ALL} selects {STALE}=true, not this config's {LABEL}=true (both cut): another"
        " config's deny-all (one of the two configs is stale) or a lockdown made by hand; it holds pods"
        f" nobody quarantined ({torchserve.name}) and pods quarantined under another label ({vllm.name})"
        f" but not {triton.name} of the both cut" in failed.detail
    )
    assert _stored_spec(harness) == theirs
    assert _state(harness, vllm) == (CLOSED, CLOSED) and _state(harness, torchserve) == (CLOSED, CLOSED)


def test_a_sibling_deny_all_holding_only_pods_nobody_quarantined_is_read_as_a_lockdown(
    seeded: Seeded,
) -> None:
    """The egress deny-all selects STALE=true-egress and holds only torchserve, labelled so by hand:
    another config's deny-all holds the pods it quarantined, recorded so; this reads as a lockdown.
    Isolating vllm now outweighs the risk: the both deny-all is made, both readings said
    (review-session-44b M2; a stale copy's risk, documented)."""
    running, pods, kubeconfig = seeded
    harness = Harness(running, kubeconfig)
    vllm, torchserve = pods["vllm"], pods["torchserve"]
    theirs = netpol.deny_all_spec(STALE, "true-egress", ("egress",))
    _put(harness, f"{DENY_ALL}-egress", theirs, CHART_METADATA)
    _by_hand(harness, torchserve, STALE, "true-egress", recorded=False)

    outcome = _quarantine(harness.actions, harness, vllm)

    assert outcome.status is OutcomeStatus.QUARANTINED, outcome.detail
    assert outcome.detail.startswith(
        f"created NetworkPolicy {DENY_ALL} (beside it: NetworkPolicy {DENY_ALL}-egress selects"
        f" {STALE}=true-egress, not this config's {LABEL}=true-egress: a lockdown made by hand, or another"
        " config's deny-all (one of the two configs is stale (Helm manages the policy:"
    )
    assert (
        f"it holds only pods nobody quarantined ({torchserve.name}), so it was read as a lockdown (if it is"
        " the config in force's, its quarantines into the both cut fail, saying so, until NetworkPolicy"
        f" {DENY_ALL} is deleted))" in outcome.detail
    )
    assert _stored_spec(harness, f"{DENY_ALL}-egress") == theirs
    assert _state(harness, vllm) == (CLOSED, CLOSED)


def test_a_sibling_deny_all_holding_recorded_pods_and_others_is_for_a_person(seeded: Seeded) -> None:
    """The same, but it also holds kserve, quarantined under STALE (recorded): another config's
    deny-all as likely as a lockdown. Not created beside it; both readings and whom it holds said."""
    running, pods, kubeconfig = seeded
    harness = Harness(running, kubeconfig)
    vllm, torchserve, kserve = pods["vllm"], pods["torchserve"], pods["kserve"]
    _put(harness, f"{DENY_ALL}-egress", netpol.deny_all_spec(STALE, "true-egress", ("egress",)))
    _by_hand(harness, torchserve, STALE, "true-egress", recorded=False)
    _by_hand(harness, kserve, STALE, "true-egress", recorded=True)

    failed = _quarantine(harness.actions, harness, vllm)

    assert failed.status is OutcomeStatus.FAILED
    assert harness.stored(NP, NAMESPACE, DENY_ALL) is None
    assert (
        f"NetworkPolicy {DENY_ALL} was not created: NetworkPolicy {DENY_ALL}-egress selects"
        f" {STALE}=true-egress, not this config's {LABEL}=true-egress: a lockdown made by hand, or another"
        " config's deny-all (one of the two configs is stale); it holds pods nobody quarantined"
        f" ({torchserve.name}) and pods quarantined under another label ({kserve.name}): a person must"
        " tell which" in failed.detail
    )


@pytest.mark.parametrize("quarantined", ["torchserve", "vllm"], ids=["another pod", "the pod it locks down"])
def test_a_lockdown_on_the_both_deny_all_does_not_stop_a_one_way_quarantine(
    seeded: Seeded, quarantined: str
) -> None:
    """The both deny-all edited into a lockdown of vllm-0 by `app: vllm` (shaped like another config's:
    a both value may be anything), then an egress quarantine: the egress deny-all is made
    (review-session-44b M2: it was refused, leaving the pod open both ways), the note naming whom
    the lockdown holds (vllm-0, also when it is the pod quarantined, as it was before its label)."""
    running, pods, kubeconfig = seeded
    harness = Harness(running, kubeconfig)
    vllm, pod = pods["vllm"], pods[quarantined]
    lockdown = {"podSelector": BY_APP_VLLM, "policyTypes": ["Ingress", "Egress"]}
    _put(harness, DENY_ALL, lockdown)

    outcome = _quarantine(harness.actions, harness, pod, Isolation.EGRESS)

    assert outcome.status is OutcomeStatus.QUARANTINED, outcome.detail
    assert outcome.detail.startswith(f"created NetworkPolicy {DENY_ALL}-egress (beside it:")
    assert (
        f"it holds only pods nobody quarantined ({vllm.name}), so it was read as a lockdown" in outcome.detail
    )
    assert _stored_spec(harness) == lockdown
    assert _state(harness, pod)[1] == CLOSED
    assert _state(harness, vllm) == (CLOSED, CLOSED)


def test_a_both_deny_all_of_a_config_whose_value_ends_in_a_cuts_suffix_is_never_retargeted(
    seeded: Seeded,
) -> None:
    """The config in force's label_value is `no-egress`: its both deny-all selects LABEL=no-egress.
    A copy with the default value meets it: another config's (a both value may end in anything),
    never repaired to this copy's label (review-session-44b M1)."""
    running, pods, kubeconfig = seeded
    harness = Harness(running, kubeconfig)
    theirs = netpol.deny_all_spec(LABEL, "no-egress")
    _put(harness, DENY_ALL, theirs, CHART_METADATA)

    failed = _quarantine(harness.actions, harness, pods["triton"])

    assert failed.status is OutcomeStatus.FAILED
    assert "one of the two configs is stale" in failed.detail
    assert _stored_spec(harness) == theirs


@pytest.mark.parametrize("quarantined", ["vllm", "torchserve"], ids=["the pod it locks down", "another pod"])
def test_a_sibling_cuts_lockdown_by_another_label_does_not_stop_a_missing_deny_all_being_made(
    seeded: Seeded, quarantined: str
) -> None:
    """The egress cut's deny-all edited into a lockdown of vllm-0 by `app: vllm` (no value an egress
    cut has: no config's), then a pod quarantined: the both cut's missing deny-all is made as
    usual, and the lockdown is left as it is. Quarantining vllm-0 itself was read as another
    config's once it was labelled, and the failure advised releasing it (review-session-44 H1)."""
    running, pods, kubeconfig = seeded
    harness = Harness(running, kubeconfig)
    vllm, pod = pods["vllm"], pods[quarantined]
    lockdown = {"podSelector": BY_APP_VLLM, "policyTypes": ["Egress"]}
    _put(harness, f"{DENY_ALL}-egress", lockdown)

    outcome = _quarantine(harness.actions, harness, pod)

    assert outcome.status is OutcomeStatus.QUARANTINED, outcome.detail
    assert _stored_spec(harness) == netpol.deny_all_spec(LABEL, "true")
    assert _stored_spec(harness, f"{DENY_ALL}-egress") == lockdown
    assert _state(harness, pod) == (CLOSED, CLOSED)
    assert _state(harness, vllm)[1] == CLOSED


def test_a_deny_all_selecting_the_legacy_both_value_is_this_configs_and_repaired(seeded: Seeded) -> None:
    """`true-both` is this config's (an earlier version's both cut): never another config's label.
    A pod labelled so stays cut by the earlier version's policy, and its next quarantine moves it."""
    running, pods, kubeconfig = seeded
    harness = Harness(running, kubeconfig)
    kserve, vllm = pods["kserve"], pods["vllm"]
    _put(harness, f"{DENY_ALL}-both", netpol.deny_all_spec(LABEL, "true-both"))
    _put(harness, DENY_ALL, netpol.deny_all_spec(LABEL, "true-both"))
    _label_by_hand(harness, kserve, LABEL, "true-both")

    outcome = _quarantine(harness.actions, harness, vllm)

    assert outcome.status is OutcomeStatus.QUARANTINED, outcome.detail
    assert outcome.detail == f"repaired altered NetworkPolicy {DENY_ALL}"
    assert _state(harness, vllm) == _state(harness, kserve) == (CLOSED, CLOSED)
    moved = _quarantine(harness.actions, harness, kserve)
    assert moved.status is OutcomeStatus.QUARANTINED, moved.detail
    assert _labels(harness, kserve)[LABEL] == "true" and _state(harness, kserve) == (CLOSED, CLOSED)


def test_a_stale_copy_does_not_create_a_missing_cuts_deny_all_beside_another_configs(seeded: Seeded) -> None:
    """Only the chart's both-ways deny-all exists: a stale copy's egress quarantine would create
    serving-guard-quarantine-egress under its own label, and the responder in force would then fail
    every egress quarantine there (it never repairs another config's deny-all)."""
    running, pods, kubeconfig = seeded
    harness = Harness(running, kubeconfig)
    vllm, torchserve = pods["vllm"], pods["torchserve"]
    chart = netpol.deny_all_spec(LABEL, "true", Isolation.BOTH.directions)
    _put(harness, DENY_ALL, chart, CHART_METADATA)

    stale = _quarantine(_actions(harness, Quarantine(label=STALE)), harness, vllm, Isolation.EGRESS)

    egress = f"{DENY_ALL}-egress"
    assert stale.status is OutcomeStatus.FAILED and stale.labelled
    assert stale.detail.startswith(
        f"the pod is labelled, but NetworkPolicy {egress} is not ensured: NetworkPolicy {egress} was not"
        f" created: NetworkPolicy {DENY_ALL} selects {LABEL}=true, but this config's label for its both"
        f" cut is {STALE}=true: one of the two configs is stale"
    )
    assert harness.stored(NP, NAMESPACE, egress) is None
    assert _stored_spec(harness) == chart
    # The responder in force creates it, under its own label, and isolates.
    inforce = _quarantine(harness.actions, harness, torchserve, Isolation.EGRESS)
    assert inforce.status is OutcomeStatus.QUARANTINED, inforce.detail
    assert _stored_spec(harness, egress) == netpol.deny_all_spec(
        LABEL, "true-egress", Isolation.EGRESS.directions
    )
    assert _state(harness, torchserve) == (OPEN, CLOSED)


def test_a_hand_edited_selector_with_this_configs_label_in_an_expression_is_repaired(seeded: Seeded) -> None:
    """`team: ml` in matchLabels beside this config's label as an `In` expression: no config makes
    that shape, so it is a hand edit (repaired), not another config's label `team=ml`."""
    running, pods, kubeconfig = seeded
    harness = Harness(running, kubeconfig)
    vllm = pods["vllm"]
    edited = {
        "podSelector": {
            "matchLabels": {"team": "ml"},
            "matchExpressions": [{"key": LABEL, "operator": "In", "values": ["true"]}],
        },
        "policyTypes": ["Ingress", "Egress"],
    }
    _put(harness, DENY_ALL, edited)
    outcome = _quarantine(harness.actions, harness, vllm)
    assert outcome.status is OutcomeStatus.QUARANTINED, outcome.detail
    assert f"repaired altered NetworkPolicy {DENY_ALL}" in outcome.detail
    assert _stored_spec(harness) == netpol.deny_all_spec(LABEL, "true", Isolation.BOTH.directions)
    assert _state(harness, vllm) == (CLOSED, CLOSED)


def test_many_pods_relying_on_an_altered_deny_all_are_named_by_the_first_few_and_counted(
    seeded: Seeded,
) -> None:
    """As the other refusals name the pods relying on a policy: the first few, and how many more."""
    running, pods, kubeconfig = seeded
    harness = Harness(running, kubeconfig)
    triton = pods["triton"]
    by_stale = {"matchExpressions": [{"key": STALE, "operator": "Exists"}]}
    _put(harness, DENY_ALL, {"podSelector": by_stale, "policyTypes": ["Ingress", "Egress"]})
    relying = [pod for name, pod in pods.items() if name != "triton" and pod.namespace == triton.namespace]
    assert len(relying) > SHOWN_PODS, "the seed has too few pods beside triton for this test"
    for pod in relying:
        _label_by_hand(harness, pod, STALE, "true")

    failed = _quarantine(harness.actions, harness, triton)

    assert failed.status is OutcomeStatus.FAILED
    names = sorted(pod.name for pod in relying)
    shown = ", ".join(names[:SHOWN_PODS])
    assert (
        f"{len(relying)} pods quarantined under another label rely on it"
        f" ({shown} and {len(relying) - SHOWN_PODS} more):"
    ) in failed.detail, failed.detail
    assert names[SHOWN_PODS] not in failed.detail
