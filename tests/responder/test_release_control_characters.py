"""`release --by/--reason` are recorded on the pod, in an Event and in the journal, and echoed to the
terminal: control characters (a terminal escape sequence, a line break that forges a line) are
refused before anything is read or changed, and the error does not echo them raw."""

from __future__ import annotations

from pathlib import Path

import pytest

from responder.cli import main


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        (["--by", "x\x1b]0;pwn\x07"], "--by: control characters are not allowed (U+001B at character 2)"),
        (["--by", "carol\r"], "--by: control characters are not allowed (U+000D at character 6)"),
        (["--by", "\x7fcarol"], "--by: control characters are not allowed (U+007F at character 1)"),
        (["--reason", "ok\x9b2J"], "--reason: control characters are not allowed (U+009B at character 3)"),
        (
            ["--reason", "benign\nforged line"],
            "--reason: control characters are not allowed (U+000A at character 7)",
        ),
        (["--reason", "a\tb"], "--reason: control characters are not allowed (U+0009 at character 2)"),
    ],
    ids=["osc-title", "carriage-return", "delete", "c1-csi", "newline", "tab"],
)
def test_release_refuses_control_characters_before_touching_anything(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], flags: list[str], expected: str
) -> None:
    # The kubeconfig does not exist: reaching it would be a different error.
    argv = ["release", "-n", "ml-serving", "vllm-0", "--reason", "benign", "--by", "carol"]
    assert main([*argv, *flags, "--kubeconfig", str(tmp_path / "missing")]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == f"serving-guard: error: {expected}\n"


def test_release_refuses_a_default_by_with_control_characters(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("getpass.getuser", lambda: "ev\x1b[2Jil")
    argv = [
        "release",
        "-n",
        "ml-serving",
        "vllm-0",
        "--reason",
        "x",
        "--kubeconfig",
        str(tmp_path / "missing"),
    ]
    assert main(argv) == 2
    assert capsys.readouterr().err == (
        "serving-guard: error: the default --by (USER@host; set --by): control characters are not allowed "
        "(U+001B at character 3)\n"
    )


def test_printable_text_beyond_ascii_is_still_recorded() -> None:
    from responder.commands.by_hand import recorded_text

    assert recorded_text("--by", "zoë@host") == "zoë@host"
    assert recorded_text("--reason", "benign — verified by on-call ✓") == "benign — verified by on-call ✓"
