"""Shared fixtures: the in-process Kubernetes API (kmock, strengthened) over real loopback HTTP."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import uvloop

from simulators.cluster_emulator import RunningCluster


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
