"""The admission policies that confine the responder's ServiceAccount (rbac.admissionPolicy): rendered
by default for that ServiceAccount only, and, with their CEL evaluated, they let through every write the
real responder makes (quarantine, annotate, block, repair, patching other policies, release, and the
Events telling each) and refuse what its RBAC would otherwise allow: a new image, another label or
annotation, any other policy, a label value no cut or pod key has, the exclusion on a deny-all, a block
policy it would not build, an Event about anything but a pod of its namespace or in another's name,
anything but a release (and its Event) in a namespace its guardrails keep it out of."""

from __future__ import annotations

import copy
import ipaddress
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import helm_python
import pytest

from responder.actions import destination, netpol
from responder.actions.events import EventRecorder
from responder.actions.quarantine import ClusterActions
from responder.alert import Alert
from responder.alert_json import alert_from_mapping
from responder.cluster.api import KubeGateway
from responder.cluster.context import PodContext
from responder.cluster.enrich import LookupStatus, PodDirectory
from responder.config import Cluster, Config, Isolation, Quarantine, Retry, load_config_text
from simulators.cluster_emulator import RunningCluster
from simulators.falco_json import falco_alert
from simulators.seed import ENFORCE_LABEL, LEAKY_POLICY, SeededPod, seed_serving_cluster
from tests.deploy.admission import AdmissionPolicy, Request, Verdict
from tests.deploy.deploy_support import CHART_DIR, NAMESPACE, RELEASE, Case, Rendered, render, with_test_image

POLICY_KINDS = ("ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding")
NP_GROUP = "networking.k8s.io"
RESOURCES = {
    "pods": "v1/pods",
    "networkpolicies": "networking.k8s.io/v1/networkpolicies",
    "events": "v1/events",
}
# The API group of each resource the responder writes (the admission request's).
GROUPS = {"pods": "", "events": "", "networkpolicies": NP_GROUP}
PATH = re.compile(
    r"^/apis?/(?:[^/]+/)?v1/namespaces/(?P<ns>[^/]+)/(?P<res>pods|networkpolicies|events)(?:/(?P<name>[^/?]+))?"
)
SOMEONE_ELSE = "kubernetes-admin"


def namespace_object(name: str, labels: dict[str, str] | None = None) -> dict[str, Any]:
    """A Namespace as the API server stores it (and hands to admission as namespaceObject)."""
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": name, "labels": {"kubernetes.io/metadata.name": name, **(labels or {})}},
    }


def opted_in(name: str) -> dict[str, Any]:
    return namespace_object(name, {ENFORCE_LABEL: "true"})


def _username(rendered: Rendered) -> str:
    account = rendered.one("ServiceAccount")["metadata"]
    return f"system:serviceaccount:{account['namespace']}:{account['name']}"


@dataclass(frozen=True)
class Policies:
    pods: AdmissionPolicy
    networkpolicies: AdmissionPolicy
    events: AdmissionPolicy
    username: str

    def decide(self, request: Request) -> Verdict:
        policy = {"pods": self.pods, "events": self.events}.get(request.resource, self.networkpolicies)
        return policy.decide(request)

    def update(
        self,
        resource: str,
        old: dict[str, Any],
        new: dict[str, Any],
        *,
        username: str | None = None,
        namespace: dict[str, Any] | None = None,
    ) -> Verdict:
        """An update, in ``namespace`` (default: the object's, opted in to enforcement)."""
        group = "" if resource == "pods" else NP_GROUP
        where = namespace or opted_in(new["metadata"]["namespace"])
        return self.decide(Request("UPDATE", username or self.username, group, resource, new, old, "", where))

    def create_policy(self, new: dict[str, Any], *, namespace: dict[str, Any] | None = None) -> Verdict:
        where = namespace or opted_in(new["metadata"]["namespace"])
        return self.decide(
            Request("CREATE", self.username, NP_GROUP, "networkpolicies", new, None, "", where)
        )

    def create_event(self, new: dict[str, Any], *, namespace: dict[str, Any] | None = None) -> Verdict:
        where = namespace or opted_in(new["metadata"]["namespace"])
        return self.decide(Request("CREATE", self.username, "", "events", new, None, "", where))


def policies_of(rendered: Rendered) -> Policies:
    found = {p["metadata"]["name"]: p for p in rendered.of_kind("ValidatingAdmissionPolicy")}
    fullname = rendered.one("ServiceAccount")["metadata"]["name"]
    return Policies(
        AdmissionPolicy(found[f"{fullname}-pod-changes"]),
        AdmissionPolicy(found[f"{fullname}-networkpolicy-changes"]),
        AdmissionPolicy(found[f"{fullname}-events"]),
        _username(rendered),
    )


# -- rendered -------------------------------------------------------------------------------------


def test_policies_and_bindings_are_rendered_for_the_responder_only(renders: dict[str, Rendered]) -> None:
    for case in ("defaults", "separate-namespace"):
        rendered = renders[case]
        username = _username(rendered)
        assert username == f"system:serviceaccount:{rendered.case.namespace}:{RELEASE}"
        policies = rendered.of_kind("ValidatingAdmissionPolicy")
        assert sorted(p["metadata"]["name"] for p in policies) == [
            f"{RELEASE}-events",
            f"{RELEASE}-networkpolicy-changes",
            f"{RELEASE}-pod-changes",
        ]
        bindings = {
            b["spec"]["policyName"]: b["spec"] for b in rendered.of_kind("ValidatingAdmissionPolicyBinding")
        }
        for policy in policies:
            spec = policy["spec"]
            assert spec["failurePolicy"] == "Fail"
            (condition,) = spec["matchConditions"]
            assert condition["expression"] == f'request.userInfo.username == "{username}"'
            # Bound cluster-wide and denying: no paramRef, no namespace left out.
            assert bindings[policy["metadata"]["name"]] == {
                "policyName": policy["metadata"]["name"],
                "validationActions": ["Deny"],
            }
        pod_rules = next(p for p in policies if p["metadata"]["name"].endswith("pod-changes"))
        assert pod_rules["spec"]["matchConstraints"]["resourceRules"] == [
            {
                "apiGroups": [""],
                "apiVersions": ["v1"],
                "operations": ["UPDATE"],
                "resources": ["pods", "pods/*"],
            }
        ]
        event_rules = next(p for p in policies if p["metadata"]["name"].endswith("-events"))
        assert event_rules["spec"]["matchConstraints"]["resourceRules"] == [
            {"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"], "resources": ["events"]}
        ]


