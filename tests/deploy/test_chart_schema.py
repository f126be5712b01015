"""values.schema.json covers every value (typos are errors that name the path), and the chart's own
checks refuse value combinations the responder could not run with, saying what to change."""

from __future__ import annotations

import json
from typing import Any

import helm_python
import pytest
import yaml

from responder.config import load_config_text
from tests.deploy.deploy_support import CHART_DIR, NAMESPACE, RELEASE, Case, render

SCHEMA = json.loads((CHART_DIR / "values.schema.json").read_text(encoding="utf-8"))
VALUES = yaml.safe_load((CHART_DIR / "values.yaml").read_text(encoding="utf-8"))
# Helm's own key; tolerated so the chart can also be used as a subchart.
HELM_KEYS = {"global"}
# Keys the schema allows that are optional by nature, so values.yaml shows no default for them.
OPTIONAL = {
    # Removed; still taken as false so that `helm upgrade --reuse-values` from an earlier release renders.
    "/enforcement/allowPodDeletion",
    "/resources/requests/ephemeral-storage",
    "/resources/limits/ephemeral-storage",
    "/affinity/nodeAffinity",
    "/affinity/podAffinity",
    "/affinity/podAntiAffinity",
}


def _object_nodes(node: Any, path: str = "") -> list[tuple[str, dict[str, Any]]]:
    found: list[tuple[str, dict[str, Any]]] = []
    if isinstance(node, dict):
        if "properties" in node:
            found.append((path or "/", node))
        for key, child in node.items():
            found += _object_nodes(child, f"{path}/{key}")
    elif isinstance(node, list):
        for index, child in enumerate(node):
            found += _object_nodes(child, f"{path}/{index}")
    return found


def test_every_schema_object_refuses_unknown_keys() -> None:
    loose = [path for path, node in _object_nodes(SCHEMA) if node.get("additionalProperties") is not False]
    assert loose == []


def _walk(
    value: Any, schema: dict[str, Any], path: str, problems: list[str], *, defaults: bool = True
) -> None:
    if isinstance(value, dict):
        properties = schema.get("properties")
        if properties is None:
            # A free-form map (labels, annotations, nodeSelector): its values are typed instead.
            assert "additionalProperties" in schema or schema.get("type") == "object", path
            return
        for key, child in value.items():
            if key not in properties:
                problems.append(f"{path}/{key}: in values.yaml but not in the schema")
                continue
            _walk(child, properties[key], f"{path}/{key}", problems, defaults=defaults)
        # Optional keys inside list items (policies) have no default to show.
        for key in sorted(set(properties) - set(value) - HELM_KEYS) if defaults else ():
            if f"{path}/{key}" in OPTIONAL:
                continue
            problems.append(f"{path}/{key}: in the schema but has no default in values.yaml")
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for index, item in enumerate(value):
            if not isinstance(item, dict):
                continue
            item_schema = schema["items"]
            for key in item:
                if key not in item_schema.get("properties", {}):
                    problems.append(f"{path}/{index}/{key}: not in the schema")
                elif isinstance(item[key], dict):
                    sub_schema = item_schema["properties"][key]
                    _walk(item[key], sub_schema, f"{path}/{index}/{key}", problems, defaults=False)


def test_schema_and_values_yaml_describe_the_same_keys() -> None:
    problems: list[str] = []
    _walk(VALUES, SCHEMA, "", problems)
    assert problems == []


def test_default_values_pass_the_schema(chart: helm_python.Chart) -> None:
    chart.validate_schema(VALUES)


