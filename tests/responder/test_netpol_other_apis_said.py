"""What the leak checks cannot see: EKS's network-policy APIs are counted (a quarantine there is
not proven, a block withheld), and where the other APIs were said reviewed (ignore_other_policy_apis)
an isolated outcome says they were not read. Against the emulated API server over real HTTP."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from responder.actions.events import EventRecorder
from responder.actions.outcome import OutcomeStatus
from responder.actions.quarantine import ClusterActions
from responder.config import BlockDestination, Quarantine
from simulators.cluster_emulator import RunningCluster
from simulators.seed import SeededPod, seed_serving_cluster
from tests.deploy.test_chart_label_change import DiscoveringEmulator
from tests.responder.test_block_destination import egress_alert
from tests.responder.test_quarantine import Harness, shell_alert

Seeded = tuple[RunningCluster, dict[str, SeededPod], str]
EKS = "networking.k8s.aws/v1alpha1"


@pytest.fixture
def discovering(tmp_path: Path) -> Iterator[Seeded]:
    """The seeded cluster, serving the discovery of each API group's versions (the resources served)."""
    running = RunningCluster()
    running.emulator = DiscoveringEmulator()  # set, not passed: see tests/deploy/test_chart_label_change
    with running:
        pods = running.call(seed_serving_cluster, running.emulator)
        yield running, pods, running.write_kubeconfig(str(tmp_path / "kubeconfig.json"))


def _serve(running: RunningCluster, resource: str) -> None:
    running.call(running.emulator.resources.__setitem__, f"{EKS}/{resource}", {})


@pytest.mark.parametrize("resource", ["clusternetworkpolicies", "applicationnetworkpolicies"])
def test_eks_network_policies_are_counted_where_served(discovering: Seeded, resource: str) -> None:
    running, pods, kubeconfig = discovering
    vllm, embeddings = pods["vllm"], pods["embeddings"]
    _serve(running, resource)
    harness = Harness(running, kubeconfig)
    outcome = harness.actions.quarantine(harness.pod(vllm), shell_alert(vllm), "inc", "r", dry_run=False)
    assert outcome.status is OutcomeStatus.LEAKY
    assert (
        "isolation not proven: the cluster serves networking.k8s.aws network policies, which are not read"
        in outcome.detail
    )
    block = harness.actions.block_destination(
        harness.pod(embeddings), egress_alert(embeddings, "203.0.113.7"), dry_run=False
    )
    assert block.status is OutcomeStatus.WITHHELD
    assert "not blocked: the cluster serves networking.k8s.aws" in block.detail


def test_eks_policy_endpoints_alone_are_not_policies(discovering: Seeded) -> None:
    """policyendpoints are derived from NetworkPolicies, served wherever EKS enforces them."""
    running, pods, kubeconfig = discovering
    vllm = pods["vllm"]
    _serve(running, "policyendpoints")
    _serve(running, "clusterpolicyendpoints")
    harness = Harness(running, kubeconfig)
    outcome = harness.actions.quarantine(harness.pod(vllm), shell_alert(vllm), "inc", "r", dry_run=False)
    assert outcome.status is OutcomeStatus.QUARANTINED, outcome.detail


def test_reviewed_apis_are_said_not_read_in_an_isolated_outcome(seeded: Seeded) -> None:
    running, pods, kubeconfig = seeded
    harness = Harness(running, kubeconfig)
    harness.actions = ClusterActions(
        harness.gateway,
        Quarantine(ignore_other_policy_apis=True),
        EventRecorder(harness.gateway),
        blocks=BlockDestination(ignore_other_policy_apis=True),
    )
    vllm, embeddings = pods["vllm"], pods["embeddings"]
    outcome = harness.actions.quarantine(harness.pod(vllm), shell_alert(vllm), "inc", "r", dry_run=False)
    assert outcome.status is OutcomeStatus.QUARANTINED, outcome.detail
    assert (
        "other network-policy APIs (Cilium, Calico, Antrea, AdminNetworkPolicy, EKS, GKE FQDN) were not"
        " read: quarantine.ignore_other_policy_apis says" in outcome.detail
    )
    block = harness.actions.block_destination(
        harness.pod(embeddings), egress_alert(embeddings, "203.0.113.7"), dry_run=False
    )
    assert block.status is OutcomeStatus.BLOCKED, block.detail
    assert "were not read: block_destination.ignore_other_policy_apis says" in block.detail


def test_unreviewed_apis_leave_an_isolated_outcome_as_it_was(
    harness_default: Harness, seeded: Seeded
) -> None:
    vllm = seeded[1]["vllm"]
    outcome = harness_default.actions.quarantine(
        harness_default.pod(vllm), shell_alert(vllm), "inc", "r", dry_run=False
    )
    assert outcome.status is OutcomeStatus.QUARANTINED and "not read" not in outcome.detail


@pytest.fixture
def harness_default(seeded: Seeded) -> Harness:
    running, _, kubeconfig = seeded
    return Harness(running, kubeconfig)
