"""Each quarantine cut's label value and deny-all policy are fixed, whatever quarantine.isolate says:
changing isolate picks another cut for new quarantines and never changes what an earlier one cuts
(audit defect 5). Also: a deny-all found cutting more than its cut is never narrowed by a repair,
and a deployment that ran an older version with isolate egress upgrades without a pod losing a cut
direction. Against the emulated API server; what the cluster enforces is judged by a reading of
the NetworkPolicy spec that does not use the responder's code (tests/responder/spec_reading.py)."""

from __future__ import annotations

from typing import Any

import pytest

from responder.actions.outcome import OutcomeStatus
from responder.config import Isolation, Quarantine, load_config_text
from responder.errors import UserError
from simulators.cluster_emulator import Fault, RunningCluster
from simulators.seed import SeededPod
from tests.responder.spec_reading import CLOSED, OPEN, direction_state
from tests.responder.test_block_destination import egress_alert
from tests.responder.test_quarantine import LABEL, NP, Harness, shell_alert

Seeded = tuple[RunningCluster, dict[str, SeededPod], str]
BASE = "serving-guard-quarantine"


def _labels(harness: Harness, pod: SeededPod) -> dict[str, str]:
    stored = harness.stored("v1/pods", pod.namespace, pod.name)
    assert stored is not None
    return dict(stored["metadata"]["labels"])


def _state(harness: Harness, pod: SeededPod) -> tuple[str, str]:
    """(ingress, egress) as the cluster enforces them for the pod, as stored now."""
    policies: list[dict[str, Any]] = harness.running.call(
        harness.running.emulator.list_objects, NP, pod.namespace
    )
    labels = _labels(harness, pod)
    return direction_state(policies, labels, "ingress"), direction_state(policies, labels, "egress")


def _label_by_hand(harness: Harness, pod: SeededPod, value: str) -> None:
    stored = harness.stored("v1/pods", pod.namespace, pod.name)
    assert stored is not None
    stored["metadata"]["labels"][LABEL] = value
    harness.running.call(harness.running.emulator.put_object, "v1/pods", stored)


def _deny_all(harness: Harness, namespace: str, name: str, value: str, types: list[str]) -> None:
    harness.put_policy(
        namespace, name, {"podSelector": {"matchLabels": {LABEL: value}}, "policyTypes": types}
    )


@pytest.mark.parametrize("isolate", list(Isolation))
def test_a_cuts_names_do_not_depend_on_quarantine_isolate(isolate: Isolation) -> None:
    settings = Quarantine(isolate=isolate)
    names = {i: (settings.cut(i).label_value, settings.cut(i).network_policy) for i in Isolation}
    assert names == {
        Isolation.BOTH: ("true", BASE),
        Isolation.EGRESS: ("true-egress", f"{BASE}-egress"),
        Isolation.INGRESS: ("true-ingress", f"{BASE}-ingress"),
    }
    assert settings.cut() == settings.cut(isolate)  # isolate only picks the cut
    for isolation in Isolation:
        assert settings.cut_of(settings.cut(isolation).label_value) is isolation
    # An earlier version's value for both (while isolate named a one-way cut) still reads as both.
    assert settings.cut_of("true-both") is Isolation.BOTH
    assert settings.cut_of("true-sideways") is None and settings.cut_of(None) is None


def test_the_names_of_quarantine_isolates_cut_must_fit() -> None:
    long_value = "v" * 60
    assert (
        load_config_text(f"quarantine:\n  label_value: {long_value}\n").quarantine.label_value == long_value
    )
    with pytest.raises(UserError) as refused:
        load_config_text(f"quarantine:\n  label_value: {long_value}\n  isolate: egress\n")
    assert "quarantine.isolate: cuts egress, whose label value and NetworkPolicy are <name>-egress" in str(
        refused.value
    )


