"""Whether a rule's exceptions, as the rules files load (the pack and the user's tuning), would keep
Falco from sending a scenario's alert: its fields are compared with each exception's values as
Falco compares them. A replay sends the alert all the same (it proves the responder, not
detection), and says so, so that a tuning that blinds a rule in serving pods (an exception on the
serving user) shows before a drill "passes" (review-replay L5).

Only exceptions, and only what can be told from the alert's fields: a field the alert does not
carry, a comparison this module does not evaluate, or a list it cannot read is "cannot tell", never
"silenced". A tuning written as a condition (`and not ...`) is not judged here (rules check warns
of one on a process's user)."""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from responder.rulespack.expand import RuleSet, RuleState
from responder.rulespack.rulesfile import ExceptionSpec

# One exception's values for one alternative: a value per field (a tuple for a list operator).
Row = tuple[str | tuple[str, ...], ...]


@dataclass(frozen=True)
class ExceptionRows:
    """One exception of a rule, as loaded: its fields, comparisons and every row of values."""

    name: str
    fields: tuple[str, ...]
    comps: tuple[str, ...]
    rows: tuple[Row, ...]
    where: str  # FILE:LINE of its definition and every append of values, comma-separated


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
    for exception in rule.exceptions:
        fields, comps, rows = _rows(exception, ruleset.list_items)
        if not rows:
            continue
        origins = rule.exception_origins.get(exception.name, ())
        where = ", ".join(
            f"{origin.file.path}:{origin.line}" if origin.line is not None else origin.file.path
            for origin in origins
        )
        found.append(ExceptionRows(exception.name, fields, comps, rows, where or "?"))
    return tuple(found)


def _rows(
    exception: ExceptionSpec, lists: Mapping[str, list[str]]
) -> tuple[tuple[str, ...], tuple[str, ...], tuple[Row, ...]]:
    values = exception.values or ()
    if isinstance(exception.fields, str) and isinstance(exception.comps, str):
        # One field: `field comps (v1, v2, ...)`, a value that names a list standing for its items.
        items = _items((v for v in values if isinstance(v, str)), lists)
        return (exception.fields,), (exception.comps,), ((items,),) if items else ()
    if isinstance(exception.fields, tuple) and isinstance(exception.comps, tuple):
        rows: list[Row] = []
        for value in values:
            if isinstance(value, tuple) and len(value) == len(exception.fields):
                rows.append(tuple(_listed(element, lists) for element in value))
        return exception.fields, exception.comps, tuple(rows)
    return (), (), ()


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


def silenced_by(fields: Mapping[str, Any], exceptions: Sequence[ExceptionRows]) -> Silenced | None:
    """The first exception row that holds for an alert with ``fields`` (its output_fields), or None."""
    for exception in exceptions:
        for row in exception.rows:
            matched = []
            for name, comp, expected in zip(exception.fields, exception.comps, row, strict=True):
                actual = fields.get(name)
                if actual is None or _holds(comp, _text(actual), expected) is not True:
                    break
                matched.append((name, _text(actual)))
            else:
                return Silenced(exception.name, exception.where, tuple(matched))
    return None


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