def test_the_policies_can_be_turned_off(chart: helm_python.Chart) -> None:
    rendered = render(chart, Case("no-admission-policy", {"rbac": {"admissionPolicy": {"enabled": False}}}))
    assert rendered.of_kind(*POLICY_KINDS) == []


def test_kubernetes_older_than_1_30_is_refused_with_the_way_out(capfd: pytest.CaptureFixture[str]) -> None:
    # ValidatingAdmissionPolicy is GA (admissionregistration.k8s.io/v1) from 1.30 on. Only lint takes a
    # Kubernetes version here, and Helm's lint logs a template's `fail` (to go on linting) rather than
    # erroring as install does: its log is where the refusal shows.
    def refusal(values: dict[str, Any], kube_version: str) -> list[str]:
        capfd.readouterr()
        helm_python.lint(
            CHART_DIR, with_test_image(values), strict=True, namespace=NAMESPACE, kube_version=kube_version
        )
        return [
            line for line in capfd.readouterr().err.splitlines() if "rbac.admissionPolicy.enabled" in line
        ]

    (line,) = refusal({}, "v1.29.0")
    assert "need Kubernetes >= 1.30" in line and "this cluster is v1.29.0" in line
    assert "set rbac.admissionPolicy.enabled=false" in line
    assert refusal({}, "v1.30.0") == []
    assert refusal({"rbac": {"admissionPolicy": {"enabled": False}}}, "v1.29.0") == []


def test_names_from_values_reach_the_cel_as_literals(chart: helm_python.Chart) -> None:
    values = {
        "fullnameOverride": "sg",
        "quarantine": {"label": "example.com/isolate", "labelValue": "yes", "networkPolicyName": "cut"},
        "blockDestination": {"label": "example.com/cut-off", "networkPolicyPrefix": "nope"},
    }
    rendered = render(chart, Case("custom-names", values, namespace="security"))
    policies = policies_of(rendered)
    assert policies.username == "system:serviceaccount:security:sg"
    pod = _pod()
    assert policies.update("pods", pod, _relabelled(pod, {"example.com/isolate": "yes"})).allowed
    assert policies.update("pods", pod, _relabelled(pod, {"example.com/cut-off": "0123456789ab"})).allowed
    # The default names are nobody's now.
    assert _refused(policies.update("pods", pod, _relabelled(pod, {"serving-guard.io/quarantine": "true"})))
    deny_all = {
        "podSelector": {"matchLabels": {"example.com/isolate": "yes"}},
        "policyTypes": ["Ingress", "Egress"],
    }
    assert policies.create_policy(_netpol("cut", deny_all)).allowed
    assert _refused(policies.create_policy(_netpol("serving-guard-quarantine", deny_all)))


# -- the responder's own writes pass --------------------------------------------------------------


def _pod() -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "model-0",
            "namespace": "models",
            "uid": "5f0c7d2e-0000-4000-8000-000000000001",
            "resourceVersion": "41",
            "labels": {"app": "model", "serving-guard.io/serving": "true"},
            "annotations": {"team": "ml"},
            "ownerReferences": [
                {"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "model", "uid": "s-1"}
            ],
        },
        "spec": {"containers": [{"name": "server", "image": "vllm/vllm-openai:v0.5.0"}]},
    }


def _relabelled(pod: dict[str, Any], labels: dict[str, str | None]) -> dict[str, Any]:
    changed = copy.deepcopy(pod)
    for key, value in labels.items():
        if value is None:
            changed["metadata"]["labels"].pop(key, None)
        else:
            changed["metadata"]["labels"][key] = value
    return changed


def _netpol(name: str, spec: dict[str, Any], **metadata: Any) -> dict[str, Any]:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": name, "namespace": "models", **metadata},
        "spec": spec,
    }


@dataclass(frozen=True)
class Write:
    verb: str
    resource: str
    old: dict[str, Any] | None
    new: dict[str, Any]
    namespace: dict[str, Any] | None  # the Namespace object, as admission is given it


class Recorder:
    """The responder's gateway, every write to a pod, a NetworkPolicy or an Event kept as the API
    server's admission sees it: the object before and after."""

    def __init__(self, running: RunningCluster, gateway: KubeGateway) -> None:
        self.running = running
        self.writes: list[Write] = []
        send = gateway.request

        def recording(verb: str, path: str, **kwargs: Any) -> Any:
            match = PATH.match(path)
            if verb not in ("POST", "PUT", "PATCH") or match is None:
                return send(verb, path, **kwargs)
            resource, namespace = match["res"], match["ns"]
            if resource == "events":  # named by generateName: the created object is the answer
                answer = send(verb, path, **kwargs)
                self.writes.append(
                    Write(
                        verb,
                        resource,
                        None,
                        answer,
                        copy.deepcopy(self.running.emulator.namespaces.get(namespace)),
                    )
                )
                return answer
            name = match["name"] or kwargs["body"]["metadata"]["name"]
            old = self.stored(resource, namespace, name) if verb != "POST" else None
            answer = send(verb, path, **kwargs)  # a refusal (409) raises: nothing was written
            new = self.stored(resource, namespace, name)
            assert new is not None
            where = copy.deepcopy(self.running.emulator.namespaces.get(namespace))
            self.writes.append(Write(verb, resource, old, new, where))
            return answer

        gateway.request = recording  # type: ignore[method-assign]

    def stored(self, resource: str, namespace: str, name: str) -> dict[str, Any] | None:
        found = self.running.call(self.running.emulator.get_object, RESOURCES[resource], namespace, name)
        return found if isinstance(found, dict) else None


