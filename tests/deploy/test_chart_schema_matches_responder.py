"""values.schema.json refuses, at render, the list values the responder would refuse at start (a
crash-looping pod after a successful `helm install`): never-blocked addresses that are no IP
address or network, and Slack channels left empty (an unquoted `#channel` is a YAML comment). What
the schema takes, the responder takes too."""

from __future__ import annotations

import ipaddress
import json
import random
import re
from typing import Any

import helm_python
import pytest

from responder.config import BlockDestination, load_config_text
from responder.errors import UserError
from tests.deploy.deploy_support import CHART_DIR, NAMESPACE, RELEASE, Case, render

SCHEMA = json.loads((CHART_DIR / "values.schema.json").read_text(encoding="utf-8"))
NEVER_BLOCK = SCHEMA["properties"]["blockDestination"]["properties"]["neverBlock"]["items"]["pattern"]
POLICY = {"name": "shells", "match": {"rules": ["Shell in serving pod"]}, "actions": ["notify"]}


def responder_takes(entry: str) -> bool:
    try:
        BlockDestination.model_validate({"never_block": [entry]})
    except ValueError:
        return False
    return True


BAD_ADDRESSES = [
    "notacidr",
    "10.0.0.0/33",
    "256.1.1.1",
    "010.0.0.1",
    "1.2.3",
    "10.0.0.1/",
    "2001:db8::/129",
    "1::2::3",
    "1:2:3:4:5:6:7:8:9",
    ":::",
    "203.0.113.0/24 ",
    "",
]
GOOD_ADDRESSES = [
    "203.0.113.7",
    "203.0.113.0/24",
    "10.1.2.3/8",  # host bits set: the responder takes it as its network
    "0.0.0.0/0",
    "2001:db8::/32",
    "2001:DB8:0:0:0:0:0:1",
    "::1",
    "::",
    "::/0",
    "::ffff:203.0.113.7",
    "64:ff9b::203.0.113.7/128",
    "1:2:3:4:5:6:7::",
    "fe80::1:2:3:4:5:6",
]


@pytest.mark.parametrize("entry", BAD_ADDRESSES)
def test_an_entry_the_responder_refuses_fails_the_render(chart: helm_python.Chart, entry: str) -> None:
    assert not responder_takes(entry)
    with pytest.raises(helm_python.HelmValuesError) as caught:
        chart.render(
            {"blockDestination": {"neverBlock": ["203.0.113.9", entry]}}, name=RELEASE, namespace=NAMESPACE
        )
    assert "at '/blockDestination/neverBlock/1'" in str(caught.value), str(caught.value)


def test_addresses_and_networks_of_both_families_render_and_the_responder_takes_them(
    chart: helm_python.Chart,
) -> None:
    rendered = render(chart, Case("never-block", {"blockDestination": {"neverBlock": GOOD_ADDRESSES}}))
    config = load_config_text(rendered.config_text(), "config.yaml")
    assert list(config.block_destination.never_block) == [
        str(ipaddress.ip_network(entry, strict=False)) for entry in GOOD_ADDRESSES
    ]


def _written_forms(rng: random.Random) -> list[str]:
    """Ways a person writes one address: compressed, exploded, a zero run compressed elsewhere,
    an IPv4 tail, upper case; with a prefix or not."""
    if rng.random() < 0.3:
        forms = [str(ipaddress.IPv4Address(rng.getrandbits(32)))]
    else:
        groups = [rng.choice([0, 0, rng.getrandbits(16)]) for _ in range(8)]
        address = ipaddress.IPv6Address(int("".join(f"{g:04x}" for g in groups), 16))
        hexes = [f"{g:x}" for g in groups]
        forms = [address.compressed, address.exploded, address.compressed.upper()]
        forms += [
            ":".join(hexes[:start]) + "::" + ":".join(hexes[end:])
            for start in range(8)
            for end in range(start + 1, 9)
            if not any(groups[start:end])
        ]
        forms.append(":".join(hexes[:6]) + ":" + str(ipaddress.IPv4Address((groups[6] << 16) | groups[7])))
    top = 32 if "." in forms[0] and ":" not in forms[0] else 128
    return forms + [f"{form}/{rng.randint(0, top)}" for form in forms]


