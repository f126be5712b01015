"""`helm upgrade --reuse-values` from an earlier chart: Helm then renders the new templates with the
release's old values in place of the new chart's values.yaml (helm/helm#9000), so a key added since
is absent. The chart must render, and render what the new default means, rather than refuse. Every
values.yaml the chart has had is kept in fixtures/values-by-chart-version (its README says how), and
the current one must be stored under the current chart version: a change to the values needs a new
chart version, which is what `helm history` shows operators."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import helm_python
import pytest
import yaml

from responder.cli import main as serving_guard
from responder.config import HttpInput, load_config_text
from tests.deploy.deploy_support import (
    CHART_DIR,
    NAMESPACE,
    RELEASE,
    TEST_IMAGE,
    VALUES_BY_CHART_VERSION,
    InstallableChart,
    ReleasedValues,
    released_values,
    render_reusing,
)

# The values.yaml of the chart before fixed cuts (commit 8aa8384), which installed releases still carry.
EARLIER_VALUES = Path(__file__).parent / "fixtures" / "values-before-fixed-cuts.yaml"
CHART_VERSION = yaml.safe_load((CHART_DIR / "Chart.yaml").read_text(encoding="utf-8"))["version"]


RELEASED = released_values()


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split("."))


def test_the_values_yaml_is_stored_under_the_current_chart_version() -> None:
    stored = VALUES_BY_CHART_VERSION / f"{CHART_VERSION}.yaml"
    assert stored.is_file(), (
        f"Chart.yaml says version {CHART_VERSION}, and {stored} is missing: copy values.yaml there"
    )
    current = yaml.safe_load((CHART_DIR / "values.yaml").read_text(encoding="utf-8"))
    assert yaml.safe_load(stored.read_text(encoding="utf-8")) == current, (
        f"values.yaml differs from the one released as chart version {CHART_VERSION}: bump Chart.yaml's"
        f" version and copy values.yaml to {VALUES_BY_CHART_VERSION}/<new version>.yaml"
    )
    assert all(_version(r.chart_version) <= _version(CHART_VERSION) for r in RELEASED)


def test_every_distinct_values_yaml_of_the_history_is_kept() -> None:
    # 0.1.0 went through 33 commits of values.yaml, 20 of them distinct (fixtures README).
    history = [r for r in RELEASED if r.chart_version == "0.1.0"]
    assert len(history) == 20
    assert len({json.dumps(r.values, sort_keys=True) for r in history}) == 20


@pytest.mark.parametrize("released", RELEASED, ids=[r.name for r in RELEASED])
def test_each_released_values_yaml_renders_under_reuse_values(
    released: ReleasedValues, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rendered = render_reusing(released.values, TEST_IMAGE, tmp_path)
    config_file = tmp_path / "config.yaml"
    config_file.write_text(rendered.config_text(), encoding="utf-8")
    capsys.readouterr()
    status = serving_guard(["config", "check", str(config_file)])
    output = capsys.readouterr()
    assert status == 0, output.out + output.err
    assert output.out.startswith(f"{config_file}: ok"), output.out
    container = rendered.one("Deployment", RELEASE)["spec"]["template"]["spec"]["containers"][0]
    assert container["resources"]["limits"]["memory"]


def test_keys_added_since_the_first_release_take_the_current_defaults(tmp_path: Path) -> None:
    first = next(r for r in RELEASED if r.chart_version == "0.1.0")
    assert "blockDestination" not in first.values and "rbac" not in first.values
    assert "auditToken" not in first.values["inputs"]["http"]
    rendered = render_reusing(first.values, TEST_IMAGE, tmp_path)
    config = load_config_text(rendered.config_text(), name="<first release's values>")
    assert (config.journal.synchronous, config.journal.writer) == ("full", "process")
    assert (config.guardrails.max_blocks.count, config.guardrails.max_blocks.per_pod) == (20, 5)
    assert (config.block_destination.label, config.block_destination.max_per_pod) == (
        "serving-guard.io/block",
        32,
    )
    assert config.block_destination.ignore_other_policy_apis is False
    assert config.slack.thread_by_workload is True
    assert config.inputs.http.audit_token is None
    assert rendered.of_kind("ValidatingAdmissionPolicy"), "rbac.admissionPolicy.enabled defaults to true"


def test_an_upgrade_reusing_an_earlier_releases_values_renders(tmp_path: Path) -> None:
    earlier = yaml.safe_load(EARLIER_VALUES.read_text())
    assert "ignoreOtherPolicyApis" not in earlier["quarantine"]  # the case this test is about
    chart_dir = tmp_path / "serving-guard"
    shutil.copytree(CHART_DIR, chart_dir)  # follows the rules-pack symlink
    shutil.copyfile(EARLIER_VALUES, chart_dir / "values.yaml")
    chart = InstallableChart.load(chart_dir)
    try:
        # The README's --reuse-values example, which adds the audit token.
        values = {"inputs": {"http": {"auditToken": {"secretName": "sg-audit-readers"}}}}
        chart.validate_schema(values)
        files = chart.render(values, name=RELEASE, namespace=NAMESPACE)
    finally:
        chart.close()
    configmap = next(
        document
        for path, text in files.items()
        if not path.endswith("NOTES.txt")
        for document in yaml.safe_load_all(text)
        if document and document.get("kind") == "ConfigMap" and "config.yaml" in document.get("data", {})
    )
    config = load_config_text(configmap["data"]["config.yaml"], name="<reused values>")
    assert config.quarantine.ignore_other_policy_apis is False  # the new key's default
    assert config.block_destination.escalate_to_quarantine is True  # and the keys added since
    assert config.guardrails.max_blocks.per_pod == 5
    assert config.dedupe.retry_withheld_seconds == (10.0, 20.0, 40.0, 80.0, 120.0)
    assert config.inputs.http.audit_token is not None
    # The old body limit is kept as the release set it; `config check --rules` warns it is small.
    assert config.inputs.http.max_body_bytes == earlier["inputs"]["http"]["maxBodyBytes"]
    assert config.inputs.http.max_body_bytes < HttpInput.model_fields["max_body_bytes"].default


def test_reusing_the_first_releases_image_is_refused_saying_where_to_set_one(tmp_path: Path) -> None:
    """Chart 0.1.0 defaulted image.repository to a registry namespace nothing publishes; `helm upgrade
    --reuse-values` keeps it, and would pull, by tag, whatever it holds (review-48 M3)."""
    first = next(r for r in RELEASED if r.chart_version == "0.1.0")
    assert first.values["image"]["repository"] == "ghcr.io/serving-guard/serving-guard"
    with pytest.raises(helm_python.HelmError) as refused:
        render_reusing(first.values, {}, tmp_path)
    said = str(refused.value)
    assert "image.repository is ghcr.io/serving-guard/serving-guard, chart 0.1.0's default" in said, said
    assert "set image.repository (and image.digest) to where you pushed the image" in said, said
