"""Upgrades that would strand quarantined or blocked pods, refused while pods rely on what they change
(templates/upgrade-guards.yaml), as the label change is (test_chart_label_change.py):

- narrowing RBAC: enforcement.scope namespaced without a namespace where the responder as installed acts
  (its ClusterRole, or its Role there) and has quarantine or block policies: its deny-all stays (kept),
  its rights go, and nobody could release the pods through it (403);
- changing blockDestination.label or networkPolicyPrefix: the new admission policies would refuse the
  responder's removal of the installed block label and its updates of the installed prefix's policies.

What is installed is seeded in the emulated API server from an offline render of the installed values
(its config ConfigMap, ClusterRoles, Roles and deny-alls), with the responder's on-demand policies and
the pods beside it; the chart is then rendered with Helm's lookup reaching it over HTTP."""

from __future__ import annotations

import re
from typing import Any

import helm_python
import kmock
import pytest
import yaml

from responder.actions import netpol
from responder.config import BlockDestination, Quarantine
from simulators.cluster_emulator import RunningCluster
from tests.deploy import test_chart_label_change as label_change
from tests.deploy.deploy_support import CHART_DIR, RELEASE, Case, Values, deep_merge, render

QUARANTINE = "serving-guard.io/quarantine"
BLOCK = "serving-guard.io/block"
DENY_ALL = "serving-guard-quarantine"
PREFIX = "serving-guard-block"
KEY = "0123456789ab"
NP = label_change.NP
GUARDS = CHART_DIR / "templates" / "upgrade-guards.yaml"
# Where the tests' objects go: the kinds an install renders that the guards read, and the pods.
RESOURCES = {
    "ConfigMap": "v1/configmaps",
    "ClusterRole": "rbac.authorization.k8s.io/v1/clusterroles",
    "Role": "rbac.authorization.k8s.io/v1/roles",
    "NetworkPolicy": NP,
}
CLUSTER: Values = {"enforcement": {"scope": "cluster", "namespaces": ["models"]}}
NAMESPACED: Values = {"enforcement": {"scope": "namespaced", "namespaces": ["models", "llm", "batch"]}}
NARROWED: Values = {"enforcement": {"scope": "namespaced", "namespaces": ["models"]}}
RELEASE_COMMAND = (
    f"kubectl -n falco exec deploy/{RELEASE} -- serving-guard release --namespace {{namespace}} {{pods}}"
    " --reason '{reason}' --by \"$USER\" --config /etc/serving-guard/config.yaml"
)

# test_chart_label_change's emulated API server (pods and NetworkPolicies, served to Helm's lookup).
cluster = label_change.cluster


@pytest.fixture
def installed(cluster: tuple[RunningCluster, str]) -> tuple[RunningCluster, str]:
    """The same API server, also serving what an install leaves that the guards read."""
    running, kubeconfig = cluster
    resources = running.emulator.resources
    resources["v1/configmaps"] = kmock.ResourceInfo(kind="ConfigMap", namespaced=True)
    resources["rbac.authorization.k8s.io/v1/roles"] = kmock.ResourceInfo(kind="Role", namespaced=True)
    resources["rbac.authorization.k8s.io/v1/clusterroles"] = kmock.ResourceInfo(
        kind="ClusterRole", namespaced=False
    )
    for namespace in ("llm", "batch", "legacy"):
        running.call(running.emulator.add_namespace, namespace)
    return running, kubeconfig


def _install(running: RunningCluster, chart: helm_python.Chart, values: Values) -> dict[str, Any]:
    """What `helm install` with ``values`` leaves in the cluster that the guards read; its config."""
    rendered = render(chart, Case("installed", values))
    for manifest in rendered.manifests:
        if manifest["kind"] in RESOURCES:
            running.call(running.emulator.put_object, RESOURCES[manifest["kind"]], manifest)
    config: dict[str, Any] = yaml.safe_load(rendered.config_text())
    return config


