"""The block_destination action against the emulated API server over real HTTP: the pod's own
policy and label, the proof read back, the cases where NetworkPolicies cannot block (and nothing is
made), a quarantine over a block, and release."""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import sqlite3
import time
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from responder.actions import destination
from responder.actions.outcome import KeptOut, OutcomeStatus
from responder.actions.pod_patch import ReleasedMeanwhile
from responder.actions.pod_records import CLOCK_SKEW_NS
from responder.alert import Alert
from responder.alert_json import alert_from_mapping
from responder.audit.answer import read_answer
from responder.audit.query import AuditQuery
from responder.audit.text import incident_outcome_text
from responder.audit.trail import _outcome_fields as action_fields
from responder.audit.trail import load_trail
from responder.cluster.api import KubeGateway
from responder.config import ActionName, BlockDestination, Isolation
from responder.journal.store import report_from_record
from responder.notify.render import render_incident
from responder.service import Responder
from simulators.cluster_emulator import Fault, RunningCluster
from simulators.falco_json import falco_alert
from simulators.seed import SeededPod
from tests.helpers import FakeClock, responder_config
from tests.notify.slack_fixtures import make_decision, make_report
from tests.notify.test_slack_render import text_of
from tests.responder.kmock_cluster import delete_policy_before_each_put
from tests.responder.test_pipeline import submit_all
from tests.responder.test_quarantine import NP, Harness, shell_alert

BLOCK_LABEL = "serving-guard.io/block"
EGRESS_RULE = "Anomalous egress from serving pod"

Seeded = tuple[RunningCluster, dict[str, SeededPod], str]


def egress_alert(pod: SeededPod, address: str, field: str = "fd.sip") -> Alert:
    return alert_from_mapping(falco_alert(pod, EGRESS_RULE, "Warning", "egress", {field: address}))


def allow_https_out(harness: Harness, namespace: str) -> None:
    """A policy that restricts every pod's egress to port 443, anywhere: it lets the address through."""
    harness.put_policy(
        namespace,
        "allow-https-out",
        {
            "podSelector": {},
            "policyTypes": ["Egress"],
            "egress": [{"ports": [{"port": 443, "protocol": "TCP"}]}],
        },
    )


async def started_blocking(tmp_path: Path, kubeconfig: str, clock: FakeClock | None = None) -> Responder:
    """A responder whose one policy blocks the anomalous egress's destination."""
    policy = {
        "name": "block-egress-destination",
        "match": {"rules": [EGRESS_RULE]},
        "actions": ["notify", "block_destination"],
    }
    config = responder_config(tmp_path, kubeconfig, extra={"inputs": {}, "policies": [policy]})
    responder = Responder(config, KubeGateway.from_config(config.cluster), clock_ns=clock or time.time_ns)
    await responder.start()
    return responder


async def settled(responder: Responder) -> None:
    """Follow-up blocks run in the background."""
    pipeline = responder.pipeline
    assert pipeline is not None
    for _ in range(250):
        if not pipeline._background:
            return
        await asyncio.sleep(0.02)
    raise AssertionError("follow-up blocks still running")


@pytest.fixture
def harness(seeded: Seeded) -> Harness:
    running, _, kubeconfig = seeded
    return Harness(running, kubeconfig)


def block_policy_of(harness: Harness, pod: SeededPod) -> dict[str, Any] | None:
    uid = harness.pod(pod).uid
    return harness.stored(NP, pod.namespace, destination.block_policy_name("serving-guard-block", uid))


def test_a_block_makes_the_pods_own_policy_labels_the_pod_and_proves_it(
    harness: Harness, seeded: Seeded
) -> None:
    vllm = seeded[1]["vllm"]
    pod = harness.pod(vllm)
    calls = harness.record_calls()
    outcome = harness.actions.block_destination(pod, egress_alert(vllm, "203.0.113.7"), dry_run=False)
    made = list(calls)
    assert outcome.status is OutcomeStatus.BLOCKED, outcome
    name = destination.block_policy_name("serving-guard-block", pod.uid)
    assert outcome.extra == {
        "address": "203.0.113.7",
        "network_policy": name,
        "newly_blocked": True,
        "labelled": True,
    }
    assert "all other egress kept" in outcome.detail and outcome.ok
    assert outcome.describe() == "blocked egress to 203.0.113.7"
    policy = block_policy_of(harness, vllm)
    assert policy is not None
    assert policy["metadata"]["labels"] == {"app.kubernetes.io/managed-by": "serving-guard"}
    assert destination.blocked_by(policy["spec"]) == {ipaddress.ip_address("203.0.113.7")}
    stored = harness.stored("v1/pods", vllm.namespace, vllm.name)
    assert stored is not None and stored["metadata"]["labels"][BLOCK_LABEL] == destination.pod_key(pod.uid)
    # Discovery, the policies read, the policy made (selecting nothing yet), the label, the proof,
    # the Event.
    assert made == [
        ("GET", "/apis"),
        ("GET", f"/apis/networking.k8s.io/v1/namespaces/{vllm.namespace}/networkpolicies"),
        ("POST", f"/apis/networking.k8s.io/v1/namespaces/{vllm.namespace}/networkpolicies"),
        ("PATCH", f"/api/v1/namespaces/{vllm.namespace}/pods/{vllm.name}"),
        ("GET", f"/apis/networking.k8s.io/v1/namespaces/{vllm.namespace}/networkpolicies"),
        ("POST", f"/api/v1/namespaces/{vllm.namespace}/events"),
    ]
    events = [e for e in harness.events(vllm.namespace) if e["reason"] == "DestinationBlocked"]
    assert len(events) == 1 and "203.0.113.7" in events[0]["message"]


