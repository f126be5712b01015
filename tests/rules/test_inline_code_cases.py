"""The options of serving_guard_inline_code (the leading `-`, and ` -c `, ` -e `, ` -r ` after a first
argument) are each a keyword case of their own: a tuning that replaces the macro without one of them
(`python3 app.py -r CODE` is then no one-liner) fails on the case of that option, blamed on the
user's macro. Before these cases nothing caught dropping ` -c `, ` -e ` or ` -r `: the one-liner
cases all start with `-c`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from responder.cli import main
from responder.rulespack.evasion_cases import evasion_cases
from responder.rulespack.evasions_common import DOWNLOAD, visible_edges
from responder.rulespack.evasions_keywords import Keyword, PackMacros
from responder.rulespack.expand import load_paths
from responder.rulespack.sysdig import Sysdig

from .conftest import PACK, failing_cases

pytestmark = pytest.mark.timeout(300)

MACRO = "serving_guard_inline_code"
GROUP = f"{MACRO}: each option of a one-liner that downloads is a download"
# Each option as the macro's condition writes it (whitespace folded), and its case's label.
OPTIONS = {
    'proc.args startswith "-"': "-",
    'proc.args contains " -c "': "<space>-c<space>",
    'proc.args contains " -e "': "<space>-e<space>",
    'proc.args contains " -r "': "<space>-r<space>",
}


def _condition() -> str:
    return " ".join(load_paths([str(PACK)]).macros[MACRO].condition.split())


def _without(clause: str) -> str:
    """The pack's macro without ``clause`` (an `or` operand), as a user's replace."""
    condition = _condition()
    for text in (f"{clause} or ", f" or {clause}"):
        if text in condition:
            condition = condition.replace(text, "", 1)
            break
    else:
        raise AssertionError(f"{clause} is not an operand of {MACRO}")
    assert clause not in condition
    return f"- macro: {MACRO}\n  condition: >\n    {condition}\n  override:\n    condition: replace\n"


def _matches(keyword: Keyword, args: str) -> bool:
    if keyword.op == "startswith":
        return args.startswith(keyword.value)
    assert keyword.op == "contains", keyword
    return keyword.value in args


def test_every_option_is_a_case_that_holds_that_option_alone() -> None:
    """So a tuning that drops one option fails its case: no other option of the macro matches."""
    options = PackMacros(load_paths([str(PACK)])).keywords(MACRO)
    assert [visible_edges(k.value) for k in options] == list(OPTIONS.values())
    cases = [c for c in evasion_cases() if c.group == GROUP]
    assert [c.id for c in cases] == [f"{GROUP}[{label}]" for label in OPTIONS.values()]
    for case in cases:
        fields = case.witness[0].fields
        assert fields["proc.name"] == "python3"
        matched = [visible_edges(k.value) for k in options if _matches(k, str(fields["proc.args"]))]
        assert matched == [case.id[len(case.group) + 1 : -1]], case.id
    assert [str(c.witness[0].fields["proc.args"]) for c in cases] == [
        "-c urllib",
        "app.py -c urllib",
        "app.py -e urllib",
        "app.py -r urllib",
    ]


@pytest.mark.parametrize("clause", OPTIONS, ids=OPTIONS.values())
def test_dropping_an_option_fails_on_its_case(sysdig: Sysdig, tmp_path: Path, clause: str) -> None:
    assert failing_cases(sysdig, tmp_path, _without(clause), f"{MACRO}:") == [f"{GROUP}[{OPTIONS[clause]}]"]


def _blame(capsys: pytest.CaptureFixture[str], tuning: Path) -> list[dict[str, Any]]:
    assert main(["rules", "test", "--format", "json", "--override", str(tuning)]) == 1
    document = json.loads(capsys.readouterr().out)
    blame: list[dict[str, Any]] = document["examples_and_evasions"]["blame"]
    return blame


@pytest.mark.parametrize("option", ["-c", "-e", "-r"])
def test_an_option_after_a_first_argument_is_caught_only_by_its_case_and_blamed_on_the_macro(
    sysdig: Sysdig, tmp_path: Path, capsys: pytest.CaptureFixture[str], option: str
) -> None:
    """The whole `rules test`: only the new case fails (nothing else held these options), blamed
    on the user's replace of the macro alone (at its condition's line)."""
    tuning = tmp_path / "no-option.yaml"
    tuning.write_text(_without(f'proc.args contains " {option} "'))
    assert _blame(capsys, tuning) == [
        {
            "kind": "evasion",
            "id": f"{GROUP}[<space>{option}<space>]",
            "rule": DOWNLOAD,
            "how": "alone",
            "items": [
                {"text": f"{tuning}:2 (macro {MACRO})", "file": str(tuning), "line": 2, "item_line": 1}
            ],
        }
    ]


def test_dropping_r_fails_with_a_line_naming_the_case_and_the_macro(
    sysdig: Sysdig, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tuning = tmp_path / "no-r.yaml"
    tuning.write_text(_without('proc.args contains " -r "'))
    assert main(["rules", "test", "--override", str(tuning)]) == 1
    out = capsys.readouterr().out
    assert (
        f"evasion {GROUP}[<space>-r<space>]: {DOWNLOAD} must fire exactly 1x, fired 0x;"
        f" your files change {DOWNLOAD} at {tuning}:2 (macro {MACRO})"
    ) in out
    # The id as printed is taken by --accept: the trade-off accepted, the run passes.
    assert main(["rules", "test", "--override", str(tuning), "--accept", f"{GROUP}[<space>-r<space>]"]) == 0
    assert f"accepted: evasion {GROUP}[<space>-r<space>]: " in capsys.readouterr().out
