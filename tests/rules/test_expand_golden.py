"""Golden tests for Falco's loading semantics: lists, macros, exceptions and overrides expand exactly
as the engine expands them (rule_loader_collector.cpp / rule_loader_compiler.cpp).

Each tests/rules/golden/NAME.yaml has NAME.expected beside it: per rule, the condition text Falco
parses (exceptions appended, lists substituted) and the condition after macro resolution.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from responder.rulespack.expand import RuleSet, load
from responder.rulespack.rulesfile import read_rules_file

from .conftest import RULES_TESTS

GOLDEN = sorted((RULES_TESTS / "golden").glob("*.yaml"))


def render_golden(ruleset: RuleSet) -> str:
    lines = []
    for problem in ruleset.problems:
        lines.append(f"{problem.severity.value}: line {problem.line}: {problem.message}")
    for rule in ruleset.expanded.values():
        lines.append(f"rule: {rule.name}")
        lines.append(
            f"  priority: {rule.priority}  enabled: {str(rule.enabled).lower()}  tags: {list(rule.tags)}"
        )
        lines.append(f"  output: {rule.output}")
        lines.append(f"  falco parses: {rule.condition_text}")
        lines.append(f"  expanded: {rule.expanded}")
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("path", GOLDEN, ids=[p.stem for p in GOLDEN])
def test_expansion_matches_golden(path: Path) -> None:
    rules_file = read_rules_file(str(path))
    assert rules_file.problems == []
    expected = path.with_suffix(".expected").read_text(encoding="utf-8")
    assert render_golden(load([rules_file])) == expected
