"""`serving-guard rules check` and `rules test` on the command line: output, exit status, and what
happens without sysdig (a clear skip, or an error when SERVING_GUARD_REQUIRE_SYSDIG=1)."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from responder.cli import main
from responder.rulespack.sysdig import REQUIRE_ENV, Sysdig

from .conftest import PACK, RULES_TESTS


def _path_without_sysdig(tmp_path: Path) -> str:
    empty = tmp_path / "bin"
    empty.mkdir(exist_ok=True)
    return str(empty)


def test_check_prints_a_verdict_per_rule(sysdig: Sysdig, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["rules", "check", "--no-falco"]) == 0
    out = capsys.readouterr().out
    assert f"sysdig {sysdig.version}" in out
    assert "8/8 rule conditions and outputs compiled" in out
    assert "ok           Shell in serving pod" in out
    assert "clause `proc.is_exe_upper_layer = true` -> evt.num = 0 for sysdig" in out
    assert out.rstrip().endswith("result: ok (0 warnings); rules: 8 enabled, 0 disabled")


def test_check_expanded_prints_both_conditions(sysdig: Sysdig, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["rules", "check", "--no-falco", "--expanded", str(PACK)]) == 0
    out = capsys.readouterr().out
    assert "falco:  (evt.type in (execve, execveat) and evt.rawres = 0)" in out
    assert 'k8s.pod.label[serving-guard.io/serving] = "true"' in out  # as Falco compiles it
    assert 'k8s.pod.label.serving-guard.io/serving = "true"' in out  # as sysdig needs it
    # The exact rewrites are listed too: an empty list (none allowed by default) is never true.
    assert "translated for sysdig: proc.args pmatch () -> evt.num = 0 (an empty list: never true)" in out


def test_check_errors_exit_1_with_file_line_rule_and_token(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv(REQUIRE_ENV, raising=False)  # the error here needs no sysdig
    broken = RULES_TESTS / "broken" / "undefined_macro.yaml"
    assert main(["rules", "check", "--no-falco", str(broken)]) == 1
    out = capsys.readouterr().out
    assert (
        f"{broken}:9: error: rule 'Misspelled macro': undefined macro 'serving_guard_spawned_proces'" in out
    )
    assert "result: FAILED (1 errors" in out


def test_check_without_sysdig_is_a_clear_skip(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PATH", _path_without_sysdig(tmp_path))
    monkeypatch.delenv(REQUIRE_ENV, raising=False)
    assert main(["rules", "check"]) == 3
    out = capsys.readouterr().out
    assert "skipped: sysdig not installed" in out
    assert "result: skipped: sysdig not installed" in out


def test_check_without_sysdig_fails_when_required(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PATH", _path_without_sysdig(tmp_path))
    monkeypatch.setenv(REQUIRE_ENV, "1")
    assert main(["rules", "check"]) == 1
    assert f"sysdig is not installed but {REQUIRE_ENV}=1" in capsys.readouterr().out


def test_capture_test_without_sysdig(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PATH", _path_without_sysdig(tmp_path))
    monkeypatch.delenv(REQUIRE_ENV, raising=False)
    assert main(["rules", "test"]) == 3
    assert "skipped: sysdig not installed" in capsys.readouterr().err
    monkeypatch.setenv(REQUIRE_ENV, "1")
    assert main(["rules", "test"]) == 1
    assert f"{REQUIRE_ENV}=1" in capsys.readouterr().err


def _fake_falco(directory: Path, successful: bool) -> Path:
    """No Falco binary can be installed on these machines: a stand-in that records its arguments and
    answers `-V` with the JSON layout Falco prints under json_output (falco_load_results)."""
    record = directory / "falco-args.json"
    result = {
        "falco_load_results": [
            {
                "name": str(PACK),
                "successful": successful,
                "errors": []
                if successful
                else [
                    {
                        "code": "LOAD_ERR_COMPILE_CONDITION",
                        "message": "boom",
                        "context": {"locations": [{"name": str(PACK), "line": 3}]},
                    }
                ],
                "warnings": [],
            }
        ]
    }
    script = directory / "falco"
    script.write_text(
        "#!/usr/bin/env python3\nimport json, sys\n"
        f"json.dump(sys.argv[1:], open({str(record)!r}, 'w'))\n"
        f"print({json.dumps(json.dumps(result))})\n"
        f"sys.exit({0 if successful else 1})\n"
    )
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return record


@pytest.mark.parametrize("successful", [True, False])
def test_check_runs_falco_validate_when_falco_is_on_path(
    sysdig: Sysdig,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    successful: bool,
) -> None:
    record = _fake_falco(tmp_path, successful)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{Path(sysdig.path).parent}")
    assert main(["rules", "check", str(PACK)]) == (0 if successful else 1)
    assert json.loads(record.read_text()) == ["-o", "json_output=true", "-V", str(PACK)]
    out = capsys.readouterr().out
    if successful:
        assert f"falco -V ({tmp_path / 'falco'}): ok" in out
        assert f"{PACK}: Ok" in out
    else:
        assert "FAILED" in out
        assert f"error: LOAD_ERR_COMPILE_CONDITION boom ({PACK}:3)" in out


def _rule(condition: str, name: str = "x") -> str:
    return (
        f"- rule: {name}\n  desc: d\n  condition: {condition}\n  output: o %proc.name\n"
        "  priority: WARNING\n  tags: [T1059]\n"
    )


TOO_DEEP = "condition nested too deeply (more than 100 levels of parentheses, 'not' and transformers)"


@pytest.mark.parametrize("depth", [300, 5000])
def test_check_refuses_a_condition_nested_too_deeply(
    depth: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv(REQUIRE_ENV, raising=False)
    path = tmp_path / "deep.yaml"
    path.write_text(_rule("(" * depth + "evt.type = execve" + ")" * depth))
    assert main(["rules", "check", "--no-falco", str(path)]) == 1
    out = capsys.readouterr().out
    assert f"\n{path}:3: error: rule 'x': {TOO_DEEP}\n" in out
    assert out.endswith("result: FAILED (1 errors, 0 warnings); rules: 1 enabled, 0 disabled\n")


def test_check_refuses_macros_that_expand_too_deeply(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Each macro is shallow, but together they would nest 600 levels: the first one past the bound
    is reported, once; the macros and the rule built on it are not reported again."""
    monkeypatch.delenv(REQUIRE_ENV, raising=False)
    items = ["- macro: m0\n  condition: proc.name = a\n"]
    items += [
        f"- macro: m{i}\n  condition: (m{i - 1} or proc.name = b{i}) and proc.pid > {i}\n"
        for i in range(1, 300)
    ]
    path = tmp_path / "chain.yaml"
    path.write_text("".join(items) + _rule("evt.type = execve and m299"))
    assert main(["rules", "check", "--no-falco", str(path)]) == 1
    out = capsys.readouterr().out
    assert (
        f"\n{path}:202: error: macro 'm100': condition nested too deeply once its macros are expanded "
        "(201 levels of and/or/not, at most 200): flatten the macros it uses\n"
    ) in out
    assert out.endswith("result: FAILED (1 errors, 0 warnings); rules: 1 enabled, 0 disabled\n")


