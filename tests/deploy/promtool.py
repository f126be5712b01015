"""Running Prometheus' promtool (Debian's `prometheus` package) on the chart's alerting rules and on the
responder's metrics. Where it is absent its tests skip, saying so, unless SERVING_GUARD_REQUIRE_PROMTOOL
says it is required (as in CI), where its absence fails them: the pattern of the rules pack's sysdig
(responder/rulespack/sysdig.py)."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from responder.rulespack.sysdig import tool_required

REQUIRE_ENV = "SERVING_GUARD_REQUIRE_PROMTOOL"
_TIMEOUT_SECONDS = 60.0


def promtool_required() -> bool:
    """Whether $SERVING_GUARD_REQUIRE_PROMTOOL makes a missing promtool a failure (as sysdig's)."""
    return tool_required(REQUIRE_ENV, "promtool")


@dataclass(frozen=True)
class Promtool:
    path: str

    @classmethod
    def find(cls) -> Promtool | None:
        path = shutil.which("promtool")
        return None if path is None else cls(path)

    def run(self, *args: str | Path, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [self.path, *map(str, args)],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=_TIMEOUT_SECONDS,
            check=False,
        )


def promtool_or_skip() -> Promtool:
    """The installed promtool; else the test skips with the reason, or fails where it is required."""
    found = Promtool.find()
    if found is None:
        if promtool_required():
            pytest.fail(
                f"promtool is not installed but {REQUIRE_ENV} requires it: the alerting rules must be checked"
            )
        pytest.skip(
            "promtool not installed (apt-get install prometheus):"
            " cannot check or unit-test the alerting rules"
        )
    return found
