"""Fixes for the on-call review (/work/notes/review-oncall.md), findings 5 and 8.

- 5: text logs escape what a terminal would reorder or hide (bidi overrides, zero-width and other
  format characters, fillers such as U+3164) as the audit does: with the audit's escaper.
- 8: config numbers (.nan, 1e99) and ``audit --since -5m`` say what is wrong. (The HTTP input's chunk
  sizes: tests/ingest/test_httpserver_chunk_size.py.)
"""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path

import pytest
import yaml

from responder.cli import main
from responder.config import load_config_text
from responder.errors import UserError
from responder.logs import escape_text, setup_logging
from responder.terminal import printable

# What a forged alert can put in a namespace or pod name to reorder or hide what a terminal shows:
# RIGHT-TO-LEFT OVERRIDE, ZERO WIDTH SPACE, LEFT-TO-RIGHT ISOLATE, WORD JOINER, a BOM, HANGUL
# FILLER, BRAILLE PATTERN BLANK, a variation selector, and a TAG character (Cf, astral).
HIDING = "ml\u202e/pod\u200b\u2066x\u2060\ufeff\u3164\u2800\ufe0f\U000e0041"
ESCAPED = "ml\\u202e/pod\\u200b\\u2066x\\u2060\\ufeff\\u3164\\u2800\\ufe0f\\U000e0041"


def logged(fmt: str, message: str, **extra: object) -> str:
    stream = io.StringIO()
    setup_logging("info", fmt, stream)
    logging.getLogger("serving_guard.test").warning("%s", message, extra=extra)
    return stream.getvalue()


# -- finding 5: text logs ------------------------------------------------------------------------


def test_text_logs_escape_bidi_zero_width_and_filler_characters_in_fields_and_message() -> None:
    text = logged("text", f"incident decided {HIDING}", namespace=HIDING, pod="vllm-0")
    assert text == (
        f"warning serving_guard.test: incident decided {ESCAPED} namespace={ESCAPED} pod=vllm-0\n"
    )


def test_text_logs_escape_as_the_audit_does() -> None:
    """One escaper for both: a value reads the same in the log and in `serving-guard audit`."""
    value = HIDING + "\x1b]0;title\x07\n\t\x85\u2028"
    assert printable(value) == ESCAPED + "\\x1b]0;title\\x07\\n\\t\\x85\\u2028"
    assert escape_text(value) == printable(value)


@pytest.mark.parametrize("char", ["\u202e", "\u200b", "\u3164", "\u115f", "\uffa0", "\u034f", "\U000e0100"])
def test_every_hiding_character_is_escaped_in_a_text_log(char: str) -> None:
    text = logged("text", "m", pod=f"a{char}b")
    assert char not in text and f"pod=a{char.encode('unicode_escape').decode()}b" in text


def test_text_logs_keep_ordinary_text_beyond_ascii() -> None:
    assert logged("text", "incident decided", rule="Shell in serving pod — ü 日本", pod="vllm-0") == (
        "warning serving_guard.test: incident decided rule=Shell in serving pod — ü 日本 pod=vllm-0\n"
    )


def test_json_logs_keep_the_value_exactly() -> None:
    """JSON logs write them raw (ensure_ascii=False; only C0, DEL, C1, U+2028/9 are escaped): a JSON
    reader gets the exact value."""
    entry = json.loads(logged("json", "m", namespace=HIDING))
    assert entry["namespace"] == HIDING


# -- finding 8: config numbers -------------------------------------------------------------------


def config_error(text: str) -> str:
    with pytest.raises(UserError) as refused:
        load_config_text(text)
    return str(refused.value)


@pytest.mark.parametrize("nan", [".nan", ".NaN", ".NAN"])
def test_nan_is_said_to_be_not_a_finite_number(nan: str) -> None:
    said = config_error(f"dedupe:\n  window_seconds: {nan}\n")
    assert "<config>:2: dedupe.window_seconds: must be a finite number, not nan" in said
    assert "at most" not in said


def test_an_exponent_yaml_reads_as_text_gets_its_yaml_spelling() -> None:
    said = config_error("dedupe:\n  window_seconds: 1e99\n")
    assert (
        "dedupe.window_seconds: must be a number, not '1e99' (YAML reads 1e99 as text: write 1.0e+99)" in said
    )


@pytest.mark.parametrize(
    ("value", "spelled"),
    [("1e99", "1.0e+99"), ("1.0e99", "1.0e+99"), ("5E-1", "5.0e-1"), ("-1e3", "-1.0e+3"), (".5e3", ".5e+3")],
)
def test_the_spelling_offered_is_one_yaml_reads_as_that_number(value: str, spelled: str) -> None:
    assert isinstance(yaml.safe_load(value), str)  # why the hint is needed
    assert yaml.safe_load(spelled) == float(value)
    said = config_error(f"cluster:\n  request_timeout_seconds: {value}\n")
    assert f"must be a number, not '{value}' (YAML reads {value} as text: write {spelled})" in said


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("'300'", "must be a number, not '300'"),
        ("abc", "must be a number, not 'abc'"),
        ("inf", "must be a number, not 'inf'"),
        ("1e999", "must be a number, not '1e999'"),
        ("true", "must be a number, not true"),
        (".inf", "must be at most 86400.0, not inf"),
        ("-1", "must be more than 0.0, not -1"),
        ("1.0e+99", "must be at most 86400.0, not 1e+99"),
    ],
)
def test_other_number_messages_are_unchanged(value: str, reason: str) -> None:
    said = config_error(f"dedupe:\n  window_seconds: {value}\n")
    assert said.endswith(f"<config>:2: dedupe.window_seconds: {reason}"), said


# -- finding 8: audit --since -5m ---------------------------------------------------------------


def run_audit(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    try:
        code = main(["audit", *args])
    except SystemExit as exc:  # argparse's own refusal
        code = int(exc.code or 0)
    return code, capsys.readouterr().err


@pytest.mark.parametrize("form", [["--since", "-5m"], ["--since=-5m"]])
def test_since_with_a_minus_sign_gets_the_since_explanation(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], form: list[str]
) -> None:
    code, err = run_audit(capsys, "--journal", str(tmp_path / "journal.db"), *form)
    assert code == 2
    assert "expected one argument" not in err
    assert err == (
        "serving-guard: error: --since must be like 15m, 2h, 3d, epoch nanoseconds or an RFC 3339"
        " time, got '-5m': how far back is written without a minus sign (--since 5m)\n"
    )


@pytest.mark.parametrize("value", ["-1700000000", "-2024-01-01T00:00:00Z", "-.5x"])
def test_other_values_starting_with_a_minus_get_the_since_form(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], value: str
) -> None:
    code, err = run_audit(capsys, "--journal", str(tmp_path / "journal.db"), "--since", value)
    assert code == 2
    assert err == (
        "serving-guard: error: --since must be like 15m, 2h, 3d, epoch nanoseconds or an RFC 3339"
        f" time, got {value!r}\n"
    )


def test_a_missing_since_value_is_still_argparses_refusal(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, err = run_audit(capsys, "--journal", str(tmp_path / "journal.db"), "--since", "--pod", "ml/p")
    assert code == 2 and "argument --since: expected one argument" in err
