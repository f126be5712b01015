"""Review of 1aeb985: M4, a failure names only the user's items that make it fail (found by leaving
each out), says plainly when the user's files are not the cause, and a rule of the user's own firing
beside the pack's fails nothing; L1, a case judging two sets of events says which failed, and the
counts are of cases; L2, a disabled rule is said one way; L7, group names and labels."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import pytest

from responder.cli import main
from responder.rulespack.derived import CaseVerdict, DerivedCase
from responder.rulespack.derived_blame import YOUR_FILES, blame_failures, blamed_text
from responder.rulespack.derived_suite import conditions_of, run_cases
from responder.rulespack.evasion_cases import evasion_cases
from responder.rulespack.evasions_lists import read_pack_lists
from responder.rulespack.expand import RuleSet, load_paths
from responder.rulespack.recorded import CaptureLibrary
from responder.rulespack.sysdig import Sysdig

from .conftest import CAPTURES, PACK, SCOPE_OVERRIDE

pytestmark = pytest.mark.timeout(180)

DRIFT = "Drift: new executable in serving pod"
DOWNLOAD = "Runtime download or package install in serving pod"
SCOPE_APPEND = """\
- macro: serving_guard_scope
  condition: or k8s.ns.name in (ml-serving, inference)
  override:
    condition: append
"""
LOADER_NEVER = """\
- macro: serving_guard_dynamic_loader
  condition: (evt.num = 0)
  override:
    condition: replace
"""
OWN_RULE = """\
- rule: Any process spawned in serving pod (audit)
  desc: audit trail of every exec in a serving pod
  condition: serving_guard_spawned_process and serving_guard_scope
  output: exec in serving pod (proc=%proc.name cmdline=%proc.cmdline)
  priority: INFORMATIONAL
"""
DISABLE_DRIFT = f"""\
- rule: "{DRIFT}"
  enabled: false
  override:
    enabled: replace
"""
LOADER_GROUP = "the dynamic loader running a program is drift"


def _failures(out: str) -> list[str]:
    block = out.split("examples and evasions: FAILED", 1)[1].split("\n\nresult:", 1)[0]
    return [line.strip() for line in block.splitlines()[1:]]


def _run(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    assert main(["rules", "test", *args]) == 1
    return capsys.readouterr().out


def test_only_the_item_that_silences_the_rule_is_named(
    sysdig: Sysdig, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tuning = tmp_path / "tuning.yaml"
    tuning.write_text(SCOPE_APPEND + LOADER_NEVER)
    out = _run(capsys, "--override", str(tuning))
    failures = _failures(out)
    assert failures
    assert all(
        f"your files change {DRIFT} at {tuning}:6 (macro serving_guard_dynamic_loader)" in f for f in failures
    )
    assert not any("serving_guard_scope" in f for f in failures)  # in the rule's text, but harmless
    # L1: each loader case judges its execve and its whole thread: two lines, not the same twice.
    loader = [f for f in failures if f.startswith(f"evasion {LOADER_GROUP}[")]
    assert len(loader) == 12 and len(set(loader)) == 12
    assert sum(f" {DRIFT} must fire exactly 1x on its execve, fired 0x;" in f for f in loader) == 6
    assert (
        sum(f" {DRIFT} must fire exactly 1x on every event of its thread, fired 0x;" in f for f in loader)
        == 6
    )
    assert re.search(rf"\n  {re.escape(LOADER_GROUP)} +R7 +0/6 +FAIL \(6\)\n", out)
    assert "examples and evasions: FAILED (13 lines: 1 examples, 6 evasion cases)" in out
    assert out.rstrip().endswith("result: FAILED (7: captures 0, examples 1, evasion cases 6)")


def test_a_failure_of_the_rules_before_the_users_files_is_said_so(
    sysdig: Sysdig, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The pack itself is broken; the user's scope append changes the rule's text but not its verdict.
    pack = tmp_path / "pack.yaml"
    text = PACK.read_text(encoding="utf-8")
    start = text.index("- macro: serving_guard_dynamic_loader")
    end = text.index("\n\n", start)
    pack.write_text(
        text[:start] + "- macro: serving_guard_dynamic_loader\n  condition: (evt.num = 0)" + text[end:]
    )
    tuning = tmp_path / "scope.yaml"
    tuning.write_text(SCOPE_APPEND)
    failures = _failures(_run(capsys, "--rules", str(pack), "--override", str(tuning)))
    evasions = [f for f in failures if f.startswith("evasion ")]
    assert len(evasions) == 12
    assert all(
        "; not your tuning: it fails without your --override files too, on the rules files before them"
        f" (your items that change {DRIFT}, at {tuning}:2 (macro serving_guard_scope), are not the cause)"
        in f
        for f in evasions
    )


def test_a_rule_of_the_users_own_beside_the_pack_fails_no_case(sysdig: Sysdig, tmp_path: Path) -> None:
    tuning = tmp_path / "own.yaml"
    tuning.write_text(OWN_RULE)
    conditions = conditions_of(load_paths([str(PACK), str(SCOPE_OVERRIDE), str(tuning)]), [str(tuning)])
    assert conditions.added == {"Any process spawned in serving pod (audit)"}
    only = [case for case in evasion_cases() if case.only]
    verdicts = run_cases(sysdig, CaptureLibrary(CAPTURES), only, conditions)
    assert [v.problems for v in verdicts if not v.ok] == []


def test_a_disabled_rule_is_said_one_way(
    sysdig: Sysdig, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tuning = tmp_path / "off.yaml"
    tuning.write_text(DISABLE_DRIFT)
    failures = _failures(_run(capsys, "--override", str(tuning)))
    examples = [f for f in failures if f.startswith("example ")]
    assert examples and all(f.endswith(f", but it is disabled at {tuning}:2") for f in examples)
    assert all(f.endswith(f"but it is disabled at {tuning}:2") for f in failures)
    assert not any("your files change" in f for f in failures)


NEGATIVE = re.compile(r"\b(quiet|not|no|never|silent|stays?)\b")


def test_a_group_that_reads_as_quiet_holds_no_case_that_must_fire_unless_it_says_only() -> None:
    groups: dict[str, list[bool]] = {}
    for case in evasion_cases():
        groups.setdefault(case.group, []).append(any(e.fires for e in case.expect))
    misleading = [
        group
        for group, fires in groups.items()
        if any(fires) and NEGATIVE.search(group) and " only " not in f" {group} "
    ]
    assert misleading == []


def test_labels_keep_their_words() -> None:
    cut = [case.id for case in evasion_cases() if case.id.endswith("...]")]
    assert len(cut) <= 4  # only the longest one-liners (over 110 characters)


# A case two of the user's items silence (neither alone), where leaving both out does not load (an
# audit rule of the user's uses the macro one of them appends): the case holds on the pack, so the
# failure is the user's, never "not your tuning".
WGET_SILENCED_TWICE = """\
- macro: my_quiet
  condition: proc.name = wget