def test_a_second_address_is_added_and_a_repeat_changes_nothing(harness: Harness, seeded: Seeded) -> None:
    vllm = seeded[1]["vllm"]
    first = harness.actions.block_destination(
        harness.pod(vllm), egress_alert(vllm, "203.0.113.7"), dry_run=False
    )
    again = harness.actions.block_destination(
        harness.pod(vllm), egress_alert(vllm, "203.0.113.7"), dry_run=False
    )
    second = harness.actions.block_destination(
        harness.pod(vllm), egress_alert(vllm, "2606:4700::1111", "fd.rip"), dry_run=False
    )
    assert (first.status, again.status, second.status) == (OutcomeStatus.BLOCKED,) * 3
    # What the block circuit breaker counts: an address added, not one found there.
    assert (first.newly_blocked, again.newly_blocked, second.newly_blocked) == (True, False, True)
    assert "also blocked: 203.0.113.7" in second.detail
    policy = block_policy_of(harness, vllm)
    assert policy is not None
    assert {str(a) for a in destination.blocked_by(policy["spec"])} == {"203.0.113.7", "2606:4700::1111"}


def test_dry_run_predicts_and_changes_nothing(harness: Harness, seeded: Seeded) -> None:
    vllm = seeded[1]["vllm"]
    outcome = harness.actions.block_destination(
        harness.pod(vllm), egress_alert(vllm, "203.0.113.7"), dry_run=True
    )
    assert outcome.status is OutcomeStatus.DRY_RUN
    assert "would block egress to 203.0.113.7" in outcome.detail
    assert block_policy_of(harness, vllm) is None
    stored = harness.stored("v1/pods", vllm.namespace, vllm.name)
    assert stored is not None and BLOCK_LABEL not in stored["metadata"].get("labels", {})


def test_an_address_that_cannot_be_blocked_is_withheld_and_nothing_is_made(
    harness: Harness, seeded: Seeded
) -> None:
    vllm = seeded[1]["vllm"]
    outcome = harness.actions.block_destination(
        harness.pod(vllm), egress_alert(vllm, "10.96.0.10"), dry_run=False
    )
    assert outcome.status is OutcomeStatus.WITHHELD
    assert "nothing to block: fd.sip 10.96.0.10 is not a public address" in outcome.detail
    assert block_policy_of(harness, vllm) is None


def test_a_pod_whose_egress_another_policy_allows_gets_no_block_policy(
    harness: Harness, seeded: Seeded
) -> None:
    """A block policy would only add to what the other policy allows: LEAKY, named, nothing made."""
    vllm = seeded[1]["vllm"]
    allow_https_out(harness, vllm.namespace)
    outcome = harness.actions.block_destination(
        harness.pod(vllm), egress_alert(vllm, "203.0.113.7"), dry_run=False
    )
    assert outcome.status is OutcomeStatus.LEAKY
    assert outcome.leaky_policies == ("allow-https-out",)
    assert "a block policy would only add to what they allow, so none was made" in outcome.detail
    assert outcome.describe() == "LEAKY block of 203.0.113.7: still allowed by allow-https-out"
    assert block_policy_of(harness, vllm) is None


def test_a_pod_whose_egress_policies_keep_the_address_out_is_already_blocked(
    harness: Harness, seeded: Seeded
) -> None:
    vllm = seeded[1]["vllm"]
    harness.put_policy(
        vllm.namespace,
        "egress-dns-only",
        {"podSelector": {}, "policyTypes": ["Egress"], "egress": [{"to": [{"namespaceSelector": {}}]}]},
    )
    outcome = harness.actions.block_destination(
        harness.pod(vllm), egress_alert(vllm, "203.0.113.7"), dry_run=False
    )
    assert outcome.status is OutcomeStatus.BLOCKED
    assert "already out of reach" in outcome.detail and "egress-dns-only" in outcome.detail
    assert block_policy_of(harness, vllm) is None
    # Said as a fact of the outcome, not only in its words: no block was made, and what keeps it out.
    assert outcome.kept_out is KeptOut.POLICIES and outcome.kept_out_by == ("egress-dns-only",)
    assert not outcome.block_labelled and "newly_blocked" not in outcome.extra
    assert outcome.describe() == (
        "no block made: 203.0.113.7 is already out of reach (other NetworkPolicies restrict the pod's egress)"
    )
    # The pod's Event says so too: nothing was blocked.
    reasons = [
        e["reason"] for e in harness.events(vllm.namespace) if e["involvedObject"]["name"] == vllm.name
    ]
    assert reasons[-1] == "DestinationKeptOut"


