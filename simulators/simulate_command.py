"""`serving-guard simulate SCENARIO...`: perform scenarios' harmless attack actions in this container.

Run it in a serving pod (kubectl exec, or the Job in simulators/k8s/), then check the responder
with the `serving-guard verify ... --run-id ID --steps ...` command it prints. Exit status 1 when an
action failed, a scenario could perform none of its actions here, or something could not be
cleaned up. Stopped by SIGTERM, SIGHUP or ^C, it removes what the run created before it exits;
`simulate --cleanup` removes what a run killed outright left. A replay-only scenario (no live
actions) is skipped with one line; naming only such scenarios is an error.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import secrets
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from responder.commands.common import positive_seconds
from responder.errors import UserError
from responder.rulespack.expand import load_paths
from simulators.alerts import (
    add_rules_option,
    check_rules_enabled,
    default_rules_file,
    field_refs,
    not_a_rules_file,
    not_in_pack,
    rules_took_the_scenarios,
    scenario_rules,
)
from simulators.live import (
    DEFAULT_MODEL_DIR,
    DEFAULT_SHM_DIR,
    MODEL_EXTENSIONS,
    RUN_ENV,
    ExitOnSignals,
    LiveSettings,
    ScenarioRun,
    ScenarioRunner,
    StepStatus,
    Target,
    find_leftovers,
    remove_leftovers,
)
from simulators.scenario import (
    DriftExecAction,
    ModelFileAction,
    ReadFileAction,
    Scenario,
    ServeModelAction,
    add_scenarios_dir_option,
    check_run_id,
    load_scenarios,
)

# The rules pack's lists of destinations a serving pod may reach without an anomalous-egress alert.
ALLOWED_NETWORKS = "serving_guard_allowed_egress_networks"
ALLOWED_PORTS = "serving_guard_allowed_egress_ports"
# Where the pack expects models (the tampering rule watches only these; the model-load rule fires
# for a model read anywhere else), and where the drift rule takes any executable for a dropped one.
MODEL_DIRS = "serving_guard_model_dirs"
EXEC_DIRS = "serving_guard_writable_exec_dirs"
TAMPERING_RULE = "Model artifact tampering in serving pod"
MODEL_LOAD_RULE = "Unexpected model file load in serving pod"
DRIFT_RULE = "Drift: new executable in serving pod"


def configure(parser: argparse.ArgumentParser) -> None:
    # Written out: argparse would put SCENARIO last, after --rules, which takes every word after it.
    parser.usage = (
        "%(prog)s SCENARIO... [--target HOST:PORT] [--rules FILE [FILE ...]] [--run-id ID]\n"
        "       [--workdir DIR] [--model-dir DIR] [--shm-dir DIR] [--scenarios-dir DIR]\n"
        "       [--timeout SECONDS]\n"
        "       %(prog)s --cleanup [--workdir DIR] [--model-dir DIR] [--shm-dir DIR]"
    )
    parser.add_argument("scenarios", nargs="*", metavar="SCENARIO", help="scenario names, or all")
    parser.add_argument(
        "--target",
        metavar="HOST:PORT",
        help="where anomalous-egress connects (required for it; never a default); reverse shells"
        " always connect to a listener of their own on 127.0.0.1",
    )
    add_rules_option(
        parser,
        "rules files in load order that --target, --model-dir, --workdir and --shm-dir are checked"
        " against: a destination their allowed egress networks or ports hold fires no alert, nor does"
        " tampering outside their model dirs; they must define every rule the scenarios expect to fire",
        after_scenarios=True,
    )
    parser.add_argument("--run-id", metavar="ID", help="tag for this run (default: a new random id)")
    parser.add_argument(
        "--workdir",
        default=tempfile.gettempdir(),
        metavar="DIR",
        help="directory under which the run creates (and removes) its own directory (default: %(default)s)",
    )
    parser.add_argument(
        "--model-dir",
        default=DEFAULT_MODEL_DIR,
        metavar="DIR",
        help="the serving pod's model directory (default: %(default)s)",
    )
    parser.add_argument(
        "--shm-dir",
        default=DEFAULT_SHM_DIR,
        metavar="DIR",
        help="shared-memory directory for drift-exec (default: %(default)s)",
    )
    add_scenarios_dir_option(parser)
    parser.add_argument(
        "--timeout",
        type=positive_seconds,
        metavar="SECONDS",
        default=10.0,
        help="seconds each action may take (default: %(default)g)",
    )
    parser.add_argument(
        "--cleanup",
        action="store_true",
        help="run nothing: remove what earlier runs left (sg-run=* in --workdir, --shm-dir and --model-dir)"
        " when they were killed before they could clean up",
    )


def skipped_line(scenario: Scenario) -> str:
    """What simulate says of a replay-only scenario it skips (one line)."""
    return (
        f"SKIPPED {scenario.name}: replay-only (no live actions: an alert shape with no harmless action"
        f" to perform here); send its alerts with serving-guard replay {scenario.name}"
    )


def _print_run(run: ScenarioRun) -> None:
    print(f"{run.scenario.name}  ({run.scenario.rule or 'control: nothing may fire'})")
    for step in run.steps:
        print(f"  {step.status.value:<8} [{step.number}] {step.what}: {step.detail}")
    for problem in run.cleanup_problems:
        print(f"  CLEANUP  {problem}")
    if run.performed == 0 and run.steps:
        skipped = sum(1 for step in run.steps if step.status is StepStatus.SKIPPED)
        if run.failed:
            also = f", {skipped} skipped (could not run here)" if skipped else ""
            print(
                f"  -> no action succeeded: {run.failed} failed (timed out or errored){also}:"
                " this scenario proves nothing until that is fixed"
            )
        else:
            print(
                "  -> no action could run here (all skipped): this scenario proves nothing in this container"
            )


# -- what the rules pack makes of the run's settings ----------------------------------------------


@dataclass
class PackChecks:
    """What in the run's settings the rules pack makes pointless: warnings (printed before the
    run), and per scenario the steps whose alerts cannot be told apart (left out of --steps)."""

    warnings: list[str] = field(default_factory=list)
    untold_steps: dict[str, set[int]] = field(default_factory=dict)


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


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def pmatch(path: Path | str, directories: Sequence[str]) -> str | None:
    """The first of ``directories`` that ``path`` is or lies below, as Falco's pmatch compares
    them (whole path components; the path made absolute, links not resolved: Falco sees the path
    as opened)."""
    text = os.path.normpath(os.path.abspath(path))
    for directory in directories:
        prefix = os.path.normpath(directory) if directory.startswith("/") else None
        if prefix is None:
            continue
        if text == prefix or text.startswith(prefix.rstrip("/") + "/"):
            return directory
    return None


def _names(scenarios: Sequence[Scenario]) -> str:
    return ", ".join(s.name for s in scenarios)


def check_settings(
    scenarios: Sequence[Scenario],
    settings: LiveSettings,
    lists: Mapping[str, Sequence[str]],
    where: str,
) -> list[str]:
    """Warnings for settings the pack's ``lists`` (read from ``where``) make a scenario prove
    nothing with: its rule cannot fire there, or another rule fires instead. The actions still run
    (the directories and the target are the user's)."""
    warnings = []
    if settings.target is not None and any(s.needs_target for s in scenarios):
        connecting = [s for s in scenarios if s.needs_target]
        why = allowed_by_pack(settings.target, lists)
        fired = ", ".join(repr(s.rule) for s in connecting)
        if why is not None:
            warnings.append(
                f"warning: --target {settings.target}: {why} of {where}: rule {fired} fires no alert for it,"
                f" so {_names(connecting)} proves nothing here; give a public address you control"
            )
        elif not _is_ip(settings.target.host) and str(settings.target.port) not in lists.get(
            ALLOWED_PORTS, ()
        ):
            warnings.append(
                f"note: --target {settings.target}: a host name is not checked against {ALLOWED_NETWORKS}"
                f" of {where} (it is not resolved here, and may resolve elsewhere): if it resolves to an"
                f" allowed network, rule {fired} fires no alert; pass an IP address to have it checked"
            )
    model_dirs = lists.get(MODEL_DIRS)
    if model_dirs is not None:
        known = ", ".join(model_dirs)
        in_model_dir = pmatch(settings.model_dir, model_dirs)
        tampering = [s for s in scenarios if any(isinstance(a, ModelFileAction) and a.fires for a in s.live)]
        if in_model_dir is None and tampering:
            warnings.append(
                f"warning: --model-dir {settings.model_dir} is not in {MODEL_DIRS} of {where} ({known}):"
                f" rule {TAMPERING_RULE!r} never fires for changes there, so {_names(tampering)} proves"
                " nothing here; give the serving pod's model dir"
            )
        serving = [s for s in scenarios if any(isinstance(a, ServeModelAction) for a in s.live)]
        if in_model_dir is None and serving:
            warnings.append(
                f"warning: --model-dir {settings.model_dir} is not in {MODEL_DIRS} of {where} ({known}):"
                f" the model {_names(serving)} serves from there is a model loaded from outside the model"
                f" dirs, which fires {MODEL_LOAD_RULE!r}, so the control cannot stay silent; give the"
                " serving pod's model dir"
            )
        workdir_in = pmatch(settings.workdir, model_dirs)
        if workdir_in is not None:
            reads = [
                s
                for s in scenarios
                if any(isinstance(a, ReadFileAction) and _model_file(a.path) for a in s.live)
            ]
            also = (
                f", and the model files {_names(reads)} reads there fire no {MODEL_LOAD_RULE!r}"
                if reads
                else ""
            )
            warnings.append(
                f"warning: --workdir {settings.workdir} is inside the model dir {workdir_in} ({MODEL_DIRS} of"
                f" {where}): the files every scenario creates there fire {TAMPERING_RULE!r}{also}; give a"
                " directory outside the model dirs (/tmp)"
            )
    exec_dirs = lists.get(EXEC_DIRS)
    if exec_dirs is not None:
        watched = [*exec_dirs, *(model_dirs or ())]
        for where_key, directory, flag in (
            ("workdir", settings.workdir, "--workdir"),
            ("shm", settings.shm_dir, "--shm-dir"),
        ):
            drifting = [
                s
                for s in scenarios
                if any(isinstance(a, DriftExecAction) and a.where == where_key for a in s.live)
            ]
            if drifting and pmatch(directory, watched) is None:
                warnings.append(
                    f"warning: {flag} {directory} is not under {EXEC_DIRS} of {where}"
                    f" ({', '.join(exec_dirs)}) nor a model dir: rule {DRIFT_RULE!r} fires for the copy"
                    f" {_names(drifting)} runs from there only if it is on the container's overlayfs upper"
                    " layer (not on an emptyDir, a tmpfs or a volume)"
                )
    return warnings


def _model_file(path: str) -> bool:
    return path.lower().endswith(MODEL_EXTENSIONS)


def untold_steps(
    scenarios: Sequence[Scenario], outputs: Mapping[str, str]
) -> tuple[dict[str, set[int]], list[str]]:
    """Per scenario, the firing steps whose rule's output (``outputs``: rule name to its output
    format) names none of the fields that carry the step's marker: their alerts cannot be told
    apart per step, so verify cannot require them one by one. With the notes saying so."""
    untold: dict[str, set[int]] = {}
    notes = []
    for scenario in scenarios:
        if scenario.rule is None or scenario.rule not in outputs:
            continue
        printed = set(field_refs(outputs[scenario.rule]))
        for number, action in enumerate(scenario.live, 1):
            carriers = action.marker_fields()
            if action.fires and not carriers & printed:
                untold.setdefault(scenario.name, set()).add(number)
                notes.append(
                    f"note: {scenario.name} step {number}: rule {scenario.rule!r} outputs none of"
                    f" {', '.join(sorted(carriers))}, which carry the step's marker: its alert cannot be told"
                    " from the scenario's other steps, so verify does not require it"
                )
    return untold, notes


def pack_checks(
    scenarios: Sequence[Scenario],
    settings: LiveSettings,
    rules: list[str] | None,
    directory: Path | None = None,
) -> PackChecks:
    """Read the rules pack (--rules, else this checkout's) and check the run against it. A rule a
    scenario (of ``directory``) expects to fire that the pack does not define is a UserError: the
    run could prove nothing, and verify would wait for an alert no rule makes."""
    checks = PackChecks()
    unchecked = "--target, --model-dir, --workdir and --shm-dir are not checked against it"
    if rules is None:
        pack = default_rules_file()
        if pack is None:
            checks.warnings.append(f"note: no rules pack found (use --rules): {unchecked}")
            return checks
        try:
            ruleset = load_paths([str(pack)])
        except UserError as exc:  # this checkout's pack, not one the user named: the run goes on
            checks.warnings.append(f"note: {exc}: {unchecked}")
            return checks
        problem = not_in_pack(scenarios, ruleset.rules.keys(), pack, directory)
        if problem is not None:
            raise UserError(problem)
        rules = [str(pack)]
        where = f"rules pack {pack}"
    else:
        for path in rules:
            not_a_file = not_a_rules_file(path) if path else "the path is empty"
            if not_a_file is not None:
                raise UserError(f"--rules {path}: {not_a_file}" if path else f"--rules: {not_a_file}")
        ruleset = load_paths(rules)
        missing: dict[str, list[str]] = {}
        for scenario in scenarios:
            for rule in scenario_rules(scenario):
                if rule not in ruleset.rules:
                    missing.setdefault(rule, []).append(scenario.name)
        if missing:
            # As replay --rules says it (alerts.check_rules_defined).
            raise UserError(
                f"--rules {', '.join(rules)}: "
                + "; ".join(
                    f"no rule {rule!r} (scenario{'s' if len(names) > 1 else ''} {', '.join(names)})"
                    for rule, names in missing.items()
                )
            )
        where = f"--rules {', '.join(rules)}"
    # Falco sends nothing for a disabled rule: the run would wait for alerts that never come.
    disabled = {name: at for name, state in ruleset.rules.items() if (at := state.disabled_at) is not None}
    check_rules_enabled(scenarios, disabled, where)
    where = ", ".join(rules)
    checks.warnings += check_settings(scenarios, settings, ruleset.list_items, where)
    outputs = {state.name: state.output for state in ruleset.rules.values()}
    checks.untold_steps, notes = untold_steps(scenarios, outputs)
    checks.warnings += notes
    return checks


# -- leftovers ------------------------------------------------------------------------------------


def _report_leftovers(settings: LiveSettings) -> None:
    # This run's own id: another container of the same run (the Job's two share /dev/shm and the id).
    left = [
        item
        for item in find_leftovers(_run_dirs(settings))
        if item.in_use_by is None and item.run_id != settings.run_id
    ]
    if not left:
        return
    lines = "\n".join(f"  {item.path}" for item in left)
    print(
        f"warning: left by earlier runs (a simulate killed before it could clean up):\n{lines}\n"
        f"  remove them with: serving-guard simulate --cleanup {_dir_flags(settings)}",
        file=sys.stderr,
    )


def _run_dirs(settings: LiveSettings) -> list[Path]:
    return [settings.workdir, settings.shm_dir, settings.model_dir]


def _dir_flags(settings: LiveSettings) -> str:
    return f"--workdir {settings.workdir} --model-dir {settings.model_dir} --shm-dir {settings.shm_dir}"


def _check_workdir(settings: LiveSettings) -> None:
    if not settings.workdir.is_dir():
        raise UserError(f"--workdir {settings.workdir} is not a directory")


def _cleanup(settings: LiveSettings) -> int:
    leftovers = find_leftovers(_run_dirs(settings))
    removed, problems = remove_leftovers(leftovers, settings.model_dir, settings.python)
    for path in removed:
        print(f"removed {path}")
    for problem in problems:
        print(f"NOT REMOVED {problem}")
    if not leftovers:
        print(f"nothing left by earlier runs in {', '.join(str(d) for d in _run_dirs(settings))}")
    return 1 if problems else 0


# -- the command ----------------------------------------------------------------------------------


def verify_command(runs: Sequence[ScenarioRun], run_id: str, untold: Mapping[str, set[int]]) -> str:
    """The verify command for these runs, with the steps each must have an alert for."""
    names = " ".join(r.scenario.name for r in runs)
    steps = ""
    for scenario_run in runs:
        numbers = [
            n for n in scenario_run.steps_to_verify if n not in untold.get(scenario_run.scenario.name, ())
        ]
        if scenario_run.scenario.rule is not None and numbers:
            steps += f" --steps {scenario_run.scenario.name}={','.join(map(str, numbers))}"
    return f"serving-guard verify {names} --run-id {run_id}{steps} --responder URL"


def run(args: argparse.Namespace) -> int:
    settings = LiveSettings(
        run_id="cleanup",
        workdir=Path(args.workdir),
        model_dir=Path(args.model_dir),
        shm_dir=Path(args.shm_dir),
        timeout_seconds=args.timeout,
    )
    if args.cleanup:
        if args.scenarios:
            raise UserError("--cleanup runs no scenario: leave the scenario names out")
        # As a run checks it: "nothing left" in a directory that is not there would be no answer.
        _check_workdir(settings)
        return _cleanup(settings)
    if not args.scenarios:
        raise UserError(
            rules_took_the_scenarios("simulate", args.rules)
            or "name at least one scenario (or all), or --cleanup"
        )
    scenario_set = load_scenarios(args.scenarios_dir)
    chosen = scenario_set.select(args.scenarios)
    run_id = check_run_id(args.run_id) if args.run_id else secrets.token_hex(6)
    # A replay-only scenario (no live actions) has nothing to perform: one line each, and the others run.
    for scenario in chosen:
        if scenario.replay_only:
            print(skipped_line(scenario))
    scenarios = [s for s in chosen if not s.replay_only]
    if not scenarios:
        raise UserError(
            f"nothing to simulate: {_names(chosen)} {'is' if len(chosen) == 1 else 'are'} replay-only"
            f" (no live actions); send {'its' if len(chosen) == 1 else 'their'} alerts with"
            f" serving-guard replay {' '.join(s.name for s in chosen)} --pod NAMESPACE/NAME ..."
        )
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
    _check_workdir(settings)
    checks = pack_checks(scenarios, settings, args.rules, scenario_set.directory)
    for warning in checks.warnings:
        print(warning, file=sys.stderr)
    _report_leftovers(settings)
    print(f"run id {run_id}: processes carry {RUN_ENV}={run_id} and sg-run={run_id}.<scenario>.<step>")
    runs: list[ScenarioRun] = []
    with ExitOnSignals() as signals:
        for scenario in scenarios:
            runner = ScenarioRunner(scenario, settings, signals)
            try:
                runs.append(runner.run())
            except (SystemExit, KeyboardInterrupt):
                _print_run(runner.result)
                cause = signals.name or "an interruption"
                left = "; what it created was removed" if not runner.result.cleanup_problems else ""
                print(f"\nstopped by {cause} during {scenario.name}{left}", flush=True)
                raise
            _print_run(runs[-1])
    failed = [r.scenario.name for r in runs if not r.ok]
    skipped = sum(1 for r in runs for s in r.steps if s.status is StepStatus.SKIPPED)
    failed_steps = sum(r.failed for r in runs)
    print(f"\ncheck the responder: {verify_command(runs, run_id, checks.untold_steps)}")
    if failed_steps:
        print(f"{failed_steps} action(s) failed (timed out or errored; see above)")
    if skipped:
        print(f"{skipped} action(s) skipped (see above): they could not run in this container")
    if failed:
        print(f"FAILED: {', '.join(failed)}")
        return 1
    return 0
