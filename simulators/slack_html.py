"""Slack Block Kit JSON -> readable, self-contained HTML (for the demo report).

Covers what the responder's renderer produces: header, section (mrkdwn or plain text, and
fields), context, divider; mrkdwn bold, italic, strike, inline code, code blocks, quotes and
emoji codes. Slack text arrives escaped the Slack way (&amp; &lt; &gt;); it is unescaped, then
HTML-escaped, then marked up, so nothing in an alert can inject HTML into the report.
"""

from __future__ import annotations

import html
import re
from collections.abc import Mapping, Sequence
from typing import Any

# Slack emoji codes -> a symbol every common font has (no emoji font needed), coloured.
EMOJI: dict[str, tuple[str, str]] = {
    "rotating_light": ("●", "#e01e5a"),
    "red_circle": ("●", "#e01e5a"),
    "large_blue_circle": ("●", "#1264a3"),
    "warning": ("⚠", "#c77c02"),
    "information_source": ("\u2139", "#1264a3"),
    "white_check_mark": ("✔", "#2eb67d"),
    "x": ("✖", "#e01e5a"),
    "no_entry": ("⊘", "#e01e5a"),
    "lock": ("■", "#8a1c1c"),
    "unlock": ("↻", "#2eb67d"),
    "test_tube": ("⚗", "#7d3c98"),
    "pause_button": ("‖", "#c77c02"),
    "ghost": ("☠", "#616061"),
    "memo": ("✎", "#1264a3"),
    "hourglass": ("…", "#616061"),
    "bell": ("✉", "#1264a3"),
    "grey_question": ("?", "#616061"),
    "repeat": ("↻", "#616061"),
}

_CODE_BLOCK = re.compile(r"```(.*?)```", re.DOTALL)
_INLINE_CODE = re.compile(r"`([^`\n]+)`")
_BOLD = re.compile(r"(?<![\w*])\*([^*\n]+)\*(?![\w*])")
_ITALIC = re.compile(r"(?<![\w_])_([^_\n]+)_(?![\w_])")
_STRIKE = re.compile(r"(?<![\w~])~([^~\n]+)~(?![\w~])")
_EMOJI = re.compile(r":([a-z0-9_+-]+):")


def _emoji(match: re.Match[str]) -> str:
    known = EMOJI.get(match.group(1))
    if known is None:
        return match.group(0)
    glyph, colour = known
    return f'<span class="emoji" style="color:{colour}" title=":{match.group(1)}:">{glyph}</span>'


def _slack_unescape(text: str) -> str:
    return text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


def _inline(text: str) -> str:
    """Escaped text with bold/italic/strike/emoji; inline code spans are left untouched."""
    parts = _INLINE_CODE.split(text)
    out = []
    for index, part in enumerate(parts):
        if index % 2:
            out.append(f"<code>{part}</code>")
            continue
        marked = _BOLD.sub(r"<strong>\1</strong>", part)
        marked = _ITALIC.sub(r"<em>\1</em>", marked)
        marked = _STRIKE.sub(r"<del>\1</del>", marked)
        out.append(_EMOJI.sub(_emoji, marked))
    return "".join(out)


def _lines(text: str) -> str:
    rendered = []
    for line in text.split("\n"):
        if line.startswith("&gt; "):
            rendered.append(f'<span class="quote">{_inline(line[5:])}</span>')
        else:
            rendered.append(_inline(line))
    return "<br>".join(rendered)


def mrkdwn_to_html(text: str) -> str:
    escaped = html.escape(_slack_unescape(text), quote=False)
    pieces = _CODE_BLOCK.split(escaped)
    out = []
    for index, piece in enumerate(pieces):
        if index % 2:
            out.append(f"<pre>{piece.strip(chr(10))}</pre>")
        elif piece.strip("\n"):
            out.append(_lines(piece.strip("\n")))
    return "".join(out)


def text_object_to_html(obj: Mapping[str, Any]) -> str:
    text = str(obj.get("text", ""))
    if obj.get("type") == "mrkdwn":
        return mrkdwn_to_html(text)
    plain = html.escape(text, quote=False)
    return _EMOJI.sub(_emoji, plain) if obj.get("emoji") else plain


def block_to_html(block: Mapping[str, Any]) -> str:
    kind = block.get("type")
    if kind == "header":
        return f'<div class="sk-header">{text_object_to_html(block.get("text") or {})}</div>'
    if kind == "divider":
        return '<hr class="sk-divider">'
    if kind == "context":
        items = " · ".join(
            text_object_to_html(e) for e in block.get("elements") or [] if isinstance(e, Mapping)
        )
        return f'<div class="sk-context">{items}</div>'
    if kind == "section":
        parts = []
        if isinstance(block.get("text"), Mapping):
            parts.append(f'<div class="sk-text">{text_object_to_html(block["text"])}</div>')
        fields = [f for f in block.get("fields") or [] if isinstance(f, Mapping)]
        if fields:
            cells = "".join(f'<div class="sk-field">{text_object_to_html(f)}</div>' for f in fields)
            parts.append(f'<div class="sk-fields">{cells}</div>')
        return f'<div class="sk-section">{"".join(parts)}</div>'
    return f'<div class="sk-unknown">[{html.escape(str(kind))} block]</div>'


def message_to_html(blocks: Sequence[Mapping[str, Any]], fallback: str = "") -> str:
    """One message; falls back to its text when it has no blocks."""
    if not blocks:
        return f'<div class="sk-section"><div class="sk-text">{mrkdwn_to_html(fallback)}</div></div>'
    return "".join(block_to_html(block) for block in blocks if isinstance(block, Mapping))