def test_switching_isolate_leaves_earlier_quarantines_as_they_were(seeded: Seeded) -> None:
    """Audit s3: both, then egress. The pod quarantined both ways stays cut both ways; the next
    quarantine goes into the egress cut's own policy, and nothing "repairs" the both-ways one."""
    running, pods, kubeconfig = seeded
    vllm, torchserve = pods["vllm"], pods["torchserve"]
    before = Harness(running, kubeconfig)  # isolate: both
    assert before.actions.quarantine(before.pod(vllm), shell_alert(vllm), "i1", "r", dry_run=False).ok
    assert _state(before, vllm) == (CLOSED, CLOSED)
    both_ways = before.stored(NP, vllm.namespace, BASE)

    after = Harness(running, kubeconfig, Quarantine(isolate=Isolation.EGRESS))
    outcome = after.actions.quarantine(
        after.pod(torchserve), shell_alert(torchserve), "i2", "r", dry_run=False
    )
    assert outcome.status is OutcomeStatus.QUARANTINED and outcome.cut_only == "egress", outcome.detail
    assert "repaired" not in outcome.detail and f"created NetworkPolicy {BASE}-egress" in outcome.detail
    assert _labels(after, torchserve)[LABEL] == "true-egress"
    assert after.stored(NP, vllm.namespace, BASE) == both_ways
    assert _state(after, vllm) == (CLOSED, CLOSED)
    assert _state(after, torchserve) == (OPEN, CLOSED)
    # A repeat on the pod quarantined before: still both ways ("true" reads as both), nothing changed.
    again = after.actions.quarantine(after.pod(vllm), shell_alert(vllm), "i1", "r", dry_run=False)
    assert again.status is OutcomeStatus.QUARANTINED and again.cut_only is None and again.detail == ""
    assert _labels(after, vllm)[LABEL] == "true" and _state(after, vllm) == (CLOSED, CLOSED)


def test_switching_isolate_never_unblocks_a_blocked_pod(seeded: Seeded) -> None:
    """Audit s3b: a block made under isolate both leaves out the pods of the cuts that stop egress
    (NotIn their values); after a switch to ingress the pod's quarantine labels it into the ingress
    cut, which that block policy still selects: the address stays blocked."""
    running, pods, kubeconfig = seeded
    vllm = pods["vllm"]
    before = Harness(running, kubeconfig)
    blocked = before.actions.block_destination(
        before.pod(vllm), egress_alert(vllm, "203.0.113.7"), dry_run=False
    )
    assert blocked.status is OutcomeStatus.BLOCKED, blocked.detail

    after = Harness(running, kubeconfig, Quarantine(isolate=Isolation.INGRESS))
    outcome = after.actions.quarantine(after.pod(vllm), shell_alert(vllm), "i", "r", dry_run=False)
    assert outcome.cut_only == "ingress", outcome.detail
    assert _labels(after, vllm)[LABEL] == "true-ingress"
    ingress, egress = _state(after, vllm)
    assert ingress == CLOSED
    (block_name,) = [name for name in egress.removeprefix("partial via ").split(",")]
    block = after.stored(NP, vllm.namespace, block_name)
    assert block is not None and block_name.startswith("serving-guard-block-")
    peers = block["spec"]["egress"][0]["to"]
    assert {"ipBlock": {"cidr": "0.0.0.0/0", "except": ["203.0.113.7/32"]}} in peers


def test_a_deny_all_cutting_more_than_its_cut_is_left_as_it_is(seeded: Seeded) -> None:
    running, pods, kubeconfig = seeded
    vllm = pods["vllm"]
    harness = Harness(running, kubeconfig)
    # Someone made the egress cut's policy cut ingress too (or a chart of theirs renders it so).
    _deny_all(harness, vllm.namespace, f"{BASE}-egress", "true-egress", ["Ingress", "Egress"])
    wider = harness.stored(NP, vllm.namespace, f"{BASE}-egress")
    outcome = harness.actions.quarantine(
        harness.pod(vllm), shell_alert(vllm), "i", "r", dry_run=False, isolate=Isolation.EGRESS
    )
    assert outcome.status is OutcomeStatus.QUARANTINED, outcome.detail
    assert outcome.detail == (
        f"left NetworkPolicy {BASE}-egress as it is: it cuts ingress too, beyond its egress cut"
        " (a repair would narrow the quarantines in it)"
    )
    assert harness.stored(NP, vllm.namespace, f"{BASE}-egress") == wider
    assert _state(harness, vllm) == (CLOSED, CLOSED)


