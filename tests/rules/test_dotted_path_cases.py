"""Each operand of serving_guard_script_from_writable_dir that reads a script's path spelled so that its
directory cannot be read from it (`//app/x.py`, `./app/../x.py`, a working directory below /proc) and
of serving_guard_model_path_with_dot_segments (`../model-store`, `/x//model`) is a keyword case of its
own: a tuning that replaces the macro without one fails on that operand's case, blamed on the user's
macro. An operand and-ed with another `or` (`startswith /` with `contains /../`) has its case with
the first operand of that `or`: dropping that first one fails those cases too."""

from __future__ import annotations

import json
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

import pytest

from responder.cli import main
from responder.rulespack.evasion_cases import evasion_cases
from responder.rulespack.evasions_common import DRIFT, TAMPER
from responder.rulespack.evasions_keywords import Keyword, PackMacros
from responder.rulespack.expand import load_paths
from responder.rulespack.sysdig import Sysdig

from .conftest import PACK, failing_cases

pytestmark = pytest.mark.timeout(300)

SCRIPTS = "serving_guard_script_from_writable_dir"
DOTTED = "serving_guard_model_path_with_dot_segments"
GROUPS = {
    SCRIPTS: f"{SCRIPTS}: each dotted or /proc spelling of a script run is drift",
    DOTTED: f"{DOTTED}: each dotted spelling of a model dir linked to is tampering",
}
# Each operand (as the condition writes it, whitespace folded), its case's label, and the labels of
# the cases that fail without it.
OPERANDS: dict[str, list[tuple[str, str, list[str]]]] = {
    SCRIPTS: [
        ("proc.cwd startswith /proc/", "proc.cwd startswith /proc/", []),
        ("proc.args startswith /proc/", "proc.args startswith /proc/", []),
        ('proc.args startswith "//"', "proc.args startswith //", []),
        ('proc.args startswith "../"', "proc.args startswith ../", []),
        (
            'proc.args startswith "/"',
            "proc.args startswith /",
            ["proc.args contains /../", "proc.args contains /./"],
        ),
        ('proc.args startswith "./"', "proc.args startswith ./", []),
        (
            'proc.args contains "/../"',
            "proc.args contains /../",
            ["proc.args startswith /", "proc.args startswith ./"],
        ),
        ('proc.args contains "/./"', "proc.args contains /./", []),
    ],
    DOTTED: [
        ('evt.args glob "*..*/models*"', "evt.args glob *..*/models*", []),
        ('evt.args glob "*..*/model-store*"', "evt.args glob *..*/model-store*", []),
        ('evt.args glob "*..*/ml/model*"', "evt.args glob *..*/ml/model*", []),
        ('evt.args glob "*..*/data*"', "evt.args glob *..*/data*", []),
        ('evt.args glob "*..*/huggingface*"', "evt.args glob *..*/huggingface*", []),
        (
            'evt.args contains "/./"',
            "evt.args contains /./",
            ["evt.args contains /model", "evt.args contains /data", "evt.args contains /huggingface"],
        ),
        ('evt.args contains "//"', "evt.args contains //", []),
        (
            "evt.args contains /model",
            "evt.args contains /model",
            ["evt.args contains /./", "evt.args contains //"],
        ),
        ("evt.args contains /data", "evt.args contains /data", []),
        ("evt.args contains /huggingface", "evt.args contains /huggingface", []),
    ],
}
CASES = [(macro, *operand) for macro, operands in OPERANDS.items() for operand in operands]


def _without(macro: str, *clauses: str) -> str:
    """The pack's macro without each of ``clauses`` (an `or` operand), as a user's replace."""
    condition = " ".join(load_paths([str(PACK)]).macros[macro].condition.split())
    for clause in clauses:
        edits = {f" or {clause})": ")", f" or {clause} or ": " or ", f"({clause} or ": "("}
        found = [(old, new) for old, new in edits.items() if old in condition]
        assert len(found) == 1 and condition.count(found[0][0]) == 1, clause
        count = condition.count(clause)
        condition = condition.replace(*found[0])
        assert condition.count(clause) == count - 1, clause
    return f"- macro: {macro}\n  condition: >\n    {condition}\n  override:\n    condition: replace\n"


