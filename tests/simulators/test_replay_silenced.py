"""replay says which of its alerts an exception of the rules as loaded (the pack and the user's
tuning) would keep Falco from sending: sent all the same, a replay proves the responder, not
detection (review-replay L5)."""

from __future__ import annotations

from pathlib import Path

import pytest

from responder.cli import main
from responder.rulespack.expand import Origin, RuleSet, RuleState
from responder.rulespack.paths import default_pack
from responder.rulespack.rulesfile import ExceptionSpec, RulesFile
from simulators.silenced import ExceptionRows, Untold, exception_rows, judge, silenced_by

ORIGIN = Origin(RulesFile("tuning.yaml", ""), 1, 0)

QUIET_SERVING_USER = """\
- rule: Shell in serving pod
  exceptions:
    - name: quiet_serving_user
      fields: [user.name, proc.pname]
      comps: ["=", pmatch]
      values: [[{user}, [/usr/bin, serving-guard]]]
  override:
    exceptions: append
"""


def _replay(tmp_path: Path, capsys: pytest.CaptureFixture[str], user: str) -> str:
    tuning = tmp_path / "tuning.yaml"
    tuning.write_text(QUIET_SERVING_USER.format(user=user))
    out_file = tmp_path / "alerts.jsonl"
    argv = ["replay", "shell-in-serving-pod", "--pod", "ml-serving/x-0", "--forge", "--file", str(out_file)]
    assert main([*argv, "--rules", str(default_pack()), str(tuning)]) == 0
    assert out_file.read_text().count("\n") == 2  # sent all the same
    return capsys.readouterr().out