@pytest.fixture
def seeded_cluster(tmp_path: Path) -> Iterator[tuple[RunningCluster, dict[str, SeededPod], str]]:
    with RunningCluster() as running:
        pods = running.call(seed_serving_cluster, running.emulator)
        yield running, pods, running.write_kubeconfig(str(tmp_path / "kubeconfig.json"))


def _responder_writes(
    chart: helm_python.Chart,
    values: dict[str, Any],
    seeded_cluster: tuple[RunningCluster, dict[str, SeededPod], str],
) -> tuple[Policies, list[Write]]:
    """Every write of the real responder, configured by the chart's config for ``values``, through
    quarantines (two cuts), a repair, other policies patched and restored, an annotation, two
    destination blocks, and releases."""
    running, pods, kubeconfig = seeded_cluster
    rendered = render(chart, Case("responder-writes", values))
    config: Config = load_config_text(rendered.config_text())
    gateway = KubeGateway.from_config(
        Cluster(kubeconfig=kubeconfig, retry=Retry(attempts=3, initial_backoff_seconds=0.01))
    )
    recorder = Recorder(running, gateway)
    actions = ClusterActions.of_config(gateway, config)
    directory = PodDirectory(gateway, ttl_seconds=0)

    def pod(short: str) -> PodContext:
        lookup = directory.lookup(pods[short].namespace, pods[short].name)
        assert lookup.status is LookupStatus.FOUND and lookup.pod is not None
        return lookup.pod

    def shell(short: str) -> Alert:
        return alert_from_mapping(
            falco_alert(pods[short], "Shell in serving pod", "Warning", "x", {"proc.name": "sh"})
        )

    def egress(short: str, address: str) -> Alert:
        fields = {"fd.sip": address}
        return alert_from_mapping(
            falco_alert(pods[short], "Anomalous egress from serving pod", "Warning", "x", fields)
        )

    namespace = pods["triton"].namespace
    actions.quarantine(pod("triton"), shell("triton"), "inc-1", "shell", dry_run=False)
    actions.annotate(pod("torchserve"), shell("torchserve"), "inc-2", "noted", dry_run=False)
    actions.block_destination(pod("vllm"), egress("vllm", "203.0.113.7"), dry_run=False)
    actions.block_destination(pod("vllm"), egress("vllm", "203.0.113.8"), dry_run=False)
    vllm_egress = egress("vllm", "198.51.100.1")
    actions.quarantine(pod("vllm"), vllm_egress, "inc-3", "egress", dry_run=False, isolate=Isolation.EGRESS)
    # Someone opens the quarantine policy; the next quarantine repairs it.
    tampered = recorder.stored("networkpolicies", namespace, config.quarantine.network_policy)
    assert tampered is not None
    tampered["spec"]["egress"] = [{}]
    running.call(running.emulator.put_object, RESOURCES["networkpolicies"], tampered)
    actions.quarantine(pod("kserve"), shell("kserve"), "inc-4", "shell", dry_run=False)
    for short in ("vllm", "kserve", "triton"):
        actions.release(namespace, pods[short].name, by="alice", reason="investigated")
    return policies_of(rendered), recorder.writes


def test_every_write_the_responder_makes_is_admitted(
    chart: helm_python.Chart, seeded_cluster: tuple[RunningCluster, dict[str, SeededPod], str]
) -> None:
    # A policy cutting egress only: the chart's config then names every cut's policy.
    egress_only = {
        "name": "egress",
        "match": {"rules": ["Anomalous egress*"]},
        "actions": ["notify", "quarantine"],
        "isolate": "egress",
    }
    values = {"quarantine": {"patchOtherPolicies": True}, "policies": [egress_only]}
    policies, writes = _responder_writes(chart, values, seeded_cluster)
    refused = []
    for write in writes:
        operation = "CREATE" if write.verb == "POST" else "UPDATE"
        assert write.namespace is not None, write
        verdict = policies.decide(
            Request(
                operation,
                policies.username,
                GROUPS[write.resource],
                write.resource,
                write.new,
                write.old,
                "",
                write.namespace,
            )
        )
        assert verdict.applies, write
        if not verdict.allowed:
            refused.append((write.verb, write.resource, write.new["metadata"]["name"], verdict.denials))
    assert refused == []
    # Guards the guard: each kind of write the policies must let through was made.
    made = {(w.verb, w.resource, _kind_of(w)) for w in writes}
    assert {
        ("PATCH", "pods", "pod"),
        ("POST", "networkpolicies", "quarantine"),
        ("PUT", "networkpolicies", "quarantine"),  # the repair
        ("POST", "networkpolicies", "block"),
        ("PUT", "networkpolicies", "block"),  # a second address, then the release's clear
        ("PUT", "networkpolicies", "other"),  # the exclusion, then its removal
        ("POST", "events", "event"),
    } <= made
    reasons = {w.new["reason"] for w in writes if w.resource == "events"}
    assert {"Quarantined", "SecurityFinding", "DestinationBlocked", "QuarantineReleased"} <= reasons
    patched_other = [w for w in writes if _kind_of(w) == "other"]
    assert {w.new["metadata"]["name"] for w in patched_other} == {LEAKY_POLICY}
    assert len(patched_other) == 2


def _kind_of(write: Write) -> str:
    name = write.new["metadata"]["name"]
    if write.resource in ("pods", "events"):
        return write.resource[:-1]
    if name.startswith("serving-guard-quarantine"):
        return "quarantine"
    return "block" if name.startswith("serving-guard-block-") else "other"


