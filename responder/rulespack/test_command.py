"""`serving-guard rules test`: run the pack on recorded syscall captures and print the detection matrix.

Every rule is evaluated by the real libsinsp of Debian's sysdig reading each capture, with the
pack's scope retargeted by an override rules file (the captures are host processes). Load order:
the pack (one file, or several in load order), that scope override, then the user's --override
files (tuning). The expectations (which rule must fire on which action, which parts are benign)
come from the examples file. Then, on the same rules, every rule example of the examples file and
every evasion case, on captures derived from the recordings (a second section; tuning that silences
attacks no recording holds fails there). --accept NAME (repeatable) accepts the failures of an
evasion group, evasion case, example, capture action or rule as a deliberate trade-off of the tuning: they
are printed as "accepted: ..." and fail nothing. Exit status: 0 all expectations met (or accepted);
1 a failure; 2 an error in what was given (a rules file at FILE:LINE, a missing captures directory,
an unknown --accept name); 3 sysdig is not installed (an error instead when
SERVING_GUARD_REQUIRE_SYSDIG=1).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Mapping
from pathlib import Path

from responder.errors import UserError
from responder.rulespack.accept import Acceptance, accept, check_names, known_names, renamed
from responder.rulespack.check import ExitCode, compile_problems, tuning_errors, tuning_warnings
from responder.rulespack.derived_matrix import render_derived_json, render_derived_table
from responder.rulespack.derived_report import DerivedReport
from responder.rulespack.derived_suite import run_examples_and_evasions
from responder.rulespack.evasion_cases import evasion_cases
from responder.rulespack.examples import ExamplesFile, load_examples
from responder.rulespack.expand import RuleSet
from responder.rulespack.matrix import render_json, render_table
from responder.rulespack.paths import default_captures, default_examples, default_pack, display_path
from responder.rulespack.problems import Problem
from responder.rulespack.suite import SuiteInput, capture_files, load_rules, run_suite
from responder.rulespack.sysdig import REQUIRE_ENV, Sysdig, sysdig_required
from responder.rulespack.sysdig_compat import StandIn

_AFFECTS = re.compile(r"\(it affects (\d+) rules: ")


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--captures",
        type=Path,
        default=None,
        metavar="DIR",
        help="directory of .scap captures (default: tests/fixtures/captures)",
    )
    parser.add_argument(
        "--format",
        choices=("table", "json"),
        default="table",
        help="table: the detection matrix (default); json: the same as one JSON document",
    )
    parser.add_argument(
        "--rules",
        action="extend",
        nargs="+",
        default=None,
        metavar="FILE",
        help="the rules pack, in load order if it is several files (default:"
        " rules/serving_guard_rules.yaml); the scope override loads after them",
    )
    parser.add_argument(
        "--override",
        action="extend",
        nargs="+",
        default=[],
        metavar="FILE",
        help="rules files of yours (tuning) loaded after the pack and the scope override, in load order",
    )
    parser.add_argument(
        "--scope-override",
        default=None,
        metavar="FILE",
        help="the rules file that retargets the pack's scope at the captures, loaded right after the"
        " pack (default: the examples' captures.scope_override, looked up in the captures"
        " directory); replace it for a pack without serving_guard_scope ('' loads none)",
    )
    parser.add_argument(
        "--examples",
        type=Path,
        default=None,
        metavar="FILE",
        help="expectations (default: rules/examples.yaml)",
    )
    parser.add_argument(
        "--accept",
        action="append",
        default=[],
        metavar="NAME",
        help="accept the failures of an evasion group, an evasion case, a rule example id, a capture"
        " action (capture.scap#action) or a rule, as printed, as a deliberate trade-off of your"
        " tuning: printed as 'accepted: ...', exit 0 (repeatable; an unknown name is an error)",
    )


def run(args: argparse.Namespace) -> int:
    sysdig = Sysdig.find()
    if sysdig is None:
        if sysdig_required():
            print(
                f"error: sysdig is not installed but {REQUIRE_ENV}=1 (apt-get install sysdig)",
                file=sys.stderr,
            )
            return int(ExitCode.ERRORS)
        print(
            "skipped: sysdig not installed (apt-get install sysdig); no capture was evaluated",
            file=sys.stderr,
        )
        return int(ExitCode.SYSDIG_SKIPPED)
    captures = args.captures or default_captures()
    # Before the scope override is looked up in it: its absence is the error, not the override's.
    capture_files(captures)
    examples = load_examples(args.examples or default_examples())
    rules_files = _rules_files(args, captures, examples)
    ruleset = load_rules(rules_files)
    # The model dirs the user's files add get their cases too (their names can be accepted).
    evasions = evasion_cases(ruleset)
    names = renamed(args.accept, evasions)  # an evasion case's old id, its label's end spaces unspelled
    check_names(names, known_names(examples, evasions))
    refused = compile_problems(ruleset, sysdig)
    if refused:
        # Said where the text came from, before any capture is read (sysdig's own words name an
        # offset in the expanded condition, not a line of yours).
        for problem in refused:
            print(problem.format(), file=sys.stderr)
        count = _refused_count(refused)
        raise UserError(f"{count} rule condition(s) or output(s) do not compile (above); nothing was tested")
    report = run_suite(sysdig, SuiteInput(rules_files, captures, examples, tuple(args.override)), ruleset)
    derived = run_examples_and_evasions(sysdig, ruleset, args.override, examples, report, names)
    acceptance = accept(names, report, derived)
    unevaluated = _unevaluated_tuning(ruleset, report.stand_ins, args.override)
    # rules check's warnings on the user's files: what no capture can show (Triton's image in an
    # exception silences every Triton pod, and the captures still pass).
    warnings = [problem.format() for problem in tuning_warnings(ruleset) if problem.file in args.override]
    # rules check's errors on the lists and macros that must stay in step, in the user's files (a
    # model dir appended without its '..' glob): no --accept takes them.
    errors = [problem.format() for problem in tuning_errors(ruleset, args.override)]
    failures = [f for f in report.all_failures + derived.failures if not acceptance.covers(f)]
    ok = not failures and not errors
    if args.format == "json":
        document = render_json(report)
        document["ok"] = ok
        document["captures_ok"] = report.ok
        document["examples_and_evasions"] = render_derived_json(derived)
        document["failures"] = failures
        document["accepted"] = sorted(acceptance.accepted)
        document["accepted_but_held"] = list(acceptance.unused)
        document["tuning_not_evaluated"] = unevaluated
        document["warnings"] = warnings
        document["errors"] = errors
        print(json.dumps({**document, "rules_files": rules_files}, indent=2))
    else:
        # Said first: a rule that did not fire is read against what was loaded.
        print(f"rules files, in load order: {', '.join(rules_files)}\n")
        print(render_table(report, acceptance.accepted))
        print()
        print(render_derived_table(derived, report.rule_ids(), sysdig.version, acceptance.accepted))
        print()
        result = _result(report.all_failures, derived, acceptance, len(errors), warned=len(warnings))
        print("\n".join([*unevaluated, *warnings, *errors, *result]))
    return int(ExitCode.OK if ok else ExitCode.ERRORS)


def _unevaluated_tuning(
    ruleset: RuleSet, stand_ins: Mapping[str, tuple[StandIn, ...]], overrides: list[str]
) -> list[str]:
    """What of the user's --override files 2022 libsinsp cannot evaluate (an IPv6 network added to
    the egress allow-list, say): the results above were reached without it, so an "ok" there may
    be an alert Falco would not send. Said at the user's file and line."""
    said = []
    for rule, replaced in stand_ins.items():
        expanded = ruleset.expanded.get(rule)
        if expanded is None:
            continue
        for stand_in in replaced:
            file, line = expanded.locate(stand_in.token)
            if file in overrides:
                said.append(
                    f"not evaluated: {file}:{line}: {stand_in.clause} ({stand_in.reason}): rule '{rule}' was"
                    " run without it, so where it would keep Falco quiet the results above still alert"
                )
    return said


