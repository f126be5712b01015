"""A scenario's rule must be one the rules make, whichever way they are given: with no --rules, the
checkout's own pack (a misspelt rule in a scenario of one's own was replayed with a made-up output,
exit 0, and simulated for a verify that would wait for an alert no rule makes). A --rules path that
is no file is said to be what it is, naming the flag (replay, simulate and demo alike). And
`simulate --cleanup` checks --workdir as a run does."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from responder.cli import main as cli_main
from responder.errors import UserError
from responder.rulespack.paths import default_pack, display_path
from simulators import alerts
from simulators.alerts import load_rule_specs
from simulators.scenario import SCENARIO_DIR

MISSPELT = "Drift: new executabel in serving pod"
REPLAY = ["replay", "--pod", "ml-serving/x", "--forge"]


def user_error(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    """The one error line of a refusal (exit status 2, no traceback, nothing on stdout)."""
    code = cli_main(argv)
    out, err = capsys.readouterr()
    assert code == 2, out + err
    assert out == "" and "Traceback" not in err and len(err.splitlines()) == 1, err
    return err.strip()


@pytest.fixture
def misspelt(tmp_path: Path) -> Path:
    """A scenarios directory holding drift-exec with its rule misspelt (a scenario of one's own)."""
    directory = tmp_path / "scenarios"
    directory.mkdir()
    text = (SCENARIO_DIR / "drift-exec.yaml").read_text(encoding="utf-8")
    right = 'rule: "Drift: new executable in serving pod"\n'
    assert text.count("\n" + right) == 1
    (directory / "drift-exec.yaml").write_text(text.replace("\n" + right, f'\nrule: "{MISSPELT}"\n'))
    return directory


def _not_in_pack(directory: Path) -> str:
    return (
        f"serving-guard: error: scenario {display_path(directory / 'drift-exec.yaml')}: rule {MISSPELT!r}"
        f" is not in the rules pack ({display_path(default_pack())}): misspelt? A rule of your own goes with"
        " its rules file (--rules FILE), which must define it"
    )


def test_replay_without_rules_refuses_a_rule_the_pack_does_not_make(
    misspelt: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out_file = tmp_path / "alerts.jsonl"
    argv = [*REPLAY, "--file", str(out_file), "--scenarios-dir", str(misspelt), "drift-exec"]
    assert user_error(argv, capsys) == _not_in_pack(misspelt)
    assert not out_file.exists()
    # The shipped scenarios' rules are all in the pack: they replay as before.
    assert cli_main([*REPLAY, "--file", str(out_file), "all"]) == 0
    capsys.readouterr()


def test_replay_without_a_pack_still_falls_back(
    misspelt: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """An install without rules/ has nothing to check against: the generic output, said so."""
    monkeypatch.setattr(alerts, "default_rules_file", lambda: None)
    out_file = tmp_path / "alerts.jsonl"
    argv = [*REPLAY, "--file", str(out_file), "--scenarios-dir", str(misspelt), "drift-exec"]
    assert cli_main(argv) == 0
    assert "note: no rules pack found (use --rules)" in capsys.readouterr().out


def test_simulate_without_rules_refuses_a_rule_the_pack_does_not_make(
    misspelt: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    work = tmp_path / "work"
    work.mkdir()
    argv = ["simulate", "--scenarios-dir", str(misspelt), "drift-exec", "--workdir", str(work)]
    assert user_error(argv, capsys) == _not_in_pack(misspelt)
    assert list(work.iterdir()) == []  # refused before anything ran


def test_simulate_with_rules_refuses_a_rule_they_do_not_make(
    misspelt: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    work = tmp_path / "work"
    work.mkdir()
    pack = str(default_pack())
    argv = [
        "simulate",
        "--scenarios-dir",
        str(misspelt),
        "drift-exec",
        "--workdir",
        str(work),
        "--rules",
        pack,
    ]
    assert user_error(argv, capsys) == (
        f"serving-guard: error: --rules {pack}: no rule {MISSPELT!r} (scenario drift-exec)"
    )
    assert list(work.iterdir()) == []


@pytest.mark.parametrize(
    ("path", "what"),
    [
        ("{tmp}", "is a directory, not a rules file"),
        ("/dev/zero", "is a character device, not a rules file"),
        ("{tmp}/missing.yaml", "does not exist"),
    ],
    ids=["directory", "device", "missing"],
)
def test_a_rules_path_that_is_no_file_is_said_what_it_is_naming_the_flag(
    path: str, what: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rules = path.format(tmp=tmp_path)
    out_file = tmp_path / "alerts.jsonl"
    argv = [*REPLAY, "--file", str(out_file), "drift-exec", "--rules", rules]
    assert user_error(argv, capsys) == f"serving-guard: error: --rules {rules}: {what}"
    argv = ["simulate", "drift-exec", "--workdir", str(tmp_path), "--rules", rules]
    assert user_error(argv, capsys) == f"serving-guard: error: --rules {rules}: {what}"
    # The demo names its flag too (it said "rules file DIR: ..."), before anything runs.
    argv = ["demo", "--no-report", "--workdir", str(tmp_path / "work"), "--rules", rules]
    assert user_error(argv, capsys) == f"serving-guard: error: --rules {rules}: {what}"
    assert not (tmp_path / "work").exists()
    # Without a flag (a caller's own path), the file is named as a rules file.
    with pytest.raises(UserError, match=f"^{re.escape(f'rules file {rules}: {what}')}$"):
        load_rule_specs(rules)


def test_simulate_cleanup_refuses_a_workdir_that_is_not_there(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "nonexistent"
    said = f"serving-guard: error: --workdir {missing} is not a directory"
    assert user_error(["simulate", "--cleanup", "--workdir", str(missing)], capsys) == said
    # As a run says it.
    assert user_error(["simulate", "drift-exec", "--workdir", str(missing)], capsys) == said


def test_the_readme_says_the_checkouts_pack_must_define_the_rules_too() -> None:
    readme = SCENARIO_DIR.parent / "README.md"
    text = " ".join(readme.read_text(encoding="utf-8").split())
    assert (
        "Without `--rules` the checkout's pack (`rules/serving_guard_rules.yaml`) must: a scenario rule it"
        " does not define (a misspelt rule in a scenario of your own) is an error naming the scenario file,"
        " for `simulate` and `demo` too" in text
    )
