"""The senders' token file: at most two tokens (a rotation's old and new), and a token short enough
to guess is warned of by `serve` at start and by `config check` (review-oncall 3: three one-character
lines were taken, and `Bearer c` could send alerts that quarantine pods)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import yaml

from responder.cli import main
from responder.config import SecretRef
from responder.errors import UserError
from responder.ingest.http import TOKEN_REFRESH_SECONDS, TokenSource
from tests.helpers import FakeClock

LONG = "9c1e5b2d8f4a6c0e9b7d7f3a9c1e5b2d8f4a"


def _token_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "token"
    path.write_text(text)
    return path


def test_a_file_of_three_tokens_is_refused_naming_it(tmp_path: Path) -> None:
    path = _token_file(tmp_path, "a\nb\nc\n")
    with pytest.raises(UserError) as refused:
        TokenSource(SecretRef(file=str(path)))
    assert str(refused.value) == (
        f"inputs.http.token: {path} holds 3 tokens (one per line): at most 2, the old and the new one"
        " during a rotation"
    )


def test_a_third_token_added_later_keeps_the_tokens_read_before(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = _token_file(tmp_path, f"{LONG}\n")
    clock = FakeClock()
    source = TokenSource(SecretRef(file=str(path)), clock=lambda: clock() / 1e9)
    path.write_text(f"{LONG}\nb{LONG}\nc{LONG}\n")
    clock.advance(TOKEN_REFRESH_SECONDS + 1)
    with caplog.at_level(logging.WARNING, logger="serving_guard"):
        assert source.current() == (LONG.encode(),)
    assert f"{path} holds 3 tokens" in caplog.text and "keeping the previous token" in caplog.text


@pytest.mark.parametrize(
    ("text", "said"),
    [
        ("c\n", "its token is"),
        (f"{LONG}\n\nshort\n", "one of its tokens is"),
    ],
)
def test_a_short_token_is_said_to_be_guessable(tmp_path: Path, text: str, said: str) -> None:
    path = _token_file(tmp_path, text)
    assert TokenSource(SecretRef(file=str(path))).short() == (
        f"inputs.http.token: {said} shorter than 32 characters ({path}): anyone who guesses it can send"
        " alerts and have pods quarantined; use a random one (`openssl rand -hex 32`)"
    )
    assert TokenSource(SecretRef(file=str(_token_file(tmp_path, f"{LONG}\n")))).short() is None


def test_config_check_warns_of_a_short_token_and_refuses_a_third(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _token_file(tmp_path, "c\n")
    config = tmp_path / "config.yaml"
    http = {"listen": "127.0.0.1:0", "token": {"file": str(path)}}
    config.write_text(yaml.safe_dump({"inputs": {"http": http}, "journal": {"path": str(tmp_path / "j.db")}}))
    assert main(["config", "check", str(config)]) == 0
    assert "warning: inputs.http.token: its token is shorter than 32 characters" in capsys.readouterr().err
    path.write_text("a\nb\nc\n")
    assert main(["config", "check", str(config)]) == 1  # serve refuses it: a finding, where it is
    err = capsys.readouterr().err
    assert f"{config}:4: inputs.http.token: {path} holds 3 tokens (one per line): at most 2" in err


def test_a_short_token_a_rotation_brings_in_is_warned_of_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = _token_file(tmp_path, f"{LONG}\n")
    clock = FakeClock()
    source = TokenSource(SecretRef(file=str(path)), clock=lambda: clock() / 1e9)
    path.write_text(f"{LONG}\nabc\n")
    with caplog.at_level(logging.WARNING, logger="serving_guard"):
        for _ in range(3):
            clock.advance(TOKEN_REFRESH_SECONDS + 1)
            assert source.current() == (LONG.encode(), b"abc")
    assert caplog.text.count("one of its tokens is shorter than 32 characters") == 1
