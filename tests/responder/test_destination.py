"""Blocking one destination, the pure part: the address an alert names, the block policy, and
which other policies govern the pod's egress or let the address through."""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest

from responder.actions import destination
from responder.alert_json import alert_from_mapping
from responder.cluster.selectors import selector_matches
from simulators.falco_json import falco_alert
from simulators.seed import SeededPod

FIELDS = ("fd.rip", "fd.sip")
POD = SeededPod(
    "ml-serving", "vllm-0", "worker-1", "vllm", "vllm/vllm-openai:v0.6", "a" * 64, {"app": "vllm"}
)


def egress_alert(**fields: Any) -> Any:
    return alert_from_mapping(
        falco_alert(POD, "Anomalous egress from serving pod", "Warning", "egress", fields)
    )


def policy(name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {"metadata": {"name": name}, "spec": spec}


def test_the_address_is_the_first_field_the_alert_carries() -> None:
    target = destination.target_of(egress_alert(**{"fd.sip": "203.0.113.7"}), FIELDS, ())
    assert target == destination.Target(ipaddress.ip_address("203.0.113.7"), "fd.sip")
    both = destination.target_of(
        egress_alert(**{"fd.rip": "198.51.100.1", "fd.sip": "203.0.113.7"}), FIELDS, ()
    )
    assert isinstance(both, destination.Target) and str(both.address) == "198.51.100.1"
    mapped = destination.target_of(egress_alert(**{"fd.sip": "::ffff:203.0.113.9"}), FIELDS, ())
    assert isinstance(mapped, destination.Target) and str(mapped.address) == "203.0.113.9"
    v6 = destination.target_of(egress_alert(**{"fd.sip": "2606:4700::1111"}), FIELDS, ())
    assert isinstance(v6, destination.Target) and v6.address.version == 6


@pytest.mark.parametrize(
    ("fields", "why"),
    [
        ({}, "carries no remote address (fd.rip, fd.sip)"),
        ({"fd.sip": "example.com"}, "fd.sip is 'example.com', not an IP address"),
        ({"fd.sip": "2606:4700::1%eth0"}, "fd.sip is '2606:4700::1%eth0', not an IP address"),
        ({"fd.sip": "10.0.4.7"}, "fd.sip 10.0.4.7 is not a public address"),
        ({"fd.sip": "169.254.169.254"}, "not a public address"),
        ({"fd.sip": "100.64.3.2"}, "not a public address"),  # shared space: some clusters' pods
        ({"fd.sip": "192.168.1.1"}, "not a public address"),
        ({"fd.sip": "127.0.0.1"}, "not a public address"),
        ({"fd.sip": "fd00::1"}, "not a public address"),
        ({"fd.sip": "198.51.100.20"}, "is in block_destination.never_block (198.51.100.0/24)"),
    ],
)
def test_no_address_to_block_says_why(fields: dict[str, str], why: str) -> None:
    target = destination.target_of(egress_alert(**fields), FIELDS, ("198.51.100.0/24",))
    assert isinstance(target, str) and why in target


def test_the_block_policy_allows_all_egress_but_the_addresses_and_leaves_out_egress_cuts() -> None:
    addresses = [ipaddress.ip_address(a) for a in ("203.0.113.7", "2606:4700::1111", "198.51.100.1")]
    spec = destination.block_spec(
        "serving-guard.io/block",
        "abc",
        addresses,
        quarantine_label="serving-guard.io/quarantine",
        egress_cut_values=["true-egress", "true"],
    )
    assert spec == {
        "podSelector": {
            "matchLabels": {"serving-guard.io/block": "abc"},
            "matchExpressions": [
                {"key": "serving-guard.io/quarantine", "operator": "NotIn", "values": ["true", "true-egress"]}
            ],
        },
        "policyTypes": ["Egress"],
        "egress": [
            {
                "to": [
                    {"ipBlock": {"cidr": "0.0.0.0/0", "except": ["198.51.100.1/32", "203.0.113.7/32"]}},
                    # The IPv4 addresses' NAT64 forms (64:ff9b::/96) too: the same hosts.
                    {
                        "ipBlock": {
                            "cidr": "::/0",
                            "except": [
                                "64:ff9b::c633:6401/128",
                                "64:ff9b::cb00:7107/128",
                                "2606:4700::1111/128",
                            ],
                        }
                    },
                ]
            },
            {"to": [{"namespaceSelector": {}}]},
        ],
    }
    assert destination.blocked_by(spec) == set(addresses)
    # The selector: the blocked pod, unless a quarantine cuts its egress (then the deny-all holds).
    selector = spec["podSelector"]
    assert selector_matches(selector, {"serving-guard.io/block": "abc"})
    assert selector_matches(
        selector, {"serving-guard.io/block": "abc", "serving-guard.io/quarantine": "true-ingress"}
    )
    assert not selector_matches(
        selector, {"serving-guard.io/block": "abc", "serving-guard.io/quarantine": "true"}
    )
    assert not selector_matches(selector, {"serving-guard.io/block": "other"})


def test_the_pod_key_is_the_uids_hash() -> None:
    assert destination.pod_key("uid-1") == destination.pod_key("uid-1") != destination.pod_key("uid-2")
    assert (
        len(destination.block_policy_name("serving-guard-block", "uid-1")) == len("serving-guard-block-") + 12
    )


ADDRESS = ipaddress.ip_address("203.0.113.7")
LABELS = {"app": "vllm"}


@pytest.mark.parametrize(
    ("spec", "governs", "allows"),
    [
        # Ingress only: the pod's egress is not restricted by it.
        ({"podSelector": {}, "policyTypes": ["Ingress"], "ingress": [{}]}, False, False),
        # Egress to DNS only: restricted, and the address is out of reach.
        (
            {
                "podSelector": {},
                "policyTypes": ["Egress"],
                "egress": [{"to": [{"namespaceSelector": {}}], "ports": [{"port": 53, "protocol": "UDP"}]}],
            },
            True,
            False,
        ),
        # A rule with no `to`: every destination.
        ({"podSelector": {}, "policyTypes": ["Egress"], "egress": [{"ports": [{"port": 443}]}]}, True, True),
        # An ipBlock that holds the address.
        (
            {
                "podSelector": {},
                "policyTypes": ["Egress"],
                "egress": [{"to": [{"ipBlock": {"cidr": "203.0.113.0/24"}}]}],
            },
            True,
            True,
        ),
        # ... and excepts it.
        (
            {
                "podSelector": {},
                "policyTypes": ["Egress"],
                "egress": [{"to": [{"ipBlock": {"cidr": "0.0.0.0/0", "except": ["203.0.113.0/28"]}}]}],
            },
            True,
            False,
        ),
        # Another pod's policy.
        ({"podSelector": {"matchLabels": {"app": "triton"}}, "policyTypes": ["Egress"]}, False, False),
        # Egress rules without policyTypes: the API server's default makes it govern egress.
        ({"podSelector": {}, "egress": [{}]}, True, True),
        # An unreadable cidr may allow it (fail safe).
        (
            {
                "podSelector": {},
                "policyTypes": ["Egress"],
                "egress": [{"to": [{"ipBlock": {"cidr": "nope"}}]}],
            },
            True,
            True,
        ),
    ],
)
def test_egress_governance(spec: dict[str, Any], governs: bool, allows: bool) -> None:
    found = destination.egress_governance([policy("theirs", spec)], LABELS, ADDRESS, set())
    assert found.governing == (("theirs",) if governs else ())
    assert found.allowing == (("theirs",) if allows else ())


def test_our_own_policies_are_not_counted() -> None:
    spec = {"podSelector": {}, "policyTypes": ["Egress"]}
    found = destination.egress_governance([policy("ours", spec)], LABELS, ADDRESS, {"ours"})
    assert found == destination.EgressGovernance((), ())