def _config_without(running: RunningCluster, *sections: str) -> None:
    """The installed ConfigMap rewritten without ``sections``: a config that leaves them to defaults."""
    stored = running.call(running.emulator.get_object, "v1/configmaps", "falco", RELEASE)
    config = yaml.safe_load(stored["data"]["config.yaml"])
    for section in sections:
        del config[section]
    stored["data"]["config.yaml"] = yaml.safe_dump(config)
    running.call(running.emulator.put_object, "v1/configmaps", stored)


def _deny_all(running: RunningCluster, namespace: str, label: str = QUARANTINE) -> None:
    """The deny-all the responder creates on demand where the chart renders none."""
    policy = netpol.deny_all_policy(namespace, DENY_ALL, label, "true")
    running.call(running.emulator.put_object, NP, policy)


def _block_policy(running: RunningCluster, namespace: str, prefix: str = PREFIX, key: str = KEY) -> None:
    policy = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": f"{prefix}-{key}", "namespace": namespace},
        "spec": {"podSelector": {"matchLabels": {BLOCK: key}}, "policyTypes": ["Egress"]},
    }
    running.call(running.emulator.put_object, NP, policy)


def _pod(running: RunningCluster, namespace: str, name: str, labels: dict[str, str]) -> None:
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": {"app": "serving", **labels}},
    }
    running.call(running.emulator.put_object, "v1/pods", pod)


def _upgrade(kubeconfig: str, chart: helm_python.Chart, values: Values) -> dict[str, str]:
    return label_change._render_against(kubeconfig, chart, values)


def _refused(kubeconfig: str, chart: helm_python.Chart, values: Values) -> str:
    with pytest.raises(helm_python.HelmRenderError) as refused:
        _upgrade(kubeconfig, chart, values)
    return " ".join(str(refused.value).split())


def _release_command(namespace: str, pods: str, reason: str) -> str:
    return RELEASE_COMMAND.format(namespace=namespace, pods=pods, reason=reason)


# -- narrowing RBAC -----------------------------------------------------------------------------------


def test_switching_to_namespaced_is_refused_while_pods_are_held_where_rights_go(
    installed: tuple[RunningCluster, str], chart: helm_python.Chart
) -> None:
    running, kubeconfig = installed
    _install(running, chart, CLUSTER)
    # Scope cluster: the responder created its policies on demand in llm, beside the chart's in models.
    _deny_all(running, "llm")
    _block_policy(running, "llm")
    _pod(running, "llm", "vllm-0", {QUARANTINE: "true"})
    _pod(running, "llm", "vllm-1", {QUARANTINE: "true-egress"})
    _pod(running, "llm", "triton-a", {BLOCK: KEY})
    _pod(running, "llm", "triton-b", {QUARANTINE: "true-both"})
    _pod(running, "llm", "other", {QUARANTINE: "false"})  # no cut's value: not quarantined
    _pod(running, "llm", "plain", {})
    _pod(running, "models", "kept", {QUARANTINE: "true"})  # in the new list: still the responder's
    message = _refused(kubeconfig, chart, NARROWED)
    assert (
        "enforcement.namespaces: this upgrade takes the responder's rights in namespace llm away"
        " (enforcement.scope namespaced without it in enforcement.namespaces), and 4 pod(s) are quarantined"
        " or blocked there (triton-a triton-b vllm-0 (and 1 more: kubectl -n llm get pods -l"
        f" '{QUARANTINE} in (true,true-both,true-egress,true-ingress)' and kubectl -n llm get pods -l"
        f" {BLOCK})); their deny-all and block NetworkPolicies would stay"
    ) in message
    assert f"helm get values {RELEASE} -n falco" in message
    assert _release_command("llm", "triton-a triton-b vllm-0", "rights narrowed") in message
    assert "kept" not in message


