"""`serving-guard verify SCENARIO... --run-id ID [--steps SCENARIO=N,...] (--responder URL | --config
FILE | --journal FILE)`: poll the responder's audit trail (over HTTP, or from its journal file: for a
responder without the HTTP input, or alerts fed to `ingest`) until each scenario's expected rule and
outcome appear for that run, with an alert for every step that ran (the steps simulate and replay
print), or --timeout passes. The control passes when nothing has appeared for --settle seconds and a
positive scenario of the same run passed on the same pod. Prints PASS/FAIL per scenario with the
reason; exit status 1 on any failure.

Expectations come from the scenario files (they assume simulators/reference_policy.yaml); with
another policy say what it does: ``--expect runtime-download=annotated``, or for every scenario
named, ``--expect all=dry_run`` (a responder with guardrails.dry_run on).
"""

from __future__ import annotations

import argparse
import asyncio
from contextlib import AbstractAsyncContextManager, nullcontext

from responder.audit.query import AuditQuery
from responder.client import ResponderClient
from responder.commands.common import (
    SINCE_FORMS,
    add_responder_options,
    client_auth,
    positive_seconds,
    responder_url,
    since_ns,
)
from responder.config import load_config
from responder.errors import UserError
from simulators.scenario import (
    Expect,
    Outcome,
    Scenario,
    add_scenarios_dir_option,
    check_run_id,
    load_scenarios,
)
from simulators.verify import Expectation, JournalTrail, TrailSource, format_verdicts, poll

# `--expect all=OUTCOME`: the outcome of every scenario named (but the control), unless one is given
# for the scenario itself. "all" names no scenario (SCENARIO... takes it for every one).
ALL = "all"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("scenarios", nargs="+", metavar="SCENARIO", help="scenario names, or all")
    parser.add_argument("--run-id", required=True, metavar="ID", help="the run id simulate or replay printed")
    trail = parser.add_mutually_exclusive_group(required=True)
    trail.add_argument(
        "--responder",
        metavar="URL",
        type=responder_url,
        help="ask a running responder (GET URL/v1/audit)",
    )
    trail.add_argument(
        "--config",
        metavar="FILE",
        help="read the journal named in this responder config (no HTTP input needed: gRPC, ingest)",
    )
    trail.add_argument("--journal", metavar="FILE", help="read this journal file")
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
        help="override a scenario's expected outcome (all=OUTCOME: every scenario named but the control,"
        " a scenario's own --expect winning): " + ", ".join(o.value for o in Outcome),
    )
    parser.add_argument("--no-slack", action="store_true", help="do not require a Slack message")
    add_scenarios_dir_option(parser)
    add_responder_options(parser)


def parse_overrides(items: list[str], known: list[str]) -> dict[str, Outcome]:
    """``--expect SCENARIO=OUTCOME`` per scenario named; ``all=OUTCOME`` is kept under ALL (see
    expected_outcome)."""
    overrides = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or (name not in known and name != ALL):
            raise UserError(
                f"--expect {item!r}: use SCENARIO=OUTCOME with a scenario named on the command line,"
                f" or {ALL}=OUTCOME"
            )
        try:
            overrides[name] = Outcome(value)
        except ValueError:
            choices = ", ".join(o.value for o in Outcome)
            raise UserError(f"--expect {item!r}: outcome must be one of {choices}") from None
    if overrides.get(ALL) is Outcome.SILENT:
        raise UserError(
            f"--expect {ALL}=silent: {ALL}= sets the outcome of the scenarios other than the control,"
            " and only the control can expect silence"
        )
    return overrides


def expected_outcome(scenario: Scenario, overrides: dict[str, Outcome]) -> Outcome | None:
    """The override for ``scenario``: its own ``--expect``, else ``all=`` for a positive scenario (the
    control expects silence whatever the others do); None: the scenario file's."""
    own = overrides.get(scenario.name)
    if own is not None or scenario.rule is None:
        return own
    return overrides.get(ALL)


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
        override = expected_outcome(scenario, overrides)
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

    source = trail_source(args)

    async def check() -> int:
        async with source as client:
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


# The options that reach a running responder: (dest, flag). Reading a journal file uses none of them.
RESPONDER_OPTIONS = (
    ("ca_file", "--ca"),
    ("cert_file", "--cert"),
    ("key_file", "--key"),
    ("token_file", "--token-file"),
)


def trail_source(args: argparse.Namespace) -> AbstractAsyncContextManager[TrailSource]:
    """Where the trail is read: the responder over HTTP (its credentials checked now), or the journal
    file, --journal or the one --config names (the config checked now, the file when read)."""
    if args.responder is not None:
        return ResponderClient(args.responder, client_auth(args), flag="--responder")
    flag = "--journal" if args.journal is not None else "--config"
    for dest, option in RESPONDER_OPTIONS:
        if getattr(args, dest) is not None:
            raise UserError(f"{option} applies to --responder only, not to {flag}")
    path = args.journal if args.journal is not None else load_config(args.config).journal.path
    return nullcontext(JournalTrail(path))
