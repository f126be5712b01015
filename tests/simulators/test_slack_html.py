"""Block Kit -> HTML for the report: readable markup, and nothing from an alert can become HTML."""

from __future__ import annotations

from typing import Any

from responder.notify.escape import escape
from simulators.slack_html import block_to_html, message_to_html, mrkdwn_to_html


def test_mrkdwn_markup() -> None:
    html = mrkdwn_to_html(
        "*Quarantined*: _now_ ~old~ `kubectl` :warning: :unknown_emoji:\n```a\n*not bold*```"
    )
    assert "<strong>Quarantined</strong>" in html and "<em>now</em>" in html and "<del>old</del>" in html
    assert "<code>kubectl</code>" in html
    assert 'title=":warning:">⚠</span>' in html and ":unknown_emoji:" in html
    assert "<pre>a\n*not bold*</pre>" in html
    assert mrkdwn_to_html("one\ntwo") == "one<br>two"


def test_alert_text_never_becomes_html() -> None:
    hostile = '<script>alert(1)</script> <img src=x onerror=1> & "q" <!channel>'
    html = mrkdwn_to_html(escape(hostile, 500))
    assert "<script" not in html and "<img" not in html
    assert "&lt;script&gt;" in html and "&amp;" in html
    plain = block_to_html({"type": "header", "text": {"type": "plain_text", "text": hostile}})
    assert "<script" not in plain and "&lt;img src=x" in plain


def test_blocks() -> None:
    blocks: list[dict[str, Any]] = [
        {
            "type": "header",
            "text": {"type": "plain_text", "text": ":rotating_light: Critical", "emoji": True},
        },
        {"type": "section", "fields": [{"type": "mrkdwn", "text": "*Pod*\n`ns/p`"}]},
        {"type": "divider"},
        {"type": "context", "elements": [{"type": "mrkdwn", "text": "a"}, {"type": "mrkdwn", "text": "b"}]},
        {"type": "image", "image_url": "https://example.invalid/x.png", "alt_text": "x"},
    ]
    html = message_to_html(blocks)
    assert '<div class="sk-header"><span class="emoji"' in html and "Critical" in html
    assert (
        '<div class="sk-fields"><div class="sk-field"><strong>Pod</strong><br><code>ns/p</code></div></div>'
        in html
    )
    assert '<hr class="sk-divider">' in html and "a · b" in html
    assert "example.invalid" not in html and "[image block]" in html
    assert message_to_html([], "fallback *text*") == (
        '<div class="sk-section"><div class="sk-text">fallback <strong>text</strong></div></div>'
    )
