"""Fixtures for the rules pack tests: the real sysdig (skipped with a reason when it is absent,
unless SERVING_GUARD_REQUIRE_SYSDIG=1, as in CI, where its absence fails the test)."""

from __future__ import annotations

from pathlib import Path

import pytest

from responder.rulespack.derived_suite import conditions_of, run_cases
from responder.rulespack.evasion_cases import evasion_cases
from responder.rulespack.expand import load_paths
from responder.rulespack.paths import PROJECT_ROOT
from responder.rulespack.recorded import CaptureLibrary
from responder.rulespack.sysdig import REQUIRE_ENV, Sysdig, sysdig_required

RULES_TESTS = Path(__file__).resolve().parent
PACK = PROJECT_ROOT / "rules" / "serving_guard_rules.yaml"
EXAMPLES = PROJECT_ROOT / "rules" / "examples.yaml"
README = PROJECT_ROOT / "rules" / "README.md"
CAPTURES = PROJECT_ROOT / "tests" / "fixtures" / "captures"
SCOPE_OVERRIDE = CAPTURES / "scope-override.yaml"
# A rule of the user's own beside the pack's (an audit trail): held to none of the pack's expectations.
OWN_RULE = """\
- rule: Any process spawned in serving pod (audit)
  desc: audit trail of every exec in a serving pod
  condition: serving_guard_spawned_process and serving_guard_scope
  output: exec in serving pod (proc=%proc.name cmdline=%proc.cmdline)
  priority: INFORMATIONAL
"""


@pytest.fixture(scope="session")
def sysdig() -> Sysdig:
    found = Sysdig.find()
    if found is None:
        if sysdig_required():
            pytest.fail(f"sysdig is not installed but {REQUIRE_ENV}=1: the rules must be compiled and tested")
        pytest.skip(
            "sysdig not installed (apt-get install sysdig): cannot compile or evaluate Falco conditions"
        )
    return found


def failing_cases(sysdig: Sysdig, tmp_path: Path, tuning: str, group: str) -> list[str]:
    """The ids of the evasion cases of the groups starting with ``group`` that fail on the pack with
    ``tuning`` loaded after it (through the derived-case runner `rules test` uses)."""
    path = tmp_path / "tuning.yaml"
    path.write_text(tuning)
    conditions = conditions_of(load_paths([str(PACK), str(SCOPE_OVERRIDE), str(path)]))
    cases = [case for case in evasion_cases() if case.group.startswith(group)]
    assert cases, group
    return sorted(
        v.case.id for v in run_cases(sysdig, CaptureLibrary(CAPTURES), cases, conditions) if not v.ok
    )