# -- what RBAC alone would allow is refused ---------------------------------------------------------


def _refused(verdict: Verdict) -> bool:
    """Refused by a rule, not by an expression that failed to evaluate (failurePolicy Fail)."""
    return verdict.applies and bool(verdict.denials) and not any("(error:" in d for d in verdict.denials)


def _changed(pod: dict[str, Any], change: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    changed = copy.deepcopy(pod)
    change(changed)
    return changed


POD_ABUSE: dict[str, tuple[Callable[[dict[str, Any]], None], str]] = {
    "new image": (lambda p: p["spec"]["containers"][0].update(image="evil/miner:1"), "spec"),
    "new container": (lambda p: p["spec"]["containers"].append({"name": "x", "image": "evil"}), "spec"),
    "another label": (lambda p: p["metadata"]["labels"].update(role="admin"), "pod labels"),
    "a label changed": (lambda p: p["metadata"]["labels"].update(app="other"), "pod labels"),
    "a label removed": (lambda p: p["metadata"]["labels"].pop("app"), "pod labels"),
    "another annotation": (
        lambda p: p["metadata"]["annotations"].update({"sidecar.istio.io/inject": "false"}),
        "annotations",
    ),
    "an annotation removed": (lambda p: p["metadata"]["annotations"].pop("team"), "annotations"),
    "owner dropped": (lambda p: p["metadata"].pop("ownerReferences"), "ownerReferences"),
    "finalizer added": (lambda p: p["metadata"].update(finalizers=["example.com/hold"]), "finalizers"),
}


@pytest.mark.parametrize("abuse", sorted(POD_ABUSE))
def test_pod_changes_beyond_the_responders_are_refused(renders: dict[str, Rendered], abuse: str) -> None:
    policies = policies_of(renders["defaults"])
    change, named = POD_ABUSE[abuse]
    pod = _pod()
    # Even alongside a quarantine label, which alone passes.
    quarantined = _relabelled(pod, {"serving-guard.io/quarantine": "true"})
    assert policies.update("pods", pod, quarantined).allowed
    verdict = policies.update("pods", pod, _changed(quarantined, change))
    assert not verdict.allowed and any(named in denial for denial in verdict.denials), verdict
    # Anyone else is not this policy's business (RBAC and other admission decide).
    assert not policies.update("pods", pod, _changed(pod, change), username=SOMEONE_ELSE).applies


def test_pod_subresources_are_refused(renders: dict[str, Rendered]) -> None:
    policies = policies_of(renders["defaults"])
    pod = _pod()
    debug = _changed(
        pod, lambda p: p["spec"].update(ephemeralContainers=[{"name": "dbg", "image": "busybox"}])
    )
    verdict = policies.decide(
        Request("UPDATE", policies.username, "", "pods", debug, pod, "ephemeralcontainers")
    )
    assert verdict.applies and any("subresources" in denial for denial in verdict.denials)


PATCHING_OTHER_POLICIES = Case("patching-other-policies", {"quarantine": {"patchOtherPolicies": True}})
PATCHING_OFF = (
    "quarantine.patchOtherPolicies is off, so the responder's ServiceAccount may add the exclusion of"
    " quarantined pods to no other NetworkPolicy (it may remove one)"
)


def test_network_policies_beyond_the_responders_are_refused(
    renders: dict[str, Rendered], chart: helm_python.Chart
) -> None:
    policies = policies_of(renders["defaults"])
    allow_all = {"podSelector": {}, "policyTypes": ["Ingress"], "ingress": [{}]}
    assert _refused(policies.create_policy(_netpol("allow-everything", allow_all)))
    # Its own names, but not what it builds under them.
    quarantine = {"podSelector": {"matchLabels": {"serving-guard.io/quarantine": "true"}}}
    opened = {**quarantine, "policyTypes": ["Ingress", "Egress"], "egress": [{}]}
    assert _refused(policies.create_policy(_netpol("serving-guard-quarantine", opened)))
    elsewhere = {"podSelector": {"matchLabels": {"app": "db"}}, "policyTypes": ["Ingress", "Egress"]}
    assert _refused(policies.create_policy(_netpol("serving-guard-quarantine", elsewhere)))
    wrong_cut = {**quarantine, "policyTypes": ["Egress"]}
    assert _refused(policies.create_policy(_netpol("serving-guard-quarantine", wrong_cut)))
    block_selector = {"matchLabels": {"serving-guard.io/block": "0123456789ab"}}
    ingress_block = {"podSelector": block_selector, "policyTypes": ["Ingress"], "ingress": [{}]}
    assert _refused(policies.create_policy(_netpol("serving-guard-block-0123456789ab", ingress_block)))
    any_pod_block = {"podSelector": {}, "policyTypes": ["Egress"], "egress": [{}]}
    assert _refused(policies.create_policy(_netpol("serving-guard-block-0123456789ab", any_pod_block)))

    gateway_only = {"from": [{"podSelector": {"matchLabels": {"app": "gw"}}}]}
    selector = {"matchLabels": {"app": "model"}}
    other = _netpol(
        "allow-gateway", {"podSelector": selector, "policyTypes": ["Ingress"], "ingress": [gateway_only]}
    )
    refused: dict[str, Callable[[dict[str, Any]], None]] = {
        "rules opened": lambda p: p["spec"]["ingress"].append({}),
        "selector moved": lambda p: p["spec"]["podSelector"]["matchLabels"].update(app="db"),
        "other expression": lambda p: p["spec"]["podSelector"].update(
            matchExpressions=[{"key": "app", "operator": "DoesNotExist"}]
        ),
        "types changed": lambda p: p["spec"].update(policyTypes=["Egress"]),
        "labels changed": lambda p: p["metadata"].update(labels={"owner": "me"}),
        "foreign annotation": lambda p: p["metadata"].update(annotations={"example.com/x": "y"}),
        "owned by a pod": lambda p: p["metadata"].update(ownerReferences=[{"kind": "Pod", "name": "x"}]),
    }
    for what, change in refused.items():
        assert _refused(policies.update("networkpolicies", other, _changed(other, change))), what
    # An Ingress-only policy: the pods of the cuts that stop ingress leave it.
    exclusion = {
        "key": "serving-guard.io/quarantine",
        "operator": "NotIn",
        "values": ["true", "true-ingress"],
    }
    excluded = _changed(other, lambda p: p["spec"]["podSelector"].update(matchExpressions=[exclusion]))
    patching = policies_of(render(chart, PATCHING_OTHER_POLICIES))
    assert patching.update("networkpolicies", other, excluded).allowed
    assert patching.update("networkpolicies", excluded, other).allowed
    # quarantine.patchOtherPolicies off (the default): added by no one, taken off still.
    assert policies.update("networkpolicies", other, excluded).denials == (PATCHING_OFF,)
    assert policies.update("networkpolicies", excluded, other).allowed


# -- escapes from isolation with a stolen token ------------------------------------------------------

QUARANTINE = "serving-guard.io/quarantine"
BLOCK = "serving-guard.io/block"
MANAGED = {"app.kubernetes.io/managed-by": "serving-guard"}  # netpol.MANAGED_BY


def test_owned_labels_take_only_the_values_the_responder_gives(renders: dict[str, Rendered]) -> None:
    # The escape: a value no cut has takes the pod out of every policy carrying the exclusion, and
    # puts it into no deny-all.
    policies = policies_of(renders["defaults"])
    pod = _pod()
    for value in ("true", "true-egress", "true-ingress"):  # every cut's value (config.py Quarantine.cut)
        assert policies.update("pods", pod, _relabelled(pod, {QUARANTINE: value})).allowed, value
    for value in ("nope", "", "false", "true-both", "TRUE"):
        assert _refused(policies.update("pods", pod, _relabelled(pod, {QUARANTINE: value}))), value
    quarantined = _relabelled(pod, {QUARANTINE: "true"})
    assert _refused(policies.update("pods", quarantined, _relabelled(quarantined, {QUARANTINE: "nope"})))
    assert policies.update("pods", quarantined, _relabelled(quarantined, {QUARANTINE: "true-egress"})).allowed
    # A release removes it; a value someone else set may stay while other labels change.
    assert policies.update("pods", quarantined, pod).allowed
    odd = _relabelled(pod, {QUARANTINE: "nope"})
    assert policies.update("pods", odd, _relabelled(odd, {BLOCK: "0123456789ab"})).allowed

    assert policies.update("pods", pod, _relabelled(pod, {BLOCK: destination.pod_key("some-uid")})).allowed
    for value in ("0123456789AB", "0123456789a", "0123456789abc", "x123456789ab", "ok"):
        assert _refused(policies.update("pods", pod, _relabelled(pod, {BLOCK: value}))), value
    blocked = _relabelled(pod, {BLOCK: "0123456789ab"})
    assert policies.update("pods", blocked, pod).allowed


def test_cut_values_are_fixed_whatever_the_configured_cut(renders: dict[str, Rendered]) -> None:
    # quarantine.isolate egress: each cut keeps its own value (both: labelValue), none is renamed.
    policies = policies_of(renders["cluster-listed"])
    pod = _pod()
    for value in ("true", "true-egress", "true-ingress"):
        assert policies.update("pods", pod, _relabelled(pod, {QUARANTINE: value})).allowed, value
    # An earlier version's value for both: kept where it is, moved to "true", never set anew.
    assert _refused(policies.update("pods", pod, _relabelled(pod, {QUARANTINE: "true-both"})))
    legacy = _relabelled(pod, {QUARANTINE: "true-both"})
    assert policies.update("pods", legacy, _relabelled(legacy, {QUARANTINE: "true"})).allowed


def _other(spec: dict[str, Any]) -> dict[str, Any]:
    return _netpol("namespace-policy", spec)


def _with_exclusion(policy: dict[str, Any]) -> dict[str, Any]:
    """``policy`` with the exclusion the responder adds for its types (netpol.with_exclusion)."""
    values = Quarantine().covering_values(netpol.policy_directions(policy["spec"]))
    exclusion = netpol.exclusion_expression(QUARANTINE, values)
    return _changed(
        policy, lambda p: p["spec"]["podSelector"].setdefault("matchExpressions", []).append(exclusion)
    )


def test_the_exclusion_comes_only_to_policies_that_allow_traffic(chart: helm_python.Chart) -> None:
    # The escape: the exclusion on the namespace's default deny takes every quarantined pod out of it.
    policies = policies_of(render(chart, PATCHING_OTHER_POLICIES))
    gateway = [{"from": [{"podSelector": {"matchLabels": {"app": "gw"}}}]}]
    refused: dict[str, dict[str, Any]] = {
        "default deny": {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]},
        "default deny, ingress": {"podSelector": {}, "policyTypes": ["Ingress"]},
        "empty rule lists": {
            "podSelector": {},
            "policyTypes": ["Ingress", "Egress"],
            "ingress": [],
            "egress": [],
        },
        # Rules in a direction it does not govern allow nothing (the API server ignores them).
        "rules outside its types": {"podSelector": {}, "policyTypes": ["Egress"], "ingress": gateway},
    }
    for what, spec in refused.items():
        policy = _other(spec)
        excluded = _with_exclusion(policy)
        assert _refused(policies.update("networkpolicies", policy, excluded)), what
        # Taking it away again (someone else's, or an older chart's) stays allowed.
        assert policies.update("networkpolicies", excluded, policy).allowed, what
    allowed: dict[str, dict[str, Any]] = {
        "ingress rules": {"podSelector": {}, "policyTypes": ["Ingress"], "ingress": gateway},
        "egress rules": {"podSelector": {}, "policyTypes": ["Ingress", "Egress"], "egress": [{}]},
        "no types, ingress rules": {"podSelector": {}, "ingress": gateway},
    }
    for what, spec in allowed.items():
        policy = _other(spec)
        assert policies.update("networkpolicies", policy, _with_exclusion(policy)).allowed, what


