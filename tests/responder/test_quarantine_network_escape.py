"""A pod that can leave its network namespace for the node's (privileged, hostPID with a capability
that enters the node's, a runtime socket) is beyond any NetworkPolicy: its quarantine is LEAKY and
its block refused, real or dry-run, against the emulated API server over real HTTP. A GPU pod that
only asks for nvidia.com/gpu is not."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from responder.actions import destination
from responder.actions.outcome import OutcomeStatus
from responder.cluster.network_escape import NETWORK_ESCAPE
from responder.config import ActionName
from responder.notify.render import render_incident
from responder.records import pod_from_json, pod_to_json
from simulators.cluster_emulator import RunningCluster
from simulators.seed import SeededPod
from tests.notify.slack_fixtures import make_decision, make_report
from tests.notify.test_slack_render import text_of
from tests.responder.test_block_destination import BLOCK_LABEL, egress_alert
from tests.responder.test_quarantine import LABEL, NP, Harness, shell_alert

Seeded = tuple[RunningCluster, dict[str, SeededPod], str]
Change = Callable[[dict[str, Any]], None]
NSENTER = "it can enter the node's network namespace (nsenter -t 1 -n)"


def reshape(harness: Harness, pod: SeededPod, change: Change) -> None:
    """Change the stored pod's spec (as a kubelet-admitted pod would have it)."""
    stored = harness.stored("v1/pods", pod.namespace, pod.name)
    assert stored is not None
    change(stored["spec"])
    harness.running.call(harness.running.emulator.put_object, "v1/pods", stored)


def security(**context: Any) -> Change:
    """The first container gets ``context`` as its securityContext."""

    def change(spec: dict[str, Any]) -> None:
        spec["containers"][0]["securityContext"] = context

    return change


def host_pid(change: Change) -> Change:
    def both(spec: dict[str, Any]) -> None:
        spec["hostPID"] = True
        change(spec)

    return both


def adds(*capabilities: str) -> Change:
    return security(capabilities={"add": list(capabilities)})


def sidecar(kind: str, **context: Any) -> Change:
    def change(spec: dict[str, Any]) -> None:
        spec[kind] = [{"name": "helper", "image": "busybox", "securityContext": context}]

    return change


def host_path(path: str) -> Change:
    def change(spec: dict[str, Any]) -> None:
        spec["volumes"] = [{"name": "host", "hostPath": {"path": path}}]

    return change


def gpu(spec: dict[str, Any]) -> None:
    spec["containers"][0]["resources"] = {"limits": {"nvidia.com/gpu": "1"}}
    spec["volumes"] = [{"name": "nvidia", "hostPath": {"path": "/usr/local/nvidia"}}]


