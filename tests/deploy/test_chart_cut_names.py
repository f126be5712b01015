"""A one-way cut appends -egress or -ingress to quarantine.networkPolicyName and quarantine.labelValue.
The chart refuses what the responder refuses (Config.cut_name_problems: a cut in use whose names pass
63 characters), no more and no less: a name the schema takes but the responder refuses made a config
that crash-looped the pod after a successful install."""

from __future__ import annotations

import copy
import itertools
from typing import Any

import helm_python
import pytest
import yaml

from responder.config import load_config_text
from responder.errors import UserError
from tests.deploy.deploy_support import NAMESPACE, RELEASE, Case, render

EGRESS_POLICY = {
    "name": "egress",
    "match": {"rules": ["Anomalous egress*"]},
    "actions": ["notify", "quarantine"],
    "isolate": "egress",
}
# Around the edges: 55 = 63 - len("-ingress"), 56 = 63 - len("-egress"), 63 the schema's own cap.
POLICY_NAME_LENGTHS = (55, 56, 57, 63)
LABEL_VALUE_LENGTHS = (4, 55, 56, 57)
BLOCK_POLICY = {
    "name": "block",
    "match": {"rules": ["Runtime download*"]},
    "actions": ["notify", "block_destination"],
}
# What leaves quarantined pods out by every cut's label value, whatever cut is in use: nothing, the
# policies the quarantine patches, or block policies (their NotIn).
LEAVES_OUT = ("nothing", "patched policies", "blocks")


def _values(
    name_length: int, value_length: int, isolate: str, otherwise: bool, leaves_out: str = "nothing"
) -> dict[str, Any]:
    # A policy cutting otherwise than quarantine.isolate puts every cut in use.
    policies = (
        [{**EGRESS_POLICY, "isolate": "ingress" if isolate == "egress" else "egress"}] if otherwise else []
    )
    return {
        "enforcement": {"scope": "namespaced", "namespaces": ["models"]},
        "quarantine": {
            "networkPolicyName": "q" * name_length,
            "labelValue": "v" * value_length,
            "isolate": isolate,
            "patchOtherPolicies": leaves_out == "patched policies",
        },
        "policies": [*policies, BLOCK_POLICY] if leaves_out == "blocks" else policies,
    }


def _responder_takes(rendered_config: str) -> bool:
    try:
        load_config_text(rendered_config)
    except UserError:
        return False
    return True


def test_the_chart_refuses_exactly_the_cut_names_the_responder_refuses(chart: helm_python.Chart) -> None:
    base = yaml.safe_load(render(chart, Case("cut-names-base", _values(20, 4, "both", False))).config_text())
    refused = 0
    refused_for_values_left_out = 0
    for name_length, value_length, isolate, otherwise, leaves_out in itertools.product(
        POLICY_NAME_LENGTHS, LABEL_VALUE_LENGTHS, ("both", "egress", "ingress"), (False, True), LEAVES_OUT
    ):
        values = _values(name_length, value_length, isolate, otherwise, leaves_out)
        # The responder's verdict on the config these values mean, whatever the chart says of them.
        meant = copy.deepcopy(base)
        meant["quarantine"].update(
            network_policy=values["quarantine"]["networkPolicyName"],
            label_value=values["quarantine"]["labelValue"],
            isolate=isolate,
            patch_other_policies=leaves_out == "patched policies",
        )
        meant["policies"] = values["policies"]
        takes = _responder_takes(yaml.safe_dump(meant))
        try:
            rendered = render(chart, Case("cut-names", values))
        except helm_python.HelmRenderError as exc:
            refused += 1
            assert not takes, (values["quarantine"], otherwise, leaves_out, str(exc))
            if "leaves quarantined pods out by every cut's label value" in str(exc):
                refused_for_values_left_out += 1
                assert "longer than 63 characters: shorten quarantine.labelValue to at most 55" in str(exc)
            else:
                assert "longer than 63 characters: shorten quarantine.networkPolicyName and" in str(exc)
            continue
        assert takes, (values["quarantine"], otherwise, leaves_out)
        assert yaml.safe_load(rendered.config_text()) == meant
        for policy in rendered.of_kind("NetworkPolicy"):
            assert len(policy["metadata"]["name"]) <= 63
    assert refused > 0 and refused_for_values_left_out > 0  # guards the guard: the edges were reached


@pytest.mark.parametrize(
    ("quarantine", "policies", "cut", "why"),
    [
        (
            {"networkPolicyName": "q" * 57, "isolate": "egress"},
            [],
            "egress",
            "quarantine.isolate is egress",
        ),
        (
            {"networkPolicyName": "q" * 56},
            [EGRESS_POLICY],
            "ingress",
            "a policy cuts otherwise than quarantine.isolate (policies[].isolate), so every cut is",
        ),
    ],
    ids=["isolate", "policy-cutting-otherwise"],
)
def test_the_refusal_names_the_cut_and_the_length_that_fits(
    chart: helm_python.Chart,
    quarantine: dict[str, str],
    policies: list[dict[str, Any]],
    cut: str,
    why: str,
) -> None:
    with pytest.raises(helm_python.HelmRenderError) as caught:
        chart.render({"quarantine": quarantine, "policies": policies}, name=RELEASE, namespace=NAMESPACE)
    message = str(caught.value)
    assert f"quarantine: the {cut} cut is in use ({why})" in message, message
    assert f"at most {63 - len(cut) - 1} characters" in message, message


def test_a_63_character_name_still_renders_where_no_one_way_cut_is_in_use(chart: helm_python.Chart) -> None:
    values = _values(63, 63, "both", False)
    rendered = render(chart, Case("long-both", values))
    config = load_config_text(rendered.config_text())
    assert config.quarantine.network_policy == "q" * 63
    assert [p["metadata"]["name"] for p in rendered.of_kind("NetworkPolicy")] == [RELEASE, "q" * 63]


@pytest.mark.parametrize("suffix", ["-egress", "-ingress", "-both"])
def test_a_label_value_ending_in_a_cuts_suffix_is_refused_by_chart_and_responder(
    chart: helm_python.Chart, suffix: str
) -> None:
    """`no-egress` is the egress cut's value of a config whose label_value is `no`: two such configs
    would each take the other's deny-all for their own (review-session-44c M1). The chart refuses
    it, as the responder does."""
    values = {"quarantine": {"labelValue": f"no{suffix}"}}
    with pytest.raises(helm_python.HelmRenderError) as refused:
        render(chart, Case("cut-suffix", values))
    assert f'quarantine.labelValue: "no{suffix}" must not end in {suffix}:' in str(refused.value)
    with pytest.raises(UserError) as said:
        load_config_text(f"quarantine:\n  label_value: no{suffix}\n", "config.yaml")
    assert f"config.yaml:2: quarantine.label_value: must not end in {suffix}:" in str(said.value)
    render(chart, Case("cut-suffix-inside", {"quarantine": {"labelValue": "egress-cut"}}))  # only at its end