def test_replay_says_an_alert_the_users_tuning_would_silence(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = _replay(tmp_path, capsys, "model-server")
    for step in (1, 2):
        assert (
            f"  note: shell-in-serving-pod alert {step} (Shell in serving pod): Falco would not send it: the"
            f" exception 'quiet_serving_user' ({tmp_path / 'tuning.yaml'}:3) holds for its"
            " user.name=model-server, proc.pname=serving-guard; sent all the same (a replay proves the"
            " responder, not detection)"
        ) in out, out
    # An exception of another user silences none of them: nothing said.
    assert "Falco would not send it" not in _replay(tmp_path, capsys, "root")


def test_what_cannot_be_told_from_the_alert_is_never_said_to_silence_it() -> None:
    rows = (
        ExceptionRows("a", ("user.name", "fd.name"), ("=", "="), (("model-server", "/x"),), ("f:1",)),
        ExceptionRows("b", ("user.name",), ("bcontains",), (("model-server",),), ("f:2",)),
        ExceptionRows("c", ("proc.name",), ("in",), ((("sh", "bash"),),), ("f:3",)),
    )
    # fd.name is not in the alert; bcontains is not evaluated here: neither holds.
    assert silenced_by({"user.name": "model-server"}, rows) is None
    # ... but both may: said, each exception once (its first row that may), never as silenced.
    verdict = judge({"user.name": "model-server"}, rows)
    assert verdict.silenced is None
    assert [untold.text() for untold in verdict.untold] == [
        "exception 'a' (f:1) holds for its user.name=model-server, and cannot be judged on fd.name (not in"
        " the alert)",
        "exception 'b' (f:2) cannot be judged on user.name (bcontains: not evaluated here)",
        "exception 'c' (f:3) cannot be judged on proc.name (not in the alert)",
    ]
    # A field the alert fails rules the row out, whatever else cannot be told.
    assert judge({"user.name": "root", "proc.name": "zsh"}, rows).untold == (
        Untold("b", "f:2", (), ("user.name (bcontains: not evaluated here)",)),
    )
    found = silenced_by({"user.name": "model-server", "proc.name": "bash"}, rows)
    assert found is not None and found.text() == "exception 'c' (f:3) holds for its proc.name=bash"
    assert silenced_by({"proc.name": "zsh"}, rows) is None


def test_exception_values_are_read_as_falco_reads_them() -> None:
    """review-session-50 M1, M2: libc's glob negation, list names standing for their items (in a
    single-field exception and inside an inline list), quotes that are not part of an item, commas
    inside quotes."""
    # As RuleSet.list_items holds them: nested lists spliced in.
    lists = {"my_shells": ["sh", "'bash'"], "more_shells": ["sh", "'bash'", "zsh"]}

    def rows_of(exception: ExceptionSpec) -> tuple[ExceptionRows, ...]:
        rule = RuleState("r", 0, ORIGIN, "syscall", "", "", "", "", [], [exception])
        return exception_rows(RuleSet(files=[], list_items=lists), rule)

    negated = rows_of(ExceptionSpec("g", ("proc.exepath",), ("glob",), (("/usr/bin/[^b]*",),), 3))
    assert silenced_by({"proc.exepath": "/usr/bin/sh"}, negated) is not None
    assert silenced_by({"proc.exepath": "/usr/bin/bash"}, negated) is None
    named = rows_of(ExceptionSpec("n", "proc.name", "in", ("more_shells",), 4))
    assert [silenced_by({"proc.name": name}, named) is not None for name in ("sh", "bash", "zsh", "ls")] == [
        True,
        True,
        True,
        False,
    ]
    inline = rows_of(ExceptionSpec("i", ("proc.name",), ("in",), (("(my_shells, 'a, b')",),), 5))
    assert silenced_by({"proc.name": "bash"}, inline) is not None
    assert silenced_by({"proc.name": "a, b"}, inline) is not None
    assert silenced_by({"proc.name": "a"}, inline) is None


def test_the_note_names_the_file_whose_values_hold(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """review-session-50 L: an exception defined in one file and given values by another is named
    at the item whose values hold for the alert, not at every file that wrote some."""
    defined = tmp_path / "defined.yaml"
    defined.write_text(QUIET_SERVING_USER.format(user="root"))
    appended = tmp_path / "appended.yaml"
    appended.write_text(
        "- rule: Shell in serving pod\n"
        "  exceptions:\n"
        "    - name: quiet_serving_user\n"
        "      values: [[model-server, [serving-guard]]]\n"
        "  append: true\n"
    )
    out_file = tmp_path / "alerts.jsonl"
    argv = ["replay", "shell-in-serving-pod", "--pod", "ml-serving/x-0", "--forge", "--file", str(out_file)]
    assert main([*argv, "--rules", str(default_pack()), str(defined), str(appended)]) == 0
    out = capsys.readouterr().out
    assert f"exception 'quiet_serving_user' ({appended}:3) holds for its user.name=model-server" in out, out
    assert str(defined) not in out.split("Falco would not send it", 1)[1].split("\n", 1)[0]


def test_replay_says_an_alert_an_exception_may_silence(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An exception on a field the alert does not carry (fd.name: a shell alert has none) whose other
    fields hold may keep Falco from sending it: said, never as "would not send" (review-session-50:
    it was skipped without a word)."""
    tuning = tmp_path / "tuning.yaml"
    tuning.write_text(
        "- rule: Shell in serving pod\n"
        "  exceptions:\n"
        "    - name: quiet_probe\n"
        "      fields: [user.name, fd.name]\n"
        '      comps: ["=", startswith]\n'
        "      values: [[root, /tmp/other], [model-server, /tmp/probe]]\n"
        "  override:\n"
        "    exceptions: append\n"
    )
    out_file = tmp_path / "alerts.jsonl"
    argv = ["replay", "shell-in-serving-pod", "--pod", "ml-serving/x-0", "--forge", "--file", str(out_file)]
    assert main([*argv, "--rules", str(default_pack()), str(tuning)]) == 0
    out = capsys.readouterr().out
    assert out_file.read_text().count("\n") == 2  # sent all the same
    for step in (1, 2):
        assert (
            f"  note: shell-in-serving-pod alert {step} (Shell in serving pod): Falco may not send it: the"
            f" exception 'quiet_probe' ({tuning}:3) holds for its user.name=model-server, and cannot be"
            " judged on fd.name (not in the alert); sent all the same (check it live: serving-guard"
            " simulate shell-in-serving-pod)"
        ) in out, out
    assert "Falco would not send it" not in out


def test_the_packs_own_exceptions_are_not_said_to_maybe_silence_a_replay(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The pack's rows on fields no scenario alert carries (probes, init containers) are its
    definition's, proven on the captures by `rules test`: a replay of every scenario says nothing of
    them; the same row appended by a tuning is said."""
    out_file = tmp_path / "alerts.jsonl"
    argv = ["replay", "all", "--pod", "ml-serving/x-0", "--forge", "--file", str(out_file)]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "Falco may not send it" not in out and "Falco would not send it" not in out, out
    tuning = tmp_path / "tuning.yaml"
    tuning.write_text(
        "- rule: Shell in serving pod\n"
        "  exceptions:\n"
        "    - name: liveness_probe\n"
        "      values: [[true]]\n"
        "  append: true\n"
    )
    assert main([*argv, "--rules", str(default_pack()), str(tuning)]) == 0
    out = capsys.readouterr().out
    assert (
        f"exception 'liveness_probe' ({tuning}:3) cannot be judged on proc.is_container_liveness_probe"
        " (not in the alert)"
    ) in out, out