@pytest.mark.parametrize(
    ("values", "where", "what"),
    [
        ({"imge": {}}, "at ''", "'imge' not allowed"),
        ({"image": {"tagg": "1.0"}}, "at '/image'", "'tagg' not allowed"),
        ({"image": {"digest": "sha256:abc"}}, "at '/image/digest'", "does not match pattern"),
        ({"enforcement": {"scope": "everywhere"}}, "at '/enforcement/scope'", "must be one of"),
        ({"enforcement": {"namespace": ["models"]}}, "at '/enforcement'", "'namespace' not allowed"),
        (
            {"enforcement": {"namespaces": ["Models_A"]}},
            "at '/enforcement/namespaces/0'",
            "does not match pattern",
        ),
        ({"slack": {"mode": "bott"}}, "at '/slack/mode'", "must be one of"),
        # Names the empty-or-name patterns once let through: only their end was anchored.
        ({"slack": {"secretName": "Slack_Bot-token"}}, "at '/slack/secretName'", "does not match pattern"),
        (
            {"inputs": {"http": {"auditToken": {"secretName": "Audit_Readers"}}}},
            "at '/inputs/http/auditToken/secretName'",
            "does not match pattern",
        ),
        ({"slack": {"minPriority": "loud"}}, "at '/slack/minPriority'", "does not match pattern"),
        ({"inputs": {"http": {"maxConnections": 15}}}, "at '/inputs/http/maxConnections'", "minimum"),
        ({"inputs": {"http": {"maxConnections": 100001}}}, "at '/inputs/http/maxConnections'", "maximum"),
        ({"inputs": {"http": {"maxConnections": "4096"}}}, "at '/inputs/http/maxConnections'", "integer"),
        ({"inputs": {"http": {"tls": {"mode": "mtls"}}}}, "at '/inputs/http/tls/mode'", "must be one of"),
        ({"inputs": {"http": {"tls": {"requireClientCerts": True}}}}, "at '/inputs/http/tls'", "not allowed"),
        (
            {"inputs": {"grpc": {"address": "unix:///run/falco/falco.sock"}}},
            "at '/inputs/grpc/address'",
            "does not match pattern",
        ),
        # What the responder refuses: a port past 65535 (gRPC would wrap it), a journal past 1 TiB.
        (
            {"inputs": {"grpc": {"address": "falco:99999"}}},
            "at '/inputs/grpc/address'",
            "does not match pattern",
        ),
        ({"inputs": {"grpc": {"address": "falco:0"}}}, "at '/inputs/grpc/address'", "does not match pattern"),
        ({"journal": {"maxBytes": 2**40 + 1}}, "at '/journal/maxBytes'", "maximum"),
        (
            {"policies": [{"name": "p", "match": {"min_priorty": "warning"}}]},
            "at '/policies/0/match'",
            "not allowed",
        ),
        (
            {"policies": [{"name": "p", "actions": ["quarantine", "kill"]}]},
            "at '/policies/0/actions/1'",
            "one of",
        ),
        ({"policies": [{"match": {}}]}, "at '/policies/0'", "missing property 'name'"),
        ({"policies": [{"name": "p", "dryRun": True}]}, "at '/policies/0'", "'dryRun' not allowed"),
        ({"policies": [{"name": "p", "dry_run": "yes"}]}, "at '/policies/0/dry_run'", "want boolean"),
        ({"defaultActions": ["quarantine"]}, "at '/defaultActions/0'", "must be one of"),
        ({"resources": {"limits": {"memroy": "1Gi"}}}, "at '/resources/limits'", "'memroy' not allowed"),
        ({"resources": {"requests": None}}, "at '/resources'", "missing property 'requests'"),
        ({"quarantine": {"label": "not a label"}}, "at '/quarantine/label'", "does not match pattern"),
        (
            {"certManager": {"issuerRef": {"kind": "Vault"}}},
            "at '/certManager/issuerRef/kind'",
            "must be one of",
        ),
        (
            {"podDisruptionBudget": {"maxUnavailable": "half"}},
            "at '/podDisruptionBudget/maxUnavailable'",
            "pattern",
        ),
        ({"journal": {"persistence": {"size": "2 GB"}}}, "at '/journal/persistence/size'", "pattern"),
        ({"quarantine": {"isolate": "outbound"}}, "at '/quarantine/isolate'", "must be one of"),
        # What the responder refuses: no names at all, or an empty one (null is "any").
        (
            {"inputs": {"http": {"tls": {"allowedClientNames": []}}}},
            "at '/inputs/http/tls/allowedClientNames'",
            "minItems",
        ),
        (
            {"inputs": {"http": {"tls": {"allowedClientNames": ["falco", " "]}}}},
            "at '/inputs/http/tls/allowedClientNames/1'",
            "does not match pattern",
        ),
        (
            {"inputs": {"http": {"tls": {"allowedClientNames": "falco"}}}},
            "at '/inputs/http/tls/allowedClientNames'",
            "got string, want null or array",
        ),
        (
            {"egressPolicy": {"enabled": True, "apiServer": {"cidrs": ["172.18.0.2"]}}},
            "at '/egressPolicy/apiServer/cidrs/0'",
            "does not match pattern",
        ),
        (
            {"policies": [{"name": "p", "match": {"namespaces": ["ML Models"]}}]},
            "at '/policies/0/match/namespaces/0'",
            "does not match pattern",
        ),
    ],
)
def test_schema_rejects_bad_values_naming_the_path(
    chart: helm_python.Chart, values: dict[str, Any], where: str, what: str
) -> None:
    with pytest.raises(helm_python.HelmValuesError) as caught:
        chart.render(values, name=RELEASE, namespace=NAMESPACE)
    message = str(caught.value)
    assert where in message and what in message, message