GUARDED: dict[str, dict[str, Any]] = {
    "kube-system": namespace_object("kube-system", {ENFORCE_LABEL: "true"}),
    "the release's": namespace_object(NAMESPACE, {ENFORCE_LABEL: "true"}),
    "not opted in": namespace_object("models"),
    "opted out": namespace_object("models", {ENFORCE_LABEL: "false"}),
    "no labels": {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "models"}},
}


@pytest.mark.parametrize("where", sorted(GUARDED))
def test_guarded_namespaces_allow_only_a_release(renders: dict[str, Rendered], where: str) -> None:
    policies = policies_of(renders["defaults"])
    namespace = GUARDED[where]
    pod = _pod()
    owned: tuple[dict[str, str | None], ...] = ({QUARANTINE: "true"}, {BLOCK: "0123456789ab"})
    for labels in owned:
        labelled = _relabelled(pod, labels)
        assert policies.update("pods", pod, labelled).allowed  # opted in: allowed
        assert _refused(policies.update("pods", pod, labelled, namespace=namespace)), labels
        assert policies.update("pods", labelled, pod, namespace=namespace).allowed, labels  # the release
    quarantined = _relabelled(pod, {QUARANTINE: "true"})
    widened = _relabelled(pod, {QUARANTINE: "true-egress"})
    assert _refused(policies.update("pods", quarantined, widened, namespace=namespace))
    annotated = _changed(
        pod, lambda p: p["metadata"]["annotations"].update({"serving-guard.io/incident": "1"})
    )
    assert policies.update("pods", pod, annotated, namespace=namespace).allowed

    deny_all = {"podSelector": {"matchLabels": {QUARANTINE: "true"}}, "policyTypes": ["Ingress", "Egress"]}
    quarantine_policy = _netpol("serving-guard-quarantine", deny_all, labels=dict(MANAGED))
    assert policies.create_policy(quarantine_policy).allowed
    assert _refused(policies.create_policy(quarantine_policy, namespace=namespace))
    # Existing policies: a repair, the exclusion's removal.
    opened = _changed(quarantine_policy, lambda p: p["spec"].update(egress=[{}]))
    assert policies.update("networkpolicies", opened, quarantine_policy, namespace=namespace).allowed
    other = _other({"podSelector": {}, "policyTypes": ["Ingress"], "ingress": [{}]})
    assert policies.update("networkpolicies", _with_exclusion(other), other, namespace=namespace).allowed


