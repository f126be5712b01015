"""Fixtures for the Slack tests: the local Slack sink over real loopback HTTP."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from simulators.slack_sink import RunningSlackSink, SlackSink


@pytest.fixture(scope="module")
def slack_sink() -> Iterator[SlackSink]:
    """One sink per test module (each test starts from a clean sink: see ``sink``)."""
    with RunningSlackSink() as sink:
        yield sink


@pytest.fixture
def sink(slack_sink: SlackSink) -> SlackSink:
    slack_sink.clear()
    return slack_sink
