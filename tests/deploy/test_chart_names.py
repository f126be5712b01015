"""The chart under other release names, namespaces and name overrides: every name one object gives
another (its ServiceAccount, the bindings' subjects and roles, the Service's and policies' selectors,
the volumes' ConfigMaps and Secrets, the certificate's DNS names, the admission policies' user, what
NOTES tells Falco) must point at an object the release renders, or at one it says comes from
elsewhere. The rest of the suite renders release `serving-guard` only, where a name built from the
release and one written out by hand happen to agree."""

from __future__ import annotations

from typing import Any

import helm_python
import pytest

from tests.deploy.deploy_support import Rendered, Values, _documents

# Published by Kubernetes in every namespace (the projected service-account token's CA).
KUBERNETES_CA = "kube-root-ca.crt"

# (release, namespace, values): the release name differs from the chart's, or the name is overridden.
NAMINGS: tuple[tuple[str, str, Values], ...] = (
    ("sg-prod", "falco", {}),
    (
        "sg-prod",
        "security",
        {
            "falco": {"namespace": "falco"},
            "certManager": {"issuerRef": {"name": "security-ca", "kind": "ClusterIssuer"}},
        },
    ),
    ("serving-guard", "falco", {"fullnameOverride": "guard"}),
    (
        "guard",
        "falco",
        {"nameOverride": "sg", "enforcement": {"scope": "namespaced", "namespaces": ["models"]}},
    ),
)


def _render(chart: helm_python.Chart, release: str, namespace: str, values: Values) -> list[dict[str, Any]]:
    files = chart.render(values, name=release, namespace=namespace)
    rendered = Rendered(case=None, files=files, manifests=tuple(_documents(files)))  # type: ignore[arg-type]
    return [*rendered.manifests, {"kind": "NOTES", "text": rendered.notes()}]


def _named(manifests: list[dict[str, Any]], kind: str) -> dict[tuple[str | None, str], dict[str, Any]]:
    return {
        (m["metadata"].get("namespace"), m["metadata"]["name"]): m for m in manifests if m["kind"] == kind
    }


def _selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    wanted = selector.get("matchLabels", selector if "matchExpressions" not in selector else {})
    return bool(wanted) and all(labels.get(key) == value for key, value in wanted.items())


