"""Shared fixtures: the in-process Kubernetes API (kmock, strengthened) over real loopback HTTP."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from simulators.cluster_emulator import RunningCluster


@pytest.fixture
def cluster() -> Iterator[RunningCluster]:
    with RunningCluster() as running:
        yield running