def test_a_quarantine_over_a_block_is_not_opened_by_it(harness: Harness, seeded: Seeded) -> None:
    """The block policy leaves out pods whose egress a cut stops: the quarantine is not LEAKY through
    it. Under the cut no block policy is changed (lifted by hand later, policies the quarantine had
    patched could select the pod again, and the block policy would add to what they allow)."""
    vllm = seeded[1]["vllm"]
    blocked = harness.actions.block_destination(
        harness.pod(vllm), egress_alert(vllm, "203.0.113.7"), dry_run=False
    )
    assert blocked.status is OutcomeStatus.BLOCKED
    quarantined = harness.actions.quarantine(
        harness.pod(vllm),
        shell_alert(vllm),
        "inc-1",
        "Critical: shell",
        dry_run=False,
        isolate=Isolation.EGRESS,
    )
    assert quarantined.status is OutcomeStatus.QUARANTINED, quarantined.detail
    # Blocking again while the egress cut holds: out of reach already, and nothing is changed.
    again = harness.actions.block_destination(
        harness.pod(vllm), egress_alert(vllm, "203.0.113.8"), dry_run=False
    )
    assert again.status is OutcomeStatus.BLOCKED
    assert (
        "already out of reach: a quarantine cuts the pod's egress"
        " (NetworkPolicy serving-guard-quarantine-egress); no block policy was made" in again.detail
    )
    assert again.kept_out is KeptOut.QUARANTINE
    assert again.kept_out_by == ("serving-guard-quarantine-egress",) and not again.block_labelled
    assert blocked.kept_out is None  # the block made before the cut
    policy = block_policy_of(harness, vllm)
    assert policy is not None
    assert {str(a) for a in destination.blocked_by(policy["spec"])} == {"203.0.113.7"}


def test_the_block_policy_belongs_to_the_pod_and_a_concurrent_addition_is_kept(
    harness: Harness, seeded: Seeded
) -> None:
    """Owned by the pod (garbage-collected with it); a write that meets a conflict reads the policy
    again and merges, so an address another writer added meanwhile is not lost."""
    vllm = seeded[1]["vllm"]
    pod = harness.pod(vllm)
    first = harness.actions.block_destination(pod, egress_alert(vllm, "203.0.113.7"), dry_run=False)
    assert first.status is OutcomeStatus.BLOCKED
    policy = block_policy_of(harness, vllm)
    assert policy is not None
    assert policy["metadata"]["ownerReferences"] == [
        {"apiVersion": "v1", "kind": "Pod", "name": vllm.name, "uid": pod.uid}
    ]
    # Another writer adds an address between this block's read of the policies and its write.
    stale = harness.pod(vllm)
    name = destination.block_policy_name("serving-guard-block", pod.uid)
    other = destination.block_spec(
        BLOCK_LABEL,
        destination.pod_key(pod.uid),
        [ipaddress.ip_address(a) for a in ("203.0.113.7", "198.51.100.5")],
        quarantine_label="serving-guard.io/quarantine",
        egress_cut_values=["true"],
    )
    listings = [harness.gateway.list_network_policies(vllm.namespace)]  # the block's first read: stale
    real = harness.gateway.list_network_policies
    harness.gateway.list_network_policies = (  # type: ignore[method-assign]
        lambda namespace: listings.pop() if listings else real(namespace)
    )
    harness.put_policy(vllm.namespace, name, other)  # a new resourceVersion: the write conflicts
    second = harness.actions.block_destination(stale, egress_alert(vllm, "203.0.113.9"), dry_run=False)
    policy = block_policy_of(harness, vllm)
    assert policy is not None
    assert {str(a) for a in destination.blocked_by(policy["spec"])} == {
        "203.0.113.7",
        "198.51.100.5",
        "203.0.113.9",
    }
    assert second.status is OutcomeStatus.BLOCKED, second.detail


def test_a_block_policy_deleted_between_its_read_and_its_write_is_made_again(
    harness: Harness, seeded: Seeded
) -> None:
    """Deleted meanwhile (GitOps prune, kubectl delete), the rewrite meets a 404: about the policy,
    never the pod gone. It is read again, found gone, and made anew."""
    vllm = seeded[1]["vllm"]
    first = harness.actions.block_destination(
        harness.pod(vllm), egress_alert(vllm, "203.0.113.7"), dry_run=False
    )
    assert first.status is OutcomeStatus.BLOCKED
    delete_policy_before_each_put(harness.gateway)
    second = harness.actions.block_destination(
        harness.pod(vllm), egress_alert(vllm, "203.0.113.9"), dry_run=False
    )
    assert second.status is OutcomeStatus.BLOCKED, second.detail
    policy = block_policy_of(harness, vllm)
    assert policy is not None
    assert {str(a) for a in destination.blocked_by(policy["spec"])} == {"203.0.113.9"}


