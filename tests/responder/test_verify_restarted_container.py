"""An alert from a container that has restarted since (a crash, an OOM, the attacker's own `kill 1`)
is the pod's own: matched by the previous id the kubelet keeps in lastState.terminated, read from
the emulated API server over real HTTP, and acted on; the node check and forgeries hold as before."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest

from responder.alert import Alert
from responder.alert_json import alert_from_mapping
from responder.cluster.api import KubeGateway
from responder.cluster.verify import RESTARTED_SINCE, VerificationStatus, verify_alert
from responder.journal.store import report_from_record
from responder.notify.render import render_incident
from responder.records import pod_from_json, pod_to_json
from responder.service import Responder
from simulators.cluster_emulator import RunningCluster
from simulators.falco_json import falco_alert
from simulators.seed import SeededPod
from tests.helpers import SHELL_RULE, responder_config
from tests.notify.test_slack_render import text_of
from tests.responder.test_pipeline import labels, rows, submit_all
from tests.responder.test_quarantine import Harness

Seeded = tuple[RunningCluster, dict[str, SeededPod], str]
LABEL = "serving-guard.io/quarantine"
NEW_ID = hashlib.sha256(b"the container after its restart").hexdigest()


def restart(harness: Harness, pod: SeededPod, *, key: str = "containerStatuses", index: int = 0) -> str:
    """Restart one container of ``pod`` as the kubelet records it: a new containerID, the old one in
    lastState.terminated. Returns the old (full) id."""
    stored = harness.stored("v1/pods", pod.namespace, pod.name)
    assert stored is not None
    status = stored["status"][key][index]
    old = str(status["containerID"])
    status["lastState"] = {"terminated": {"exitCode": 137, "reason": "Error", "containerID": old}}
    status["containerID"] = "containerd://" + NEW_ID
    status["restartCount"] = 1
    harness.running.call(harness.running.emulator.put_object, "v1/pods", stored)
    return old.split("://", 1)[1]


def alert_from(pod: SeededPod, container_id: str, **fields: Any) -> Alert:
    payload = falco_alert(pod, SHELL_RULE, "Notice", "shell", {"proc.name": "sh", **fields})
    payload["output_fields"]["container.id"] = container_id[:12]
    return alert_from_mapping(payload)


@pytest.fixture
def harness(seeded: Seeded) -> Harness:
    running, _, kubeconfig = seeded
    return Harness(running, kubeconfig)


def test_an_alert_from_the_run_before_a_restart_verifies_and_says_so(
    harness: Harness, seeded: Seeded
) -> None:
    vllm = seeded[1]["vllm"]
    old = restart(harness, vllm)
    pod = harness.pod(vllm)  # read over HTTP, as the responder reads it
    assert pod.containers[0].previous_container_id == "containerd://" + old
    before = verify_alert(alert_from(vllm, old), pod, check_node=True)
    assert before.status is VerificationStatus.VERIFIED and before.container_name == vllm.container
    assert before.reason == RESTARTED_SINCE
    now = verify_alert(alert_from(vllm, NEW_ID), pod, check_node=True)
    assert now.verified and now.reason == ""  # the running container: nothing to say
    # The journal keeps the previous id: a pod read back from it verifies the same alert.
    again = pod_from_json(pod_to_json(pod))
    assert verify_alert(alert_from(vllm, old), again, check_node=True).reason == RESTARTED_SINCE


def test_a_previous_id_still_needs_the_pods_node_and_a_forged_id_is_still_refused(
    harness: Harness, seeded: Seeded
) -> None:
    vllm, triton = seeded[1]["vllm"], seeded[1]["triton"]
    old = restart(harness, vllm)
    pod = harness.pod(vllm)
    elsewhere = alert_from_mapping({**alert_from(vllm, old).to_falco_json(), "hostname": "attacker-box"})
    refused = verify_alert(elsewhere, pod, check_node=True)
    assert refused.status is VerificationStatus.UNVERIFIED and "attacker-box" in refused.reason
    # Another pod's container (running or previous) is not this pod's.
    stolen = verify_alert(alert_from(vllm, triton.container_id), pod, check_node=True)
    assert stolen.status is VerificationStatus.UNVERIFIED and "not a container of the pod" in stolen.reason
    forged = verify_alert(alert_from(vllm, "deadbeef0000"), pod, check_node=True)
    assert forged.status is VerificationStatus.UNVERIFIED
    # Too short to tell containers apart, whichever run it would match.
    assert not verify_alert(alert_from(vllm, old[:8]), pod, check_node=True).verified


def test_restarted_init_and_ephemeral_containers_are_matched_by_their_previous_id(
    harness: Harness, seeded: Seeded
) -> None:
    vllm = seeded[1]["vllm"]
    stored = harness.stored("v1/pods", vllm.namespace, vllm.name)
    assert stored is not None
    sidecar_id, debug_id = (hashlib.sha256(seed).hexdigest() for seed in (b"sidecar", b"debug"))
    stored["spec"]["initContainers"] = [{"name": "proxy", "image": "envoy", "restartPolicy": "Always"}]
    stored["spec"]["ephemeralContainers"] = [{"name": "debugger", "image": "busybox"}]
    stored["status"]["initContainerStatuses"] = [
        {"name": "proxy", "containerID": "containerd://" + sidecar_id}
    ]
    stored["status"]["ephemeralContainerStatuses"] = [
        {"name": "debugger", "containerID": "containerd://" + debug_id}
    ]
    harness.running.call(harness.running.emulator.put_object, "v1/pods", stored)
    for key, name, old in (
        ("initContainerStatuses", "proxy", sidecar_id),
        ("ephemeralContainerStatuses", "debugger", debug_id),
    ):
        assert restart(harness, vllm, key=key) == old
        result = verify_alert(alert_from(vllm, old), harness.pod(vllm), check_node=True)
        assert result.verified and result.container_name == name and result.reason == RESTARTED_SINCE


async def test_the_responder_quarantines_on_an_alert_from_before_a_restart(
    tmp_path: Path, seeded: Seeded
) -> None:
    """End to end: no "someone may be forging alerts", the pod is quarantined, and Slack's message
    says the container restarted since the alert."""
    running, pods, kubeconfig = seeded
    vllm = pods["vllm"]
    old = restart(Harness(running, kubeconfig), vllm)
    config = responder_config(tmp_path, kubeconfig, extra={"inputs": {}})
    responder = Responder(config, KubeGateway.from_config(config.cluster))
    await responder.start()
    try:
        await submit_all(responder, [alert_from(vllm, old)])
        assert labels(running, vllm)[LABEL] == "true"
        actions = rows(config, "SELECT action, status FROM actions")
        assert [(a["action"], a["status"]) for a in actions] == [("quarantine", "quarantined")]
        # What on-call reads, from the journal's record.
        incident_id = rows(config, "SELECT incident_id FROM incidents")[0][0]
        record = responder.journal.incident_record(incident_id)
        assert record is not None
        report = report_from_record(record)
        assert report is not None
        assert report.verification.reason == RESTARTED_SINCE and not report.decision.unverified
        text = text_of(render_incident(report))
        assert "Verified against the live pod (container `vllm`; container restarted since the alert" in text
        assert "forging" not in text
    finally:
        await responder.stop()
