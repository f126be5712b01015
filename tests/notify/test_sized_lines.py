"""SizedLines keeps a section's text under Slack's limit by cutting its longest lines first, and
leaves lines out from the end only when no line can be cut any more."""

from __future__ import annotations

from responder.notify.blocks import TRUNCATED_NOTE, SizedLines

CODE_BLOCK = "```" + "x" * 400 + "```"  # no space outside code: never cut
PROSE = "*Outcome:* " + " ".join(["the pod was quarantined and its traffic cut"] * 6)
LAST = "*Then:* a short line that fits"


def test_a_line_that_cannot_be_cut_does_not_keep_the_next_longest_from_being_cut() -> None:
    lines = SizedLines(limit=700)
    lines.extend((CODE_BLOCK, PROSE, LAST))
    text = lines.text()
    assert len(text) <= 700
    shown = text.split("\n")
    assert shown[0] == CODE_BLOCK  # as it was
    assert shown[1].startswith("*Outcome:* the pod was quarantined") and shown[1].endswith(" …")
    assert len(shown[1]) < len(PROSE)
    assert shown[2] == LAST  # not left out: cutting the prose made room
    assert TRUNCATED_NOTE in shown[3]


def test_lines_are_left_out_from_the_end_only_when_none_can_be_cut() -> None:
    lines = SizedLines(limit=500)
    lines.extend((CODE_BLOCK, CODE_BLOCK))
    shown = lines.text().split("\n")
    assert shown[0] == CODE_BLOCK
    assert len(shown) == 2 and TRUNCATED_NOTE in shown[1]


def test_text_under_the_limit_is_as_given() -> None:
    lines = SizedLines(limit=3000)
    lines.extend((PROSE, LAST))
    assert lines.text() == f"{PROSE}\n{LAST}"
