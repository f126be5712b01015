"""A derived case: a recorded action rewritten (the way an attacker, or the serving image, changes it),
and which rules must or must not fire on the events it changes, judged by the real libsinsp.

The filters of a case name the judged thread as ``{thread}`` (its thread id differs per recording),
filled in from the recorded program of the case or of the expectation.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from responder.rulespack import scapedit as se
from responder.rulespack.recorded import CaptureLibrary, Recorded, Replacements
from responder.rulespack.sysdig import Sysdig

Derivation = Callable[[CaptureLibrary], Replacements]
WITNESS_FIELDS = ("evt.num", "evt.type")


@dataclass(frozen=True)
class Expectation:
    rule: str
    fires: bool
    on: str  # the events judged: a sysdig filter, with {thread}
    count: int | None = None  # when it fires: exactly this many alerts (None: at least one)
    thread_of: Recorded | None = None  # whose thread {thread} is (default: the case's)

    def describe(self) -> str:
        if not self.fires:
            return "must stay silent"
        return "must fire" + (f" exactly {self.count}x" if self.count is not None else "")


@dataclass(frozen=True)
class Witness:
    """What the derived capture shows, whatever the rules: the derivation did what it means."""

    on: str
    fields: Mapping[str, Any]
    count: int | None = 1  # events of `on`, each showing `fields` (None: at least one)


@dataclass(frozen=True)
class DerivedCase:
    id: str
    group: str  # what the cases of a group show together (the finding)
    recorded: Recorded
    derive: Derivation
    expect: tuple[Expectation, ...]
    witness: tuple[Witness, ...] = ()
    only: bool = False  # no rule but the expected ones fires on the first expectation's events
    # Tuning points (lists, macros) whose pack default the case checks, not a property every tuning
    # must keep: when the user's files change one, a failure of the case is "not judged", and said.
    pins: tuple[str, ...] = ()

    @property
    def rules(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(e.rule for e in self.expect))


@dataclass(frozen=True)
class Outcome:
    expectation: Expectation
    alerts: int

    @property
    def ok(self) -> bool:
        if not self.expectation.fires:
            return self.alerts == 0
        if self.expectation.count is not None:
            return self.alerts == self.expectation.count
        return self.alerts > 0


@dataclass(frozen=True)
class CaseVerdict:
    case: DerivedCase
    outcomes: tuple[Outcome, ...]
    problems: tuple[str, ...]  # each: what went wrong, without the case's id
    sysdig_runs: int

    @property
    def ok(self) -> bool:
        return not self.problems


@dataclass(frozen=True)
class Conditions:
    """The loaded rules as sysdig evaluates them: the enabled ones, and why each other one is absent."""

    enabled: Mapping[str, str]  # rule -> sysdig condition
    absent: Mapping[str, str] = field(default_factory=dict)  # rule -> "disabled at FILE:LINE", ...
    # Rules the user's tuning files define (suite.user_rules, as in the capture matrix): a case's
    # `only` is about the pack's rules, so one of these firing beside the expected rule fails nothing.
    added: frozenset[str] = frozenset()

    def why_absent(self, rule: str) -> str:
        return self.absent.get(rule, "not defined by the loaded rules")


def judged_events(on: str) -> str:
    """The events an expectation judges, in a few words (its filter, the thread left out)."""
    if on == "{thread}":
        return "on every event of its thread"
    if on.startswith("evt.type = execve and evt.dir = <"):
        return "on its execve"
    return "on `" + on.replace(" and {thread}", "").replace(" and evt.dir = <", "") + "`"


def _filter(expectation_on: str, thread: str) -> str:
    return expectation_on.replace("{thread}", thread)


def write_derived(library: CaptureLibrary, case: DerivedCase, target: Path) -> Path:
    capture = case.recorded.capture
    se.rewrite(library.path(capture), target, case.derive(library), blocks=library.blocks(capture))
    return target


def judge(
    sysdig: Sysdig,
    library: CaptureLibrary,
    case: DerivedCase,
    conditions: Conditions,
    capture: Path,
    *,
    check_witness: bool = False,
) -> CaseVerdict:
    """Judge a case on its derived capture (written by write_derived): one sysdig pass per
    expectation of an enabled rule, one more for `only`, and the witnesses when asked (they do not
    depend on the rules: the tests check them, `rules test` trusts them)."""
    problems: list[str] = []
    runs = 0
    if check_witness:
        for witness in case.witness:
            on = _filter(witness.on, case.recorded.thread(library))
            events = sysdig.read_capture(str(capture), on, [*WITNESS_FIELDS, *witness.fields])
            runs += 1
            shown = [{name: event.get(name) for name in witness.fields} for event in events]
            count = witness.count if witness.count is not None else max(len(shown), 1)
            if shown != [dict(witness.fields)] * count:
                problems.append(
                    f"derivation: {on}: expected {witness.count}x {dict(witness.fields)}, got {shown}"
                )
    outcomes = []
    for expectation in case.expect:
        thread = (expectation.thread_of or case.recorded).thread(library)
        on = _filter(expectation.on, thread)
        condition = conditions.enabled.get(expectation.rule)
        if condition is None:
            if expectation.fires:
                problems.append(
                    f"{expectation.rule} must fire, but it is {conditions.why_absent(expectation.rule)}"
                )
            outcomes.append(Outcome(expectation, 0))
            continue
        alerts = sysdig.read_capture(str(capture), f"({on}) and ({condition})", ["evt.num"])
        runs += 1
        outcome = Outcome(expectation, len(alerts))
        outcomes.append(outcome)
        if not outcome.ok:
            # A case judging one rule on several sets of events says which one failed.
            several = sum(e.rule == expectation.rule for e in case.expect) > 1
            on_what = f" {judged_events(expectation.on)}" if several else ""
            problems.append(f"{expectation.rule} {expectation.describe()}{on_what}, fired {len(alerts)}x")
    if case.only and case.expect:
        problems += _others_silent(sysdig, library, case, conditions, capture)
        runs += 1
    return CaseVerdict(case, tuple(outcomes), tuple(problems), runs)


def _others_silent(
    sysdig: Sysdig, library: CaptureLibrary, case: DerivedCase, conditions: Conditions, capture: Path
) -> list[str]:
    """One pass for every other rule at once; only when something fired, which one (rare)."""
    first = case.expect[0]
    on = _filter(first.on, (first.thread_of or case.recorded).thread(library))
    others = {
        rule: text
        for rule, text in conditions.enabled.items()
        if rule not in case.rules and rule not in conditions.added
    }
    if not others:
        return []
    joined = " or ".join(f"({text})" for text in others.values())
    if not sysdig.read_capture(str(capture), f"({on}) and ({joined})", ["evt.num"]):
        return []
    problems = []
    for rule, condition in others.items():
        fired = sysdig.read_capture(str(capture), f"({on}) and ({condition})", ["evt.num"])
        if fired:
            allowed = ", ".join(case.rules)
            problems.append(f"{rule} must stay silent (only {allowed} may fire here), fired {len(fired)}x")
    return problems
