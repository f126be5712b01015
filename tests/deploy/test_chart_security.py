"""Security properties of every rendered value set: Pod Security Standards "restricted" for every pod,
least-privilege RBAC that allows exactly the calls the responder makes, the API token only where it is
used, resources set, and NetworkPolicies that leave no pod unselected."""

from __future__ import annotations

import ast
import inspect
import re
from typing import Any

import pytest

from responder.cluster import api
from responder.cluster.api import OWNER_KINDS
from tests.deploy.deploy_support import (
    CASE_IDS,
    CASES,
    NAMESPACE,
    RELEASE,
    Case,
    Rendered,
    case_named,
    pod_specs,
)
from tests.pss import containers, restricted_violations

TOKEN_PATH = "/var/run/secrets/kubernetes.io/serviceaccount"


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_every_pod_is_pss_restricted(renders: dict[str, Rendered], case: Case) -> None:
    specs = pod_specs(renders[case.name])
    assert specs, "no workload rendered"
    for workload, spec in specs:
        assert restricted_violations(spec) == [], workload


def test_the_pss_check_catches_violations() -> None:
    # Guards the guard: a naive pod must fail every rule above.
    naive = {
        "hostNetwork": True,
        "volumes": [{"name": "h", "hostPath": {"path": "/"}}],
        "containers": [{"name": "c"}],
    }
    problems = restricted_violations(naive)
    for expected in ("hostNetwork", "hostPath", "seccompProfile", "allowPrivilegeEscalation", "runAsNonRoot",
                     "numeric non-root", "drop ALL", "readOnlyRootFilesystem"):  # fmt: skip
        assert any(expected in problem for problem in problems), expected


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_api_token_only_where_used_and_resources_set(renders: dict[str, Rendered], case: Case) -> None:
    rendered = renders[case.name]
    for account in rendered.of_kind("ServiceAccount"):
        assert account["automountServiceAccountToken"] is False
    for workload, spec in pod_specs(rendered):
        assert spec["automountServiceAccountToken"] is False, workload
        token_volumes = {
            v["name"]
            for v in spec["volumes"]
            if any("serviceAccountToken" in source for source in v.get("projected", {}).get("sources", []))
        }
        for container in containers(spec):
            mounts = {m["name"] for m in container.get("volumeMounts", [])}
            uses_token = bool(mounts & token_volumes)
            # Only the responder calls the API; it is the one container that gets the token.
            assert uses_token == (container["name"] == "responder"), container["name"]
            resources = container["resources"]
            for kind in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(resources[kind]), f"{container['name']}: {kind}"
        for volume in spec["volumes"]:
            for source in volume.get("projected", {}).get("sources", []):
                if "serviceAccountToken" in source:
                    assert source["serviceAccountToken"]["expirationSeconds"] <= 3607
                    assert "audience" not in source["serviceAccountToken"]


def test_only_journal_and_tmp_are_writable(renders: dict[str, Rendered]) -> None:
    for case in ("defaults", "production", "grpc-cert-manager", "slack-bot"):
        for _, spec in pod_specs(renders[case]):
            for container in containers(spec):
                writable = {m["mountPath"] for m in container["volumeMounts"] if not m.get("readOnly")}
                assert writable == {"/var/lib/serving-guard", "/tmp"}, case


# -- RBAC --------------------------------------------------------------------------------------------

# What responder/cluster/api.py calls (test_rbac_grants_exactly_the_calls_the_gateway_makes): no watch,
# no delete (enforcement.allowPodDeletion is gone: no action deletes pods).
NAMESPACED_RULES = {
    ("", "pods"): {"get", "list", "patch"},
    ("apps", "replicasets"): {"get"},
    ("apps", "deployments"): {"get"},
    ("apps", "statefulsets"): {"get"},
    ("apps", "daemonsets"): {"get"},
    ("batch", "jobs"): {"get"},
    ("batch", "cronjobs"): {"get"},
    ("serving.kserve.io", "inferenceservices"): {"get"},
    ("networking.k8s.io", "networkpolicies"): {"get", "list", "create", "update"},
    ("", "events"): {"create"},
}
FORBIDDEN_RESOURCES = {"secrets", "pods/exec", "pods/attach", "pods/portforward", "pods/ephemeralcontainers",
                       "serviceaccounts/token", "nodes/proxy", "clusterroles", "roles", "rolebindings",
                       "clusterrolebindings"}  # fmt: skip
FORBIDDEN_VERBS = {"*", "escalate", "bind", "impersonate", "delete", "deletecollection", "watch"}


