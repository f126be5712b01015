"""`rules test --format json` says which of the user's items make each example or evasion case fail
(what the failure lines say after "your files change RULE at"), in fields a CI job reads:
examples_and_evasions.blame, one entry per failed case and rule, with how the ablation found them
(derived_blame: alone, together, ...) and each item's file and line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from responder.cli import main
from responder.rulespack.evasions_lists import read_pack_lists
from responder.rulespack.sysdig import Sysdig

from .conftest import PACK

pytestmark = pytest.mark.timeout(300)

DOWNLOAD = "Runtime download or package install in serving pod"
TOOLS_WITHOUT = """\
- list: serving_guard_download_tools
  items: [{tools}]
  override:
    items: replace
"""
# wget silenced twice, each enough: the list without it and an exception of the user's on the rule.
WGET_QUIET = """\
- macro: my_quiet
  condition: proc.name = wget
- rule: Runtime download or package install in serving pod
  condition: and not my_quiet
  override:
    condition: append
"""


def _tools_without(tool: str) -> str:
    tools = read_pack_lists(PACK).items("serving_guard_download_tools")
    assert tool in tools
    return TOOLS_WITHOUT.format(tools=", ".join(t for t in tools if t != tool))


def _json_blame(capsys: pytest.CaptureFixture[str], tuning: Path) -> list[dict[str, Any]]:
    assert main(["rules", "test", "--format", "json", "--override", str(tuning)]) == 1
    document = json.loads(capsys.readouterr().out)
    blame: list[dict[str, Any]] = document["examples_and_evasions"]["blame"]
    return blame


def test_a_list_item_dropped_is_blamed_alone_in_json(
    sysdig: Sysdig, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tuning = tmp_path / "tuning.yaml"
    tuning.write_text(_tools_without("dvc"))
    item = {
        "text": f"{tuning}:1 (list serving_guard_download_tools)",
        "file": str(tuning),
        "line": 1,
        "item_line": 1,
    }
    assert _json_blame(capsys, tuning) == [
        {
            "kind": "evasion",
            "id": case,
            "rule": DOWNLOAD,
            "how": "alone",
            "items": [item],
        }
        for case in (
            "more download tools are downloads[dvc pull]",
            "serving_guard_download_tools: each item by name is a download[dvc]",
        )
    ]


def test_items_that_silence_a_case_only_together_are_blamed_together_in_json(
    sysdig: Sysdig, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tuning = tmp_path / "tuning.yaml"
    tuning.write_text(_tools_without("wget") + WGET_QUIET)
    blame = {entry["id"]: entry for entry in _json_blame(capsys, tuning)}
    assert blame["serving_guard_download_tools: each item by name is a download[wget]"] == {
        "kind": "evasion",
        "id": "serving_guard_download_tools: each item by name is a download[wget]",
        "rule": DOWNLOAD,
        "how": "together",
        "items": [
            {
                "text": f"{tuning}:1 (list serving_guard_download_tools)",
                "file": str(tuning),
                "line": 1,
                "item_line": 1,
            },
            {"text": f"{tuning}:6 (macro my_quiet)", "file": str(tuning), "line": 6, "item_line": 5},
            {
                "text": f"{tuning}:8 (rule '{DOWNLOAD}')",
                "file": str(tuning),
                "line": 8,
                "item_line": 7,
            },
        ],
    }
