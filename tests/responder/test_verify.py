from __future__ import annotations

import dataclasses

from responder.alert import parse_time_ns
from responder.alert_json import alert_from_mapping
from responder.cluster.context import ContainerInfo, PodContext
from responder.cluster.verify import VerificationStatus, verify_alert
from simulators.cluster_emulator import RunningCluster
from simulators.seed import SeededPod
from tests.responder.test_quarantine import Harness

FULL_ID = "0123456789abcdef" * 4
POD = PodContext(
    namespace="ml",
    name="triton-0",
    uid="u",
    node="worker-1",
    containers=(
        ContainerInfo("init", "busybox", container_id="containerd://" + "f" * 64, init=True),
        ContainerInfo(
            "triton", "nvcr.io/nvidia/tritonserver:24.05-py3", container_id="containerd://" + FULL_ID
        ),
    ),
)


def alert(container_id: str | None = FULL_ID[:12], hostname: str | None = "worker-1", pod: str = "triton-0"):  # type: ignore[no-untyped-def]
    fields = {"k8s.ns.name": "ml", "k8s.pod.name": pod}
    if container_id is not None:
        fields["container.id"] = container_id
    payload = {"rule": "r", "priority": "Notice", "time": "2026-01-01T00:00:00Z", "output_fields": fields}
    if hostname is not None:
        payload["hostname"] = hostname
    return alert_from_mapping(payload)


def test_matching_container_and_node_verifies() -> None:
    result = verify_alert(alert(), POD, check_node=True)
    assert result.verified and result.container_name == "triton"
    assert verify_alert(alert(FULL_ID), POD, check_node=True).verified  # the full id works too


def test_forged_container_id_is_refused() -> None:
    result = verify_alert(alert("deadbeef0000"), POD, check_node=True)
    assert result.status is VerificationStatus.UNVERIFIED
    assert "not a container of the pod" in result.reason and "deadbeef0000" in result.reason
    # The reason reaches the audit trail: it must not hand a forger the pod's real id.
    assert FULL_ID[:12] not in result.reason


def test_short_or_missing_or_host_ids_are_refused() -> None:
    assert not verify_alert(alert(FULL_ID[:6]), POD, check_node=True).verified
    assert "no container.id" in verify_alert(alert(None), POD, check_node=True).reason
    assert not verify_alert(alert("host"), POD, check_node=True).verified


def test_node_mismatch_is_refused_when_checked() -> None:
    result = verify_alert(alert(hostname="attacker-box"), POD, check_node=True)
    assert result.status is VerificationStatus.UNVERIFIED and "attacker-box" in result.reason
    assert "worker-1" not in result.reason  # nor the pod's node
    assert verify_alert(alert(hostname="attacker-box"), POD, check_node=False).verified
    assert not verify_alert(alert(hostname=None), POD, check_node=True).verified


def test_name_mismatch_is_refused() -> None:
    assert not verify_alert(alert(pod="other"), POD, check_node=True).verified


def test_an_id_that_is_no_runtime_id_is_refused_as_such() -> None:
    # Prefix matching alone would take these: the id is held to the runtime's form first.
    for odd in (FULL_ID[:12] + "zz", FULL_ID + "0", FULL_ID[:12] + " ", FULL_ID[:12] + "\n"):
        result = verify_alert(alert(odd), POD, check_node=True)
        assert result.status is VerificationStatus.UNVERIFIED, odd
        assert "not a runtime container id" in result.reason
    assert verify_alert(alert("containerd://" + FULL_ID.upper()), POD, check_node=True).verified


def test_an_alert_older_than_the_pod_is_said_to_maybe_be_about_an_earlier_pod_of_its_name() -> None:
    """A StatefulSet's replica re-created under its name: an alert taken up late about the pod
    before it names an id the new pod does not have. Still unverified (nothing is done), said so."""
    created = dataclasses.replace(POD, created_ns=parse_time_ns("2026-01-01T00:05:00Z"))
    older = verify_alert(alert("deadbeef0000"), created, check_node=True)  # 00:00:00, five minutes before
    assert older.status is VerificationStatus.UNVERIFIED
    assert "older than the pod of this name now running" in older.reason and "earlier pod" in older.reason
    assert "00:05" not in older.reason  # the pod's own time is not quoted
    within_skew = dataclasses.replace(POD, created_ns=parse_time_ns("2026-01-01T00:01:00Z"))
    assert (
        "older than the pod" not in verify_alert(alert("deadbeef0000"), within_skew, check_node=True).reason
    )
    assert verify_alert(alert(), created, check_node=True).verified  # the id decides, not the age


def test_the_pods_creation_time_is_kept_in_the_journals_record_of_it() -> None:
    from responder.records import pod_from_json, pod_to_json

    created = dataclasses.replace(POD, created_ns=1_767_225_900_000_000_000)
    assert pod_from_json(pod_to_json(created)).created_ns == created.created_ns
    assert pod_from_json(pod_to_json(POD)).created_ns is None  # and records without it read as before


def test_the_pods_creation_time_is_read_from_the_api(
    seeded: tuple[RunningCluster, dict[str, SeededPod], str],
) -> None:
    running, pods, kubeconfig = seeded
    pod = Harness(running, kubeconfig).pod(pods["vllm"])
    stored = running.call(running.emulator.get_object, "v1/pods", pod.namespace, pod.name)
    assert pod.created_ns == parse_time_ns(stored["metadata"]["creationTimestamp"])
