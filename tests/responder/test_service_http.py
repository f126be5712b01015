from __future__ import annotations

from pathlib import Path

import aiohttp

from responder.cluster.api import KubeGateway
from responder.service import Responder
from simulators.cluster_emulator import RunningCluster
from simulators.falco_json import falco_alert, falco_bytes
from simulators.seed import LEAKY_POLICY, SeededPod
from tests.helpers import SHELL_RULE, responder_config


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
        url = f"{responder.http_url}/v1/alerts"
        async with aiohttp.ClientSession() as session, session.post(url, data=falco_bytes(alert)) as response:
            assert response.status == 202
            body = await response.json()
        assert responder.pipeline is not None
        assert await responder.pipeline.drain(timeout=10)
        stored = running.call(running.emulator.get_object, "v1/pods", triton.namespace, triton.name)
        assert stored["metadata"]["labels"]["serving-guard.io/quarantine"] == "true"
        policy = running.call(
            running.emulator.get_object,
            "networking.k8s.io/v1/networkpolicies",
            triton.namespace,
            "serving-guard-quarantine",
        )
        assert policy["spec"]["policyTypes"] == ["Ingress", "Egress"]
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"{responder.http_url}/v1/audit") as response,
        ):
            entries = (await response.json())["entries"]
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
        url = f"{responder.http_url}/v1/alerts"
        async with aiohttp.ClientSession() as session, session.post(url, data=falco_bytes(alert)) as response:
            assert response.status == 202
        assert responder.pipeline is not None
        assert await responder.pipeline.drain(timeout=10)
        policy = running.call(
            running.emulator.get_object,
            "networking.k8s.io/v1/networkpolicies",
            triton.namespace,
            "serving-guard-quarantine",
        )
        assert policy["spec"]["policyTypes"] == ["Egress"]
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"{responder.http_url}/v1/audit") as response,
        ):
            (entry,) = (await response.json())["entries"]
        (action,) = entry["incident"]["actions"]
        assert action["status"] == "quarantined" and action["isolated"] == "egress"
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"{responder.http_url}/v1/audit?format=table") as response,
        ):
            assert "quarantine=quarantined(egress cut)" in await response.text()
    finally:
        await responder.stop()