def test_release_lifts_the_block(harness: Harness, seeded: Seeded) -> None:
    vllm = seeded[1]["vllm"]
    harness.actions.block_destination(harness.pod(vllm), egress_alert(vllm, "203.0.113.7"), dry_run=False)
    released = harness.actions.release(vllm.namespace, vllm.name, by="carol", reason="false positive")
    assert released.status is OutcomeStatus.RELEASED
    assert "lifted its destination block" in released.detail
    stored = harness.stored("v1/pods", vllm.namespace, vllm.name)
    assert stored is not None and BLOCK_LABEL not in stored["metadata"].get("labels", {})
    # Blocked again later: the released address is not brought back.
    again = harness.actions.block_destination(
        harness.pod(vllm), egress_alert(vllm, "203.0.113.9"), dry_run=False
    )
    policy = block_policy_of(harness, vllm)
    assert again.status is OutcomeStatus.BLOCKED and policy is not None
    assert {str(a) for a in destination.blocked_by(policy["spec"])} == {"203.0.113.9"}


def test_a_follow_up_block_gives_way_to_a_release_made_since_the_pod_was_read(
    harness: Harness, seeded: Seeded
) -> None:
    """A release lands between the block's read of the pod and its label: with yield_to_release
    (an incident's follow-up block) the pod stays released and its record stays; without it (an
    incident's first block, on new evidence) the pod is blocked and the record cleared."""
    vllm = seeded[1]["vllm"]
    first = harness.actions.block_destination(
        harness.pod(vllm), egress_alert(vllm, "203.0.113.7"), dry_run=False
    )
    assert first.status is OutcomeStatus.BLOCKED
    read_before_the_release = harness.pod(vllm)
    harness.actions.release(vllm.namespace, vllm.name, by="carol", reason="false positive")
    with pytest.raises(ReleasedMeanwhile) as raised:
        harness.actions.block_destination(
            read_before_the_release, egress_alert(vllm, "198.51.100.9"), dry_run=False, yield_to_release=True
        )
    assert raised.value.record.by == "carol"
    stored = harness.stored("v1/pods", vllm.namespace, vllm.name)
    assert stored is not None
    assert BLOCK_LABEL not in stored["metadata"].get("labels", {})
    assert stored["metadata"]["annotations"]["serving-guard.io/released-by"] == "carol"
    # The address it wrote before it found the release is taken out again, as the release left it.
    policy = block_policy_of(harness, vllm)
    assert policy is not None and destination.blocked_by(policy["spec"]) == set()
    # Without it, the same stale read blocks: the patch works from the pod as it is now.
    again = harness.actions.block_destination(
        read_before_the_release, egress_alert(vllm, "198.51.100.9"), dry_run=False
    )
    assert again.status is OutcomeStatus.BLOCKED, again.detail
    stored = harness.stored("v1/pods", vllm.namespace, vllm.name)
    assert stored is not None and BLOCK_LABEL in stored["metadata"]["labels"]
    assert "serving-guard.io/released-by" not in stored["metadata"].get("annotations", {})


def test_a_follow_up_block_on_a_pod_released_before_it_was_read_goes_on(
    harness: Harness, seeded: Seeded
) -> None:
    """The release record the block read already is not one made meanwhile: another change to the pod
    between the read and the label (a conflict) does not stop the block."""
    vllm = seeded[1]["vllm"]
    harness.actions.block_destination(harness.pod(vllm), egress_alert(vllm, "203.0.113.7"), dry_run=False)
    harness.actions.release(vllm.namespace, vllm.name, by="carol", reason="false positive")
    read = harness.pod(vllm)
    harness.gateway.patch_pod(vllm.namespace, vllm.name, {"metadata": {"labels": {"team": "serving"}}})
    outcome = harness.actions.block_destination(
        read, egress_alert(vllm, "198.51.100.9"), dry_run=False, yield_to_release=True
    )
    assert outcome.status is OutcomeStatus.BLOCKED, outcome.detail


def test_never_block_and_other_fields_come_from_the_settings(seeded: Seeded) -> None:
    running, pods, kubeconfig = seeded
    harness = Harness(running, kubeconfig)
    harness.actions = type(harness.actions)(
        harness.gateway,
        harness.actions._settings,
        harness.actions._events,
        blocks=BlockDestination(address_fields=("dest.ip",), never_block=("203.0.113.0/24",)),
    )
    vllm = pods["vllm"]
    kept = harness.actions.block_destination(
        harness.pod(vllm), egress_alert(vllm, "203.0.113.7", "dest.ip"), dry_run=False
    )
    assert kept.status is OutcomeStatus.WITHHELD and "never_block (203.0.113.0/24)" in kept.detail
    other = harness.actions.block_destination(
        harness.pod(vllm), egress_alert(vllm, "203.0.113.7"), dry_run=False
    )
    assert other.status is OutcomeStatus.WITHHELD and "no remote address (dest.ip)" in other.detail


