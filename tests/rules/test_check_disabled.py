"""`rules check` says a rule is disabled: it printed `ok` for a rule a tuning file switched off
(`enabled: false`), so a check after tuning read as "still detects". The rule's line says
`disabled (FILE:LINE)`, the result line counts enabled and disabled rules, and a disabled rule of
the Serving Guard pack (tagged serving_guard) is a warning at its `enabled: false`."""

from __future__ import annotations

from pathlib import Path

import pytest

from responder.cli import main
from responder.rulespack.check import check_files
from responder.rulespack.check_command import render_report
from responder.rulespack.sysdig import REQUIRE_ENV, Sysdig

from .conftest import PACK

DISABLE_SHELL = """\
# tuning: no shell alerts
- rule: Shell in serving pod
  enabled: false
  override:
    enabled: replace
"""
WARNING = (
    "warning: rule 'Shell in serving pod': a Serving Guard rule is disabled: Falco will not detect what it"
    " covers (`serving-guard rules test` lists the attacks that go unseen)"
)


def test_check_says_a_rule_is_disabled_where_it_was_switched_off(
    sysdig: Sysdig, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tuning = tmp_path / "tuning.yaml"
    tuning.write_text(DISABLE_SHELL, encoding="utf-8")
    assert main(["rules", "check", "--no-falco", str(PACK), str(tuning)]) == 0  # a warning, no error
    out = capsys.readouterr().out
    assert f"\n  disabled ({tuning}:3) Shell in serving pod\n" in out
    assert "ok           Shell in serving pod" not in out
    assert "ok           Credential access in serving pod" in out
    assert f"\n{tuning}:3: {WARNING}\n" in out
    assert out.rstrip().endswith("result: ok (1 warnings); rules: 7 enabled, 1 disabled")


def test_a_disabled_rule_of_ones_own_is_counted_without_a_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(REQUIRE_ENV, raising=False)
    own = tmp_path / "own.yaml"
    own.write_text(
        "- rule: Mine\n  desc: d\n  condition: evt.type = execve\n  output: o %proc.name\n"
        "  priority: WARNING\n  enabled: false\n",
        encoding="utf-8",
    )
    report = check_files([str(own)], None, require_sysdig=False, run_falco=False)
    assert report.warnings == []
    text = render_report(report, expanded=False)
    assert f"\n  disabled ({own}:6) Mine\n" in text
    assert text.endswith("; rules: 0 enabled, 1 disabled")
