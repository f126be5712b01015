"""Findings of the rules checker: each names file, line, the item (rule, macro, list) and the token."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Severity(StrEnum):
    ERROR = "error"
    WARNING = "warning"


@dataclass(frozen=True)
class Problem:
    severity: Severity
    file: str
    line: int | None
    message: str
    item: str | None = None  # "rule 'Shell in serving pod'", "macro 'serving_guard_scope'", ...
    token: str | None = None  # the offending token, when there is one

    def format(self) -> str:
        where = f"{self.file}:{self.line}" if self.line is not None else self.file
        parts = [f"{where}: {self.severity.value}:"]
        if self.item:
            parts.append(f"{self.item}:")
        parts.append(self.message)
        if self.token is not None and f"'{self.token}'" not in self.message:
            parts.append(f"(token '{self.token}')")
        return " ".join(parts)


def item_label(kind: str, name: str | None) -> str:
    return f"{kind} '{name}'" if name else kind


def has_errors(problems: list[Problem]) -> bool:
    return any(p.severity is Severity.ERROR for p in problems)
