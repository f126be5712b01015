"""`rules test --accept NAME`: failures the user accepts as a deliberate trade-off of their tuning
(ports allowed to any address, a rule switched off). NAME is what the output prints: an evasion
group, an evasion case (``group[label]``), a rule example's id, a recorded capture action
(``capture.scap#action``, which also covers the examples it proves), or a rule's name (every failure
of that rule: for a rule switched off on purpose). An accepted failure is printed
as ``accepted: ...`` and does not fail the run; a name that matches nothing is an error, and a name
whose cases all held is said (the acceptance can go)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from responder.errors import UserError
from responder.rulespack.derived import DerivedCase
from responder.rulespack.derived_report import DerivedReport
from responder.rulespack.evasions_common import visible_edges
from responder.rulespack.examples import ExamplesFile
from responder.rulespack.matrix import CaptureReport

Keyed = list[tuple[str, tuple[str, ...]]]  # failure line, the names that accept it


@dataclass(frozen=True)
class Acceptance:
    names: tuple[str, ...]  # as given, in order
    accepted: frozenset[str]  # the failure lines accepted
    unused: tuple[str, ...]  # names that accepted no failure: what they name held

    def covers(self, failure: str) -> bool:
        return failure in self.accepted


NONE = Acceptance((), frozenset(), ())


def capture_failures(report: CaptureReport) -> Keyed:
    """The capture matrix's failures, each with its action (``capture#action``) or capture."""
    keyed: Keyed = [(failure, ()) for failure in report.failures]
    for capture in report.captures:
        by_action = {f: f"{capture.capture}#{v.action.id}" for v in capture.actions for f in v.failures}
        # A disabled rule is in no matrix column, but still in the actions' expectations.
        named = {*report.rules, *(rule for v in capture.actions for rule in v.action.expect)}
        for failure in capture.failures:
            rules = tuple(sorted(rule for rule in named if failure.endswith(f": {rule}")))
            where = by_action.get(failure, capture.capture)
            keyed.append((failure, (where, *rules)))
    return keyed


def known_names(examples: ExamplesFile, evasions: Sequence[DerivedCase]) -> set[str]:
    """Every name `--accept` takes: known before anything runs, so a typo costs no run."""
    names = {case.id for case in evasions} | {case.group for case in evasions}
    names |= {rule for case in evasions for rule in case.rules} | {entry.rule for entry in examples.rules}
    names |= {e.id for entry in examples.rules for e in (*entry.positive, *entry.negative)}
    for capture in examples.captures.files:
        names.add(capture.file)
        names |= {f"{capture.file}#{action.id}" for action in capture.actions}
    return names


def renamed(names: Sequence[str], evasions: Sequence[DerivedCase]) -> list[str]:
    """``names``, each evasion case id written with the spaces at its label's ends (`[-e ]`, its name
    before they were spelled out) as the case's id (`[-e<space>]`): an --accept written then still holds."""
    return [_renamed(name, evasions) for name in names]


def _renamed(name: str, evasions: Sequence[DerivedCase]) -> str:
    for case in evasions:
        opening = f"{case.group}["
        label = name[len(opening) : -1] if name.startswith(opening) and name.endswith("]") else None
        if label is not None and f"{opening}{visible_edges(label)}]" == case.id:
            return case.id
    return name


def check_names(names: Sequence[str], known: set[str]) -> None:
    unknown = [name for name in dict.fromkeys(names) if name not in known]
    if unknown:
        raise UserError(
            f"--accept {unknown[0]!r}: no evasion group, evasion case, rule example id, capture"
            " action (capture.scap#action) or rule of that name; copy it from the output of `rules test`"
        )


def accept(names: Sequence[str], report: CaptureReport, derived: DerivedReport) -> Acceptance:
    """Which failures ``names`` (checked by check_names) accept."""
    if not names:
        return NONE
    keyed = [
        *capture_failures(report),
        *derived.keyed_example_failures(),
        *derived.keyed_evasion_failures(),
    ]
    wanted = set(names)
    accepted = frozenset(text for text, keys in keyed if wanted.intersection(keys))
    used = {key for text, keys in keyed if text in accepted for key in keys}
    unused = tuple(name for name in dict.fromkeys(names) if name not in used)
    return Acceptance(tuple(dict.fromkeys(names)), accepted, unused)
