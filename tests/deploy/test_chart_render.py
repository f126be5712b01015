"""The chart renders for every value set, lints clean, and renders a config the responder accepts."""

from __future__ import annotations

import fnmatch
import json
import os
import shutil
from pathlib import Path, PurePosixPath
from typing import Any

import helm_python
import pytest
import yaml

from responder.actions.netpol import deny_all_spec, spec_is_deny_all
from responder.cli import COMMANDS
from responder.config import (
    PEER_SHARE,
    ActionName,
    BlockDestination,
    Config,
    HttpInput,
    Isolation,
    load_config_text,
)
from responder.memory_budget import MIB, connections_memory_warning
from responder.policy_review import unreachable_policies
from tests.deploy.deploy_support import (
    CASE_IDS,
    CASES,
    CHART_DIR,
    DIGEST,
    NAMESPACE,
    RELEASE,
    RULES_PACK,
    TEST_IMAGE,
    Case,
    InstallableChart,
    Rendered,
    case_named,
    render,
    with_test_image,
)

CLUSTER_SCOPED = {
    "ClusterRole",
    "ClusterRoleBinding",
    "Namespace",
    "ClusterIssuer",
    "ValidatingAdmissionPolicy",
    "ValidatingAdmissionPolicyBinding",
}


def _config(rendered: Rendered) -> Config:
    return load_config_text(rendered.config_text(), name=f"<chart {rendered.case.name}>")


def _deployment(rendered: Rendered) -> dict[str, Any]:
    deployment: dict[str, Any] = rendered.one("Deployment", RELEASE)
    return deployment


def _container(rendered: Rendered) -> dict[str, Any]:
    containers = _deployment(rendered)["spec"]["template"]["spec"]["containers"]
    assert [c["name"] for c in containers] == ["responder"]
    container: dict[str, Any] = containers[0]
    return container


