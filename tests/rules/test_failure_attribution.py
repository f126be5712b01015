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
from responder.rulespack import derived_suite
from responder.rulespack.derived import CaseVerdict
from responder.rulespack.derived_blame import (
    YOUR_FILES,
    Batch,
    Blame,
    Key,
    Rejudge,
    blame_failures,
    blamed_text,
)
from responder.rulespack.derived_matrix import render_derived_table
from responder.rulespack.derived_report import DerivedReport
from responder.rulespack.derived_suite import conditions_of, rejudge_on, run_cases
from responder.rulespack.evasion_cases import evasion_cases
from responder.rulespack.evasions_lists import read_pack_lists
from responder.rulespack.examples import load_examples
from responder.rulespack.expand import RuleSet, load_paths
from responder.rulespack.recorded import CaptureLibrary
from responder.rulespack.suite import SuiteInput, run_suite
from responder.rulespack.sysdig import Sysdig

from .conftest import CAPTURES, EXAMPLES, OWN_RULE, PACK, SCOPE_OVERRIDE

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
DISABLE_DRIFT = f"""\
- rule: "{DRIFT}"
  enabled: false
  override:
    enabled: replace
"""
LOADER_GROUP = "the dynamic loader running a program is drift"


def _failures(out: str) -> list[str]:
    # Up to the blank line: the warnings on the user's files and the result follow it.
    block = out.split("examples and evasions: FAILED", 1)[1].split("\n\n", 1)[0]
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
    # L-b: counted in cases (a loader case fails on two lines), in words that agree with the number.
    cases = {f.split("]: ", 1)[0] for f in failures if f.startswith("evasion ")}
    n = len(cases)
    heading = f"FAILED ({n + 1} cases: 1 example, {n} evasion cases; {len(failures)} lines below)"
    assert f"examples and evasions: {heading}" in out
    assert out.rstrip().endswith(f"result: FAILED ({n + 1}: captures 0, examples 1, evasion cases {n})")


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
    assert len([f for f in evasions if f.startswith(f"evasion {LOADER_GROUP}[")]) == 12
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
    out = _run(capsys, "--override", str(tuning))
    failures = _failures(out)
    # One number for the rule in every table (review-replay L4: the matrix, which has no column for a
    # disabled rule, numbered the rules after it one lower than the tables below it).
    assert f"\n  R7  {DRIFT}  (disabled at {tuning}:2: not run, no column)\n  R8  Credential access" in out
    row = re.search(rf"\n  R7 +{re.escape(DRIFT)} +\d", out)
    assert row is not None, out
    assert row.start() < out.index("\n  R8    Credential access", row.start())  # in number order
    assert len(failures) == len(set(failures)), failures  # each once
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

    blame = blame_failures(ruleset, user, verdicts, rejudge_on(sysdig, library, user))
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


def _blame_loader_group(sysdig: Sysdig, tuning: Path) -> tuple[dict[Key, Blame], list[list[int]], int]:
    """The dynamic loader's cases judged with ``tuning`` loaded (all fail), then blamed: the blame,
    the cases of each batch of every re-judge run (one list a run), and how many cases the group has."""
    user = [str(tuning)]
    ruleset = load_paths([str(PACK), str(SCOPE_OVERRIDE), *user])
    library = CaptureLibrary(CAPTURES)
    loader = [c for c in evasion_cases() if c.group == LOADER_GROUP]
    verdicts = run_cases(sysdig, library, loader, conditions_of(ruleset, user))
    assert verdicts and not any(v.ok for v in verdicts)
    runs: list[list[int]] = []
    runner = rejudge_on(sysdig, library, user)

    def rejudge(batches: Sequence[Batch]) -> Sequence[Sequence[CaseVerdict]]:
        runs.append([len(cases) for _, cases in batches])
        return runner(batches)

    return blame_failures(ruleset, user, verdicts, rejudge), runs, len(loader)


def test_a_disabled_rule_is_not_ablated(sysdig: Sysdig, tmp_path: Path) -> None:
    # Its failures name the disabling line already: no case is judged again to find it.
    tuning = tmp_path / "off.yaml"
    tuning.write_text(SCOPE_APPEND + DISABLE_DRIFT)
    blame, runs, _ = _blame_loader_group(sysdig, tuning)
    assert blame == {}
    assert runs == []


def test_each_ablation_pass_is_one_run_of_its_cases(sysdig: Sysdig, tmp_path: Path) -> None:
    # review-wip-lists M-D: one run per left-out item kept the pool a few cases deep (13 items, 13
    # runs of 45 cases); every item's cases now go in one run.
    tuning = tmp_path / "tuning.yaml"
    tuning.write_text(SCOPE_APPEND + LOADER_NEVER)
    blame, runs, cases = _blame_loader_group(sysdig, tuning)
    assert runs == [[cases, cases]]  # the scope append and the loader macro, in one run
    assert {change.text for found in blame.values() for change in found.items} == {
        f"{tuning}:6 (macro serving_guard_dynamic_loader)"
    }


def test_accepted_failures_are_not_ablated(
    sysdig: Sysdig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # review-wip-lists M-D: a trade-off the user accepted was ablated on every run.
    tuning = tmp_path / "tuning.yaml"
    tuning.write_text(SCOPE_APPEND + LOADER_NEVER)
    user = [str(tuning)]
    ruleset = load_paths([str(PACK), str(SCOPE_OVERRIDE), *user])
    loader = [c for c in evasion_cases() if c.group == LOADER_GROUP]
    monkeypatch.setattr(derived_suite, "evasion_cases", lambda ruleset=None: loader)
    blamed: list[list[str]] = []

    def blame(
        ruleset: RuleSet, user_files: Sequence[str], verdicts: Sequence[CaseVerdict], rejudge: Rejudge
    ) -> dict[Key, Blame]:
        blamed.append([v.case.id for v in verdicts])
        return blame_failures(ruleset, user_files, verdicts, rejudge)

    monkeypatch.setattr(derived_suite, "blame_failures", blame)
    examples = load_examples(EXAMPLES)
    captures = run_suite(sysdig, SuiteInput([str(PACK), str(SCOPE_OVERRIDE), *user], CAPTURES, examples))
    report = derived_suite.run_examples_and_evasions(
        sysdig, ruleset, user, examples, captures, [LOADER_GROUP]
    )
    assert len({keys[0] for _, keys in report.keyed_evasion_failures()}) == len(loader)
    # Only the example the loader group does not accept is ablated (exec-through-the-loader).
    assert len(blamed) == 1 and len(blamed[0]) == 1
    assert not {case.id for case in loader} & set(blamed[0])
    assert {rule for _, rule in report.blame} == {DRIFT}


def test_the_failure_heading_counts_cases_in_words() -> None:
    # review-wip-lists L-b: it read "FAILED (1 lines: 0 examples, 1 evasion cases)".
    case = next(c for c in evasion_cases() if c.group == LOADER_GROUP)
    failed = CaseVerdict(case, (), (f"{DRIFT} must fire exactly 1x on its execve, fired 0x",), 1)
    report = DerivedReport([DRIFT], [], [failed], 1, {}, ())
    table = render_derived_table(report, {DRIFT: "R7"}, "0.29.3")
    assert "\nexamples and evasions: FAILED (1 case: 0 examples, 1 evasion case; 1 line below)\n" in table