def _grants(role: dict[str, Any]) -> dict[tuple[str, str], set[str]]:
    grants: dict[tuple[str, str], set[str]] = {}
    for rule in role["rules"]:
        assert "nonResourceURLs" not in rule, role["metadata"]["name"]
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                grants.setdefault((group, resource), set()).update(rule["verbs"])
    return grants


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_rbac_never_grants_wildcards_secrets_exec_or_escalation(
    renders: dict[str, Rendered], case: Case
) -> None:
    for role in renders[case.name].of_kind("Role", "ClusterRole"):
        for rule in role["rules"]:
            assert "*" not in rule["apiGroups"] and "*" not in rule["resources"], rule
            assert not set(rule["verbs"]) & FORBIDDEN_VERBS, rule
            assert not set(rule["resources"]) & FORBIDDEN_RESOURCES, rule


def _bindings_to(rendered: Rendered, kind: str, name: str) -> list[dict[str, Any]]:
    binding_kind = "RoleBinding" if kind == "Role" else "ClusterRoleBinding"
    ref = {"apiGroup": "rbac.authorization.k8s.io", "kind": kind, "name": name}
    return [b for b in rendered.of_kind(binding_kind) if b["roleRef"] == ref]


def _bound_to_responder(rendered: Rendered, binding: dict[str, Any]) -> None:
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": RELEASE, "namespace": rendered.case.namespace}
    ]


def test_namespaced_scope_uses_roles_in_the_listed_namespaces_only(renders: dict[str, Rendered]) -> None:
    for case in ("namespaced", "production", "separate-namespace"):
        rendered = renders[case]
        listed = case_named(case).values["enforcement"]["namespaces"]
        roles = rendered.of_kind("Role")
        assert sorted(r["metadata"]["namespace"] for r in roles) == sorted(listed)
        for role in roles:
            assert _grants(role) == NAMESPACED_RULES
            (binding,) = [b for b in _bindings_to(rendered, "Role", role["metadata"]["name"])
                          if b["metadata"]["namespace"] == role["metadata"]["namespace"]]  # fmt: skip
            _bound_to_responder(rendered, binding)
        # The one cluster-wide grant: reading the listed Namespace objects (their opt-in label).
        (cluster_role,) = rendered.of_kind("ClusterRole")
        assert cluster_role["rules"] == [
            {"apiGroups": [""], "resources": ["namespaces"], "resourceNames": listed, "verbs": ["get"]}
        ]
        (binding,) = _bindings_to(rendered, "ClusterRole", cluster_role["metadata"]["name"])
        _bound_to_responder(rendered, binding)


def test_cluster_scope_is_one_cluster_role_with_exactly_the_needed_verbs(
    renders: dict[str, Rendered],
) -> None:
    for case in ("defaults", "cluster-listed"):
        rendered = renders[case]
        assert rendered.of_kind("Role", "RoleBinding") == []
        (cluster_role,) = rendered.of_kind("ClusterRole")
        expected = {**NAMESPACED_RULES, ("", "namespaces"): {"get"}}
        assert _grants(cluster_role) == expected
        (binding,) = _bindings_to(rendered, "ClusterRole", RELEASE)
        _bound_to_responder(rendered, binding)


def test_rbac_covers_every_owner_kind_the_responder_reads(renders: dict[str, Rendered]) -> None:
    # The contract with responder/cluster/api.py: each owner it follows is readable, and no more.
    wanted = set()
    for prefix, plural in OWNER_KINDS.values():
        group = "" if prefix == "/api/v1" else prefix.split("/")[2]
        wanted.add((group, plural))
    (cluster_role,) = renders["defaults"].of_kind("ClusterRole")
    owner_grants = {key for key, verbs in _grants(cluster_role).items() if verbs == {"get"}} - {
        ("", "namespaces")
    }
    assert owner_grants == wanted


# The verb RBAC checks for each HTTP method of KubeGateway.request: on one object, or on a collection.
VERB_OF = {
    ("GET", True): "get",
    ("GET", False): "list",
    ("PATCH", True): "patch",
    ("PUT", True): "update",
    ("POST", False): "create",
    ("DELETE", True): "delete",
    ("DELETE", False): "deletecollection",
}
# KubeGateway's path prefixes, as api.py names them.
PREFIXES = {"/api/v1": "", "{_NP}": "networking.k8s.io"}