def test_the_pattern_takes_every_written_form_of_an_address_and_nothing_the_responder_refuses() -> None:
    pattern = re.compile(NEVER_BLOCK)
    rng = random.Random(20261204)
    for _ in range(2000):
        for form in _written_forms(rng):
            assert pattern.search(form) and responder_takes(form), form
    alphabet = "0123456789abcdefABCDEF:./%x "
    for _ in range(20000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 20)))
        assert not pattern.search(text) or responder_takes(text), text


@pytest.mark.parametrize(
    ("values", "where"),
    [
        ({"policies": [{**POLICY, "slack": {"channel": None}}]}, "at '/policies/0/slack/channel'"),
        ({"policies": [{**POLICY, "slack": {"channel": "  "}}]}, "at '/policies/0/slack/channel'"),
        (
            {"slack": {"mode": "bot", "secretName": "slack-bot", "defaultChannel": "   "}},
            "at '/slack/defaultChannel'",
        ),
    ],
    ids=["unquoted-policy-channel", "blank-policy-channel", "blank-default-channel"],
)
def test_an_empty_slack_channel_fails_the_render(
    chart: helm_python.Chart, values: dict[str, Any], where: str
) -> None:
    # Without the schema, each rendered, and the responder refused the config it was given.
    with pytest.raises(helm_python.HelmValuesError) as caught:
        chart.render(values, name=RELEASE, namespace=NAMESPACE)
    assert where in str(caught.value), str(caught.value)


def test_a_quoted_channel_renders_and_reaches_the_responder(chart: helm_python.Chart) -> None:
    values = {
        "slack": {"mode": "bot", "secretName": "slack-bot", "defaultChannel": "#sec-alerts"},
        "policies": [{**POLICY, "slack": {"channel": "#sec-oncall"}}],
    }
    config = load_config_text(render(chart, Case("channels", values)).config_text(), "config.yaml")
    assert config.slack.default_channel == "#sec-alerts"
    assert config.policies[0].slack.channel == "#sec-oncall"


def test_what_the_schema_refused_the_responder_refuses_too() -> None:
    """The refusals above are the responder's own, not stricter ones: a rendered config with them
    would not start."""
    for entry in BAD_ADDRESSES:
        assert not responder_takes(entry), entry
    with pytest.raises(UserError, match=re.escape("policies[0].slack.channel: is empty")):
        load_config_text("policies:\n  - name: p\n    slack: {channel: }\n", "config.yaml")
    with pytest.raises(UserError, match="mode bot needs default_channel"):
        load_config_text("slack: {mode: bot, token: {env: T}, default_channel: '  '}\n", "config.yaml")


# -- namespace names: the responder refuses any other form (it would match no namespace) ------------

POLICY_NAMESPACES = SCHEMA["properties"]["policies"]["items"]["properties"]["match"]["properties"][
    "namespaces"
]
PROTECTED = SCHEMA["properties"]["guardrails"]["properties"]["protectedNamespaces"]


def _schema_takes(node: dict[str, Any], text: str) -> bool:
    items = node["items"]
    return bool(re.search(items["pattern"], text)) and len(text) <= items["maxLength"]


def responder_takes_namespaces(protected: list[str], matched: list[str]) -> bool:
    policy = {**POLICY, "match": {"namespaces": matched}}
    text = json.dumps({"guardrails": {"protected_namespaces": protected}, "policies": [policy]})
    try:
        load_config_text(text, "config.yaml")
    except UserError:
        return False
    return True


def test_namespace_patterns_take_nothing_the_responder_refuses() -> None:
    rng = random.Random(20260101)
    alphabet = "abz09-*?[]!.A _"
    for _ in range(20000):
        text = "".join(
            rng.choice(alphabet) for _ in range(rng.choice([rng.randint(1, 8), rng.randint(60, 66)]))
        )
        if _schema_takes(POLICY_NAMESPACES, text):
            assert responder_takes_namespaces([], [text]), text
        if _schema_takes(PROTECTED, text):
            assert responder_takes_namespaces([text], []), text


@pytest.mark.parametrize("entry", ["-models", "models-", "a" * 64, "Models", "ML-*", "ml.serving"])
def test_a_policy_namespace_the_responder_refuses_fails_the_render(
    chart: helm_python.Chart, entry: str
) -> None:
    assert not responder_takes_namespaces([], [entry])
    values = {"policies": [{**POLICY, "match": {"namespaces": ["ml-*", entry]}}]}
    with pytest.raises(helm_python.HelmValuesError) as caught:
        chart.render(values, name=RELEASE, namespace=NAMESPACE)
    assert "at '/policies/0/match/namespaces/1'" in str(caught.value), str(caught.value)