def test_dropping_namespaces_is_refused_while_pods_are_held_in_them(
    installed: tuple[RunningCluster, str], chart: helm_python.Chart
) -> None:
    running, kubeconfig = installed
    _install(running, chart, NAMESPACED)  # Roles and deny-alls in models, llm and batch
    _block_policy(running, "llm")
    _pod(running, "llm", "vllm-0", {BLOCK: KEY})  # blocked only
    _pod(running, "batch", "job-0", {QUARANTINE: "true"})
    message = _refused(kubeconfig, chart, NARROWED)
    assert "rights in namespace batch away" in message
    assert "1 pod(s) are quarantined or blocked there (job-0) (namespaces llm hold such pods too" in message
    assert _release_command("batch", "job-0", "rights narrowed") in message


def test_narrowing_counts_the_installed_quarantine_label_too(
    installed: tuple[RunningCluster, str], chart: helm_python.Chart
) -> None:
    """A label change and a narrowing in one upgrade: the pods quarantined under the installed label,
    where the rights go, are no concern of keptDenyAll (it reads only the namespaces kept)."""
    running, kubeconfig = installed
    old = "sec.example.com/quarantine"
    _install(running, chart, deep_merge(CLUSTER, {"quarantine": {"label": old}}))
    _deny_all(running, "llm", label=old)
    _pod(running, "llm", "vllm-0", {old: "true-ingress"})
    message = _refused(kubeconfig, chart, NARROWED)
    assert "rights in namespace llm away" in message and "(vllm-0)" in message


def test_narrowing_goes_through_where_nothing_would_be_stranded(
    installed: tuple[RunningCluster, str], chart: helm_python.Chart
) -> None:
    running, kubeconfig = installed
    _install(running, chart, NAMESPACED)
    for namespace in ("models", "llm", "batch"):
        _pod(running, namespace, "vllm-0", {QUARANTINE: "true", BLOCK: KEY})
        _block_policy(running, namespace)
    # Where the responder had no rights before (no Role there: an earlier narrowing), it could release
    # nothing now either: that does not hold the upgrade back.
    _deny_all(running, "legacy")
    _pod(running, "legacy", "stale", {QUARANTINE: "true"})
    # Kept: every namespace with pods held.
    _upgrade(kubeconfig, chart, NAMESPACED)
    # Released in the namespaces that go: the narrowing goes through.
    for namespace in ("llm", "batch"):
        _pod(running, namespace, "vllm-0", {})
    narrowed = _upgrade(kubeconfig, chart, NARROWED)
    roles = [
        m for path, text in narrowed.items() if path.endswith("rbac.yaml") for m in yaml.safe_load_all(text)
    ]
    assert {r["metadata"]["namespace"] for r in roles if r and r["kind"] == "Role"} == {"models"}


def test_scope_cluster_and_offline_renders_are_not_checked(
    installed: tuple[RunningCluster, str], chart: helm_python.Chart
) -> None:
    running, kubeconfig = installed
    _install(running, chart, NAMESPACED)
    _pod(running, "llm", "vllm-0", {QUARANTINE: "true"})
    # Cluster scope takes no rights away.
    _upgrade(kubeconfig, chart, CLUSTER)
    # helm template and a client-side dry run reach no cluster: lookup finds nothing there.
    narrowed = render(chart, Case("narrowed", NARROWED))
    assert [r["metadata"]["namespace"] for r in narrowed.of_kind("Role")] == ["models"]


# -- changing the block label or the block policies' prefix ------------------------------------------


