"""The Falco alerts a scenario produces, as Falco itself would print them for a given pod.

Falco (userspace/engine/formats.cpp) builds the JSON from the rule: ``output`` is
"<time>: <Priority> <rule output with %fields rendered>", ``output_fields`` holds exactly the
fields named in the rule's output (JSON types kept, missing ones ``null``) plus the time field
of the prefix, ``tags`` is the rule's sorted tag set, keys are serialised in sorted order. So
the rule's output format, priority and tags are read from the rules pack when it is at hand;
without it (a custom install) the scenario's own priority and tags are used with a generic
output that names every field. The rules files the user names (``--rules``, in load order) are
what the alerts must follow: a scenario rule they do not define is an error, never the generic
output; so is one this checkout's pack does not define when no file is named (a misspelt rule name
in a scenario of one's own would otherwise be sent with a made-up output, and verified against a
rule that never fires).

The pod identity fields (``k8s.ns.name``, ``k8s.pod.name``, ``container.id``,
``container.image.repository``) and ``hostname`` come from the live pod (:mod:`simulators.identity`).
"""

from __future__ import annotations

import argparse
import os
import re
import stat
import time
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from responder.alert import Priority, format_time_ns
from responder.errors import UserError
from responder.rulespack.paths import display_path
from simulators.falco_json import falco_bytes
from simulators.identity import PodIdentity

if TYPE_CHECKING:
    from simulators.silenced import ExceptionRows
from simulators.scenario import (
    FieldValue,
    Scenario,
    alert_mentions,
    marker,
    marker_pattern,
    step_marker,
    substitute,
)

# A field reference in a Falco output format: %proc.name, %proc.aname[2], %k8s.pod.label[app].
_FIELD_REF = re.compile(r"%([A-Za-z0-9_]+(?:\.[A-Za-z0-9_]+)+(?:\[[^\]]*\])?)")
# Official Falco images turn time_format_iso_8601 on (config.d, since 0.41): the prefix field.
TIME_FIELD = "evt.time.iso8601"
MISSING = "<NA>"
# What replayed alerts say about where the run happened (paths as simulate creates them).
REPLAY_WORKDIR = "/tmp"  # noqa: S108 - text in replayed alerts, never opened
REPLAY_MODEL_DIR = "/models"


@dataclass(frozen=True)
class RuleSpec:
    name: str
    priority: Priority
    tags: tuple[str, ...]
    output: str
    source: str = "syscall"
    disabled_at: str | None = None  # FILE:LINE of the `enabled: false` that switched the rule off
    # Its exceptions as the files load them: replay says an alert one of them would keep Falco from sending.
    exceptions: tuple[ExceptionRows, ...] = ()


class RuleSpecs(dict[str, RuleSpec]):
    """Rules by name from rules files (``path``: them, comma-separated, in load order). ``origin``
    names the files the user chose (``--rules FILE...``); without one it is this checkout's own
    pack, used when no file is named.
    Either way every rule a scenario sends must be in it (:func:`check_rules_defined`): only
    without any pack (a plain dict, an install without rules/) does a rule fall back to
    :func:`fallback_spec`."""

    def __init__(self, specs: Mapping[str, RuleSpec], origin: str | None = None, path: str = "") -> None:
        super().__init__(specs)
        self.origin = origin
        self.path = path


