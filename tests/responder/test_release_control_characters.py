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


def by_hand_argv(command: str, tmp_path: Path) -> list[str]:
    """``command`` (release, quarantine or block) as Slack gives it, its reason filled in; the
    kubeconfig does not exist, so reaching the cluster would be another error."""
    config = tmp_path / "config.yaml"
    config.write_text("logging: {level: error}\n", encoding="utf-8")
    argv = [command, "-n", "ml-serving", "vllm-0", "--reason", "looked at it", "--config", str(config)]
    argv += ["--kubeconfig", str(tmp_path / "missing")]
    return [*argv, "--address", "203.0.113.7"] if command == "block" else argv


@pytest.mark.parametrize("command", ["release", "quarantine", "block"])
def test_a_by_still_holding_slacks_placeholder_is_refused_before_anything_is_done(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], command: str
) -> None:
    for by in ("<you>", "me <you>"):
        assert main([*by_hand_argv(command, tmp_path), "--by", by]) == 2
        captured = capsys.readouterr()
        assert captured.out == ""
        assert captured.err == (
            f"serving-guard: error: --by {by!r}: replace <you> with your own name (it is recorded as who"
            " acted); nothing was done\n"
        )


@pytest.mark.parametrize("command", ["release", "quarantine", "block"])
def test_inside_a_pod_by_must_be_given(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, command: str
) -> None:
    """Run with kubectl exec in the responder's pod, USER@host would record the pod's account."""
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.96.0.1")
    monkeypatch.setattr("getpass.getuser", lambda: "nonroot")
    assert main(by_hand_argv(command, tmp_path)) == 2
    err = capsys.readouterr().err
    assert err == (
        "serving-guard: error: --by is required inside a Kubernetes pod: USER@host here names the pod's"
        " account, not you; pass --by 'your name' (with kubectl exec: --by \"$USER\"); nothing was done\n"
    )
    # Given, it is taken: the command goes on to the cluster (here, a kubeconfig that is not there).
    assert main([*by_hand_argv(command, tmp_path), "--by", "carol"]) == 2
    assert "--by" not in capsys.readouterr().err


@pytest.mark.parametrize("command", ["release", "quarantine", "block"])
def test_the_by_hand_commands_say_what_namespace_and_by_are(
    capsys: pytest.CaptureFixture[str], command: str
) -> None:
    with pytest.raises(SystemExit):
        main([command, "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--namespace NAMESPACE, -n NAMESPACE the pods' namespace" in text
    assert (
        "--by BY who acts, recorded as who (required inside a Kubernetes pod; elsewhere default: USER@host)"
        in text
    )


@pytest.mark.parametrize("command", ["release", "quarantine", "block"])
def test_a_reason_still_holding_slacks_placeholder_is_refused_before_anything_is_done(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], command: str
) -> None:
    """Slack's commands say --reason '<why>' (release: '<why it is safe>'): pasted as is, the
    journal, the Event and the pod would record the placeholder as the reason."""
    argv = by_hand_argv(command, tmp_path)
    at = argv.index("--reason") + 1
    for reason, placeholder in (
        ("<why>", "<why>"),
        ("<why it is safe>", "<why it is safe>"),
        ("x <why>", "<why>"),
    ):
        assert main([*argv[:at], reason, *argv[at + 1 :], "--by", "bob"]) == 2
        captured = capsys.readouterr()
        assert captured.out == ""
        assert captured.err == (
            f"serving-guard: error: --reason {reason!r}: replace {placeholder} with the reason (it is"
            " recorded on the pod, in the Event and the journal); nothing was done\n"
        )
