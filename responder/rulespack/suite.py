"""The capture suite: load the pack plus the scope override, run every rule on every capture of a
directory, and judge the alerts against the expectations in the examples file.
"""

from __future__ import annotations

from collections.abc import Collection
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from responder.errors import UserError
from responder.rulespack.captures import CaptureRun, PreparedRule, evaluate_capture
from responder.rulespack.examples import ExamplesFile
from responder.rulespack.expand import RuleSet, load_paths
from responder.rulespack.matrix import CaptureReport, judge
from responder.rulespack.sysdig import Sysdig
from responder.rulespack.sysdig_compat import to_sysdig

_PARALLEL_CAPTURES = 4


@dataclass(frozen=True)
class SuiteInput:
    rules_files: list[str]  # the pack first, then overrides, in load order
    captures_dir: Path
    examples: ExamplesFile
    user_files: tuple[str, ...] = ()  # the user's tuning files (--override), the last of rules_files


def user_rules(ruleset: RuleSet, user_files: Collection[str]) -> frozenset[str]:
    """The rules ``user_files`` (the user's tuning) define, not the pack's: the examples file's
    expectations are about the pack's rules, so where one of these fires beside them is information,
    never a failure."""
    return frozenset(name for name, state in ruleset.rules.items() if state.origin.file.path in user_files)


def load_rules(paths: list[str]) -> RuleSet:
    """The rules as Falco would load them; any error stops the suite, and so do rules files that
    define no rule to run (an empty pack)."""
    ruleset = load_paths(paths)
    pack, *overrides = paths
    also = f" (nor do the overrides {', '.join(overrides)})" if overrides else ""
    if not ruleset.rules:
        raise UserError(f"{pack}: the rules pack defines no rules{also}: nothing to test")
    if not any(rule.enabled and rule.source == "syscall" for rule in ruleset.expanded.values()):
        raise UserError(f"{pack}: the rules pack defines no enabled syscall rule{also}: nothing to test")
    return ruleset


def capture_files(directory: Path) -> list[Path]:
    if not directory.is_dir():
        raise UserError(f"{directory}: not a directory of captures")
    files = sorted(directory.glob("*.scap"))
    if not files:
        raise UserError(f"{directory}: no .scap captures in it")
    return files


def run_suite(sysdig: Sysdig, suite: SuiteInput, ruleset: RuleSet | None = None) -> CaptureReport:
    """``ruleset``: the suite's rules files, already loaded (load_rules)."""
    ruleset = ruleset or load_rules(suite.rules_files)
    syscall = [rule for rule in ruleset.expanded.values() if rule.source == "syscall"]
    rules = [rule for rule in syscall if rule.enabled]
    translated = {rule.name: to_sysdig(rule.ast) for rule in rules}
    prepared = [
        PreparedRule.from_tree(rule.name, translated[rule.name].text, translated[rule.name].tree)
        for rule in rules
    ]
    yours = user_rules(ruleset, suite.user_files)
    report = CaptureReport(
        sysdig_version=sysdig.version,
        rules=[rule.name for rule in rules],
        stand_ins={name: condition.stand_ins for name, condition in translated.items()},
        yours=yours,
        disabled={
            rule.name: ruleset.rules[rule.name].disabled_at or "?" for rule in syscall if not rule.enabled
        },
        numbered=[rule.name for rule in syscall],
    )
    unknown = sorted(suite.examples.rule_names() - set(ruleset.expanded))
    report.failures += [f"examples name a rule the pack does not define: {name}" for name in unknown]
    files = capture_files(suite.captures_dir)
    present = {path.name for path in files}
    report.failures += [
        f"expected capture is missing from {suite.captures_dir}: {entry.file}"
        for entry in suite.examples.captures.files
        if entry.file not in present
    ]

    def evaluate(path: Path) -> tuple[Path, CaptureRun]:
        expectations = suite.examples.captures.get(path.name)
        actions = expectations.actions if expectations else []
        return path, evaluate_capture(sysdig, str(path), prepared, actions)

    with ThreadPoolExecutor(max_workers=_PARALLEL_CAPTURES) as pool:
        runs = list(pool.map(evaluate, files))
    for path, run in runs:
        report.captures.append(judge(suite.examples.captures.get(path.name), run, yours))
    return report