# What the pod read over HTTP is found to allow, in words (None: nothing counted).
CASES: list[tuple[str, Change, str | None]] = [
    ("hostPID and privileged", host_pid(security(privileged=True)), "container vllm is privileged and the"),
    ("hostPID and SYS_ADMIN", host_pid(adds("SYS_ADMIN")), "container vllm adds capability SYS_ADMIN and"),
    ("hostPID and CAP_sys_admin", host_pid(adds("CAP_sys_admin")), "adds capability SYS_ADMIN and the pod"),
    ("hostPID and ALL", host_pid(adds("ALL")), "container vllm adds capability ALL and the pod shares"),
    ("hostPID and SYS_PTRACE", host_pid(adds("SYS_PTRACE")), "code it injects into a node process"),
    ("privileged alone", security(privileged=True), "is privileged: it can reach the node's network"),
    ("SYS_ADMIN alone", adds("SYS_ADMIN"), "adds capability SYS_ADMIN: it can reach the node's network"),
    ("SYS_MODULE alone", adds("SYS_MODULE"), "adds capability SYS_MODULE: it can reach"),
    ("privileged init", sidecar("initContainers", privileged=True), "init container helper is privileged"),
    ("privileged debug", sidecar("ephemeralContainers", privileged=True), "ephemeral container helper is"),
    ("node root", host_path("/"), "volume host mounts the node's / (the node's root"),
    (
        "runtime dir",
        host_path("/run/containerd/"),
        "container runtime socket /run/containerd/containerd.sock",
    ),
    ("docker socket", host_path("/var/run/docker.sock"), "runtime socket /var/run/docker.sock"),
    # k3s and RKE2 run their own containerd; MicroK8s's is a snap's; podman's API socket.
    (
        "k3s socket",
        host_path("/run/k3s/containerd/containerd.sock"),
        "runtime socket /run/k3s/containerd/containerd.sock",
    ),
    ("k3s dir", host_path("/var/run/k3s"), "runtime socket /var/run/k3s/containerd/containerd.sock"),
    (
        "microk8s dir",
        host_path("/var/snap/microk8s/common/run"),
        "runtime socket /var/snap/microk8s/common/run/containerd.sock",
    ),
    ("podman socket", host_path("/run/podman/podman.sock"), "runtime socket /run/podman/podman.sock"),
    ("SYS_PTRACE alone", adds("SYS_PTRACE"), None),
    ("NET_ADMIN with hostPID", host_pid(adds("NET_ADMIN", "NET_RAW")), None),
    ("not privileged", host_pid(security(privileged=False, allowPrivilegeEscalation=False)), None),
    ("GPU", gpu, None),
    ("plain", lambda spec: None, None),
]


@pytest.fixture
def harness(seeded: Seeded) -> Harness:
    running, _, kubeconfig = seeded
    return Harness(running, kubeconfig)


def test_what_counts_as_a_way_out_of_the_pods_network_namespace(harness: Harness, seeded: Seeded) -> None:
    vllm = seeded[1]["vllm"]
    original = harness.stored("v1/pods", vllm.namespace, vllm.name)
    assert original is not None
    for name, change, expected in CASES:
        harness.running.call(harness.running.emulator.put_object, "v1/pods", original)
        reshape(harness, vllm, change)
        found = harness.pod(vllm).network_escape
        if expected is None:
            assert found is None, name
        else:
            assert found is not None and found.startswith(NETWORK_ESCAPE + ": "), name
            assert expected in found, (name, found)
    reshape(harness, vllm, host_pid(security(privileged=True)))
    pod = harness.pod(vllm)
    assert pod.network_escape is not None and pod.network_escape.endswith(NSENTER)
    # As the journal keeps it (a dry-run or a resumed incident reads it back).
    assert pod_from_json(pod_to_json(pod)).network_escape == pod.network_escape
    assert pod_from_json({**pod_to_json(pod), "network_escape": None}).network_escape is None


def test_a_quarantine_of_a_pod_that_can_enter_the_nodes_network_is_leaky(
    harness: Harness, seeded: Seeded
) -> None:
    vllm = seeded[1]["vllm"]
    reshape(harness, vllm, host_pid(security(privileged=True)))
    outcome = harness.actions.quarantine(harness.pod(vllm), shell_alert(vllm), "inc", "r", dry_run=False)
    assert outcome.status is OutcomeStatus.LEAKY
    assert outcome.detail == (
        f"created NetworkPolicy serving-guard-quarantine; isolation not proven: {NETWORK_ESCAPE}: container"
        f" vllm is privileged and the pod shares the node's PID namespace (hostPID): {NSENTER}"
    )
    # Labelled and cut all the same: what NetworkPolicies can do is done.
    stored = harness.stored("v1/pods", vllm.namespace, vllm.name)
    assert stored is not None and stored["metadata"]["labels"][LABEL] == "true"
    assert harness.stored(NP, vllm.namespace, "serving-guard-quarantine") is not None
    assert "QuarantineLeaky" in [e["reason"] for e in harness.events(vllm.namespace)]


