from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from responder.notify.escape import (
    BACKTICK_LOOKALIKE,
    ELLIPSIS,
    WORD_JOINER,
    code,
    code_block,
    defuse,
    escape,
    plain,
)

# Anything Slack could read as markup, plus the characters that hide or reorder text.
HOSTILE = st.lists(
    st.one_of(
        st.sampled_from(list("&<>`*_~|!@#:;\n\r\t\x00\x1b\u202e\u2066\u200b\ufeff ")),
        st.sampled_from(["<!channel>", "<!here>", "<@U123>", "&amp;", "```", "@channel", "@here", "&lt;"]),
        st.characters(),
    ),
    max_size=40,
).map("".join)

ENTITY_OR_AMP = re.compile(r"&(?!(?:amp|lt|gt);)")


def assert_literal(text: str) -> None:
    """The invariants every escaped string keeps."""
    assert "<" not in text and ">" not in text
    assert "`" not in text
    assert not ENTITY_OR_AMP.search(text), text
    lowered = text.lower()
    for word in ("@channel", "@here", "@everyone"):
        assert word not in lowered


def test_slack_control_sequences_become_literal() -> None:
    assert escape("<!channel> ping") == "&lt;!channel&gt; ping"
    assert escape("<https://evil.example|click>") == "&lt;https://evil.example|click&gt;"
    assert escape("<@U123>") == "&lt;@U123&gt;"
    # An already-escaped entity is shown as typed, not as the character it names.
    assert escape("&amp;") == "&amp;amp;"
    assert escape("a && b") == "a &amp;&amp; b"


def test_backticks_cannot_open_or_close_code() -> None:
    assert escape("```rm -rf /```") == BACKTICK_LOOKALIKE * 3 + "rm -rf /" + BACKTICK_LOOKALIKE * 3
    assert code("x` *bold* `y", 100) == f"`x{BACKTICK_LOOKALIKE} *bold* {BACKTICK_LOOKALIKE}y`"
    assert code_block("a```b", 100) == f"```a{BACKTICK_LOOKALIKE * 3}b```"


def test_broadcast_mentions_cannot_ping() -> None:
    assert escape("hey @channel and @Here, @everyone!") == (
        f"hey @{WORD_JOINER}channel and @{WORD_JOINER}Here, @{WORD_JOINER}everyone!"
    )
    assert escape("ops@example.com") == "ops@example.com"


def test_hidden_characters_are_shown() -> None:
    assert escape("a\nb\tc\rd") == "a\\nb\\tc\\rd"
    assert escape("\x00\x1b[31m") == "\\x00\\x1b[31m"
    # Bidi overrides and zero-width characters would let text hide or reorder itself.
    assert escape("abc\u202edcba") == "abc\\u202edcba"
    assert escape("a\u200bb\ufeff") == "a\\u200bb\\ufeff"
    assert escape("tag\U000e0041") == "tag\\U000e0041"
    assert escape("\ud800") == "\\ud800"  # a lone surrogate (valid in JSON, not in UTF-8)
    assert escape("naïve café ☕ 模型") == "naïve café ☕ 模型"


def test_truncation_counts_escaped_characters_and_never_splits_an_entity() -> None:
    assert escape("&" * 10, 12) == "&amp;&amp;" + ELLIPSIS
    assert escape("abcdef", 6) == "abcdef"
    assert escape("abcdefg", 6) == "abcde" + ELLIPSIS
    assert len(code("x" * 5000, 100)) == 100
    assert len(code_block("<" * 5000, 300)) <= 300
    with pytest.raises(ValueError):
        escape("x", 0)


@settings(max_examples=400, deadline=None)
@given(text=HOSTILE, limit=st.one_of(st.none(), st.integers(min_value=1, max_value=80)))
def test_any_text_escapes_to_literal_text_within_its_limit(text: str, limit: int | None) -> None:
    escaped = escape(text, limit)
    assert_literal(escaped)
    if limit is not None:
        assert len(escaped) <= limit


@settings(max_examples=200, deadline=None)
@given(text=HOSTILE)
def test_code_spans_hold_exactly_our_backticks(text: str) -> None:
    span = code(text, 200)
    block = code_block(text, 200)
    assert span.startswith("`") and span.endswith("`") and span.count("`") == 2
    assert block.startswith("```") and block.endswith("```") and block.count("`") == 6
    assert_literal(span[1:-1])
    assert_literal(block[3:-3])


def test_formatting_marks_outside_code_become_look_alikes() -> None:
    assert (
        escape(defuse("*bold* _it_ ~gone~ <!here>"))
        == "\u2217bold\u2217 \u02cdit\u02cd \u223cgone\u223c &lt;!here&gt;"
    )
    # Inside code Slack shows them as they are, and a command must paste as it is.
    assert code("serving_guard *", 40) == "`serving_guard *`"


def test_an_underscore_inside_a_word_stays_as_typed() -> None:
    """Between two letters or digits an underscore opens and closes no italics: snake_case names
    (a field, a model directory) copy as they are (review-oncall 4: "outputˍfields" matched nothing)."""
    for kept in ("no output_fields", "/models/my_model/1/model.onnx", "a_b c_d", "v1_2"):
        assert defuse(kept) == kept
    # Beside other scripts' letters, Slack's word edges are its own: a look-alike still.
    assert defuse("\u00e9_x_\u03a9") == "\u00e9\u02cdx\u02cd\u03a9"
    # At a word's edge it may: a look-alike, as are every * and ~.
    assert (
        defuse("_it_ __init__ a_ b *x* ~y~")
        == "\u02cdit\u02cd \u02cd\u02cdinit\u02cd\u02cd a\u02cd b \u2217x\u2217 \u223cy\u223c"
    )


def test_plain_text_has_no_entities_and_one_line() -> None:
    assert plain("a & b <c> `d`\nnext\tcol \x1b \u202e @here") == (
        f"a & b \uff1cc\uff1e {BACKTICK_LOOKALIKE}d{BACKTICK_LOOKALIKE} next col"
        f" \\x1b \\u202e @{WORD_JOINER}here"
    )
    assert plain("&" * 10, 6) == "&&&&&" + ELLIPSIS


@settings(max_examples=300, deadline=None)
@given(text=HOSTILE, limit=st.one_of(st.none(), st.integers(min_value=1, max_value=80)))
def test_defused_and_plain_text_keep_their_invariants(text: str, limit: int | None) -> None:
    defused = escape(defuse(text), limit)
    assert_literal(defused)
    assert not any(mark in defused for mark in "*~")
    # An underscore stays only between two ASCII letters or digits (snake_case, which Slack never
    # reads as italics): every other one is a look-alike.
    assert not re.search(r"(?<![A-Za-z0-9])_|_(?![A-Za-z0-9])", defused), defused
    shown = plain(text, limit)
    assert "<" not in shown and ">" not in shown and "`" not in shown
    assert not any(char in shown for char in "\n\r\t\x00\x1b\u202e\u200b")
    assert not any(word in shown.lower() for word in ("@channel", "@here", "@everyone"))
    if limit is not None:
        assert len(defused) <= limit and len(shown) <= limit
