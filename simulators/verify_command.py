"""`serving-guard verify SCENARIO... --run-id ID --responder URL`: poll the responder's audit trail
until each scenario's expected rule and outcome appear for that run (the control: until nothing
has appeared for --settle seconds), or --timeout passes. Prints PASS/FAIL per scenario with the
reason; exit status 1 on any failure.

Expectations come from the scenario files (they assume simulators/reference_policy.yaml); with
another policy say what it does: ``--expect runtime-download=annotated``.
"""

from __future__ import annotations

import argparse
import asyncio

from responder.client import ResponderClient
from responder.commands.common import (
    SINCE_FORMS,
    add_responder_options,
    client_auth,
    non_negative_seconds,
    positive_seconds,
    responder_url,
    since_ns,
)
from responder.errors import UserError
from simulators.scenario import Expect, Outcome, Scenario, check_run_id, load_scenarios
from simulators.verify import Expectation, format_verdicts, poll


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("scenarios", nargs="+", metavar="SCENARIO", help="scenario names, or all")
    parser.add_argument("--run-id", required=True, help="the run id simulate or replay printed")
    parser.add_argument(
        "--responder",
        required=True,
        metavar="URL",
        type=responder_url,
        help="the responder (GET URL/v1/audit)",
    )
    parser.add_argument(
        "--timeout", type=positive_seconds, default=60.0, help="seconds to wait (default: %(default)s)"
    )
    parser.add_argument(
        "--interval", type=positive_seconds, default=1.0, help="seconds between polls (default: %(default)s)"
    )
    parser.add_argument(
        "--settle",
        type=non_negative_seconds,
        default=10.0,
        help="how long the control must stay silent, in seconds (default: %(default)s)",
    )
    parser.add_argument(
        "--since",
        default="2h",
        help=f"look at alerts received since: {SINCE_FORMS} (default: %(default)s)",
    )
    parser.add_argument(
        "--expect",
        action="append",
        default=[],
        metavar="SCENARIO=OUTCOME",
        help="override a scenario's expected outcome: " + ", ".join(o.value for o in Outcome),
    )
    parser.add_argument("--no-slack", action="store_true", help="do not require a Slack message")
    parser.add_argument("--scenarios-dir", help="read scenario definitions from this directory")
    add_responder_options(parser)


def parse_overrides(items: list[str], known: list[str]) -> dict[str, Outcome]:
    overrides = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or name not in known:
            raise UserError(
                f"--expect {item!r}: use SCENARIO=OUTCOME with a scenario named on the command line"
            )
        try:
            overrides[name] = Outcome(value)
        except ValueError:
            choices = ", ".join(o.value for o in Outcome)
            raise UserError(f"--expect {item!r}: outcome must be one of {choices}") from None
    return overrides


def expectation_for(
    scenario: Scenario, run_id: str, expect: Expect, override: Outcome | None, *, slack: bool = True
) -> Expectation:
    if override is not None:
        silent = override is Outcome.SILENT
        expect = Expect(outcome=override, slack=expect.slack and slack and not silent)
    elif not slack:
        expect = expect.model_copy(update={"slack": False})
    return Expectation.of(scenario, run_id, expect)


def run(args: argparse.Namespace) -> int:
    since_ns(args.since)  # checked here; the responder reads the text on its own clock
    scenarios = load_scenarios(args.scenarios_dir).select(args.scenarios)
    run_id = check_run_id(args.run_id)
    overrides = parse_overrides(args.expect, [s.name for s in scenarios])
    expectations = []
    for scenario in scenarios:
        override = overrides.get(scenario.name)
        if override is not None and (override is Outcome.SILENT) != (scenario.rule is None):
            raise UserError(f"--expect {scenario.name}={override.value}: only the control can expect silence")
        expectations.append(
            expectation_for(scenario, run_id, scenario.expect, override, slack=not args.no_slack)
        )

    auth = client_auth(args)

    async def check() -> int:
        async with ResponderClient(args.responder, auth, flag="--responder") as client:
            verdicts = await poll(
                client,
                expectations,
                timeout=args.timeout,
                interval=args.interval,
                settle=args.settle,
                since=args.since,
            )
        print(format_verdicts(verdicts))
        failed = [v for v in verdicts if not v.passed]
        print(f"\n{len(verdicts) - len(failed)} of {len(verdicts)} scenario(s) passed for run {run_id}")
        return 1 if failed else 0

    return asyncio.run(check())