- rule: Runtime download or package install in serving pod
  condition: and not my_quiet
  override:
    condition: append
- list: serving_guard_download_tools
  items: [{tools}]
  override:
    items: replace
- rule: My wget audit
  desc: an audit rule of the user's, reusing the macro
  condition: serving_guard_spawned_process and my_quiet
  output: wget run (proc=%proc.name)
  priority: INFORMATIONAL
"""


def test_a_case_the_users_items_break_only_together_is_not_said_to_be_the_packs(
    sysdig: Sysdig, tmp_path: Path
) -> None:
    tools = [t for t in read_pack_lists(PACK).items("serving_guard_download_tools") if t != "wget"]
    tuning = tmp_path / "wget.yaml"
    tuning.write_text(WGET_SILENCED_TWICE.format(tools=", ".join(tools)))
    user = [str(tuning)]
    ruleset = load_paths([str(PACK), str(SCOPE_OVERRIDE), *user])
    library = CaptureLibrary(CAPTURES)
    wget_id = "serving_guard_download_tools: each item by name is a download[wget]"
    wget = [c for c in evasion_cases() if c.id == wget_id]
    verdicts = run_cases(sysdig, library, wget, conditions_of(ruleset, user))
    assert [v.ok for v in verdicts] == [False]

    def rejudge(other: RuleSet, again: Sequence[DerivedCase]) -> list[CaseVerdict]:
        return run_cases(sysdig, library, again, conditions_of(other, user))

    blame = blame_failures(ruleset, user, verdicts, rejudge)
    found = blame[(wget[0].id, DOWNLOAD)]
    assert found.how == YOUR_FILES
    assert "not your tuning" not in blamed_text(DOWNLOAD, found, {}, True)


def test_a_disabled_rule_is_said_one_way_beside_other_tuning(
    sysdig: Sysdig, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The scope append changes every rule; the examples the recordings judge used to name it (and the
    # disabling line again) after "but it is disabled at".
    tuning = tmp_path / "off.yaml"
    tuning.write_text(SCOPE_APPEND + DISABLE_DRIFT)
    failures = _failures(_run(capsys, "--override", str(tuning)))
    assert failures and all(f.endswith(f"but it is disabled at {tuning}:6") for f in failures)


def test_a_disabled_rule_is_not_ablated(sysdig: Sysdig, tmp_path: Path) -> None:
    # Its failures name the disabling line already: no case is judged again to find it.
    tuning = tmp_path / "off.yaml"
    tuning.write_text(SCOPE_APPEND + DISABLE_DRIFT)
    user = [str(tuning)]
    ruleset = load_paths([str(PACK), str(SCOPE_OVERRIDE), *user])
    library = CaptureLibrary(CAPTURES)
    loader = [c for c in evasion_cases() if c.group == LOADER_GROUP]
    verdicts = run_cases(sysdig, library, loader, conditions_of(ruleset, user))
    assert verdicts and not any(v.ok for v in verdicts)
    rejudged: list[int] = []

    def rejudge(other: RuleSet, again: Sequence[DerivedCase]) -> list[CaseVerdict]:
        rejudged.append(len(again))
        return run_cases(sysdig, library, again, conditions_of(other, user))

    assert blame_failures(ruleset, user, verdicts, rejudge) == {}
    assert rejudged == []
