"""Making attacker-controlled alert text safe to show in Slack (pure).

Everything in a Falco alert can be chosen by whoever runs the process it describes (command
lines, file names, even the pod name in a forged alert). Shown raw, it could ping a channel
(``<!channel>``), plant a link (``<https://evil|click>``), close our code spans with
backticks, or hide itself with bidi/zero-width characters. :func:`escape` turns any string
into text that Slack displays literally:

- ``&``, ``<``, ``>`` become ``&amp;``, ``&lt;``, ``&gt;`` (Slack's mrkdwn escaping; Slack decodes
  them for display), so no ``<...>`` markup (links, mentions, dates) can form;
- a backtick becomes U+02CB (looks alike) so code spans and blocks cannot be closed or opened;
- control, format (bidi, zero-width) and surrogate characters, and the letters that show as
  nothing (U+3164 HANGUL FILLER and its kin, U+2800, U+034F, variation selectors), are shown as
  ``\\xNN``/``\\uNNNN``;
- ``@channel``, ``@here``, ``@everyone`` get a WORD JOINER after the ``@`` so they never ping,
  even where Slack auto-parses plain mentions.

The output of :func:`escape` never contains ``<``, ``>`` or a backtick, and every ``&`` in it
starts one of the three entities. Its length is bounded (``limit``), and truncation never
splits an entity: Slack rejects over-long blocks, and a cut entity would show as garbage.

A value shown in a block (a command line, Falco's output) must not hide its end: padded with
blanks past the limit, a command would show its harmless start only. :func:`escape_ends` (and so
:func:`code_block`) shows a long run of blank characters as its count (``[1200 blanks: ␣]``)
and, when the value is still too long, keeps its head and its tail with how many characters are
left out between.

Inside a code span or block that is all: Slack shows ``*``, ``_`` and ``~`` there as they are
(and a command shown there must paste as it is). Outside one, Slack reads them as bold, italic
and strike, and mrkdwn has no escape for them (no backslash escape; whether a zero-width
character beside one stops it is up to Slack's parser). So alert text shown outside code goes
through :func:`defuse` first, which swaps them for look-alikes, as :func:`escape` does with a
backtick everywhere: ``*`` becomes U+2217, ``_`` U+02CD, ``~`` U+223C; but an underscore between two
letters or digits stays (Slack opens and closes italics only at a word's edge), so that snake_case
names (``output_fields``, ``my_model``) copy as they are. Alert values that must be copied exactly
(ids, names) are put in code spans (:func:`code`) instead.

A ``plain_text`` object (a header) is shown by Slack as it is: no formatting, and no entities
either (``&amp;`` would show as typed). :func:`plain` makes text for one.
"""

from __future__ import annotations

import itertools
import re
import unicodedata
from collections.abc import Callable, Iterable, Iterator

from responder.terminal import BLANK_LETTERS

ELLIPSIS = "…"
BACKTICK_LOOKALIKE = "\u02cb"  # MODIFIER LETTER GRAVE ACCENT
WORD_JOINER = "\u2060"

_ENTITIES = {"&": "&amp;", "<": "&lt;", ">": "&gt;", "`": BACKTICK_LOOKALIKE}
# mrkdwn's bold, italic and strike marks, as look-alikes: for alert text outside code spans.
FORMATTING_LOOKALIKES = {"*": "\u2217", "_": "\u02cd", "~": "\u223c"}
# The marks that may format: every ``*`` and ``~``, and an ``_`` at a word's edge (not between two
# ASCII letters or digits, where Slack reads no italics: snake_case; other scripts' word edges are
# Slack's to judge, so an underscore beside them stays a look-alike).
_FORMATTING_MARK = re.compile(r"[*~]|(?<![A-Za-z0-9])_|_(?![A-Za-z0-9])")
# plain_text shows entities as typed: ``<`` and ``>`` as look-alikes (a message has no raw ``<``
# anywhere, even where Slack would not read one), ``&`` as it is.
_PLAIN = {"<": "\uff1c", ">": "\uff1e", "`": BACKTICK_LOOKALIKE}
# Line breaks and tabs in a plain_text line: a space.
_BREAKS = frozenset({"\n", "\r", "\t", "\v", "\f", "\x85", "\u2028", "\u2029"})
# Without a word boundary: "@channel0" is harmless, but a joiner costs nothing.
_BROADCAST = re.compile(r"@(?=channel|here|everyone)", re.IGNORECASE)
_HIDDEN_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})
_SHORT_ESCAPES = {"\n": "\\n", "\t": "\\t", "\r": "\\r"}
# A run of more blank characters than this is shown as its count: padding cannot push what follows
# it out of a cut value's view.
_BLANK_RUN_KEPT = 8
# The most kinds of blank a run's count names (the rest: an ellipsis).
_BLANK_KINDS_NAMED = 4
_VISIBLE_SPACE = "\u2423"  # OPEN BOX, a space in a run's count


