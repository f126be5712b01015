"""No NetworkPolicy holds a host-network pod: its quarantine says NOT isolated (not "not proven"),
first, with what to do instead, in a LEAKY outcome (the status Slack and the metrics know). The pod is
still labelled: the label records the quarantine, and release lifts it."""

from __future__ import annotations

from responder.actions.outcome import HOST_NETWORK_NOT_ISOLATED, OutcomeStatus
from simulators.cluster_emulator import RunningCluster
from simulators.seed import SeededPod
from tests.responder.test_quarantine import LABEL, Harness, shell_alert

Seeded = tuple[RunningCluster, dict[str, SeededPod], str]


def test_a_host_network_pod_is_said_not_isolated_with_the_next_step(seeded: Seeded) -> None:
    running, pods, kubeconfig = seeded
    harness = Harness(running, kubeconfig)
    vllm = pods["vllm"]
    harness.on_host_network(vllm)
    pod = harness.pod(vllm)
    outcome = harness.actions.quarantine(pod, shell_alert(vllm), "inc", "r", dry_run=False)
    assert outcome.status is OutcomeStatus.LEAKY
    assert outcome.not_isolated == "host_network"
    assert outcome.detail.startswith(f"{HOST_NETWORK_NOT_ISOLATED}; next: cordon its node")
    assert f"kubectl cordon {pod.node}" in outcome.detail
    assert f"kubectl -n {vllm.namespace} delete pod {vllm.name}" in outcome.detail
    assert "not proven" not in outcome.detail
    assert outcome.describe().startswith(f"LEAKY quarantine: {HOST_NETWORK_NOT_ISOLATED}")
    stored = harness.stored("v1/pods", vllm.namespace, vllm.name)
    assert stored is not None and stored["metadata"]["labels"][LABEL] == "true"
    predicted = harness.actions.quarantine(harness.pod(vllm), shell_alert(vllm), "inc", "r", dry_run=True)
    assert HOST_NETWORK_NOT_ISOLATED in predicted.detail