def _gateway_calls() -> set[tuple[str, str, str]]:
    """(group, resource, verb) of every self.request(...) in KubeGateway: read from its source, so that a
    call added there without its grant (or a grant no call uses) fails here. get_owner's kinds come
    from OWNER_KINDS (test_rbac_covers_every_owner_kind_the_responder_reads); discovery (/version,
    /apis) is no resource."""
    calls = set()
    tree = ast.parse(inspect.getsource(api.KubeGateway))
    for node in ast.walk(tree):
        if not (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "request"
            and len(node.args) >= 2
            and isinstance(node.args[0], ast.Constant)
        ):
            continue
        method, path = str(node.args[0].value), ast.unparse(node.args[1])
        if "{prefix}" in path or path.strip("'\"") in ("/version", "/apis"):
            continue
        match = re.fullmatch(
            r"f?['\"](?P<prefix>/api/v1|\{_NP\})/namespaces(?:/\{_seg\(namespace\)\})?"
            r"(?:/(?P<resource>[a-z]+))?(?P<item>/\{_seg\(name\)\})?['\"]",
            path,
        )
        assert match is not None, f"a KubeGateway call this test cannot read: {method} {path}"
        resource = match["resource"] or "namespaces"
        one = match["item"] is not None
        calls.add((PREFIXES[match["prefix"]], resource, VERB_OF[(method, one)]))
    return calls


def test_rbac_grants_exactly_the_calls_the_gateway_makes(renders: dict[str, Rendered]) -> None:
    calls = _gateway_calls()
    # Guards the guard: the reading found the calls it is about.
    assert {
        ("", "pods", "patch"),
        ("", "events", "create"),
        ("networking.k8s.io", "networkpolicies", "update"),
    } <= calls
    (cluster_role,) = renders["defaults"].of_kind("ClusterRole")
    owners = {
        ("" if prefix == "/api/v1" else prefix.split("/")[2], plural)
        for prefix, plural in OWNER_KINDS.values()
    }
    granted = {
        (group, resource, verb)
        for (group, resource), verbs in _grants(cluster_role).items()
        if (group, resource) not in owners
        for verb in verbs
    }
    assert granted == calls


# -- NetworkPolicies ---------------------------------------------------------------------------------


def _selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    assert set(selector) <= {"matchLabels"}, "the chart uses matchLabels only"
    return all(labels.get(k) == v for k, v in selector.get("matchLabels", {}).items())


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_every_pod_is_selected_by_an_ingress_policy(renders: dict[str, Rendered], case: Case) -> None:
    rendered = renders[case.name]
    policies = [p for p in rendered.of_kind("NetworkPolicy") if "Ingress" in p["spec"]["policyTypes"]]
    for workload in rendered.of_kind("Deployment"):
        labels = workload["spec"]["template"]["metadata"]["labels"]
        namespace = workload["metadata"]["namespace"]
        assert any(
            p["metadata"]["namespace"] == namespace and _selects(p["spec"]["podSelector"], labels)
            for p in policies
        ), workload["metadata"]["name"]


def _ingress_rules(rendered: Rendered) -> list[dict[str, Any]]:
    rules: list[dict[str, Any]] = rendered.one("NetworkPolicy", RELEASE)["spec"]["ingress"]
    return rules


def test_only_falco_reaches_the_alert_port_and_monitoring_the_metrics(renders: dict[str, Rendered]) -> None:
    rules = _ingress_rules(renders["defaults"])
    assert rules == [
        {
            # Same namespace as the release: a bare podSelector means "Falco pods in this namespace".
            "from": [{"podSelector": {"matchLabels": {"app.kubernetes.io/name": "falco"}}}],
            "ports": [{"port": 8443, "protocol": "TCP"}],
        },
        {
            "from": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}],
            "ports": [{"port": 9090, "protocol": "TCP"}],
        },
    ]
    separate = _ingress_rules(renders["separate-namespace"])[0]["from"]
    assert separate == [
        {
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": NAMESPACE}},
            "podSelector": {"matchLabels": {"app.kubernetes.io/name": "falco"}},
        }
    ]


def test_falcosidekick_and_scrapers_only_when_configured(renders: dict[str, Rendered]) -> None:
    sources = _ingress_rules(renders["tls-disabled-token"])[0]["from"]
    assert sources[1] == {
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "sidekick"}},
        # Falcosidekick's own pods, not its UI or Redis (the same name label, component ui or redis).
        "podSelector": {
            "matchLabels": {"app.kubernetes.io/name": "falcosidekick", "app.kubernetes.io/component": "core"}
        },
    }
    metrics = _ingress_rules(renders["production"])[1]["from"]
    assert metrics == [
        {
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}},
            "podSelector": {"matchLabels": {"app": "prometheus"}},
        }
    ]
    # gRPC only: the responder dials out; nothing may dial in except the scrapers.
    grpc_only = _ingress_rules(renders["grpc-only"])
    assert [rule["ports"][0]["port"] for rule in grpc_only] == [9090]
