"""Running Prometheus' promtool (Debian's `prometheus` package) on the chart's alerting rules and on the
responder's metrics. Where it is absent its tests skip, saying so, unless SERVING_GUARD_REQUIRE_PROMTOOL
says it is required (as in CI), where its absence fails them: the pattern of the rules pack's sysdig
(responder/rulespack/sysdig.py)."""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

REQUIRE_ENV = "SERVING_GUARD_REQUIRE_PROMTOOL"
_REQUIRED = ("1", "true", "yes")
_NOT_REQUIRED = ("", "0", "false", "no")
_TIMEOUT_SECONDS = 60.0


def promtool_required() -> bool:
    """Whether $SERVING_GUARD_REQUIRE_PROMTOOL makes a missing promtool a failure: 1, true or yes (any
    case) do; unset, 0, false or no do not. Anything else is an error, not a silent "no" (CI setting it
    to `on` would otherwise skip the checks it means to require)."""
    value = os.environ.get(REQUIRE_ENV, "")
    if value.strip().lower() in _REQUIRED:
        return True
    if value.strip().lower() in _NOT_REQUIRED:
        return False
    raise ValueError(
        f"{REQUIRE_ENV}={value!r}: set it to 1, true or yes to require promtool"
        " (0, false, no or unset: not required)"
    )


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
