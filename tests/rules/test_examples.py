"""rules/examples.yaml: valid against its schema, complete for every rule, and tied to the captures."""

from __future__ import annotations

from pathlib import Path

import pytest

from responder.errors import SourceError
from responder.rulespack.derived_suite import conditions_of, run_cases
from responder.rulespack.evasion_cases import evasion_cases
from responder.rulespack.example_cases import NOT_EVALUABLE, SHOWN_BY_EVASION, STARTED_AS, example_cases
from responder.rulespack.examples import ExamplesFile, load_examples
from responder.rulespack.expand import load, load_paths
from responder.rulespack.recorded import CaptureLibrary
from responder.rulespack.rulesfile import read_rules_file
from responder.rulespack.sysdig import Sysdig

from .conftest import CAPTURES, EXAMPLES, PACK, SCOPE_OVERRIDE


@pytest.fixture(scope="module")
def examples() -> ExamplesFile:
    return load_examples(EXAMPLES)


def _pack_rules() -> list[str]:
    return list(load([read_rules_file(str(PACK))]).expanded)


def test_every_rule_has_positive_and_negative_examples(examples: ExamplesFile) -> None:
    assert [entry.rule for entry in examples.rules] == _pack_rules()
    for entry in examples.rules:
        assert entry.positive and entry.negative, entry.rule


def test_examples_name_only_rules_of_the_pack(examples: ExamplesFile) -> None:
    assert examples.rule_names() <= set(_pack_rules())


def test_proven_by_points_at_a_capture_action_that_shows_it(examples: ExamplesFile) -> None:
    proven = 0
    for entry in examples.rules:
        for example, positive in [(e, True) for e in entry.positive] + [(e, False) for e in entry.negative]:
            if example.proven_by is None:
                continue
            proven += 1
            capture, action_id = example.proven_by.split("#")
            assert (CAPTURES / capture).is_file(), example.proven_by
            expectations = examples.captures.get(capture)
            assert expectations is not None, example.proven_by
            action = next((a for a in expectations.actions if a.id == action_id), None)
            assert action is not None, example.proven_by
            if positive:
                assert entry.rule in action.expect, f"{example.id}: {action_id} does not expect {entry.rule}"
            else:
                assert entry.rule not in action.expect + action.also, (
                    f"{example.id}: {action_id} fires {entry.rule}"
                )
    assert proven >= 20


def test_every_capture_has_expectations(examples: ExamplesFile) -> None:
    assert sorted(e.file for e in examples.captures.files) == sorted(p.name for p in CAPTURES.glob("*.scap"))
    assert examples.captures.scope_override is not None
    assert (CAPTURES / examples.captures.scope_override).is_file()


@pytest.mark.parametrize(
    ("text", "message", "line"),
    [
        ("version: 1\nrules: []\nextra: 1\n", "extra: unknown key", 3),
        (
            "version: 1\ncaptures:\n  files:\n    - file: a.scap\n      scenario: s\n      actions:\n"
            "        - {id: a1, what: w, marker: m, expect: [R], benign: true}\n",
            "an action either expects rules, is benign, or is undetectable",
            7,
        ),
        (
            "version: 1\nrules:\n  - rule: R\n    positive:\n      - id: p\n"
            "        action: {exec: [sh], open_read: /x}\n"
            "    negative:\n      - {id: n, action: {exec: [ls]}, why: w}\n",
            "give exactly one action kind",
            6,
        ),
        ("version: 2\n", "version: must be 1, not 2", 1),
        # pydantic's words ("Field required", "Input should be ...") are said as the config says them.
        ("rules: []\n", "version: required, missing", 1),
        ("version: 1\n7: x\n", "(top level): keys must be text, not 7", 2),
        (
            "version: 1\nrules:\n  - rule: R\n    positive:\n      - id: p\n"
            "        action: {connect: {proto: SCTP, address: x, port: 80}}\n"
            "    negative:\n      - {id: n, action: {exec: [ls]}, why: w}\n",
            "rules[0].positive[0].action.connect.proto: must be one of tcp, udp; not 'SCTP'",
            6,
        ),
    ],
)
def test_schema_errors_name_the_line(tmp_path: Path, text: str, message: str, line: int) -> None:
    path = tmp_path / "examples.yaml"
    path.write_text(text)
    with pytest.raises(SourceError) as caught:
        load_examples(path)
    assert message in caught.value.message
    assert caught.value.line == line


# --- the examples as `rules test` judges them (responder/rulespack/example_cases.py) ---------------


def test_every_example_is_judged_or_says_why_not(examples: ExamplesFile) -> None:
    cases = example_cases(examples)
    assert len(cases) == sum(len(e.positive) + len(e.negative) for e in examples.rules)
    for case in cases:
        ways = [case.derived, case.proven_by, case.shown_by, case.not_evaluated]
        assert sum(way is not None for way in ways) == 1, case.id
    assert sum(case.not_evaluated is not None for case in cases) <= 7


def test_the_example_tables_name_examples_that_exist(examples: ExamplesFile) -> None:
    ids = {ex.id for entry in examples.rules for ex in (*entry.positive, *entry.negative)}
    assert set(STARTED_AS) | set(SHOWN_BY_EVASION) | set(NOT_EVALUABLE) <= ids


def test_an_example_shown_by_an_evasion_case_is_that_rule_and_polarity(examples: ExamplesFile) -> None:
    evasions = {case.id: case for case in evasion_cases()}
    for case in example_cases(examples):
        if case.shown_by is None:
            continue
        [expectation] = evasions[case.shown_by].expect
        assert (expectation.rule, expectation.fires) == (case.rule, case.positive), case.id


def test_every_derived_example_holds_on_the_pack(sysdig: Sysdig, examples: ExamplesFile) -> None:
    derived = [case.derived for case in example_cases(examples) if case.derived is not None]
    conditions = conditions_of(load_paths([str(PACK), str(SCOPE_OVERRIDE)]))
    verdicts = run_cases(sysdig, CaptureLibrary(CAPTURES), derived, conditions)
    assert [(v.case.id, v.problems) for v in verdicts if not v.ok] == []
    assert len(verdicts) >= 50
