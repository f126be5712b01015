from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import aiohttp

from responder.cluster.api import KubeGateway
from responder.service import Responder
from simulators.cluster_emulator import RunningCluster
from simulators.falco_json import falco_alert, falco_bytes
from simulators.seed import LEAKY_POLICY, SeededPod
from tests.helpers import SHELL_RULE, responder_config
from tests.responder.exclusions import legacy_patched


async def post_and_drain(responder: Responder, alert: Mapping[str, Any]) -> dict[str, Any]:
    """POST the alert and wait until the pipeline has acted on it; the answer's body."""
    url = f"{responder.http_url}/v1/alerts"
    async with aiohttp.ClientSession() as session, session.post(url, data=falco_bytes(alert)) as response:
        assert response.status == 202
        body: dict[str, Any] = await response.json()
    assert responder.pipeline is not None
    assert await responder.pipeline.drain(timeout=10)
    return body


# The audit trail is read with a token of its own (no sender's credential reads it).
READER = {"Authorization": "Bearer service-audit-readers"}


def readers(tmp_path: Path) -> dict[str, Any]:
    """An open input whose audit trail READER reads."""
    (tmp_path / "audit-token").write_text(READER["Authorization"].removeprefix("Bearer "))
    return {
        "listen": "127.0.0.1:0",
        "allow_unauthenticated": True,
        "audit_token": {"file": str(tmp_path / "audit-token")},
    }


async def audit_entries(responder: Responder) -> list[dict[str, Any]]:
    async with (
        aiohttp.ClientSession(headers=READER) as session,
        session.get(f"{responder.http_url}/v1/audit") as response,
    ):
        entries: list[dict[str, Any]] = (await response.json())["entries"]
    return entries


async def test_shell_alert_quarantines_the_pod_and_reports_the_leak(
    tmp_path: Path, seeded: tuple[RunningCluster, dict[str, SeededPod], str]
) -> None:
    running, pods, kubeconfig = seeded
    config = responder_config(tmp_path, kubeconfig, http=readers(tmp_path))
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
    config = responder_config(
        tmp_path, kubeconfig, http=readers(tmp_path), extra={"quarantine": {"isolate": "egress"}}
    )
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
            "serving-guard-quarantine-egress",
        )
        assert policy["spec"]["policyTypes"] == ["Egress"]
        (entry,) = await audit_entries(responder)
        (action,) = entry["incident"]["actions"]
        assert action["status"] == "quarantined" and action["isolated"] == "egress"
        async with (
            aiohttp.ClientSession(headers=READER) as session,
            session.get(f"{responder.http_url}/v1/audit?format=table") as response,
        ):
            assert "quarantine=quarantined(egress cut)" in await response.text()
    finally:
        await responder.stop()


async def test_the_audit_trail_names_policies_excluding_the_pod_beyond_a_one_way_cut(
    tmp_path: Path, seeded: tuple[RunningCluster, dict[str, SeededPod], str]
) -> None:
    """A policy an earlier version patched (`DoesNotExist`: every quarantined pod), then an egress
    quarantine: the audit trail's action names it (its ingress rules no longer apply to the
    quarantined pod), beside the leaking policy patch_other_policies left alone."""
    running, pods, kubeconfig = seeded
    triton = pods["triton"]
    baseline = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": "namespace-baseline", "namespace": triton.namespace},
        "spec": {"podSelector": {}, "policyTypes": ["Ingress", "Egress"], "ingress": [{}], "egress": [{}]},
    }
    patched = legacy_patched(baseline, "serving-guard.io/quarantine")
    running.call(running.emulator.put_object, "networking.k8s.io/v1/networkpolicies", patched)
    # And one that lets the pod send, never patched: it restricts ingress too.
    dns = {**baseline, "metadata": {"name": "namespace-dns", "namespace": triton.namespace}}
    running.call(running.emulator.put_object, "networking.k8s.io/v1/networkpolicies", dns)
    quarantine = {"isolate": "egress", "patch_other_policies": True}
    config = responder_config(tmp_path, kubeconfig, http=readers(tmp_path), extra={"quarantine": quarantine})
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


async def test_a_policy_on_trial_predicts_while_the_others_act(
    tmp_path: Path, seeded: tuple[RunningCluster, dict[str, SeededPod], str]
) -> None:
    """policies[].dry_run from the config to the cluster and the audit trail: the trial policies'
    quarantine and annotate write nothing to their pods and take no breaker slot, while the enforced
    policy quarantines the next pod."""
    running, pods, kubeconfig = seeded
    policies = [
        {"name": "isolate-shells", "match": {"rules": [SHELL_RULE]}, "actions": ["notify", "quarantine"]},
        {
            "name": "egress-trial",
            "match": {"rules": ["Anomalous egress*"]},
            "actions": ["notify", "quarantine"],
            "dry_run": True,
        },
        {
            "name": "downloads-trial",
            "match": {"rules": ["Runtime download*"]},
            "actions": ["notify", "annotate"],
            "dry_run": True,
        },
    ]
    extra = {"policies": policies, "guardrails": {"max_quarantines": {"count": 1, "window_seconds": 300}}}
    config = responder_config(tmp_path, kubeconfig, http=readers(tmp_path), extra=extra)
    responder = Responder(config, KubeGateway.from_config(config.cluster))
    await responder.start()
    try:
        triton, torchserve, vllm = pods["triton"], pods["torchserve"], pods["vllm"]
        egress = falco_alert(
            triton, "Anomalous egress from serving pod", "Warning", "Egress", {"fd.sip": "203.0.113.9"}
        )
        download = falco_alert(
            torchserve,
            "Runtime download or package install in serving pod",
            "Warning",
            "pip",
            {"proc.name": "pip"},
        )
        shell = falco_alert(vllm, SHELL_RULE, "Notice", "Shell spawned", {"proc.name": "bash"})
        for alert in (egress, download, shell):
            await post_and_drain(responder, alert)

        def stored(pod: SeededPod) -> dict[str, Any]:
            found: dict[str, Any] = running.call(
                running.emulator.get_object, "v1/pods", pod.namespace, pod.name
            )
            metadata: dict[str, Any] = found["metadata"]
            return metadata

        assert "serving-guard.io/quarantine" not in stored(triton)["labels"]
        assert "serving-guard.io/reason" not in (stored(torchserve).get("annotations") or {})
        assert stored(vllm)["labels"]["serving-guard.io/quarantine"] == "true"

        by_pod = {entry["pod"]: entry["incident"] for entry in await audit_entries(responder)}
        trial = by_pod[triton.name]
        assert trial["decision"]["dry_run"] and trial["decision"]["dry_run_by"] == "policy"
        ((action, status),) = [(a["action"], a["status"]) for a in trial["actions"]]
        assert (action, status) == ("quarantine", "dry_run")
        assert [(a["action"], a["status"]) for a in by_pod[torchserve.name]["actions"]] == [
            ("annotate", "dry_run")
        ]
        enforced = by_pod[vllm.name]
        assert not enforced["decision"]["dry_run"] and enforced["decision"]["dry_run_by"] == ""
        assert enforced["actions"][0]["status"] in ("quarantined", "leaky")
        # The trial's review reads only its own incidents.
        url = f"{responder.http_url}/v1/audit?policy=egress-trial"
        async with aiohttp.ClientSession(headers=READER) as session, session.get(url) as response:
            entries = (await response.json())["entries"]
        assert [e["pod"] for e in entries] == [triton.name]
    finally:
        await responder.stop()