@pytest.mark.parametrize(
    ("values", "namespace", "message"),
    [
        (
            {"enforcement": {"scope": "namespaced"}},
            NAMESPACE,
            "enforcement.namespaces: scope namespaced needs at least one namespace",
        ),
        (
            {"enforcement": {"scope": "namespaced", "namespaces": ["kube-system"]}},
            NAMESPACE,
            'enforcement.namespaces: "kube-system" is a protected namespace',
        ),
        ({"enforcement": {"namespaces": [NAMESPACE]}}, NAMESPACE, f'"{NAMESPACE}" is a protected namespace'),
        (
            {"inputs": {"http": {"tls": {"requireClientCert": False}}}},
            NAMESPACE,
            "inputs.http: no authentication",
        ),
        (
            {"inputs": {"http": {"allowUnauthenticated": True}}},
            NAMESPACE,
            "inputs.http.allowUnauthenticated: with inputs.http.tls.requireClientCert a request without a "
            "client certificate would be accepted",
        ),
        (
            {"inputs": {"http": {"tls": {"mode": "secret"}}}},
            NAMESPACE,
            "inputs.http.tls.secretName: mode secret",
        ),
        (
            {"inputs": {"http": {"requireSenderMatchesHostname": True}}},
            NAMESPACE,
            "inputs.http.requireSenderMatchesHostname: the chart issues one client certificate (falco)"
            " that every node holds",
        ),
        (
            {
                "inputs": {
                    "http": {
                        "requireSenderMatchesHostname": True,
                        "tls": {"requireClientCert": False},
                        "token": {"secretName": "t"},
                    }
                }
            },
            NAMESPACE,
            "inputs.http.requireSenderMatchesHostname: only a client certificate can name the node",
        ),
        (
            {"falco": {"namespace": "falco"}},
            "serving-guard",
            'a namespaced Issuer in "serving-guard" cannot sign Falco\'s client certificate in namespace'
            ' "falco"',
        ),
        ({"inputs": {"grpc": {"enabled": True}}}, NAMESPACE, "inputs.grpc.address: set host:port"),
        (
            {
                "inputs": {
                    "http": {"tls": {"mode": "secret", "secretName": "x"}},
                    "grpc": {"enabled": True, "address": "falco-grpc.falco.svc:5060"},
                }
            },
            NAMESPACE,
            "inputs.grpc.tls.secretName: Falco's gRPC over TCP requires mutual TLS",
        ),
        ({"inputs": {"http": {"enabled": False}}}, NAMESPACE, "enable inputs.http or inputs.grpc"),
        ({"slack": {"mode": "webhook"}}, NAMESPACE, "slack.secretName: mode webhook reads its credential"),
        ({"slack": {"mode": "bot", "secretName": "s"}}, NAMESPACE, "slack.defaultChannel: mode bot needs"),
        # Both crash-loop the responder at start (its config refuses them) after a successful install.
        (
            {"blockDestination": {"label": "serving-guard.io/quarantine"}},
            NAMESPACE,
            'blockDestination.label: "serving-guard.io/quarantine" is also quarantine.label',
        ),
        (
            {
                "policies": [
                    {"name": "shells", "match": {"rules": ["Shell in serving pod"]}, "actions": ["notify"]},
                    {"name": "shells", "match": {"min_priority": "critical"}, "actions": ["notify"]},
                ]
            },
            NAMESPACE,
            'policies: two policies are named "shells"',
        ),
        # Neither mutual TLS (mode disabled) nor a token nor allowUnauthenticated.
        ({"inputs": {"http": {"tls": {"mode": "disabled"}}}}, NAMESPACE, "inputs.http: no authentication"),
        # Removed values: said, not silently ignored (false, the old default, is taken: --reuse-values).
        (
            {"enforcement": {"allowPodDeletion": True}},
            NAMESPACE,
            "enforcement.allowPodDeletion: removed from the chart: no action of the responder deletes pods",
        ),
        # The chart's own labels and annotation: a selector that no longer selects, a roll that never comes.
        (
            {"podLabels": {"app.kubernetes.io/instance": "other"}},
            NAMESPACE,
            'podLabels: "app.kubernetes.io/instance" is one of the chart\'s own pod labels',
        ),
        (
            {"podLabels": {"app.kubernetes.io/name": "x"}},
            NAMESPACE,
            'podLabels: "app.kubernetes.io/name" is one of the chart\'s own pod labels',
        ),
        (
            {"podAnnotations": {"checksum/config": "pinned"}},
            NAMESPACE,
            'podAnnotations: "checksum/config" is the chart\'s own annotation',
        ),
        (
            {"serviceMonitor": {"enabled": True, "labels": {"app.kubernetes.io/part-of": "x"}}},
            NAMESPACE,
            'serviceMonitor.labels: "app.kubernetes.io/part-of" is one of the chart\'s own labels',
        ),
        # Values the chart would ignore, or objects that cannot work together.
        (
            {
                "inputs": {
                    "http": {"tls": {"mode": "secret", "secretName": "s", "extraDnsNames": ["a.example"]}}
                }
            },
            NAMESPACE,
            "inputs.http.tls.extraDnsNames: only the server certificate the chart requests",
        ),
        (
            {
                "inputs": {
                    "http": {
                        "tls": {"mode": "disabled", "extraDnsNames": ["a.example"]},
                        "token": {"secretName": "t"},
                    }
                }
            },
            NAMESPACE,
            "inputs.http.tls.extraDnsNames: only the server certificate the chart requests",
        ),
        (
            {"serviceMonitor": {"enabled": True}, "metrics": {"allowFrom": {"namespace": ""}}},
            NAMESPACE,
            "serviceMonitor.enabled: the responder's NetworkPolicy lets scrapers reach the metrics port only"
            " from metrics.allowFrom.namespace, which is empty",
        ),
        (
            {"egressPolicy": {"enabled": True}},
            NAMESPACE,
            "egressPolicy.apiServer.cidrs: with egressPolicy.enabled",
        ),
        # The responder refuses each at start (config.Policy, ingest.http.audit_token_source).
        (
            {"policies": [{"name": "shells", "actions": ["notify", "annotate", "quarantine"]}]},
            NAMESPACE,
            "policies[0] (shells).actions: quarantine already annotates the pod; use one of quarantine or"
            " annotate",
        ),
        (
            {
                "inputs": {
                    "http": {
                        "token": {"secretName": "sg-tokens", "key": "token"},
                        "auditToken": {"secretName": "sg-tokens", "key": "token"},
                    }
                }
            },
            NAMESPACE,
            'inputs.http.auditToken: Secret "sg-tokens" key "token" is also inputs.http.token\'s',
        ),
        # ingest.http.drill_token_source: a drill is told by a token no one else holds.
        (
            {
                "inputs": {
                    "http": {
                        "token": {"secretName": "sg-tokens", "key": "token"},
                        "drillToken": {"secretName": "sg-tokens", "key": "token"},
                    }
                }
            },
            NAMESPACE,
            'inputs.http.drillToken: Secret "sg-tokens" key "token" is also inputs.http.token\'s',
        ),
        (
            {
                "inputs": {
                    "http": {
                        "auditToken": {"secretName": "sg-tokens", "key": "readers"},
                        "drillToken": {"secretName": "sg-tokens", "key": "readers"},
                    }
                }
            },
            NAMESPACE,
            'inputs.http.drillToken: Secret "sg-tokens" key "readers" is also inputs.http.auditToken\'s',
        ),
    ],
)
def test_chart_refuses_unworkable_combinations(
    chart: helm_python.Chart, values: dict[str, Any], namespace: str, message: str
) -> None:
    with pytest.raises(helm_python.HelmRenderError) as caught:
        chart.render(values, name=RELEASE, namespace=namespace)
    assert message in str(caught.value), str(caught.value)


