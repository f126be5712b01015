from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import aiohttp

from responder.actions import netpol
from responder.cluster.api import KubeGateway
from responder.service import Responder
from simulators.cluster_emulator import RunningCluster
from simulators.falco_json import falco_alert, falco_bytes
from simulators.seed import LEAKY_POLICY, SeededPod
from tests.helpers import SHELL_RULE, responder_config


async def post_and_drain(responder: Responder, alert: Mapping[str, Any]) -> dict[str, Any]:
    """POST the alert and wait until the pipeline has acted on it; the answer's body."""
    url = f"{responder.http_url}/v1/alerts"
    async with aiohttp.ClientSession() as session, session.post(url, data=falco_bytes(alert)) as response:
        assert response.status == 202
        body: dict[str, Any] = await response.json()
    assert responder.pipeline is not None
    assert await responder.pipeline.drain(timeout=10)
    return body


async def audit_entries(responder: Responder) -> list[dict[str, Any]]:
    async with aiohttp.ClientSession() as session, session.get(f"{responder.http_url}/v1/audit") as response:
        entries: list[dict[str, Any]] = (await response.json())["entries"]
    return entries


async def test_shell_alert_quarantines_the_pod_and_reports_the_leak(
    tmp_path: Path, seeded: tuple[RunningCluster, dict[str, SeededPod], str]
) -> None:
    running, pods, kubeconfig = seeded
    config = responder_config(tmp_path, kubeconfig)
    responder = Responder(config, KubeGateway.from_config(config.cluster))
    await responder.start()
    try:
        triton = pods["triton"]
        alert = falco_alert(
            triton, SHELL_RULE, "Notice", "Shell spawned", {"proc.name": "bash", "proc.cmdline": "bash -i"}
        )
        body = await post_and_drain(responder, alert)
        stored = running.call(running.emulator.get_object, "v1/pods", triton.namespace, triton.name)
        assert stored["metadata"]["labels"]["serving-guard.io/quarantine"] == "true"
        policy = running.call(
            running.emulator.get_object,
            "networking.k8s.io/v1/networkpolicies",
            triton.namespace,
            "serving-guard-quarantine",
        )
        assert policy["spec"]["policyTypes"] == ["Ingress", "Egress"]
        entries = await audit_entries(responder)
        assert entries[0]["alert_id"] == body["alert_id"]
        actions = entries[0]["incident"]["actions"]
        assert actions[0]["status"] == "leaky"
        assert actions[0]["leaky_policies"] == [LEAKY_POLICY]
    finally:
        await responder.stop()


async def test_an_egress_quarantine_through_the_service_cuts_egress_alone(
    tmp_path: Path, seeded: tuple[RunningCluster, dict[str, SeededPod], str]
) -> None:
    """quarantine.isolate from the config to the cluster and the audit trail: the policy cuts egress
    only, so the gateway's ingress policy is no leak and the pod counts as quarantined."""
    running, pods, kubeconfig = seeded
    config = responder_config(tmp_path, kubeconfig, extra={"quarantine": {"isolate": "egress"}})
    responder = Responder(config, KubeGateway.from_config(config.cluster))
    await responder.start()
    try:
        triton = pods["triton"]
        alert = falco_alert(triton, SHELL_RULE, "Notice", "Shell spawned", {"proc.name": "bash"})
        await post_and_drain(responder, alert)
        policy = running.call(
            running.emulator.get_object,
            "networking.k8s.io/v1/networkpolicies",
            triton.namespace,
            "serving-guard-quarantine",
        )
        assert policy["spec"]["policyTypes"] == ["Egress"]
        (entry,) = await audit_entries(responder)
        (action,) = entry["incident"]["actions"]
        assert action["status"] == "quarantined" and action["isolated"] == "egress"
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"{responder.http_url}/v1/audit?format=table") as response,
        ):
            assert "quarantine=quarantined(egress cut)" in await response.text()
    finally:
        await responder.stop()


async def test_the_audit_trail_names_policies_excluding_the_pod_beyond_a_one_way_cut(
    tmp_path: Path, seeded: tuple[RunningCluster, dict[str, SeededPod], str]
) -> None:
    """A policy patched while quarantines cut both ways, then quarantine.isolate set to egress: the
    audit trail's action names it (its ingress rules no longer apply to the quarantined pod), beside
    the leaking policy patch_other_policies left alone."""
    running, pods, kubeconfig = seeded
    triton = pods["triton"]
    baseline = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": "namespace-baseline", "namespace": triton.namespace},
        "spec": {"podSelector": {}, "policyTypes": ["Ingress", "Egress"], "ingress": [{}], "egress": [{}]},
    }
    patched = netpol.with_exclusion(baseline, "serving-guard.io/quarantine")
    running.call(running.emulator.put_object, "networking.k8s.io/v1/networkpolicies", patched)
    # And one that lets the pod send, never patched: it restricts ingress too.
    dns = {**baseline, "metadata": {"name": "namespace-dns", "namespace": triton.namespace}}
    running.call(running.emulator.put_object, "networking.k8s.io/v1/networkpolicies", dns)
    quarantine = {"isolate": "egress", "patch_other_policies": True}
    config = responder_config(tmp_path, kubeconfig, extra={"quarantine": quarantine})
    responder = Responder(config, KubeGateway.from_config(config.cluster))
    await responder.start()
    try:
        alert = falco_alert(triton, SHELL_RULE, "Notice", "Shell spawned", {"proc.name": "bash"})
        await post_and_drain(responder, alert)
        (entry,) = await audit_entries(responder)
        (action,) = entry["incident"]["actions"]
        assert action["status"] == "leaky" and action["isolated"] == "egress"
        assert action["leaky_policies"] == ["namespace-dns"] and action["not_patched"] == ["namespace-dns"]
        assert action["excluded_beyond"] == ["namespace-baseline"]
        assert "their ingress rules no longer apply to this pod" in action["detail"]
    finally:
        await responder.stop()
