"""The demo runs the capture suite (`rules test`, with the demo's --rules) first: its alerts are
scenario alert templates, so a rule broken or tuned blind still let the demo pass ("all 11
expectations held"). With sysdig, a failing expectation fails the demo and is listed; without it
(a fresh clone), one line says the conditions were not evaluated and the demo goes on."""

from __future__ import annotations

from pathlib import Path

import pytest

from responder.cli import main as cli_main
from responder.rulespack.paths import default_pack, display_path
from responder.rulespack.sysdig import REQUIRE_ENV, Sysdig, sysdig_required
from simulators.demo_captures import capture_stage

# A tuning that breaks two rules (as an edit in a copy of the pack would): the demo's templates
# still passed every check with it.
BREAK_TWO_RULES = """\
- rule: Shell in serving pod
  condition: and proc.name = no_such_process_xyz
  override:
    condition: append
- rule: Credential access in serving pod
  condition: and evt.num = 0
  override:
    condition: append
"""


@pytest.fixture
def sysdig() -> Sysdig:
    found = Sysdig.find()
    if found is None:
        if sysdig_required():
            pytest.fail(f"sysdig is not installed but {REQUIRE_ENV}=1")
        pytest.skip("sysdig not installed (apt-get install sysdig): the captures cannot be evaluated")
    return found


def test_the_demo_fails_on_rules_that_no_longer_detect(
    sysdig: Sysdig, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tuning = tmp_path / "broken.yaml"
    tuning.write_text(BREAK_TWO_RULES, encoding="utf-8")
    work = tmp_path / "work"
    argv = ["demo", "--no-report", "--workdir", str(work), "--rules", str(default_pack()), str(tuning)]
    assert cli_main(argv) == 1
    out, err = capsys.readouterr()
    assert err == ""
    lines = out.splitlines()
    assert lines[0].startswith("rule conditions: FAILED (")
    assert (
        f"rules files in load order: {default_pack()}, tests/fixtures/captures/scope-override.yaml, {tuning}"
        in (lines[0])
    )
    assert "  sg-a-shell.scap a1: expected rule did not fire: Shell in serving pod" in lines
    assert any("expected rule did not fire: Credential access in serving pod" in line for line in lines)
    assert "expectations held" not in out  # the responder part did not run
    assert not (work / "journal.db").exists()


def test_the_pack_passes_the_stage_in_one_line(sysdig: Sysdig) -> None:
    stage = capture_stage([display_path(default_pack())])
    assert stage.passed
    assert len(stage.lines) == 1
    assert stage.lines[0].startswith("rule conditions: ok: ")
    assert f"sysdig {sysdig.version}" in stage.lines[0]


def test_without_sysdig_the_demo_says_so_in_one_line_and_passes(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(Sysdig, "find", staticmethod(lambda: None))
    monkeypatch.delenv(REQUIRE_ENV, raising=False)
    assert cli_main(["demo", "--no-report", "--workdir", str(tmp_path / "work")]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    assert out.splitlines()[0] == (
        "rule conditions: not evaluated (sysdig not installed): the rows below prove the responder only"
    )
    assert "expectations held" in out


def test_without_sysdig_but_required_the_stage_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Sysdig, "find", staticmethod(lambda: None))
    monkeypatch.setenv(REQUIRE_ENV, "1")
    stage = capture_stage([display_path(default_pack())])
    assert not stage.passed
    assert stage.lines == [f"rule conditions: sysdig is not installed but {REQUIRE_ENV}=1"]