def test_values_that_add_to_the_charts_own_labels_still_render(chart: helm_python.Chart) -> None:
    values = {
        "podLabels": {"team": "security"},
        "podAnnotations": {"example.com/owner": "sec"},
        "serviceMonitor": {"enabled": True, "labels": {"release": "prometheus"}},
    }
    rendered = render(chart, Case("extra-labels", values))
    template = rendered.one("Deployment", RELEASE)["spec"]["template"]["metadata"]
    assert template["labels"]["team"] == "security"
    assert template["labels"]["app.kubernetes.io/instance"] == RELEASE
    assert set(template["annotations"]) == {"checksum/config", "example.com/owner"}
    # The tls names the chart would ignore render where they are used.
    names = render(chart, Case("extra-dns", {"inputs": {"http": {"tls": {"extraDnsNames": ["sg.example"]}}}}))
    assert "sg.example" in names.one("Certificate", f"{RELEASE}-server")["spec"]["dnsNames"]


def test_policy_namespaces_take_the_globs_the_responder_matches(chart: helm_python.Chart) -> None:
    # The responder matches policy namespaces with shell-style globs (config.example.yaml shows ml-*).
    globs = ["ml-*", "team-?", "[ab]-models", "[!x]-serving"]
    values = {"policies": [{"name": "p", "match": {"namespaces": globs}, "actions": ["notify"]}]}
    rendered = render(chart, Case("globs", values))
    config = load_config_text(rendered.config_text(), "config.yaml")
    assert list(config.policies[0].match.namespaces) == globs