def test_check_reports_null_items_like_other_non_mappings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv(REQUIRE_ENV, raising=False)
    path = tmp_path / "items.yaml"
    path.write_text("- null\n-\n- ~\n- 3\n- [a]\n- text\n")
    assert main(["rules", "check", "--no-falco", str(path)]) == 1
    out = capsys.readouterr().out
    assert (
        f"{path}:1: error: each item must be a mapping, got null\n"
        f"{path}:2: error: each item must be a mapping, got null\n"
        f"{path}:3: error: each item must be a mapping, got null\n"
        f"{path}:4: error: each item must be a mapping, got an integer\n"
        f"{path}:5: error: each item must be a mapping, got a sequence\n"
        f"{path}:6: error: each item must be a mapping, got a string\n"
        "result: FAILED (6 errors, 0 warnings); rules: 0 enabled, 0 disabled\n"
    ) in out


EMPTY_FILE = "warning: no rules, macros or lists: the file is empty (Falco loads it and adds nothing)"


@pytest.mark.parametrize(
    "content",
    ["", "# only a comment\n", "---\n# a document of comments\n", "[]\n"],
    ids=["empty", "comment", "document-of-comments", "empty-sequence"],
)
def test_check_warns_of_an_empty_rules_file_among_others(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    content: str,
) -> None:
    """Falco loads an empty rules file and adds nothing: a warning naming it, not an error."""
    monkeypatch.setenv("PATH", _path_without_sysdig(tmp_path))
    monkeypatch.delenv(REQUIRE_ENV, raising=False)
    empty = tmp_path / "empty.yaml"
    empty.write_text(content)
    warning = f"{empty}: {EMPTY_FILE}"
    assert main(["rules", "check", "--no-falco", str(PACK), str(empty)]) == 3  # sysdig skipped, no error
    out = capsys.readouterr().out
    assert f"\n{warning}\n" in out
    assert out.rstrip().endswith(
        "result: skipped: sysdig not installed (rules format and expansion passed);"
        " rules: 8 enabled, 0 disabled"
    )
    assert main(["rules", "check", "--no-falco", str(empty)]) == 3
    assert f"\n{warning}\n" in capsys.readouterr().out


