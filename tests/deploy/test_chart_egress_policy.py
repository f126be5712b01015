"""The responder's own egress (egressPolicy, off by default): DNS, the API server at the addresses given,
public addresses on 443 for Slack only when it posts there, Falco's pods on the gRPC port only with the
gRPC input; nothing else. And installed apart from Falco, the notes recommend Pod Security restricted
for the responder's namespace."""

from __future__ import annotations

from typing import Any

import helm_python

from tests.deploy.deploy_support import NAMESPACE, RELEASE, Case, Rendered, render

EGRESS = f"{RELEASE}-egress"
API = {"enabled": True, "apiServer": {"cidrs": ["10.0.0.5/32"], "ports": [443]}}
DNS_RULE: dict[str, Any] = {
    "ports": [{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}],
    "to": [
        {
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
            "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}},
        }
    ],
}
PRIVATE_V4 = [
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "100.64.0.0/10",
    "169.254.0.0/16",
    "127.0.0.0/8",
]


def _egress(rendered: Rendered) -> dict[str, Any]:
    policy: dict[str, Any] = rendered.one("NetworkPolicy", EGRESS)
    return policy


def test_off_by_default(renders: dict[str, Rendered]) -> None:
    for case in ("defaults", "production", "grpc-cert-manager"):
        names = [p["metadata"]["name"] for p in renders[case].of_kind("NetworkPolicy")]
        assert EGRESS not in names, case


def test_dns_and_the_api_server_only_when_nothing_else_is_used(chart: helm_python.Chart) -> None:
    rendered = render(chart, Case("egress-minimal", {"egressPolicy": API}))
    policy = _egress(rendered)
    deployment = rendered.one("Deployment", RELEASE)
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    selector = policy["spec"]["podSelector"]["matchLabels"]
    assert selector and all(pod_labels[k] == v for k, v in selector.items())
    assert policy["metadata"]["namespace"] == NAMESPACE
    assert policy["spec"]["policyTypes"] == ["Egress"]
    assert policy["spec"]["egress"] == [
        DNS_RULE,
        {"ports": [{"port": 443, "protocol": "TCP"}], "to": [{"ipBlock": {"cidr": "10.0.0.5/32"}}]},
    ]


def test_slack_and_grpc_add_their_rules(renders: dict[str, Rendered]) -> None:
    rules = _egress(renders["egress-policy"])["spec"]["egress"]
    dns, api, slack, grpc = rules
    assert dns["to"][0] == DNS_RULE["to"][0] and dns["to"][1:] == [{"ipBlock": {"cidr": "169.254.20.10/32"}}]
    assert api == {
        "ports": [{"port": 6443, "protocol": "TCP"}],
        "to": [{"ipBlock": {"cidr": "172.18.0.2/32"}}, {"ipBlock": {"cidr": "fd00:10::2/128"}}],
    }
    # Slack has no fixed addresses: public ones, on 443 only.
    assert slack["ports"] == [{"port": 443, "protocol": "TCP"}]
    assert slack["to"][0] == {"ipBlock": {"cidr": "0.0.0.0/0", "except": PRIVATE_V4}}
    assert slack["to"][1]["ipBlock"]["cidr"] == "::/0"
    # The gRPC input dials Falco's pods, on its address's port.
    assert grpc == {
        "ports": [{"port": 5060, "protocol": "TCP"}],
        "to": [
            {
                "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": NAMESPACE}},
                "podSelector": {"matchLabels": {"app.kubernetes.io/name": "falco"}},
            }
        ],
    }


def test_the_grpc_port_follows_the_address(chart: helm_python.Chart) -> None:
    values = {
        "egressPolicy": API,
        "inputs": {"grpc": {"enabled": True, "address": "[fd00::7]:6000", "tls": {"secretName": "g"}}},
    }
    rules = _egress(render(chart, Case("egress-grpc", values)))["spec"]["egress"]
    assert rules[-1]["ports"] == [{"port": 6000, "protocol": "TCP"}]


def test_pod_security_restricted_is_recommended_apart_from_falco(renders: dict[str, Rendered]) -> None:
    label = "kubectl label namespace serving-guard pod-security.kubernetes.io/enforce=restricted"
    assert label in renders["separate-namespace"].notes()
    # Beside Falco (privileged) the namespace cannot enforce it.
    assert "pod-security.kubernetes.io/enforce" not in renders["defaults"].notes()
