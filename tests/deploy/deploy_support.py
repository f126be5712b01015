"""Rendering the chart with the real Helm engine (helm-python-sdk) and the value sets the tests share."""

from __future__ import annotations

import gzip
import hashlib
import json
import shutil
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import helm_python
import yaml

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
CHART_DIR = DEPLOY / "chart" / "serving-guard"
RULES_PACK = REPO / "rules" / "serving_guard_rules.yaml"
RELEASE = "serving-guard"
# The recommended install: the release beside Falco, in Falco's namespace.
NAMESPACE = "falco"
DIGEST = "sha256:" + "3" * 64
# Every values.yaml the chart has been released with (the README there says how they were kept).
VALUES_BY_CHART_VERSION = Path(__file__).parent / "fixtures" / "values-by-chart-version"
CHART_DIGESTS = VALUES_BY_CHART_VERSION / "chart-digests.json"


def chart_digest(chart_dir: Path = CHART_DIR) -> str:
    """sha256 of everything the chart packages: every file's path and content (links followed: the
    embedded rules pack is a link to rules/), sorted by path."""
    digest = hashlib.sha256()
    for path in sorted(p for p in chart_dir.rglob("*") if p.is_file()):
        relative = path.relative_to(chart_dir).as_posix()
        if "__pycache__" in relative.split("/"):
            continue
        content = path.read_bytes()
        digest.update(f"{relative}\0{len(content)}\0".encode())
        digest.update(content)
    return digest.hexdigest()


Values = dict[str, Any]


@dataclass(frozen=True)
class Case:
    """A named set of values and the namespace the release is rendered into."""

    name: str
    values: Values
    namespace: str = NAMESPACE


# The matrix the issue asks for: scope, Slack mode, TLS mode, gRPC input; plus a production-like set.
CASES: tuple[Case, ...] = (
    Case("defaults", {}),
    Case(
        "namespaced",
        {"enforcement": {"scope": "namespaced", "namespaces": ["models-a", "models-b"]}},
    ),
    Case(
        "cluster-listed",
        {"enforcement": {"scope": "cluster", "namespaces": ["models"]}, "quarantine": {"isolate": "egress"}},
    ),
    Case(
        "slack-bot",
        {"slack": {"mode": "bot", "secretName": "slack-bot", "defaultChannel": "#sec-alerts"}},
    ),
    Case("slack-webhook", {"slack": {"mode": "webhook", "secretName": "slack-hook", "secretKey": "url"}}),
    Case("tls-secret-mtls", {"inputs": {"http": {"tls": {"mode": "secret", "secretName": "sg-server-tls"}}}}),
    Case(
        "tls-secret-token",
        {
            "inputs": {
                "http": {
                    "tls": {"mode": "secret", "secretName": "sg-server-tls", "requireClientCert": False},
                    "token": {"secretName": "sg-http-token"},
                }
            },
            "falcosidekick": {"allowIngress": True},
        },
    ),
    Case(
        "tls-disabled-token",
        {
            "inputs": {
                "http": {
                    "tls": {"mode": "disabled"},
                    "token": {"secretName": "sg-http-token", "key": "bearer"},
                }
            },
            "falcosidekick": {"allowIngress": True, "namespace": "sidekick"},
        },
    ),
    Case(
        "grpc-cert-manager", {"inputs": {"grpc": {"enabled": True, "address": "falco-grpc.falco.svc:5060"}}}
    ),
    Case(
        "grpc-only",
        {
            "inputs": {
                "http": {"enabled": False},
                "grpc": {
                    "enabled": True,
                    "address": "falco-grpc.falco.svc:5060",
                    "tls": {"secretName": "sg-grpc-client"},
                },
            }
        },
    ),
    Case(
        "separate-namespace",
        {
            "falco": {"namespace": "falco"},
            "certManager": {"issuerRef": {"name": "security-ca", "kind": "ClusterIssuer"}},
            "enforcement": {"scope": "namespaced", "namespaces": ["models"]},
        },
        namespace="serving-guard",
    ),
    Case(
        "egress-policy",
        {
            "image": {"digest": DIGEST, "tag": "0.1.0"},
            "egressPolicy": {
                "enabled": True,
                "apiServer": {"cidrs": ["172.18.0.2/32", "fd00:10::2/128"], "ports": [6443]},
                "dns": {"cidrs": ["169.254.20.10/32"]},
            },
            "slack": {"mode": "webhook", "secretName": "slack-hook"},
            "inputs": {"grpc": {"enabled": True, "address": "falco-grpc.falco.svc:5060"}},
        },
    ),
    Case(
        "cut-per-policy",
        {
            "enforcement": {"scope": "namespaced", "namespaces": ["models", "llm"]},
            "policies": [
                {
                    "name": "shells",
                    "match": {"rules": ["Shell in serving pod"]},
                    "actions": ["notify", "quarantine"],
                },
                {
                    "name": "egress",
                    "match": {"rules": ["Anomalous egress from serving pod"]},
                    "actions": ["notify", "quarantine"],
                    "isolate": "egress",
                },
            ],
        },
    ),
    Case(
        "production",
        {
            "image": {"digest": DIGEST, "tag": "0.1.0"},
            "enforcement": {"scope": "namespaced", "namespaces": ["models"]},
            "journal": {"persistence": {"enabled": True, "storageClassName": "fast"}},
            "serviceMonitor": {"enabled": True, "labels": {"release": "prometheus"}},
            "prometheusRule": {"enabled": True, "labels": {"release": "prometheus"}},
            "metrics": {"allowFrom": {"namespace": "monitoring", "podSelector": {"app": "prometheus"}}},
            "podDisruptionBudget": {"minAvailable": 1},
            "slack": {"mode": "bot", "secretName": "slack-bot", "defaultChannel": "#sec-alerts"},
            "inputs": {
                "http": {
                    "auditToken": {"secretName": "sg-audit-readers"},
                    "drillToken": {"secretName": "sg-drills"},
                }
            },
            "priorityClassName": "system-cluster-critical",
            "tolerations": [
                {"key": "dedicated", "operator": "Equal", "value": "security", "effect": "NoSchedule"}
            ],
            "nodeSelector": {"kubernetes.io/os": "linux"},
            "imagePullSecrets": [{"name": "regcred"}],
        },
    ),
)

