"""slack.proxy: Slack's posts through an HTTPS proxy (HTTPS_PROXY, which slack-sdk reads), while the
Kubernetes client, which reads HTTPS_PROXY and NO_PROXY too, keeps calling the API server directly:
NO_PROXY always names it. With egressPolicy the proxy is admitted through egressPolicy.extraEgress."""

from __future__ import annotations

import urllib.request
from typing import Any

import helm_python
import pytest
from kubernetes import client as k8s_client
from kubernetes.client.rest import should_bypass_proxies

from tests.deploy.deploy_support import NAMESPACE, RELEASE, Case, Rendered, Values, render

PROXY = "http://proxy.corp.example:3128"
WEBHOOK: Values = {"slack": {"mode": "webhook", "secretName": "slack-hook", "proxy": {"httpsProxy": PROXY}}}
PROXY_RULE = {"to": [{"ipBlock": {"cidr": "10.20.0.15/32"}}], "ports": [{"port": 3128, "protocol": "TCP"}]}
EGRESS_POLICY = {"enabled": True, "apiServer": {"cidrs": ["10.0.0.5/32"], "ports": [443]}}
# What the kubelet gives every pod for the kubernetes Service, and expands in $(KUBERNETES_SERVICE_HOST).
API_SERVICE_HOST = "10.96.0.1"


def _env(rendered: Rendered) -> dict[str, str]:
    container = rendered.one("Deployment", RELEASE)["spec"]["template"]["spec"]["containers"][0]
    return {variable["name"]: variable["value"] for variable in container.get("env", [])}


def test_no_proxy_variables_without_a_proxy(renders: dict[str, Rendered]) -> None:
    assert _env(renders["slack-webhook"]) == {}


def test_the_proxy_carries_slack_and_not_the_api_calls(chart: helm_python.Chart) -> None:
    values: Values = {
        "slack": {**WEBHOOK["slack"], "proxy": {"httpsProxy": PROXY, "noProxy": [".corp.example"]}}
    }
    env = _env(render(chart, Case("proxy", values)))
    assert env["HTTPS_PROXY"] == PROXY
    assert env["NO_PROXY"].split(",") == [
        "$(KUBERNETES_SERVICE_HOST)",
        "kubernetes.default.svc",
        ".svc",
        ".cluster.local",
        "localhost",
        "127.0.0.1",
        "::1",
        ".corp.example",
    ]


def test_the_kubernetes_client_honours_the_proxy_variables(
    chart: helm_python.Chart, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The client the image locks reads HTTPS_PROXY (so without NO_PROXY the API calls would go through
    the proxy) and NO_PROXY, and slack-sdk's proxy bypass (urllib's) does not bypass Slack."""
    env = _env(render(chart, Case("proxy", WEBHOOK)))
    for name in ("HTTPS_PROXY", "HTTP_PROXY", "NO_PROXY", "https_proxy", "http_proxy", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTPS_PROXY", env["HTTPS_PROXY"])
    api_url = f"https://{API_SERVICE_HOST}:443"  # what the in-cluster loader sets as the host
    without_no_proxy = k8s_client.Configuration()
    without_no_proxy.host = api_url
    assert without_no_proxy.proxy == PROXY
    assert not should_bypass_proxies(api_url, without_no_proxy.no_proxy or "")
    monkeypatch.setenv("NO_PROXY", env["NO_PROXY"].replace("$(KUBERNETES_SERVICE_HOST)", API_SERVICE_HOST))
    configuration = k8s_client.Configuration()
    configuration.host = api_url
    assert should_bypass_proxies(api_url, configuration.no_proxy or "")
    assert should_bypass_proxies("https://kubernetes.default.svc:443", configuration.no_proxy or "")
    assert not urllib.request.proxy_bypass("hooks.slack.com")


def test_the_egress_policy_admits_the_proxy_instead_of_public_addresses(chart: helm_python.Chart) -> None:
    values = {**WEBHOOK, "egressPolicy": {**EGRESS_POLICY, "extraEgress": [PROXY_RULE]}}
    egress: list[dict[str, Any]] = render(chart, Case("proxy-egress", values)).one(
        "NetworkPolicy", f"{RELEASE}-egress"
    )["spec"]["egress"]
    assert egress[-1] == PROXY_RULE
    assert not [
        rule
        for rule in egress
        if {"port": 443, "protocol": "TCP"} in rule.get("ports", [])
        and any(peer.get("ipBlock", {}).get("cidr") == "0.0.0.0/0" for peer in rule["to"])
    ]


def test_the_egress_policy_without_the_proxy_is_refused(chart: helm_python.Chart) -> None:
    with pytest.raises(helm_python.HelmRenderError) as caught:
        chart.render({**WEBHOOK, "egressPolicy": EGRESS_POLICY}, name=RELEASE, namespace=NAMESPACE)
    assert "egressPolicy.extraEgress: slack.proxy.httpsProxy" in str(caught.value)


def test_extra_egress_without_a_proxy_is_added_to_the_rules(chart: helm_python.Chart) -> None:
    values = {"egressPolicy": {**EGRESS_POLICY, "extraEgress": [PROXY_RULE]}}
    egress = render(chart, Case("extra-egress", values)).one("NetworkPolicy", f"{RELEASE}-egress")["spec"][
        "egress"
    ]
    assert egress[-1] == PROXY_RULE


@pytest.mark.parametrize(
    ("values", "where"),
    [
        ({"slack": {"proxy": {"httpsProxy": "proxy.corp:3128"}}}, "at '/slack/proxy/httpsProxy'"),
        ({"slack": {"proxy": {"noProxy": ["a,b"]}}}, "at '/slack/proxy/noProxy/0'"),
        (
            {"egressPolicy": {"extraEgress": [{"ports": [{"port": 3128}]}]}},
            "at '/egressPolicy/extraEgress/0'",
        ),
        ({"egressPolicy": {"extraEgress": [{"to": [{"ipBlock": {"cidr": "10.0.0.1"}}]}]}}, "cidr"),
    ],
)
def test_the_schema_refuses_malformed_proxy_values(
    chart: helm_python.Chart, values: Values, where: str
) -> None:
    with pytest.raises(helm_python.HelmValuesError) as caught:
        chart.render(values, name=RELEASE, namespace=NAMESPACE)
    assert where in str(caught.value), str(caught.value)
