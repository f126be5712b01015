"""The verdicts of the rule examples and the evasion cases on the loaded rules, and their failures:
each names the rule, the example or case, what was expected, what happened, and which items of the
user's tuning files change that rule."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field

from responder.rulespack.derived import CaseVerdict
from responder.rulespack.derived_blame import Blame, blamed_text, rule_of
from responder.rulespack.example_cases import ExampleCase
from responder.rulespack.examples import Action
from responder.rulespack.expand import RuleSet
from responder.rulespack.matrix import CaptureReport
from responder.rulespack.tuning_changes import changed_by, tuning_points

OK, FAIL, NOT_EVALUATED = "ok", "FAIL", "not evaluated"
EXAMPLE, EVASION = "example", "evasion"
DISABLED = ", but it is disabled at "


@dataclass(frozen=True)
class ExampleVerdict:
    case: ExampleCase
    status: str  # OK, FAIL or NOT_EVALUATED
    judged_by: str  # "derived capture", "capture X.scap#a1", "evasion case ...", or why not evaluated
    problem: str | None = None  # what went wrong (FAIL)


@dataclass(frozen=True)
class BlamedFailure:
    """Which of the user's items make a failure (of an example or an evasion case) fail, on a rule."""

    kind: str  # EXAMPLE or EVASION
    id: str  # the example's id, or the evasion case's
    rule: str
    blame: Blame


@dataclass(frozen=True)
class DerivedReport:
    rules: list[str]  # in the capture matrix's order (its R numbers)
    examples: list[ExampleVerdict]
    evasions: list[CaseVerdict]
    sysdig_runs: int
    changes: Mapping[str, list[str]]  # rule -> FILE:LINE (item) of the user's files that change it
    user_files: tuple[str, ...]
    # Evasion case id -> why its failure is not judged (it checks a default the user's files change).
    not_judged: Mapping[str, str] = field(default_factory=dict)
    # (case id, rule) -> which of the user's items make the case fail (derived_blame).
    blame: Mapping[tuple[str, str], Blame] = field(default_factory=dict)

    def judged(self, verdict: CaseVerdict) -> bool:
        return verdict.case.id not in self.not_judged

    def held(self, verdict: CaseVerdict, rule: str | None = None) -> bool:
        """The case held (for ``rule``), or it is not judged."""
        if not self.judged(verdict):
            return True
        return not any(rule is None or p.startswith(rule) for p in verdict.problems)

    def keyed_example_failures(self) -> list[tuple[str, tuple[str, ...]]]:
        """Each failure, with the names `--accept` takes for it: the example's id, and what judged
        it (a capture action, or an evasion case and its group)."""
        return [
            (
                self._failure(f"example {v.case.id}", v.case.rule, v.problem or "", _judging_case(v.case)),
                self.example_names(v.case),
            )
            for v in self.examples
            if v.status == FAIL
        ]

    def example_names(self, case: ExampleCase) -> tuple[str, ...]:
        """The names `--accept` takes for an example's failure."""
        groups = {verdict.case.id: verdict.case.group for verdict in self.evasions}
        return (case.id, case.rule, *_judged_by_names(case, groups))

    def evasion_names(self, verdict: CaseVerdict, problem: str) -> tuple[str, ...]:
        """The names `--accept` takes for one of an evasion case's failures."""
        return (verdict.case.id, verdict.case.group, self._rule_of(problem, verdict))

    def keyed_evasion_failures(self) -> list[tuple[str, tuple[str, ...]]]:
        """Each failure, with the names `--accept` takes for it: the case's id, its group, the rule."""
        return [
            (
                self._failure(
                    f"evasion {verdict.case.id}", self._rule_of(problem, verdict), problem, verdict.case.id
                ),
                self.evasion_names(verdict, problem),
            )
            for verdict in self.evasions
            if self.judged(verdict)
            # Once each: a case judging two sets of events can fail twice in the same words.
            for problem in dict.fromkeys(verdict.problems)
        ]

    def _rule_of(self, problem: str, verdict: CaseVerdict) -> str:
        return rule_of(problem, self.changes, verdict.case.rules)

    def blamed(self) -> list[BlamedFailure]:
        """The cause of each failure the ablation found, once per case and rule (a case judging two
        sets of events fails twice on one rule): what the failure lines say, for a CI job to read."""
        found: dict[tuple[str, str, str], Blame] = {}
        for v in self.examples:
            blame = self._blame_of(v.case.rule, v.problem or "", _judging_case(v.case))
            if v.status == FAIL and blame is not None:
                found[(EXAMPLE, v.case.id, v.case.rule)] = blame
        for verdict in self.evasions:
            for problem in verdict.problems if self.judged(verdict) else ():
                rule = self._rule_of(problem, verdict)
                blame = self._blame_of(rule, problem, verdict.case.id)
                if blame is not None:
                    found[(EVASION, verdict.case.id, rule)] = blame
        return [BlamedFailure(*key, blame) for key, blame in found.items()]

    @property
    def example_failures(self) -> list[str]:
        return [text for text, _ in self.keyed_example_failures()]

    @property
    def evasion_failures(self) -> list[str]:
        return [text for text, _ in self.keyed_evasion_failures()]

    @property
    def failures(self) -> list[str]:
        return self.example_failures + self.evasion_failures

    @property
    def ok(self) -> bool:
        return not self.failures

    def _blame_of(self, rule: str, problem: str, case_id: str | None) -> Blame | None:
        """What the ablation found for a failure; nothing for a disabled rule's (it names the line)."""
        if case_id is None or DISABLED in problem:
            return None
        return self.blame.get((case_id, rule))

    def _failure(self, what: str, rule: str, problem: str, case_id: str | None) -> str:
        if DISABLED in problem:
            return f"{what}: {problem}"  # the problem names the line that disables the rule
        blame = self._blame_of(rule, problem, case_id)
        return f"{what}: {problem}{blamed_text(rule, blame, self.changes, bool(self.user_files))}"


