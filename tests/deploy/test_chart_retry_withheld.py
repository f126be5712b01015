"""dedupe.retryWithheldSeconds reaches the responder's config from the chart with the responder's
defaults; an empty list stays empty (only a repeat tries again); what the responder would refuse, the
chart's schema refuses first."""

from __future__ import annotations

import helm_python
import pytest

from responder.config import Config, load_config_text
from tests.deploy.deploy_support import Case, Rendered, render


def _config(rendered: Rendered) -> Config:
    return load_config_text(rendered.config_text(), name=f"<chart {rendered.case.name}>")


def test_the_retry_waits_reach_the_config(chart: helm_python.Chart, renders: dict[str, Rendered]) -> None:
    defaults = _config(renders["defaults"])
    assert defaults.dedupe.retry_withheld_seconds == Config().dedupe.retry_withheld_seconds
    for waits, expected in (([], ()), ([5, 2.5], (5.0, 2.5))):
        values = {"dedupe": {"windowSeconds": 300, "retryWithheldSeconds": waits}}
        chart.validate_schema(values)
        config = _config(render(chart, Case(f"retry-{len(waits)}", values)))
        assert config.dedupe.retry_withheld_seconds == expected


@pytest.mark.parametrize(
    "waits",
    [[0], [-1], ["10"], [True], [90000], [1] * 11, 10],
)
def test_waits_the_responder_would_refuse_are_refused(chart: helm_python.Chart, waits: object) -> None:
    with pytest.raises(helm_python.HelmValuesError, match="retryWithheldSeconds"):
        chart.validate_schema({"dedupe": {"windowSeconds": 300, "retryWithheldSeconds": waits}})
