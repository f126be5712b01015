"""The in-process driver of the event loop runs every alert through the real responder; no timing
is asserted here (it reports, it does not judge)."""

from __future__ import annotations

import json

import pytest

from bench.loop_cost import main


def test_every_alert_is_answered_and_the_costs_are_reported(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--alerts", "400", "--connections", "16", "--collector", "default"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["alerts"] == 400 and result["connections"] == 16
    assert result["statuses"] == {"202": 400}
    assert result["event_loop_cpu_us_per_alert"] > 0
    assert result["collector_us_per_alert"] >= 0
    assert result["rate_per_second"] > 0


def test_bad_sizes_are_a_clear_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--alerts", "0"])
    assert exited.value.code == 2
    assert "--alerts and --connections must be at least 1" in capsys.readouterr().err