CASE_IDS = [case.name for case in CASES]


def case_named(name: str) -> Case:
    return next(case for case in CASES if case.name == name)


@dataclass(frozen=True)
class Rendered:
    case: Case
    files: Mapping[str, str]
    manifests: tuple[dict[str, Any], ...] = field(default=())

    def of_kind(self, *kinds: str) -> list[dict[str, Any]]:
        return [m for m in self.manifests if m["kind"] in kinds]

    def one(self, kind: str, name: str | None = None) -> dict[str, Any]:
        found = [m for m in self.of_kind(kind) if name is None or m["metadata"]["name"] == name]
        assert len(found) == 1, (
            f"expected one {kind} {name or ''} in case {self.case.name}, found {len(found)}"
        )
        return found[0]

    def config_text(self) -> str:
        configmap = self.one("ConfigMap", RELEASE)
        text = configmap["data"]["config.yaml"]
        assert isinstance(text, str)
        return text

    def notes(self) -> str:
        return next(text for path, text in self.files.items() if path.endswith("NOTES.txt"))

    def as_yaml_stream(self) -> str:
        return "\n---\n".join(yaml.safe_dump(m, sort_keys=False) for m in self.manifests)


def _documents(files: Mapping[str, str]) -> Iterator[dict[str, Any]]:
    for path in sorted(files):
        if not path.endswith((".yaml", ".yml")):
            continue
        for document in yaml.safe_load_all(files[path]):
            if document:
                assert isinstance(document, dict), f"{path}: a manifest is not a mapping"
                yield document


def render(chart: helm_python.Chart, case: Case) -> Rendered:
    files = chart.render(case.values, name=RELEASE, namespace=case.namespace)
    return Rendered(case=case, files=files, manifests=tuple(_documents(files)))


def pod_specs(rendered: Rendered) -> list[tuple[str, dict[str, Any]]]:
    """(workload name, pod spec) of every workload kind the chart may render."""
    specs = []
    for workload in rendered.of_kind("Deployment", "StatefulSet", "DaemonSet", "Job", "CronJob", "Pod"):
        if workload["kind"] == "Pod":
            spec = workload["spec"]
        elif workload["kind"] == "CronJob":
            spec = workload["spec"]["jobTemplate"]["spec"]["template"]["spec"]
        else:
            spec = workload["spec"]["template"]["spec"]
        specs.append((f"{workload['kind']}/{workload['metadata']['name']}", spec))
    return specs


# The image a test install names: the chart requires image.repository (no public image is published).
TEST_IMAGE: Values = {"image": {"repository": "registry.example.com/security/serving-guard"}}


def with_test_image(values: Mapping[str, Any] | None) -> Values:
    """``values`` as an install gives them: TEST_IMAGE's repository unless they name one."""
    return deep_merge(TEST_IMAGE, values or {})


class InstallableChart(helm_python.Chart):
    """The chart as the tests install it: rendered with TEST_IMAGE's repository unless the values
    name one (a render without any is refused: test_chart_image_required)."""

    def render(self, values: dict[str, Any] | None = None, **options: Any) -> dict[str, str]:
        return super().render(with_test_image(values), **options)


def deep_merge(base: Values, override: Mapping[str, Any]) -> Values:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = deep_merge(dict(merged[key]), value)
        else:
            merged[key] = value
    return merged


def render_reusing(release_values: Values, values: Values, workdir: Path, name: str = "reused") -> Rendered:
    """`helm upgrade --reuse-values` with the current templates: Helm renders them with the installed
    release's chart values (release_values, an earlier values.yaml) in place of the new chart's
    values.yaml, the given values over them, and validates the schema on that (helm/helm#9000)."""
    chart_dir = workdir / "serving-guard"
    shutil.copytree(CHART_DIR, chart_dir)  # follows the rules-pack symlink
    (chart_dir / "values.yaml").write_text(yaml.safe_dump(release_values), encoding="utf-8")
    # As Helm renders it: the release's image as it was, unless ``values`` set one.
    earlier = helm_python.Chart.load(chart_dir)
    try:
        return render(earlier, Case(name, values))
    finally:
        earlier.close()


@dataclass(frozen=True)
class ReleasedValues:
    """The values.yaml of one chart version, or of one commit of a version released many times over."""

    chart_version: str
    commit: str | None
    values: Values

    @property
    def name(self) -> str:
        return f"{self.chart_version}@{self.commit}" if self.commit else self.chart_version


def released_values() -> list[ReleasedValues]:
    """<version>.yaml files as they are; a <version>.json.gz history, one per distinct values.yaml."""
    released = []
    for path in sorted(VALUES_BY_CHART_VERSION.iterdir()):
        if path.name.endswith(".json.gz"):
            history = json.loads(gzip.decompress(path.read_bytes()))
            for snapshot in history["snapshots"]:
                last_commit = snapshot["commits"][-1]
                released.append(ReleasedValues(history["chartVersion"], last_commit, snapshot["values"]))
        elif path.suffix == ".yaml":
            released.append(ReleasedValues(path.stem, None, yaml.safe_load(path.read_text(encoding="utf-8"))))
    return released