def test_check_passes_an_empty_rules_file_as_ok_with_its_warning(
    sysdig: Sysdig, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    empty = tmp_path / "empty.yaml"
    empty.write_text("# nothing yet\n")
    assert main(["rules", "check", "--no-falco", str(PACK), str(empty)]) == 0
    out = capsys.readouterr().out
    assert f"\n{empty}: {EMPTY_FILE}\n" in out
    assert out.rstrip().endswith("result: ok (1 warnings); rules: 8 enabled, 0 disabled")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("", "the rules pack defines no rules"),
        ("# only a comment\n", "the rules pack defines no rules"),
        ("- list: shells\n  items: [sh]\n", "the rules pack defines no rules"),
        (_rule("evt.type = execve") + "  enabled: false\n", "the rules pack defines no enabled syscall rule"),
    ],
    ids=["empty", "comment", "list-only", "all-disabled"],
)
def test_capture_test_of_a_pack_without_rules_says_so(
    sysdig: Sysdig, tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str, message: str
) -> None:
    pack = tmp_path / "empty.yaml"
    pack.write_text(content)
    override = tmp_path / "override.yaml"
    override.write_text("")
    assert main(["rules", "test", "--rules", str(pack), "--scope-override", str(override)]) == 2
    err = capsys.readouterr().err
    assert (
        err == f"serving-guard: error: {pack}: {message} (nor do the overrides {override}): nothing to test\n"
    )
    both = ["--scope-override", str(override), "--override", str(override)]
    assert main(["rules", "test", "--rules", str(pack), *both]) == 2
    assert f"(nor do the overrides {override}, {override})" in capsys.readouterr().err


def test_capture_test_of_an_empty_pack_with_the_default_override(
    sysdig: Sysdig, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pack = tmp_path / "empty.yaml"
    pack.write_text("")
    assert main(["rules", "test", "--rules", str(pack)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(
        f"serving-guard: error: {pack}: the rules pack defines no rules (nor do the overrides "
    )
    assert err.endswith("scope-override.yaml): nothing to test\n")
    assert "event-type resolution" not in err


@pytest.mark.timeout(60)
@pytest.mark.parametrize("kind", ["directory", "dev-zero"])
def test_capture_test_of_a_rules_path_that_is_no_rules_file_says_what_it_is(
    sysdig: Sysdig, tmp_path: Path, capsys: pytest.CaptureFixture[str], kind: str
) -> None:
    if kind == "directory":
        pack = tmp_path / "rules.d"
        pack.mkdir()
        message = "is a directory, not a rules file"
    else:
        pack = tmp_path / "zero.yaml"
        pack.symlink_to("/dev/zero")
        message = "larger than 16 MiB: too large for a rules file (the limit for YAML input)"
    override = tmp_path / "override.yaml"
    override.write_text("")
    assert main(["rules", "test", "--rules", str(pack), "--scope-override", str(override)]) == 2
    assert capsys.readouterr().err == (
        "serving-guard: error: the rules do not load (1 error; see `serving-guard rules check`): "
        f"{pack}: error: {message}\n"
    )


@pytest.mark.timeout(60)
def test_check_of_a_directory_says_it_is_no_rules_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv(REQUIRE_ENV, raising=False)  # the error here needs no sysdig
    assert main(["rules", "check", "--no-falco", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert f"\n{tmp_path}: error: is a directory, not a rules file\n" in out
    assert "result: FAILED (1 errors, 0 warnings)" in out
