"""`serving-guard rules test --override FILE` adds a tuning file after the examples' scope override
(rules/README.md "Testing your own serving image", step 4), instead of replacing it: a harmless
tuning file leaves every attack detected. The output names the files loaded, in load order;
`--scope-override` replaces the scope override; a missing captures directory is named as such."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from responder.cli import main
from responder.rulespack.paths import display_path
from responder.rulespack.sysdig import Sysdig

from .conftest import PACK, README, SCOPE_OVERRIDE

# Two whole `rules test` runs a test (~50 s each here): a hang guard, not a speed target.
pytestmark = pytest.mark.timeout(300)

# The audit's tuning file: one more download tool, appended to the pack's list.
TUNING = "- list: serving_guard_download_tools\n  items: [skopeo]\n  override:\n    items: append\n"


def _tuning(tmp_path: Path) -> Path:
    path = tmp_path / "tune.yaml"
    path.write_text(TUNING)
    return path


def test_a_tuning_override_loads_after_the_scope_override(
    sysdig: Sysdig, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tune = _tuning(tmp_path)
    assert main(["rules", "test", "--override", str(tune)]) == 0
    out = capsys.readouterr().out
    loaded = [display_path(PACK), display_path(SCOPE_OVERRIDE), str(tune)]
    assert out.startswith(f"rules files, in load order: {', '.join(loaded)}\n\nDetection matrix:")
    assert "expected rule did not fire" not in out
    assert "captures: ok: every attack action detected by its intended rule, no alert on benign parts" in out
    assert out.rstrip().endswith("result: ok: every capture expectation, rule example and evasion case held")
    assert main(["rules", "test", "--override", str(tune), "--format", "json"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["ok"] is True and document["rules_files"] == loaded


def test_scope_override_replaces_the_examples_one(
    sysdig: Sysdig, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The pack alone sees no capture (they are host processes): every attack is missed, and the
    first line shows why."""
    tune = _tuning(tmp_path)
    assert main(["rules", "test", "--scope-override", "", "--override", str(tune)]) == 1
    out = capsys.readouterr().out
    assert out.startswith(f"rules files, in load order: {display_path(PACK)}, {tune}\n")
    assert out.count("expected rule did not fire") == 24
    assert main(["rules", "test", "--scope-override", str(SCOPE_OVERRIDE), "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["rules_files"] == [display_path(PACK), str(SCOPE_OVERRIDE)]


def test_a_missing_captures_directory_is_named_not_the_scope_override(
    sysdig: Sysdig, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "nonexistent"
    assert main(["rules", "test", "--captures", str(missing)]) == 2
    captured = capsys.readouterr()
    assert captured.err == f"serving-guard: error: {missing}: not a directory of captures\n"
    assert captured.out == ""


def test_the_readme_step_gives_the_load_order() -> None:
    text = " ".join(README.read_text(encoding="utf-8").split())
    assert (
        "The pack loads first, then the `scope_override` of step 3, then your `--override` files; the"
        " output's first line names them in that order." in text
    )
    assert "(`--scope-override FILE` replaces the expectations file's `scope_override`.)" in text