def load_rule_specs(
    paths: Path | str | Sequence[Path | str], *, flag: str | None = None
) -> dict[str, RuleSpec]:
    """Rules by name from one rules file or several in load order, after Falco's
    define/append/override semantics: a :class:`RuleSpecs` (typed as the dict it is, so that
    ``rule in specs`` narrows ``str | None``).

    ``flag`` is the option the paths were given with (``--rules``): those files must then define
    every rule the scenarios need, and a path that is no rules file is named with the flag
    (``--rules DIR: is a directory, not a rules file``). So must any file other than this
    checkout's own pack (named ``rules file PATH`` when no flag says where it came from).

    A rules file that does not load (unreadable, bad YAML, not a rules file, an invalid item or
    condition) is a UserError naming file and line, as `serving-guard rules check` reports it."""
    from responder.rulespack.expand import load_paths
    from responder.rulespack.paths import default_pack
    from simulators.silenced import exception_rows

    files = [str(paths)] if isinstance(paths, Path | str) else [str(path) for path in paths]
    for path in files:
        if not path:
            raise UserError(f"{flag or 'rules file'}: the path is empty")
        problem = not_a_rules_file(path)
        if problem is not None:
            raise UserError(f"{flag or 'rules file'} {path}: {problem}")
    ruleset = load_paths(files)
    origin = None
    if flag is not None:
        origin = f"{flag} {', '.join(files)}"
    elif len(files) != 1 or not _same_file(Path(files[0]), default_pack()):
        origin = f"rules file{'s' if len(files) != 1 else ''} {', '.join(files)}"
    specs = {}
    for state in ruleset.rules.values():
        # The reader accepted only Falco's priority names, and Priority knows every one of them.
        specs[state.name] = RuleSpec(
            state.name,
            Priority.parse(state.priority),
            tuple(sorted(set(state.tags))),
            " ".join(state.output.split()),
            state.source,
            state.disabled_at,
            exception_rows(ruleset, state),
        )
    return RuleSpecs(specs, origin, ", ".join(files))


def chosen_rule_specs(rules: Sequence[str] | None) -> dict[str, RuleSpec] | None:
    """The rules the alerts follow: the ``--rules`` files in load order, else this checkout's pack;
    None when there is neither (an installed wheel has no pack: alerts get a generic output)."""
    if rules is not None:
        return load_rule_specs(rules, flag="--rules")
    pack = default_rules_file()
    return load_rule_specs(pack) if pack is not None else None


ALERTS_FOLLOW_RULES = (
    "rules files in load order the alerts follow (their output format, priority and tags), as Falco"
    " loads them; they must define every rule the scenarios send"
)


def add_rules_option(parser: argparse.ArgumentParser, purpose: str, *, after_scenarios: bool) -> None:
    """``--rules FILE...`` as every scenario command takes it (several files after one flag, or the
    flag again). ``purpose``: what the files are for; ``after_scenarios``: the command takes
    scenario names too, which must come first since the flag takes every word after it."""
    note = ". Name the scenarios first: --rules takes every word after it" if after_scenarios else ""
    parser.add_argument(
        "--rules",
        action="extend",
        nargs="+",
        metavar="FILE",
        help=f"{purpose} (default: rules/ of this checkout){note}",
    )


def rules_took_the_scenarios(command: str, rules: Sequence[str] | None) -> str | None:
    """When no scenario is named and ``--rules`` (which takes every word after it) took them,
    ``replay --rules r.yaml all`` say so: its last word is no file. None otherwise."""
    if not rules or not_a_rules_file(rules[-1]) is None:
        return None
    return (
        f"no scenario named: --rules took every word after it, {rules[-1]!r} too; name the scenarios"
        f" first (serving-guard {command} SCENARIO... --rules FILE...) or end the files with --"
    )


def not_a_rules_file(path: Path | str) -> str | None:
    """What keeps ``path`` from being read as a rules file, in words (it does not exist, it is a
    directory, a device or a FIFO), or None for a regular file (its reading may still fail)."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return "does not exist"
    except OSError as exc:
        return f"cannot read: {exc.strerror or exc}"
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISDIR(mode):
        return "is a directory, not a rules file"
    for test, kind in _FILE_KINDS:
        if test(mode):
            return f"is {kind}, not a rules file"
    return "is not a regular file"


_FILE_KINDS = (
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISSOCK, "a socket"),
)


def _same_file(one: Path, other: Path) -> bool:
    try:
        return one.samefile(other)
    except OSError:
        return False


def _rules_needed(scenario: Scenario) -> list[str]:
    """The rules the scenario's alerts follow, in order, without repeats."""
    rules = [template.rule or scenario.rule for template in scenario.alerts]
    return list(dict.fromkeys(rule for rule in rules if rule is not None))


def scenario_rules(scenario: Scenario) -> list[str]:
    """The rules a scenario expects to fire (its own, and those its alerts follow), without repeats."""
    return list(dict.fromkeys(rule for rule in (scenario.rule, *_rules_needed(scenario)) if rule is not None))


