"""A block is proven again while the attack goes on (ClusterActions.lapse_of, as the pipeline's recheck
asks it), not taken on its own policy's except list: (a) another policy that comes to allow the
blocked address, (b) the block policy no longer selecting the pod (where the pod's quarantine cuts
its egress the block policy leaves it out on purpose, and then the cut's deny-all must hold), and
(c) the block policy no longer as built (an allow added) each undo it. What the cluster enforces is
read from the specs alone (spec_reading), not from the responder's selector code. Against the
emulator over real HTTP."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from responder.actions.events import EventRecorder
from responder.actions.outcome import OutcomeStatus
from responder.actions.quarantine import ClusterActions
from responder.config import BlockDestination, Isolation, Quarantine
from responder.service import Responder
from simulators.cluster_emulator import RunningCluster
from simulators.seed import SeededPod
from tests.helpers import FakeClock
from tests.responder.spec_reading import CLOSED, OPEN, direction_state
from tests.responder.test_block_destination import block_policy_of, egress_alert, started_blocking
from tests.responder.test_pipeline import submit_all
from tests.responder.test_quarantine import NP, Harness, shell_alert
from tests.responder.test_quarantine_other_policy_apis import serve

Seeded = tuple[RunningCluster, dict[str, SeededPod], str]
ADDRESS = "203.0.113.7"
BLOCKED = {ADDRESS}
EGRESS_CUT = "serving-guard-quarantine-egress"


@pytest.fixture
def harness(seeded: Seeded) -> Harness:
    running, _, kubeconfig = seeded
    return Harness(running, kubeconfig)


def blocked(harness: Harness, pod: SeededPod) -> str:
    """Block ADDRESS for ``pod``, proven; the name of its block policy."""
    outcome = harness.actions.block_destination(harness.pod(pod), egress_alert(pod, ADDRESS), dry_run=False)
    assert outcome.status is OutcomeStatus.BLOCKED and outcome.kept_out is None, outcome.detail
    assert harness.lapse(harness.pod(pod), cut=None, blocked=BLOCKED) is None
    policy = block_policy_of(harness, pod)
    assert policy is not None
    return str(policy["metadata"]["name"])


def egress_of(harness: Harness, pod: SeededPod) -> str:
    policies = harness.running.call(harness.running.emulator.list_objects, NP, pod.namespace)
    return direction_state(policies, harness.pod(pod).labels, "egress")


def edit(harness: Harness, pod: SeededPod, name: str, change: Any) -> None:
    stored = harness.stored(NP, pod.namespace, name)
    assert stored is not None
    change(stored["spec"])
    harness.running.call(harness.running.emulator.put_object, NP, stored)


def delete(harness: Harness, namespace: str, name: str) -> None:
    harness.gateway.request(
        "DELETE", f"/apis/networking.k8s.io/v1/namespaces/{namespace}/networkpolicies/{name}"
    )
    assert harness.stored(NP, namespace, name) is None


def lapse(harness: Harness, pod: SeededPod) -> str | None:
    return harness.lapse(harness.pod(pod), cut=None, blocked=BLOCKED)


# -- (a) another policy comes to allow the address ----------------------------------------------


@pytest.mark.parametrize(
    "allowed",
    [
        [{"to": [{"ipBlock": {"cidr": "203.0.113.0/24"}}]}],
        [{"to": [{"ipBlock": {"cidr": "64:ff9b::/96"}}]}],  # its NAT64 form: the same host
        [{"ports": [{"protocol": "TCP", "port": 443}]}],  # anywhere, on one port
    ],
    ids=["its range", "its NAT64 form", "anywhere on a port"],
)
def test_a_policy_that_came_to_allow_the_blocked_address_undoes_the_block(
    harness: Harness, seeded: Seeded, allowed: list[dict[str, Any]]
) -> None:
    vllm = seeded[1]["vllm"]
    name = blocked(harness, vllm)
    harness.put_policy(
        vllm.namespace,
        "allow-partner",
        {"podSelector": {"matchLabels": {"app": "vllm"}}, "policyTypes": ["Egress"], "egress": allowed},
    )
    assert egress_of(harness, vllm) == f"partial via allow-partner,{name}"
    assert lapse(harness, vllm) == f"NetworkPolicy allow-partner now allows egress to {ADDRESS}"


def test_a_policy_that_came_to_restrict_the_pods_egress_is_undone_by_the_block_and_said(
    harness: Harness, seeded: Seeded
) -> None:
    """A restriction added since the block (a person locking the pod down to DNS, say) keeps the
    address out itself, but the block policy's "all but the address" is unioned with it: the pod's
    other egress stays open, the lockdown without effect. The block as made no longer holds what it
    claimed (all other egress kept, nothing more), as the proof when made would say (LEAKY)."""
    vllm = seeded[1]["vllm"]
    name = blocked(harness, vllm)
    harness.put_policy(
        vllm.namespace,
        "egress-dns-only",
        {
            "podSelector": {"matchLabels": {"app": "vllm"}},
            "policyTypes": ["Egress"],
            "egress": [{"ports": [{"protocol": "UDP", "port": 53}], "to": [{"namespaceSelector": {}}]}],
        },
    )
    assert egress_of(harness, vllm) == f"partial via egress-dns-only,{name}"
    assert lapse(harness, vllm) == (
        f"NetworkPolicy egress-dns-only now restricts the pod's egress, and the block policy {name} allows"
        f" what it denies (it keeps {ADDRESS} out: release the block)"
    )
    # Gone again, the block holds as made.
    harness.gateway.request(
        "DELETE", f"/apis/networking.k8s.io/v1/namespaces/{vllm.namespace}/networkpolicies/egress-dns-only"
    )
    assert lapse(harness, vllm) is None
    # A policy allowing the address to other pods only changes nothing for this one.
    harness.put_policy(
        vllm.namespace,
        "triton-partner",
        {
            "podSelector": {"matchLabels": {"app": "triton"}},
            "policyTypes": ["Egress"],
            "egress": [{"to": [{"ipBlock": {"cidr": "203.0.113.0/24"}}]}],
        },
    )
    assert lapse(harness, vllm) is None


# -- (b) the block policy no longer selects the pod ---------------------------------------------


@pytest.mark.parametrize(
    "change",
    [
        lambda spec: spec["podSelector"]["matchLabels"].update({"serving-guard.io/block": "000000000000"}),
        lambda spec: spec["podSelector"]["matchExpressions"].append(
            {"key": "app", "operator": "NotIn", "values": ["vllm"]}
        ),
        lambda spec: spec["podSelector"]["matchExpressions"][0].update(operator="In"),
    ],
    ids=["another key", "the pod excluded", "NotIn turned In"],
)
def test_a_block_policy_that_no_longer_selects_the_pod_undoes_the_block(
    harness: Harness, seeded: Seeded, change: Any
) -> None:
    vllm = seeded[1]["vllm"]
    name = blocked(harness, vllm)
    edit(harness, vllm, name, change)
    assert egress_of(harness, vllm) == OPEN
    assert lapse(harness, vllm) == f"NetworkPolicy {name} no longer selects the pod"


def test_a_block_left_out_under_an_egress_cut_holds_while_the_cut_does(seeded: Seeded) -> None:
    running, pods, kubeconfig = seeded
    vllm = pods["vllm"]
    harness = Harness(running, kubeconfig, Quarantine(isolate=Isolation.EGRESS))
    name = blocked(harness, vllm)
    quarantine = harness.actions.quarantine(
        harness.pod(vllm), shell_alert(vllm), "inc-2", "Notice: shell", dry_run=False
    )
    assert quarantine.status is OutcomeStatus.QUARANTINED, quarantine.detail
    # The block policy leaves the pod out now, as built: the cut keeps every address out.
    assert egress_of(harness, vllm) == CLOSED
    assert lapse(harness, vllm) is None
    # The cut gone, nothing keeps the address out.
    delete(harness, vllm.namespace, EGRESS_CUT)
    assert egress_of(harness, vllm) == OPEN
    assert lapse(harness, vllm) == (
        f"NetworkPolicy {EGRESS_CUT} is gone (the block relied on that cut: NetworkPolicy {name} leaves"
        " the pod out)"
    )


def test_a_block_left_out_under_an_egress_cut_whose_deny_all_was_opened_is_undone(seeded: Seeded) -> None:
    running, pods, kubeconfig = seeded
    vllm = pods["vllm"]
    harness = Harness(running, kubeconfig, Quarantine(isolate=Isolation.EGRESS))
    name = blocked(harness, vllm)
    harness.actions.quarantine(harness.pod(vllm), shell_alert(vllm), "inc-2", "Notice: shell", dry_run=False)
    edit(harness, vllm, EGRESS_CUT, lambda spec: spec.update(egress=[{}]))
    assert egress_of(harness, vllm) == f"partial via {EGRESS_CUT}"
    assert lapse(harness, vllm) == (
        f"NetworkPolicy {EGRESS_CUT} no longer cuts egress (the block relied on that cut: NetworkPolicy"
        f" {name} leaves the pod out)"
    )


# -- (c) the block policy is no longer as built -------------------------------------------------


@pytest.mark.parametrize(
    "change",
    [
        lambda spec: spec["egress"].append({}),
        lambda spec: spec["egress"].append({"to": [{"ipBlock": {"cidr": "203.0.113.0/24"}}]}),
        lambda spec: spec["egress"][0]["to"][1]["ipBlock"].pop("except"),  # its NAT64 form let through
        lambda spec: spec["podSelector"].update(matchLabels={"app": "vllm"}),  # every vllm pod
    ],
    ids=["an allow-all rule", "a rule to its range", "its NAT64 form", "other matchLabels"],
)
def test_a_block_policy_no_longer_as_built_undoes_the_block(
    harness: Harness, seeded: Seeded, change: Any
) -> None:
    vllm = seeded[1]["vllm"]
    name = blocked(harness, vllm)
    edit(harness, vllm, name, change)
    stored = harness.stored(NP, vllm.namespace, name)
    assert stored is not None
    # Still excepted in its first rule, and still selecting the pod ...
    assert f"{ADDRESS}/32" in stored["spec"]["egress"][0]["to"][0]["ipBlock"]["except"]
    assert egress_of(harness, vllm) == f"partial via {name}"
    # ... but not the block as made.
    assert lapse(harness, vllm) == (
        f"NetworkPolicy {name} is no longer the block as built: its rules, types or selected labels"
        " were changed (or made by an earlier version)"
    )


def test_an_exclusion_added_to_the_block_policy_changes_nothing_for_an_unquarantined_pod(
    harness: Harness, seeded: Seeded
) -> None:
    # What a quarantine with patch_other_policies adds to a policy that leaks (matchExpressions
    # only): judged by whom it selects, not as an alteration of the block.
    vllm = seeded[1]["vllm"]
    name = blocked(harness, vllm)
    edit(
        harness,
        vllm,
        name,
        lambda spec: spec["podSelector"]["matchExpressions"].append(
            {"key": "serving-guard.io/quarantine", "operator": "NotIn", "values": ["true", "true-egress"]}
        ),
    )
    assert lapse(harness, vllm) is None


# -- the pipeline: the recheck notices it, and the next repeat says it ---------------------------


async def test_the_recheck_notices_a_policy_that_came_to_allow_the_address_and_the_next_repeat_says_leaky(
    tmp_path: Path, seeded: Seeded, caplog: pytest.LogCaptureFixture
) -> None:
    running, pods, kubeconfig = seeded
    clock = FakeClock()
    harness = Harness(running, kubeconfig)
    responder = await started_blocking(tmp_path, kubeconfig, clock)
    try:
        vllm = pods["vllm"]
        await submit_all(responder, [egress_alert(vllm, ADDRESS)])
        clock.advance(16)
        await submit_all(responder, [egress_alert(vllm, ADDRESS)])  # a recheck: it holds
        assert not await reopened(responder)
        harness.put_policy(
            vllm.namespace,
            "allow-partner",
            {
                "podSelector": {"matchLabels": {"app": "vllm"}},
                "policyTypes": ["Egress"],
                "egress": [{"to": [{"ipBlock": {"cidr": "203.0.113.0/24"}}]}],
            },
        )
        clock.advance(16)
        with caplog.at_level(logging.WARNING):
            await submit_all(responder, [egress_alert(vllm, ADDRESS)])
            assert await reopened(responder)
        assert any(
            f"no longer holds (NetworkPolicy allow-partner now allows egress to {ADDRESS})" in r.getMessage()
            for r in caplog.records
        )
        await submit_all(responder, [egress_alert(vllm, ADDRESS)])  # a new incident
        with closing(sqlite3.connect(responder.config.journal.path)) as conn:
            actions = conn.execute("SELECT status, detail FROM actions ORDER BY id").fetchall()
            incidents = conn.execute("SELECT COUNT(*) FROM incidents").fetchone()[0]
        assert incidents == 2
        # The lapse is journaled under the first incident (its audit trail tells it).
        assert [status for status, _ in actions] == ["blocked", "lapsed", "leaky"]
        assert f"{ADDRESS} (fd.sip) is allowed by allow-partner" in actions[-1][1]
    finally:
        await responder.stop()


async def reopened(responder: Responder) -> bool:
    """Wait for the background recheck of the one open incident; whether it reopened it."""
    pipeline = responder.pipeline
    assert pipeline is not None
    for _ in range(250):
        if not pipeline._background:
            break
        await asyncio.sleep(0.02)
    else:
        raise AssertionError("the recheck is still running")
    [state] = pipeline.incidents._open.values()
    return state.reopen_after_ns is not None


# -- (d) what no NetworkPolicy covers, found since ------------------------------------------------


def test_a_way_out_of_the_network_namespace_found_since_undoes_a_block(
    harness: Harness, seeded: Seeded
) -> None:
    """A block is only made where the pod cannot leave its network namespace: an ephemeral container
    added since with the capability to does undo it."""
    vllm = seeded[1]["vllm"]
    blocked(harness, vllm)
    stored = harness.stored("v1/pods", vllm.namespace, vllm.name)
    assert stored is not None
    stored["spec"]["ephemeralContainers"] = [
        {"name": "debugger", "image": "busybox", "securityContext": {"capabilities": {"add": ["SYS_ADMIN"]}}}
    ]
    harness.running.call(harness.running.emulator.put_object, "v1/pods", stored)
    undone = lapse(harness, vllm)
    assert undone is not None and undone.startswith("the pod can leave its network namespace")
    assert "ephemeral container debugger" in undone


def test_a_policy_api_served_since_undoes_a_block_unless_told_they_were_reviewed(
    harness: Harness, seeded: Seeded
) -> None:
    """A block is withheld where other network-policy APIs are served (their policies may allow what
    it blocks): one served since (a CNI installed, read once discovery is asked again) undoes it,
    unless block_destination.ignore_other_policy_apis says they were reviewed."""
    vllm = seeded[1]["vllm"]
    blocked(harness, vllm)
    serve(harness.running, "crd.projectcalico.org")
    fresh = ClusterActions(harness.gateway, Quarantine(), EventRecorder(harness.gateway))
    harness.actions = fresh
    assert lapse(harness, vllm) == (
        "the cluster now serves crd.projectcalico.org network policies, which are not read: they may let"
        " its traffic through (set block_destination.ignore_other_policy_apis once none of them does)"
    )
    harness.actions = ClusterActions(
        harness.gateway,
        Quarantine(),
        EventRecorder(harness.gateway),
        blocks=BlockDestination(ignore_other_policy_apis=True),
    )
    assert lapse(harness, vllm) is None
