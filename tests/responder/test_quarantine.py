"""Quarantine, annotate and release against the emulated API server over real HTTP."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

from responder.actions.events import EventRecorder
from responder.actions.outcome import OutcomeStatus
from responder.actions.quarantine import ClusterActions
from responder.alert import Alert
from responder.alert_json import alert_from_mapping
from responder.cluster.api import KubeGateway
from responder.cluster.context import PodContext
from responder.cluster.enrich import LookupStatus, PodDirectory
from responder.config import Cluster, Isolation, Quarantine, Retry
from responder.notify.render import render_incident
from responder.records import pod_from_json, pod_to_json
from simulators.cluster_emulator import Fault, RunningCluster
from simulators.falco_json import falco_alert
from simulators.seed import LEAKY_POLICY, SeededPod
from tests.notify.slack_fixtures import make_decision, make_report
from tests.notify.test_slack_render import text_of
from tests.responder.exclusions import legacy_patched

LABEL = "serving-guard.io/quarantine"
NP = "networking.k8s.io/v1/networkpolicies"


class Harness:
    def __init__(self, running: RunningCluster, kubeconfig: str, settings: Quarantine | None = None) -> None:
        self.running = running
        cluster = Cluster(kubeconfig=kubeconfig, retry=Retry(attempts=3, initial_backoff_seconds=0.01))
        self.gateway = KubeGateway.from_config(cluster)
        self.directory = PodDirectory(self.gateway, ttl_seconds=0)
        self.actions = ClusterActions(self.gateway, settings or Quarantine(), EventRecorder(self.gateway))

    def pod(self, seeded: SeededPod) -> PodContext:
        lookup = self.directory.lookup(seeded.namespace, seeded.name)
        assert lookup.status is LookupStatus.FOUND and lookup.pod is not None
        return lookup.pod

    def lapse(self, pod: PodContext, **options: Any) -> str | None:
        """What undid, since, what was put on ``pod`` (ClusterActions.lapse_of), in words; None: it holds."""
        found = self.actions.lapse_of(pod, **options)
        return found.detail if found is not None else None

    def stored(self, resource: str, namespace: str, name: str) -> dict[str, Any] | None:
        return self.running.call(self.running.emulator.get_object, resource, namespace, name)  # type: ignore[no-any-return]

    def events(self, namespace: str) -> list[dict[str, Any]]:
        return self.running.call(self.running.emulator.list_objects, "v1/events", namespace)  # type: ignore[no-any-return]

    def fail(self, fault: Fault) -> None:
        self.running.call(self.running.emulator.inject, fault)

    def record_calls(self) -> list[tuple[str, str]]:
        """From now on, every request the gateway sends is added (verb, path) to the list returned."""
        calls: list[tuple[str, str]] = []
        send = self.gateway.request

        def recording(verb: str, path: str, **kwargs: Any) -> Any:
            calls.append((verb, path))
            return send(verb, path, **kwargs)

        self.gateway.request = recording  # type: ignore[method-assign]
        return calls

    def on_host_network(self, pod: SeededPod) -> None:
        """Put ``pod`` on the host network, as stored (NetworkPolicies do not cover it)."""
        stored = self.stored("v1/pods", pod.namespace, pod.name)
        assert stored is not None
        stored["spec"]["hostNetwork"] = True
        self.running.call(self.running.emulator.put_object, "v1/pods", stored)

    def put_policy(self, namespace: str, name: str, spec: dict[str, Any]) -> None:
        manifest = {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": {"name": name, "namespace": namespace},
            "spec": spec,
        }
        self.running.call(self.running.emulator.put_object, NP, manifest)


def shell_alert(pod: SeededPod) -> Alert:
    return alert_from_mapping(
        falco_alert(pod, "Shell in serving pod", "Notice", "shell", {"proc.name": "sh"})
    )


@pytest.fixture
def harness(seeded: tuple[RunningCluster, dict[str, SeededPod], str]) -> Harness:
    running, _, kubeconfig = seeded
    return Harness(running, kubeconfig)


def test_enrichment_reads_owner_chain_images_and_namespace_labels(
    harness: Harness, seeded: tuple[RunningCluster, dict[str, SeededPod], str]
) -> None:
    pods = seeded[1]
    triton = harness.pod(pods["triton"])
    assert [(o.kind, o.name) for o in triton.owners] == [
        ("ReplicaSet", "triton-7c9d8f6b5"),
        ("Deployment", "triton"),
    ]
    assert triton.workload is not None and triton.workload.kind == "Deployment"
    assert triton.containers[0].digest and triton.containers[0].digest.startswith("sha256:")
    assert triton.namespace_labels["serving-guard.io/enforce"] == "true"
    assert triton.node == "worker-1"
    kserve = harness.pod(pods["kserve"])
    assert kserve.workload is not None and (kserve.workload.kind, kserve.workload.name) == (
        "InferenceService",
        "sklearn-iris",
    )
    assert harness.pod(pods["vllm"]).owners[0].kind == "StatefulSet"
    assert harness.directory.lookup("ml-serving", "nope").status is LookupStatus.NOT_FOUND


def test_quarantine_creates_the_policy_labels_the_pod_and_names_the_leak(
    harness: Harness, seeded: tuple[RunningCluster, dict[str, SeededPod], str]
) -> None:
    triton = seeded[1]["triton"]
    outcome = harness.actions.quarantine(
        harness.pod(triton), shell_alert(triton), "inc-1", "Notice: shell", dry_run=False
    )
    assert outcome.status is OutcomeStatus.LEAKY
    assert outcome.leaky_policies == (LEAKY_POLICY,)
    assert "created NetworkPolicy serving-guard-quarantine" in outcome.detail
    stored = harness.stored("v1/pods", triton.namespace, triton.name)
    assert stored is not None
    assert stored["metadata"]["labels"][LABEL] == "true"
    assert stored["metadata"]["annotations"]["serving-guard.io/incident"] == "inc-1"
    policy = harness.stored(NP, triton.namespace, "serving-guard-quarantine")
    assert policy is not None and policy["spec"] == {
        "podSelector": {"matchLabels": {LABEL: "true"}},
        "policyTypes": ["Ingress", "Egress"],
    }
    reasons = [e["reason"] for e in harness.events(triton.namespace)]
    assert "QuarantineLeaky" in reasons


def test_quarantine_is_idempotent(
    harness: Harness, seeded: tuple[RunningCluster, dict[str, SeededPod], str]
) -> None:
    vllm = seeded[1]["vllm"]
    first = harness.actions.quarantine(harness.pod(vllm), shell_alert(vllm), "inc-1", "r", dry_run=False)
    quarantined_at = harness.stored("v1/pods", vllm.namespace, vllm.name)["metadata"]["annotations"][  # type: ignore[index]
        "serving-guard.io/quarantined-at"
    ]
    second = harness.actions.quarantine(harness.pod(vllm), shell_alert(vllm), "inc-1", "r", dry_run=False)
    assert first.status is second.status is OutcomeStatus.QUARANTINED
    assert "created" in first.detail and "created" not in second.detail
    stored = harness.stored("v1/pods", vllm.namespace, vllm.name)
    assert (
        stored is not None
        and stored["metadata"]["annotations"]["serving-guard.io/quarantined-at"] == quarantined_at
    )
    policies = harness.running.call(harness.running.emulator.list_objects, NP, vllm.namespace)
    assert [p["metadata"]["name"] for p in policies].count("serving-guard-quarantine") == 1


def test_altered_quarantine_policy_is_repaired(
    harness: Harness, seeded: tuple[RunningCluster, dict[str, SeededPod], str]
) -> None:
    vllm = seeded[1]["vllm"]
    harness.actions.ensure_deny_all(vllm.namespace)
    tampered = harness.gateway.get_network_policy(vllm.namespace, "serving-guard-quarantine")
    assert tampered is not None
    tampered["spec"]["egress"] = [{}]  # someone opened egress for quarantined pods
    harness.gateway.replace_network_policy(vllm.namespace, "serving-guard-quarantine", tampered)
    outcome = harness.actions.quarantine(harness.pod(vllm), shell_alert(vllm), "inc-2", "r", dry_run=False)
    assert outcome.status is OutcomeStatus.QUARANTINED
    assert "repaired altered NetworkPolicy" in outcome.detail
    repaired = harness.stored(NP, vllm.namespace, "serving-guard-quarantine")
    assert repaired is not None and "egress" not in repaired["spec"]


def test_patching_other_policies_closes_the_leak_and_release_undoes_it(
    seeded: tuple[RunningCluster, dict[str, SeededPod], str],
) -> None:
    running, pods, kubeconfig = seeded
    harness = Harness(running, kubeconfig, Quarantine(patch_other_policies=True))
    triton = pods["triton"]
    outcome = harness.actions.quarantine(
        harness.pod(triton), shell_alert(triton), "inc-3", "r", dry_run=False
    )
    assert outcome.status is OutcomeStatus.QUARANTINED
    assert outcome.patched_policies == (LEAKY_POLICY,)
    leaky = harness.stored(NP, triton.namespace, LEAKY_POLICY)
    assert leaky is not None
    # An Ingress-only policy: it takes out the pods of the cuts that stop ingress, no others.
    exclusion = {"key": LABEL, "operator": "NotIn", "values": ["true", "true-ingress"]}
    assert exclusion in leaky["spec"]["podSelector"]["matchExpressions"]

    released = harness.actions.release(triton.namespace, triton.name, by="alice", reason="false positive")
    assert released.status is OutcomeStatus.RELEASED
    assert released.patched_policies == (LEAKY_POLICY,)
    stored = harness.stored("v1/pods", triton.namespace, triton.name)
    assert stored is not None
    assert LABEL not in stored["metadata"]["labels"]
    annotations = stored["metadata"]["annotations"]
    assert "serving-guard.io/incident" not in annotations
    assert annotations["serving-guard.io/released-by"] == "alice"
    assert annotations["serving-guard.io/release-reason"] == "false positive"
    restored = harness.stored(NP, triton.namespace, LEAKY_POLICY)
    assert restored is not None and restored["spec"]["podSelector"] == {"matchLabels": {"app": "triton"}}
    assert "QuarantineReleased" in [e["reason"] for e in harness.events(triton.namespace)]


def test_where_policies_may_exclude_quarantined_pods_the_deny_all_comes_before_the_label(
    seeded: tuple[RunningCluster, dict[str, SeededPod], str],
) -> None:
    """With quarantine.patch_other_policies, a policy that restricts a pod may leave out quarantined
    pods (an exclusion made for another pod's quarantine): labelling the pod takes it out of that
    restriction at once. Where the deny-all is missing and cannot be made, the label must not go
    on, or the pod would be left with more traffic than before (here: all egress, not one address)."""
    running, pods, kubeconfig = seeded
    harness = Harness(running, kubeconfig, Quarantine(patch_other_policies=True))
    triton, vllm = pods["triton"], pods["vllm"]
    db_only = {
        "podSelector": {},
        "policyTypes": ["Egress"],
        "egress": [{"to": [{"ipBlock": {"cidr": "10.0.0.5/32"}}]}],
    }
    harness.put_policy(triton.namespace, "egress-db-only", db_only)
    first = harness.actions.quarantine(harness.pod(triton), shell_alert(triton), "inc-1", "r", dry_run=False)
    assert first.status is OutcomeStatus.QUARANTINED and "egress-db-only" in first.patched_policies
    # The deny-all deleted by hand, and the responder may not create it again.
    harness.gateway.request(
        "DELETE",
        f"/apis/networking.k8s.io/v1/namespaces/{vllm.namespace}/networkpolicies/serving-guard-quarantine",
    )
    assert harness.stored(NP, vllm.namespace, "serving-guard-quarantine") is None
    harness.fail(Fault(status=403, plural="networkpolicies", action="create", times=10, message="forbidden"))
    outcome = harness.actions.quarantine(harness.pod(vllm), shell_alert(vllm), "inc-2", "r", dry_run=False)
    assert outcome.status is OutcomeStatus.FAILED and not outcome.labelled
    assert outcome.detail.startswith(
        "the pod was not labelled: NetworkPolicy serving-guard-quarantine is not ensured"
    )
    stored = harness.stored("v1/pods", vllm.namespace, vllm.name)
    assert stored is not None and LABEL not in stored["metadata"]["labels"]  # still under egress-db-only


def test_release_keeps_exclusions_while_other_pods_stay_quarantined(
    seeded: tuple[RunningCluster, dict[str, SeededPod], str],
) -> None:
    running, pods, kubeconfig = seeded
    harness = Harness(running, kubeconfig, Quarantine(patch_other_policies=True))
    for name in ("triton", "torchserve"):
        pod = pods[name]
        harness.actions.quarantine(harness.pod(pod), shell_alert(pod), "inc", "r", dry_run=False)
    released = harness.actions.release(
        pods["triton"].namespace, pods["triton"].name, by="bob", reason="fixed"
    )
    assert "kept exclusion" in released.detail
    still = harness.stored(NP, pods["triton"].namespace, LEAKY_POLICY)
    assert still is not None and "matchExpressions" in still["spec"]["podSelector"]


def test_recreated_pod_is_not_touched(
    harness: Harness, seeded: tuple[RunningCluster, dict[str, SeededPod], str]
) -> None:
    vllm = seeded[1]["vllm"]
    context = harness.pod(vllm)
    # The pod is deleted and re-created under the same name (a StatefulSet does exactly this).
    current = harness.stored("v1/pods", vllm.namespace, vllm.name)
    assert current is not None
    harness.running.call(
        harness.running.emulator.put_object,
        "v1/pods",
        {
            **current,
            "metadata": {
                "name": vllm.name,
                "namespace": vllm.namespace,
                "uid": "a-new-uid",
                "labels": {"app": "vllm"},
            },
        },
    )
    outcome = harness.actions.quarantine(context, shell_alert(vllm), "inc", "r", dry_run=False)
    assert outcome.status is OutcomeStatus.POD_GONE and "replaced" in outcome.detail
    stored = harness.stored("v1/pods", vllm.namespace, vllm.name)
    assert stored is not None and LABEL not in stored["metadata"]["labels"]


def test_deleted_pod_ends_as_pod_gone(
    harness: Harness, seeded: tuple[RunningCluster, dict[str, SeededPod], str]
) -> None:
    vllm = seeded[1]["vllm"]
    context = harness.pod(vllm)
    harness.fail(Fault(status=404, method="PATCH", plural="pods", message='pods "vllm-0" not found'))
    outcome = harness.actions.quarantine(context, shell_alert(vllm), "inc", "r", dry_run=False)
    assert outcome.status is OutcomeStatus.POD_GONE


def test_rbac_denial_is_a_recorded_failure_and_changes_nothing(
    harness: Harness, seeded: tuple[RunningCluster, dict[str, SeededPod], str]
) -> None:
    vllm = seeded[1]["vllm"]
    harness.fail(Fault(status=403, method="PATCH", plural="pods", times=10, message="pods is forbidden"))
    outcome = harness.actions.quarantine(harness.pod(vllm), shell_alert(vllm), "inc", "r", dry_run=False)
    assert outcome.status is OutcomeStatus.FAILED
    assert "forbidden by RBAC" in outcome.detail
    stored = harness.stored("v1/pods", vllm.namespace, vllm.name)
    assert stored is not None and LABEL not in stored["metadata"]["labels"]
    assert "QuarantineFailed" in [e["reason"] for e in harness.events(vllm.namespace)]


def test_server_errors_are_retried(
    harness: Harness, seeded: tuple[RunningCluster, dict[str, SeededPod], str]
) -> None:
    vllm = seeded[1]["vllm"]
    harness.fail(Fault(status=503, method="PATCH", plural="pods", times=2))
    outcome = harness.actions.quarantine(harness.pod(vllm), shell_alert(vllm), "inc", "r", dry_run=False)
    assert outcome.status is OutcomeStatus.QUARANTINED


def test_persistent_server_errors_end_in_failure_not_a_crash(
    harness: Harness, seeded: tuple[RunningCluster, dict[str, SeededPod], str]
) -> None:
    vllm = seeded[1]["vllm"]
    harness.fail(Fault(status=500, method="POST", plural="networkpolicies", times=3))  # every attempt
    outcome = harness.actions.quarantine(harness.pod(vllm), shell_alert(vllm), "inc", "r", dry_run=False)
    # FAILED (decided again on a later repeat), though the label went on first: it says so.
    assert outcome.status is OutcomeStatus.FAILED and "HTTP 500" in outcome.detail
    assert "the pod is labelled, but NetworkPolicy serving-guard-quarantine is not ensured" in outcome.detail
    stored = harness.stored("v1/pods", vllm.namespace, vllm.name)
    assert stored is not None and stored["metadata"]["labels"][LABEL] == "true"
    assert harness.stored(NP, vllm.namespace, "serving-guard-quarantine") is None
    again = harness.actions.quarantine(harness.pod(vllm), shell_alert(vllm), "inc", "r", dry_run=False)
    assert again.status is OutcomeStatus.QUARANTINED and "created NetworkPolicy" in again.detail


def test_the_label_goes_first_and_one_policy_listing_serves_both_checks(
    harness: Harness, seeded: tuple[RunningCluster, dict[str, SeededPod], str]
) -> None:
    """Where the deny-all policy exists, the pod is labelled by the first call after enrichment:
    its isolation does not wait for a read of the policy."""
    vllm = seeded[1]["vllm"]
    context = harness.pod(vllm)
    harness.actions.ensure_deny_all(vllm.namespace)
    calls = harness.record_calls()
    outcome = harness.actions.quarantine(context, shell_alert(vllm), "inc", "r", dry_run=False)
    assert outcome.status is OutcomeStatus.QUARANTINED
    namespace = f"/namespaces/{vllm.namespace}"
    assert calls == [
        ("PATCH", f"/api/v1{namespace}/pods/{vllm.name}"),
        ("GET", f"/apis/networking.k8s.io/v1{namespace}/networkpolicies"),
        ("GET", f"/api/v1{namespace}/pods/{vllm.name}"),  # its label still on after the leak check
        ("GET", "/apis"),  # other policy APIs, last (and cached): the pod is isolated first
        ("POST", f"/api/v1{namespace}/events"),
    ]


def test_a_failed_policy_listing_still_ensures_the_deny_all_policy(
    harness: Harness, seeded: tuple[RunningCluster, dict[str, SeededPod], str]
) -> None:
    vllm = seeded[1]["vllm"]
    harness.fail(Fault(status=403, plural="networkpolicies", action="list", times=10, message="forbidden"))
    outcome = harness.actions.quarantine(harness.pod(vllm), shell_alert(vllm), "inc", "r", dry_run=False)
    assert outcome.status is OutcomeStatus.LEAKY
    assert "created NetworkPolicy serving-guard-quarantine" in outcome.detail
    assert "isolation not proven" in outcome.detail and "could not be checked" in outcome.detail
    created = harness.stored(NP, vllm.namespace, "serving-guard-quarantine")
    assert created is not None and created["spec"]["podSelector"] == {"matchLabels": {LABEL: "true"}}


def test_dry_run_writes_nothing_but_predicts_the_leak(
    harness: Harness, seeded: tuple[RunningCluster, dict[str, SeededPod], str]
) -> None:
    triton = seeded[1]["triton"]
    outcome = harness.actions.quarantine(harness.pod(triton), shell_alert(triton), "inc", "r", dry_run=True)
    assert outcome.status is OutcomeStatus.DRY_RUN
    assert outcome.leaky_policies == (LEAKY_POLICY,)
    assert harness.stored(NP, triton.namespace, "serving-guard-quarantine") is None
    stored = harness.stored("v1/pods", triton.namespace, triton.name)
    assert stored is not None and LABEL not in stored["metadata"]["labels"]


def test_dry_run_on_a_pod_already_quarantined_says_so(
    harness: Harness, seeded: tuple[RunningCluster, dict[str, SeededPod], str]
) -> None:
    vllm = seeded[1]["vllm"]
    enforced = harness.actions.quarantine(harness.pod(vllm), shell_alert(vllm), "inc-1", "r", dry_run=False)
    assert enforced.status is OutcomeStatus.QUARANTINED
    predicted = harness.actions.quarantine(harness.pod(vllm), shell_alert(vllm), "inc-2", "r", dry_run=True)
    assert predicted.status is OutcomeStatus.DRY_RUN
    assert predicted.detail == "the pod is already labelled into serving-guard-quarantine"
    # Slack does not offer the quarantine by hand as if it would isolate the pod (review-oncall 7).
    trial = make_report(decision=make_decision(dry_run=True), outcomes=(predicted,))
    assert trial.predicted_in_cut
    text = text_of(render_incident(trial))
    assert "*The pod is in this cut already* (another incident's quarantine, or a person's): nothing" in text
    assert "*To quarantine it by hand*" not in text
    fresh = harness.actions.quarantine(
        harness.pod(seeded[1]["triton"]), shell_alert(vllm), "inc-3", "r", dry_run=True
    )
    assert not make_report(decision=make_decision(dry_run=True), outcomes=(fresh,)).predicted_in_cut


def test_a_prediction_on_a_pod_in_its_cut_but_leaky_still_offers_the_quarantine(
    harness: Harness, seeded: tuple[RunningCluster, dict[str, SeededPod], str]
) -> None:
    """In its cut, but LEAKY through a policy: not "nothing more to do" (review-session-47 M2)."""
    triton = seeded[1]["triton"]
    harness.actions.quarantine(harness.pod(triton), shell_alert(triton), "inc-1", "r", dry_run=False)
    predicted = harness.actions.quarantine(
        harness.pod(triton), shell_alert(triton), "inc-2", "r", dry_run=True
    )
    assert predicted.leaky_policies == (LEAKY_POLICY,)
    trial = make_report(decision=make_decision(dry_run=True), outcomes=(predicted,))
    assert not trial.predicted_in_cut
    assert "nothing more to do" not in text_of(render_incident(trial))


def test_annotate_records_without_isolating(
    harness: Harness, seeded: tuple[RunningCluster, dict[str, SeededPod], str]
) -> None:
    torchserve = seeded[1]["torchserve"]
    outcome = harness.actions.annotate(
        harness.pod(torchserve), shell_alert(torchserve), "inc-9", "pip install", dry_run=False
    )
    assert outcome.status is OutcomeStatus.ANNOTATED
    stored = harness.stored("v1/pods", torchserve.namespace, torchserve.name)
    assert stored is not None
    assert stored["metadata"]["annotations"]["serving-guard.io/reason"] == "pip install"
    assert LABEL not in stored["metadata"]["labels"]


def test_dry_run_annotate_writes_nothing_at_all(
    harness: Harness, seeded: tuple[RunningCluster, dict[str, SeededPod], str]
) -> None:
    """Dry-run changes nothing: no annotation on the pod and no Event, only the outcome saying so."""
    torchserve = seeded[1]["torchserve"]
    context = harness.pod(torchserve)
    calls = harness.record_calls()
    outcome = harness.actions.annotate(context, shell_alert(torchserve), "inc-9", "pip install", dry_run=True)
    assert outcome.status is OutcomeStatus.DRY_RUN and outcome.action == "annotate"
    assert outcome.describe() == "dry-run: would annotate"
    assert outcome.detail == "would record the finding in the pod's annotations"
    assert calls == []
    stored = harness.stored("v1/pods", torchserve.namespace, torchserve.name)
    assert stored is not None and "serving-guard.io/reason" not in (
        stored["metadata"].get("annotations") or {}
    )
    assert harness.events(torchserve.namespace) == []


def test_names_from_alerts_cannot_escape_the_url_path(harness: Harness, tmp_path: Path) -> None:
    result = harness.directory.lookup("ml-serving", "../../../api/v1/namespaces/kube-system/pods/x")
    assert result.status in (LookupStatus.NOT_FOUND, LookupStatus.FAILED)


def test_a_policy_listing_that_fails_after_the_label_is_leaky_not_failed(
    harness: Harness, seeded: tuple[RunningCluster, dict[str, SeededPod], str]
) -> None:
    vllm = seeded[1]["vllm"]
    context = harness.pod(vllm)
    harness.actions.ensure_deny_all(vllm.namespace)
    harness.fail(Fault(status=403, plural="networkpolicies", action="list", times=10, message="forbidden"))
    outcome = harness.actions.quarantine(context, shell_alert(vllm), "inc", "r", dry_run=False)
    assert outcome.status is OutcomeStatus.LEAKY
    assert "isolation not proven" in outcome.detail and "could not be checked" in outcome.detail
    assert "LEAKY quarantine: " in outcome.describe()
    stored = harness.stored("v1/pods", vllm.namespace, vllm.name)
    assert stored is not None and stored["metadata"]["labels"][LABEL] == "true"


def test_a_host_network_pod_is_never_reported_isolated(
    harness: Harness, seeded: tuple[RunningCluster, dict[str, SeededPod], str]
) -> None:
    vllm = seeded[1]["vllm"]
    harness.on_host_network(vllm)
    outcome = harness.actions.quarantine(harness.pod(vllm), shell_alert(vllm), "inc", "r", dry_run=False)
    assert outcome.status is OutcomeStatus.LEAKY
    assert "host network" in outcome.detail


def test_an_egress_quarantine_cuts_egress_and_lets_the_pod_serve(
    seeded: tuple[RunningCluster, dict[str, SeededPod], str],
) -> None:
    running, pods, kubeconfig = seeded
    harness = Harness(running, kubeconfig, Quarantine(isolate=Isolation.EGRESS))
    triton = pods["triton"]
    outcome = harness.actions.quarantine(harness.pod(triton), shell_alert(triton), "inc", "r", dry_run=False)
    # The gateway's policy allows ingress only, which an egress cut leaves alone: not a leak.
    assert outcome.status is OutcomeStatus.QUARANTINED, outcome.detail
    assert outcome.cut_only == "egress" and outcome.describe() == "quarantined (egress cut)"
    created = harness.stored(NP, triton.namespace, "serving-guard-quarantine-egress")
    assert created is not None and created["spec"] == {
        "podSelector": {"matchLabels": {LABEL: "true-egress"}},
        "policyTypes": ["Egress"],
    }
    # A policy that lets the pod send is a leak, by name and direction.
    harness.put_policy(
        triton.namespace,
        "egress-anywhere",
        {"podSelector": {}, "policyTypes": ["Egress"], "egress": [{}]},
    )
    leaky = harness.actions.quarantine(harness.pod(triton), shell_alert(triton), "inc", "r", dry_run=False)
    assert leaky.status is OutcomeStatus.LEAKY and leaky.leaky_policies == ("egress-anywhere",)
    assert "egress-anywhere allows egress" in leaky.detail


def test_an_egress_quarantine_never_patches_away_the_pods_ingress_isolation(
    seeded: tuple[RunningCluster, dict[str, SeededPod], str],
) -> None:
    """Excluding quarantined pods from a policy that restricts both directions would lift its
    ingress restriction too, for every quarantined pod of the namespace: such a policy is left as
    it is and named in a LEAKY outcome that says why. An egress-only policy is patched."""
    running, pods, kubeconfig = seeded
    harness = Harness(running, kubeconfig, Quarantine(isolate=Isolation.EGRESS, patch_other_policies=True))
    vllm = pods["vllm"]
    both_ways = {
        "podSelector": {},
        "policyTypes": ["Ingress", "Egress"],
        "ingress": [{"ports": [{"protocol": "TCP", "port": 8000}]}],
        "egress": [{"ports": [{"protocol": "UDP", "port": 53}]}],
    }
    harness.put_policy(vllm.namespace, "namespace-baseline", both_ways)
    egress_only = {"podSelector": {}, "policyTypes": ["Egress"], "egress": [{}]}
    harness.put_policy(vllm.namespace, "egress-anywhere", egress_only)

    outcome = harness.actions.quarantine(harness.pod(vllm), shell_alert(vllm), "inc", "r", dry_run=False)
    assert outcome.status is OutcomeStatus.LEAKY and outcome.leaky_policies == ("namespace-baseline",)
    assert outcome.patched_policies == ("egress-anywhere",)
    assert "not patched: it also restricts ingress" in outcome.detail
    assert outcome.extra["not_patched"] == ["namespace-baseline"]
    baseline = harness.stored(NP, vllm.namespace, "namespace-baseline")
    assert baseline is not None and baseline["spec"]["podSelector"] == {}
    patched = harness.stored(NP, vllm.namespace, "egress-anywhere")
    assert patched is not None and patched["spec"]["podSelector"]["matchExpressions"] == [
        {"key": LABEL, "operator": "NotIn", "values": ["true", "true-egress"]}
    ]


def test_a_one_way_cut_names_exclusions_left_from_a_cut_of_both_ways_until_release_undoes_them(
    seeded: tuple[RunningCluster, dict[str, SeededPod], str],
) -> None:
    """A policy an earlier version patched (`DoesNotExist`) for a pod quarantined both ways still
    excludes every quarantined pod, so it no longer applies its ingress rules to an egress-cut one
    either, whose ingress may be open to all. The outcome names it (the egress cut itself holds);
    releasing the namespace's quarantined pods undoes the patch, and from then on the policy is
    left alone and reported as an egress leak, as on a fresh install."""
    running, pods, kubeconfig = seeded
    triton, vllm = pods["triton"], pods["vllm"]
    both_ways = {
        "podSelector": {},
        "policyTypes": ["Ingress", "Egress"],
        "ingress": [{"ports": [{"protocol": "TCP", "port": 8000}]}],
        "egress": [{"ports": [{"protocol": "UDP", "port": 53}]}],
    }
    before = Harness(running, kubeconfig, Quarantine(patch_other_policies=True))
    baseline = {"metadata": {"name": "namespace-baseline", "namespace": triton.namespace}, "spec": both_ways}
    legacy = legacy_patched(
        {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", **baseline}, LABEL
    )
    before.running.call(before.running.emulator.put_object, NP, legacy)
    first = before.actions.quarantine(before.pod(triton), shell_alert(triton), "inc-1", "r", dry_run=False)
    assert first.status is OutcomeStatus.QUARANTINED and first.excluded_beyond == ()

    after = Harness(running, kubeconfig, Quarantine(isolate=Isolation.EGRESS, patch_other_policies=True))
    predicted = after.actions.quarantine(after.pod(vllm), shell_alert(vllm), "inc-2", "r", dry_run=True)
    assert predicted.status is OutcomeStatus.DRY_RUN and predicted.excluded_beyond == ("namespace-baseline",)
    assert "namespace-baseline still exclude quarantined pods" in predicted.detail
    outcome = after.actions.quarantine(after.pod(vllm), shell_alert(vllm), "inc-2", "r", dry_run=False)
    assert outcome.status is OutcomeStatus.QUARANTINED, outcome.detail
    assert outcome.excluded_beyond == ("namespace-baseline",)
    assert "namespace-baseline still exclude quarantined pods" in outcome.detail
    assert "their ingress rules no longer apply to this pod" in outcome.detail
    assert outcome.describe() == "quarantined (egress cut) (excluded beyond the cut by namespace-baseline)"

    for pod in (triton, vllm):
        assert after.actions.release(pod.namespace, pod.name, by="alice", reason="isolate changed").ok
    restored = after.stored(NP, vllm.namespace, "namespace-baseline")
    assert restored is not None and restored["spec"]["podSelector"] == {}

    again = after.actions.quarantine(after.pod(vllm), shell_alert(vllm), "inc-3", "r", dry_run=False)
    assert again.excluded_beyond == ()
    assert again.status is OutcomeStatus.LEAKY and again.leaky_policies == ("namespace-baseline",)
    assert again.extra["not_patched"] == ["namespace-baseline"]


def test_a_policys_own_cut_has_its_own_label_value_and_deny_all_policy(
    seeded: tuple[RunningCluster, dict[str, SeededPod], str],
) -> None:
    """Cuts per policy: both is label_value into network_policy; a one-way cut is
    label_value-<cut> into network_policy-<cut>, a policy of that cut's types alone."""
    running, pods, kubeconfig = seeded
    harness = Harness(running, kubeconfig)  # quarantine.isolate: both
    vllm = pods["vllm"]
    outcome = harness.actions.quarantine(
        harness.pod(vllm), shell_alert(vllm), "inc", "r", dry_run=False, isolate=Isolation.EGRESS
    )
    assert outcome.status is OutcomeStatus.QUARANTINED, outcome.detail
    assert outcome.describe() == "quarantined (egress cut)"
    assert "created NetworkPolicy serving-guard-quarantine-egress" in outcome.detail
    stored = harness.stored("v1/pods", vllm.namespace, vllm.name)
    assert stored is not None and stored["metadata"]["labels"][LABEL] == "true-egress"
    egress = harness.stored(NP, vllm.namespace, "serving-guard-quarantine-egress")
    assert egress is not None and egress["spec"] == {
        "podSelector": {"matchLabels": {LABEL: "true-egress"}},
        "policyTypes": ["Egress"],
    }
    # The configured cut's policy is not needed for it, and not made.
    assert harness.stored(NP, vllm.namespace, "serving-guard-quarantine") is None


def test_a_quarantine_is_widened_never_narrowed(
    seeded: tuple[RunningCluster, dict[str, SeededPod], str],
) -> None:
    running, pods, kubeconfig = seeded
    harness = Harness(running, kubeconfig)
    vllm = pods["vllm"]

    def quarantine(isolate: Isolation, *, dry_run: bool = False) -> Any:
        return harness.actions.quarantine(
            harness.pod(vllm), shell_alert(vllm), "inc", "r", dry_run=dry_run, isolate=isolate
        )

    def label() -> str:
        stored = harness.stored("v1/pods", vllm.namespace, vllm.name)
        assert stored is not None
        return str(stored["metadata"]["labels"][LABEL])

    assert quarantine(Isolation.EGRESS).cut_only == "egress" and label() == "true-egress"
    # An ingress cut on a pod whose egress is cut: both ways, and said so (predicted first).
    predicted = quarantine(Isolation.INGRESS, dry_run=True)
    assert predicted.detail.startswith(
        "would widen its egress cut to both: label the pod into serving-guard-quarantine"
    )
    widened = quarantine(Isolation.INGRESS)
    assert widened.status is OutcomeStatus.QUARANTINED and widened.cut_only is None
    assert "widened its egress cut to both" in widened.detail and label() == "true"
    # A narrower cut asked for later changes nothing: the pod stays isolated both ways.
    again = quarantine(Isolation.EGRESS)
    assert again.status is OutcomeStatus.QUARANTINED and again.cut_only is None
    assert "widened" not in again.detail and label() == "true"
    assert quarantine(Isolation.EGRESS, dry_run=True).detail.startswith(
        "the pod is already labelled into serving-guard-quarantine"
    )
    # Released whatever its cut; the label's other values are ours too (is it quarantined?).
    released = harness.actions.release(vllm.namespace, vllm.name, by="carol", reason="done")
    assert released.status is OutcomeStatus.RELEASED and "released by carol" in released.detail
    quarantine(Isolation.EGRESS)
    assert Quarantine().cut_of(label()) is Isolation.EGRESS
    assert Quarantine().cut_of("false") is None and Quarantine().cut_of(None) is None
    harness.actions.release(vllm.namespace, vllm.name, by="carol", reason="done")
    stored = harness.stored("v1/pods", vllm.namespace, vllm.name)
    assert stored is not None and LABEL not in stored["metadata"]["labels"]


def test_a_release_the_read_missed_holds_against_an_alert_from_before_it(
    harness: Harness, seeded: tuple[RunningCluster, dict[str, SeededPod], str]
) -> None:
    """The decision withholds an alert whose event came before a release its read of the pod shows;
    a cached read (taken before the release) does not show it. The label's compare-and-set then
    meets the release as a conflict, and the pod read afresh holds it: an alert from before the
    release gives way to it (as the decision would have), one from after it quarantines again."""
    vllm = seeded[1]["vllm"]

    def label() -> str | None:
        stored = harness.stored("v1/pods", vllm.namespace, vllm.name)
        assert stored is not None
        return stored["metadata"]["labels"].get(LABEL)  # type: ignore[no-any-return]

    now = shell_alert(vllm)
    assert harness.actions.quarantine(harness.pod(vllm), now, "inc-1", "r", dry_run=False).labelled
    cached = harness.pod(vllm)  # read before the release
    released = harness.actions.release(vllm.namespace, vllm.name, by="alice", reason="false positive")
    assert released.status is OutcomeStatus.RELEASED and label() is None
    # An alert taken up late: its event 10 minutes before the release (past the clocks' allowed skew).
    late = dataclasses.replace(now, time_ns=now.time_ns - 600 * 10**9)
    withheld = harness.actions.quarantine(cached, late, "inc-2", "r", dry_run=False)
    assert withheld.status is OutcomeStatus.WITHHELD and not withheld.labelled
    assert withheld.detail.startswith("the pod was released by alice at ")
    assert withheld.detail.endswith(": not isolated again on it; quarantine it by hand if it should be")
    assert label() is None
    still = harness.pod(vllm)
    assert still.annotations.get("serving-guard.io/released-by") == "alice"
    # An alert from within the clocks' allowed skew of the release (or after it) is newer word on
    # the pod than the release: it is quarantined again.
    again = harness.actions.quarantine(cached, now, "inc-3", "r", dry_run=False)
    assert again.status is OutcomeStatus.QUARANTINED and label() == "true"


def test_a_stale_read_never_narrows_a_quarantine_made_meanwhile(
    harness: Harness, seeded: tuple[RunningCluster, dict[str, SeededPod], str]
) -> None:
    """The label is a compare-and-set on the pod's version: read unlabelled, quarantined both ways
    meanwhile (a person by hand, another replica), then labelled for an egress cut from the stale
    read: the patch is refused, the pod read again, and it stays cut both ways."""
    vllm = seeded[1]["vllm"]
    stale = harness.pod(vllm)
    meanwhile = harness.actions.quarantine(harness.pod(vllm), shell_alert(vllm), "inc", "r", dry_run=False)
    assert meanwhile.status is OutcomeStatus.QUARANTINED and meanwhile.cut_only is None
    calls = harness.record_calls()
    outcome = harness.actions.quarantine(
        stale, shell_alert(vllm), "inc", "r", dry_run=False, isolate=Isolation.EGRESS
    )
    assert outcome.status is OutcomeStatus.QUARANTINED and outcome.cut_only is None, outcome.detail
    stored = harness.stored("v1/pods", vllm.namespace, vllm.name)
    assert stored is not None and stored["metadata"]["labels"][LABEL] == "true"
    pod_path = f"/api/v1/namespaces/{vllm.namespace}/pods/{vllm.name}"
    assert calls[:3] == [("PATCH", pod_path), ("GET", pod_path), ("PATCH", pod_path)]


def test_a_pod_that_changes_under_every_attempt_is_a_failed_quarantine_not_a_guess(
    harness: Harness, seeded: tuple[RunningCluster, dict[str, SeededPod], str]
) -> None:
    vllm = seeded[1]["vllm"]
    harness.fail(Fault(409, method="PATCH", plural="pods", name=vllm.name, times=3, message="modified"))
    outcome = harness.actions.quarantine(harness.pod(vllm), shell_alert(vllm), "inc", "r", dry_run=False)
    assert outcome.status is OutcomeStatus.FAILED
    assert outcome.detail == "the pod changed under each of 3 attempts to label it"
    stored = harness.stored("v1/pods", vllm.namespace, vllm.name)
    assert stored is not None and LABEL not in stored["metadata"]["labels"]


def test_a_dry_run_on_a_host_network_pod_predicts_it_leaky(
    harness: Harness, seeded: tuple[RunningCluster, dict[str, SeededPod], str]
) -> None:
    """hostNetwork cannot change on a running pod, so the read of the pod is enough to say it."""
    vllm = seeded[1]["vllm"]
    harness.on_host_network(vllm)
    pod = harness.pod(vllm)
    assert pod.host_network
    predicted = harness.actions.quarantine(pod, shell_alert(vllm), "inc", "r", dry_run=True)
    assert predicted.status is OutcomeStatus.DRY_RUN
    assert "it would be LEAKY: the pod uses the host network" in predicted.detail
    assert pod_from_json(pod_to_json(pod)).host_network  # as the journal keeps it
    assert not pod_from_json({**pod_to_json(pod), "host_network": None}).host_network
