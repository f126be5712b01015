"""A syntax error in the condition a tuning appends to a pack rule is told at the tuning's line,
not at the pack's (whose condition holds the same '(' earlier), and without the knock-on "macro not
used" warnings for the macros the unparsed rule names (review-replay M4)."""

from __future__ import annotations

from pathlib import Path

import pytest

from responder.cli import main

from .conftest import PACK

BROKEN_APPEND = """\
- rule: Shell in serving pod
  condition: and proc.name = (
  override:
    condition: append
"""
BROKEN_WITH_EXCEPTIONS = """\
- rule: Credential access in serving pod
  condition: and (proc.name = x
  override:
    condition: append
"""


@pytest.mark.parametrize(
    ("text", "rule"),
    [(BROKEN_APPEND, "Shell in serving pod"), (BROKEN_WITH_EXCEPTIONS, "Credential access in serving pod")],
)
def test_a_syntax_error_in_an_appended_condition_is_told_at_the_append(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, rule: str
) -> None:
    tuning = tmp_path / "tuning.yaml"
    tuning.write_text(text, encoding="utf-8")
    assert main(["rules", "check", "--no-falco", str(PACK), str(tuning)]) == 1
    out = capsys.readouterr().out
    errors = [line for line in out.splitlines() if ": error: " in line]
    assert len(errors) == 1, out
    assert errors[0].startswith(f"{tuning}:2: error: rule '{rule}': syntax error: "), errors
    assert "not used by any rule" not in out, out


def test_a_typo_elsewhere_is_still_said_unused_beside_a_rule_that_did_not_parse(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Only what the unparsed rule names is left unjudged (review-48b M3)."""
    tuning = tmp_path / "tuning.yaml"
    tuning.write_text(
        BROKEN_APPEND + "- macro: my_unused_macro\n  condition: proc.name = x\n", encoding="utf-8"
    )
    main(["rules", "check", "--no-falco", str(PACK), str(tuning)])
    out = capsys.readouterr().out
    assert f"{tuning}:5: warning: macro 'my_unused_macro': macro not used by any rule or macro" in out, out
    assert "serving_guard_shell" not in out.split("error")[0]


def test_an_unclosed_parenthesis_is_told_at_the_piece_that_opened_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The rule's own file left it open, a later file appends: the error is the defining file's
    (review-48b L2)."""
    defining, appending = tmp_path / "a.yaml", tmp_path / "b.yaml"
    defining.write_text(
        "- rule: My rule\n  desc: d\n  condition: evt.type = execve and (proc.name = x\n"
        "  output: o %proc.name\n  priority: WARNING\n  source: syscall\n",
        encoding="utf-8",
    )
    appending.write_text(
        "- rule: My rule\n  condition: and proc.pname = y\n  override:\n    condition: append\n",
        encoding="utf-8",
    )
    main(["rules", "check", "--no-falco", str(defining), str(appending)])
    out = capsys.readouterr().out
    assert f"{defining}:3: error: rule 'My rule': syntax error: expected a ')' token" in out, out
