"""Changing quarantine.label or labelValue would make Helm re-render each kept deny-all to select the
new label in place, releasing every pod quarantined under the old one (review 75). The chart looks
the deny-all up (Helm's lookup, against the emulated API server here) and refuses the upgrade while
pods are quarantined in it, saying how to go on; offline (helm template) it renders as before."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import helm_python
import kmock
import pytest

from responder.actions import netpol
from simulators.cluster_emulator import ClusterEmulator, RunningCluster
from tests.deploy.deploy_support import RELEASE, Case, Values, render, with_test_image

LABEL = "serving-guard.io/quarantine"
NEW_LABEL = "sec.example.com/quarantine"
NAMESPACE = "models"
DENY_ALL = "serving-guard-quarantine"
NP = "networking.k8s.io/v1/networkpolicies"
ENFORCED: Values = {"enforcement": {"scope": "namespaced", "namespaces": [NAMESPACE]}}


class DiscoveringEmulator(ClusterEmulator):
    """The emulator, serving the API discovery Helm's lookup reads (/api/v1, /apis/GROUP/VERSION)
    as kmock does, where ClusterEmulator would answer it as a list of objects."""

    async def _handle(self, request: kmock.Request) -> Any:
        if request.resource is not None and request.resource.plural is None:
            return await kmock.KubernetesEmulator._handle(self, request)
        return await super()._handle(request)


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[tuple[RunningCluster, str]]:
    running = RunningCluster()
    # Set, not passed: RunningCluster(emulator) takes an emulator that served nothing yet for none.
    running.emulator = DiscoveringEmulator()
    resources = running.emulator.resources
    resources["networking.k8s.io/v1/networkpolicies"] = kmock.ResourceInfo(
        kind="NetworkPolicy", namespaced=True
    )
    resources["v1/pods"] = kmock.ResourceInfo(kind="Pod", namespaced=True)
    with running:
        running.call(running.emulator.add_namespace, NAMESPACE)
        yield running, running.write_kubeconfig(str(tmp_path / "kubeconfig.json"))


def _install_deny_all(running: RunningCluster, label: str, value: str) -> None:
    """The deny-all as an earlier install rendered it."""
    running.call(running.emulator.put_object, NP, netpol.deny_all_policy(NAMESPACE, DENY_ALL, label, value))


def _quarantined(running: RunningCluster, name: str, labels: dict[str, str]) -> None:
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": NAMESPACE, "labels": labels},
    }
    running.call(running.emulator.put_object, "v1/pods", pod)


def _render_against(kubeconfig: str, chart: helm_python.Chart, values: Values) -> dict[str, str]:
    with helm_python.Config(kubeconfig_path=kubeconfig, namespace="falco") as config:
        return config.render(chart, with_test_image(values), name=RELEASE, namespace="falco")


def _deny_all_selector(files: dict[str, str]) -> str:
    text = next(body for path, body in files.items() if path.endswith("quarantine-networkpolicies.yaml"))
    return text.split(f"name: {DENY_ALL}\n", 1)[1].split("policyTypes", 1)[0]


@pytest.mark.parametrize(
    ("quarantine", "ours"),
    [({"label": NEW_LABEL}, f"{NEW_LABEL}=true"), ({"labelValue": "isolated"}, f"{LABEL}=isolated")],
)
def test_an_upgrade_to_another_label_is_refused_while_pods_are_quarantined_under_the_old(
    cluster: tuple[RunningCluster, str], chart: helm_python.Chart, quarantine: Values, ours: str
) -> None:
    running, kubeconfig = cluster
    _install_deny_all(running, LABEL, "true")
    for name in ("vllm-0", "vllm-1", "triton-a", "triton-b"):
        _quarantined(running, name, {"app": "serving", LABEL: "true"})
    _quarantined(running, "other", {"app": "serving"})
    with pytest.raises(helm_python.HelmRenderError) as refused:
        _render_against(kubeconfig, chart, {**ENFORCED, "quarantine": quarantine})
    message = str(refused.value)
    assert (
        f"quarantine.label/labelValue: NetworkPolicy {NAMESPACE}/{DENY_ALL} selects {LABEL}=true, and 4"
        f" pod(s) are quarantined in it (triton-a triton-b vllm-0 (and 1 more: kubectl -n {NAMESPACE} get"
        f" pods -l {LABEL}=true)); this upgrade would make it select {ours}, releasing them silently"
    ) in message
    assert f"helm get values {RELEASE} -n falco" in message
    assert (
        f"kubectl -n falco exec deploy/{RELEASE} -- serving-guard release --namespace {NAMESPACE}"
        " triton-a triton-b vllm-0 --reason 'label change' --by \"$USER\""
        " --config /etc/serving-guard/config.yaml"
    ) in message


def test_the_same_label_or_no_pod_quarantined_renders_the_deny_all(
    cluster: tuple[RunningCluster, str], chart: helm_python.Chart
) -> None:
    running, kubeconfig = cluster
    _install_deny_all(running, LABEL, "true")
    _quarantined(running, "vllm-0", {"app": "serving", LABEL: "true"})
    same = _render_against(kubeconfig, chart, ENFORCED)
    assert f'{LABEL}: "true"' in _deny_all_selector(same)
    # Released, nothing relies on the old label: the change goes through.
    _quarantined(running, "vllm-0", {"app": "serving"})
    changed = _render_against(kubeconfig, chart, {**ENFORCED, "quarantine": {"label": NEW_LABEL}})
    assert f'{NEW_LABEL}: "true"' in _deny_all_selector(changed)


def test_offline_the_chart_renders_whatever_the_label(chart: helm_python.Chart) -> None:
    """helm template and a client-side dry run reach no cluster: lookup finds nothing there."""
    rendered = render(chart, Case("new-label", {**ENFORCED, "quarantine": {"label": NEW_LABEL}}))
    deny_all = rendered.one("NetworkPolicy", DENY_ALL)
    assert deny_all["spec"]["podSelector"] == {"matchLabels": {NEW_LABEL: "true"}}
