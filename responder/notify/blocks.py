"""Block Kit primitives and Slack's size limits (pure): the objects a message is built of, the
budgets a value is cut to, text kept under its limit (:class:`SizedLines`), and the time as
on-call reads it. What goes into them is escaped as :mod:`responder.notify.render` says."""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from responder.notify.escape import code

# Slack's Block Kit limits.
HEADER_LIMIT = 150
SECTION_LIMIT = 3000
FIELD_LIMIT = 2000
CONTEXT_TEXT_LIMIT = 3000
MAX_BLOCKS = 50
MAX_SECTION_FIELDS = 10
MAX_CONTEXT_ELEMENTS = 10
# The notification/fallback text: Slack truncates past 4000; keep it short and readable.
FALLBACK_LIMIT = 1000

# Budgets for single values (output characters after escaping, markup included).
NAME_LIMIT = 300
SHORT_LIMIT = 200
CMDLINE_LIMIT = 1200
REASON_LIMIT = 500
OUTPUT_LIMIT = 1200
OTHER_FIELDS_LIMIT = 1200

# What a message that leaves something out says: where the whole of it is.
TRUNCATED_NOTE = "truncated; the full record is in `serving-guard audit`"
_MORE = f"_… ({TRUNCATED_NOTE})_"


def format_utc(time_ns: int) -> str:
    """``2025-01-28 10:00:00 UTC``: what on-call reads; the audit trail has the nanoseconds."""
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(time_ns // 1_000_000_000))


class SizedLines:
    """mrkdwn lines that never exceed ``limit``. Over it, the longest lines are cut at a space
    outside code (never inside an entity or a code span), each keeping its start (its status
    word), then lines are left out from the end only if cutting is not enough; a note says so."""

    def __init__(self, limit: int = SECTION_LIMIT) -> None:
        self._limit = limit
        self._lines: list[str] = []
        self._labels: set[int] = set()  # the lines that name the line after them (a block's label)

    def add(self, line: str) -> None:
        self._lines.append(line)

    def add_labelled(self, label: str, block: str) -> None:
        """``label``, then ``block`` (a code block it names): never left without it."""
        self._labels.add(len(self._lines))
        self._lines.extend((label, block))

    def extend(self, lines: Iterable[str]) -> None:
        for line in lines:
            self.add(line)

    def __bool__(self) -> bool:
        return bool(self._lines)

    def text(self) -> str:
        whole = "\n".join(self._lines)
        if len(whole) <= self._limit:
            return whole
        lines = list(self._lines)
        # What the lines may use: the limit less the note and every newline.
        room = self._limit - len(_MORE) - len(lines)
        # Lines that cannot be cut safely (a code block, no space outside code): the next longest
        # is cut instead, so that no line is left out while another can still be cut.
        uncuttable: set[int] = set()
        while sum(map(len, lines)) > room:
            cuttable = [index for index in range(len(lines)) if index not in uncuttable]
            if not cuttable:
                break
            longest = max(cuttable, key=lambda index: len(lines[index]))
            excess = sum(map(len, lines)) - room
            cut = _cut_line(lines[longest], len(lines[longest]) - excess)
            if len(cut) >= len(lines[longest]):
                uncuttable.add(longest)
                continue
            lines[longest] = cut
        while lines and sum(map(len, lines)) > room:
            room += 1  # the newline of the line left out
            lines.pop()
            if len(lines) - 1 in self._labels:  # its block is out: so is the label naming it
                room += 1
                lines.pop()
        return "\n".join([*lines, _MORE])


# The least a cut line keeps (its status word and the start of what it says).
_CUT_LINE_MIN = 80
_CUT_MARK = " …"


def _cut_line(line: str, length: int) -> str:
    """``line`` cut to at most ``length`` (not below _CUT_LINE_MIN) at a space outside any code
    span or block, marked with an ellipsis; ``line`` itself when it cannot be cut there."""
    end = max(length, _CUT_LINE_MIN) - len(_CUT_MARK)
    if end >= len(line) or end <= 0:
        return line
    at = line.rfind(" ", 0, end + 1)
    while at > 0 and line.count("`", 0, at) % 2:
        at = line.rfind(" ", 0, at)
    if at <= 0:
        return line
    return line[:at].rstrip(",;:") + _CUT_MARK


def _mrkdwn(text: str) -> dict[str, Any]:
    # verbatim: Slack must not auto-link URLs, channel names or mentions in the text.
    return {"type": "mrkdwn", "text": text, "verbatim": True}


def section_block(lines: SizedLines) -> dict[str, Any]:
    return {"type": "section", "text": _mrkdwn(lines.text())}


def header_block(text: str) -> dict[str, Any]:
    return {"type": "header", "text": {"type": "plain_text", "text": text, "emoji": True}}


def context_block(elements: Iterable[str]) -> dict[str, Any]:
    items = [_mrkdwn(text[:CONTEXT_TEXT_LIMIT]) for text in elements if text]
    return {"type": "context", "elements": items[:MAX_CONTEXT_ELEMENTS]}


def section_field(label: str, value: str) -> dict[str, Any]:
    return _mrkdwn(f"*{label}*\n{value}")


def code_or_unknown(text: str | None, limit: int = NAME_LIMIT) -> str:
    """A code span for a known value, an italic dash for a missing one."""
    return code(text, limit) if text else "_unknown_"


__all__ = [
    "CMDLINE_LIMIT",
    "CONTEXT_TEXT_LIMIT",
    "FALLBACK_LIMIT",
    "FIELD_LIMIT",
    "HEADER_LIMIT",
    "MAX_BLOCKS",
    "MAX_CONTEXT_ELEMENTS",
    "MAX_SECTION_FIELDS",
    "NAME_LIMIT",
    "OTHER_FIELDS_LIMIT",
    "OUTPUT_LIMIT",
    "REASON_LIMIT",
    "SECTION_LIMIT",
    "SHORT_LIMIT",
    "TRUNCATED_NOTE",
    "SizedLines",
    "code_or_unknown",
    "context_block",
    "format_utc",
    "header_block",
    "section_block",
    "section_field",
]