def _hidden(char: str) -> bool:
    """``char`` shows as nothing (or moves or hides other text): shown by its code instead."""
    return unicodedata.category(char) in _HIDDEN_CATEGORIES or char in BLANK_LETTERS


def _blank(char: str) -> bool:
    """``char`` shows as white space or as nothing: what padding is made of."""
    return char.isspace() or _hidden(char)


def _char_code(char: str) -> str:
    """``\\n``, ``\\x1b``, ``\\u3164``, ``\\U000e0041``: a character by its code."""
    short = _SHORT_ESCAPES.get(char)
    if short is not None:
        return short
    point = ord(char)
    if point < 0x100:
        return f"\\x{point:02x}"
    return f"\\u{point:04x}" if point <= 0xFFFF else f"\\U{point:08x}"


def _visible(char: str) -> str:
    mapped = _ENTITIES.get(char)
    if mapped is not None:
        return mapped
    return _char_code(char) if _hidden(char) else char


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
    """``text`` with mrkdwn's formatting marks (``*``, ``~``, and ``_`` at a word's edge) as
    look-alikes, for alert text shown outside a code span (where Slack has no escape for them);
    :func:`escape` the result. One character for one: lengths, and so cuts, stay those of ``text``."""
    return _FORMATTING_MARK.sub(lambda mark: FORMATTING_LOOKALIKES[mark.group()], text)


def plain(text: str, limit: int | None = None) -> str:
    """``text`` for a ``plain_text`` object (a header), at most ``limit`` characters long: no
    entities (Slack shows plain text as it is), ``<``, ``>`` and backticks as look-alikes, line
    breaks and tabs as spaces, other control, format and surrogate characters shown as
    :func:`escape` shows them, broadcast mentions joined. Bounded and cut as :func:`escape`."""
    return _bounded(text, limit, _plain_visible)


def _shown_at(text: str, index: int, visible: Callable[[str], str]) -> str:
    """The character of ``text`` at ``index``, shown (a broadcast mention's ``@`` joined)."""
    char = text[index]
    broadcast = char == "@" and _BROADCAST.match(text, index) is not None
    return "@" + WORD_JOINER if broadcast else visible(char)


def _escaped(text: str, visible: Callable[[str], str]) -> Iterator[str]:
    """``text`` shown character by character."""
    for index in range(len(text)):
        yield _shown_at(text, index, visible)


def _bounded(text: str, limit: int | None, visible: Callable[[str], str]) -> str:
    if limit is not None and limit < len(ELLIPSIS):
        raise ValueError("limit must be at least 1")
    pieces: list[str] = []
    used = 0
    for piece in _escaped(text, visible):
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


# A piece of escaped text, and how many characters of the text it shows.
_Piece = tuple[str, int]


def _blank_run(run: str) -> str:
    """A run of blank characters as its count, naming what it is made of: ``[1200 blanks: ␣]``,
    ``[1200 blanks: ␣\\u3164]``."""
    kinds = list(dict.fromkeys(run))
    named = "".join(
        _VISIBLE_SPACE if char == " " else _char_code(char) for char in kinds[:_BLANK_KINDS_NAMED]
    )
    more = ELLIPSIS if len(kinds) > _BLANK_KINDS_NAMED else ""
    return f"[{len(run)} blanks: {named}{more}]"


