"""security review HIGH-2: a model dir appended to serving_guard_model_dirs whose last component has
no '..' glob in serving_guard_model_path_with_dot_segments leaves `/var/run/../<dir>/...` open (the
kernel follows /var/run to /run; libsinsp shows /var/<dir>/...). `rules check` says so at the
user's append, `rules test` says it and fails on a case built from the user's dir, and the failure
does not read "not your tuning"."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from responder.cli import main
from responder.rulespack.evasion_cases import evasion_cases
from responder.rulespack.expand import load_paths
from responder.rulespack.policy import consistency_problems
from responder.rulespack.sysdig import Sysdig

from .conftest import PACK

pytestmark = pytest.mark.timeout(300)

# rules/README.md's model dirs recipe as the review ran it: the list, its ancestors, the /proc
# macro, and the stub macro replaced with the pack's condition plus the new dirs' globs.
MODEL_DIRS = ("/var/lib/models", "/opt/triton/model_repository")
STUB = "serving_guard_triton_python_stub_launch"


def _stub_macro() -> str:
    condition = load_paths([str(PACK)]).macros[STUB].condition
    last = list(re.finditer(r'proc\.args glob "-c  exec (\S+) /[^ *"]*/\*"', condition))[-1]
    globs = "".join(f' or proc.args glob "-c  exec {last.group(1)} {item}/*"' for item in MODEL_DIRS)
    condition = condition[: last.end()] + globs + condition[last.end() :]
    body = "\n".join(f"    {line}" for line in condition.strip().splitlines())
    return f"- macro: {STUB}\n  condition: >\n{body}\n  override:\n    condition: replace\n"


RECIPE = f"""\
- list: serving_guard_model_dirs
  items: [{", ".join(MODEL_DIRS)}]
  override:
    items: append

- list: serving_guard_model_dir_ancestors
  items: [/var, /var/lib, /opt/triton]
  override:
    items: append

- macro: serving_guard_model_dir_through_proc
  condition: >
    or evt.args glob "*/proc/*/root/var/lib/models*"
    or evt.args glob "*/proc/*/root/opt/triton/model_repository*"
  override:
    condition: append

{_stub_macro()}"""
# What the recipe needs besides (the check's own advice).
DOTTED = """
- macro: serving_guard_model_path_with_dot_segments
  condition: or (evt.args contains ".." and evt.args glob "*..*/model_repository*")
  override:
    condition: append
