"""Scenario definitions: one YAML file per scenario in ``simulators/scenarios/``, strictly validated.

A scenario says which rule it must trigger, the live actions ``simulate`` performs (none: a
replay-only scenario, which ``simulate`` skips), the Falco alerts ``replay`` sends (field
templates), the responder outcome ``verify`` expects, and how the demo replays it (optional: the
demo leaves out a scenario without it). Errors name the file, the line and the key, like the
responder's config.

Templates in strings: ``{marker}``, ``{run_id}``, ``{rundir}`` (the run's own work directory),
``{home}`` (a dummy home inside it), ``{model_dir}``. Any other brace is left as it is. In live
actions ``{marker}`` is the scenario's marker ``sg-run=<run id>.<scenario>`` (file names made by one
step and used by the next); every process a step starts is tagged with the step's own marker
``sg-run=<run id>.<scenario>.<n>``. In alerts ``{marker}`` is the alert's step marker (replay: every
alert is a step), so ``verify`` can require an alert for every step.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from responder.alert import Priority
from responder.audit.trail import RUN_ID_CHARS, RUN_MARKER_PREFIX, run_marker_pattern
from responder.errors import SourceError, UserError
from responder.name_patterns import DNS_LABEL_PATTERN
from responder.validation_problems import located, validation_problems
from responder.yamlsource import YamlDocument, load_yaml_file

SCENARIO_DIR = Path(__file__).parent / "scenarios"
REFERENCE_POLICY = Path(__file__).parent / "reference_policy.yaml"
# Run ids go into file names and command lines: no separators, no shell metacharacters.
RUN_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{3,63}$")
TEMPLATE_NAMES = ("marker", "run_id", "rundir", "home", "model_dir")
_TEMPLATE = re.compile(r"\{(" + "|".join(TEMPLATE_NAMES) + r")\}")
# A file name created in the model dir: plain name, and it must carry the run's marker.
_MODEL_FILE_NAME = re.compile(r"^[^/\x00]+$")
# What can continue a run id or a scenario name: a marker ends where none of these follows.
_ID_CHARS = RUN_ID_CHARS
# ``{marker}`` standing on its own in an alert field (not the start of a file name like {marker}-x.pt).
_STANDALONE_MARKER = re.compile(r"\{marker\}(?![" + _ID_CHARS + "])")
# The rule the run_tool action exercises, and the tools it may run: the download tools that rule's
# list (serving_guard_download_tools) names, and only those (never a shell or an interpreter, which
# would run whatever their arguments say).
RUNTIME_DOWNLOAD_RULE = "Runtime download or package install in serving pod"
DOWNLOAD_TOOLS_LIST = "serving_guard_download_tools"
DOWNLOAD_TOOLS = (
    "pip",
    "pip3",
    "pipx",
    "uv",
    "conda",
    "mamba",
    "micromamba",
    "apt",
    "apt-get",
    "aptitude",
    "dpkg",
    "yum",
    "dnf",
    "microdnf",
    "rpm",
    "apk",
    "zypper",
    "npm",
    "curl",
    "wget",
    "git",
    "huggingface-cli",
    "hf",
    "aria2c",
    "aws",
    "gsutil",
    "gcloud",
    "az",
    "azcopy",
    "rclone",
    "s5cmd",
    "s3cmd",
    "mc",
    "kaggle",
    "dvc",
    "oras",
    "skopeo",
    "scp",
    "rsync",
    "ftp",
    "lftp",
    "tftp",
    "sftp",
    "ssh",
    "npx",
    "yarn",
    "pnpm",
    "gem",
    "poetry",
    "pipenv",
    "easy_install",
    "modelscope",
    "mlflow",
    "httpie",
)
# Falco fields whose text carries what a step's processes are tagged with (see LiveStep.marker_fields).
CMDLINE = "proc.cmdline"
PCMDLINE = "proc.pcmdline"

FieldValue = str | int | bool | None


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Outcome(StrEnum):
    """What the responder must have done about a scenario's alerts."""

    QUARANTINED = "quarantined"  # verified, quarantined, no other policy still lets traffic in or out
    LEAKY = "leaky"  # verified, quarantined, but named policies still allow traffic
    ANNOTATED = "annotated"  # verified, annotated (recorded, not isolated)
    # verified; the alert's remote address blocked for the pod (block_destination), the rest of
    # its traffic kept
    BLOCKED = "blocked"
    NOTIFIED = "notified"  # verified, on-call told, nothing isolated
    # verified; the policy is on trial (dry_run): its quarantine or annotate was predicted and
    # reported, nothing was changed
    DRY_RUN = "dry_run"
    UNVERIFIED = "unverified"  # refused: the alert does not match the live pod
    SILENT = "silent"  # nothing at all (the control)
    ANY = "any"  # only that the rule fired for the run


