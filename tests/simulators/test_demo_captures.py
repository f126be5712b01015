"""The demo runs the capture suite (`rules test`, with the demo's --rules) first: its alerts are
scenario alert templates, so a rule broken or tuned blind still let the demo pass ("all 11
expectations held"). With sysdig, a failing expectation fails the demo and is listed; without it
(a fresh clone), one line says the conditions were not evaluated and the demo goes on."""

from __future__ import annotations

from html import escape
from pathlib import Path

import pytest

from responder.cli import main as cli_main
from responder.errors import UserError
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
    report = tmp_path / "demo-report.html"
    report.write_text("All 15 expectations held. (an earlier run's report)", encoding="utf-8")
    argv = [
        "demo",
        "--report",
        str(report),
        "--workdir",
        str(work),
        "--rules",
        str(default_pack()),
        str(tuning),
    ]
    assert cli_main(argv) == 1
    out, err = capsys.readouterr()
    assert err == ""
    lines = out.splitlines()
    assert lines[-1] == f"report: {report}"
    # The report says the demo stopped at the rule conditions, with what the console said.
    html = report.read_text(encoding="utf-8")
    assert "expectations held" not in html
    assert '<div class="stage bad" id="rule-conditions">rule conditions: FAILED (' in html
    assert escape("  sg-a-shell.scap a1: expected rule did not fire: Shell in serving pod") in html
    assert "The rule-conditions stage FAILED: the demo stopped there, so no scenario was sent" in html
    assert "<code>shell-from-model-server</code>" in html
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
    report = tmp_path / "demo-report.html"
    assert cli_main(["demo", "--report", str(report), "--workdir", str(tmp_path / "work")]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    line = "rule conditions: not evaluated (sysdig not installed): the rows below prove the responder only"
    assert out.splitlines()[0] == line
    assert "expectations held" in out
    # The report's header says so too, beside what the templates prove and what was left out.
    html = report.read_text(encoding="utf-8")
    header = html[: html.index('<section id="scenarios">')]
    assert f'<div class="stage warn" id="rule-conditions">{line}</div>' in header
    assert "(verification, policy, actions, Slack), not that a rule still detects the attack" in header
    assert "<li><code>shell-from-model-server</code>: " in header and "has no demo part" in header
    assert "All 16 expectations held." in html


def test_without_sysdig_but_required_the_demo_stops_and_its_report_says_so(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(Sysdig, "find", staticmethod(lambda: None))
    monkeypatch.setenv(REQUIRE_ENV, "1")
    report = tmp_path / "demo-report.html"
    work = tmp_path / "work"
    assert cli_main(["demo", "--report", str(report), "--workdir", str(work)]) == 1
    out, err = capsys.readouterr()
    assert err == ""
    line = f"rule conditions: sysdig is not installed but {REQUIRE_ENV}=1"
    assert out.splitlines() == [line, "", f"report: {report}"]
    assert not (work / "journal.db").exists()
    html = report.read_text(encoding="utf-8")
    assert f'<div class="stage bad" id="rule-conditions">{line}</div>' in html
    assert "expectations held" not in html and "no scenario was sent" in html
    assert "scenario alert templates" in html
    assert "<li><code>shell-from-model-server</code>: " in html


def test_without_sysdig_but_required_the_stage_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Sysdig, "find", staticmethod(lambda: None))
    monkeypatch.setenv(REQUIRE_ENV, "1")
    stage = capture_stage([display_path(default_pack())])
    assert not stage.passed
    assert stage.lines == [f"rule conditions: sysdig is not installed but {REQUIRE_ENV}=1"]


CGNAT = (
    "- list: serving_guard_allowed_egress_networks\n"
    '  items: ["fd00:10:244::/56", "fd00:10:96::/112", 100.64.0.0/10]\n'
    "  override:\n    items: append\n"
)


def test_the_readmes_egress_tuning_runs_the_demo_with_its_accepts(sysdig: Sysdig, tmp_path: Path) -> None:
    """rules/README's CGNAT append leaves the recordings' egress actions e1 and e2 silent (their
    address is in it): the demo stopped there and took no --accept (review-security MEDIUM-6)."""
    tuning = tmp_path / "my-overrides.yaml"
    tuning.write_text(CGNAT)
    files = [display_path(default_pack()), str(tuning)]
    stopped = capture_stage(files)
    assert not stopped.passed and "sg-e-egress.scap e1" in "\n".join(stopped.lines)
    accepted = ["sg-e-egress.scap#e1", "sg-e-egress.scap#e2"]
    stage = capture_stage(files, accepted)
    assert stage.passed, stage.lines
    assert stage.lines[0].endswith(f"held, but for 4 failures accepted (--accept: {', '.join(accepted)})")
    with pytest.raises(UserError, match="no-such-case"):
        capture_stage(files, ["no-such-case"])
