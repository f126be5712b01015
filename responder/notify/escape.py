"""Making attacker-controlled alert text safe to show in Slack (pure).

Everything in a Falco alert can be chosen by whoever runs the process it describes (command
lines, file names, even the pod name in a forged alert). Shown raw, it could ping a channel
(``<!channel>``), plant a link (``<https://evil|click>``), close our code spans with
backticks, or hide itself with bidi/zero-width characters. :func:`escape` turns any string
into text that Slack displays literally:

- ``&``, ``<``, ``>`` become ``&amp;``, ``&lt;``, ``&gt;`` (Slack's mrkdwn escaping; Slack decodes
  them for display), so no ``<...>`` markup (links, mentions, dates) can form;
- a backtick becomes U+02CB (looks alike) so code spans and blocks cannot be closed or opened;
- control, format (bidi, zero-width) and surrogate characters are shown as ``\\xNN``/``\\uNNNN``;
- ``@channel``, ``@here``, ``@everyone`` get a WORD JOINER after the ``@`` so they never ping,
  even where Slack auto-parses plain mentions.

The output of :func:`escape` never contains ``<``, ``>`` or a backtick, and every ``&`` in it
starts one of the three entities. Its length is bounded (``limit``), and truncation never
splits an entity: Slack rejects over-long blocks, and a cut entity would show as garbage.

Inside a code span or block that is all: Slack shows ``*``, ``_`` and ``~`` there as they are
(and a command shown there must paste as it is). Outside one, Slack reads them as bold, italic
and strike, and mrkdwn has no escape for them (no backslash escape; whether a zero-width
character beside one stops it is up to Slack's parser). So alert text shown outside code goes
through :func:`defuse` first, which swaps them for look-alikes, as :func:`escape` does with a
backtick everywhere: ``*`` becomes U+2217, ``_`` U+02CD, ``~`` U+223C. Alert values that must be
copied exactly (ids, names) are put in code spans (:func:`code`) instead.

A ``plain_text`` object (a header) is shown by Slack as it is: no formatting, and no entities
either (``&amp;`` would show as typed). :func:`plain` makes text for one.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable

ELLIPSIS = "…"
BACKTICK_LOOKALIKE = "\u02cb"  # MODIFIER LETTER GRAVE ACCENT
WORD_JOINER = "\u2060"

_ENTITIES = {"&": "&amp;", "<": "&lt;", ">": "&gt;", "`": BACKTICK_LOOKALIKE}
# mrkdwn's bold, italic and strike marks, as look-alikes: for alert text outside code spans.
FORMATTING_LOOKALIKES = {"*": "\u2217", "_": "\u02cd", "~": "\u223c"}
_DEFUSE = str.maketrans(FORMATTING_LOOKALIKES)
# plain_text shows entities as typed: ``<`` and ``>`` as look-alikes (a message has no raw ``<``
# anywhere, even where Slack would not read one), ``&`` as it is.
_PLAIN = {"<": "\uff1c", ">": "\uff1e", "`": BACKTICK_LOOKALIKE}
# Line breaks and tabs in a plain_text line: a space.
_BREAKS = frozenset({"\n", "\r", "\t", "\v", "\f", "\x85", "\u2028", "\u2029"})
# Without a word boundary: "@channel0" is harmless, but a joiner costs nothing.
_BROADCAST = re.compile(r"@(?=channel|here|everyone)", re.IGNORECASE)
_HIDDEN_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})


def _visible(char: str) -> str:
    mapped = _ENTITIES.get(char)
    if mapped is not None:
        return mapped
    if char == " " or unicodedata.category(char) not in _HIDDEN_CATEGORIES:
        return char
    if char == "\n":
        return "\\n"
    if char == "\t":
        return "\\t"
    if char == "\r":
        return "\\r"
    point = ord(char)
    if point < 0x100:
        return f"\\x{point:02x}"
    return f"\\u{point:04x}" if point <= 0xFFFF else f"\\U{point:08x}"


def _plain_visible(char: str) -> str:
    mapped = _PLAIN.get(char)
    if mapped is not None:
        return mapped
    if char in _BREAKS:
        return " "
    return char if char in _ENTITIES else _visible(char)


def escape(text: str, limit: int | None = None) -> str:
    """``text`` made literal for Slack mrkdwn, at most ``limit`` characters long.

    A truncated result ends with an ellipsis. ``limit`` counts output characters (after
    escaping), so a string of ``&`` cannot blow a block past Slack's limits. Outside a code span,
    alert text goes through :func:`defuse` first (``*``, ``_``, ``~`` would format it).
    """
    return _bounded(text, limit, _visible)


def defuse(text: str) -> str:
    """``text`` with mrkdwn's formatting marks (``*``, ``_``, ``~``) as look-alikes, for alert text
    shown outside a code span (where Slack has no escape for them); :func:`escape` the result. One
    character for one: lengths, and so cuts, stay those of ``text``."""
    return text.translate(_DEFUSE)


def plain(text: str, limit: int | None = None) -> str:
    """``text`` for a ``plain_text`` object (a header), at most ``limit`` characters long: no
    entities (Slack shows plain text as it is), ``<``, ``>`` and backticks as look-alikes, line
    breaks and tabs as spaces, other control, format and surrogate characters shown as
    :func:`escape` shows them, broadcast mentions joined. Bounded and cut as :func:`escape`."""
    return _bounded(text, limit, _plain_visible)


def _bounded(text: str, limit: int | None, visible: Callable[[str], str]) -> str:
    if limit is not None and limit < len(ELLIPSIS):
        raise ValueError("limit must be at least 1")
    pieces: list[str] = []
    used = 0
    for index, char in enumerate(text):
        broadcast = char == "@" and _BROADCAST.match(text, index) is not None
        piece = "@" + WORD_JOINER if broadcast else visible(char)
        pieces.append(piece)
        used += len(piece)
        if limit is not None and used > limit:
            break
    else:
        return "".join(pieces)
    assert limit is not None
    # Too long: drop whole pieces (never half an entity) until the ellipsis fits.
    while pieces and used + len(ELLIPSIS) > limit:
        used -= len(pieces.pop())
    return "".join(pieces) + ELLIPSIS


def code(text: str, limit: int) -> str:
    """An inline code span holding ``text`` literally; at most ``limit`` characters in all."""
    return "`" + escape(text or " ", max(1, limit - 2)) + "`"


def code_block(text: str, limit: int) -> str:
    """A preformatted block holding ``text`` literally; at most ``limit`` characters in all."""
    return "```" + escape(text or " ", max(1, limit - 6)) + "```"


def code_block_lines(lines: list[str], limit: int, *, line_limit: int | None = None) -> str:
    """A preformatted block with one literal line per item (a newline inside an item is shown
    as ``\\n``, so an item can never fake extra lines), each cut to ``line_limit``; whole lines are
    dropped to fit ``limit``, the last line saying how many."""
    budget = max(1, limit - 6)
    kept: list[str] = []
    used = 0
    for index, line in enumerate(lines):
        piece = escape(line or " ", min(budget, line_limit) if line_limit else budget)
        cost = len(piece) + (1 if kept else 0)
        left = len(lines) - index - 1
        if used + cost + (len(f"{ELLIPSIS} {left} more") + 1 if left else 0) > budget:
            kept.append(f"{ELLIPSIS} {len(lines) - index} more")
            break
        kept.append(piece)
        used += cost
    return "```" + "\n".join(kept) + "```"


__all__ = [
    "BACKTICK_LOOKALIKE",
    "ELLIPSIS",
    "FORMATTING_LOOKALIKES",
    "WORD_JOINER",
    "code",
    "code_block",
    "code_block_lines",
    "defuse",
    "escape",
    "plain",
]