@pytest.mark.parametrize(("release", "namespace", "values"), NAMINGS, ids=lambda v: str(v) if v else "-")
def test_every_name_an_object_gives_points_at_an_object_of_the_release(
    chart: helm_python.Chart, release: str, namespace: str, values: Values
) -> None:
    manifests = _render(chart, release, namespace, values)
    (deployment,) = _named(manifests, "Deployment").values()
    pod = deployment["spec"]["template"]
    pod_labels = pod["metadata"]["labels"]
    accounts = _named(manifests, "ServiceAccount")
    account = pod["spec"]["serviceAccountName"]
    assert (namespace, account) in accounts

    # RBAC: each binding binds that account to a role the release renders.
    roles = {**_named(manifests, "Role"), **_named(manifests, "ClusterRole")}
    bindings = [m for m in manifests if m["kind"] in ("RoleBinding", "ClusterRoleBinding")]
    assert bindings
    for binding in bindings:
        ref = binding["roleRef"]
        role_namespace = binding["metadata"].get("namespace") if ref["kind"] == "Role" else None
        assert (role_namespace, ref["name"]) in roles, binding["metadata"]["name"]
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": account, "namespace": namespace}]

    # What selects the responder's pod selects it.
    services = list(_named(manifests, "Service").values())
    assert services and all(_selects(s["spec"]["selector"], pod_labels) for s in services)
    for kind in ("PodDisruptionBudget", "NetworkPolicy"):
        own = [m for m in manifests if m["kind"] == kind and m["metadata"].get("namespace") == namespace]
        assert own and all(
            _selects(m["spec"].get("selector") or m["spec"]["podSelector"], pod_labels) for m in own
        )

    # Its volumes: a ConfigMap the release renders, or a Secret a Certificate of it issues or the
    # values name (the Slack and token Secrets are the user's).
    configmaps = _named(manifests, "ConfigMap")
    issued = {
        (c["metadata"].get("namespace"), c["spec"]["secretName"])
        for c in manifests
        if c["kind"] == "Certificate"
    }
    for volume in pod["spec"].get("volumes", []):
        sources = [volume] + [s for s in (volume.get("projected") or {}).get("sources", [])]
        for source in sources:
            if "configMap" in source and source["configMap"]["name"] != KUBERNETES_CA:
                assert (namespace, source["configMap"]["name"]) in configmaps, volume["name"]
            if "secret" in source:
                name = source["secret"]["secretName" if "secretName" in source["secret"] else "name"]
                assert (namespace, name) in issued, volume["name"]

    # The server certificate names the Service Falco posts to; NOTES tell Falco that same address.
    (service,) = [
        s for s in services if any(p.get("name") == "https" or p["port"] == 8443 for p in s["spec"]["ports"])
    ]
    host = f"{service['metadata']['name']}.{namespace}.svc"
    certificates = _named(manifests, "Certificate")
    server = certificates[(namespace, f"{service['metadata']['name']}-server")]
    assert host in server["spec"]["dnsNames"]
    notes = next(m["text"] for m in manifests if m["kind"] == "NOTES")
    assert f"https://{host}:8443/v1/alerts" in notes

    # The admission policies hold that account, by its user name.
    user = f"system:serviceaccount:{namespace}:{account}"
    for policy in (m for m in manifests if m["kind"] == "ValidatingAdmissionPolicy"):
        (condition,) = policy["spec"]["matchConditions"]
        assert condition["expression"] == f'request.userInfo.username == "{user}"'
    for binding in (m for m in manifests if m["kind"] == "ValidatingAdmissionPolicyBinding"):
        assert (None, binding["spec"]["policyName"]) in _named(manifests, "ValidatingAdmissionPolicy")


# Names a long release or namespace makes: X.509 caps a common name at 64 characters, and cert-manager
# refuses a Certificate past it (so TLS never comes up).
LONG_NAMINGS: tuple[tuple[str, str, Values], ...] = (
    ("sg-prod-europe-west1-security-responder-a", "falco", {}),
    (
        "serving-guard",
        "security-falco-runtime",
        {"fullnameOverride": "serving-guard-responder-production-eu-west1-a"},
    ),
    ("sg-responder-with-a-name-of-sixty-characters-for-the-ca-cert", "falco", {}),
)
GRPC_LONG = {
    "inputs": {
        "grpc": {
            "enabled": True,
            "address": "falco-grpc-outputs-service.falco-runtime-security.svc.cluster.local:5060",
        }
    }
}


@pytest.mark.parametrize(("release", "namespace", "values"), LONG_NAMINGS, ids=lambda v: str(v) if v else "-")
def test_no_certificate_asks_for_a_common_name_longer_than_x509_allows(
    chart: helm_python.Chart, release: str, namespace: str, values: Values
) -> None:
    manifests = _render(chart, release, namespace, {**values, **GRPC_LONG})
    certificates = _named(manifests, "Certificate")
    assert {name.rsplit("-", 1)[-1] for _, name in certificates} >= {"ca", "server", "client"}
    for (_, name), certificate in certificates.items():
        spec = certificate["spec"]
        assert len(spec.get("commonName", "")) <= 64, (name, spec.get("commonName"))
        # What TLS clients check is still there: the DNS names, whole.
        if name.endswith("-server"):
            assert spec["dnsNames"] and all(len(dns) <= 253 for dns in spec["dnsNames"])
    server = next(c for (_, n), c in certificates.items() if n.endswith("-server") and "grpc" not in n)
    fullname = server["metadata"]["name"].removesuffix("-server")
    assert f"{fullname}.{namespace}.svc" in server["spec"]["dnsNames"]