# -- through the responder ------------------------------------------------------------------------


async def test_a_policy_that_blocks_the_destination_acts_journals_and_tells(
    tmp_path: Path, seeded: Seeded
) -> None:
    running, pods, kubeconfig = seeded
    responder = await started_blocking(tmp_path, kubeconfig)
    config = responder.config
    try:
        assert responder.pipeline is not None
        vllm = pods["vllm"]
        # A burst: one incident, one block.
        await submit_all(responder, [egress_alert(vllm, "203.0.113.7") for _ in range(3)])
        with closing(sqlite3.connect(config.journal.path)) as conn:
            actions = conn.execute("SELECT action, status, incident_id FROM actions").fetchall()
        assert [(a, s) for a, s, _ in actions] == [("block_destination", "blocked")]
        stored = running.call(running.emulator.get_object, "v1/pods", vllm.namespace, vllm.name)
        assert BLOCK_LABEL in stored["metadata"]["labels"]
        assert "serving-guard.io/quarantine" not in stored["metadata"]["labels"]
        # What on-call reads, from the journal's record: the block, and how to lift it.
        record = responder.journal.incident_record(actions[0][2])
        assert record is not None
        report = report_from_record(record)
        assert report is not None
        text = text_of(render_incident(report))
        assert ":no_entry: *Blocked* egress to `203.0.113.7`: the pod's other egress is unchanged" in text
        assert f"serving-guard release --namespace {vllm.namespace} {vllm.name} --incident" in text
        # The audit trail names the address and the policy.
        with responder.journal.reader() as conn:
            trail = read_answer({"entries": load_trail(conn, AuditQuery(incident=actions[0][2]))})
        recorded = trail[0]["incident"]["actions"]
        assert [(a["action"], a["status"], a.get("address")) for a in recorded] == [
            ("block_destination", "blocked", "203.0.113.7")
        ]
        assert recorded[0].get("network_policy", "").startswith("serving-guard-block-")
        assert incident_outcome_text(trail[0]["incident"]) == "blocked 203.0.113.7"
    finally:
        await responder.stop()


async def test_a_block_held_back_by_a_passing_api_failure_is_decided_again(
    tmp_path: Path, seeded: Seeded
) -> None:
    running, pods, kubeconfig = seeded
    clock = FakeClock()
    responder = await started_blocking(tmp_path, kubeconfig, clock)
    config = responder.config
    try:
        assert responder.pipeline is not None
        vllm = pods["vllm"]
        running.call(running.emulator.inject, Fault(status=503, method="GET", plural="pods", times=100))
        await submit_all(responder, [egress_alert(vllm, "203.0.113.7")])
        running.emulator.faults.clear()
        clock.advance(11)
        await submit_all(responder, [egress_alert(vllm, "203.0.113.7")])
        with closing(sqlite3.connect(config.journal.path)) as conn:
            statuses = [r[0] for r in conn.execute("SELECT status FROM actions ORDER BY id")]
        assert statuses == ["withheld", "blocked"]
    finally:
        await responder.stop()


def test_past_max_per_pod_a_new_address_is_reported_not_blocked(seeded: Seeded) -> None:
    running, pods, kubeconfig = seeded
    harness = Harness(running, kubeconfig)
    harness.actions = type(harness.actions)(
        harness.gateway,
        harness.actions._settings,
        harness.actions._events,
        blocks=BlockDestination(max_per_pod=2),
    )
    vllm = pods["vllm"]
    for address in ("203.0.113.1", "203.0.113.2", "203.0.113.2"):  # the repeat of a blocked one still fits
        outcome = harness.actions.block_destination(
            harness.pod(vllm), egress_alert(vllm, address), dry_run=False
        )
        assert outcome.status is OutcomeStatus.BLOCKED, outcome.detail
    third = harness.actions.block_destination(
        harness.pod(vllm), egress_alert(vllm, "203.0.113.3"), dry_run=False
    )
    assert third.status is OutcomeStatus.LEAKY
    assert "203.0.113.3 (fd.sip) is not blocked: the pod's block already holds 2 addresses" in third.detail
    policy = block_policy_of(harness, vllm)
    assert policy is not None
    assert {str(a) for a in destination.blocked_by(policy["spec"])} == {"203.0.113.1", "203.0.113.2"}