@pytest.mark.parametrize(
    ("block", "now"),
    [
        ({"label": "sec.example.com/block"}, f"sec.example.com/block and NetworkPolicies {PREFIX}-<pod key>"),
        ({"networkPolicyPrefix": "sg-block"}, f"{BLOCK} and NetworkPolicies sg-block-<pod key>"),
    ],
    ids=["label", "prefix"],
)
def test_a_block_label_or_prefix_change_is_refused_while_pods_are_blocked(
    installed: tuple[RunningCluster, str], chart: helm_python.Chart, block: Values, now: str
) -> None:
    running, kubeconfig = installed
    _install(running, chart, CLUSTER)
    _block_policy(running, "llm")  # made on demand: where the responder's block policies are
    for name in ("vllm-0", "vllm-1", "triton-a", "triton-b"):
        _pod(running, "llm", name, {BLOCK: KEY})
    _pod(running, "llm", "other", {QUARANTINE: "true"})
    _pod(running, "models", "blocked", {BLOCK: KEY})  # an enforced namespace, no block policy of its own
    message = _refused(kubeconfig, chart, {**CLUSTER, "blockDestination": block})
    assert (
        "blockDestination.label/networkPolicyPrefix: the responder as installed blocks with the label"
        f" {BLOCK} and NetworkPolicies {PREFIX}-<pod key>, this upgrade would make them {now}, and 4 pod(s)"
        " are blocked in namespace llm (triton-a triton-b vllm-0 (and 1 more: kubectl -n llm get pods -l"
        f" {BLOCK})) (namespaces models hold such pods too: release theirs the same way)"
    ) in message
    assert f"helm get values {RELEASE} -n falco" in message
    assert _release_command("llm", "triton-a triton-b vllm-0", "block label change") in message


def test_an_installed_config_without_block_settings_is_read_as_the_defaults(
    installed: tuple[RunningCluster, str], chart: helm_python.Chart
) -> None:
    running, kubeconfig = installed
    _install(running, chart, CLUSTER)
    _config_without(running, "block_destination", "quarantine")
    _block_policy(running, "models")
    _pod(running, "models", "vllm-0", {BLOCK: KEY})
    # The chart's defaults are what that config meant: no change, nothing refused.
    _upgrade(kubeconfig, chart, CLUSTER)
    message = _refused(kubeconfig, chart, {**CLUSTER, "blockDestination": {"label": "sec.example.com/block"}})
    assert f"blocks with the label {BLOCK} and NetworkPolicies {PREFIX}-<pod key>" in message


def test_a_block_label_change_goes_through_once_no_pod_is_blocked(
    installed: tuple[RunningCluster, str], chart: helm_python.Chart
) -> None:
    running, kubeconfig = installed
    _install(running, chart, CLUSTER)
    _block_policy(running, "llm")
    _pod(running, "llm", "vllm-0", {BLOCK: KEY})
    changed = {**CLUSTER, "blockDestination": {"label": "sec.example.com/block"}}
    _refused(kubeconfig, chart, changed)
    _pod(running, "llm", "vllm-0", {})  # released (its block policy stays, selecting nothing)
    files = _upgrade(kubeconfig, chart, changed)
    assert "sec.example.com/block" in next(t for p, t in files.items() if p.endswith("admission-policy.yaml"))
    # Nothing installed (a first install) and helm template are not checked either.
    render(chart, Case("offline", changed))


def test_the_fallbacks_are_the_chart_and_responder_defaults(chart: helm_python.Chart) -> None:
    """An installed config read without a key takes these: the chart's default values, which are the
    responder's own defaults."""
    text = GUARDS.read_text(encoding="utf-8")
    fallbacks = dict(re.findall(r'\(dig "(\w+" "\w+)" "([^"]*)" \$config\)', text))
    values = chart.values
    expected = {
        'quarantine" "label': (values["quarantine"]["label"], Quarantine().label),
        'quarantine" "label_value': (values["quarantine"]["labelValue"], Quarantine().label_value),
        'quarantine" "network_policy': (
            values["quarantine"]["networkPolicyName"],
            Quarantine().network_policy,
        ),
        'block_destination" "label': (values["blockDestination"]["label"], BlockDestination().label),
        'block_destination" "network_policy_prefix': (
            values["blockDestination"]["networkPolicyPrefix"],
            BlockDestination().network_policy_prefix,
        ),
    }
    assert set(fallbacks) == set(expected)
    for key, (chart_default, responder_default) in expected.items():
        assert fallbacks[key] == chart_default == responder_default, key


def test_the_notes_say_to_release_before_narrowing(chart: helm_python.Chart) -> None:
    notes = render(chart, Case("cluster", {})).notes()
    assert "use scope=namespaced to narrow it" in notes
    assert "release the pods quarantined or blocked" in " ".join(notes.split())