def scenario_file(scenario: Scenario, directory: Path | None) -> str:
    """The scenario's file (its name is the file's), or its name when the directory is not known."""
    if directory is None:
        return scenario.name
    return display_path(directory / f"{scenario.name}.yaml")


def not_in_pack(
    scenarios: Sequence[Scenario], rules: Collection[str], pack: Path | str, directory: Path | None
) -> str | None:
    """When this checkout's pack (``rules``: its rule names) lacks a rule the scenarios expect,
    what to say: each scenario file and rule (``scenario s/x.yaml: rule 'Shel in serving pod' is
    not in the rules pack (rules/serving_guard_rules.yaml)``), and what to do; None when it has them."""
    problems = [
        f"scenario {scenario_file(scenario, directory)}: rule {rule!r} is not in the rules pack"
        f" ({display_path(Path(pack))})"
        for scenario in scenarios
        for rule in scenario_rules(scenario)
        if rule not in rules
    ]
    if not problems:
        return None
    return (
        "; ".join(problems)
        + ": misspelt? A rule of your own goes with its rules file (--rules FILE), which must define it"
    )


def check_rules_defined(
    scenarios: Sequence[Scenario], specs: Mapping[str, RuleSpec], directory: Path | None = None
) -> None:
    """When ``specs`` came from a rules file, a UserError naming each rule the scenarios send that
    it does not define: for a file the user chose, naming it (``--rules r.yaml: no rule 'Shell in
    serving pod' (scenario shell-in-serving-pod)``); for this checkout's pack, naming each
    scenario's file (in ``directory``, :func:`not_in_pack`). Nothing without a pack (an install
    without rules/: those rules fall back to the generic output)."""
    if not isinstance(specs, RuleSpecs):
        return
    if specs.origin is None:
        problem = not_in_pack(scenarios, specs.keys(), specs.path, directory)
        if problem is not None:
            raise UserError(problem)
        check_rules_enabled(scenarios, _disabled(specs), f"rules pack {specs.path}")
        return
    missing: dict[str, list[str]] = {}
    for scenario in scenarios:
        for rule in _rules_needed(scenario):
            if rule not in specs:
                missing.setdefault(rule, []).append(scenario.name)
    if missing:
        problems = "; ".join(
            f"no rule {rule!r} (scenario{'s' if len(names) > 1 else ''} {', '.join(names)})"
            for rule, names in missing.items()
        )
        raise UserError(f"{specs.origin}: {problems}")
    check_rules_enabled(scenarios, _disabled(specs), specs.origin)


def _disabled(specs: Mapping[str, RuleSpec]) -> dict[str, str]:
    return {name: spec.disabled_at for name, spec in specs.items() if spec.disabled_at is not None}


def check_rules_enabled(scenarios: Sequence[Scenario], disabled: Mapping[str, str], where: str) -> None:
    """A UserError naming each scenario whose rule the rules files (``where``) switch off, with the
    FILE:LINE of its ``enabled: false`` (``disabled``: rule -> FILE:LINE). Falco sends no alert for a
    disabled rule: an alert sent for it anyway would pass the responder's checks and verify while
    the real deployment detects nothing."""
    problems = [
        f"scenario {scenario.name}: rule {rule!r} is disabled (enabled: false at {disabled[rule]})"
        for scenario in scenarios
        for rule in scenario_rules(scenario)
        if rule in disabled
    ]
    if problems:
        raise UserError(
            f"{where}: "
            + "; ".join(problems)
            + ": Falco sends no alert for a disabled rule, so the scenario would prove nothing;"
            " enable the rule or leave the scenario out"
        )


def default_rules_file() -> Path | None:
    """The pack in this checkout, if there is one (an installed wheel has no rules/ directory)."""
    from responder.rulespack.paths import default_pack

    pack = default_pack()
    return pack if pack.is_file() else None


