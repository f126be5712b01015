"""An IPv4 host is also reached as 64:ff9b::a.b.c.d on a cluster with DNS64/NAT64 (RFC 6052): a
block takes both forms, whichever the alert names, with never_block and the public-address check
holding for both, and the policies already restricting the pod are read for both. Blocks are made
against the emulated API server over real HTTP and their stored policies read back."""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest

from responder.actions import destination
from responder.actions.events import EventRecorder
from responder.actions.outcome import OutcomeStatus
from responder.actions.quarantine import ClusterActions
from responder.config import BlockDestination, Quarantine
from simulators.cluster_emulator import RunningCluster
from simulators.seed import SeededPod
from tests.responder.test_block_destination import block_policy_of, egress_alert
from tests.responder.test_quarantine import Harness

Seeded = tuple[RunningCluster, dict[str, SeededPod], str]
FIELDS = ("fd.rip", "fd.sip")
NAT64 = "64:ff9b::cb00:7107"  # 203.0.113.7


def excepts(policy: dict[str, Any] | None) -> dict[str, list[str]]:
    """The stored policy's ipBlock excepts, by the ipBlock's cidr."""
    assert policy is not None
    peers = policy["spec"]["egress"][0]["to"]
    return {peer["ipBlock"]["cidr"]: peer["ipBlock"].get("except", []) for peer in peers}


def with_blocks(harness: Harness, blocks: BlockDestination) -> None:
    harness.actions = ClusterActions(
        harness.gateway, Quarantine(), EventRecorder(harness.gateway), blocks=blocks
    )


@pytest.fixture
def harness(seeded: Seeded) -> Harness:
    running, _, kubeconfig = seeded
    return Harness(running, kubeconfig)


@pytest.mark.parametrize("named", ["203.0.113.7", NAT64, "64:ff9b::203.0.113.7"])
def test_either_form_blocks_both(harness: Harness, seeded: Seeded, named: str) -> None:
    vllm = seeded[1]["vllm"]
    outcome = harness.actions.block_destination(harness.pod(vllm), egress_alert(vllm, named), dry_run=False)
    assert outcome.status is OutcomeStatus.BLOCKED, outcome.detail
    assert outcome.extra["address"] == "203.0.113.7"  # one host, known by its IPv4 form
    assert excepts(block_policy_of(harness, vllm)) == {
        "0.0.0.0/0": ["203.0.113.7/32"],
        "::/0": [f"{NAT64}/128"],
    }


def test_the_other_form_of_a_blocked_host_is_not_blocked_twice(harness: Harness, seeded: Seeded) -> None:
    """Counted once against max_per_pod, and a repeat naming the other form adds nothing; the
    recheck finds the block as made."""
    vllm = seeded[1]["vllm"]
    with_blocks(harness, BlockDestination(max_per_pod=2))
    first = harness.actions.block_destination(
        harness.pod(vllm), egress_alert(vllm, "203.0.113.7"), dry_run=False
    )
    again = harness.actions.block_destination(harness.pod(vllm), egress_alert(vllm, NAT64), dry_run=False)
    second = harness.actions.block_destination(
        harness.pod(vllm), egress_alert(vllm, "198.51.100.9"), dry_run=False
    )
    assert [o.status for o in (first, again, second)] == [OutcomeStatus.BLOCKED] * 3, second.detail
    assert first.newly_blocked and not again.newly_blocked and second.newly_blocked
    assert excepts(block_policy_of(harness, vllm)) == {
        "0.0.0.0/0": ["198.51.100.9/32", "203.0.113.7/32"],
        "::/0": ["64:ff9b::c633:6409/128", f"{NAT64}/128"],
    }
    pod = harness.pod(vllm)
    assert harness.lapse(pod, cut=None, blocked={"203.0.113.7", "198.51.100.9"}) is None


@pytest.mark.parametrize(
    ("named", "never_block", "why"),
    [
        # The NAT64 form of a private address is no public address.
        ("64:ff9b::a00:407", (), "fd.sip 64:ff9b::a00:407 (NAT64 for 10.0.4.7) is not a public address"),
        ("64:ff9b::a9fe:a9fe", (), "(NAT64 for 169.254.169.254) is not a public address"),
        # never_block holds a host in either form.
        (NAT64, ("203.0.113.0/24",), f"{NAT64} (NAT64 for 203.0.113.7) is in block_destination.never_block"),
        ("203.0.113.7", ("64:ff9b::cb00:7100/120",), "203.0.113.7 is in block_destination.never_block"),
    ],
)
def test_never_block_and_the_public_check_hold_for_both_forms(
    harness: Harness, seeded: Seeded, named: str, never_block: tuple[str, ...], why: str
) -> None:
    vllm = seeded[1]["vllm"]
    with_blocks(harness, BlockDestination(never_block=never_block))
    outcome = harness.actions.block_destination(harness.pod(vllm), egress_alert(vllm, named), dry_run=False)
    assert outcome.status is OutcomeStatus.WITHHELD and why in outcome.detail, outcome.detail
    assert block_policy_of(harness, vllm) is None
    # The by-hand command's --address reads the same way.
    assert isinstance(destination.target_from_text("--address", named, never_block), str)


def test_a_policy_that_lets_the_nat64_form_through_is_named(harness: Harness, seeded: Seeded) -> None:
    """The pod's egress is restricted to IPv6 anywhere: 203.0.113.7 is reachable through NAT64, so
    the address is not "already out of reach"."""
    vllm = seeded[1]["vllm"]
    harness.put_policy(
        vllm.namespace,
        "ipv6-out",
        {"podSelector": {}, "policyTypes": ["Egress"], "egress": [{"to": [{"ipBlock": {"cidr": "::/0"}}]}]},
    )
    outcome = harness.actions.block_destination(
        harness.pod(vllm), egress_alert(vllm, "203.0.113.7"), dry_run=False
    )
    assert outcome.status is OutcomeStatus.LEAKY and outcome.leaky_policies == ("ipv6-out",), outcome.detail
    assert block_policy_of(harness, vllm) is None
    # One that allows neither form keeps it out.
    harness.put_policy(
        vllm.namespace,
        "ipv6-out",
        {
            "podSelector": {},
            "policyTypes": ["Egress"],
            "egress": [{"to": [{"ipBlock": {"cidr": "::/0", "except": ["64:ff9b::/96"]}}]}],
        },
    )
    kept = harness.actions.block_destination(
        harness.pod(vllm), egress_alert(vllm, "203.0.113.7"), dry_run=False
    )
    assert kept.status is OutcomeStatus.BLOCKED and "is already out of reach" in kept.detail, kept.detail


def test_the_forms_of_an_address() -> None:
    v4, nat64, other = (ipaddress.ip_address(a) for a in ("203.0.113.7", NAT64, "2606:4700::1111"))
    assert destination.forms_of(v4) == (v4, nat64)
    assert destination.forms_of(nat64) == (nat64, v4)
    assert destination.forms_of(other) == (other,)
    assert destination.host_address(nat64) == v4 and destination.host_address(other) == other
    # A policy written before NAT64 forms were excepted (or holding only one) reads by the host.
    spec = {"egress": [{"to": [{"ipBlock": {"cidr": "::/0", "except": [f"{NAT64}/128"]}}]}]}
    assert destination.blocked_by(spec) == {v4}