def test_falcos_namespace_is_guarded(renders: dict[str, Rendered]) -> None:
    rendered = renders["separate-namespace"]  # the release in serving-guard, Falco in falco
    policies = policies_of(rendered)
    pod = _pod()
    for name in ("falco", "serving-guard"):
        where = namespace_object(name, {ENFORCE_LABEL: "true"})
        assert _refused(policies.update("pods", pod, _relabelled(pod, {QUARANTINE: "true"}), namespace=where))


def test_without_the_opt_in_label_only_protected_namespaces_are_guarded(chart: helm_python.Chart) -> None:
    rendered = render(chart, Case("no-opt-in", {"guardrails": {"enforceNamespaceLabel": ""}}))
    policies = policies_of(rendered)
    pod = _pod()
    quarantined = _relabelled(pod, {QUARANTINE: "true"})
    assert policies.update("pods", pod, quarantined, namespace=namespace_object("models")).allowed
    kube_system = namespace_object("kube-system")
    assert _refused(policies.update("pods", pod, quarantined, namespace=kube_system))


def test_a_namespace_admission_cannot_see_is_guarded(renders: dict[str, Rendered]) -> None:
    # namespaceObject null (the API server's value for a cluster-scoped object): no label is set.
    policies = policies_of(renders["defaults"])
    pod = _pod()
    request = Request("UPDATE", policies.username, "", "pods", _relabelled(pod, {QUARANTINE: "true"}), pod)
    assert _refused(policies.decide(request))
    assert policies.decide(Request("UPDATE", policies.username, "", "pods", pod, request.object)).allowed


POD_UID = _pod()["metadata"]["uid"]
KEY = destination.pod_key(POD_UID)


def _block(rendered: Rendered, *addresses: str, egress_cut_values: list[str] | None = None) -> dict[str, Any]:
    """The block policy the responder builds, for the pod model-0 (destination.block_spec, block_policy)."""
    config = load_config_text(rendered.config_text())
    if egress_cut_values is None:
        egress_cut_values = [
            config.quarantine.cut(i).label_value for i in Isolation if "egress" in i.directions
        ]
    spec = destination.block_spec(
        config.block_destination.label,
        KEY,
        [ipaddress.ip_address(a) for a in addresses],
        quarantine_label=config.quarantine.label,
        egress_cut_values=egress_cut_values,
    )
    name = destination.block_policy_name(config.block_destination.network_policy_prefix, POD_UID)
    return destination.block_policy("models", name, spec, owner=("model-0", POD_UID))


def _egress(policy: dict[str, Any]) -> list[dict[str, Any]]:
    egress: list[dict[str, Any]] = policy["spec"]["egress"]
    return egress


def _rekeyed(policy: dict[str, Any], key: str) -> None:
    """The policy named for, and selecting, the block label value ``key``."""
    policy["metadata"]["name"] = f"serving-guard-block-{key}"
    policy["spec"]["podSelector"]["matchLabels"][BLOCK] = key