def _pieces(text: str, indices: Iterable[int]) -> Iterator[_Piece]:
    """The characters of ``text`` at ``indices`` (onwards or backwards) escaped, a piece each, but
    a run of more than _BLANK_RUN_KEPT blanks one piece: its count. Lazy: a cut value is read only
    as far as its head and its tail reach."""
    for blank, group in itertools.groupby(indices, key=lambda index: _blank(text[index])):
        if not blank:
            yield from ((_shown_at(text, index, _visible), 1) for index in group)
            continue
        at = list(group)
        run = text[min(at) : max(at) + 1]
        if len(run) > _BLANK_RUN_KEPT:
            yield _blank_run(run), len(run)
        else:
            yield from ((_visible(char), 1) for char in run)


def _leading(pieces: Iterator[_Piece], limit: int) -> list[_Piece]:
    """The first of ``pieces`` that fit in ``limit`` characters together."""
    taken: list[_Piece] = []
    used = 0
    for piece in pieces:
        used += len(piece[0])
        if used > limit:
            break
        taken.append(piece)
    return taken


# The least limit at which a cut keeps both ends: the mark saying what is left out, at its longest
# (_left_out), and as much again for the head and the tail.
ENDS_MIN_LIMIT = 2 * len(" … 1000000 characters left out … ")


def _left_out(count: int) -> str:
    return f" {ELLIPSIS} {count} character{'' if count == 1 else 's'} left out {ELLIPSIS} "


def escape_ends(text: str, limit: int) -> tuple[str, int]:
    """``text`` made literal as :func:`escape` makes it, a run of more than _BLANK_RUN_KEPT blank
    characters shown as its count (``[1200 blanks: ␣]``), at most ``limit`` characters long: when
    longer, its head and its tail (about half each) with how many characters of ``text`` are left
    out between. Returns that, and how many were left out (0: none)."""
    head = _leading(_pieces(text, range(len(text))), limit)
    if sum(count for _, count in head) == len(text):
        return "".join(piece for piece, _ in head), 0
    # The mark at its longest: what is left out is never more than the whole.
    room = limit - len(_left_out(len(text)))
    if room < 0:
        raise ValueError(f"limit {limit} cannot hold the mark saying what is left out")
    head = _leading(iter(head), room - room // 2)
    tail = _leading(_pieces(text, reversed(range(len(text)))), room // 2)[::-1]
    left_out = len(text) - sum(count for _, count in head) - sum(count for _, count in tail)
    shown = "".join(piece for piece, _ in head) + _left_out(left_out) + "".join(piece for piece, _ in tail)
    return shown, left_out


def _cut_both_ends(text: str, limit: int) -> str:
    """``text`` escaped within ``limit``: its head and tail (:func:`escape_ends`) where the limit
    leaves room for both beside the mark, else its head (:func:`escape`)."""
    if limit >= ENDS_MIN_LIMIT:
        return escape_ends(text, limit)[0]
    return escape(text, limit)


def code(text: str, limit: int) -> str:
    """An inline code span holding ``text`` literally; at most ``limit`` characters in all. Too
    long, it keeps its head and its tail where the limit has room for both (an executable's or a
    file's path padded to push its end out of view stays readable), else its head."""
    return "`" + _cut_both_ends(text or " ", max(1, limit - 2)) + "`"


def code_block(text: str, limit: int) -> str:
    """A preformatted block holding ``text`` literally; at most ``limit`` characters in all
    (:func:`code_block_ends`)."""
    return code_block_ends(text, limit)[0]


def code_block_ends(text: str, limit: int) -> tuple[str, int]:
    """A preformatted block holding ``text`` literally, at most ``limit`` characters in all: long
    runs of blanks counted, and when still too long its head and tail (:func:`escape_ends`); and
    how many characters of ``text`` it leaves out (0: none)."""
    shown, left_out = escape_ends(text or " ", max(1, limit - 6))
    return "```" + shown + "```", left_out


def code_block_lines(lines: list[str], limit: int, *, line_limit: int | None = None) -> str:
    """A preformatted block with one literal line per item (a newline inside an item is shown
    as ``\\n``, so an item can never fake extra lines), each cut to ``line_limit``; whole lines are
    dropped to fit ``limit``, the last line saying how many."""
    budget = max(1, limit - 6)
    kept: list[str] = []
    used = 0
    for index, line in enumerate(lines):
        piece = _cut_both_ends(line or " ", min(budget, line_limit) if line_limit else budget)
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
    "code_block_ends",
    "code_block_lines",
    "defuse",
    "escape",
    "escape_ends",
    "plain",
]
