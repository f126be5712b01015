"""`serving-guard simulate SCENARIO...`: perform scenarios' harmless attack actions in this container.

Run it in a serving pod (kubectl exec, or the Job in simulators/k8s/), then check the responder
with `serving-guard verify ... --run-id ID`. Exit status 1 when an action failed, a scenario
could perform none of its actions here, or something could not be cleaned up.
"""

from __future__ import annotations

import argparse
import ipaddress
import secrets
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

from responder.commands.common import positive_seconds
from responder.errors import UserError
from responder.rulespack.expand import load_paths
from simulators.alerts import default_rules_file
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
from simulators.scenario import Scenario, check_run_id, load_scenarios

# The rules pack's lists of destinations a serving pod may reach without an anomalous-egress alert.
ALLOWED_NETWORKS = "serving_guard_allowed_egress_networks"
ALLOWED_PORTS = "serving_guard_allowed_egress_ports"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("scenarios", nargs="+", metavar="SCENARIO", help="scenario names, or all")
    parser.add_argument(
        "--target",
        metavar="HOST:PORT",
        help="where anomalous-egress connects (required for it; never a default); reverse shells"
        " always connect to a listener of their own on 127.0.0.1",
    )
    parser.add_argument(
        "--rules",
        action="append",
        metavar="FILE",
        help="rules file(s) in load order that --target is checked against: a destination their allowed"
        " egress networks or ports hold fires no alert (default: rules/ of this checkout)",
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


def allowed_by_pack(target: Target, lists: Mapping[str, Sequence[str]]) -> str | None:
    """What in the pack's ``lists`` lets an egress to ``target`` pass without an alert: its port
    allowed everywhere, or its IP address in the allowed networks; None when the rule fires for it
    (a host name is not resolved here: that would be traffic, and it may resolve elsewhere)."""
    if str(target.port) in lists.get(ALLOWED_PORTS, ()):
        return f"port {target.port} is in {ALLOWED_PORTS}"
    try:
        address = ipaddress.ip_address(target.host)
    except ValueError:
        return None
    for item in lists.get(ALLOWED_NETWORKS, ()):
        try:
            network = ipaddress.ip_network(item, strict=False)
        except ValueError:
            continue  # not a network this check can read (Falco would refuse it anyway)
        if address.version == network.version and address in network:
            return f"{address} is in {ALLOWED_NETWORKS} ({network})"
    return None


def _check_target(target: Target, connecting: Sequence[Scenario], rules: list[str] | None) -> None:
    """Warn when the rules pack allows the egress ``connecting`` scenarios make: their rule fires
    no alert for it, so the run proves nothing (the actions still run: the target is the user's)."""
    if rules is None:
        pack = default_rules_file()
        if pack is None:
            print(
                "note: no rules pack found (use --rules): --target is not checked against it", file=sys.stderr
            )
            return
        rules = [str(pack)]
    why = allowed_by_pack(target, load_paths(rules).list_items)
    if why is None:
        return
    names = ", ".join(s.name for s in connecting)
    fired = ", ".join(repr(s.rule) for s in connecting)
    print(
        f"warning: --target {target}: {why} of {', '.join(rules)}: rule {fired} fires no alert for it,"
        f" so {names} proves nothing here; give a public address you control",
        file=sys.stderr,
    )


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
        raise UserError(
            f"{', '.join(missing)} connect(s) out and need(s) an explicit --target HOST:PORT "
            "(an address you control; nothing connects anywhere by default)"
        )
    connecting = [s for s in scenarios if s.needs_target]
    if connecting and settings.target is not None:
        _check_target(settings.target, connecting, args.rules)
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