BLOCK_ABUSE: dict[str, Callable[[dict[str, Any]], None]] = {
    "another pod's key": lambda p: p["spec"]["podSelector"]["matchLabels"].update({BLOCK: "0123456789ab"}),
    "a key that is no hash": lambda p: _rekeyed(p, "evil"),
    "a key in capitals": lambda p: _rekeyed(p, KEY.upper()),
    "quarantined pods let in": lambda p: p["spec"]["podSelector"].pop("matchExpressions"),
    "an egress cut let in": lambda p: p["spec"]["podSelector"]["matchExpressions"][0].update(values=["true"]),
    "In, not NotIn": lambda p: p["spec"]["podSelector"]["matchExpressions"][0].update(operator="In"),
    "another expression": lambda p: p["spec"]["podSelector"]["matchExpressions"].append(
        {"key": "app", "operator": "Exists"}
    ),
    "a port": lambda p: _egress(p)[0].update(ports=[{"port": 443}]),
    "a rule to anywhere": lambda p: _egress(p).append({}),
    "an empty peer list": lambda p: _egress(p).append({"to": []}),
    "a narrower block": lambda p: _egress(p)[0]["to"][0]["ipBlock"].update(cidr="203.0.113.0/24"),
    "a pod peer": lambda p: _egress(p)[1]["to"].append({"podSelector": {}}),
    "a selected namespace": lambda p: _egress(p)[1]["to"][0].update(
        namespaceSelector={"matchLabels": {"team": "x"}}
    ),
    "ingress": lambda p: p["spec"].update(policyTypes=["Ingress", "Egress"], ingress=[{}]),
    "no egress rules": lambda p: p["spec"].pop("egress"),
}


def test_a_block_policy_is_created_only_blocking_an_address(renders: dict[str, Rendered]) -> None:
    """One created blocking nothing only opens the pod's egress (a union of allows) past the other
    policies that restrict it: no write of the responder makes one (review-platform M2); the
    release empties an existing one by an update."""
    rendered = renders["defaults"]
    policies = policies_of(rendered)
    assert _refused(policies.create_policy(_block(rendered)))
    half = _block(rendered, "203.0.113.7")
    _egress(half)[0]["to"][1]["ipBlock"].pop("except")  # the IPv6 block without its NAT64 form
    assert _refused(policies.create_policy(half))
    assert policies.create_policy(_block(rendered, "203.0.113.7")).allowed


@pytest.mark.parametrize("abuse", sorted(BLOCK_ABUSE))
def test_block_policies_are_only_what_the_responder_builds(renders: dict[str, Rendered], abuse: str) -> None:
    rendered = renders["defaults"]
    policies = policies_of(rendered)
    policy = _block(rendered, "203.0.113.7", "2001:db8::1")
    empty = _block(rendered)
    assert policies.create_policy(policy).allowed
    assert policies.update("networkpolicies", empty, policy).allowed  # the release's clear
    abused = _changed(policy, BLOCK_ABUSE[abuse])
    assert _refused(policies.create_policy(abused))
    assert _refused(policies.update("networkpolicies", policy, abused))


def test_block_policies_follow_the_fixed_cuts(renders: dict[str, Rendered]) -> None:
    rendered = renders["cluster-listed"]  # isolate egress: still "true" and "true-egress" cut egress
    policies = policies_of(rendered)
    assert policies.create_policy(_block(rendered, "203.0.113.7")).allowed
    assert _refused(policies.create_policy(_block(rendered, "203.0.113.7", egress_cut_values=["true"])))


CREATE_METADATA_ABUSE: dict[str, dict[str, Any]] = {
    "another label": {"labels": {**MANAGED, "app": "model"}},
    "managed by someone else": {"labels": {"app.kubernetes.io/managed-by": "Helm"}},
    "a finalizer": {"finalizers": ["example.com/hold"]},
    "a foreign annotation": {"annotations": {"example.com/x": "y"}},
    "owned by a Deployment": {
        "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": "x", "uid": "u"}]
    },
    "two owners": {
        "ownerReferences": [
            {"apiVersion": "v1", "kind": "Pod", "name": "model-0", "uid": "u"},
            {"apiVersion": "v1", "kind": "Pod", "name": "model-1", "uid": "v"},
        ]
    },
    "owner deletion held": {
        "ownerReferences": [
            {"apiVersion": "v1", "kind": "Pod", "name": "model-0", "uid": "u", "blockOwnerDeletion": True}
        ]
    },
}


@pytest.mark.parametrize("abuse", sorted(CREATE_METADATA_ABUSE))
def test_created_policies_carry_only_the_responders_metadata(
    renders: dict[str, Rendered], abuse: str
) -> None:
    rendered = renders["defaults"]
    policies = policies_of(rendered)
    block = _block(rendered, "203.0.113.7")
    deny_all = {"podSelector": {"matchLabels": {QUARANTINE: "true"}}, "policyTypes": ["Ingress", "Egress"]}
    quarantine = _netpol("serving-guard-quarantine", deny_all, labels=dict(MANAGED))
    assert policies.create_policy(block).allowed and policies.create_policy(quarantine).allowed
    change = CREATE_METADATA_ABUSE[abuse]
    assert _refused(policies.create_policy(_changed(block, lambda p: p["metadata"].update(change))))
    assert _refused(policies.create_policy(_changed(quarantine, lambda p: p["metadata"].update(change))))


def test_a_quarantine_policy_is_owned_by_no_pod(renders: dict[str, Rendered]) -> None:
    # Owned by a pod, it would go with the pod, releasing every other pod of its cut.
    policies = policies_of(renders["defaults"])
    deny_all = {"podSelector": {"matchLabels": {QUARANTINE: "true"}}, "policyTypes": ["Ingress", "Egress"]}
    owner = [{"apiVersion": "v1", "kind": "Pod", "name": "model-0", "uid": "u"}]
    quarantine = _netpol("serving-guard-quarantine", deny_all, labels=dict(MANAGED), ownerReferences=owner)
    assert _refused(policies.create_policy(quarantine))