def fallback_spec(scenario: Scenario, rule: str, fields: Sequence[str]) -> RuleSpec:
    """What we know without the pack: the scenario's priority and tags, every field printed."""
    assert scenario.priority is not None  # scenarios with alerts must name one
    shown = " ".join(f"{name.rsplit('.', 1)[-1]}=%{name}" for name in fields)
    return RuleSpec(rule, scenario.priority, tuple(sorted(scenario.tags)), f"{rule} ({shown})")


def field_refs(output: str) -> list[str]:
    """Field names in an output format, in order, without repeats."""
    return list(dict.fromkeys(_FIELD_REF.findall(output)))


def _text(value: FieldValue) -> str:
    if value is None:
        return MISSING
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def iso8601_prefix_time(time_ns: int) -> str:
    """libsinsp's %evt.time.iso8601: UTC, nanoseconds, +0000."""
    return format_time_ns(time_ns)[:-1] + "+0000"


def render_alert(
    spec: RuleSpec, identity: PodIdentity, fields: Mapping[str, FieldValue], time_ns: int
) -> dict[str, Any]:
    """One alert as Falco's JSON output (http_output / stdout / file_output) carries it."""
    values: dict[str, FieldValue] = {**fields, **identity.fields()}
    names = field_refs(spec.output)
    output_fields: dict[str, FieldValue] = {name: values.get(name) for name in names}
    prefix_time = iso8601_prefix_time(time_ns)
    output_fields[TIME_FIELD] = prefix_time
    message = _FIELD_REF.sub(lambda match: _text(values.get(match.group(1))), spec.output)
    return {
        "hostname": identity.hostname,
        "output": f"{prefix_time}: {spec.priority.label} {message}",
        "output_fields": output_fields,
        "priority": spec.priority.label,
        "rule": spec.name,
        "source": spec.source,
        "tags": list(spec.tags),
        "time": format_time_ns(time_ns),
    }


@dataclass(frozen=True)
class ScenarioAlert:
    scenario: str
    marker: str  # the step's: sg-run=<run id>.<scenario>.<step>
    alert: dict[str, Any]
    step: int = 1  # the alert's place among the scenario's alerts, from 1 (every alert is a step)

    @property
    def rule(self) -> str:
        return str(self.alert["rule"])

    @property
    def carries_step(self) -> bool:
        """Whether the step's marker made it into the alert: in a field the rule outputs (a
        scenario file's {marker} in a field the rule does not print is dropped, as Falco would)."""
        return alert_mentions(self.alert, marker_pattern(self.marker))

    def body(self) -> bytes:
        return falco_bytes(self.alert)


def scenario_alerts(
    scenario: Scenario,
    identity: PodIdentity,
    run_id: str,
    specs: Mapping[str, RuleSpec],
    *,
    clock_ns: Any = time.time_ns,
    tag: str | None = None,
) -> list[ScenarioAlert]:
    """The scenario's alerts for this pod and run, with fresh times (one nanosecond apart at least).
    A rule ``specs`` lacks: a UserError if they came from a rules file, else the generic output.

    ``tag`` replaces the scenario name in the marker (the demo's forged alert uses its own). Each
    alert is a step: ``{marker}`` is ``sg-run=<run id>.<scenario>.<n>`` in the n-th (from 1)."""
    check_rules_defined([scenario], specs)
    name = tag or scenario.name
    rundir = f"{REPLAY_WORKDIR}/{marker(run_id, name)}"
    alerts = []
    last = 0
    for step, template in enumerate(scenario.alerts, start=1):
        rule = template.rule or scenario.rule
        assert rule is not None  # a scenario with alerts has a rule
        tag_text = step_marker(run_id, name, step)
        values = {
            "marker": tag_text,
            "run_id": run_id,
            "rundir": rundir,
            "home": f"{rundir}/home",
            "model_dir": REPLAY_MODEL_DIR,
        }
        fields = {
            name: substitute(value, values) if isinstance(value, str) else value
            for name, value in template.fields.items()
        }
        spec = specs.get(rule) or fallback_spec(scenario, rule, [*PodIdentity.FIELD_NAMES, *fields])
        now = max(int(clock_ns()), last + 1)
        last = now
        alerts.append(ScenarioAlert(scenario.name, tag_text, render_alert(spec, identity, fields, now), step))
    return alerts
