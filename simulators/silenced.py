"""Whether a rule's exceptions, as the rules files load (the pack and the user's tuning), would keep
Falco from sending a scenario's alert: its fields are compared with each exception's values as
Falco compares them. A replay sends the alert all the same (it proves the responder, not
detection), and says so, so that a tuning that blinds a rule in serving pods (an exception on the
serving user) shows before a drill "passes" (review-replay L5).

Only exceptions, and only what can be told from the alert's fields: a field the alert does not
carry, a comparison this module does not evaluate, or a list it cannot read is "cannot tell", never
"silenced"; an exception whose other fields hold is named as one that may silence it. A tuning
written as a condition (`and not ...`) is not judged here (rules check warns of one on a process's
user)."""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from responder.rulespack.expand import RuleSet, RuleState
from responder.rulespack.rulesfile import ExceptionSpec, Mode, RuleItem

# One exception's values for one alternative: a value per field (a tuple for a list operator).
Row = tuple[str | tuple[str, ...], ...]


@dataclass(frozen=True)
class ExceptionRows:
    """One exception of a rule, as loaded: its fields, comparisons and every row of values."""

    name: str
    fields: tuple[str, ...]
    comps: tuple[str, ...]
    rows: tuple[Row, ...]
    where: tuple[str, ...]  # each row's FILE:LINE: the item that wrote its values
    # Per row: written by a tuning (an append or override of the rule), not by the rule's definition,
    # whose rows `rules test` proves on the scenarios' captures. Only a tuning's row that cannot be
    # judged is said to be one that may silence an alert: the pack's probe and init-container rows
    # would be said of every replay. Empty: every row counts as a tuning's.
    tuned: tuple[bool, ...] = ()


@dataclass(frozen=True)
class Silenced:
    """An exception row that holds for an alert: Falco would not send it."""

    exception: str
    where: str
    matched: tuple[tuple[str, str], ...]  # (field, the alert's value)

    def text(self) -> str:
        fields = ", ".join(f"{name}={value}" for name, value in self.matched)
        return f"exception '{self.exception}' ({self.where}) holds for its {fields}"


def exception_rows(ruleset: RuleSet, rule: RuleState) -> tuple[ExceptionRows, ...]:
    """``rule``'s exceptions with values, as rows (lists named in them read from ``ruleset``)."""
    found = []
    lists = ruleset.list_items
    for exception in rule.exceptions:
        shape = _shape(exception)
        if shape is None:
            continue
        written = _written_at(ruleset, rule, exception.name)
        read = [
            (row, *written.get(value, ("?", False)))
            for value in exception.values or ()
            if (row := _row(shape[0], value, lists)) is not None
        ]
        if read:
            rows = tuple(row for row, _, _ in read)
            wheres = tuple(where for _, where, _ in read)
            found.append(
                ExceptionRows(exception.name, *shape, rows, wheres, tuple(tuned for *_, tuned in read))
            )
    return tuple(found)


def _shape(exception: ExceptionSpec) -> tuple[tuple[str, ...], tuple[str, ...]] | None:
    """An exception's fields and comparisons, one per field (a single field's as one); None for a
    shape this cannot read."""
    if isinstance(exception.fields, str) and isinstance(exception.comps, str):
        return (exception.fields,), (exception.comps,)
    if isinstance(exception.fields, tuple) and isinstance(exception.comps, tuple):
        return exception.fields, exception.comps
    return None


def _written_at(ruleset: RuleSet, rule: RuleState, name: str) -> dict[object, tuple[str, bool]]:
    """Where each value of ``rule``'s exception ``name`` was written (FILE:LINE of the exception
    in the item that gave it: the definition, or an append), and whether by a tuning (not the
    definition)."""
    found: dict[object, tuple[str, bool]] = {}
    for rules_file in ruleset.files:
        for item in rules_file.items:
            if not isinstance(item, RuleItem) or item.name != rule.name:
                continue
            for exception in item.get("exceptions") or ():
                if exception.name == name:
                    line = exception.line or item.line
                    where = f"{rules_file.path}:{line}" if line is not None else rules_file.path
                    for value in exception.values or ():
                        found[value] = (where, item.mode != Mode.DEFINE)
    return found


def _row(
    fields: tuple[str, ...], value: str | tuple[str | tuple[str, ...], ...], lists: Mapping[str, list[str]]
) -> Row | None:
    """One value of an exception on ``fields`` as a row; None for one it cannot read."""
    if len(fields) == 1 and isinstance(value, str):
        # One field: `field comps (v1, v2, ...)`, each value an alternative (a list's name: its items).
        items = _items((value,), lists)
        return (items,) if items else None
    if isinstance(value, tuple) and len(value) == len(fields):
        return tuple(_listed(element, lists) for element in value)
    return None


