"""`serving-guard simulate SCENARIO...`: perform scenarios' harmless attack actions in this container.

Run it in a serving pod (kubectl exec, or the Job in simulators/k8s/), then check the responder
with `serving-guard verify ... --run-id ID`. Exit status 1 when an action failed, a scenario
could perform none of its actions here, or something could not be cleaned up.
"""

from __future__ import annotations

import argparse
import secrets
import tempfile
from pathlib import Path

from responder.commands.common import positive_seconds
from simulators.live import (
    DEFAULT_MODEL_DIR,
    DEFAULT_SHM_DIR,
    RUN_ENV,
    LiveSettings,
    ScenarioRun,
    StepStatus,
    Target,
    run_scenarios,
)
from simulators.scenario import check_run_id, load_scenarios


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("scenarios", nargs="+", metavar="SCENARIO", help="scenario names, or all")
    parser.add_argument(
        "--target",
        metavar="HOST:PORT",
        help="where anomalous-egress connects (required for it; never a default); reverse shells"
        " always connect to a listener of their own on 127.0.0.1",
    )
    parser.add_argument("--run-id", help="tag for this run (default: a new random id)")
    parser.add_argument(
        "--workdir",
        default=tempfile.gettempdir(),
        help="directory under which the run creates (and removes) its own directory (default: %(default)s)",
    )
    parser.add_argument(
        "--model-dir",
        default=DEFAULT_MODEL_DIR,
        help="the serving pod's model directory (default: %(default)s)",
    )
    parser.add_argument(
        "--shm-dir",
        default=DEFAULT_SHM_DIR,
        help="shared-memory directory for drift-exec (default: %(default)s)",
    )
    parser.add_argument("--scenarios-dir", help="read scenario definitions from this directory")
    parser.add_argument(
        "--timeout",
        type=positive_seconds,
        metavar="SECONDS",
        default=10.0,
        help="seconds each action may take (default: %(default)g)",
    )


def _print_run(run: ScenarioRun) -> None:
    print(f"{run.scenario.name}  ({run.scenario.rule or 'control: nothing may fire'})")
    for step in run.steps:
        print(f"  {step.status.value:<8} {step.what}: {step.detail}")
    for problem in run.cleanup_problems:
        print(f"  CLEANUP  {problem}")
    if run.performed == 0:
        print("  -> no action could run here: this scenario proves nothing in this container")


def run(args: argparse.Namespace) -> int:
    scenarios = load_scenarios(args.scenarios_dir).select(args.scenarios)
    run_id = check_run_id(args.run_id) if args.run_id else secrets.token_hex(6)
    settings = LiveSettings(
        run_id=run_id,
        workdir=Path(args.workdir),
        model_dir=Path(args.model_dir),
        shm_dir=Path(args.shm_dir),
        target=Target.parse(args.target) if args.target else None,
        timeout_seconds=args.timeout,
    )
    missing = [s.name for s in scenarios if s.needs_target and settings.target is None]
    if missing:
        from responder.errors import UserError

        raise UserError(
            f"{', '.join(missing)} connect(s) out and need(s) an explicit --target HOST:PORT "
            "(an address you control; nothing connects anywhere by default)"
        )
    print(f"run id {run_id}: processes carry {RUN_ENV}={run_id} and sg-run={run_id}.<scenario>")
    runs = run_scenarios(scenarios, settings)
    for scenario_run in runs:
        _print_run(scenario_run)
    failed = [r.scenario.name for r in runs if not r.ok]
    skipped = sum(1 for r in runs for s in r.steps if s.status is StepStatus.SKIPPED)
    names = " ".join(s.name for s in scenarios)
    print(f"\ncheck the responder: serving-guard verify {names} --run-id {run_id} --responder URL")
    if skipped:
        print(f"{skipped} action(s) skipped (see above): they could not run in this container")
    if failed:
        print(f"FAILED: {', '.join(failed)}")
        return 1
    return 0
