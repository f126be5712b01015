"""`helm upgrade --reuse-values` from an earlier chart: Helm then renders the new templates with the
release's old values in place of the new chart's values.yaml (helm/helm#9000), so a key added since
is absent. The chart must render, and render what the new default means, rather than refuse."""

from __future__ import annotations

import shutil
from pathlib import Path

import helm_python
import yaml

from responder.config import HttpInput, load_config_text
from tests.deploy.deploy_support import CHART_DIR, NAMESPACE, RELEASE

# The values.yaml of the chart before fixed cuts (commit 8aa8384), which installed releases still carry.
EARLIER_VALUES = Path(__file__).parent / "fixtures" / "values-before-fixed-cuts.yaml"


def test_an_upgrade_reusing_an_earlier_releases_values_renders(tmp_path: Path) -> None:
    earlier = yaml.safe_load(EARLIER_VALUES.read_text())
    assert "ignoreOtherPolicyApis" not in earlier["quarantine"]  # the case this test is about
    chart_dir = tmp_path / "serving-guard"
    shutil.copytree(CHART_DIR, chart_dir)  # follows the rules-pack symlink
    shutil.copyfile(EARLIER_VALUES, chart_dir / "values.yaml")
    chart = helm_python.Chart.load(chart_dir)
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
