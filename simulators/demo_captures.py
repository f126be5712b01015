"""The demo's first stage: `serving-guard rules test` (the captures, the rule examples and the evasion
cases) with the demo's own rules.

The demo's alerts are scenario alert templates: they prove the responder (verification, policy,
actions, Slack), never that a rule's condition still matches the attack. A tuning or an edit that
breaks a rule left the demo passing, so the demo first evaluates the rules with the real libsinsp
(Debian's sysdig) on the recorded syscall captures, and on the rule examples and evasion cases derived
from them (about 14 s: a tuning that silences attacks no recording holds fails here too), and stops
when an expectation fails. Without
sysdig (a fresh clone with nothing but Python) it says so in one line and the demo goes on.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TextIO

from responder.rulespack.accept import accept, check_names, known_names, renamed
from responder.rulespack.derived_report import NOT_EVALUATED as EXAMPLE_NOT_EVALUATED
from responder.rulespack.derived_suite import run_examples_and_evasions
from responder.rulespack.evasion_cases import evasion_cases
from responder.rulespack.examples import load_examples
from responder.rulespack.expand import load_paths
from responder.rulespack.paths import default_captures, default_examples, display_path
from responder.rulespack.suite import SuiteInput, load_rules, run_suite
from responder.rulespack.sysdig import REQUIRE_ENV, Sysdig, sysdig_required

# The macro the captures' scope override retargets (the captures are host processes, not pods).
SCOPE_MACRO = "serving_guard_scope"
NOT_EVALUATED = "rule conditions: not evaluated ({why}): the rows below prove the responder only"
# The failures of examples and evasion cases the demo lists (a rule broken fails dozens of cases).
DERIVED_SHOWN = 10


@dataclass
class CaptureStage:
    passed: bool
    lines: list[str] = field(default_factory=list)
    # False: the rule conditions were not evaluated (no sysdig, no captures, no pack); the lines say why.
    evaluated: bool = True


def not_evaluated(why: str) -> CaptureStage:
    """The stage when the rule conditions cannot be evaluated: the demo goes on, saying so."""
    return CaptureStage(True, [NOT_EVALUATED.format(why=why)], evaluated=False)


def capture_stage(rules_files: Sequence[str], accepted: Sequence[str] = ()) -> CaptureStage:
    """Run the capture suite on ``rules_files`` (the demo's --rules, else the pack, in load order):
    passed, or not, with what to print. The captures' scope override loads right after the file
    that defines the scope macro, and the files after it (tuning) load after the override, as
    `rules test --rules PACK --override TUNING` loads them. ``accepted``: the demo's --accept names,
    taken as `rules test --accept` takes them (a tuning's deliberate trade-off: its failures are
    said, and do not stop the demo); an unknown name is a UserError."""
    sysdig = Sysdig.find()
    if sysdig is None:
        if sysdig_required():
            line = f"rule conditions: sysdig is not installed but {REQUIRE_ENV}=1"
            return CaptureStage(False, [line], evaluated=False)
        return not_evaluated("sysdig not installed")
    captures = default_captures()
    examples_path = default_examples()
    if not captures.is_dir() or not examples_path.is_file():
        # An install without this checkout's tests/ and rules/: nothing to evaluate against.
        return not_evaluated(f"no captures in {display_path(captures)}")
    examples = load_examples(examples_path)
    files = list(rules_files)
    scope = examples.captures.scope_override
    after = 0
    if scope:
        definitions = load_paths(files).defined_in.get(("macro", SCOPE_MACRO), [])
        if not definitions:
            why = f"the rules define no {SCOPE_MACRO} macro for the captures' scope override"
            return not_evaluated(why)
        after = files.index(definitions[-1].file.path) + 1
        files[after:after] = [display_path(captures / scope)]
    ruleset = load_rules(files)
    # The --accept names as `rules test` checks them (the cases of the user's model dirs included).
    cases = evasion_cases(ruleset)
    names = renamed(accepted, cases)
    check_names(names, known_names(examples, cases))
    # The demo's files after the pack (and the scope override) are tuning: a rule of their own that
    # fires on a capture is information, as in `rules test`, not a failed expectation.
    tuning = files[after + 1 :] if scope else files[1:]
    report = run_suite(sysdig, SuiteInput(files, captures, examples, tuple(tuning)), ruleset)
    # The rule examples and evasion cases too, as `rules test` runs them: a tuning that silences an
    # attack no recording holds (a download tool list cut short, an exception too broad) fails here.
    derived = run_examples_and_evasions(sysdig, ruleset, tuning, examples, report, names)
    acceptance = accept(names, report, derived)
    actions = sum(len(verdict.actions) for verdict in report.captures)
    judged = sum(verdict.status != EXAMPLE_NOT_EVALUATED for verdict in derived.examples)
    failures = [f for f in report.all_failures if not acceptance.covers(f)]
    derived_failures = [f for f in derived.failures if not acceptance.covers(f)]
    if not failures and not derived_failures:
        taken = len(report.all_failures) + len(derived.failures)
        return CaptureStage(
            True,
            [
                f"rule conditions: ok: {actions} recorded actions in {len(report.captures)} captures,"
                f" {judged} rule examples and {len(derived.evasions)} evasion cases judged by sysdig"
                f" {sysdig.version} (`serving-guard rules test`), every expectation held"
                + (f", but for {taken} failures accepted (--accept: {', '.join(names)})" if taken else "")
            ],
        )
    shown = derived_failures[:DERIVED_SHOWN]
    more = len(derived_failures) - len(shown)
    return CaptureStage(
        False,
        [
            f"rule conditions: FAILED ({len(failures) + len(derived_failures)}) on the captures, rule"
            " examples and evasion cases (`serving-guard rules test`, rules files in load order:"
            f" {', '.join(files)}):",
            *(f"  {failure}" for failure in failures),
            *(f"  {failure}" for failure in shown),
            *([f"  ... and {more} more (`serving-guard rules test` lists every one)"] if more else []),
            _stop_reason(failures, len(derived_failures)),
        ],
    )


def _stop_reason(capture_failures: list[str], derived_failures: int) -> str:
    if capture_failures:
        return (
            "the demo's alerts are scenario alert templates: with these rules Falco would not send them,"
            " so the demo stops here"
        )
    # Only examples and evasion cases failed: the recorded scenarios still alert.
    return (
        f"the rules fail {derived_failures} rule examples and evasion cases that `serving-guard rules"
        " test` lists (the recorded scenarios still alert); the demo stops here"
    )


def print_stage(stage: CaptureStage, out: TextIO) -> None:
    for line in stage.lines:
        print(line, file=out)
    print(file=out)
