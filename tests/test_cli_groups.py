"""`serving-guard config` and `serving-guard rules` (alone, or with --help) list their subcommands,
as the main help's `config check` and `rules test` lead a user to try; a word that is no
subcommand of theirs is still an unknown command."""

from __future__ import annotations

import subprocess
import sys

import pytest

from responder.cli import COMMANDS, main


def _members(group: str) -> list[str]:
    return [f"{' '.join(c.words)}  {c.help}" for c in COMMANDS if c.words[0] == group and len(c.words) > 1]


@pytest.mark.parametrize("group", ["config", "rules"])
@pytest.mark.parametrize("asked", [[], ["--help"], ["-h"], ["help"]])
def test_a_group_alone_or_with_help_lists_its_subcommands(
    capsys: pytest.CaptureFixture[str], group: str, asked: list[str]
) -> None:
    assert main([group, *asked]) == 0
    captured = capsys.readouterr()
    assert captured.err == ""
    lines = [line.strip() for line in captured.out.splitlines()]
    assert lines[0] == f"usage: serving-guard {group} SUBCOMMAND [ARGS...]"
    listed = [" ".join(line.split()) for line in lines[lines.index(f"{group} commands:") + 1 :] if line]
    listed = listed[: len(_members(group))]
    assert listed == [" ".join(member.split()) for member in _members(group)]
    assert len(listed) == 2
    assert lines[-1] == f"Run 'serving-guard {group} SUBCOMMAND --help' for a subcommand's options."
    # Only the group's own: no other command is offered as one of its subcommands.
    assert "serve " not in captured.out and "unknown command" not in captured.out


def test_a_word_that_is_no_subcommand_is_unknown_and_the_group_is_listed(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["config", "chek"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("serving-guard: unknown command 'config chek'\n")
    assert "config check" in captured.err and "config explain" in captured.err
    assert "rules test" not in captured.err


def test_a_subcommand_still_runs_and_an_unknown_command_still_lists_every_command(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["config", "check", "--help"])
    assert exited.value.code == 0
    assert "usage: serving-guard config check" in capsys.readouterr().out
    assert main(["frobnicate"]) == 2
    assert "rules test" in capsys.readouterr().err


def test_the_installed_command_answers_config_help() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "responder", "config", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "config explain" in result.stdout and result.stderr == ""