def _files_provided(rendered: Rendered) -> dict[str, dict[str, Any]]:
    """Every file path the responder container sees from a volume item, mapped to its mount."""
    pod = _deployment(rendered)["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    provided: dict[str, dict[str, Any]] = {}
    for mount in _container(rendered)["volumeMounts"]:
        volume = volumes[mount["name"]]
        source = volume.get("secret") or volume.get("configMap")
        if source is None:
            continue
        for item in source.get("items", []):
            provided[str(PurePosixPath(mount["mountPath"]) / item["path"])] = volume
    return provided


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_every_manifest_is_named_and_namespaced(renders: dict[str, Rendered], case: Case) -> None:
    rendered = renders[case.name]
    assert rendered.manifests, "nothing rendered"
    seen = set()
    for manifest in rendered.manifests:
        meta = manifest["metadata"]
        key = (manifest["kind"], meta.get("namespace"), meta["name"])
        assert key not in seen, f"{key} rendered twice"
        seen.add(key)
        if manifest["kind"] in CLUSTER_SCOPED:
            assert "namespace" not in meta, f"{key}: cluster-scoped object with a namespace"
        else:
            # Explicit namespaces: `kubectl apply` of the rendered YAML must not land in "default".
            assert meta.get("namespace"), f"{key}: no metadata.namespace"
            assert meta["namespace"] != "default"
        assert meta["labels"]["app.kubernetes.io/part-of"] == "serving-guard"


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_rendered_config_loads_in_the_responder(renders: dict[str, Rendered], case: Case) -> None:
    rendered = renders[case.name]
    config = _config(rendered)
    assert config.journal.path == "/var/lib/serving-guard/journal.db"
    assert config.server.metrics_listen == "0.0.0.0:9090"
    # The release's own namespace and Falco's are never quarantined, whatever the values say.
    assert case.namespace in config.guardrails.protected_namespaces
    falco_ns = case.values.get("falco", {}).get("namespace") or case.namespace
    assert falco_ns in config.guardrails.protected_namespaces


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_every_file_the_config_names_is_mounted(renders: dict[str, Rendered], case: Case) -> None:
    rendered = renders[case.name]
    config = _config(rendered)
    provided = _files_provided(rendered)
    wanted = []
    http, grpc = config.inputs.http, config.inputs.grpc
    if http.enabled and http.tls is not None:
        wanted += [http.tls.cert_file, http.tls.key_file]
        if http.tls.client_ca_file:
            wanted.append(http.tls.client_ca_file)
    for token in (http.token, http.audit_token):
        if http.enabled and token is not None:
            assert token.file is not None, "secrets come from files, never env in the chart"
            wanted.append(token.file)
    if grpc.enabled:
        assert grpc.tls is not None
        wanted += [grpc.tls.ca_file, grpc.tls.cert_file, grpc.tls.key_file]
    for ref in (config.slack.token, config.slack.webhook_url):
        if ref is not None:
            assert ref.file is not None
            wanted.append(ref.file)
    wanted.append("/etc/serving-guard/config.yaml")
    missing = [path for path in wanted if path not in provided]
    assert not missing, f"config names files no volume provides: {missing}"
    # Secret material is mounted from Secrets, the config from the ConfigMap, nothing else.
    for path in wanted:
        kind = "configMap" if path.endswith("config.yaml") else "secret"
        assert kind in provided[path], f"{path} should come from a {kind}"


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_the_image_runs_the_config_the_chart_mounts(renders: dict[str, Rendered], case: Case) -> None:
    container = _container(renders[case.name])
    assert container["args"] == ["serve", "--config", "/etc/serving-guard/config.yaml"]
    assert "command" not in container, "the image's ENTRYPOINT (serving-guard) is kept"
    assert any(command.words == ("serve",) for command in COMMANDS)


def test_slack_secrets_never_enter_the_configmap(renders: dict[str, Rendered]) -> None:
    bot = _config(renders["slack-bot"]).slack
    assert bot.token is not None and bot.token.file == "/var/run/secrets/serving-guard/slack/token"
    assert bot.default_channel == "#sec-alerts"
    hook = _config(renders["slack-webhook"]).slack
    assert (
        hook.webhook_url is not None
        and hook.webhook_url.file == "/var/run/secrets/serving-guard/slack/webhook-url"
    )
    # The user's key name is mapped onto the file name the config reads.
    volume = next(
        v
        for v in _deployment(renders["slack-webhook"])["spec"]["template"]["spec"]["volumes"]
        if v["name"] == "slack"
    )
    assert volume["secret"] == {
        "secretName": "slack-hook",
        "defaultMode": 0o440,
        "items": [{"key": "url", "path": "webhook-url"}],
    }


def test_tls_modes_reach_the_config(renders: dict[str, Rendered]) -> None:
    mtls = _config(renders["defaults"]).inputs.http
    assert mtls.tls is not None and mtls.tls.client_ca_file == "/var/run/secrets/serving-guard/tls/ca.crt"
    assert mtls.token is None and not mtls.allow_unauthenticated
    server_only = _config(renders["tls-secret-token"]).inputs.http
    assert server_only.tls is not None and server_only.tls.client_ca_file is None
    assert server_only.token is not None
    plain = _config(renders["tls-disabled-token"]).inputs.http
    assert plain.tls is None and plain.token is not None
    service = renders["tls-disabled-token"].one("Service", RELEASE)
    assert {p["name"]: p["appProtocol"] for p in service["spec"]["ports"]}["alerts"] == "http"


def test_max_connections_reaches_the_config(chart: helm_python.Chart, renders: dict[str, Rendered]) -> None:
    assert _config(renders["defaults"]).inputs.http.max_connections == 1024
    raised = render(chart, Case("many-nodes", {"inputs": {"http": {"maxConnections": 100000}}}))
    assert _config(raised).inputs.http.max_connections == 100000
    # The per-peer cap, unset, follows it as the responder derives it: an eighth.
    assert _config(raised).inputs.http.max_connections_per_peer == 12500


def test_max_connections_per_peer_reaches_the_config(
    chart: helm_python.Chart, renders: dict[str, Rendered]
) -> None:
    http = _config(renders["defaults"]).inputs.http
    assert http.max_connections_per_peer == 128 == max(1, http.max_connections // PEER_SHARE)
    # What the chart renders is what the responder would derive from max_connections alone.
    assert "max_connections_per_peer: 128" in renders["defaults"].config_text()
    derived = HttpInput(enabled=False, max_connections=http.max_connections).max_connections_per_peer
    assert http.max_connections_per_peer == derived
    # Behind a mesh's sidecar every sender shares one address: the cap is raised to the whole.
    mesh = render(chart, Case("mesh", {"inputs": {"http": {"maxConnectionsPerPeer": 1024}}}))
    assert _config(mesh).inputs.http.max_connections_per_peer == 1024
    smallest = render(chart, Case("smallest", {"inputs": {"http": {"maxConnections": 16}}}))
    assert _config(smallest).inputs.http.max_connections_per_peer == 2
    with pytest.raises(helm_python.HelmValuesError, match="maxConnectionsPerPeer"):
        chart.render({"inputs": {"http": {"maxConnectionsPerPeer": 0}}}, name=RELEASE, namespace=NAMESPACE)


def test_a_release_without_max_connections_per_peer_still_renders(tmp_path: Path) -> None:
    """`helm upgrade --reuse-values` from a release installed before the key: it is absent."""
    schema = json.loads((CHART_DIR / "values.schema.json").read_text(encoding="utf-8"))
    http_schema = schema["properties"]["inputs"]["properties"]["http"]
    assert "maxConnectionsPerPeer" in http_schema["properties"]
    assert "maxConnectionsPerPeer" not in http_schema["required"]
    chart_dir = tmp_path / "serving-guard"
    shutil.copytree(CHART_DIR, chart_dir)  # follows the rules-pack symlink
    values = yaml.safe_load((chart_dir / "values.yaml").read_text(encoding="utf-8"))
    del values["inputs"]["http"]["maxConnectionsPerPeer"]
    values["inputs"]["http"]["maxConnections"] = 4096  # an earlier release's cap
    (chart_dir / "values.yaml").write_text(yaml.safe_dump(values), encoding="utf-8")
    earlier = InstallableChart.load(chart_dir)
    try:
        rendered = render(earlier, Case("reused", {}))
    finally:
        earlier.close()
    http = _config(rendered).inputs.http
    assert (http.max_connections, http.max_connections_per_peer) == (4096, 512)


def test_the_default_connections_and_bodies_fit_the_default_memory_limit(
    renders: dict[str, Rendered],
) -> None:
    """What `serve` checks at start (memory_budget) holds for the chart's own defaults: no warning."""
    config = _config(renders["defaults"])
    http = config.inputs.http
    limit = _container(renders["defaults"])["resources"]["limits"]["memory"]
    assert limit.endswith("Mi")
    warning = connections_memory_warning(
        config.server.event_loop,
        http.tls is not None,
        http.max_connections,
        http.max_body_bytes,
        int(limit[:-2]) * MIB,
    )
    assert warning is None
    # One Falco per node holds one connection: the default still serves a large cluster.
    assert http.max_connections >= 1024
    # The chart's default is the responder's (the rules' worst case: rulespack/alert_size.py).
    assert http.max_body_bytes == HttpInput.model_fields["max_body_bytes"].default


@pytest.mark.parametrize(
    ("key", "volume_name", "secret"),
    [("audit_token", "audit-token", "sg-audit-readers"), ("drill_token", "drill-token", "sg-drills")],
)
def test_the_audit_and_drill_tokens_reach_the_config_from_their_own_secrets(
    renders: dict[str, Rendered], key: str, volume_name: str, secret: str
) -> None:
    assert getattr(_config(renders["defaults"]).inputs.http, key) is None
    config = _config(renders["production"])
    ref = getattr(config.inputs.http, key)
    assert ref is not None
    assert ref.file == f"/var/run/secrets/serving-guard/{volume_name}/token"
    spec = _deployment(renders["production"])["spec"]["template"]["spec"]
    volume = next(v for v in spec["volumes"] if v["name"] == volume_name)
    assert volume["secret"] == {
        "secretName": secret,
        "defaultMode": 0o440,
        "items": [{"key": "token", "path": "token"}],
    }
    mounts = {m["name"]: m for m in spec["containers"][0]["volumeMounts"]}
    assert mounts[volume_name] == {
        "name": volume_name,
        "mountPath": f"/var/run/secrets/serving-guard/{volume_name}",
        "readOnly": True,
    }
    # Drills are decided in dry-run unless the values say to act on them.
    assert config.guardrails.enforce_drills is False


def test_grpc_input_reaches_the_config(renders: dict[str, Rendered]) -> None:
    grpc = _config(renders["grpc-cert-manager"]).inputs.grpc
    assert grpc.enabled and grpc.address == "falco-grpc.falco.svc:5060"
    assert grpc.tls is not None and grpc.tls.server_name == "falco-grpc.falco.svc"
    only = renders["grpc-only"]
    config = _config(only)
    assert not config.inputs.http.enabled and config.inputs.grpc.enabled
    # No HTTP input: no alert port on the pod or the Service, and no ingress rule for Falco.
    assert [p["name"] for p in _container(only)["ports"]] == ["metrics"]
    assert [p["name"] for p in only.one("Service", RELEASE)["spec"]["ports"]] == ["metrics"]
    grpc_volume = next(
        v for v in _deployment(only)["spec"]["template"]["spec"]["volumes"] if v["name"] == "grpc-tls"
    )
    assert grpc_volume["secret"]["secretName"] == "sg-grpc-client"


def test_rules_configmap_carries_the_rules_pack_exactly(renders: dict[str, Rendered]) -> None:
    # The chart links files/serving_guard_rules.yaml to the repository's pack (Helm cannot read outside
    # the chart; its loader follows the link and `helm package` stores the content), so the two can
    # never drift. A checkout without symlink support gets a text file and fails here.
    link = CHART_DIR / "files" / "serving_guard_rules.yaml"
    assert link.is_symlink(), f"{link} must stay a symlink to {RULES_PACK}"
    assert link.resolve() == RULES_PACK.resolve()
    assert os.readlink(link) == "../../../../rules/serving_guard_rules.yaml"
    for case in ("defaults", "separate-namespace"):
        configmap = renders[case].one("ConfigMap", "serving-guard-rules")
        assert configmap["metadata"]["namespace"] == "falco", (
            "Falco can only mount ConfigMaps of its namespace"
        )
        assert configmap["data"] == {"serving_guard_rules.yaml": RULES_PACK.read_text(encoding="utf-8")}


def test_rules_configmap_can_be_left_out(chart: helm_python.Chart) -> None:
    rendered = render(chart, Case("no-rules", {"falco": {"rulesConfigMap": {"enabled": False}}}))
    assert [m for m in rendered.of_kind("ConfigMap") if m["metadata"]["name"] != RELEASE] == []


@pytest.mark.parametrize("case", ["namespaced", "cluster-listed", "production"])
def test_quarantine_policy_is_the_one_the_responder_builds(renders: dict[str, Rendered], case: str) -> None:
    rendered = renders[case]
    config = _config(rendered)
    cut = config.quarantine.cut()  # quarantine.isolate's: serving-guard-quarantine[-<cut>]
    label, value = config.quarantine.label, cut.label_value
    policies = [m for m in rendered.of_kind("NetworkPolicy") if m["metadata"]["name"] == cut.network_policy]
    enforced = case_named(case).values["enforcement"]["namespaces"]
    assert sorted(p["metadata"]["namespace"] for p in policies) == sorted(enforced)
    for policy in policies:
        # Identical spec: the responder's repair loop never fights what Helm installed.
        assert policy["spec"] == deny_all_spec(label, value, cut.directions)
        assert spec_is_deny_all(policy["spec"], label, value, cut.directions)
        # Uninstalling the chart must not silently release quarantined pods.
        assert policy["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"


@pytest.mark.parametrize(("isolate", "types"), [("egress", ["Egress"]), ("ingress", ["Ingress"])])
def test_quarantine_policy_cuts_what_isolate_names(
    chart: helm_python.Chart, isolate: str, types: list[str]
) -> None:
    values = {
        "enforcement": {"scope": "namespaced", "namespaces": ["models"]},
        "quarantine": {"isolate": isolate},
    }
    rendered = render(chart, Case(f"isolate-{isolate}", values))
    config = _config(rendered)
    assert config.quarantine.isolate.value == isolate
    label, value = config.quarantine.label, f"true-{isolate}"
    (policy,) = [
        m
        for m in rendered.of_kind("NetworkPolicy")
        if m["metadata"]["name"] == f"serving-guard-quarantine-{isolate}"
    ]
    assert policy["spec"]["policyTypes"] == types
    # The responder would build the same: it never "repairs" the chart's policy into another one.
    assert policy["spec"] == deny_all_spec(label, value, config.quarantine.isolate.directions)
    assert not spec_is_deny_all(policy["spec"], label, value)  # not the both-ways policy


def test_a_policy_on_trial_reaches_the_config_and_the_notes(chart: helm_python.Chart) -> None:
    trial = {
        "name": "egress-trial",
        "match": {"rules": ["Anomalous egress*"]},
        "actions": ["notify", "quarantine"],
    }
    values = {"policies": [{**trial, "dry_run": True}, {**trial, "name": "enforced"}]}
    rendered = render(chart, Case("policy-trial", values))
    assert [(p.name, p.dry_run) for p in _config(rendered).policies] == [
        ("egress-trial", True),
        ("enforced", False),
    ]
    assert "Policies in dry-run (predicted and notified, nothing changed): egress-trial." in rendered.notes()
    # The global switch says it all; the trial list is not repeated under it.
    everything = render(chart, Case("all-dry-run", {**values, "guardrails": {"dryRun": True}}))
    assert (
        "guardrails.dryRun is true" in everything.notes() and "Policies in dry-run" not in everything.notes()
    )
    chart.validate_schema(values)


def test_destination_blocks_reach_the_config(chart: helm_python.Chart, renders: dict[str, Rendered]) -> None:
    assert _config(renders["defaults"]).block_destination == BlockDestination()
    blocking: dict[str, Any] = {
        "label": "example.com/block",
        "networkPolicyPrefix": "sg-block",
        "addressFields": ["fd.sip"],
        "neverBlock": ["203.0.113.0/24"],
        "maxPerPod": 8,
        "ignoreOtherPolicyApis": True,
    }
    policy = {
        "name": "egress",
        "match": {"rules": ["Anomalous egress*"]},
        "actions": ["notify", "block_destination"],
    }
    breaker = {"maxBlocks": {"count": 3, "windowSeconds": 60}}
    values = {"policies": [policy], "blockDestination": blocking, "guardrails": breaker}
    chart.validate_schema(values)
    config = _config(render(chart, Case("block-destination", values)))
    assert config.policies[0].actions == (ActionName.NOTIFY, ActionName.BLOCK_DESTINATION)
    assert (config.guardrails.max_blocks.count, config.guardrails.max_blocks.window_seconds) == (3, 60)
    assert _config(render(chart, Case("block-breaker-default", {}))).guardrails.max_blocks.count == 20
    with pytest.raises(helm_python.HelmValuesError, match="maxBlocks"):
        chart.validate_schema({"guardrails": {"maxBlocks": {"count": 0, "windowSeconds": 60}}})
    # A policy with no actions (the responder refuses it: it would hide what it matches).
    with pytest.raises(helm_python.HelmValuesError, match="actions"):
        chart.validate_schema({"policies": [{**policy, "actions": []}]})
    assert config.block_destination == BlockDestination(
        label="example.com/block",
        network_policy_prefix="sg-block",
        address_fields=("fd.sip",),
        never_block=("203.0.113.0/24",),
        max_per_pod=8,
        ignore_other_policy_apis=True,
    )
    with pytest.raises(helm_python.HelmValuesError, match="networkPolicyPrefix"):
        chart.validate_schema({"blockDestination": {**blocking, "networkPolicyPrefix": "Bad_"}})


def test_workload_threads_reach_the_config(chart: helm_python.Chart, renders: dict[str, Rendered]) -> None:
    assert _config(renders["defaults"]).slack.thread_by_workload is True
    rendered = render(chart, Case("one-post-per-pod", {"slack": {"threadByWorkload": False}}))
    assert _config(rendered).slack.thread_by_workload is False


def test_slacks_by_hand_commands_reach_the_responders_own_pod(renders: dict[str, Rendered]) -> None:
    """Slack's commands run in the responder's pod (its config, its journal): pasted on a
    workstation as given, they said only "e.g. kubectl exec into its pod"."""
    rendered = renders["defaults"]
    deployment = _deployment(rendered)
    name, namespace = deployment["metadata"]["name"], deployment["metadata"]["namespace"]
    assert _config(rendered).slack.command_prefix == f"kubectl -n {namespace} exec deploy/{name} --"
    # `kubectl exec deploy/NAME` runs in its first container: the responder's.
    assert deployment["spec"]["template"]["spec"]["containers"][0]["name"] == "responder"


def test_no_quarantine_policy_without_listed_namespaces(renders: dict[str, Rendered]) -> None:
    names = [m["metadata"]["name"] for m in renders["defaults"].of_kind("NetworkPolicy")]
    assert names == [RELEASE], "cluster scope without a list: the responder creates policies where needed"


def test_image_by_digest(renders: dict[str, Rendered]) -> None:
    repository = TEST_IMAGE["image"]["repository"]
    assert _container(renders["production"])["image"] == f"{repository}:0.1.0@{DIGEST}"
    assert _container(renders["defaults"])["image"] == f"{repository}:0.1.0"


def test_the_image_repository_is_required_and_the_refusal_says_where_to_get_one(
    chart: helm_python.Chart,
) -> None:
    """No public image is published: a default repository would pull, by tag, whatever a registry
    namespace holds and run it with the responder's rights (review-platform M7)."""
    assert chart.values["image"]["repository"] == ""
    with helm_python.Chart.load(CHART_DIR) as plain, pytest.raises(helm_python.HelmError) as refused:
        plain.render({}, name=RELEASE, namespace=NAMESPACE)
    said = str(refused.value)
    assert "image.repository is not set: build the image from deploy/Dockerfile" in said, said
    assert "no public image is published" in said, said
    # The schema lets the empty default through to that refusal, and still checks a repository named.
    chart.validate_schema({})
    with pytest.raises(helm_python.HelmValuesError, match="/image/repository"):
        chart.validate_schema({"image": {"repository": "Registry.Example.com/UPPER"}})


def test_journal_volume(renders: dict[str, Rendered]) -> None:
    volumes = {v["name"]: v for v in _deployment(renders["defaults"])["spec"]["template"]["spec"]["volumes"]}
    assert volumes["journal"] == {"name": "journal", "emptyDir": {"sizeLimit": "2Gi"}}
    production = renders["production"]
    claim = production.one("PersistentVolumeClaim", f"{RELEASE}-journal")
    assert claim["spec"]["storageClassName"] == "fast"
    assert claim["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    volumes = {v["name"]: v for v in _deployment(production)["spec"]["template"]["spec"]["volumes"]}
    assert volumes["journal"]["persistentVolumeClaim"] == {"claimName": f"{RELEASE}-journal"}
    # A PVC has one writer: never two responders during an upgrade.
    assert _deployment(production)["spec"]["strategy"] == {"type": "Recreate"}


def test_config_change_rolls_the_pod(chart: helm_python.Chart) -> None:
    def checksum(values: dict[str, Any]) -> str:
        rendered = render(chart, Case("checksum", values))
        annotations = rendered.one("Deployment")["spec"]["template"]["metadata"]["annotations"]
        return str(annotations["checksum/config"])

    assert checksum({}) == checksum({})
    assert checksum({}) != checksum({"guardrails": {"dryRun": True}})


def test_pod_disruption_budget(renders: dict[str, Rendered]) -> None:
    assert renders["defaults"].one("PodDisruptionBudget")["spec"]["maxUnavailable"] == 1
    spec = renders["production"].one("PodDisruptionBudget")["spec"]
    assert spec["minAvailable"] == 1 and "maxUnavailable" not in spec


def test_service_monitor_only_when_asked(renders: dict[str, Rendered]) -> None:
    assert renders["defaults"].of_kind("ServiceMonitor") == []
    monitor = renders["production"].one("ServiceMonitor")
    assert monitor["metadata"]["labels"]["release"] == "prometheus"
    assert monitor["spec"]["endpoints"][0]["port"] == "metrics"


def test_certificates_chain_to_one_ca(renders: dict[str, Rendered]) -> None:
    rendered = renders["grpc-cert-manager"]
    certificates = {c["metadata"]["name"]: c for c in rendered.of_kind("Certificate")}
    issuers = {i["metadata"]["name"]: i for i in rendered.of_kind("Issuer")}
    assert issuers[f"{RELEASE}-ca"]["spec"] == {"ca": {"secretName": f"{RELEASE}-ca"}}
    assert certificates[f"{RELEASE}-ca"]["spec"]["isCA"] is True
    signed = {name: c for name, c in certificates.items() if name != f"{RELEASE}-ca"}
    assert set(signed) == {
        f"{RELEASE}-server",
        f"{RELEASE}-falco-client",
        f"{RELEASE}-grpc-client",
        f"{RELEASE}-falco-grpc-server",
    }
    for certificate in signed.values():
        assert certificate["spec"]["issuerRef"] == {
            "name": f"{RELEASE}-ca",
            "kind": "Issuer",
            "group": "cert-manager.io",
        }
    server = certificates[f"{RELEASE}-server"]["spec"]
    assert f"{RELEASE}.{NAMESPACE}.svc" in server["dnsNames"]
    assert server["secretName"] == f"{RELEASE}-tls" and "server auth" in server["usages"]
    client = certificates[f"{RELEASE}-falco-client"]
    assert (
        client["spec"]["secretName"] == "serving-guard-falco-client"
        and "client auth" in client["spec"]["usages"]
    )
    assert certificates[f"{RELEASE}-falco-grpc-server"]["spec"]["dnsNames"] == ["falco-grpc.falco.svc"]


def test_separate_namespace_uses_the_given_cluster_issuer(renders: dict[str, Rendered]) -> None:
    rendered = renders["separate-namespace"]
    assert rendered.of_kind("Issuer") == [], "no bootstrap CA when an issuer is given"
    client = rendered.one("Certificate", f"{RELEASE}-falco-client")
    assert client["metadata"]["namespace"] == "falco"
    assert client["spec"]["issuerRef"] == {
        "name": "security-ca",
        "kind": "ClusterIssuer",
        "group": "cert-manager.io",
    }
    assert rendered.one("Certificate", f"{RELEASE}-server")["metadata"]["namespace"] == "serving-guard"


def test_no_cert_manager_objects_with_user_secrets(renders: dict[str, Rendered]) -> None:
    for case in ("tls-secret-mtls", "tls-secret-token", "tls-disabled-token", "grpc-only"):
        assert renders[case].of_kind("Certificate", "Issuer") == [], case


def test_notes_give_the_by_hand_commands_with_the_config_the_pod_mounts(renders: dict[str, Rendered]) -> None:
    """Slack's by-hand commands journal and reach the incident's thread only with the responder's
    config: the notes run them in its pod, with the path the Deployment mounts the config at."""
    rendered = renders["defaults"]
    deployment = rendered.one("Deployment")
    pod = deployment["spec"]["template"]["spec"]
    (container,) = [c for c in pod["containers"] if c["name"] == "responder"]
    (mount,) = [m["mountPath"] for m in container["volumeMounts"] if m["name"] == "config"]
    volume = next(v for v in pod["volumes"] if v["name"] == "config")
    (item,) = [i["path"] for i in volume["configMap"]["items"] if i["key"] == "config.yaml"]
    notes = rendered.notes()
    name = deployment["metadata"]["name"]
    for command in ("quarantine", "release"):
        assert f"kubectl -n {NAMESPACE} exec deploy/{name} -- serving-guard {command} --namespace" in notes
    assert notes.count("--incident <inc-...>") == 2
    assert notes.count(f'--by "$USER" --config {mount}/{item}') == 2


def test_notes_tell_falco_what_to_set(renders: dict[str, Rendered]) -> None:
    notes = renders["defaults"].notes()
    assert f'"https://{RELEASE}.{NAMESPACE}.svc:8443/v1/alerts"' in notes
    assert "certs.existingClientSecret: serving-guard-falco-client" in notes
    assert "serving-guard-rules" in notes
    assert "serving-guard.io/enforce=true" in notes
    grpc_notes = renders["grpc-only"].notes()
    assert "http_output.url" not in grpc_notes and "ONE node" in grpc_notes
    # Who reads the audit trail: nobody over HTTP until its readers have a token of their own (a
    # sender's credential never reads it), said; silent once they have.
    assert "GET /v1/audit answers 403 until its readers have a" in notes
    assert "inputs.http.auditToken.secretName" in notes
    assert "auditToken" not in renders["production"].notes()
    # A one-way quarantine is said; the default is not.
    assert "quarantine.isolate is egress: a quarantined pod loses its egress only and goes on serving" in (
        renders["cluster-listed"].notes()
    )
    assert "quarantine.isolate" not in notes
    assert "dry-run" not in notes


@pytest.mark.parametrize(
    "case", [CASES[0], case_named("namespaced"), case_named("production")], ids=lambda case: case.name
)
def test_lint_is_clean(case: Case) -> None:
    # 1.30: the default admission policy's floor (1.29 with it off: test_admission_policy).
    report = helm_python.lint(
        CHART_DIR, with_test_image(case.values), strict=True, namespace=case.namespace, kube_version="v1.30.0"
    )
    assert report["errors"] == []
    # Severity 1 is informational (Helm recommends an icon); warnings (2) and errors (3) fail.
    problems = [m for m in report["messages"] if m["severity"] >= 2]
    assert problems == []


def test_values_file_is_plain_yaml_with_every_default() -> None:
    # values.yaml is the documentation users read: it must parse and hold every top-level key.
    values = yaml.safe_load((CHART_DIR / "values.yaml").read_text(encoding="utf-8"))
    assert {"image", "enforcement", "inputs", "slack", "guardrails", "policies", "resources"} <= set(values)


def test_default_policies_name_rules_the_pack_defines() -> None:
    # A renamed rule must not silently drop out of the default quarantine policy.
    pack = yaml.safe_load(RULES_PACK.read_text(encoding="utf-8"))
    rules = [item["rule"] for item in pack if isinstance(item, dict) and "rule" in item]
    tags = {tag for item in pack if isinstance(item, dict) and "rule" in item for tag in item.get("tags", [])}
    values = yaml.safe_load((CHART_DIR / "values.yaml").read_text(encoding="utf-8"))
    for policy in values["policies"]:
        match = policy.get("match", {})
        for pattern in match.get("rules", []):
            matched = [rule for rule in rules if fnmatch.fnmatchcase(rule, pattern)]
            assert matched, f"policy {policy['name']}: no rule in the pack matches {pattern!r}"
        for tag in match.get("tags", []):
            assert tag in tags, f"policy {policy['name']}: no rule in the pack has tag {tag!r}"


def test_default_policies_are_each_reachable(renders: dict[str, Rendered]) -> None:
    # First match wins: a default policy below a broader one would never apply.
    assert unreachable_policies(_config(renders["defaults"])) == []


def test_packaged_chart_carries_the_rules_pack(tmp_path: Path) -> None:
    # `helm package` resolves the symlink: the archive users install holds the pack itself.
    archive = helm_python.package(CHART_DIR, destination=tmp_path)
    with InstallableChart.load(archive) as packaged:
        files = packaged.render({}, name=RELEASE, namespace=NAMESPACE)
    configmap = yaml.safe_load(files["serving-guard/templates/rules-configmap.yaml"])
    assert configmap["data"]["serving_guard_rules.yaml"] == RULES_PACK.read_text(encoding="utf-8")


def test_a_policy_cutting_otherwise_gets_every_cuts_policy_as_the_responder_builds_it(
    renders: dict[str, Rendered],
) -> None:
    rendered = renders["cut-per-policy"]
    config = _config(rendered)
    assert config.policies[1].isolate is Isolation.EGRESS
    found = {
        (m["metadata"]["namespace"], m["metadata"]["name"]): m["spec"]
        for m in rendered.of_kind("NetworkPolicy")
    }
    for namespace in ("models", "llm"):
        for isolation in Isolation:
            cut = config.quarantine.cut(isolation)
            spec = found[(namespace, cut.network_policy)]
            # The responder would build the same, label value included: it never "repairs" them.
            assert spec == deny_all_spec(config.quarantine.label, cut.label_value, cut.directions)
    assert found[("models", "serving-guard-quarantine-egress")]["podSelector"]["matchLabels"] == {
        "serving-guard.io/quarantine": "true-egress"
    }
    # Without a policy cutting otherwise, quarantine.isolate's policy alone, as before.
    plain = renders["namespaced"]
    quarantine = [
        m
        for m in plain.of_kind("NetworkPolicy")
        if m["metadata"]["name"].startswith("serving-guard-quarantine")
    ]
    assert {m["metadata"]["name"] for m in quarantine} == {"serving-guard-quarantine"}


def test_journal_writer_and_synchronous_reach_the_config(
    chart: helm_python.Chart, renders: dict[str, Rendered]
) -> None:
    # deploy/README.md recommends them: the chart must be able to set them.
    journal = _config(renders["defaults"]).journal
    assert (journal.writer, journal.synchronous) == ("process", "full")
    values = {"journal": {"writer": "thread", "synchronous": "normal"}}
    chart.validate_schema(values)
    journal = _config(render(chart, Case("journal-thread", values))).journal
    assert (journal.writer, journal.synchronous) == ("thread", "normal")
    for key, wrong in (("writer", "threads"), ("synchronous", "off")):
        with pytest.raises(helm_python.HelmValuesError, match=f"/journal/{key}"):
            chart.validate_schema({"journal": {key: wrong}})


def test_the_bootstrapped_ca_keeps_its_key_when_it_renews(renders: dict[str, Rendered]) -> None:
    # A CA renewed with a new key leaves every certificate it signed unverifiable until that one
    # renews too: Falco's http_output would drop alerts meanwhile.
    certificates = {
        c["metadata"]["name"]: c["spec"] for c in renders["grpc-cert-manager"].of_kind("Certificate")
    }
    assert certificates.pop(f"{RELEASE}-ca")["privateKey"] == {
        "algorithm": "ECDSA",
        "size": 256,
        "rotationPolicy": "Never",
    }
    assert len(certificates) == 4
    for name, spec in certificates.items():
        assert spec["privateKey"]["rotationPolicy"] == "Always", name


def test_notes_warn_while_the_journal_is_not_persistent(renders: dict[str, Rendered]) -> None:
    notes = renders["defaults"].notes()
    assert "WARNING: THE JOURNAL IS NOT PERSISTENT" in notes
    assert "Set journal.persistence.enabled=true" in notes
    for lost in ("audit trail", "dedupe state", "circuit breakers' windows"):
        assert lost in notes
    # Said first, before the steps, where it cannot be missed.
    assert notes.index("WARNING") < notes.index("1. Point Falco at it")
    assert "NOT PERSISTENT" not in renders["production"].notes()


def test_notes_warn_while_the_image_is_not_pinned(renders: dict[str, Rendered]) -> None:
    notes = " ".join(renders["defaults"].notes().split())
    assert "WARNING: THE IMAGE IS NOT PINNED (image.digest is empty)" in notes
    assert f"{TEST_IMAGE['image']['repository']}:0.1.0 is a tag" in notes
    assert "NOT PINNED" not in renders["production"].notes()  # pinned by digest
