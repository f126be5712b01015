"""Bad values for `replay` and `verify` are refused before anything is sent, each in one line naming
the flag: durations (finite, positive; --settle may be 0), --since, and options that do not apply
to the way `replay` delivers (--to, --grpc, --file)."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import cast

import pytest

from responder.cli import main as cli_main
from simulators.falco_grpc_server import FalcoGrpcServer
from simulators.replay import publish_alerts
from tests.responder.test_client_errors import usage_error, user_error

VERIFY = ["verify", "drift-exec", "--run-id", "run-1234", "--responder", "http://127.0.0.1:1"]
REPLAY = ["replay", "drift-exec", "--pod", "ml-serving/x", "--forge"]


@pytest.mark.parametrize(
    ("flag", "value", "bound"),
    [
        ("--timeout", "nan", "more than 0"),
        ("--timeout", "inf", "more than 0"),
        ("--timeout", "-1", "more than 0"),
        ("--timeout", "0", "more than 0"),
        ("--interval", "nan", "more than 0"),
        ("--interval", "0", "more than 0"),
        ("--settle", "nan", "0 or more"),
        ("--settle", "-1", "0 or more"),
    ],
)
def test_verify_durations_must_be_finite_seconds(
    flag: str, value: str, bound: str, capsys: pytest.CaptureFixture[str]
) -> None:
    line = usage_error([*VERIFY, f"{flag}={value}"], capsys)
    assert (
        line == f"serving-guard verify: error: argument {flag}: {value!r}: seconds must be finite and {bound}"
    )


def test_verify_duration_that_is_not_a_number(capsys: pytest.CaptureFixture[str]) -> None:
    line = usage_error([*VERIFY, "--interval", "soon"], capsys)
    assert line == "serving-guard verify: error: argument --interval: 'soon' is not a number of seconds"


@pytest.mark.parametrize("value", ["nan", "inf", "-1", "0"])
def test_replay_timeout_must_be_positive_seconds(value: str, capsys: pytest.CaptureFixture[str]) -> None:
    line = usage_error([*REPLAY, "--to", "http://127.0.0.1:1", f"--timeout={value}"], capsys)
    problem = f"{value!r}: seconds must be finite and more than 0"
    assert line == f"serving-guard replay: error: argument --timeout: {problem}"


@pytest.mark.parametrize("since", ["99999999999999999999d", "2262-05-01T00:00:00Z"])
def test_verify_since_out_of_range_is_refused(since: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert user_error([*VERIFY, "--since", since], capsys) == (
        f"serving-guard: error: --since {since}: out of range (1970-01-01T00:00:00Z to 2262-04-11T23:47:16Z)"
    )
    assert user_error([*VERIFY, "--since", "yesterday"], capsys) == (
        "serving-guard: error: --since must be like 15m, 2h, 3d, epoch nanoseconds or an RFC 3339 time, "
        "got 'yesterday'"
    )


@pytest.mark.parametrize(
    ("target", "extra", "problem"),
    [
        (["--file", "-"], ["--ca", "ca.pem"], "--ca applies to --to only, not to --file"),
        (
            ["--file", "-"],
            ["--cert", "c.pem", "--key", "k.pem"],
            "--cert applies to --to only, not to --file",
        ),
        (["--file", "-"], ["--token-file", "t"], "--token-file applies to --to only, not to --file"),
        (
            ["--file", "-"],
            ["--grpc-cert", "c.pem"],
            "--grpc-cert applies to --grpc on TCP only, not to --file",
        ),
        (["--file", "-"], ["--timeout", "5"], "--timeout applies to --to and --grpc only, not to --file"),
        (
            ["--to", "http://127.0.0.1:1"],
            ["--grpc-client-ca", "ca.pem"],
            "--grpc-client-ca applies to --grpc on TCP only, not to --to",
        ),
        (["--grpc", "127.0.0.1:1"], ["--ca", "ca.pem"], "--ca applies to --to only, not to --grpc on TCP"),
        (
            ["--grpc", "unix:///tmp/sg-never.sock"],
            ["--grpc-key", "k.pem"],
            "--grpc-key applies to --grpc on TCP only, not to --grpc on a unix socket",
        ),
    ],
)
def test_replay_refuses_options_its_target_would_ignore(
    target: list[str], extra: list[str], problem: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert user_error([*REPLAY, *target, *extra], capsys) == f"serving-guard: error: {problem}"


def test_replay_to_a_file_without_foreign_options_still_writes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out_file = tmp_path / "alerts.jsonl"
    assert cli_main([*REPLAY, "--file", str(out_file), "--run-id", "run-1234"]) == 0
    assert out_file.read_bytes().count(b"\n") >= 1
    capsys.readouterr()


class _Waiter:
    """Stands in for the gRPC server: records how long publish_alerts waits for the consumer (its
    lock refuses a wait beyond threading.TIMEOUT_MAX with an OverflowError)."""

    address = "unix:///test"

    def __init__(self) -> None:
        self.waited: float | None = None

    def publish_many(self, alerts: object) -> None:
        pass

    def wait_drained(self, timeout: float) -> bool:
        self.waited = timeout
        return True

    def pending(self) -> int:
        return 0


def test_a_long_grpc_timeout_waits_as_long_as_threading_allows() -> None:
    waiter = _Waiter()
    assert publish_alerts(cast(FalcoGrpcServer, waiter), [], 1e12) == []
    assert waiter.waited == threading.TIMEOUT_MAX
    assert publish_alerts(cast(FalcoGrpcServer, waiter), [], 5.0) == []
    assert waiter.waited == 5.0
