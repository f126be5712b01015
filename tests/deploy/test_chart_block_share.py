"""guardrails.maxBlocks.perPod and blockDestination.escalateToQuarantine reach the responder's
config from the chart, with the responder's defaults, and false stays false."""

from __future__ import annotations

import helm_python
import pytest

from responder.config import Config, load_config_text
from tests.deploy.deploy_support import Case, Rendered, render


def _config(rendered: Rendered) -> Config:
    return load_config_text(rendered.config_text(), name=f"<chart {rendered.case.name}>")


def test_the_pods_share_and_the_escalation_reach_the_config(
    chart: helm_python.Chart, renders: dict[str, Rendered]
) -> None:
    defaults = _config(renders["defaults"])
    assert defaults.guardrails.max_blocks.per_pod == Config().guardrails.max_blocks.per_pod == 5
    assert defaults.block_destination.escalate_to_quarantine is True
    values = {"guardrails": {"maxBlocks": {"perPod": 2}}, "blockDestination": {"escalateToQuarantine": False}}
    chart.validate_schema(values)
    config = _config(render(chart, Case("block-share-no-escalation", values)))
    assert config.guardrails.max_blocks.per_pod == 2
    assert config.block_destination.escalate_to_quarantine is False


@pytest.mark.parametrize(
    ("values", "named"),
    [
        ({"guardrails": {"maxBlocks": {"perPod": 0}}}, "perPod"),
        ({"blockDestination": {"escalateToQuarantine": "yes"}}, "escalateToQuarantine"),
    ],
)
def test_values_the_responder_would_refuse_are_refused(
    chart: helm_python.Chart, values: dict[str, object], named: str
) -> None:
    with pytest.raises(helm_python.HelmValuesError, match=named):
        chart.validate_schema(values)
