"""Alert text on an operator's terminal (the audit's and ``config explain``'s output, and the text
logs): whoever sends an alert chooses its text, and a terminal would run the escape sequences in it
(erase or rewrite a printed line, hide text, retitle the window, plant a link), reorder it (bidi
overrides) or show it as nothing (zero-width characters, fillers)."""

from __future__ import annotations

# Letters and marks that show as nothing, though their categories (Lo, Mn, So) are those of text
# (str.isprintable takes them for printable): padding that looks like no padding at all. The
# default-ignorable ones outside Cf, and BRAILLE PATTERN BLANK. The Slack escaper hides them too.
BLANK_LETTERS = frozenset(
    chr(point)
    for first, last in (
        (0x034F, 0x034F),  # COMBINING GRAPHEME JOINER
        (0x115F, 0x1160),  # HANGUL CHOSEONG and JUNGSEONG FILLER
        (0x17B4, 0x17B5),  # KHMER VOWEL INHERENT AQ, AA
        (0x180B, 0x180F),  # MONGOLIAN FREE VARIATION SELECTORS (and vowel separator, Cf)
        (0x2800, 0x2800),  # BRAILLE PATTERN BLANK
        (0x3164, 0x3164),  # HANGUL FILLER
        (0xFE00, 0xFE0F),  # VARIATION SELECTORS 1-16
        (0xFFA0, 0xFFA0),  # HALFWIDTH HANGUL FILLER
        (0xE0100, 0xE01EF),  # VARIATION SELECTORS 17-256
    )
    for point in range(first, last + 1)
)


def _shown(char: str) -> str:
    """``char``, or its code when a terminal would not show it as itself: ``\\x1b``, ``\\n``,
    ``\\u202e`` as Python writes it, and a blank letter likewise (``\\u3164``)."""
    if char in BLANK_LETTERS:  # printable to Python: written as repr writes any other code point
        point = ord(char)
        return f"\\u{point:04x}" if point <= 0xFFFF else f"\\U{point:08x}"
    return char if char.isprintable() else repr(char)[1:-1]


def printable(value: object) -> str:
    """Alert text on an operator's terminal: control characters (escape sequences, carriage
    returns that would overwrite the line), format characters (bidi overrides, zero-width), line
    separators and the letters that show as nothing (BLANK_LETTERS) shown as escapes (``\\x1b``,
    ``\\n``, ``\\u202e``, ``\\u3164``), never interpreted."""
    text = str(value)
    if text.isprintable() and BLANK_LETTERS.isdisjoint(text):
        return text
    return "".join(_shown(char) for char in text)


__all__ = ["BLANK_LETTERS", "printable"]
