"""The schema of rules/examples.yaml: per rule, the actions it must and must not match; per recorded
capture, which rule must fire on each action. The file's header documents the same schema for
people; this module is what enforces it (unknown keys are errors, errors name file and line).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from responder.errors import SourceError
from responder.validation_problems import dotted_path, validation_problems
from responder.yamlsource import YamlDocument, load_yaml_file

SCHEMA_VERSION = 1


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class RenameAction(_Strict):
    source: str = Field(alias="from")
    to: str


class ChmodAction(_Strict):
    path: str
    mode: str


class SymlinkAction(_Strict):
    target: str
    link: str


class ConnectAction(_Strict):
    proto: Literal["tcp", "udp"]
    address: str
    port: Annotated[int, Field(ge=0, le=65535)]


class Action(_Strict):
    """Exactly one thing a process does; the simulators perform it, the rule sees it."""

    exec: list[str] | None = None  # argv; argv[0] is the program
    open_read: str | None = None
    open_write: str | None = None
    rename: RenameAction | None = None
    chmod: ChmodAction | None = None
    symlink: SymlinkAction | None = None
    unlink: str | None = None
    connect: ConnectAction | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> Self:
        given = [name for name in type(self).model_fields if getattr(self, name) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one action kind, got {given or 'none'}")
        if self.exec is not None and not self.exec:
            raise ValueError("exec needs at least the program")
        return self


class Context(_Strict):
    """Where the action runs, when it matters to the rule."""

    entrypoint: bool = False  # the process is the container's PID 1
    probe: Literal["liveness", "readiness"] | None = None  # runs as the container's configured probe
    image: str | None = None  # container.image.repository, when the rule depends on it
    setup: list[list[str]] = Field(default_factory=list)  # commands to run first (not part of the example)


class Example(_Strict):
    id: str = Field(pattern=r"^[a-z0-9][a-z0-9-]*$")
    action: Action
    context: Context = Field(default_factory=Context)
    proven_by: str | None = Field(default=None, pattern=r"^[^#\s]+\.scap#\S+$")  # capture.scap#action-id
    note: str | None = None


class NegativeExample(Example):
    why: str  # why the rule must stay silent


class RuleExamples(_Strict):
    rule: str
    positive: list[Example] = Field(min_length=1)
    negative: list[NegativeExample] = Field(min_length=1)


class CaptureAction(_Strict):
    """One action recorded in a capture, found by its marker token or its exact command line."""

    id: str = Field(pattern=r"^[a-z0-9][a-z0-9-]*$")
    what: str
    marker: str | None = None  # token in the action's proc.cmdline or an ancestor's
    cmdline: str | None = None  # the action process's exact proc.cmdline
    expect: list[str] = Field(default_factory=list)  # rules that must fire on it
    also: list[str] = Field(default_factory=list)  # rules that may fire as well (documented overlap)
    benign: bool = False  # nothing may fire
    undetectable: str | None = None  # nothing fires, and this says why that is right

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if (self.marker is None) == (self.cmdline is None):
            raise ValueError("give exactly one of marker or cmdline")
        kinds = [bool(self.expect), self.benign, self.undetectable is not None]
        if sum(kinds) != 1:
            raise ValueError(
                "an action either expects rules, is benign, or is undetectable (with the reason)"
            )
        if (self.benign or self.undetectable) and self.also:
            raise ValueError("'also' only makes sense with 'expect'")
        return self

    def matches(self, cmdline: str | None) -> bool:
        if not cmdline:
            return False
        if self.cmdline is not None:
            return cmdline == self.cmdline
        assert self.marker is not None
        return re.search(re.escape(self.marker) + r"(?![\w-])", cmdline) is not None


class CaptureExpectations(_Strict):
    file: str = Field(pattern=r"^[^/]+\.scap$")
    scenario: str
    benign: bool = False  # the whole capture is normal behaviour: no rule may fire anywhere in it
    actions: list[CaptureAction] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique_ids(self) -> Self:
        ids = [action.id for action in self.actions]
        duplicates = sorted({i for i in ids if ids.count(i) > 1})
        if duplicates:
            raise ValueError(f"duplicate action ids: {', '.join(duplicates)}")
        if self.benign and any(action.expect for action in self.actions):
            raise ValueError("a benign capture cannot expect rules to fire")
        return self


class CaptureSet(_Strict):
    scope_override: str | None = None  # rules file loaded after the pack, relative to the captures dir
    files: list[CaptureExpectations] = Field(default_factory=list)

    def get(self, name: str) -> CaptureExpectations | None:
        return next((entry for entry in self.files if entry.file == name), None)


class ExamplesFile(_Strict):
    version: Literal[1]
    rules: list[RuleExamples] = Field(default_factory=list)
    captures: CaptureSet = Field(default_factory=CaptureSet)

    @model_validator(mode="after")
    def _unique(self) -> Self:
        rules = [entry.rule for entry in self.rules]
        if len(rules) != len(set(rules)):
            raise ValueError("each rule appears once under 'rules'")
        ids = [ex.id for entry in self.rules for ex in (*entry.positive, *entry.negative)]
        duplicates = sorted({i for i in ids if ids.count(i) > 1})
        if duplicates:
            raise ValueError(f"duplicate example ids: {', '.join(duplicates)}")
        files = [entry.file for entry in self.captures.files]
        if len(files) != len(set(files)):
            raise ValueError("each capture file appears once under 'captures.files'")
        return self

    def rule_names(self) -> set[str]:
        """Every rule name the file refers to (examples and capture expectations)."""
        names = {entry.rule for entry in self.rules}
        for capture in self.captures.files:
            for action in capture.actions:
                names.update(action.expect)
                names.update(action.also)
        return names


def parse_examples(doc: YamlDocument) -> ExamplesFile:
    try:
        return ExamplesFile.model_validate(doc.data)
    except ValidationError as exc:
        first = validation_problems(exc, doc.data, ExamplesFile)[0]
        at = first.path if first.at is None else first.at
        raise doc.error(at, f"{dotted_path(first.path)}: {first.message}") from None


def load_examples(path: Path) -> ExamplesFile:
    doc = load_yaml_file(str(path))
    if doc.data is None:
        raise SourceError(str(path), None, "the examples file is empty")
    return parse_examples(doc)