async def test_a_block_label_removed_while_the_attack_goes_on_is_put_back_by_the_next_repeat(
    tmp_path: Path, seeded: Seeded
) -> None:
    """Removed by hand (kubectl label ... -), not by `serving-guard release`: a lapse, and the next
    alert blocks again (a release is a lift: test_release_is_a_lift.py)."""
    running, pods, kubeconfig = seeded
    clock = FakeClock()
    responder = await started_blocking(tmp_path, kubeconfig, clock)
    config = responder.config
    try:
        pipeline = responder.pipeline
        assert pipeline is not None
        vllm = pods["vllm"]

        async def send() -> None:
            await submit_all(responder, [egress_alert(vllm, "203.0.113.7")])

        def blocked() -> bool:
            stored = running.call(running.emulator.get_object, "v1/pods", vllm.namespace, vllm.name)
            return BLOCK_LABEL in stored["metadata"]["labels"]

        await send()
        assert blocked()
        Harness(running, kubeconfig).gateway.patch_pod(
            vllm.namespace, vllm.name, {"metadata": {"labels": {BLOCK_LABEL: None}}}
        )
        assert not blocked()
        clock.advance(16)
        await send()  # folds, and starts a recheck of the pod
        for _ in range(100):
            state = next(iter(pipeline.incidents._open.values()))
            if state.reopen_after_ns is not None:
                break
            await asyncio.sleep(0.02)
        await send()  # a new incident: blocked again
        assert blocked()
        with closing(sqlite3.connect(config.journal.path)) as conn:
            assert conn.execute("SELECT COUNT(*) FROM incidents").fetchone()[0] == 2
    finally:
        await responder.stop()


def test_a_dry_run_writes_nothing_and_predicts_what_other_policies_would_make_of_it(
    harness: Harness, seeded: Seeded
) -> None:
    vllm = seeded[1]["vllm"]
    before = len(harness.events(vllm.namespace))
    predicted = harness.actions.block_destination(
        harness.pod(vllm), egress_alert(vllm, "10.1.1.1"), dry_run=True
    )
    assert predicted.status is OutcomeStatus.WITHHELD  # nothing to block, said, not written
    allow_https_out(harness, vllm.namespace)
    predicted = harness.actions.block_destination(
        harness.pod(vllm), egress_alert(vllm, "203.0.113.7"), dry_run=True
    )
    assert predicted.status is OutcomeStatus.DRY_RUN
    assert predicted.leaky_policies == ("allow-https-out",) and "none was made" in predicted.detail
    assert len(harness.events(vllm.namespace)) == before
    assert block_policy_of(harness, vllm) is None


async def test_a_repeat_naming_another_address_blocks_it_too(tmp_path: Path, seeded: Seeded) -> None:
    """Folding must not let the attack switch destinations within the window: a repeat that names
    an address its incident has not blocked is blocked as well, under the same incident."""
    running, pods, kubeconfig = seeded
    responder = await started_blocking(tmp_path, kubeconfig)
    try:
        pipeline = responder.pipeline
        assert pipeline is not None
        vllm = pods["vllm"]
        addresses = ("203.0.113.7", "203.0.113.7", "198.51.100.9", "198.51.100.9", "10.0.0.9")
        await submit_all(responder, [egress_alert(vllm, address) for address in addresses])
        await settled(responder)
        with closing(sqlite3.connect(responder.config.journal.path)) as conn:
            incidents = conn.execute("SELECT COUNT(*) FROM incidents").fetchone()[0]
            actions = conn.execute("SELECT action, status FROM actions ORDER BY id").fetchall()
        assert incidents == 1
        # The first address, then the second once; the private one is not taken on at all.
        assert actions == [("block_destination", "blocked"), ("block_destination", "blocked")]
        policy = block_policy_of(Harness(running, kubeconfig), vllm)
        assert policy is not None
        assert {str(a) for a in destination.blocked_by(policy["spec"])} == {"203.0.113.7", "198.51.100.9"}
        state = next(iter(pipeline.incidents._open.values()))
        assert state.report is not None and len(state.report.outcomes) == 2
    finally:
        await responder.stop()


@pytest.mark.parametrize("group", ["cilium.io", "crd.projectcalico.org", "policy.networking.k8s.io"])
def test_where_other_policy_apis_are_served_no_block_is_made_unless_told_to(
    seeded: Seeded, group: str
) -> None:
    """Their policies may restrict the pod's egress unseen, and a block policy would add to what
    they allow: withheld, said why, until block_destination.ignore_other_policy_apis."""
    running, pods, kubeconfig = seeded
    running.call(running.emulator.resources.__setitem__, f"{group}/v2/somepolicies", {})
    vllm = pods["vllm"]
    harness = Harness(running, kubeconfig)
    outcome = harness.actions.block_destination(
        harness.pod(vllm), egress_alert(vllm, "203.0.113.7"), dry_run=False
    )
    assert outcome.status is OutcomeStatus.WITHHELD
    assert (
        f"not blocked: the cluster serves {group}, whose policies may restrict the pod's egress"
        in outcome.detail
    )
    assert block_policy_of(harness, vllm) is None
    harness.actions = type(harness.actions)(
        harness.gateway,
        harness.actions._settings,
        harness.actions._events,
        blocks=BlockDestination(ignore_other_policy_apis=True),
    )
    told = harness.actions.block_destination(
        harness.pod(vllm), egress_alert(vllm, "203.0.113.7"), dry_run=False
    )
    assert told.status is OutcomeStatus.BLOCKED


