"""deploy/falco-values.yaml and the README's snippets agree with what the chart renders: the URL, the
certificate Secret and its file names, the rules ConfigMap, and the gRPC alternative."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import helm_python
import pytest
import yaml

from responder.config import load_config_text
from responder.rulespack.check import check_files
from tests.deploy.deploy_support import DEPLOY, NAMESPACE, RELEASE, REPO, RULES_PACK, Case, Rendered, render

FALCO_VALUES = yaml.safe_load((DEPLOY / "falco-values.yaml").read_text(encoding="utf-8"))
README = (DEPLOY / "README.md").read_text(encoding="utf-8")
RULES_README = (REPO / "rules" / "README.md").read_text(encoding="utf-8")
# Where the Falco chart mounts customRules.
CUSTOM_RULES_DIR = "/etc/falco/rules.d"
# What cert-manager writes into a certificate's Secret.
CERT_MANAGER_KEYS = {"tls.crt", "tls.key", "ca.crt"}
# Where the Falco chart mounts certs.existingClientSecret and certs.existingSecret.
FALCO_CLIENT_CERTS = PurePosixPath("/etc/falco/certs/client")
FALCO_SERVER_CERTS = PurePosixPath("/etc/falco/certs")


def _snippet(marker: str) -> dict[str, Any]:
    match = re.search(rf"<!-- {marker} -->\s*```yaml\n(.*?)```", README, re.S)
    assert match, f"README.md has no yaml block after <!-- {marker} -->"
    snippet = yaml.safe_load(textwrap.dedent(match.group(1)))  # blocks inside list items are indented
    assert isinstance(snippet, dict)
    return snippet


def test_falco_uses_modern_ebpf_and_json() -> None:
    assert FALCO_VALUES["driver"]["kind"] == "modern_ebpf"
    assert FALCO_VALUES["falco"]["json_output"] is True
    assert FALCO_VALUES["falco"]["json_include_output_property"] is True
    # Without output_fields an alert names no pod: every alert would be withheld.
    assert FALCO_VALUES["falco"]["json_include_output_fields_property"] is True


def _layered(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """Helm's merge of two -f values files: maps merge key by key, the later file's values win."""
    merged = dict(base)
    for key, value in over.items():
        below = merged.get(key)
        merged[key] = _layered(below, value) if isinstance(below, dict) and isinstance(value, dict) else value
    return merged


def test_the_falcosidekick_snippet_layered_over_falco_values_sends_through_falcosidekick() -> None:
    """The Falco chart points http_output at Falcosidekick only while http_output.url is empty: a
    snippet that left falco-values.yaml's URL in place kept Falco posting straight to the responder,
    which refuses it without a token (401), unseen."""
    values = _layered(FALCO_VALUES, _snippet("falco-values-sidekick"))
    assert values["falcosidekick"]["enabled"] is True
    assert values["falco"]["http_output"]["url"] == ""
    assert values["falco"]["http_output"]["mtls"] is False and values["certs"]["existingClientSecret"] == ""
    # One line of the token Secret: during a rotation it holds two, and a header with a newline is
    # refused by Go's HTTP client (every alert then fails in Falcosidekick).
    assert "base64 -d | tail -n 1)" in README


def test_http_output_points_at_the_responder_with_mutual_tls(renders: dict[str, Rendered]) -> None:
    rendered = renders["defaults"]
    output = FALCO_VALUES["falco"]["http_output"]
    assert output["enabled"] is True and output["mtls"] is True and output["insecure"] is False
    url = urlsplit(output["url"])
    assert url.scheme == "https" and url.path == "/v1/alerts"
    service = rendered.one("Service", RELEASE)
    assert url.hostname == f"{service['metadata']['name']}.{service['metadata']['namespace']}.svc"
    assert url.port == next(p["port"] for p in service["spec"]["ports"] if p["name"] == "alerts")
    # Falco verifies the server name against the certificate the chart requests.
    server = rendered.one("Certificate", f"{RELEASE}-server")
    assert url.hostname in server["spec"]["dnsNames"]


def test_client_certificate_comes_from_the_secret_the_chart_issues(renders: dict[str, Rendered]) -> None:
    client = renders["defaults"].one("Certificate", f"{RELEASE}-falco-client")
    assert client["metadata"]["namespace"] == NAMESPACE
    assert FALCO_VALUES["certs"]["existingClientSecret"] == client["spec"]["secretName"]
    output = FALCO_VALUES["falco"]["http_output"]
    for key in ("client_cert", "client_key", "ca_cert"):
        path = PurePosixPath(output[key])
        assert path.parent == FALCO_CLIENT_CERTS and path.name in CERT_MANAGER_KEYS, key
    assert {
        PurePosixPath(output[k]).name for k in ("client_cert", "client_key", "ca_cert")
    } == CERT_MANAGER_KEYS


def test_falco_mounts_the_rules_configmap_and_loads_it(renders: dict[str, Rendered]) -> None:
    configmap = renders["defaults"].one("ConfigMap", "serving-guard-rules")
    (volume,) = [v for v in FALCO_VALUES["mounts"]["volumes"] if v["name"] == "serving-guard-rules"]
    assert volume["configMap"]["name"] == configmap["metadata"]["name"]
    (mount,) = [m for m in FALCO_VALUES["mounts"]["volumeMounts"] if m["name"] == volume["name"]]
    directory = mount["mountPath"]
    # rules.d belongs to the Falco chart's customRules; a directory of our own avoids a clash.
    assert directory != "/etc/falco/rules.d" and mount["readOnly"] is True
    rules_files = FALCO_VALUES["falco"]["rules_files"]
    assert directory in rules_files
    assert rules_files.index(directory) > rules_files.index("/etc/falco/falco_rules.yaml")
    # Falco >= 0.41 loads only .yaml/.yml files from a rules directory.
    assert all(key.endswith((".yaml", ".yml")) for key in configmap["data"])


def test_falco_values_work_with_chart_9() -> None:
    # Chart 9 (Falco 0.44) fails on any gRPC key; the hostname must stay the node name.
    assert not {"grpc", "grpc_output"} & set(FALCO_VALUES["falco"])
    env = FALCO_VALUES.get("extra", {}).get("env", [])
    assert not [e for e in env if e.get("name") == "FALCO_HOSTNAME"], (
        "the Falco chart sets it from spec.nodeName"
    )


def test_readme_example_values_render_and_load(chart: helm_python.Chart) -> None:
    rendered = render(chart, Case("readme-example", _snippet("chart-values-example")))
    config = load_config_text(rendered.config_text())
    assert config.slack.mode.value == "bot"
    assert [r["metadata"]["namespace"] for r in rendered.of_kind("Role")] == ["models"]


def test_readme_grpc_alternative_matches_the_chart(chart: helm_python.Chart) -> None:
    falco = _snippet("falco-values-grpc")
    chart_values = _snippet("chart-values-grpc")
    rendered = render(chart, Case("readme-grpc", chart_values))
    config = load_config_text(rendered.config_text())
    grpc = config.inputs.grpc
    assert grpc.enabled and not config.inputs.http.enabled
    # The responder dials the port Falco binds, over TCP (Falco then requires mutual TLS).
    bind = falco["falco"]["grpc"]["bind_address"]
    assert not bind.startswith("unix:") and bind.rsplit(":", 1)[1] == grpc.address.rsplit(":", 1)[1]
    assert falco["falco"]["grpc_output"]["enabled"] is True
    # Falco's server certificate is the one the chart issues, with cert-manager's file names.
    server = rendered.one("Certificate", f"{RELEASE}-falco-grpc-server")
    assert falco["certs"]["existingSecret"] == server["spec"]["secretName"]
    assert grpc.tls is not None and grpc.tls.server_name in server["spec"]["dnsNames"]
    for key in ("private_key", "cert_chain", "root_certs"):
        path = PurePosixPath(falco["falco"]["grpc"][key])
        assert path.parent == FALCO_SERVER_CERTS and path.name in CERT_MANAGER_KEYS, key


@pytest.mark.parametrize("marker", ["chart-values-example", "chart-values-grpc"])
def test_readme_values_pass_the_schema(chart: helm_python.Chart, marker: str) -> None:
    chart.validate_schema(chart.merge_values(_snippet(marker)))


def _tuning_overrides() -> list[dict[str, Any]]:
    """Every override rules/README.md's "Tuning" section gives, as one file of a user's overrides."""
    section = RULES_README.split("## Tuning", 1)[1].split("\n## ", 1)[0]
    items: list[dict[str, Any]] = []
    for block in re.findall(r"```yaml\n(.*?)```", section, re.S):
        items += yaml.safe_load(block)
    assert len(items) >= 10, "the Tuning section lost its examples"
    return items


def test_the_pack_loads_before_rules_d_where_custom_rules_land() -> None:
    # Overrides of the pack's lists and macros go in the Falco chart's customRules (/etc/falco/rules.d):
    # Falco refuses an override that loads before what it overrides.
    rules_files = FALCO_VALUES["falco"]["rules_files"]
    (mount,) = [m for m in FALCO_VALUES["mounts"]["volumeMounts"] if m["name"] == "serving-guard-rules"]
    assert rules_files.index(mount["mountPath"]) < rules_files.index(CUSTOM_RULES_DIR)


def test_overrides_in_custom_rules_load_after_the_pack_and_pass_rules_check(tmp_path: Path) -> None:
    overrides = tmp_path / "zz-serving-guard-overrides.yaml"
    overrides.write_text(yaml.safe_dump(_tuning_overrides(), sort_keys=False), encoding="utf-8")
    (mount,) = [m for m in FALCO_VALUES["mounts"]["volumeMounts"] if m["name"] == "serving-guard-rules"]
    # Falco's load order from falco-values.yaml, with the files that land in each directory (Falco's
    # own rules files are not part of this repository and are left out).
    in_directory = {mount["mountPath"]: str(RULES_PACK), CUSTOM_RULES_DIR: str(overrides)}
    order = [in_directory[entry] for entry in FALCO_VALUES["falco"]["rules_files"] if entry in in_directory]
    report = check_files(order, None, require_sysdig=False, run_falco=False)
    assert [problem.format() for problem in report.errors] == []
    # Guards the guard: the other order is the failure customRules met before.
    reversed_report = check_files(order[::-1], None, require_sysdig=False, run_falco=False)
    assert any("not defined earlier" in problem.format() for problem in reversed_report.errors)


# What the images of README's "Verify that quarantine works" carry, of the tools it runs in them
# (nginx:1.27 is Debian's bookworm-slim, whose bash is essential; busybox's applets include nc and wc).
IMAGE_TOOLS = {"nginx:1.27": {"sh", "bash", "curl"}, "busybox:1.36": {"sh", "wget", "sleep", "nc", "wc"}}


def test_readme_verify_commands_run_tools_the_pods_have() -> None:
    """A check whose tool is missing in the pod fails however the network behaves; one that turns any
    failure into "blocked" (`|| echo`) then reports a quarantine that is not there."""
    section = README.split("## Verify that quarantine works", 1)[1].split("\n## ", 1)[0]
    found = re.search(r"```sh\n(.*?)```", section, re.S)
    assert found, "the section has no sh block"
    script = found.group(1)
    images = dict(re.findall(r"kubectl -n \S+ run (\S+) --image=(\S+)", script))
    assert set(images.values()) <= set(IMAGE_TOOLS), images
    # The stand-in pods the script runs (not the responder's Deployment).
    execs = [
        (pod, tool)
        for pod, tool in re.findall(r"kubectl -n \S+ exec (\S+) -- (\S+)", script)
        if pod in images
    ]
    assert len(execs) >= 4
    for pod, tool in execs:
        assert tool in IMAGE_TOOLS[images[pod]], f"{tool} is not in {images[pod]} (pod {pod})"
    assert "|| echo" not in script
    # Blocked egress is a timeout (curl's exit 28); anything else is said, loudly.
    assert re.search(r"curl [^\n]*--max-time 3", script)
    assert '28) echo "egress blocked"' in script and "CHECK FAILED" in script
