"""`serving-guard demo [--report demo-report.html]`: every scenario through the real responder on
one machine (no cluster, no network), a table of what happened, and an HTML report. Exit status
0 only if every expectation held, including the control's silence and the forged alert's refusal.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
from pathlib import Path

from responder.errors import UserError
from simulators.alerts import default_rules_file, load_rule_specs
from simulators.demo import FORGED_CASE, DemoResult, run_demo
from simulators.report import format_table, row_of, write_report
from simulators.scenario import Outcome, load_scenarios


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--report", default="demo-report.html", help="HTML report path (default: %(default)s)"
    )
    parser.add_argument("--no-report", action="store_true", help="do not write the HTML report")
    parser.add_argument(
        "--expect",
        action="append",
        default=[],
        metavar="SCENARIO=OUTCOME",
        help="override what a scenario (or forged-alert) must end as: " + ", ".join(o.value for o in Outcome),
    )
    parser.add_argument("--scenarios-dir", help="read scenario definitions from this directory")
    parser.add_argument("--rules", help="rules file the alerts follow (default: rules/ of this checkout)")
    parser.add_argument(
        "--workdir",
        help="keep the demo's files here (config, journal, PKI, responder.log); default: a temp dir",
    )
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for the responder")
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
    print()
    for row in failed:
        print(f"FAIL {row.scenario} (expected {row.expected}): {row.reason}")
    if failed:
        print(f"{len(failed)} of {len(rows)} expectations FAILED")
    else:
        print(f"all {len(rows)} expectations held (run {result.run_id})")
    if report:
        print(f"report: {report}")


def run(args: argparse.Namespace) -> int:
    scenario_set = load_scenarios(args.scenarios_dir)
    scenarios = list(scenario_set.by_name.values())
    overrides = _overrides(args.expect, [*scenario_set.names(), FORGED_CASE])
    pack = Path(args.rules) if args.rules else default_rules_file()
    specs = load_rule_specs(pack) if pack is not None else {}

    def demo(workdir: Path) -> DemoResult:
        return asyncio.run(
            run_demo(
                scenarios, specs, workdir, overrides=overrides, verbose=args.verbose, timeout=args.timeout
            )
        )

    if args.workdir:
        workdir = Path(args.workdir)
        workdir.mkdir(parents=True, exist_ok=True)
        result = demo(workdir)
    else:
        with tempfile.TemporaryDirectory(prefix="serving-guard-demo-") as tmp:
            result = demo(Path(tmp))
    report = None if args.no_report else args.report
    if report:
        write_report(result, report)
    _print(result, report)
    return 0 if result.ok else 1
