"""`serving-guard demo [--report demo-report.html]`: every scenario through the real responder on
one machine (no cluster, no network), a table of what happened, and an HTML report. Exit status
0 only if every expectation held, including the control's silence and the forged alert's refusal.
The alerts are scenario alert templates, so the capture suite (`rules test`) runs first and a
failed expectation there stops the demo (see :mod:`simulators.demo_captures`).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from pathlib import Path

from responder.commands.common import positive_seconds
from responder.errors import UserError
from responder.rulespack.paths import display_path
from simulators.alerts import (
    ALERTS_FOLLOW_RULES,
    add_rules_option,
    check_rules_defined,
    chosen_rule_specs,
    default_rules_file,
)
from simulators.demo import (
    DRILL_CASE,
    FORGED_CASE,
    WORKDIR_MARKER,
    DemoResult,
    left_out,
    left_out_line,
    prepare_workdir,
    run_demo,
)
from simulators.demo_captures import capture_stage, not_evaluated, print_stage
from simulators.report import format_by_hand, format_table, row_of, write_report, write_stopped_report
from simulators.scenario import Outcome, add_scenarios_dir_option, load_scenarios

DEFAULT_REPORT = "demo-report.html"
NO_PACK = "no rules pack found"


def configure(parser: argparse.ArgumentParser) -> None:
    report = parser.add_mutually_exclusive_group()
    report.add_argument("--report", help=f"HTML report path (default: {DEFAULT_REPORT})")
    report.add_argument("--no-report", action="store_true", help="do not write the HTML report")
    parser.add_argument(
        "--expect",
        action="append",
        default=[],
        metavar="SCENARIO=OUTCOME",
        help="override what a scenario (or forged-alert) must end as: " + ", ".join(o.value for o in Outcome),
    )
    add_scenarios_dir_option(parser)
    add_rules_option(parser, ALERTS_FOLLOW_RULES, after_scenarios=False)
    parser.add_argument(
        "--workdir",
        metavar="DIR",
        help="keep the demo's files in DIR (config.yaml, journal.db, pki/, responder.log, ...) to look "
        "at afterwards; default: a temporary directory, removed at the end. DIR must be new, empty, "
        f"or one a previous demo run used (it holds {WORKDIR_MARKER}): each run starts clean, first "
        "removing the files the previous run left there (only the demo's own files, nothing else), so "
        "DIR holds the latest run",
    )
    parser.add_argument(
        "--timeout",
        type=positive_seconds,
        metavar="SECONDS",
        default=30.0,
        help="seconds to wait for the responder (default: %(default)g)",
    )
    parser.add_argument(
        "--accept",
        action="append",
        default=[],
        metavar="NAME",
        help="with --rules tuning: accept the failures of an evasion group, evasion case, rule example id,"
        " capture.scap#action or rule, as `serving-guard rules test --accept` does (a deliberate"
        " trade-off of your tuning: said, and the demo goes on; repeatable; an unknown name is an error)",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="show the responder's logs")


def _overrides(items: list[str], known: list[str]) -> dict[str, Outcome]:
    overrides = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or name not in known:
            raise UserError(f"--expect {item!r}: use SCENARIO=OUTCOME; scenarios: {', '.join(known)}")
        try:
            overrides[name] = Outcome(value)
        except ValueError:
            raise UserError(
                f"--expect {item!r}: outcome must be one of {', '.join(o.value for o in Outcome)}"
            ) from None
    return overrides


def _print(result: DemoResult, report: str | None) -> None:
    rows = [row_of(check) for check in result.checks]
    print(format_table(rows))
    failed = [row for row in rows if not row.passed]
    by_hand = result.by_hand
    if by_hand is not None:
        print()
        print(format_by_hand(by_hand))
    print()
    for row in failed:
        print(f"FAIL {row.scenario} (expected {row.expected}): {row.reason}")
    if by_hand is not None and not by_hand.passed:
        print(f"FAIL by hand ({by_hand.case}): {'; '.join(by_hand.problems)}")
    failures = len(failed) + (by_hand is not None and not by_hand.passed)
    if failures:
        print(f"{failures} of {result.expectations} expectations FAILED")
    else:
        print(f"all {result.expectations} expectations held (run {result.run_id})")
    if report:
        print(f"report: {report}")


def run(args: argparse.Namespace) -> int:
    scenario_set = load_scenarios(args.scenarios_dir)
    # A scenario without a demo part is left out (said below); replay still sends it.
    omitted = left_out(list(scenario_set.by_name.values()))
    scenarios = [s for s in scenario_set.by_name.values() if s not in omitted]
    if not scenarios:
        raise UserError(
            f"no scenario in {scenario_set.directory} has a demo part: the demo has nothing to send"
        )
    for item in args.expect:
        name = item.partition("=")[0]
        if any(s.name == name for s in omitted):
            raise UserError(f"--expect {item!r}: {name} has no demo part, so the demo leaves it out")
    overrides = _overrides(args.expect, [*(s.name for s in scenarios), FORGED_CASE, DRILL_CASE])
    chosen = chosen_rule_specs(args.rules)
    specs = chosen if chosen is not None else {}
    # Before anything runs: a rule the files lack or switch off is refused with the scenario's file.
    check_rules_defined(scenarios, specs, scenario_set.directory)
    if args.workdir == "":
        raise UserError("--workdir: the path is empty")
    if args.report == "":
        raise UserError("--report: the path is empty")
    workdir = Path(args.workdir) if args.workdir is not None else None
    if workdir is not None:
        prepare_workdir(workdir)
    # Detection first: the alerts below are templates, so only the captures show the rules still fire.
    rules_files = args.rules or ([display_path(pack)] if (pack := default_rules_file()) is not None else [])
    stage = capture_stage(rules_files, args.accept) if rules_files else not_evaluated(NO_PACK)
    print_stage(stage, sys.stdout)
    report = None if args.no_report else (args.report if args.report is not None else DEFAULT_REPORT)
    if not stage.passed:
        if report:
            # Said in the report too: one an earlier run left there must not stand for this run.
            write_stopped_report(report, stage, omitted)
            print(f"report: {report}")
        return 1
    for scenario in omitted:
        print(left_out_line(scenario))

    def demo(workdir: Path) -> DemoResult:
        return asyncio.run(
            run_demo(
                scenarios, specs, workdir, overrides=overrides, verbose=args.verbose, timeout=args.timeout
            )
        )

    try:
        if workdir is not None:
            result = demo(workdir)
        else:
            with tempfile.TemporaryDirectory(prefix="serving-guard-demo-") as tmp:
                result = demo(Path(tmp))
    except KeyboardInterrupt:
        # Said, not a silent exit 130: the run's cleanup is done, and no report is written.
        print("demo: interrupted; no report written", file=sys.stderr)
        raise
    if report:
        # The header says what the console said first: the rule conditions' result and what was left out.
        write_report(result, report, stage, omitted)
    _print(result, report)
    return 0 if result.ok else 1
