"""quarantine.ignoreOtherPolicyApis reaches the responder's config from the chart (off by default:
a quarantine where other network-policy APIs are served is not proven), and only as a boolean."""

from __future__ import annotations

import helm_python
import pytest

from responder.config import Config, load_config_text
from tests.deploy.deploy_support import Case, Rendered, render


def _config(rendered: Rendered) -> Config:
    return load_config_text(rendered.config_text(), name=f"<chart {rendered.case.name}>")


def test_the_key_is_off_by_default_and_reaches_the_config(
    chart: helm_python.Chart, renders: dict[str, Rendered]
) -> None:
    assert _config(renders["defaults"]).quarantine.ignore_other_policy_apis is False
    values = {"quarantine": {"ignoreOtherPolicyApis": True}}
    chart.validate_schema(values)
    config = _config(render(chart, Case("quarantine-apis-reviewed", values)))
    assert config.quarantine.ignore_other_policy_apis is True
    # The block's own key is apart: reviewing one does not review the other.
    assert config.block_destination.ignore_other_policy_apis is False


def test_a_value_that_is_not_a_boolean_is_refused(chart: helm_python.Chart) -> None:
    with pytest.raises(helm_python.HelmValuesError, match="ignoreOtherPolicyApis"):
        chart.validate_schema({"quarantine": {"ignoreOtherPolicyApis": "yes"}})