@pytest.mark.parametrize("dry_run", [False, True])
def test_a_host_network_pod_is_told_it_cannot_be_blocked_and_nothing_is_made(
    harness: Harness, seeded: Seeded, dry_run: bool
) -> None:
    vllm = seeded[1]["vllm"]
    harness.on_host_network(vllm)
    pod = harness.pod(vllm)
    calls = harness.record_calls()
    outcome = harness.actions.block_destination(pod, egress_alert(vllm, "203.0.113.7"), dry_run=dry_run)
    made = [verb for verb, _ in calls]
    assert outcome.status is (OutcomeStatus.DRY_RUN if dry_run else OutcomeStatus.LEAKY)
    assert outcome.detail.startswith(
        "203.0.113.7 (fd.sip) cannot be blocked: the pod uses the host network, which NetworkPolicies"
        " do not cover; nothing was made"
    )
    assert not outcome.block_labelled and not outcome.newly_blocked
    assert block_policy_of(harness, vllm) is None
    stored = harness.stored("v1/pods", vllm.namespace, vllm.name)
    assert stored is not None and BLOCK_LABEL not in stored["metadata"]["labels"]
    # Nothing read or written (but the Event, outside a dry-run).
    assert made == ([] if dry_run else ["POST"])
    # What on-call reads: not in force, and why a quarantine is no way out.
    blocking = (ActionName.NOTIFY, ActionName.BLOCK_DESTINATION)
    decision = make_decision(actions=blocking, requested=blocking, dry_run=dry_run)
    text = text_of(render_incident(make_report(decision=decision, outcomes=(outcome,))))
    if not dry_run:
        assert "*Block of `203.0.113.7` NOT in force*" in text
        assert "only stopping the pod cuts it" in text and "quarantining its egress" not in text
    assert "serving-guard block --namespace" not in text  # nothing to do by hand either


def _policy_arrives_after_the_label(
    harness: Harness, namespace: str, name: str, spec: dict[str, Any]
) -> None:
    """Another writer's egress policy lands between the block's label and its proof."""
    send = harness.gateway.request

    def racing(verb: str, path: str, **kwargs: Any) -> Any:
        answer = send(verb, path, **kwargs)
        if verb == "PATCH" and "/pods/" in path:
            harness.put_policy(namespace, name, spec)
        return answer

    harness.gateway.request = racing  # type: ignore[method-assign]


def test_a_policy_that_comes_to_allow_the_address_meanwhile_leaves_it_not_blocked(
    harness: Harness, seeded: Seeded
) -> None:
    vllm = seeded[1]["vllm"]
    https_anywhere = {"podSelector": {}, "policyTypes": ["Egress"], "egress": [{"ports": [{"port": 443}]}]}
    _policy_arrives_after_the_label(harness, vllm.namespace, "allow-https-out", https_anywhere)
    outcome = harness.actions.block_destination(
        harness.pod(vllm), egress_alert(vllm, "203.0.113.7"), dry_run=False
    )
    assert outcome.status is OutcomeStatus.LEAKY and outcome.leaky_policies == ("allow-https-out",)
    assert "allow-https-out now restrict the pod's egress and allow it: it is not blocked" in outcome.detail
    assert "widened" not in outcome.extra


def test_a_policy_that_comes_to_restrict_egress_meanwhile_is_said_widened_not_the_block_undone(
    harness: Harness, seeded: Seeded
) -> None:
    """The address stays out of reach (the new policy does not allow it), but the block policy
    allows all the rest, which the new policy denies: in force, and widening it."""
    vllm = seeded[1]["vllm"]
    in_cluster_only = {
        "podSelector": {},
        "policyTypes": ["Egress"],
        "egress": [{"to": [{"ipBlock": {"cidr": "10.0.0.0/8"}}]}],
    }
    _policy_arrives_after_the_label(harness, vllm.namespace, "in-cluster-only", in_cluster_only)
    outcome = harness.actions.block_destination(
        harness.pod(vllm), egress_alert(vllm, "203.0.113.7"), dry_run=False
    )
    assert outcome.status is OutcomeStatus.LEAKY and outcome.leaky_policies == ()
    assert outcome.extra["widened"] == ["in-cluster-only"]
    assert "they keep 203.0.113.7 out themselves: release the block" in outcome.detail
    blocking = (ActionName.NOTIFY, ActionName.BLOCK_DESTINATION)
    decision = make_decision(actions=blocking, requested=blocking)
    text = text_of(render_incident(make_report(decision=decision, outcomes=(outcome,))))
    assert (
        ":warning: *Blocked* egress to `203.0.113.7`, but the block policy *widens* `in-cluster-only`" in text
    )
    assert "NOT in force" not in text
    assert "serving-guard release --namespace" in text
    assert action_fields(outcome.to_json())["widened"] == ["in-cluster-only"]


