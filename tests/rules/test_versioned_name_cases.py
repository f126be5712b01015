"""pip by a versioned name (`proc.name glob "pip[0-9.-]*"` of serving_guard_download_command: pip3.11,
pip-3.11) is a keyword case of its own: a tuning that replaces the macro without that operand fails on
it, blamed on the user's macro. Before, no case held that operand alone."""

from __future__ import annotations

from fnmatch import fnmatchcase
from pathlib import Path

import pytest

from responder.rulespack.evasion_cases import evasion_cases
from responder.rulespack.expand import load_paths
from responder.rulespack.sysdig import Sysdig

from .conftest import PACK, failing_cases

pytestmark = pytest.mark.timeout(300)

MACRO = "serving_guard_download_command"
GLOB = "pip[0-9.-]*"
CASE = f"{MACRO}: each versioned name is a download[proc.name glob {GLOB}]"


def test_the_versioned_name_case_is_held_by_that_operand_alone() -> None:
    ruleset = load_paths([str(PACK)])
    (case,) = [c for c in evasion_cases() if c.id == CASE]
    fields = case.witness[0].fields
    assert fnmatchcase(fields["proc.name"], GLOB)
    # No list names the program, nor its path: only the glob holds it.
    assert fields["proc.name"] not in ruleset.list_items["serving_guard_download_tools"]
    assert fields["proc.exepath"] not in ruleset.list_items["serving_guard_download_tool_paths"]


def test_dropping_the_versioned_name_glob_fails_on_its_case(sysdig: Sysdig, tmp_path: Path) -> None:
    condition = " ".join(load_paths([str(PACK)]).macros[MACRO].condition.split())
    clause = f' or proc.name glob "{GLOB}"'
    assert condition.count(clause) == 1
    tuning = (
        f"- macro: {MACRO}\n  condition: >\n    {condition.replace(clause, '')}\n"
        "  override:\n    condition: replace\n"
    )
    assert failing_cases(sysdig, tmp_path, tuning, f"{MACRO}:") == [CASE]
