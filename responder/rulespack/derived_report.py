"""The verdicts of the rule examples and the evasion cases on the loaded rules, and their failures:
each names the rule, the example or case, what was expected, what happened, and which items of the
user's tuning files change that rule."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

from responder.rulespack.derived import CaseVerdict
from responder.rulespack.example_cases import ExampleCase
from responder.rulespack.examples import Action
from responder.rulespack.expand import RuleSet
from responder.rulespack.matrix import CaptureReport
from responder.rulespack.tuning_changes import changed_by

OK, FAIL, NOT_EVALUATED = "ok", "FAIL", "not evaluated"


@dataclass(frozen=True)
class ExampleVerdict:
    case: ExampleCase
    status: str  # OK, FAIL or NOT_EVALUATED
    judged_by: str  # "derived capture", "capture X.scap#a1", "evasion case ...", or why not evaluated
    problem: str | None = None  # what went wrong (FAIL)


@dataclass(frozen=True)
class DerivedReport:
    rules: list[str]  # in the capture matrix's order (its R numbers)
    examples: list[ExampleVerdict]
    evasions: list[CaseVerdict]
    sysdig_runs: int
    changes: Mapping[str, list[str]]  # rule -> FILE:LINE (item) of the user's files that change it
    user_files: tuple[str, ...]

    @property
    def example_failures(self) -> list[str]:
        return [
            self._failure(f"example {v.case.id}", v.case.rule, v.problem or "")
            for v in self.examples
            if v.status == FAIL
        ]

    @property
    def evasion_failures(self) -> list[str]:
        return [
            self._failure(f"evasion {verdict.case.id}", _rule_of(problem, verdict), problem)
            for verdict in self.evasions
            for problem in verdict.problems
        ]

    @property
    def failures(self) -> list[str]:
        return self.example_failures + self.evasion_failures

    @property
    def ok(self) -> bool:
        return not self.failures

    def _failure(self, what: str, rule: str, problem: str) -> str:
        items = self.changes.get(rule, [])
        if items:
            cause = f"; your files change {rule} at {', '.join(items)}"
        elif self.user_files:
            cause = f"; no --override file changes {rule}: the rules files before them do this"
        else:
            cause = ""
        return f"{what}: {problem}{cause}"


def _rule_of(problem: str, verdict: CaseVerdict) -> str:
    """The rule a case's problem is about (each problem starts with the rule's name)."""
    return next((rule for rule in verdict.case.rules if problem.startswith(rule)), verdict.case.rules[0])


def describe_action(action: Action) -> str:
    if action.exec is not None:
        return "exec " + " ".join(action.exec)
    if action.open_read is not None:
        return f"open_read {action.open_read}"
    if action.open_write is not None:
        return f"open_write {action.open_write}"
    if action.rename is not None:
        return f"rename {action.rename.source} -> {action.rename.to}"
    if action.chmod is not None:
        return f"chmod {action.chmod.mode} {action.chmod.path}"
    if action.symlink is not None:
        return f"symlink {action.symlink.link} -> {action.symlink.target}"
    if action.unlink is not None:
        return f"unlink {action.unlink}"
    assert action.connect is not None
    return f"connect {action.connect.proto} {action.connect.address}:{action.connect.port}"


def _judge_example(
    case: ExampleCase,
    derived: Mapping[str, CaseVerdict],
    evasions: Mapping[str, CaseVerdict],
    captures: CaptureReport,
) -> ExampleVerdict:
    kind = "positive" if case.positive else "negative"
    what = f"{case.rule} {case.expected} on `{describe_action(case.example.action)}` ({kind})"
    if case.not_evaluated is not None:
        return ExampleVerdict(case, NOT_EVALUATED, case.not_evaluated)
    if case.derived is not None:
        verdict = derived[case.derived.id]
        fired = sum(outcome.alerts for outcome in verdict.outcomes)
        if verdict.ok:
            return ExampleVerdict(case, OK, "derived capture")
        return ExampleVerdict(case, FAIL, "derived capture", f"{what}, fired {fired}x on a derived capture")
    if case.shown_by is not None:
        shown = evasions.get(case.shown_by)
        if shown is None:
            return ExampleVerdict(case, NOT_EVALUATED, f"evasion case {case.shown_by} was not run")
        status = OK if shown.ok else FAIL
        return ExampleVerdict(
            case, status, f"evasion case {case.shown_by}", None if shown.ok else f"{what}: see that case"
        )
    assert case.proven_by is not None
    capture, action_id = case.proven_by.split("#")
    recorded = next((c for c in captures.captures if c.capture == capture), None)
    action = next((a for a in recorded.actions if a.action.id == action_id), None) if recorded else None
    if action is None:
        return ExampleVerdict(case, NOT_EVALUATED, f"capture action {case.proven_by} was not evaluated")
    fired = action.fired.get(case.rule, 0)
    if bool(fired) is case.positive:
        return ExampleVerdict(case, OK, f"capture {case.proven_by}")
    return ExampleVerdict(
        case, FAIL, f"capture {case.proven_by}", f"{what}, fired {fired}x in {case.proven_by}"
    )


def build_report(
    ruleset: RuleSet,
    user_files: Collection[str],
    captures: CaptureReport,
    examples: Sequence[ExampleCase],
    example_verdicts: Sequence[CaseVerdict],
    evasion_verdicts: Sequence[CaseVerdict],
) -> DerivedReport:
    derived = {verdict.case.id: verdict for verdict in example_verdicts}
    evasions = {verdict.case.id: verdict for verdict in evasion_verdicts}
    judged = [_judge_example(case, derived, evasions, captures) for case in examples]
    names = list(dict.fromkeys([*captures.rules, *(c.rule for c in examples)]))
    names += [rule for v in evasion_verdicts for rule in v.case.rules if rule not in names]
    return DerivedReport(
        rules=names,
        examples=judged,
        evasions=list(evasion_verdicts),
        sysdig_runs=sum(v.sysdig_runs for v in (*example_verdicts, *evasion_verdicts)),
        changes={rule: changed_by(ruleset, rule, list(user_files)) for rule in names},
        user_files=tuple(user_files),
    )
