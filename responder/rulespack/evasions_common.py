"""Names and builders the evasion case tables share: the pack's rule names, the filters of the
events a case judges, and derivations made of the recorded actions' rewrites."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from responder.rulespack import scapedit as se
from responder.rulespack.derived import Derivation, DerivedCase, Expectation, Witness
from responder.rulespack.recorded import EXECVE, CaptureLibrary, Recorded, Replacements, open_instead, symlink

SHELL = "Shell in serving pod"
REVERSE_SHELL = "Reverse shell or interpreter one-liner in serving pod"
EGRESS = "Anomalous egress from serving pod"
DOWNLOAD = "Runtime download or package install in serving pod"
DRIFT = "Drift: new executable in serving pod"
CREDENTIALS = "Credential access in serving pod"
MODEL_LOAD = "Unexpected model file load in serving pod"
TAMPER = "Model artifact tampering in serving pod"

THREAD = "{thread}"
EXEC = f"{EXECVE} and {THREAD}"
SYMLINKED = f"evt.type = symlinkat and evt.dir = < and {THREAD}"
RENAMED = f"evt.type = renameat2 and evt.dir = < and {THREAD}"


def linked(target: str, link: str) -> Derivation:
    """The recorded `ln -s` makes ``link`` pointing at ``target`` instead."""

    def derive(library: CaptureLibrary) -> Replacements:
        return symlink(library, target, link)

    return derive


def opened(path: str) -> str:
    """The judged thread's opens of ``path`` (as fd.name shows it)."""
    return f'evt.type = openat and evt.dir = < and {THREAD} and fd.name = "{path}"'


def exec_as(
    recorded: Recorded,
    *,
    path: str | None = None,
    argv: list[str] | None = None,
    name: str | None = None,
    cwd: str | None = None,
) -> Derivation:
    def derive(library: CaptureLibrary) -> dict[int, list[bytes] | se.Retyped]:
        return recorded.exec(library, path=path, argv=argv, name=name, cwd=cwd)

    return derive


def opens_instead(recorded: Recorded, recorded_path: str, path: str) -> Derivation:
    """The recorded program opens ``path`` where it opened ``recorded_path``."""

    def derive(library: CaptureLibrary) -> Replacements:
        return open_instead(library, recorded, recorded_path, path)

    return derive


def merged(*derivations: Derivation) -> Derivation:
    """The rewrites of several derivations; a later one wins for an event both change."""

    def derive(library: CaptureLibrary) -> dict[int, list[bytes] | se.Retyped]:
        replacements: dict[int, list[bytes] | se.Retyped] = {}
        for derivation in derivations:
            replacements.update(derivation(library))
        return replacements

    return derive


def label(*parts: Any) -> str:
    """A case's label from its parameters: short, one line."""
    text = " ".join(" ".join(p) if isinstance(p, list) else str(p) for p in parts)
    text = re.sub(r"\s+", " ", text).strip()
    return text if len(text) <= 110 else text[:107] + "..."


def _spelled(char: str) -> str:
    return "<space>" if char == " " else f"<U+{ord(char):04X}>"


def visible_edges(text: str) -> str:
    """``text`` with each whitespace character at its start or end spelled out (`-e ` as `-e<space>`):
    a case id ending in a space is lost when copied or typed in a shell (`--accept NAME`)."""
    core = text.strip()
    lead = text[: len(text) - len(text.lstrip())]
    trail = text[len(lead) + len(core) :]
    return "".join(map(_spelled, lead)) + core + "".join(map(_spelled, trail))


def case(
    group: str,
    case_label: str,
    recorded: Recorded,
    derive: Derivation,
    *expect: Expectation,
    witness: tuple[Witness, ...] = (),
    only: bool = False,
    pins: tuple[str, ...] = (),
) -> DerivedCase:
    return DerivedCase(f"{group}[{case_label}]", group, recorded, derive, tuple(expect), witness, only, pins)


def fires(
    rule: str, yes: bool, on: str, *, count: int | None = None, thread_of: Recorded | None = None
) -> Expectation:
    return Expectation(rule, yes, on, count if yes else None, thread_of)


def shows(on: str, fields: Mapping[str, Any] | None = None, *, count: int | None = 1) -> Witness:
    return Witness(on, dict(fields or {}), count)
