"""`serving-guard verify SCENARIO... --run-id ID [--steps SCENARIO=N,...] --responder URL`: poll the
responder's audit trail until each scenario's expected rule and outcome appear for that run, with an
alert for every step that ran (the steps simulate and replay print), or --timeout passes. The
control passes when nothing has appeared for --settle seconds and a positive scenario of the same
run passed on the same pod. Prints PASS/FAIL per scenario with the reason; exit status 1 on any
failure.

Expectations come from the scenario files (they assume simulators/reference_policy.yaml); with
another policy say what it does: ``--expect runtime-download=annotated``.
"""

from __future__ import annotations

import argparse
import asyncio

from responder.audit import AuditQuery
from responder.client import ResponderClient
from responder.commands.common import (
    SINCE_FORMS,
    add_responder_options,
    client_auth,
    positive_seconds,
    responder_url,
    since_ns,
)
from responder.errors import UserError
from simulators.scenario import (
    Expect,
    Outcome,
    Scenario,
    add_scenarios_dir_option,
    check_run_id,
    load_scenarios,
)
from simulators.verify import Expectation, format_verdicts, poll


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("scenarios", nargs="+", metavar="SCENARIO", help="scenario names, or all")
    parser.add_argument("--run-id", required=True, metavar="ID", help="the run id simulate or replay printed")
    parser.add_argument(
        "--responder",
        required=True,
        metavar="URL",
        type=responder_url,
        help="the responder (GET URL/v1/audit)",
    )
    parser.add_argument(
        "--timeout",
        type=positive_seconds,
        metavar="SECONDS",
        default=60.0,
        help="seconds to wait (default: %(default)s)",
    )
    parser.add_argument(
        "--interval",
        type=positive_seconds,
        metavar="SECONDS",
        default=1.0,
        help="seconds between polls (default: %(default)s)",
    )
    parser.add_argument(
        "--settle",
        type=positive_seconds,
        metavar="SECONDS",
        default=10.0,
        help="how long the control must stay silent, in seconds (default: %(default)s)",
    )
    parser.add_argument(
        "--steps",
        action="append",
        default=[],
        metavar="SCENARIO=N,N...",
        help="the steps of a scenario that ran (as simulate or replay prints them): each must have an alert"
        " of the scenario's rule; without it any one alert of the rule will do",
    )
    parser.add_argument(
        "--pod",
        metavar="NAMESPACE/NAME",
        help="the pod the run happened in: only its alerts count (the control's silence counts only when a"
        " positive scenario passed on it)",
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
    add_scenarios_dir_option(parser)
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


def parse_steps(items: list[str], scenarios: list[Scenario]) -> dict[str, tuple[int, ...]]:
    """``--steps SCENARIO=N,N...`` (each scenario at most once) to the step numbers per scenario."""
    by_name = {s.name: s for s in scenarios}
    steps: dict[str, tuple[int, ...]] = {}
    for item in items:
        name, sep, value = item.partition("=")
        scenario = by_name.get(name)
        if not sep or scenario is None:
            raise UserError(
                f"--steps {item!r}: use SCENARIO=N,N... with a scenario named on the command line"
            )
        if scenario.rule is None:
            raise UserError(f"--steps {item!r}: {name} is the control: it has no steps to find alerts for")
        if name in steps:
            raise UserError(f"--steps {item!r}: {name} given more than once")
        numbers = []
        for part in value.split(","):
            text = part.strip()
            # As many as a scenario has live actions or alerts (simulate numbers the one, replay the other).
            bound = max(len(scenario.live), len(scenario.alerts))
            if not (text.isascii() and text.isdigit()) or not 1 <= int(text) <= bound:
                raise UserError(f"--steps {item!r}: {text!r} is not a step of {name} (1 to {bound})")
            numbers.append(int(text))
        steps[name] = tuple(sorted(set(numbers)))
    return steps


def expectation_for(
    scenario: Scenario,
    run_id: str,
    expect: Expect,
    override: Outcome | None,
    *,
    slack: bool = True,
    steps: tuple[int, ...] | None = None,
    pod: str | None = None,
) -> Expectation:
    if override is not None:
        silent = override is Outcome.SILENT
        expect = Expect(outcome=override, slack=expect.slack and slack and not silent)
    elif not slack:
        expect = expect.model_copy(update={"slack": False})
    return Expectation.of(scenario, run_id, expect, steps=steps, pod=pod)


def run(args: argparse.Namespace) -> int:
    since_ns(args.since)  # checked here; the responder reads the text on its own clock
    scenarios = load_scenarios(args.scenarios_dir).select(args.scenarios)
    run_id = check_run_id(args.run_id)
    overrides = parse_overrides(args.expect, [s.name for s in scenarios])
    steps = parse_steps(args.steps, scenarios)
    pod = None
    if args.pod is not None:
        try:
            pod = "/".join(AuditQuery.parse_pod(args.pod, "--pod"))
        except ValueError as exc:
            raise UserError(str(exc)) from None
    expectations = []
    for scenario in scenarios:
        override = overrides.get(scenario.name)
        if override is not None and (override is Outcome.SILENT) != (scenario.rule is None):
            raise UserError(f"--expect {scenario.name}={override.value}: only the control can expect silence")
        expectations.append(
            expectation_for(
                scenario,
                run_id,
                scenario.expect,
                override,
                slack=not args.no_slack,
                steps=steps.get(scenario.name),
                pod=pod,
            )
        )
    unchecked = [s.name for s in scenarios if s.rule is not None and s.name not in steps]

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
        if unchecked:
            print(
                f"\nnote: without --steps, one alert of its rule is enough for {', '.join(unchecked)}: give"
                " --steps as simulate or replay printed them to require an alert for every step that ran"
            )
        print(f"\n{len(verdicts) - len(failed)} of {len(verdicts)} scenario(s) passed for run {run_id}")
        return 1 if failed else 0

    return asyncio.run(check())
