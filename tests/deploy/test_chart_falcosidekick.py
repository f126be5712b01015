"""Falcosidekick adds the responder's token to whatever it relays, and its own input takes plain HTTP
from anyone: with falcosidekick.allowIngress the chart admits only Falco's pods to that input (a
NetworkPolicy in Falcosidekick's namespace), the responder admits only Falcosidekick's core pods (not
its UI or Redis, which carry the same name label), and the notes and README say to restrict the input."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import helm_python
import pytest

from tests.deploy.deploy_support import (
    DEPLOY,
    NAMESPACE,
    RELEASE,
    Case,
    Rendered,
    Values,
    released_values,
    render,
    render_reusing,
    with_test_image,
)

README = (DEPLOY / "README.md").read_text(encoding="utf-8")
INPUT_POLICY = f"{RELEASE}-falcosidekick-input"
TOKEN_MODE: Values = {
    "inputs": {"http": {"tls": {"requireClientCert": False}, "token": {"secretName": "sg-http-token"}}},
    "falcosidekick": {"allowIngress": True},
}
FALCO_PODS = {"matchLabels": {"app.kubernetes.io/name": "falco"}}
SIDEKICK_CORE = {"app.kubernetes.io/name": "falcosidekick", "app.kubernetes.io/component": "core"}


def _with(values: Values, **sidekick: Any) -> Values:
    return {**values, "falcosidekick": {**values["falcosidekick"], **sidekick}}


def _input_policies(rendered: Rendered) -> list[dict[str, Any]]:
    return [p for p in rendered.of_kind("NetworkPolicy") if p["metadata"]["name"] == INPUT_POLICY]


def test_the_responder_admits_only_falcosidekicks_core_pods(chart: helm_python.Chart) -> None:
    rendered = render(chart, Case("sidekick", TOKEN_MODE))
    (rule, _metrics) = rendered.one("NetworkPolicy", RELEASE)["spec"]["ingress"]
    assert rule["from"] == [{"podSelector": FALCO_PODS}, {"podSelector": {"matchLabels": SIDEKICK_CORE}}]


def test_only_falco_may_post_to_falcosidekick(chart: helm_python.Chart) -> None:
    rendered = render(chart, Case("sidekick", TOKEN_MODE))
    policy = rendered.one("NetworkPolicy", INPUT_POLICY)
    assert policy["metadata"]["namespace"] == NAMESPACE
    assert policy["spec"] == {
        "podSelector": {"matchLabels": SIDEKICK_CORE},
        "policyTypes": ["Ingress"],
        "ingress": [{"from": [{"podSelector": FALCO_PODS}], "ports": [{"port": 2801, "protocol": "TCP"}]}],
    }


SCRAPER = {
    "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}},
    "podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus"}},
}
METRICS_ONLY = {"from": [SCRAPER], "ports": [{"port": 2810, "protocol": "TCP"}]}


def test_falcosidekick_apart_from_falco_gets_the_policy_in_its_namespace(chart: helm_python.Chart) -> None:
    values = _with(TOKEN_MODE, namespace="sidekick", inputPolicy={"ports": [2801, 2811]})
    policy = render(chart, Case("sidekick-apart", values)).one("NetworkPolicy", INPUT_POLICY)
    assert policy["metadata"]["namespace"] == "sidekick"
    (rule,) = policy["spec"]["ingress"]
    falco_in_its_namespace = {
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": NAMESPACE}},
        "podSelector": FALCO_PODS,
    }
    assert rule["from"] == [falco_in_its_namespace]
    assert rule["ports"] == [{"port": 2801, "protocol": "TCP"}, {"port": 2811, "protocol": "TCP"}]


def test_extra_peers_reach_only_their_own_ports_never_the_alert_input(chart: helm_python.Chart) -> None:
    """Review of the fixes, finding 4: a metrics scraper listed for Falcosidekick is admitted to the port
    its rule names (tlsserver.notlsport, 2810), not to the alert input (2801) that Falco's rule admits."""
    values = _with(TOKEN_MODE, inputPolicy={"extraIngress": [METRICS_ONLY]})
    rendered = render(chart, Case("sidekick-scraper", values))
    policy = rendered.one("NetworkPolicy", INPUT_POLICY)
    assert policy["spec"]["ingress"] == [
        {"from": [{"podSelector": FALCO_PODS}], "ports": [{"port": 2801, "protocol": "TCP"}]},
        METRICS_ONLY,
    ]
    notes = " ".join(rendered.notes().split())
    assert (
        "falcosidekick.inputPolicy.extraIngress to their ports: any of them admitted to the input port"
        in notes
    )


@pytest.mark.parametrize(
    "input_policy",
    [
        {"extraFrom": [SCRAPER]},  # the peers-only form: every input port
        {"extraIngress": [{"from": [SCRAPER]}]},  # a rule without ports admits every port
        {"extraIngress": [{"from": [SCRAPER], "ports": []}]},
        {"extraIngress": [{"ports": [{"port": 2810, "protocol": "TCP"}]}]},  # without from: every source
        {"extraIngress": [{"from": [], "ports": [{"port": 2810, "protocol": "TCP"}]}]},
    ],
    ids=["extraFrom", "no-ports", "empty-ports", "no-from", "empty-from"],
)
def test_extra_ingress_rules_must_name_their_peers_and_ports(
    chart: helm_python.Chart, input_policy: Values
) -> None:
    with pytest.raises(helm_python.HelmValuesError):
        render(chart, Case("sidekick-open", _with(TOKEN_MODE, inputPolicy=input_policy)))


def test_no_policy_without_the_falcosidekick_path_or_when_turned_off(
    chart: helm_python.Chart, renders: dict[str, Rendered]
) -> None:
    assert _input_policies(renders["defaults"]) == []
    off = render(chart, Case("sidekick-off", _with(TOKEN_MODE, inputPolicy={"enabled": False})))
    assert _input_policies(off) == []
    assert (
        "falcosidekick.inputPolicy.enabled is false: restrict Falcosidekick's input yourself" in off.notes()
    )


def test_an_earlier_release_with_falcosidekick_gets_the_policy_on_upgrade(tmp_path: Path) -> None:
    earlier = next(r for r in released_values() if r.chart_version == "0.1.0").values
    assert "inputPolicy" not in earlier["falcosidekick"]
    rendered = render_reusing(earlier, with_test_image(TOKEN_MODE), tmp_path)
    (policy,) = _input_policies(rendered)
    assert policy["spec"]["ingress"][0]["ports"] == [{"port": 2801, "protocol": "TCP"}]


def test_notes_and_readme_say_to_restrict_falcosidekicks_input(chart: helm_python.Chart) -> None:
    notes = " ".join(render(chart, Case("sidekick", TOKEN_MODE)).notes().split())
    assert "Falcosidekick adds the token to every event it relays" in notes
    assert f"NetworkPolicy {INPUT_POLICY} (namespace {NAMESPACE}) admits only Falco's pods" in notes
    section = README.split("### Falcosidekick in between", 1)[1].split("\n## ", 1)[0]
    prose = " ".join(section.split())
    assert "**Restrict Falcosidekick's input.**" in prose
    assert "`<fullname>-falcosidekick-input`" in prose and "`falcosidekick.inputPolicy.extraIngress`" in prose
    assert "can also post alerts" in prose and "`notlsport`" in prose
    assert "`falcosidekick.config.tlsserver.deploy: true` with `mutualtls: true`" in prose