def test_separate_namespace_works_without_falco_certificates(chart: helm_python.Chart) -> None:
    # The documented way out of the cross-namespace refusal: create Falco's client Secret yourself.
    values = {
        "falco": {"namespace": "falco"},
        "inputs": {"http": {"tls": {"falcoClientCertificate": {"enabled": False}}}},
    }
    files = chart.render(values, name=RELEASE, namespace="serving-guard")
    certificates = [
        doc["metadata"]["name"]
        for path, text in files.items()
        if path.endswith(".yaml")
        for doc in yaml.safe_load_all(text)
        if isinstance(doc, dict) and doc.get("kind") == "Certificate"
    ]
    assert sorted(certificates) == [f"{RELEASE}-ca", f"{RELEASE}-server"]


def test_the_two_tokens_may_share_a_secret_under_keys_of_their_own(chart: helm_python.Chart) -> None:
    tokens = {"token": {"secretName": "sg-tokens", "key": "send"}, "auditToken": {"secretName": "sg-tokens"}}
    rendered = render(chart, Case("two-keys", {"inputs": {"http": tokens}}))
    config = load_config_text(rendered.config_text(), "config.yaml")
    assert config.inputs.http.token is not None and config.inputs.http.audit_token is not None


def test_per_node_sender_binding_is_set_with_certificates_of_ones_own(chart: helm_python.Chart) -> None:
    """The README's per-node binding (inputs.http.require_sender_matches_hostname), settable through the
    chart with the user's own per-node client certificates (review-platform M6); off by default."""
    tls: dict[str, Any] = {
        "mode": "secret",
        "secretName": "sg-tls",
        "allowedClientNames": None,
        "falcoClientCertificate": {"enabled": False},
    }
    http: dict[str, Any] = {"requireSenderMatchesHostname": True, "tls": tls}
    # Refused where every alert would get 403: the default names admit only falco (no node's name),
    # and token senders name no node (review-session-47 L1).
    for refused, said in (
        ({"tls": {**tls, "allowedClientNames": ["falco"]}}, "admits the name falco"),
        ({"token": {"secretName": "sg-http-token"}}, "token senders"),
    ):
        with pytest.raises(helm_python.HelmRenderError, match=said):
            chart.render({"inputs": {"http": {**http, **refused}}}, name=RELEASE, namespace=NAMESPACE)
    rendered = render(chart, Case("per-node", {"inputs": {"http": http}}))
    config = yaml.safe_load(rendered.config_text())
    assert config["inputs"]["http"]["require_sender_matches_hostname"] is True
    default = yaml.safe_load(render(chart, Case("default", {})).config_text())
    assert "require_sender_matches_hostname" not in default["inputs"]["http"]
