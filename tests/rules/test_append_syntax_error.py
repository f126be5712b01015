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