def substitute(text: str, values: Mapping[str, str]) -> str:
    """Fill the known ``{name}`` templates; leave every other brace alone."""
    return _TEMPLATE.sub(lambda m: values.get(m.group(1), m.group(0)), text)


def _no_unknown_template(text: str) -> str:
    for match in re.finditer(r"\{([a-z_]+)\}", text):
        if match.group(1) not in TEMPLATE_NAMES:
            raise ValueError(f"unknown template {{{match.group(1)}}} (known: {', '.join(TEMPLATE_NAMES)})")
    return text


def _carries_marker(value: FieldValue) -> bool:
    return isinstance(value, str) and _STANDALONE_MARKER.search(value) is not None


# -- live actions (what `simulate` does) -----------------------------------------------------------


class LiveStep(Strict):
    # The positive example in rules/examples.yaml this action reproduces (harmlessly), if any.
    example: str | None = None

    @property
    def fires(self) -> bool:
        """Whether the scenario's rule is expected to fire for this step (verify requires an alert
        for every step that ran and fires)."""
        return True

    def marker_fields(self) -> frozenset[str]:
        """The Falco fields whose text carries the step's marker when this step's process is the
        one the rule fires on: its own command line, or its parent's (a program started through
        ``python -m simulators.child run PROGRAM ... MARKER``). The rule's output must name one of
        them for its alert to be told apart per step."""
        return frozenset({CMDLINE})


class ShellAction(LiveStep):
    """Start a shell that runs ``true`` (``sh -c 'true # <marker>'``)."""

    action: Literal["shell"]
    shell: Literal["sh", "dash", "bash", "busybox"]


class ReadFileAction(LiveStep):
    """Create a dummy file inside the run directory, then read it from a separate process."""

    action: Literal["read_file"]
    path: str  # must lie under {rundir} or {home}
    content: str = "serving-guard dummy content {marker}\n"
    # cat: an attacker's tool; python: the interpreter a model server runs.
    reader: Literal["cat", "python"] = "python"

    def marker_fields(self) -> frozenset[str]:
        # cat is started by the tagged child: the marker is in its parent's command line.
        return frozenset({PCMDLINE}) if self.reader == "cat" else frozenset({CMDLINE})

    @field_validator("path")
    @classmethod
    def _inside_run(cls, value: str) -> str:
        _no_unknown_template(value)
        if not value.startswith(("{rundir}/", "{home}/")) or ".." in value.split("/"):
            raise ValueError(
                "path must start with {rundir}/ or {home}/ (never a system path) and not use '..'"
            )
        return value


class ModelFileAction(LiveStep):
    """One operation on a file of our own directly inside the model dir (never an existing file)."""

    action: Literal["model_file"]
    op: Literal["write", "append", "rename", "chmod", "symlink", "read"]
    name: str  # the file in the model dir this acts on (rename: the old name)
    to: str | None = None  # rename: the new name
    mode: str | None = None  # chmod: octal, e.g. "0666"
    target: str | None = None  # symlink: a dummy file under {rundir} the link points to

    @property
    def fires(self) -> bool:
        # Reading a file in the model dir (through the link planted there) changes nothing: the
        # tampering rule fired when the link was made, and the model-load rule reads model dirs as
        # expected. This step shows the evasion; it has no alert of its own.
        return self.op != "read"

    @model_validator(mode="after")
    def _shape(self) -> Self:
        for value in (self.name, self.to):
            if value is not None and (not _MODEL_FILE_NAME.match(value) or "{marker}" not in value):
                raise ValueError(f"model dir file names are plain names containing {{marker}}, got {value!r}")
        needs = {"rename": "to", "chmod": "mode", "symlink": "target"}
        for op, key in needs.items():
            if (self.op == op) != (getattr(self, key) is not None):
                raise ValueError(f"'{key}' goes with op {op} only")
        if self.mode is not None and not re.fullmatch(r"0?[0-7]{3}", self.mode):
            raise ValueError(f"mode must be octal like 0644, got {self.mode!r}")
        if self.target is not None and not self.target.startswith("{rundir}/"):
            raise ValueError("symlink target must be a dummy file under {rundir}/")
        return self


