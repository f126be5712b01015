"""Every rendered manifest validates with kubernetes-validate in strict mode (unknown fields are errors)
against Kubernetes 1.29 (the chart's kubeVersion floor), 1.30 (the admission policy's) and the newest
schema the package ships."""

from __future__ import annotations

import functools
import json
from typing import Any

import kubernetes_validate
import pytest

from tests.deploy.deploy_support import CASE_IDS, CASES, Case, Rendered

VERSIONS = ("1.29.0", "1.30.0", kubernetes_validate.latest_version())
# Kinds the chart renders only from a later Kubernetes on (it refuses them below: test_admission_policy).
SINCE = {
    ("admissionregistration.k8s.io/v1", "ValidatingAdmissionPolicy"): (1, 30),
    ("admissionregistration.k8s.io/v1", "ValidatingAdmissionPolicyBinding"): (1, 30),
}

# Custom resources have no schema in kubernetes-validate. They are checked against the fields their
# CRDs define (cert-manager.io/v1 and monitoring.coreos.com/v1), written out here from those CRDs.
CRD_FIELDS: dict[tuple[str, str], set[str]] = {
    ("cert-manager.io/v1", "Certificate"): {
        "additionalOutputFormats",
        "commonName",
        "dnsNames",
        "duration",
        "emailAddresses",
        "encodeUsagesInRequest",
        "ipAddresses",
        "isCA",
        "issuerRef",
        "keystores",
        "literalSubject",
        "nameConstraints",
        "otherNames",
        "privateKey",
        "renewBefore",
        "renewBeforePercentage",
        "revisionHistoryLimit",
        "secretName",
        "secretTemplate",
        "subject",
        "uris",
        "usages",
    },
    ("cert-manager.io/v1", "Issuer"): {"acme", "ca", "selfSigned", "vault", "venafi"},
    ("monitoring.coreos.com/v1", "ServiceMonitor"): {
        "attachMetadata",
        "bodySizeLimit",
        "endpoints",
        "jobLabel",
        "keepDroppedTargets",
        "labelLimit",
        "labelNameLengthLimit",
        "labelValueLengthLimit",
        "namespaceSelector",
        "podTargetLabels",
        "sampleLimit",
        "scrapeClass",
        "scrapeProtocols",
        "selector",
        "targetLabels",
        "targetLimit",
    },
    ("monitoring.coreos.com/v1", "PrometheusRule"): {"groups"},
}
# A PrometheusRule's groups and rules, as its CRD defines them.
RULE_GROUP_FIELDS = {
    "name",
    "interval",
    "labels",
    "limit",
    "partial_response_strategy",
    "query_offset",
    "rules",
}
RULE_FIELDS = {"alert", "record", "expr", "for", "keep_firing_for", "labels", "annotations"}
KEY_USAGES = {"server auth", "client auth", "digital signature", "key encipherment", "cert sign"}


def _check_custom_resource(manifest: dict[str, Any]) -> None:
    key = (manifest["apiVersion"], manifest["kind"])
    assert key in CRD_FIELDS, f"no schema and no CRD field list for {key}"
    assert set(manifest) == {"apiVersion", "kind", "metadata", "spec"}
    unknown = set(manifest["spec"]) - CRD_FIELDS[key]
    assert not unknown, f"{key}: fields its CRD does not define: {unknown}"
    spec = manifest["spec"]
    if manifest["kind"] == "Certificate":
        assert spec["secretName"] and set(spec["issuerRef"]) <= {"name", "kind", "group"}
        assert set(spec["privateKey"]) <= {"algorithm", "encoding", "rotationPolicy", "size"}
        assert set(spec.get("usages", [])) <= KEY_USAGES
    if manifest["kind"] == "ServiceMonitor":
        for endpoint in spec["endpoints"]:
            assert set(endpoint) <= {"port", "path", "scheme", "interval", "scrapeTimeout", "tlsConfig"}
    if manifest["kind"] == "PrometheusRule":
        for group in spec["groups"]:
            assert set(group) <= RULE_GROUP_FIELDS and group["name"] and group["rules"]
            for rule in group["rules"]:
                assert set(rule) <= RULE_FIELDS and rule["expr"] and ("alert" in rule) != ("record" in rule)
                assert all(
                    isinstance(v, str)
                    for v in {**rule.get("labels", {}), **rule.get("annotations", {})}.values()
                )


@functools.lru_cache(maxsize=1024)
def _strict_error(manifest_json: str, version: str) -> str | None:
    """The validation error, or None. Cached: most manifests are identical across value sets."""
    manifest = json.loads(manifest_json)
    since = SINCE.get((manifest["apiVersion"], manifest["kind"]))
    if since is not None and tuple(int(part) for part in version.split(".")[:2]) < since:
        return None
    try:
        kubernetes_validate.validate(manifest, version, strict=True)
    except kubernetes_validate.SchemaNotFoundError:
        _check_custom_resource(manifest)
    except kubernetes_validate.ValidationError as exc:
        path = ".".join(str(part) for part in exc.path)
        return f"{path}: {exc.message}"
    return None


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_manifests_validate_strictly(renders: dict[str, Rendered], case: Case, version: str) -> None:
    failures = []
    for manifest in renders[case.name].manifests:
        error = _strict_error(json.dumps(manifest, sort_keys=True), version)
        if error is not None:
            failures.append(f"{manifest['kind']}/{manifest['metadata']['name']}: {error}")
    assert failures == []


def test_strict_mode_catches_a_misspelt_field() -> None:
    # Guards the guard: strict validation must reject what the API server would drop silently.
    manifest = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "x", "namespace": "falco", "lables": {}},
        "data": {},
    }
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(manifest, VERSIONS[0], strict=True)