def test_a_dry_run_predicts_it_leaky(harness: Harness, seeded: Seeded) -> None:
    vllm = seeded[1]["vllm"]
    reshape(harness, vllm, adds("SYS_ADMIN"))
    predicted = harness.actions.quarantine(harness.pod(vllm), shell_alert(vllm), "inc", "r", dry_run=True)
    assert predicted.status is OutcomeStatus.DRY_RUN
    assert (
        f"it would be LEAKY: {NETWORK_ESCAPE}: container vllm adds capability SYS_ADMIN" in predicted.detail
    )
    stored = harness.stored("v1/pods", vllm.namespace, vllm.name)
    assert stored is not None and LABEL not in stored["metadata"]["labels"]


def test_a_debug_container_added_after_the_read_is_seen_by_the_quarantine(
    harness: Harness, seeded: Seeded
) -> None:
    """The pod is judged as labelled, not as first read: `kubectl debug --profile=sysadmin` since."""
    vllm = seeded[1]["vllm"]
    read = harness.pod(vllm)
    assert read.network_escape is None
    reshape(harness, vllm, sidecar("ephemeralContainers", privileged=True))
    outcome = harness.actions.quarantine(read, shell_alert(vllm), "inc", "r", dry_run=False)
    assert outcome.status is OutcomeStatus.LEAKY
    assert "ephemeral container helper is privileged" in outcome.detail


def test_a_gpu_pod_is_quarantined(harness: Harness, seeded: Seeded) -> None:
    vllm = seeded[1]["vllm"]
    reshape(harness, vllm, gpu)
    outcome = harness.actions.quarantine(harness.pod(vllm), shell_alert(vllm), "inc", "r", dry_run=False)
    assert outcome.status is OutcomeStatus.QUARANTINED, outcome.detail


@pytest.mark.parametrize("dry_run", [False, True])
def test_a_block_is_refused_and_nothing_is_made(harness: Harness, seeded: Seeded, dry_run: bool) -> None:
    vllm = seeded[1]["vllm"]
    reshape(harness, vllm, host_pid(security(privileged=True)))
    pod = harness.pod(vllm)
    outcome = harness.actions.block_destination(pod, egress_alert(vllm, "203.0.113.7"), dry_run=dry_run)
    assert outcome.status is (OutcomeStatus.DRY_RUN if dry_run else OutcomeStatus.LEAKY)
    assert outcome.detail.startswith(f"203.0.113.7 (fd.sip) cannot be blocked: {NETWORK_ESCAPE}: container")
    assert outcome.detail.endswith("; nothing was made, quarantine cannot isolate it either")
    name = destination.block_policy_name("serving-guard-block", pod.uid)
    assert harness.stored(NP, vllm.namespace, name) is None
    stored = harness.stored("v1/pods", vllm.namespace, vllm.name)
    assert stored is not None and BLOCK_LABEL not in stored["metadata"]["labels"]
    if not dry_run:
        blocking = (ActionName.NOTIFY, ActionName.BLOCK_DESTINATION)
        decision = make_decision(actions=blocking, requested=blocking)
        text = text_of(render_incident(make_report(decision=decision, outcomes=(outcome,))))
        assert "*Block of `203.0.113.7` NOT in force*" in text
        assert "only stopping it does" in text and "quarantining its egress" not in text


def test_a_block_labelled_before_a_debug_container_came_is_not_in_force(
    harness: Harness, seeded: Seeded
) -> None:
    vllm = seeded[1]["vllm"]
    read = harness.pod(vllm)
    reshape(harness, vllm, sidecar("ephemeralContainers", capabilities={"add": ["SYS_ADMIN"]}))
    outcome = harness.actions.block_destination(read, egress_alert(vllm, "203.0.113.7"), dry_run=False)
    assert outcome.status is OutcomeStatus.LEAKY
    assert outcome.detail.startswith(
        f"{NETWORK_ESCAPE}: ephemeral container helper adds capability SYS_ADMIN"
    )
    assert outcome.detail.endswith(": nothing is blocked")
    assert outcome.block_labelled  # `serving-guard release` lifts what was made
