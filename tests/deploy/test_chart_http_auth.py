"""Who may post alerts, as the chart sets it up: with mutual TLS only the client certificates named in
inputs.http.tls.allowedClientNames (by default the one the chart issues to Falco), since a CA shared
through a ClusterIssuer signs for anyone; without mutual TLS only a token, which Falco's http_output
cannot send (no headers): the notes then send alerts through Falcosidekick, and no Falco client
certificate is issued."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import helm_python
import pytest
import yaml

from responder.config import ServerTLS, load_config_text
from tests.deploy.deploy_support import (
    CHART_DIR,
    NAMESPACE,
    RELEASE,
    Case,
    InstallableChart,
    Rendered,
    Values,
    case_named,
    render,
)

VALUES = yaml.safe_load((CHART_DIR / "values.yaml").read_text(encoding="utf-8"))
CLUSTER_ISSUER = {"certManager": {"issuerRef": {"name": "security-ca", "kind": "ClusterIssuer"}}}
TOKEN_ONLY: dict[str, Values] = {
    "cert-manager-server-only": {
        "inputs": {"http": {"tls": {"requireClientCert": False}, "token": {"secretName": "sg-http-token"}}}
    },
    "secret-server-only": case_named("tls-secret-token").values,
    "plain-http": case_named("tls-disabled-token").values,
}
SIDEKICK_STEP = "1. Point Falco at it THROUGH FALCOSIDEKICK"


def _tls(rendered: Rendered) -> dict[str, Any] | None:
    """inputs.http.tls of the rendered config, as written (the responder's keys)."""
    config = yaml.safe_load(rendered.config_text())
    tls: dict[str, Any] | None = config["inputs"]["http"].get("tls")
    return tls


def _certificates(rendered: Rendered) -> dict[str, dict[str, Any]]:
    return {c["metadata"]["name"]: c for c in rendered.of_kind("Certificate")}


# -- 1. client certificates admitted by name --------------------------------------------------------


def test_the_default_names_are_those_of_the_client_certificates_the_chart_issues(
    renders: dict[str, Rendered],
) -> None:
    """The chart's own senders pass: every client certificate it issues for the alert input (Falco's;
    the gRPC client certificate is the responder's own, for Falco's server) carries a default name."""
    rendered = renders["grpc-cert-manager"]  # every certificate the chart can issue
    own_client = f"{RELEASE}-grpc-client"
    senders = {
        name: c["spec"]
        for name, c in _certificates(rendered).items()
        if "client auth" in c["spec"].get("usages", []) and name != own_client
    }
    assert set(senders) == {f"{RELEASE}-falco-client"}, (
        "a new client certificate needs its name in the default"
    )
    names = {spec["commonName"] for spec in senders.values()} | {
        dns for spec in senders.values() for dns in spec.get("dnsNames", [])
    }
    assert VALUES["inputs"]["http"]["tls"]["allowedClientNames"] == sorted(names) == ["falco"]


@pytest.mark.parametrize("case", ["defaults", "separate-namespace", "tls-secret-mtls", "production"])
def test_with_mutual_tls_the_config_admits_only_the_named_certificates(
    renders: dict[str, Rendered], case: str
) -> None:
    rendered = renders[case]
    tls = _tls(rendered)
    assert tls is not None and tls["client_ca_file"] == "/var/run/secrets/serving-guard/tls/ca.crt"
    assert tls["allowed_client_names"] == ["falco"]
    # The responder takes the key (responder/config.py ServerTLS.allowed_client_names).
    config = load_config_text(rendered.config_text())
    assert config.inputs.http.tls is not None
    assert list(config.inputs.http.tls.allowed_client_names or ()) == ["falco"]


def test_names_given_reach_the_config_and_null_admits_any(chart: helm_python.Chart) -> None:
    names = ["falco", "falcosidekick.falco.svc"]
    given = render(chart, Case("names", {"inputs": {"http": {"tls": {"allowedClientNames": names}}}}))
    assert _tls(given) == {
        "cert_file": "/var/run/secrets/serving-guard/tls/tls.crt",
        "key_file": "/var/run/secrets/serving-guard/tls/tls.key",
        "client_ca_file": "/var/run/secrets/serving-guard/tls/ca.crt",
        "allowed_client_names": names,
    }
    assert "named falco, falcosidekick.falco.svc" in given.notes()
    anyone = render(chart, Case("any", {"inputs": {"http": {"tls": {"allowedClientNames": None}}}}))
    tls = _tls(anyone)
    assert tls is not None and "allowed_client_names" not in tls and tls["client_ca_file"]
    assert "admits any client certificate its CA signed" in anyone.notes()
    assert load_config_text(anyone.config_text()).inputs.http.tls == ServerTLS(
        cert_file=tls["cert_file"], key_file=tls["key_file"], client_ca_file=tls["client_ca_file"]
    )


@pytest.mark.parametrize("case", sorted(TOKEN_ONLY))
def test_without_mutual_tls_no_names_are_rendered(chart: helm_python.Chart, case: str) -> None:
    # The responder refuses allowed_client_names without client_ca_file: nothing to name then.
    rendered = render(chart, Case(case, TOKEN_ONLY[case]))
    tls = _tls(rendered)
    assert tls is None or not {"client_ca_file", "allowed_client_names"} & set(tls)
    load_config_text(rendered.config_text())


def test_a_cluster_issuer_is_warned_of_and_names_what_keeps_its_other_holders_out(
    chart: helm_python.Chart, renders: dict[str, Rendered]
) -> None:
    notes = renders["separate-namespace"].notes()
    assert "WARNING: CLIENT CERTIFICATES COME FROM THE CLUSTERISSUER security-ca" in notes
    assert "inputs.http.tls.allowedClientNames (falco) is what keeps the other holders out" in notes
    # Said before the steps, where it cannot be missed.
    assert notes.index("CLUSTERISSUER") < notes.index("1. Point Falco at it")
    anyone = render(
        chart,
        Case(
            "cluster-issuer-any",
            {**CLUSTER_ISSUER, "inputs": {"http": {"tls": {"allowedClientNames": None}}}},
        ),
    ).notes()
    assert "allowedClientNames is null: ANY certificate of that issuer can post alerts" in anyone
    # A namespaced issuer (the bootstrapped CA, or one of yours) signs for its namespace only.
    assert "CLUSTERISSUER" not in renders["defaults"].notes()
    namespaced = {"certManager": {"issuerRef": {"name": "my-ca", "kind": "Issuer"}}}
    assert "CLUSTERISSUER" not in render(chart, Case("issuer", namespaced)).notes()
    # No client certificates asked for: nothing to warn of.
    server_only = {**CLUSTER_ISSUER, **TOKEN_ONLY["cert-manager-server-only"]}
    assert "CLUSTERISSUER" not in render(chart, Case("cluster-issuer-token", server_only)).notes()


def test_an_earlier_releases_values_without_the_key_admit_any_certificate_as_before(tmp_path: Path) -> None:
    """`helm upgrade --reuse-values` renders with the installed release's values, where the key is
    absent: the config then says nothing, which the responder reads as any certificate (as before)."""
    chart_dir = tmp_path / "serving-guard"
    shutil.copytree(CHART_DIR, chart_dir)  # follows the rules-pack symlink
    values = yaml.safe_load((chart_dir / "values.yaml").read_text(encoding="utf-8"))
    del values["inputs"]["http"]["tls"]["allowedClientNames"]
    (chart_dir / "values.yaml").write_text(yaml.safe_dump(values), encoding="utf-8")
    with InstallableChart.load(chart_dir) as earlier:
        rendered = render(earlier, Case("reused", {}))
    tls = _tls(rendered)
    assert tls is not None and tls["client_ca_file"] and "allowed_client_names" not in tls


# -- 2. token only: through Falcosidekick -----------------------------------------------------------


@pytest.mark.parametrize("case", sorted(TOKEN_ONLY))
def test_token_only_notes_send_alerts_through_falcosidekick(chart: helm_python.Chart, case: str) -> None:
    rendered = render(chart, Case(case, TOKEN_ONLY[case]))
    notes = rendered.notes()
    assert SIDEKICK_STEP in notes
    # Not Falco's http_output to here: it cannot send the token, and its alerts would be refused
    # (401). Its URL emptied, which alone makes the Falco chart send to Falcosidekick instead.
    scheme = "http" if case == "plain-http" else "https"
    url = f"{scheme}://{RELEASE}.{NAMESPACE}.svc:8443/v1/alerts"
    assert f'falco.http_output.url: "{url}"' not in notes
    assert 'falco.http_output.url: "" (empty: only then does the Falco chart send to Falcosidekick' in notes
    assert 'falco.http_output.mtls: false, certs.existingClientSecret: ""' in notes
    assert f'falcosidekick.config.webhook.address: "{url}"' in notes
    assert "WEBHOOK_CUSTOMHEADERS" in notes and '"Authorization:Bearer <token>"' in notes
    assert "the token of Secret sg-http-token" in notes
    assert ("falcosidekick.config.tlsclient.cacertfile" in notes) == (scheme == "https")
    # The ingress rule must let Falcosidekick in: said when it does not.
    allowed = bool(TOKEN_ONLY[case].get("falcosidekick", {}).get("allowIngress"))
    assert ("WARNING: falcosidekick.allowIngress is false" in notes) == (not allowed)


@pytest.mark.parametrize("case", sorted(TOKEN_ONLY))
def test_token_only_issues_no_falco_client_certificate(chart: helm_python.Chart, case: str) -> None:
    certificates = _certificates(render(chart, Case(case, TOKEN_ONLY[case])))
    assert f"{RELEASE}-falco-client" not in certificates
    if TOKEN_ONLY[case]["inputs"]["http"]["tls"].get("mode", "certManager") == "certManager":
        assert f"{RELEASE}-server" in certificates  # the server still gets its certificate


def test_mutual_tls_with_a_token_keeps_falcos_direct_path(chart: helm_python.Chart) -> None:
    values = {"inputs": {"http": {"token": {"secretName": "sg-http-token"}}}}
    rendered = render(chart, Case("mtls-and-token", values))
    notes = rendered.notes()
    assert SIDEKICK_STEP not in notes
    assert f'falco.http_output.url: "https://{RELEASE}.{NAMESPACE}.svc:8443/v1/alerts"' in notes
    assert "certs.existingClientSecret: serving-guard-falco-client" in notes
    assert f"{RELEASE}-falco-client" in _certificates(rendered)


def test_unauthenticated_input_tells_falco_to_send_without_a_certificate(chart: helm_python.Chart) -> None:
    values = {"inputs": {"http": {"tls": {"requireClientCert": False}, "allowUnauthenticated": True}}}
    rendered = render(chart, Case("unauthenticated", values))
    notes = rendered.notes()
    assert SIDEKICK_STEP not in notes and "certs.existingClientSecret" not in notes
    assert "falco.http_output.mtls: false" in notes
    assert f"falco.http_output.ca_cert: the ca.crt of Secret {RELEASE}-tls" in notes
    assert f"{RELEASE}-falco-client" not in _certificates(rendered)
