"""Render the second section of `rules test`: the rule examples and the evasion cases, per rule and per
evasion group, what was not evaluated and why, and every failure."""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection
from typing import Any

from responder.rulespack.derived import CaseVerdict, judged_events
from responder.rulespack.derived_report import (
    FAIL,
    NOT_EVALUATED,
    OK,
    BlamedFailure,
    DerivedReport,
    ExampleVerdict,
)

NOT_JUDGED = "not judged"


def _tally(passed: int, total: int) -> str:
    return f"{passed}/{total}" if total else "-"


def _rule_rows(report: DerivedReport, ids: dict[str, str], accepted: Collection[str]) -> list[str]:
    rows = []
    width = max([len(rule) for rule in report.rules] + [4])
    rows.append(f"  {'':4}  {'rule':<{width}}  {'positive':>8}  {'negative':>8}  {'evasions':>8}  result")
    # In R-number order: a rule numbered among the matrix's (disabled, say) sits where its number does.
    numbered = {rule: int(ids[rule][1:]) for rule in report.rules if ids.get(rule, "")[1:].isdigit()}
    for rule in sorted(report.rules, key=lambda name: numbered.get(name, len(report.rules) + 1)):
        examples = [v for v in report.examples if v.case.rule == rule and v.status != NOT_EVALUATED]
        positive = [v for v in examples if v.case.positive]
        negative = [v for v in examples if not v.case.positive]
        evasions = [v for v in report.evasions if rule in v.case.rules and report.judged(v)]
        evasion_ok = [v for v in evasions if report.held(v, rule)]
        failed = any(v.status == FAIL for v in examples) or len(evasion_ok) < len(evasions)
        failures = [f for f in report.failures if f": {rule} " in f]
        result = "FAIL" if failed else "ok"
        if failed and failures and all(f in accepted for f in failures):
            result = "accepted"
        rows.append(
            f"  {ids[rule]:<4}  {rule:<{width}}  "
            f"{_tally(sum(v.status == OK for v in positive), len(positive)):>8}  "
            f"{_tally(sum(v.status == OK for v in negative), len(negative)):>8}  "
            f"{_tally(len(evasion_ok), len(evasions)):>8}  {result}"
        )
    return rows


def _group_rows(report: DerivedReport, ids: dict[str, str], accepted: Collection[str]) -> list[str]:
    groups: dict[str, list[CaseVerdict]] = {}
    for verdict in report.evasions:
        if report.judged(verdict):
            groups.setdefault(verdict.case.group, []).append(verdict)
    mine = {f: keys for f, keys in report.keyed_evasion_failures()}
    width = max([len(group) for group in groups] + [5])
    rows = [f"  {'group':<{width}}  {'rules':<7}  {'cases':>5}  result"]
    for group, verdicts in groups.items():
        rules = ",".join(dict.fromkeys(ids[r] for v in verdicts for r in v.case.rules))
        passed = sum(v.ok for v in verdicts)
        result = "ok" if passed == len(verdicts) else f"FAIL ({len(verdicts) - passed})"
        failures = [f for f, keys in mine.items() if group in keys]
        if failures and all(f in accepted for f in failures):
            result = f"accepted ({len(verdicts) - passed})"
        rows.append(f"  {group:<{width}}  {rules:<7}  {_tally(passed, len(verdicts)):>5}  {result}")
    return rows


def _judged_by(verdicts: list[ExampleVerdict]) -> str:
    counts = Counter(
        "derived"
        if v.judged_by == "derived capture"
        else "capture"
        if v.judged_by.startswith("capture ")
        else "evasion"
        if v.judged_by.startswith("evasion case")
        else "not"
        for v in verdicts
    )
    return (
        f"{counts['derived']} on derived captures, {counts['capture']} by the recorded captures above,"
        f" {counts['evasion']} by an evasion case, {counts['not']} not evaluated"
    )


