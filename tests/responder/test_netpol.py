from __future__ import annotations

from typing import Any

import pytest

from responder.actions import netpol
from responder.cluster.selectors import SelectorError, parse_label_selector, selector_matches
from tests.responder.exclusions import legacy_patched

LABEL = "serving-guard.io/quarantine"
POD = {"app": "triton", LABEL: "true"}
CUT_VALUES = ["true", "true-egress", "true-ingress"]  # Quarantine().cut_values()


def policy(name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {"metadata": {"name": name}, "spec": spec}


@pytest.mark.parametrize(
    ("selector", "expected"),
    [
        ({}, True),
        ({"matchLabels": {"app": "triton"}}, True),
        ({"matchLabels": {"app": "vllm"}}, False),
        ({"matchExpressions": [{"key": "app", "operator": "In", "values": ["triton", "x"]}]}, True),
        ({"matchExpressions": [{"key": "app", "operator": "NotIn", "values": ["triton"]}]}, False),
        ({"matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["gold"]}]}, True),
        ({"matchExpressions": [{"key": "app", "operator": "Exists"}]}, True),
        ({"matchExpressions": [{"key": LABEL, "operator": "DoesNotExist"}]}, False),
        ({"matchLabels": {"app": "triton"}, "matchExpressions": [{"key": "x", "operator": "Exists"}]}, False),
    ],
)
def test_selector_semantics(selector: dict[str, Any], expected: bool) -> None:
    assert selector_matches(selector, POD) is expected


@pytest.mark.parametrize(
    "selector",
    [
        {"matchExpressions": [{"key": "a", "operator": "Near"}]},
        {"matchExpressions": [{"key": "a", "operator": "In"}]},
        {"matchExpressions": [{"key": "a", "operator": "Exists", "values": ["x"]}]},
        {"matchLabels": ["a"]},
    ],
)
def test_invalid_selectors_raise(selector: dict[str, Any]) -> None:
    with pytest.raises(SelectorError):
        selector_matches(selector, POD)


def test_string_selectors_parse_like_kubectl() -> None:
    parsed = parse_label_selector("app=triton, tier!=gold, env in (prod, staging), !legacy, team")
    assert selector_matches(parsed, {"app": "triton", "env": "prod", "team": "ml"})
    assert not selector_matches(parsed, {"app": "triton", "env": "dev", "team": "ml"})
    assert not selector_matches(parsed, {"app": "triton", "env": "prod", "team": "ml", "legacy": "1"})


def test_leaks_are_policies_that_select_the_pod_and_allow_something() -> None:
    policies = [
        policy("serving-guard-quarantine", netpol.deny_all_spec(LABEL, "true")),
        policy("ingress-for-triton", {"podSelector": {"matchLabels": {"app": "triton"}}, "ingress": [{}]}),
        policy("deny-only", {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}),
        policy(
            "egress-dns",
            {"podSelector": {}, "policyTypes": ["Egress"], "egress": [{"ports": [{"port": 53}]}]},
        ),
        # Egress rules but only Ingress enforced: the egress list is inert.
        policy("ingress-typed", {"podSelector": {}, "policyTypes": ["Ingress"], "egress": [{}]}),
        policy("other-app", {"podSelector": {"matchLabels": {"app": "vllm"}}, "ingress": [{}]}),
        policy(
            "broken",
            {"podSelector": {"matchExpressions": [{"key": "a", "operator": "Bogus"}]}, "ingress": [{}]},
        ),
    ]
    leaks = {
        leak.policy: leak for leak in netpol.find_leaks(policies, POD, own_policy="serving-guard-quarantine")
    }
    assert set(leaks) == {"ingress-for-triton", "egress-dns", "broken"}
    assert leaks["egress-dns"].directions == ("egress",)
    assert "cannot be evaluated" in leaks["broken"].reason  # fail safe


def test_policy_types_default_like_the_api_server() -> None:
    assert netpol.policy_types({"ingress": [{}]}) == {"Ingress"}
    assert netpol.policy_types({"egress": [{}]}) == {"Ingress", "Egress"}


def test_exclusion_round_trip_keeps_owner_changes() -> None:
    original = policy("p", {"podSelector": {"matchLabels": {"app": "triton"}}, "ingress": [{}]})
    patched = netpol.with_exclusion(original, LABEL, ["true", "true-ingress"])
    assert not selector_matches(patched["spec"]["podSelector"], POD)
    assert netpol.with_exclusion(patched, LABEL, ["true", "true-ingress"]) == patched  # idempotent
    assert netpol.is_patched_by_us(patched, LABEL)
    patched["spec"]["ingress"].append({"from": []})  # the owner edits meanwhile
    restored = netpol.without_exclusion(patched, LABEL, CUT_VALUES)
    assert restored["spec"]["podSelector"] == {"matchLabels": {"app": "triton"}}
    assert len(restored["spec"]["ingress"]) == 2
    assert not netpol.is_patched_by_us(restored, LABEL)


def test_deny_all_detection() -> None:
    assert netpol.spec_is_deny_all(netpol.deny_all_spec(LABEL, "true"), LABEL, "true")
    altered = netpol.deny_all_spec(LABEL, "true")
    altered["ingress"] = [{}]
    assert not netpol.spec_is_deny_all(altered, LABEL, "true")
    assert not netpol.spec_is_deny_all({"podSelector": {"matchLabels": {LABEL: "true"}}}, LABEL, "true")


def test_one_way_deny_all_spec_and_detection() -> None:
    egress = netpol.deny_all_spec(LABEL, "true", ("egress",))
    assert egress == {"podSelector": {"matchLabels": {LABEL: "true"}}, "policyTypes": ["Egress"]}
    assert netpol.spec_is_deny_all(egress, LABEL, "true", ("egress",))
    # A policy cutting the other way, or both ways, is not this cut's own (a repair keeps what it cuts more).
    assert not netpol.spec_is_deny_all(egress, LABEL, "true")
    assert not netpol.spec_is_deny_all(netpol.deny_all_spec(LABEL, "true"), LABEL, "true", ("egress",))
    assert netpol.deny_all_spec(LABEL, "true", ("ingress",))["policyTypes"] == ["Ingress"]


BOTH_WAYS = {"podSelector": {"matchLabels": {"app": "triton"}}, "policyTypes": ["Ingress", "Egress"]}


def test_an_egress_cut_counts_only_egress_leaks() -> None:
    policies = [
        policy("gateway-in", {"podSelector": {"matchLabels": {"app": "triton"}}, "ingress": [{}]}),
        policy("both", {**BOTH_WAYS, "ingress": [{}], "egress": [{}]}),
    ]
    leaks = netpol.find_leaks(policies, POD, own_policy="q", directions=("egress",))
    assert [(leak.policy, leak.directions) for leak in leaks] == [("both", ("egress",))]
    ingress_cut = netpol.find_leaks(policies, POD, own_policy="q", directions=("ingress",))
    assert [(leak.policy, leak.directions) for leak in ingress_cut] == [
        ("gateway-in", ("ingress",)),
        ("both", ("ingress",)),
    ]


@pytest.mark.parametrize(
    ("spec", "directions", "beyond"),
    [
        ({**BOTH_WAYS, "egress": [{}]}, ("egress",), ("ingress",)),
        ({"podSelector": {}, "policyTypes": ["Egress"], "egress": [{}]}, ("egress",), ()),
        # No policyTypes: the API server's default is Ingress (and Egress with egress rules).
        ({"podSelector": {}, "egress": [{}]}, ("egress",), ("ingress",)),
        ({"podSelector": {}, "ingress": [{}]}, ("ingress",), ()),
        ({**BOTH_WAYS, "ingress": [{}]}, netpol.BOTH_DIRECTIONS, ()),
    ],
)
def test_a_policy_governing_the_direction_left_alone_is_named(
    spec: dict[str, Any], directions: tuple[str, ...], beyond: tuple[str, ...]
) -> None:
    assert netpol.governed_beyond(policy("p", spec), directions) == beyond


def test_an_exclusion_made_for_a_cut_of_both_ways_is_named_under_a_one_way_cut() -> None:
    """A policy an earlier version patched (`DoesNotExist`: every quarantined pod) excludes pods of
    a one-way cut too, and so lifts its rules in the direction that cut leaves alone."""
    patched = legacy_patched(policy("baseline", {**BOTH_WAYS, "ingress": [{}], "egress": [{}]}), LABEL)
    assert netpol.excluded_beyond(patched, LABEL, CUT_VALUES, POD, ("egress",)) == ("ingress",)
    assert netpol.excluded_beyond(patched, LABEL, CUT_VALUES, POD, ("ingress",)) == ("egress",)
    # Under a cut of both ways the exclusion is the point of the patch.
    assert netpol.excluded_beyond(patched, LABEL, CUT_VALUES, POD, netpol.BOTH_DIRECTIONS) == ()
    # Not ours, or it would not select the pod anyway, or it governs only the cut direction: nothing.
    unpatched = policy("baseline", {**BOTH_WAYS, "ingress": [{}]})
    assert netpol.excluded_beyond(unpatched, LABEL, CUT_VALUES, POD, ("egress",)) == ()
    elsewhere = legacy_patched(
        policy("other", {**BOTH_WAYS, "podSelector": {"matchLabels": {"app": "x"}}}), LABEL
    )
    assert netpol.excluded_beyond(elsewhere, LABEL, CUT_VALUES, POD, ("egress",)) == ()
    egress_only = legacy_patched(policy("out", {"podSelector": {}, "policyTypes": ["Egress"]}), LABEL)
    assert netpol.excluded_beyond(egress_only, LABEL, CUT_VALUES, POD, ("egress",)) == ()
    # Fail safe: a selector that cannot be evaluated may select the pod.
    broken = legacy_patched(
        policy(
            "odd", {**BOTH_WAYS, "podSelector": {"matchExpressions": [{"key": "a", "operator": "Bogus"}]}}
        ),
        LABEL,
    )
    assert netpol.excluded_beyond(broken, LABEL, CUT_VALUES, POD, ("egress",)) == ("ingress",)


@pytest.mark.parametrize(
    ("spec", "direction", "expected"),
    [
        ({"egress": [{}]}, "egress", True),
        ({"egress": [{"to": [], "ports": []}]}, "egress", True),
        ({"ingress": [{"from": [{"podSelector": {}}]}, {}]}, "ingress", True),
        ({"ingress": [{}]}, "egress", False),  # its rules are in the other direction
        ({"egress": []}, "egress", False),  # no rule: allows nothing
        ({"egress": [{"ports": [{"port": 53}]}]}, "egress", False),
        ({"egress": [{"to": [{"ipBlock": {"cidr": "0.0.0.0/0"}}]}]}, "egress", False),  # kept exact
    ],
)
def test_allows_all_is_a_rule_with_no_peers_and_no_ports(
    spec: dict[str, Any], direction: str, expected: bool
) -> None:
    assert netpol.allows_all(spec, direction) is expected
