"""Fixtures for the chart tests: one loaded chart and one render per value set, shared by the session."""

from __future__ import annotations

from collections.abc import Iterator

import helm_python
import pytest

from tests.deploy.deploy_support import CASES, CHART_DIR, InstallableChart, Rendered, render


@pytest.fixture(scope="session")
def chart() -> Iterator[helm_python.Chart]:
    # Helm's loader notes on stderr that it followed the rules-pack symlink: expected (see test_chart_render).
    loaded = InstallableChart.load(CHART_DIR)
    try:
        yield loaded
    finally:
        loaded.close()


@pytest.fixture(scope="session")
def renders(chart: helm_python.Chart) -> dict[str, Rendered]:
    return {case.name: render(chart, case) for case in CASES}
