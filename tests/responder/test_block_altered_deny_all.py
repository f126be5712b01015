"""The block skips a quarantine cut's deny-all only as the responder builds it (by its spec: its
cut's label alone, no rules): a policy of that name edited by hand to select the pod and allow its
egress counts like any other, in the block's decision, its proof and its recheck. Against the
emulated API server over real HTTP."""

from __future__ import annotations

from typing import Any

from responder.actions import netpol
from responder.actions.outcome import OutcomeStatus
from responder.config import Isolation, Quarantine
from simulators.cluster_emulator import RunningCluster
from simulators.seed import SeededPod
from tests.responder.test_block_destination import block_policy_of, egress_alert
from tests.responder.test_quarantine import Harness, shell_alert

Seeded = tuple[RunningCluster, dict[str, SeededPod], str]
EGRESS_DENY_ALL = "serving-guard-quarantine-egress"
ALTERED = {"policyTypes": ["Egress"], "egress": [{}]}


def _put_egress_deny_all(harness: Harness, pod: SeededPod, spec: dict[str, Any]) -> None:
    harness.put_policy(pod.namespace, EGRESS_DENY_ALL, spec)


def test_an_altered_deny_all_that_allows_the_address_leaves_the_block_leaky(seeded: Seeded) -> None:
    running, pods, kubeconfig = seeded
    harness = Harness(running, kubeconfig)
    embeddings = pods["embeddings"]
    selector = {"matchLabels": {"app": embeddings.labels["app"]}}
    _put_egress_deny_all(harness, embeddings, {"podSelector": selector, **ALTERED})
    outcome = harness.actions.block_destination(
        harness.pod(embeddings), egress_alert(embeddings, "203.0.113.7"), dry_run=False
    )
    assert outcome.status is OutcomeStatus.LEAKY, outcome.detail
    assert outcome.leaky_policies == (EGRESS_DENY_ALL,)
    assert f"is allowed by {EGRESS_DENY_ALL} (a quarantine deny-all altered by hand" in outcome.detail
    assert block_policy_of(harness, embeddings) is None  # it would only add to what that one allows


def test_a_deny_all_altered_after_the_block_is_a_lapse(seeded: Seeded) -> None:
    running, pods, kubeconfig = seeded
    harness = Harness(running, kubeconfig)
    embeddings = pods["embeddings"]
    made = harness.actions.block_destination(
        harness.pod(embeddings), egress_alert(embeddings, "203.0.113.7"), dry_run=False
    )
    assert made.status is OutcomeStatus.BLOCKED, made.detail
    assert harness.lapse(harness.pod(embeddings), cut=None, blocked=["203.0.113.7"]) is None
    selector = {"matchLabels": {"app": embeddings.labels["app"]}}
    _put_egress_deny_all(harness, embeddings, {"podSelector": selector, **ALTERED})
    lapse = harness.lapse(harness.pod(embeddings), cut=None, blocked=["203.0.113.7"])
    assert lapse is not None and lapse.startswith(
        f"NetworkPolicy {EGRESS_DENY_ALL} (a quarantine deny-all altered by hand"
    )
    assert "now allows egress to 203.0.113.7" in lapse


def test_a_deny_all_as_built_is_still_ours(seeded: Seeded) -> None:
    """As built (even one that cuts ingress too, kept beyond its cut) it selects only pods of its
    cut, whose block policy leaves them out: never counted as restricting a blocked pod's egress."""
    running, pods, kubeconfig = seeded
    harness = Harness(running, kubeconfig)
    embeddings = pods["embeddings"]
    built = netpol.deny_all_spec("serving-guard.io/quarantine", "true-egress", ("ingress", "egress"))
    _put_egress_deny_all(harness, embeddings, built)
    outcome = harness.actions.block_destination(
        harness.pod(embeddings), egress_alert(embeddings, "203.0.113.7"), dry_run=False
    )
    assert outcome.status is OutcomeStatus.BLOCKED, outcome.detail


def test_the_ingress_cuts_deny_all_kept_cutting_egress_counts_and_no_block_opens_it(seeded: Seeded) -> None:
    """A pod in the ingress cut whose deny-all was kept cutting egress too (deny_all_beyond): its
    egress is cut whole. The block policy selects pods of that cut, so a block would add
    allow-all-but-the-address to it and reopen its egress: the deny-all counts, the address is out
    of reach already, and no block policy is made."""
    running, pods, kubeconfig = seeded
    harness = Harness(running, kubeconfig, Quarantine(isolate=Isolation.INGRESS))
    embeddings = pods["embeddings"]
    quarantined = harness.actions.quarantine(
        harness.pod(embeddings), shell_alert(embeddings), "inc", "r", dry_run=False
    )
    assert quarantined.status is OutcomeStatus.QUARANTINED, quarantined.detail
    both = netpol.deny_all_spec("serving-guard.io/quarantine", "true-ingress", ("ingress", "egress"))
    harness.put_policy(embeddings.namespace, "serving-guard-quarantine-ingress", both)
    outcome = harness.actions.block_destination(
        harness.pod(embeddings), egress_alert(embeddings, "203.0.113.7"), dry_run=False
    )
    assert outcome.status is not OutcomeStatus.BLOCKED or "all other egress kept" not in outcome.detail
    assert block_policy_of(harness, embeddings) is None, outcome.detail