# -- Events ----------------------------------------------------------------------------------------


def _event(namespace: str, reason: str, *, warning: bool = True) -> dict[str, Any]:
    """The Event the responder writes (events.EventRecorder.record), as its gateway sends it."""
    sent: list[dict[str, Any]] = []

    class Gateway:
        def create_event(self, where: str, body: dict[str, Any]) -> dict[str, Any]:
            assert where == body["metadata"]["namespace"]
            sent.append(body)
            return body

    recorder = EventRecorder(Gateway(), instance="serving-guard-7d4b9-x2x4q")  # type: ignore[arg-type]
    assert recorder.record(
        namespace, "model-0", POD_UID, reason, "serving-guard quarantine: ...", warning=warning
    )
    (body,) = sent
    # What the API server stores (and admission sees): the name generated from generateName.
    return {**body, "metadata": {**body["metadata"], "name": f"model-0.{KEY}"}}


EVENT_ABUSE: dict[str, tuple[Callable[[dict[str, Any]], None], str]] = {
    "about a node": (lambda e: e["involvedObject"].update(kind="Node", namespace=""), "about a Pod"),
    "about a secret": (lambda e: e["involvedObject"].update(kind="Secret"), "about a Pod"),
    "about another api": (lambda e: e["involvedObject"].update(apiVersion="apps/v1"), "about a Pod"),
    "about another namespace's pod": (
        lambda e: e["involvedObject"].update(namespace="payments"),
        "about a Pod of the Event's namespace",
    ),
    "about nothing": (lambda e: e.pop("involvedObject"), "about a Pod"),
    "as the kubelet": (lambda e: e["source"].update(component="kubelet"), "only as serving-guard"),
    "as another controller": (
        lambda e: e.update(reportingComponent="kube-scheduler"),
        "only as serving-guard",
    ),
}


@pytest.mark.parametrize("abuse", sorted(EVENT_ABUSE))
def test_events_beyond_the_responders_are_refused(renders: dict[str, Rendered], abuse: str) -> None:
    policies = policies_of(renders["defaults"])
    event = _event("models", "Quarantined")
    assert policies.create_event(event).allowed
    change, named = EVENT_ABUSE[abuse]
    verdict = policies.create_event(_changed(event, change))
    assert _refused(verdict) and any(named in denial for denial in verdict.denials), verdict
    # Anyone else's Events are not this policy's business.
    other = Request(
        "CREATE", SOMEONE_ELSE, "", "events", _changed(event, change), None, "", opted_in("models")
    )
    assert not policies.decide(other).applies


@pytest.mark.parametrize("where", ["kube-system", "falco", "not-opted-in"])
def test_where_the_responder_may_not_act_only_a_releases_event_is_admitted(
    renders: dict[str, Rendered], where: str
) -> None:
    policies = policies_of(renders["defaults"])
    namespace = namespace_object(where)
    for reason in (
        "Quarantined",
        "QuarantineLeaky",
        "SecurityFinding",
        "DestinationBlocked",
        "QuarantineFailed",
    ):
        verdict = policies.create_event(_event(where, reason), namespace=namespace)
        assert _refused(verdict), reason
        assert any("only a release's Event, QuarantineReleased" in d for d in verdict.denials), verdict
    assert policies.create_event(
        _event(where, "QuarantineReleased", warning=False), namespace=namespace
    ).allowed
    # A release is Normal: a Warning of that reason is no release of the responder's.
    assert _refused(policies.create_event(_event(where, "QuarantineReleased"), namespace=namespace))


def test_a_release_in_a_namespace_opted_out_since_tells_its_event(
    chart: helm_python.Chart, seeded_cluster: tuple[RunningCluster, dict[str, SeededPod], str]
) -> None:
    """The real responder: a quarantine where the namespace is opted in, then the namespace opted out,
    then the release. Every write, the release's Event included, is admitted."""
    running, pods, kubeconfig = seeded_cluster
    rendered = render(chart, Case("opted-out-release", {}))
    config = load_config_text(rendered.config_text())
    gateway = KubeGateway.from_config(
        Cluster(kubeconfig=kubeconfig, retry=Retry(attempts=3, initial_backoff_seconds=0.01))
    )
    recorder = Recorder(running, gateway)
    actions = ClusterActions.of_config(gateway, config)
    triton = pods["triton"]
    lookup = PodDirectory(gateway, ttl_seconds=0).lookup(triton.namespace, triton.name)
    assert lookup.pod is not None
    alert = alert_from_mapping(
        falco_alert(triton, "Shell in serving pod", "Warning", "x", {"proc.name": "sh"})
    )
    # LEAKY in the seeded namespace (its gateway policy lets traffic in): labelled all the same.
    quarantined = actions.quarantine(lookup.pod, alert, "inc-1", "shell", dry_run=False)
    assert quarantined.status.value in ("quarantined", "leaky"), quarantined.detail
    running.emulator.namespaces[triton.namespace]["metadata"]["labels"].pop(ENFORCE_LABEL)
    assert actions.release(triton.namespace, triton.name, by="alice", reason="investigated").ok
    policies = policies_of(rendered)
    verdicts = [
        (
            write.new.get("reason"),
            policies.decide(
                Request(
                    "CREATE" if write.verb == "POST" else "UPDATE",
                    policies.username,
                    GROUPS[write.resource],
                    write.resource,
                    write.new,
                    write.old,
                    "",
                    write.namespace,
                )
            ),
        )
        for write in recorder.writes
    ]
    reasons = [reason for reason, _ in verdicts if reason]
    assert reasons in (["Quarantined", "QuarantineReleased"], ["QuarantineLeaky", "QuarantineReleased"])
    assert all(verdict.applies and verdict.allowed for _, verdict in verdicts), verdicts
