"""security review LOW-4: one bad field appended to a macro that every rule uses (serving_guard_scope)
is one error at the append, saying how many rules it affects, not one near-identical error per rule
(sysdig's messages differ only in the rule and the offset in its condition)."""

from __future__ import annotations

from pathlib import Path

import pytest

from responder.cli import main
from responder.rulespack.check import merge_rule_problems
from responder.rulespack.expand import load_paths
from responder.rulespack.problems import Problem, Severity
from responder.rulespack.sysdig import Sysdig

from .conftest import PACK

pytestmark = pytest.mark.timeout(300)

BAD_SCOPE = """\
- macro: serving_guard_scope
  condition: or proc.nme = foo
  override:
    condition: append
"""


def _rules_using_scope(tuning: Path) -> int:
    """The rules the bad field is expanded into."""
    ruleset = load_paths([str(PACK), str(tuning)])
    return sum(1 for rule in ruleset.expanded.values() if "proc.nme" in rule.expanded)


def _errors_at(out: str, tuning: Path) -> list[str]:
    return [line for line in out.splitlines() if line.startswith(f"{tuning}:2: error:")]


def test_rules_check_says_a_bad_field_in_a_shared_macro_once(
    sysdig: Sysdig, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tuning = tmp_path / "l-badfield.yaml"
    tuning.write_text(BAD_SCOPE, encoding="utf-8")
    assert main(["rules", "check", "--no-falco", str(PACK), str(tuning)]) == 1
    out = capsys.readouterr().out
    [error] = _errors_at(out, tuning)
    rules = _rules_using_scope(tuning)
    assert rules > 3
    assert error.startswith(
        f"{tuning}:2: error: sysdig filter error: unrecognized field proc.nme"
        f" (it affects {rules} rules: rule '"
    )
    assert f" and {rules - 3} more) (token 'proc.nme')" in error
    assert " at pos " not in error and "offset" not in error
    assert out.rstrip().splitlines()[-1].startswith("result: FAILED (1 errors, 0 warnings)")


def test_rules_test_says_it_once_too(
    sysdig: Sysdig, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tuning = tmp_path / "l-badfield.yaml"
    tuning.write_text(BAD_SCOPE, encoding="utf-8")
    assert main(["rules", "test", "--override", str(tuning)]) == 2
    err = capsys.readouterr().err
    [error] = _errors_at(err, tuning)
    rules = _rules_using_scope(tuning)
    assert f"(it affects {rules} rules: " in error
    assert f"{rules} rule condition(s) or output(s) do not compile (above); nothing was tested" in err


def _problem(rule: str, message: str, line: int = 2, token: str = "proc.nme") -> Problem:
    return Problem(Severity.ERROR, "t.yaml", line, message, f"rule '{rule}'", token)


def test_only_the_same_message_at_the_same_line_is_merged() -> None:
    one = (
        "sysdig filter error: unrecognized field proc.nme at pos 10 (at offset 18 of the expanded condition)"
    )
    two = (
        "sysdig filter error: unrecognized field proc.nme at pos 99 (at offset 107 of the expanded condition)"
    )
    merged = merge_rule_problems(
        [
            _problem("A", one),
            _problem("B", two),
            _problem("C", one, line=3),  # another line
            _problem("D", "sysdig filter error: unrecognized field proc.nam at pos 4", token="proc.nam"),
        ]
    )
    assert [p.format() for p in merged] == [
        "t.yaml:2: error: sysdig filter error: unrecognized field proc.nme (it affects 2 rules: rule 'A',"
        " rule 'B') (token 'proc.nme')",
        f"t.yaml:3: error: rule 'C': {one} (token 'proc.nme')",
        "t.yaml:2: error: rule 'D': sysdig filter error: unrecognized field proc.nam at pos 4"
        " (token 'proc.nam')",
    ]