def test_an_address_never_block_came_to_hold_is_let_go_at_the_next_block(seeded: Seeded) -> None:
    running, pods, kubeconfig = seeded
    harness = Harness(running, kubeconfig)
    vllm = pods["vllm"]
    first = harness.actions.block_destination(
        harness.pod(vllm), egress_alert(vllm, "203.0.113.7"), dry_run=False
    )
    assert first.status is OutcomeStatus.BLOCKED
    # The operator learns 203.0.113.0/24 is the model registry, and adds it to never_block.
    harness.actions = type(harness.actions)(
        harness.gateway,
        harness.actions._settings,
        harness.actions._events,
        blocks=BlockDestination(never_block=("203.0.113.0/24",)),
    )
    second = harness.actions.block_destination(
        harness.pod(vllm), egress_alert(vllm, "198.51.100.9"), dry_run=False
    )
    assert second.status is OutcomeStatus.BLOCKED and second.extra["unblocked"] == ["203.0.113.7"]
    assert "no longer blocked (block_destination.never_block holds them now): 203.0.113.7" in second.detail
    policy = block_policy_of(harness, vllm)
    assert policy is not None
    assert {str(a) for a in destination.blocked_by(policy["spec"])} == {"198.51.100.9"}
    # The audit trail's action record names what was let go.
    assert action_fields(second.to_json())["unblocked"] == ["203.0.113.7"]


def test_an_api_failure_after_the_policy_holds_the_address_still_counts_and_is_tried_again(
    harness: Harness, seeded: Seeded
) -> None:
    """The address is in the pod's policy once it is written: a later refusal (the label's patch)
    must not give the block breaker's slot back, or the retry, finding it there, would count none."""
    vllm = seeded[1]["vllm"]
    harness.fail(Fault(status=403, method="PATCH", plural="pods"))
    failed = harness.actions.block_destination(
        harness.pod(vllm), egress_alert(vllm, "203.0.113.7"), dry_run=False
    )
    assert failed.status is OutcomeStatus.FAILED and "forbidden" in failed.detail
    assert failed.newly_blocked and not failed.block_labelled
    assert "address" not in failed.extra  # so a repeat tries it again (Pipeline._maybe_block_more)
    again = harness.actions.block_destination(
        harness.pod(vllm), egress_alert(vllm, "203.0.113.7"), dry_run=False
    )
    assert again.status is OutcomeStatus.BLOCKED and not again.newly_blocked


async def test_a_block_withheld_for_other_policy_apis_is_not_run_again_by_each_repeat(
    tmp_path: Path, seeded: Seeded
) -> None:
    running, pods, kubeconfig = seeded
    running.call(running.emulator.resources.__setitem__, "cilium.io/v2/ciliumnetworkpolicies", {})
    responder = await started_blocking(tmp_path, kubeconfig)
    try:
        vllm = pods["vllm"]
        await submit_all(responder, [egress_alert(vllm, "203.0.113.7") for _ in range(4)])
        await settled(responder)
        with closing(sqlite3.connect(responder.config.journal.path)) as conn:
            statuses = [row[0] for row in conn.execute("SELECT status FROM actions")]
        assert statuses == ["withheld"]
    finally:
        await responder.stop()


def test_an_opening_block_gives_way_to_a_release_its_read_missed(harness: Harness, seeded: Seeded) -> None:
    """As the quarantine does: the block's label meets a release made since the pod was read (a
    cached read) as a conflict, and an alert from before the release is withheld, not acted on:
    the release record stays, the pod carries no block label, its block policy blocks nothing."""
    vllm = seeded[1]["vllm"]
    first = harness.actions.block_destination(
        harness.pod(vllm), egress_alert(vllm, "203.0.113.8"), dry_run=False
    )
    assert first.status is OutcomeStatus.BLOCKED
    cached = harness.pod(vllm)  # read before the release
    assert (
        harness.actions.release(vllm.namespace, vllm.name, by="alice", reason="fp").status
        is OutcomeStatus.RELEASED
    )
    now = egress_alert(vllm, "203.0.113.9")
    late = dataclasses.replace(now, time_ns=now.time_ns - 600 * 10**9)
    withheld = harness.actions.block_destination(
        cached, late, dry_run=False, release_since_ns=late.time_ns + CLOCK_SKEW_NS
    )
    assert withheld.status is OutcomeStatus.WITHHELD and not withheld.block_labelled
    assert withheld.detail.startswith("the pod was released by alice at ")
    stored = harness.stored("v1/pods", vllm.namespace, vllm.name)
    assert stored is not None and BLOCK_LABEL not in stored["metadata"]["labels"]
    assert stored["metadata"]["annotations"]["serving-guard.io/released-by"] == "alice"
    policy = block_policy_of(harness, vllm)
    assert policy is None or not destination.blocked_by(policy["spec"])
    # An alert from within the clocks' allowed skew of the release (or after it) is blocked.
    blocked = harness.actions.block_destination(
        cached, now, dry_run=False, release_since_ns=now.time_ns + CLOCK_SKEW_NS
    )
    assert blocked.status is OutcomeStatus.BLOCKED and blocked.block_labelled
