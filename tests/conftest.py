"""Shared fixtures: the in-process Kubernetes API (kmock, strengthened) over real loopback HTTP."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import uvloop

from simulators.cluster_emulator import RunningCluster


@pytest.fixture(autouse=True)
def serving_guard_logger_restored() -> Iterator[None]:
    """Commands run in-process call setup_logging, which points the responder's logger at the
    sys.stderr of that moment: a test's captured stream, closed when the test ends. Each test gets
    the logger back as it found it, so no later test logs into a closed stream ("Logging error")."""
    logger = logging.getLogger("serving_guard")
    handlers, level, propagate = list(logger.handlers), logger.level, logger.propagate
    yield
    logger.handlers[:] = handlers
    logger.setLevel(level)
    logger.propagate = propagate


@pytest.fixture(autouse=True)
def outside_a_pod(monkeypatch: pytest.MonkeyPatch) -> None:
    """The commands by hand refuse to default --by inside a Kubernetes pod: a run of the tests in a
    pod (a CI runner's) sees what a workstation sees. The tests of that refusal set it themselves."""
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)


@pytest.fixture
def cluster() -> Iterator[RunningCluster]:
    with RunningCluster() as running:
        yield running


def pytest_asyncio_loop_factories(config: pytest.Config, item: pytest.Item) -> dict[str, Callable[[], Any]]:
    """The inputs' tests run on both loops the responder can serve on (``server.event_loop``):
    uvloop, its default, and the standard library's. Everything else runs on the standard one."""
    factories: dict[str, Callable[[], Any]] = {"asyncio": asyncio.new_event_loop}
    if Path(str(item.path)).parent.name == "ingest":
        factories["uvloop"] = uvloop.new_event_loop
    return factories