def test_a_repair_keeps_what_the_policy_cut_beyond_its_cut(seeded: Seeded) -> None:
    """Altered (an allow-all egress rule) and cutting ingress beyond the egress cut: repaired to
    cut egress again, and ingress stays cut."""
    running, pods, kubeconfig = seeded
    vllm = pods["vllm"]
    harness = Harness(running, kubeconfig)
    spec = {
        "podSelector": {"matchLabels": {LABEL: "true-egress"}},
        "policyTypes": ["Ingress", "Egress"],
        "egress": [{}],
    }
    harness.put_policy(vllm.namespace, f"{BASE}-egress", spec)
    outcome = harness.actions.quarantine(
        harness.pod(vllm), shell_alert(vllm), "i", "r", dry_run=False, isolate=Isolation.EGRESS
    )
    assert outcome.status is OutcomeStatus.QUARANTINED, outcome.detail
    assert outcome.detail == (
        f"repaired altered NetworkPolicy {BASE}-egress, keeping its cut of ingress beyond the egress cut"
    )
    repaired = harness.stored(NP, vllm.namespace, f"{BASE}-egress")
    assert repaired is not None and repaired["spec"] == {
        "podSelector": {"matchLabels": {LABEL: "true-egress"}},
        "policyTypes": ["Ingress", "Egress"],
    }
    assert _state(harness, vllm) == (CLOSED, CLOSED)


MONITORING_ONLY = [{"from": [{"podSelector": {"matchLabels": {"app": "monitoring"}}}]}]


def test_a_repair_keeps_what_the_policy_restricted_beyond_its_cut(seeded: Seeded) -> None:
    """The egress cut's deny-all altered by hand: an allow-all egress rule added (a hole in the cut)
    and its pods' ingress restricted to the monitoring pods. The repair closes the egress and keeps
    the ingress rules: dropping them would open the quarantined pods' ingress to all. Repaired once:
    the next quarantine finds it as repaired and writes nothing."""
    running, pods, kubeconfig = seeded
    vllm, torchserve = pods["vllm"], pods["torchserve"]
    harness = Harness(running, kubeconfig)
    spec = {
        "podSelector": {"matchLabels": {LABEL: "true-egress"}},
        "policyTypes": ["Ingress", "Egress"],
        "ingress": MONITORING_ONLY,
        "egress": [{}],
    }
    harness.put_policy(vllm.namespace, f"{BASE}-egress", spec)

    outcome = harness.actions.quarantine(
        harness.pod(vllm), shell_alert(vllm), "i", "r", dry_run=False, isolate=Isolation.EGRESS
    )

    assert outcome.status is OutcomeStatus.QUARANTINED, outcome.detail
    assert outcome.detail == (
        f"repaired altered NetworkPolicy {BASE}-egress, keeping its ingress rules beyond the egress cut"
    )
    repaired = harness.stored(NP, vllm.namespace, f"{BASE}-egress")
    assert repaired is not None and repaired["spec"] == {
        "podSelector": {"matchLabels": {LABEL: "true-egress"}},
        "policyTypes": ["Ingress", "Egress"],
        "ingress": MONITORING_ONLY,
    }
    assert _state(harness, vllm)[1] == CLOSED
    assert _state(harness, vllm)[0] != OPEN  # restricted to the monitoring pods, as before

    again = harness.actions.quarantine(
        harness.pod(torchserve), shell_alert(torchserve), "j", "r", dry_run=False, isolate=Isolation.EGRESS
    )
    assert again.status is OutcomeStatus.QUARANTINED, again.detail
    assert again.detail == (
        f"left NetworkPolicy {BASE}-egress as it is: it restricts ingress too by rules added beyond its"
        " egress cut (a repair would open that for the quarantines in it)"
    )
    stored = harness.stored(NP, vllm.namespace, f"{BASE}-egress")
    assert (
        stored is not None
        and stored["metadata"]["resourceVersion"] == repaired["metadata"]["resourceVersion"]
    )


def test_a_deny_all_cutting_less_than_its_cut_is_widened(seeded: Seeded) -> None:
    running, pods, kubeconfig = seeded
    vllm = pods["vllm"]
    harness = Harness(running, kubeconfig, Quarantine(isolate=Isolation.EGRESS))
    _deny_all(harness, vllm.namespace, BASE, "true", ["Egress"])
    outcome = harness.actions.quarantine(
        harness.pod(vllm), shell_alert(vllm), "i", "r", dry_run=False, isolate=Isolation.BOTH
    )
    assert outcome.detail == f"repaired altered NetworkPolicy {BASE}"
    assert _state(harness, vllm) == (CLOSED, CLOSED)


