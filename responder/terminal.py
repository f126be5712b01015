"""Alert text on an operator's terminal (the audit's and ``config explain``'s output): whoever sends
an alert chooses its text, and a terminal would run the escape sequences in it (erase or rewrite a
printed line, hide text, retitle the window, plant a link)."""

from __future__ import annotations


def printable(value: object) -> str:
    """Alert text on an operator's terminal: control characters (escape sequences, carriage
    returns that would overwrite the line) shown as escapes, never interpreted."""
    text = str(value)
    if text.isprintable():
        return text
    return "".join(char if char.isprintable() else repr(char)[1:-1] for char in text)


__all__ = ["printable"]
