"""inputs.grpc.address: the schema takes the hosts the responder takes (config._grpc_address: a host name
of labels that neither start nor end with a hyphen, an IPv4 address, or an IPv6 address in brackets), and
Falco's gRPC server certificate names an IP host in ipAddresses, which is what a TLS client checks an
address against."""

from __future__ import annotations

import helm_python
import pytest
import yaml

from responder.config import load_config_text
from responder.errors import UserError
from tests.deploy.deploy_support import NAMESPACE, RELEASE, Case, render

SERVER_CERTIFICATE = f"{RELEASE}-falco-grpc-server"
ADDRESSES = [
    "falco-grpc.falco.svc:5060",
    "falco-grpc.falco.svc.:5060",
    "a:1",
    "10.96.0.50:5060",
    "999.1.1.1:5060",  # a host name to both: digits are labels too
    "[fd00::1]:5060",
    "[::ffff:10.0.0.1]:5060",
    "a..b:5060",
    "a-.b:5060",
    "-a.b:5060",
    "[1.2.3.4]:5060",
    "[:::]:5060",
    "fd00::1:5060",
    "falco:65536",
]


def _grpc(address: str) -> dict[str, object]:
    return {"inputs": {"grpc": {"enabled": True, "address": address}}}


def _responder_takes(address: str, config_text: str) -> bool:
    config = yaml.safe_load(config_text)
    config["inputs"]["grpc"]["address"] = address
    try:
        load_config_text(yaml.safe_dump(config), name="<grpc address>")
    except UserError:
        return False
    return True


@pytest.mark.parametrize("address", ADDRESSES)
def test_the_schema_takes_the_addresses_the_responder_takes(chart: helm_python.Chart, address: str) -> None:
    accepted = render(chart, Case("grpc", _grpc("falco-grpc.falco.svc:5060"))).config_text()
    try:
        rendered = render(chart, Case("grpc", _grpc(address)))
    except helm_python.HelmValuesError as refused:
        assert "at '/inputs/grpc/address'" in str(refused)
        assert not _responder_takes(address, accepted), f"{address}: the responder takes it, the schema not"
        return
    assert _responder_takes(address, rendered.config_text()), (
        f"{address}: the schema takes it, not the responder"
    )


@pytest.mark.parametrize(
    ("address", "name"),
    [("10.96.0.50:5060", "10.96.0.50"), ("[fd00::1]:5060", "fd00::1")],
)
def test_an_ip_host_is_named_in_ip_addresses(chart: helm_python.Chart, address: str, name: str) -> None:
    rendered = render(chart, Case("grpc-ip", _grpc(address)))
    spec = rendered.one("Certificate", SERVER_CERTIFICATE)["spec"]
    assert spec["ipAddresses"] == [name]
    assert "dnsNames" not in spec and "commonName" not in spec
    config = load_config_text(rendered.config_text())
    assert config.inputs.grpc.tls is not None and config.inputs.grpc.tls.server_name == name


def test_a_host_name_is_named_in_dns_names(chart: helm_python.Chart) -> None:
    rendered = render(chart, Case("grpc-name", _grpc("falco-grpc.falco.svc:5060")))
    spec = rendered.one("Certificate", SERVER_CERTIFICATE)["spec"]
    assert spec["dnsNames"] == ["falco-grpc.falco.svc"] and spec["commonName"] == "falco-grpc.falco.svc"
    assert "ipAddresses" not in spec


def test_a_server_name_over_an_ip_host_is_named_in_dns_names(chart: helm_python.Chart) -> None:
    values = {"inputs": {"grpc": {"enabled": True, "address": "10.96.0.50:5060", "serverName": "falco-grpc"}}}
    spec = render(chart, Case("grpc-ip-named", values)).one("Certificate", SERVER_CERTIFICATE)["spec"]
    assert spec["dnsNames"] == ["falco-grpc"] and "ipAddresses" not in spec


def test_a_host_past_253_characters_is_refused(chart: helm_python.Chart) -> None:
    host = ".".join(["a" * 63] * 3 + ["a" * 62])  # 254 characters: within the address's maxLength
    with pytest.raises(helm_python.HelmRenderError, match="longer than a DNS name's 253 characters"):
        chart.render(_grpc(f"{host}:1"), name=RELEASE, namespace=NAMESPACE)