"""
TRITON = "/opt/triton/model_repository"
DOTTED_GROUP = "serving_guard_model_dirs: each item written through /var/run/.. is tampering"


def _tuning(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "my-overrides.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def _dot_segment_errors(paths: list[str]) -> list[str]:
    return [
        problem.format()
        for problem in consistency_problems(load_paths(paths))
        if problem.item == "macro 'serving_guard_model_path_with_dot_segments'"
    ]


def test_the_shipped_pack_has_a_dot_segment_glob_for_every_model_dir() -> None:
    assert _dot_segment_errors([str(PACK)]) == []


def test_a_model_dir_appended_without_its_glob_is_an_error_at_the_append(tmp_path: Path) -> None:
    tuning = _tuning(tmp_path, RECIPE)
    [error] = _dot_segment_errors([str(PACK), str(tuning)])
    assert error.startswith(
        f"{tuning}:2: error: macro 'serving_guard_model_path_with_dot_segments': list"
        f" serving_guard_model_dirs has '{TRITON}' but macro serving_guard_model_path_with_dot_segments"
        " tests no '..' glob for its last component 'model_repository'"
    )
    assert f"'/var/run/..{TRITON}/...'" in error
    assert 'append `or (evt.args contains ".." and evt.args glob "*..*/model_repository*")`' in error
    # /var/lib/models ends as the pack's /models does: its glob covers it.
    assert "/var/lib/models" not in error


def test_the_glob_the_error_asks_for_is_enough(tmp_path: Path) -> None:
    tuning = _tuning(tmp_path, RECIPE + DOTTED)
    assert _dot_segment_errors([str(PACK), str(tuning)]) == []


@pytest.mark.parametrize(
    ("model_dir", "glob", "covered"),
    [
        ("/srv/weights", "*..*/weights*", True),
        ("/srv/ml/weights", "*..*/ml/weights*", True),  # the dir's last components, as /ml/model
        ("/srv/model_v2", "*..*/model*", True),  # a prefix of its last component after '..'
        ("/srv/weights", "*..*/srv*", False),  # '/srv/x/../weights' has no /srv after the '..'
        ("/srv/weights", "*..*/weights-old*", False),
    ],
)
def test_which_globs_cover_a_model_dir(tmp_path: Path, model_dir: str, glob: str, covered: bool) -> None:
    tuning = _tuning(
        tmp_path,
        f"- list: serving_guard_model_dirs\n  items: [{model_dir}]\n  override:\n    items: append\n\n"
        f'- macro: serving_guard_model_path_with_dot_segments\n  condition: or evt.args glob "{glob}"\n'
        "  override:\n    condition: append\n",
    )
    errors = _dot_segment_errors([str(PACK), str(tuning)])
    assert (errors == []) is covered, errors


def test_rules_check_fails_on_the_recipe_without_the_glob(
    sysdig: Sysdig, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tuning = _tuning(tmp_path, RECIPE)
    assert main(["rules", "check", "--no-falco", str(PACK), str(tuning)]) == 1
    out = capsys.readouterr().out
    assert f"{tuning}:2: error: macro 'serving_guard_model_path_with_dot_segments'" in out
    tuning.write_text(RECIPE + DOTTED, encoding="utf-8")
    assert main(["rules", "check", "--no-falco", str(PACK), str(tuning)]) == 0, capsys.readouterr().out


def test_the_model_dir_cases_come_from_the_loaded_list(tmp_path: Path) -> None:
    tuning = _tuning(tmp_path, RECIPE)
    shipped = {case.id for case in evasion_cases()}
    loaded = {case.id for case in evasion_cases(load_paths([str(PACK), str(tuning)]))}
    added = sorted(loaded - shipped)
    assert added == sorted(
        f"serving_guard_model_dirs: each item {what}[{item}]"
        for item in ("/var/lib/models", TRITON)
        for what in (
            "written is tampering",
            "written through /proc/1/root is tampering",
            "written through /var/run/.. is tampering",
        )
    )
    assert shipped <= loaded  # the pack's items keep their cases
    assert f"{DOTTED_GROUP}[/models]" in shipped


def test_rules_test_fails_on_the_recipe_without_the_glob_and_blames_it(
    sysdig: Sysdig, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tuning = _tuning(tmp_path, RECIPE)
    assert main(["rules", "test", "--override", str(tuning)]) == 1
    out = capsys.readouterr().out
    lines = out.splitlines()
    check_error = next(line for line in lines if line.startswith(f"{tuning}:2: error: macro "))
    assert "*..*/model_repository*" in check_error
    [failure] = [line for line in lines if f"evasion {DOTTED_GROUP}[{TRITON}]" in line]
    assert "not your tuning" not in failure
    assert "; your files leave it open: " in failure
    assert f"`serving-guard rules check` says what your files lack: {tuning}:2: error:" in failure
    assert ", rules check errors 1 (above))" in lines[-1]


def test_rules_test_holds_with_the_glob(
    sysdig: Sysdig, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tuning = _tuning(tmp_path, RECIPE + DOTTED)
    code = main(["rules", "test", "--override", str(tuning)])
    out = capsys.readouterr().out
    assert f"{DOTTED_GROUP}[{TRITON}]" not in "\n".join(
        line for line in out.splitlines() if "must fire" in line
    )
    assert f"{tuning}:" not in out.replace("rules files, in load order: ", "")
    assert code == 0, out[-3000:]