def _judging_case(case: ExampleCase) -> str | None:
    """The derived case an example's verdict comes from (its own, or the evasion case showing it)."""
    return case.derived.id if case.derived is not None else case.shown_by


def _judged_by_names(case: ExampleCase, groups: Mapping[str, str]) -> tuple[str, ...]:
    if case.proven_by is not None:
        return (case.proven_by,)
    if case.shown_by is not None:
        return (case.shown_by, *([groups[case.shown_by]] if case.shown_by in groups else []))
    return ()


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
    not_judged: Mapping[str, str],
    disabled: Mapping[str, str],
) -> ExampleVerdict:
    kind = "positive" if case.positive else "negative"
    what = f"{case.rule} {case.expected} on `{describe_action(case.example.action)}` ({kind})"
    if case.not_evaluated is not None:
        return ExampleVerdict(case, NOT_EVALUATED, case.not_evaluated)
    if case.positive and case.rule in disabled:
        # Said as the evasion cases say it, whatever judges the example.
        judged_by = (
            "derived capture"
            if case.derived is not None
            else (
                f"capture {case.proven_by}" if case.proven_by is not None else f"evasion case {case.shown_by}"
            )
        )
        return ExampleVerdict(case, FAIL, judged_by, f"{what}, but it is {disabled[case.rule]}")
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
        if case.shown_by in not_judged:
            return ExampleVerdict(case, NOT_EVALUATED, not_judged[case.shown_by])
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
    blame: Mapping[tuple[str, str], Blame] | None = None,
) -> DerivedReport:
    derived = {verdict.case.id: verdict for verdict in example_verdicts}
    evasions = {verdict.case.id: verdict for verdict in evasion_verdicts}
    not_judged = _not_judged(evasion_verdicts, tuning_points(ruleset, user_files))
    disabled = {
        name: f"disabled at {state.disabled_at}" for name, state in ruleset.rules.items() if state.disabled_at
    }
    judged = [_judge_example(case, derived, evasions, captures, not_judged, disabled) for case in examples]
    names = list(dict.fromkeys([*captures.rules, *(c.rule for c in examples)]))
    names += [rule for v in evasion_verdicts for rule in v.case.rules if rule not in names]
    return DerivedReport(
        rules=names,
        examples=judged,
        evasions=list(evasion_verdicts),
        sysdig_runs=sum(v.sysdig_runs for v in (*example_verdicts, *evasion_verdicts)),
        changes={rule: changed_by(ruleset, rule, list(user_files)) for rule in [*names, *ruleset.rules]},
        user_files=tuple(user_files),
        not_judged=not_judged,
        blame=dict(blame or {}),
    )


def _not_judged(verdicts: Sequence[CaseVerdict], points: Mapping[str, list[str]]) -> dict[str, str]:
    """The failed cases that check a default the user's files change: not judged, and why."""
    found = {}
    for verdict in verdicts:
        changed = [name for name in verdict.case.pins if name in points]
        if verdict.problems and changed:
            where = "; ".join(f"{name} at {', '.join(points[name])}" for name in changed)
            found[verdict.case.id] = (
                f"it checks the pack's default, which your files change ({where}): a deliberate tuning"
            )
    return found