def render_derived_table(
    report: DerivedReport, ids: dict[str, str], sysdig_version: str, accepted: Collection[str] = frozenset()
) -> str:
    """``ids``: the capture matrix's rule numbers (R1 ...), extended for rules it did not list;
    ``accepted``: failure lines the user accepted (`rules test --accept`), said as such."""
    # Numbered after the matrix's, never reusing one of its numbers.
    extra = [rule for rule in report.rules if rule not in ids]
    ids = {**ids, **{rule: f"R{len(ids) + index}" for index, rule in enumerate(extra, 1)}}
    lines = [
        f"Rule examples and evasion cases: {len(report.examples)} examples of rules/examples.yaml"
        f" ({_judged_by(report.examples)}), {len(report.evasions)} evasion cases"
        f" (sysdig {sysdig_version}, {report.sysdig_runs} sysdig passes on derived captures)",
        "",
        "  a derived capture is a recorded action rewritten into the example's or the evasion's action;",
        "  cell: passed/judged",
        "",
        *_rule_rows(report, ids, accepted),
        "",
        "Evasion cases, by what they show:",
        *_group_rows(report, ids, accepted),
    ]
    if report.not_judged:
        lines += ["", "Evasion cases not judged (they check a default of the pack that your files change):"]
        lines += [f"  {case}: {why}" for case, why in report.not_judged.items()]
    skipped = [v for v in report.examples if v.status == NOT_EVALUATED]
    if skipped:
        lines += ["", "Examples not evaluated (the reason; a live cluster with Falco proves them):"]
        lines += [f"  {ids[v.case.rule]} {v.case.id}: {v.judged_by}" for v in skipped]
    lines.append("")
    failures = [failure for failure in report.failures if failure not in accepted]
    if failures:
        failed = {keys[0] for text, keys in report.keyed_evasion_failures() if text not in accepted}
        examples = sum(text not in accepted for text in report.example_failures)
        # Counted in cases (a case judging two sets of events can fail on two lines).
        cases = examples + len(failed)
        lines.append(
            f"examples and evasions: FAILED ({_count(cases, 'case')}: {_count(examples, 'example')},"
            f" {_count(len(failed), 'evasion case')}; {_count(len(failures), 'line')} below)"
        )
        lines += [f"  {failure}" for failure in failures]
    else:
        judged = sum(v.status != NOT_EVALUATED for v in report.examples)
        cases = sum(report.judged(v) for v in report.evasions)
        held = "held, or failed as you accepted" if report.failures else "held"
        lines.append(f"examples and evasions: ok: {judged} examples and {cases} evasion cases {held}")
    lines += [f"  accepted: {failure}" for failure in report.failures if failure in accepted]
    return "\n".join(lines)


def _count(number: int, thing: str) -> str:
    return f"{number} {thing}{'' if number == 1 else 's'}"


def render_derived_json(report: DerivedReport) -> dict[str, Any]:
    return {
        "ok": report.ok,
        "sysdig_passes": report.sysdig_runs,
        "examples": [
            {
                "rule": v.case.rule,
                "id": v.case.id,
                "positive": v.case.positive,
                "expected": v.case.expected,
                "status": v.status,
                "judged_by": v.judged_by,
                "failure": v.problem,
            }
            for v in report.examples
        ],
        "evasions": [
            {
                "id": v.case.id,
                "group": v.case.group,
                "capture": v.case.recorded.capture,
                "expect": [
                    {
                        "rule": o.expectation.rule,
                        "expected": o.expectation.describe(),
                        "on": judged_events(o.expectation.on),
                        "fired": o.alerts,
                        "ok": o.ok,
                    }
                    for o in v.outcomes
                ],
                "status": OK if v.ok else FAIL if report.judged(v) else NOT_JUDGED,
                "not_judged": report.not_judged.get(v.case.id),
                "failures": list(dict.fromkeys(v.problems)),  # once each, as the table says them
            }
            for v in report.evasions
        ],
        "changed_by_override": {rule: items for rule, items in report.changes.items() if items},
        "failures": report.failures,
        "blame": [_blamed_json(found) for found in report.blamed()],
    }


def _blamed_json(found: BlamedFailure) -> dict[str, Any]:
    """A failure's cause as its line says it (`your files change RULE at ...`), in fields: a CI job
    reads which of the user's items (file, line) break which case without parsing the line."""
    return {
        "kind": found.kind,
        "id": found.id,
        "rule": found.rule,
        "how": found.blame.how,
        "items": [
            {"text": item.text, "file": item.item[0], "line": item.line, "item_line": item.item[1]}
            for item in found.blame.items
        ],
        **({"note": found.blame.note} if found.blame.note else {}),
    }
