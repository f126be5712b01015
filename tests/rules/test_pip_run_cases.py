"""Each glob of the pip branch of serving_guard_download_command (pip run by the interpreter as a module,
`python3 -m pip install evil`, `-mpip`, `-m pip.`, or as a script, `python3 /x/pip install evil`,
`/x/pip0`) is a keyword case of its own, built from the operands and-ed with serving_guard_python: a
tuning that replaces the macro without one fails on that glob's case, blamed on the user's macro.
Before, dropping `-*mpip` or `*/pip` was caught by none of the reviews' cases."""

from __future__ import annotations

import json
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

import pytest

from responder.cli import main
from responder.rulespack.evasion_cases import evasion_cases
from responder.rulespack.evasions_common import DOWNLOAD
from responder.rulespack.evasions_keywords import PYTHON, PackMacros
from responder.rulespack.expand import load_paths
from responder.rulespack.sysdig import Sysdig

from .conftest import PACK, failing_cases

pytestmark = pytest.mark.timeout(300)

MACRO = "serving_guard_download_command"
GROUP = f"{MACRO}: each spelling of pip run by python3 is a download"
# Each glob of the branch as the condition writes it, and the command line its case starts python3 with.
GLOBS = {
    "-*m pip": "-m pip",
    "-*m pip *": "-m pip install evil",
    "-*m pip.*": "-m pip.",
    "-*mpip": "-mpip",
    "-*mpip *": "-mpip install evil",
    "*/pip": "/x/pip",
    "*/pip *": "/x/pip install evil",
    "*/pip[0-9]*": "/x/pip0",
    "*/pip-[0-9]*": "/x/pip-0",
}


def _label(glob: str) -> str:
    return f"{GROUP}[proc.args glob {glob}]"


def _without(*globs: str) -> str:
    """The pack's macro without the operand `proc.args glob "GLOB"` of each of ``globs``, as a user's
    replace."""
    condition = " ".join(load_paths([str(PACK)]).macros[MACRO].condition.split())
    for glob in globs:
        clause = f'proc.args glob "{glob}"'
        edits = {f" or {clause})": ")", f" or {clause} or ": " or ", f"({clause} or ": "("}
        found = [(old, new) for old, new in edits.items() if old in condition]
        assert len(found) == 1 and condition.count(found[0][0]) == 1, clause
        condition = condition.replace(*found[0])
        assert clause not in condition, clause
    return f"- macro: {MACRO}\n  condition: >\n    {condition}\n  override:\n    condition: replace\n"


def test_every_pip_spelling_is_a_case_that_holds_it_alone() -> None:
    """So a tuning that drops one glob fails its case: no other glob of the branch matches, nor the
    branch by name (python3 is no download tool, nor a pip name: `pip[0-9.-]*`)."""
    ruleset = load_paths([str(PACK)])
    branch = [k for k in PackMacros(ruleset).keywords(MACRO) if k.needs == ("serving_guard_python",)]
    assert [(k.field, k.op, k.value) for k in branch] == [("proc.args", "glob", g) for g in GLOBS]
    cases = [c for c in evasion_cases() if c.group == GROUP]
    assert [c.id for c in cases] == [_label(glob) for glob in GLOBS]
    assert "python3" not in ruleset.list_items["serving_guard_download_tools"]
    assert PYTHON not in ruleset.list_items["serving_guard_download_tool_paths"]
    for case, (glob, args) in zip(cases, GLOBS.items(), strict=True):
        fields = case.witness[0].fields
        assert (fields["proc.name"], fields["proc.exepath"], fields["proc.args"]) == ("python3", PYTHON, args)
        assert not fnmatchcase("python3", "pip[0-9.-]*")
        # libsinsp's glob: fnmatch(3) without flags
        assert [g for g in GLOBS if fnmatchcase(args, g)] == [glob], case.id


@pytest.mark.parametrize("glob", GLOBS)
def test_dropping_a_pip_glob_fails_on_its_case(sysdig: Sysdig, tmp_path: Path, glob: str) -> None:
    assert failing_cases(sysdig, tmp_path, _without(glob), f"{MACRO}:") == [_label(glob)]


def test_pip_spellings_dropped_are_caught_by_their_cases_and_blamed_on_the_macro(
    sysdig: Sysdig, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The whole `rules test`: the new cases fail, each blamed on the user's replace of the macro
    alone; of the reviews' cases only `python3 -m pip.__main__` held one of these globs."""
    dropped = ["-*m pip.*", "-*mpip", "*/pip"]
    tuning = tmp_path / "pip.yaml"
    tuning.write_text(_without(*dropped))
    assert main(["rules", "test", "--format", "json", "--override", str(tuning)]) == 1
    blame: list[dict[str, Any]] = json.loads(capsys.readouterr().out)["examples_and_evasions"]["blame"]
    new = sorted((e for e in blame if e["id"].startswith(f"{GROUP}[")), key=lambda e: str(e["id"]))
    item = {"text": f"{tuning}:2 (macro {MACRO})", "file": str(tuning), "line": 2, "item_line": 1}
    assert new == [
        {"kind": "evasion", "id": _label(glob), "rule": DOWNLOAD, "how": "alone", "items": [item]}
        for glob in sorted(dropped, key=_label)
    ]
    assert sorted(entry["id"] for entry in blame if entry not in new) == [
        "download evasions are downloads[python3 -m pip.__main__ install x]",
    ]