def _listed(element: str | tuple[str, ...], lists: Mapping[str, list[str]]) -> str | tuple[str, ...]:
    """A list operator's operand as items: a list written inline, or a list's name (read from the
    rules files), its items' lists' names expanded too; anything else as written."""
    if isinstance(element, tuple):
        return _items(element, lists)
    text = element.strip()
    if text.startswith("(") and text.endswith(")"):
        return _items(_split_items(text[1:-1]), lists)
    if text in lists:
        return _items(lists[text], lists)
    return element


def _items(items: Iterable[str], lists: Mapping[str, list[str]]) -> tuple[str, ...]:
    """``items`` as Falco reads a list's items: a list's name stands for its items, quotes are not
    part of an item."""
    found: list[str] = []
    for item in items:
        text = item.strip()
        if text in lists:
            found.extend(_unquoted(listed) for listed in lists[text])
        elif text:
            found.append(_unquoted(text))
    return tuple(found)


def _unquoted(text: str) -> str:
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        return text[1:-1]
    return text


def _split_items(text: str) -> list[str]:
    """An inline list's items, split at the commas outside quotes."""
    items, current, quote = [], "", ""
    for char in text:
        if quote:
            quote = "" if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char == ",":
            items.append(current)
            current = ""
            continue
        current += char
    items.append(current)
    return items


@dataclass(frozen=True)
class Untold:
    """An exception row none of whose fields the alert fails, but some it cannot be judged on: it
    may keep Falco from sending the alert, or not (said, never counted as silenced)."""

    exception: str
    where: str
    matched: tuple[tuple[str, str], ...]  # (field, the alert's value) of the fields that hold
    untold: tuple[str, ...]  # why each other field cannot be judged

    def text(self) -> str:
        held = ", ".join(f"{name}={value}" for name, value in self.matched)
        held_text = f" holds for its {held}, and" if held else ""
        untold = ", ".join(self.untold)
        return f"exception '{self.exception}' ({self.where}){held_text} cannot be judged on {untold}"


@dataclass(frozen=True)
class Verdict:
    """What a rule's exceptions do to one alert: the row that silences it, or the rows that may."""

    silenced: Silenced | None
    untold: tuple[Untold, ...]


def silenced_by(fields: Mapping[str, Any], exceptions: Sequence[ExceptionRows]) -> Silenced | None:
    """The first exception row that holds for an alert with ``fields`` (its output_fields), or None."""
    return judge(fields, exceptions).silenced


def judge(fields: Mapping[str, Any], exceptions: Sequence[ExceptionRows]) -> Verdict:
    """The first exception row that holds for an alert with ``fields`` (its output_fields); without
    one, each exception's first row written by a tuning that no field fails but some cannot be told
    from the alert."""
    untold: list[Untold] = []
    for exception in exceptions:
        first_untold: Untold | None = None
        tuned = exception.tuned or (True,) * len(exception.rows)
        for row, where, by_tuning in zip(exception.rows, exception.where, tuned, strict=True):
            matched: list[tuple[str, str]] = []
            unknown: list[str] = []
            for name, comp, expected in zip(exception.fields, exception.comps, row, strict=True):
                actual = fields.get(name)
                if actual is None:
                    unknown.append(f"{name} (not in the alert)")
                    continue
                holds = _holds(comp, _text(actual), expected)
                if holds is False:
                    break
                if holds is None:
                    unknown.append(f"{name} ({comp}: not evaluated here)")
                    continue
                matched.append((name, _text(actual)))
            else:
                if not unknown:
                    return Verdict(Silenced(exception.name, where, tuple(matched)), ())
                if first_untold is None and by_tuning:
                    first_untold = Untold(exception.name, where, tuple(matched), tuple(unknown))
        if first_untold is not None:
            untold.append(first_untold)
    return Verdict(None, tuple(untold))


def _text(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def _holds(comp: str, actual: str, expected: str | tuple[str, ...]) -> bool | None:
    """Falco's comparison ``actual comp expected``; None where this cannot tell (an operator it does
    not evaluate, a list it could not read)."""
    if isinstance(expected, tuple):
        if comp in ("in", "intersects"):
            return actual in expected
        if comp == "pmatch":
            return any(actual == p or actual.startswith(p.rstrip("/") + "/") for p in expected)
        return None
    checks = {
        "=": lambda: actual == expected,
        "==": lambda: actual == expected,
        "!=": lambda: actual != expected,
        "startswith": lambda: actual.startswith(expected),
        "endswith": lambda: actual.endswith(expected),
        "contains": lambda: expected in actual,
        "icontains": lambda: expected.lower() in actual.lower(),
        # libc's fnmatch, as Falco's: "[^...]" negates a set as "[!...]" does (Python's reads the ^).
        "glob": lambda: fnmatch.fnmatchcase(actual, expected.replace("[^", "[!")),
    }
    check = checks.get(comp)
    return check() if check is not None else None