class ReverseShellAction(LiveStep):
    """A reverse-shell one-liner whose shell only runs ``true``: it connects, wires its standard
    streams to the socket, and exits. Without --target it connects to a listener of its own on
    127.0.0.1."""

    action: Literal["reverse_shell"]
    variant: Literal["python-pty", "bash-dev-tcp", "nc-exec"]

    def marker_fields(self) -> frozenset[str]:
        # netcat is started by the tagged child; the one-liners carry the marker in their code.
        return frozenset({PCMDLINE}) if self.variant == "nc-exec" else frozenset({CMDLINE})


class ConnectAction(LiveStep):
    """One outbound TCP connection (short timeout) or UDP datagram to the explicit --target."""

    action: Literal["connect"]
    protocol: Literal["tcp", "udp"]


class RunToolAction(LiveStep):
    """Run a download/install tool that is already installed, only to print its version."""

    action: Literal["run_tool"]
    tool: str
    args: tuple[str, ...]

    # The one safety property of this action: a download tool asks for its version and nothing
    # else runs. A shell or an interpreter (sh -c ..., python3 -c ...) runs what its arguments say,
    # with or without a --version among them, so the tool is one of a fixed list and the arguments
    # are exactly [--version].
    @field_validator("tool")
    @classmethod
    def _download_tool(cls, value: str) -> str:
        if value not in DOWNLOAD_TOOLS:
            raise ValueError(
                f"{value!r} is not a download tool of the rule {RUNTIME_DOWNLOAD_RULE!r}"
                f" ({DOWNLOAD_TOOLS_LIST}); run_tool runs only one of: {', '.join(DOWNLOAD_TOOLS)}"
                " (never a shell or an interpreter)"
            )
        return value

    @field_validator("args")
    @classmethod
    def _version_only(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if value != ("--version",):
            raise ValueError(
                f"args must be exactly [--version], got {list(value)}: a tool is only ever run with --version"
            )
        return value

    def marker_fields(self) -> frozenset[str]:
        return frozenset({PCMDLINE})  # started by the tagged child


class DriftExecAction(LiveStep):
    """Copy ``true`` somewhere it was not in the image and execute it (or run it from a memfd)."""

    action: Literal["drift_exec"]
    where: Literal["shm", "workdir", "memfd"]

    def marker_fields(self) -> frozenset[str]:
        # The copy gets the marker as its argument, and the tagged child starts it.
        return frozenset({CMDLINE, PCMDLINE})


class ServeModelAction(LiveStep):
    """Normal serving: load a model file that is already in the model dir and answer requests on
    127.0.0.1 (the control)."""

    action: Literal["serve_model"]
    requests: int = Field(default=3, ge=1, le=20)

    @property
    def fires(self) -> bool:
        return False  # normal serving: nothing may fire


LiveAction = Annotated[
    ShellAction
    | ReadFileAction
    | ModelFileAction
    | ReverseShellAction
    | ConnectAction
    | RunToolAction
    | DriftExecAction
    | ServeModelAction,
    Field(discriminator="action"),
]


# -- alerts, expectations, demo plan ---------------------------------------------------------------


class AlertTemplate(Strict):
    """One alert Falco sends when the scenario happens: the rule's own output fields (the pod
    identity fields are filled from the target pod)."""

    rule: str | None = None  # default: the scenario's rule
    fields: dict[str, FieldValue]

    @field_validator("fields")
    @classmethod
    def _templates(cls, value: dict[str, FieldValue]) -> dict[str, FieldValue]:
        for text in value.values():
            if isinstance(text, str):
                _no_unknown_template(text)
        if not any(_carries_marker(text) for text in value.values()):
            raise ValueError(
                "every alert carries {marker} on its own (not only inside a file name or"
                " {rundir}/{home}) in a field the rule outputs, so runs and their steps can be told apart"
            )
        return value


class ExampleRef(Strict):
    """Examples in rules/examples.yaml this scenario reproduces (by rule name and example id)."""

    rule: str
    positive: tuple[str, ...] = ()
    negative: tuple[str, ...] = ()


class Expect(Strict):
    outcome: Outcome
    # An on-call Slack message must have been sent for the incident.
    slack: bool = True
    # For leaky: the policies the responder must name.
    leaky_policies: tuple[str, ...] = ()

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.outcome is Outcome.SILENT and self.slack:
            raise ValueError("a silent scenario expects no Slack message (slack: false)")
        if self.leaky_policies and self.outcome is not Outcome.LEAKY:
            raise ValueError("leaky_policies goes with outcome leaky only")
        return self


class DemoPlan(Strict):
    """How `serving-guard demo` replays this scenario against the seeded cluster."""

    pod: Literal["triton", "torchserve", "vllm", "kserve", "embeddings", "sandbox"]
    input: Literal["http", "grpc"] = "http"
    # Where the seeded cluster makes the outcome differ from `expect` (Triton's leaky policy).
    expect: Expect | None = None


class Scenario(Strict):
    name: str = Field(pattern=DNS_LABEL_PATTERN)
    summary: str = Field(min_length=10)
    # The rule it must trigger; null for the control, which must trigger nothing.
    rule: str | None
    # As the rule fires (used when the rules pack is not at hand; checked against it in tests).
    priority: Annotated[Priority, Field(json_schema_extra={"type": "string"})] | None = None
    tags: tuple[str, ...] = ()
    examples: tuple[ExampleRef, ...] = ()
    # What simulate performs; absent or empty: a replay-only scenario (an alert shape, for replay
    # and the demo: what has no harmless live action, such as a real token read), which simulate
    # skips, saying so.
    live: tuple[LiveAction, ...] = ()
    alerts: tuple[AlertTemplate, ...] = ()
    expect: Expect
    # How the demo sends it; absent: the demo leaves the scenario out, saying so (replay and verify
    # do not need it).
    demo: DemoPlan | None = None

    @field_validator("priority", mode="before")
    @classmethod
    def _priority(cls, value: object) -> object:
        return Priority.parse(value) if isinstance(value, str) else value

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        control = self.rule is None
        if control != (self.expect.outcome is Outcome.SILENT):
            raise ValueError(
                "a scenario without a rule is a control and expects outcome silent (and vice versa)"
            )
        if control and self.alerts:
            raise ValueError("a control scenario produces no alerts")
        if control and not self.live:
            raise ValueError(
                "a control scenario needs live actions, the normal serving it performs (a control with"
                " neither live actions nor alerts proves nothing)"
            )
        if not control:
            if not self.alerts:
                raise ValueError("alerts: a scenario with a rule lists the alert(s) Falco sends")
            if self.priority is None:
                raise ValueError("priority: required for a scenario with a rule")
        listed = {example for ref in self.examples for example in ref.positive}
        for step in self.live:
            if step.example is not None and step.example not in listed:
                raise ValueError(
                    f"live action example {step.example!r} is not listed under examples.positive"
                )
        return self

    @property
    def needs_target(self) -> bool:
        return any(isinstance(action, ConnectAction) for action in self.live)

    @property
    def replay_only(self) -> bool:
        """No live actions: ``simulate`` skips it; ``replay`` and the demo send its alerts."""
        return not self.live

    def demo_expect(self) -> Expect:
        return (self.demo.expect if self.demo is not None else None) or self.expect


MARKER_PREFIX = RUN_MARKER_PREFIX


def marker(run_id: str, scenario: str) -> str:
    """The token every process (and so every alert) of one scenario run carries."""
    return f"{MARKER_PREFIX}{run_id}.{scenario}"


def step_marker(run_id: str, scenario: str, step: int) -> str:
    """The token the processes of one step (numbered from 1) of a scenario run carry."""
    return f"{marker(run_id, scenario)}.{step}"


def marker_id(run_id: str, scenario: str) -> str:
    """What the audit trail's run_id filter looks for to find one scenario of a run."""
    return f"{run_id}.{scenario}"


def marker_pattern(needle: str) -> re.Pattern[str]:
    """Where ``sg-run=<needle>`` stands as a whole (the audit trail's own match, run_marker_pattern):
    ``<id>`` finds the whole run, ``<id>.<scenario>`` one scenario with all its steps,
    ``<id>.<scenario>.<n>`` one step. ``needle`` may carry the prefix."""
    return run_marker_pattern(needle.removeprefix(MARKER_PREFIX))


def step_pattern(run_id: str, scenario: str) -> re.Pattern[str]:
    """The step markers of one scenario run; group 1 is the step number."""
    body = re.escape(marker(run_id, scenario))
    return re.compile(f"(?<![{_ID_CHARS}]){body}\\.([0-9]+)(?![{_ID_CHARS}])")


def alert_texts(alert: Mapping[str, Any]) -> Iterator[str]:
    """The texts of a Falco alert (JSON form) a marker is looked for in, as the audit trail's run
    filter looks: its output line and its output fields' values."""
    yield str(alert.get("output", ""))
    fields = alert.get("output_fields")
    if isinstance(fields, Mapping):
        for value in fields.values():
            yield str(value)


def alert_mentions(alert: Mapping[str, Any], pattern: re.Pattern[str]) -> bool:
    return any(pattern.search(text) for text in alert_texts(alert))


def alert_steps(alert: Mapping[str, Any], run_id: str, scenario: str) -> set[int]:
    """The step numbers of one scenario run whose markers the alert carries."""
    pattern = step_pattern(run_id, scenario)
    return {int(found) for text in alert_texts(alert) for found in pattern.findall(text)}


def check_run_id(run_id: str) -> str:
    if not RUN_ID_PATTERN.match(run_id):
        raise UserError(
            f"--run-id {run_id!r}: use 4 to 64 letters, digits, '-' or '_' (it goes into file names)"
        )
    return run_id


# -- loading ---------------------------------------------------------------------------------------


def scenario_from_document(document: YamlDocument) -> Scenario:
    if not isinstance(document.data, dict):
        raise document.error((), "a scenario file is a mapping (name, rule, live, alerts, expect, demo)")
    try:
        scenario = Scenario.model_validate(document.data)
    except ValidationError as exc:
        messages = [
            located(document, *problem) for problem in validation_problems(exc, document.data, Scenario)
        ]
        raise UserError("invalid scenario:\n  " + "\n  ".join(messages)) from None
    expected = Path(document.file).stem
    if scenario.name != expected:
        raise SourceError(
            document.file, document.line_of(("name",)), f"name must match the file name ({expected})"
        )
    return scenario


@dataclass(frozen=True)
class ScenarioSet:
    by_name: Mapping[str, Scenario]
    directory: Path

    def names(self) -> list[str]:
        return list(self.by_name)

    def select(self, names: Iterable[str]) -> list[Scenario]:
        """The named scenarios in the order given ("all" = every one); unknown names are an error."""
        chosen: list[Scenario] = []
        for name in names:
            if name == "all":
                chosen.extend(s for s in self.by_name.values() if s not in chosen)
                continue
            if name not in self.by_name:
                known = ", ".join(self.by_name)
                raise UserError(f"unknown scenario {name!r} (known: {known}, or all)")
            if self.by_name[name] not in chosen:
                chosen.append(self.by_name[name])
        if not chosen:
            raise UserError("name at least one scenario (or all)")
        return chosen


def add_scenarios_dir_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--scenarios-dir", metavar="DIR", help="read scenario definitions from this directory"
    )


def load_scenarios(directory: str | Path | None = None) -> ScenarioSet:
    """Every ``*.yaml`` in the directory (default: the shipped scenarios), sorted by name."""
    root = Path(directory) if directory is not None else SCENARIO_DIR
    if not root.is_dir():
        raise UserError(f"scenario directory {root} does not exist")
    scenarios: dict[str, Scenario] = {}
    for path in sorted(root.glob("*.yaml")):
        scenario = scenario_from_document(load_yaml_file(str(path)))
        scenarios[scenario.name] = scenario
    if not scenarios:
        raise UserError(f"no scenario files (*.yaml) in {root}")
    return ScenarioSet(scenarios, root)


def load_reference_policy() -> dict[str, Any]:
    """The reference policy the scenarios' expectations assume (a partial responder config)."""
    document = load_yaml_file(str(REFERENCE_POLICY))
    if not isinstance(document.data, dict):
        raise document.error((), "the reference policy is a mapping of responder config sections")
    return document.data
