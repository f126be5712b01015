"""Where the cluster serves network-policy APIs the responder does not read (Cilium, Calico, Antrea,
AdminNetworkPolicy), a quarantine is not proven: LEAKY, said why, until
quarantine.ignore_other_policy_apis says they were reviewed; a block is withheld (Antrea too).
Discovery is one cached read shared with the block, and a failed one is said, never a failure.
All against the emulated API server over real HTTP."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from responder.actions.destination import OTHER_POLICY_GROUPS
from responder.actions.events import EventRecorder
from responder.actions.outcome import OutcomeStatus
from responder.actions.quarantine import ClusterActions
from responder.config import Isolation, Quarantine, load_config_text
from responder.errors import UserError
from simulators.cluster_emulator import Fault, RunningCluster
from simulators.seed import SeededPod, seed_serving_cluster
from tests.deploy.test_chart_label_change import DiscoveringEmulator
from tests.responder.test_block_destination import block_policy_of, egress_alert
from tests.responder.test_quarantine import LABEL, NP, Harness, shell_alert

Seeded = tuple[RunningCluster, dict[str, SeededPod], str]
DISCOVERY = ("GET", "/apis")


def serve(running: RunningCluster, group: str) -> None:
    """The cluster serves ``group`` (a CNI's or an admin policy API) from now on."""
    running.call(running.emulator.resources.__setitem__, f"{group}/v1beta1/somepolicies", {})


def told_reviewed(harness: Harness) -> None:
    harness.actions = ClusterActions(
        harness.gateway, Quarantine(ignore_other_policy_apis=True), EventRecorder(harness.gateway)
    )


@pytest.fixture
def harness(seeded: Seeded) -> Harness:
    running, _, kubeconfig = seeded
    return Harness(running, kubeconfig)


@pytest.mark.parametrize("group", OTHER_POLICY_GROUPS)
def test_a_quarantine_where_other_policy_apis_are_served_is_not_proven(
    harness: Harness, seeded: Seeded, group: str
) -> None:
    vllm = seeded[1]["vllm"]
    serve(harness.running, group)
    outcome = harness.actions.quarantine(harness.pod(vllm), shell_alert(vllm), "inc", "r", dry_run=False)
    assert outcome.status is OutcomeStatus.LEAKY
    assert (
        f"isolation not proven: the cluster serves {group} network policies, which are not read (set"
        " quarantine.ignore_other_policy_apis once none of them lets a quarantined pod's traffic through)"
    ) in outcome.detail
    assert outcome.describe().startswith("LEAKY quarantine: ")
    # Everything NetworkPolicies can do is done all the same.
    stored = harness.stored("v1/pods", vllm.namespace, vllm.name)
    assert stored is not None and stored["metadata"]["labels"][LABEL] == "true"
    assert harness.stored(NP, vllm.namespace, "serving-guard-quarantine") is not None


@pytest.mark.parametrize("group", ["crd.antrea.io", "security.antrea.tanzu.vmware.com"])
def test_antrea_withholds_a_block(harness: Harness, seeded: Seeded, group: str) -> None:
    """Antrea's tiered policies are enforced before NetworkPolicies: an Allow there passes the
    block policy's except, and its baseline tier stops applying once the block policy selects."""
    vllm = seeded[1]["vllm"]
    serve(harness.running, group)
    outcome = harness.actions.block_destination(
        harness.pod(vllm), egress_alert(vllm, "203.0.113.7"), dry_run=False
    )
    assert outcome.status is OutcomeStatus.WITHHELD
    assert f"not blocked: the cluster serves {group}, whose policies may restrict" in outcome.detail
    assert block_policy_of(harness, vllm) is None


def test_told_they_were_reviewed_a_quarantine_is_proven_without_asking(
    harness: Harness, seeded: Seeded
) -> None:
    vllm = seeded[1]["vllm"]
    serve(harness.running, "cilium.io")
    told_reviewed(harness)
    calls = harness.record_calls()
    outcome = harness.actions.quarantine(harness.pod(vllm), shell_alert(vllm), "inc", "r", dry_run=False)
    assert outcome.status is OutcomeStatus.QUARANTINED, outcome.detail
    assert DISCOVERY not in calls


def test_a_dry_run_predicts_it_leaky(harness: Harness, seeded: Seeded) -> None:
    vllm = seeded[1]["vllm"]
    serve(harness.running, "policy.networking.k8s.io")
    predicted = harness.actions.quarantine(harness.pod(vllm), shell_alert(vllm), "inc", "r", dry_run=True)
    assert predicted.status is OutcomeStatus.DRY_RUN
    assert (
        "it would be LEAKY: the cluster serves policy.networking.k8s.io network policies, which are not read"
        in predicted.detail
    )
    stored = harness.stored("v1/pods", vllm.namespace, vllm.name)
    assert stored is not None and LABEL not in stored["metadata"]["labels"]


def test_discovery_is_read_once_for_quarantines_and_blocks_alike(harness: Harness, seeded: Seeded) -> None:
    pods = seeded[1]
    serve(harness.running, "cilium.io")
    calls = harness.record_calls()
    block = harness.actions.block_destination(
        harness.pod(pods["torchserve"]), egress_alert(pods["torchserve"], "203.0.113.7"), dry_run=False
    )
    assert block.status is OutcomeStatus.WITHHELD
    for name in ("vllm", "triton"):
        outcome = harness.actions.quarantine(
            harness.pod(pods[name]), shell_alert(pods[name]), "inc", "r", dry_run=False
        )
        assert outcome.status is OutcomeStatus.LEAKY and "the cluster serves cilium.io" in outcome.detail
    assert calls.count(DISCOVERY) == 1


def test_a_failed_discovery_is_leaky_not_failed_and_asked_again(harness: Harness, seeded: Seeded) -> None:
    vllm = seeded[1]["vllm"]
    harness.fail(Fault(status=403, method="GET", path="/apis", times=10, message="discovery forbidden"))
    outcome = harness.actions.quarantine(harness.pod(vllm), shell_alert(vllm), "inc", "r", dry_run=False)
    assert outcome.status is OutcomeStatus.LEAKY
    assert "isolation not proven: the cluster's network-policy APIs could not be listed (" in outcome.detail
    assert "discovery forbidden" in outcome.detail
    stored = harness.stored("v1/pods", vllm.namespace, vllm.name)
    assert stored is not None and stored["metadata"]["labels"][LABEL] == "true"
    # Not remembered: once discovery answers, the next quarantine is proven.
    harness.running.call(harness.running.emulator.faults.clear)
    calls = harness.record_calls()
    again = harness.actions.quarantine(harness.pod(vllm), shell_alert(vllm), "inc", "r", dry_run=False)
    assert again.status is OutcomeStatus.QUARANTINED, again.detail
    assert DISCOVERY in calls


def test_the_key_is_read_from_the_config_and_only_as_a_boolean(tmp_path: Path, seeded: Seeded) -> None:
    running, pods, kubeconfig = seeded
    serve(running, "crd.antrea.io")
    harness = Harness(running, kubeconfig)
    text = "logging: {level: error}\nquarantine:\n  ignore_other_policy_apis: true\n"
    config = load_config_text(text, str(tmp_path / "config.yaml"))
    assert config.quarantine.ignore_other_policy_apis is True
    assert (
        load_config_text("logging: {level: error}\n", "default").quarantine.ignore_other_policy_apis is False
    )
    harness.actions = ClusterActions.of_config(harness.gateway, config)
    vllm = pods["vllm"]
    outcome = harness.actions.quarantine(harness.pod(vllm), shell_alert(vllm), "inc", "r", dry_run=False)
    assert outcome.status is OutcomeStatus.QUARANTINED, outcome.detail
    with pytest.raises(UserError) as refused:
        load_config_text(text.replace("true", '"yes"'), "bad.yaml")
    assert "bad.yaml:3: quarantine.ignore_other_policy_apis: must be true or false, not 'yes'" in str(
        refused.value
    )


def test_a_policy_api_served_since_a_proven_quarantine_undoes_it_at_the_recheck(
    harness: Harness, seeded: Seeded
) -> None:
    """A CNI installed after the quarantine was proven: its policies are not read, so the recheck
    (once discovery is read again: a fresh responder here, DISCOVERY_TTL_NS in a running one) no
    longer calls it isolated; told they were reviewed, it does; a LEAKY one was never said to hold."""
    vllm = seeded[1]["vllm"]
    made = harness.actions.quarantine(harness.pod(vllm), shell_alert(vllm), "inc", "r", dry_run=False)
    assert made.status is OutcomeStatus.QUARANTINED
    serve(harness.running, "cilium.io")
    assert harness.lapse(harness.pod(vllm), cut=Isolation.BOTH, proven=True) is None  # discovery cached
    harness.actions = ClusterActions(harness.gateway, Quarantine(), EventRecorder(harness.gateway))
    assert harness.lapse(harness.pod(vllm), cut=Isolation.BOTH, proven=True) == (
        "the cluster now serves cilium.io network policies, which are not read: they may let its traffic"
        " through (set quarantine.ignore_other_policy_apis once none of them does)"
    )
    assert harness.lapse(harness.pod(vllm), cut=Isolation.BOTH) is None  # LEAKY when made: not held to it
    told_reviewed(harness)
    assert harness.lapse(harness.pod(vllm), cut=Isolation.BOTH, proven=True) is None
    # A discovery that fails is no lapse: asked again next time.
    harness.actions = ClusterActions(harness.gateway, Quarantine(), EventRecorder(harness.gateway))
    harness.fail(Fault(status=403, method="GET", path="/apis", times=1, message="discovery forbidden"))
    assert harness.lapse(harness.pod(vllm), cut=Isolation.BOTH, proven=True) is None


@pytest.fixture
def discovering(tmp_path: Path) -> Iterator[Seeded]:
    """The seeded cluster, serving the discovery of each API group's versions (the resources served)."""
    running = RunningCluster()
    running.emulator = DiscoveringEmulator()  # set, not passed: see tests/deploy/test_chart_label_change
    with running:
        pods = running.call(seed_serving_cluster, running.emulator)
        yield running, pods, running.write_kubeconfig(str(tmp_path / "kubeconfig.json"))


def test_gke_fqdn_network_policies_are_counted_where_served_not_for_their_api_group_alone(
    discovering: Seeded,
) -> None:
    """GKE serves networking.gke.io on every cluster (ManagedCertificate): only its
    FQDNNetworkPolicy, which allows egress beside NetworkPolicies, leaves a quarantine unproven."""
    running, pods, kubeconfig = discovering
    vllm = pods["vllm"]
    running.call(running.emulator.resources.__setitem__, "networking.gke.io/v1/managedcertificates", {})
    harness = Harness(running, kubeconfig)
    proven = harness.actions.quarantine(harness.pod(vllm), shell_alert(vllm), "inc", "r", dry_run=False)
    assert proven.status is OutcomeStatus.QUARANTINED, proven.detail
    running.call(running.emulator.resources.__setitem__, "networking.gke.io/v1alpha1/fqdnnetworkpolicies", {})
    harness = Harness(running, kubeconfig)  # discovery is cached per responder
    unproven = harness.actions.quarantine(harness.pod(vllm), shell_alert(vllm), "inc", "r", dry_run=False)
    assert unproven.status is OutcomeStatus.LEAKY and not unproven.leaky_policies
    assert unproven.detail == (
        "isolation not proven: the cluster serves networking.gke.io network policies, which are not read"
        " (set quarantine.ignore_other_policy_apis once none of them lets a quarantined pod's traffic"
        " through)"
    )
