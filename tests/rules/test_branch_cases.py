"""Review of 1aeb985, M3: each branch of the reverse-shell rule is an evasion case of its own. The
recorded reverse shells fire on several branches at once (the command line, and the socket it
duplicates onto stdio), so switching one branch off used to leave every recording alerting."""

from __future__ import annotations

from pathlib import Path

import pytest

from responder.rulespack.sysdig import Sysdig

from .conftest import failing_cases

pytestmark = pytest.mark.timeout(120)

NEVER = "  condition: (evt.num = 0)\n  override:\n    condition: replace\n"
DUP_GROUP = "a socket duplicated onto stdio by a program whose command line shows nothing is a reverse shell"
COMMAND_GROUP = "a reverse-shell command line is a reverse shell at its start"


def test_switching_off_the_dup2_branch_fails(sysdig: Sysdig, tmp_path: Path) -> None:
    tuning = f"- macro: serving_guard_socket_onto_stdio\n{NEVER}"
    assert failing_cases(sysdig, tmp_path, tuning, "a ") == [
        f"{DUP_GROUP}[b1 python3 started as /usr/bin/x]",
        f"{DUP_GROUP}[b2 bash started as /usr/bin/x]",
    ]


def test_the_dup2_branch_needs_a_network_socket(sysdig: Sysdig, tmp_path: Path) -> None:
    # Any fd duplicated onto stdio would fire on b2's `>&3` of a file as well: 2x, not 1x.
    tuning = (
        "- macro: serving_guard_socket_onto_stdio\n"
        "  condition: evt.type in (dup, dup2, dup3) and evt.rawres in (0, 1, 2)\n"
        "  override:\n    condition: replace\n"
    )
    assert failing_cases(sysdig, tmp_path, tuning, DUP_GROUP) == [
        f"{DUP_GROUP}[b2 bash started as /usr/bin/x]"
    ]


def test_switching_off_the_command_line_branch_fails(sysdig: Sysdig, tmp_path: Path) -> None:
    tuning = f"- macro: serving_guard_reverse_shell_command\n{NEVER}"
    assert failing_cases(sysdig, tmp_path, tuning, COMMAND_GROUP) == [
        f"{COMMAND_GROUP}[/dev/tcp redirection as recorded]",
        f"{COMMAND_GROUP}[bash -i]",
        f"{COMMAND_GROUP}[nc -e as recorded]",
    ]


@pytest.mark.parametrize(
    ("clause", "case"),
    [
        ('proc.cmdline contains "/dev/tcp/" or ', "/dev/tcp redirection as recorded"),
        ('(serving_guard_shell and proc.args in ("-i", "-il", "-li"))\n     or ', "bash -i"),
        ('proc.args contains "-e " or ', "nc -e as recorded"),
    ],
)
def test_each_command_line_branch_is_isolated(sysdig: Sysdig, tmp_path: Path, clause: str, case: str) -> None:
    text = (Path(__file__).resolve().parents[2] / "rules" / "serving_guard_rules.yaml").read_text()
    start = text.index("- macro: serving_guard_reverse_shell_command")
    condition = text[start:].split("condition: >\n", 1)[1].split("\n\n", 1)[0]
    assert clause in condition
    tuning = (
        "- macro: serving_guard_reverse_shell_command\n  condition: >\n"
        + condition.replace(clause, "", 1)
        + "\n  override:\n    condition: replace\n"
    )
    assert failing_cases(sysdig, tmp_path, tuning, COMMAND_GROUP) == [f"{COMMAND_GROUP}[{case}]"]