def _refused_count(refused: list[Problem]) -> int:
    """The rule conditions and outputs refused: a problem merged for the rules one text is expanded
    into counts each of them."""
    return sum(int(m.group(1)) if (m := _AFFECTS.search(p.message)) else 1 for p in refused)


def _result(
    capture_failures: list[str],
    derived: DerivedReport,
    acceptance: Acceptance,
    errors: int = 0,
    *,
    warned: int = 0,
) -> list[str]:
    """The closing lines. ``warned``: the warnings on the user's files (what they switch off that
    no capture can show), said in the "ok" too: it proves nothing of them."""

    def left(failures: list[str]) -> int:
        return sum(not acceptance.covers(failure) for failure in failures)

    # Evasion cases, not their failure lines (a case judging two sets of events can fail twice).
    evasion_cases = len(
        {keys[0] for text, keys in derived.keyed_evasion_failures() if not acceptance.covers(text)}
    )
    counts = [left(capture_failures), left(derived.example_failures), evasion_cases]
    taken = len(capture_failures) + len(derived.failures) - sum(counts[:2]) - left(derived.evasion_failures)
    notes = [
        f"--accept {name}: nothing it names failed (the acceptance can go)" for name in acceptance.unused
    ]
    if derived.not_judged:
        notes.append(f"not judged: {len(derived.not_judged)} evasion cases (listed above, with why)")
    if not any(counts) and not errors:
        but = f", but {taken} failures you accepted (--accept {', '.join(acceptance.names)})" if taken else ""
        unproven = (
            f"; {warned} warning(s) on your files above: what they switch off, no capture shows"
            if warned
            else ""
        )
        return [
            *notes,
            f"result: ok: every capture expectation, rule example and evasion case held{but}{unproven}",
        ]
    checks = f", rules check errors {errors} (above)" if errors else ""
    return [
        *notes,
        f"result: FAILED ({sum(counts) + errors}: captures {counts[0]}, examples {counts[1]},"
        f" evasion cases {counts[2]}{checks})" + (f"; {taken} accepted" if taken else ""),
    ]


def _rules_files(args: argparse.Namespace, captures: Path, examples: ExamplesFile) -> list[str]:
    """The pack, the scope override (--scope-override, else the examples'), then the user's
    --override files: tuning adds to the scope override, as it adds to the pack in Falco."""
    scope = args.scope_override
    if scope is None and examples.captures.scope_override:
        scope = display_path(captures / examples.captures.scope_override)
    rules = args.rules or [display_path(default_pack())]
    return [*rules, *([scope] if scope else []), *args.override]