def _holds(keyword: Keyword, text: str) -> bool:
    if keyword.op == "startswith":
        return text.startswith(keyword.value)
    if keyword.op == "contains":
        return keyword.value in text
    assert keyword.op == "glob", keyword
    return fnmatchcase(text, keyword.value)  # libsinsp's glob: fnmatch(3) without flags


def _text(macro: str, fields: Any, keyword: Keyword) -> str:
    if macro == DOTTED:
        return str(fields["evt.arg.target"])
    return str(fields["proc.cwd"] if keyword.field == "proc.cwd" else fields["proc.args"])


@pytest.mark.parametrize("macro", GROUPS)
def test_every_operand_is_a_case_that_holds_it_alone_among_its_or(macro: str) -> None:
    """A case matches its operand and no other operand of the same `or` (the operands with the
    same branch: what else they are and-ed with), so dropping that operand fails it."""
    operands = PackMacros(load_paths([str(PACK)])).keywords(macro)
    labels = [f"{k.field} {k.op} {k.value}" for k in operands]
    assert labels == [label for _, label, _ in OPERANDS[macro]]
    cases = [c for c in evasion_cases() if c.group == GROUPS[macro]]
    assert [c.id for c in cases] == [f"{GROUPS[macro]}[{label}]" for label in labels]
    for case, operand in zip(cases, operands, strict=True):
        fields = case.witness[0].fields
        siblings = [k for k in operands if (k.needs, k.along) == (operand.needs, operand.along)]
        assert [k for k in siblings if _holds(k, _text(macro, fields, k))] == [operand], case.id


@pytest.mark.parametrize(("macro", "clause", "label", "also"), CASES, ids=[c[2] for c in CASES])
def test_dropping_an_operand_fails_on_its_case(
    sysdig: Sysdig, tmp_path: Path, macro: str, clause: str, label: str, also: list[str]
) -> None:
    expected = sorted(f"{GROUPS[macro]}[{lab}]" for lab in [label, *also])
    assert failing_cases(sysdig, tmp_path, _without(macro, clause), f"{macro}:") == expected


def test_dotted_spellings_dropped_are_caught_by_their_cases_and_blamed_on_the_macros(
    sysdig: Sysdig, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The whole `rules test`: `python3 ./app/../x.py`, `ln -s ../model-store` and `ln -s
    /x/./huggingface` were held by none of the reviews' cases; now each fails its case, blamed on the
    user's replace of its macro alone."""
    tuning = tmp_path / "dotted.yaml"
    tuning.write_text(
        _without(SCRIPTS, 'proc.args startswith "./"')
        + _without(DOTTED, 'evt.args glob "*..*/model-store*"', "evt.args contains /huggingface")
    )
    assert main(["rules", "test", "--format", "json", "--override", str(tuning)]) == 1
    blame: list[dict[str, Any]] = json.loads(capsys.readouterr().out)["examples_and_evasions"]["blame"]

    def entry(macro: str, label: str, rule: str, line: int) -> dict[str, Any]:
        item = {"text": f"{tuning}:{line} (macro {macro})", "file": str(tuning), "line": line}
        return {
            "kind": "evasion",
            "id": f"{GROUPS[macro]}[{label}]",
            "rule": rule,
            "how": "alone",
            "items": [{**item, "item_line": line - 1}],
        }

    # The model-store dirs written through /var/run/.. (one case per model dir) fail with its glob.
    through = "serving_guard_model_dirs: each item written through /var/run/.. is tampering"
    through_run = [
        {
            **entry(DOTTED, "", TAMPER, 7),
            "id": f"{through}[{model_dir}]",
        }
        for model_dir in ("/home/model-server/model-store", "/model-store")
    ]
    assert sorted(blame, key=lambda e: str(e["id"])) == [
        *through_run,
        entry(DOTTED, "evt.args contains /huggingface", TAMPER, 7),
        entry(DOTTED, "evt.args glob *..*/model-store*", TAMPER, 7),
        entry(SCRIPTS, "proc.args startswith ./", DRIFT, 2),
    ]