def test_an_upgrade_from_isolate_egress_never_narrows_a_quarantine(seeded: Seeded) -> None:
    """The cluster as an earlier version left it under isolate egress with a policy cutting both
    ways: vllm labelled "true" into serving-guard-quarantine (Egress only: "true" meant egress),
    kserve labelled "true-both" into serving-guard-quarantine-both. The new version (isolate egress
    still) reads both labels as both ways: a repeat widens vllm's policy to both (the chart's
    upgrade renders it so too) and moves kserve to "true", never to the egress cut; a new
    quarantine goes into serving-guard-quarantine-egress. No pod loses a direction it had cut."""
    running, pods, kubeconfig = seeded
    vllm, kserve, torchserve = pods["vllm"], pods["kserve"], pods["torchserve"]
    harness = Harness(running, kubeconfig, Quarantine(isolate=Isolation.EGRESS))
    namespace = vllm.namespace
    _deny_all(harness, namespace, BASE, "true", ["Egress"])
    _deny_all(harness, namespace, f"{BASE}-both", "true-both", ["Ingress", "Egress"])
    _label_by_hand(harness, vllm, "true")
    _label_by_hand(harness, kserve, "true-both")
    assert _state(harness, vllm) == (OPEN, CLOSED) and _state(harness, kserve) == (CLOSED, CLOSED)

    widened = harness.actions.quarantine(harness.pod(vllm), shell_alert(vllm), "i1", "r", dry_run=False)
    assert widened.status is OutcomeStatus.QUARANTINED and widened.cut_only is None, widened.detail
    assert f"repaired altered NetworkPolicy {BASE}" in widened.detail
    assert _labels(harness, vllm)[LABEL] == "true" and _state(harness, vllm) == (CLOSED, CLOSED)

    moved = harness.actions.quarantine(harness.pod(kserve), shell_alert(kserve), "i2", "r", dry_run=False)
    assert moved.status is OutcomeStatus.QUARANTINED and moved.cut_only is None, moved.detail
    assert _labels(harness, kserve)[LABEL] == "true" and _state(harness, kserve) == (CLOSED, CLOSED)
    # The earlier version's policy stays (the responder deletes nothing); it selects no pod now.
    assert harness.stored(NP, namespace, f"{BASE}-both") is not None

    fresh = harness.actions.quarantine(
        harness.pod(torchserve), shell_alert(torchserve), "i3", "r", dry_run=False
    )
    assert fresh.cut_only == "egress" and f"created NetworkPolicy {BASE}-egress" in fresh.detail
    assert _labels(harness, torchserve)[LABEL] == "true-egress"
    assert _state(harness, torchserve) == (OPEN, CLOSED)
    assert _state(harness, vllm) == _state(harness, kserve) == (CLOSED, CLOSED)


def test_a_pod_moving_to_a_wider_cut_gets_its_deny_all_before_its_label(seeded: Seeded) -> None:
    """Egress-cut, then an ingress cut asked for: both. The cut of both's policy is made before the
    label moves (never a moment in no policy); refused, the pod stays in its egress cut."""
    running, pods, kubeconfig = seeded
    vllm = pods["vllm"]
    harness = Harness(running, kubeconfig)
    first = harness.actions.quarantine(
        harness.pod(vllm), shell_alert(vllm), "i", "r", dry_run=False, isolate=Isolation.EGRESS
    )
    assert first.cut_only == "egress"
    harness.fail(Fault(403, method="POST", plural="networkpolicies", times=1, message="forbidden"))
    refused = harness.actions.quarantine(
        harness.pod(vllm), shell_alert(vllm), "i", "r", dry_run=False, isolate=Isolation.INGRESS
    )
    assert refused.status is OutcomeStatus.FAILED, refused.detail
    assert _labels(harness, vllm)[LABEL] == "true-egress" and _state(harness, vllm) == (OPEN, CLOSED)

    context = harness.pod(vllm)
    calls = harness.record_calls()
    widened = harness.actions.quarantine(
        context, shell_alert(vllm), "i", "r", dry_run=False, isolate=Isolation.INGRESS
    )
    assert widened.status is OutcomeStatus.QUARANTINED, widened.detail
    assert widened.detail == f"widened its egress cut to both; created NetworkPolicy {BASE}"
    pod_path = f"/api/v1/namespaces/{vllm.namespace}/pods/{vllm.name}"
    policies_path = f"/apis/networking.k8s.io/v1/namespaces/{vllm.namespace}/networkpolicies"
    # The namespace's policies listed (the other cuts' deny-alls count), the deny-all made, then the label.
    assert calls[:3] == [("GET", policies_path), ("POST", policies_path), ("PATCH", pod_path)]
    assert _labels(harness, vllm)[LABEL] == "true" and _state(harness, vllm) == (CLOSED, CLOSED)
