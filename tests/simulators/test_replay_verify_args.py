"""Bad values for `replay` and `verify` are refused before anything is sent, each in one line naming
the flag: durations (finite, above 0; --settle too: a control silent for no time proves nothing),
--since, --steps, options that do not apply to the way `replay` delivers (--to, --grpc, --file) or
to --forge, and a --rules file that does not define a rule the scenarios send. `verify` waits
between polls no longer than --timeout leaves."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import cast

import pytest
from aiohttp import web

from responder.audit.answer import AuditEntry
from responder.cli import main as cli_main
from responder.client import ResponderClient
from responder.rulespack.paths import default_pack
from simulators import alerts
from simulators.alerts import load_rule_specs
from simulators.falco_grpc_server import FalcoGrpcServer
from simulators.replay import publish_alerts
from simulators.scenario import load_scenarios
from simulators.verify import Expectation, poll
from tests.helpers import loopback_server
from tests.responder.test_client_errors import SINCE_RANGE, usage_error, user_error

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
        ("--settle", "nan", "more than 0"),
        ("--settle", "-1", "more than 0"),
        ("--settle", "0", "more than 0"),
    ],
)
def test_verify_durations_must_be_finite_seconds(
    flag: str, value: str, bound: str, capsys: pytest.CaptureFixture[str]
) -> None:
    line = usage_error([*VERIFY, f"{flag}={value}"], capsys)
    assert (
        line == f"serving-guard verify: error: argument {flag}: {value!r}: seconds must be finite and {bound}"
    )


@pytest.mark.parametrize(
    ("steps", "problem"),
    [
        ("drift-exec", "use SCENARIO=N,N... with a scenario named on the command line"),
        ("shell-in-serving-pod=1", "use SCENARIO=N,N... with a scenario named on the command line"),
        ("drift-exec=0", "'0' is not a step of drift-exec (1 to 3)"),
        ("drift-exec=4", "'4' is not a step of drift-exec (1 to 3)"),
        ("drift-exec=1,x", "'x' is not a step of drift-exec (1 to 3)"),
        ("drift-exec=", "'' is not a step of drift-exec (1 to 3)"),
        ("benign-serving=1", "benign-serving is the control: it has no steps to find alerts for"),
    ],
)
def test_verify_steps_are_steps_of_the_scenarios_named(
    steps: str, problem: str, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [*VERIFY[:2], "benign-serving", *VERIFY[2:], "--steps", steps]
    assert user_error(argv, capsys) == f"serving-guard: error: --steps {steps!r}: {problem}"
    twice = [*VERIFY, "--steps", "drift-exec=1", "--steps", "drift-exec=2"]
    assert (
        user_error(twice, capsys)
        == "serving-guard: error: --steps 'drift-exec=2': drift-exec given more than once"
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
        f"serving-guard: error: --since {since!r}: out of range {SINCE_RANGE}"
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


@pytest.mark.parametrize(
    ("extra", "flag"),
    [
        (["--kubeconfig", "kubeconfig"], "--kubeconfig"),
        (["--kubeconfig", ""], "--kubeconfig"),
        (["--context", "prod"], "--context"),
        (["--container", "server"], "--container"),
    ],
)
def test_replay_forge_refuses_the_options_for_reading_the_pod(
    tmp_path: Path, extra: list[str], flag: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """--forge reads no pod: a kubeconfig, context or container given with it would be ignored."""
    out_file = tmp_path / "alerts.jsonl"
    line = user_error([*REPLAY, "--file", str(out_file), *extra], capsys)
    assert line == f"serving-guard: error: {flag} applies to reading the pod only, not to --forge"
    assert not out_file.exists()


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


# -- verify: the wait between polls ends at --timeout ------------------------------------------------


@pytest.fixture
async def empty_trail() -> AsyncIterator[tuple[str, list[float]]]:
    """A loopback responder whose audit trail is empty; the times it was asked at."""
    asked: list[float] = []

    async def answer(request: web.Request) -> web.Response:
        # The scenario's asks (its run marker), not the last look at what the whole run left.
        if "." in request.query.get("run_id", ""):
            asked.append(time.monotonic())
        return web.json_response({"entries": []})

    async with loopback_server(answer) as port:
        yield f"http://127.0.0.1:{port}", asked


@pytest.mark.parametrize("interval", ["30", "604800"])
async def test_verify_waits_between_polls_no_longer_than_the_timeout_leaves(
    interval: str, empty_trail: tuple[str, list[float]], capsys: pytest.CaptureFixture[str]
) -> None:
    url, asked = empty_trail
    argv = ["verify", "drift-exec", "--run-id", "run-1234", "--responder", url]
    started = time.monotonic()
    code = await asyncio.to_thread(cli_main, [*argv, "--timeout", "1", "--interval", interval])
    took = time.monotonic() - started
    out, err = capsys.readouterr()
    assert code == 1 and err == ""
    assert "FAIL  drift-exec  [quarantined]  no alert for rule" in out
    assert "; the trail holds no alert of run run-1234 at all (alerts refused, say a wrong credential" in out
    assert 0.9 < took < 5, took
    # Asked at once, and once more at the deadline (not an --interval later).
    assert len(asked) == 2 and 0.9 < asked[1] - asked[0] < 1.5


class _EmptyTrail(ResponderClient):
    def __init__(self) -> None:
        super().__init__("http://127.0.0.1:1")
        self.asked: list[float] = []
        self.runs_asked: list[str] = []

    async def audit(self, **params: str) -> list[AuditEntry]:
        if "." in params["run_id"]:  # the scenario's marker
            self.asked.append(time.monotonic())
        else:
            self.runs_asked.append(params["run_id"])
        return []


async def test_poll_sleeps_at_most_until_the_deadline() -> None:
    client = _EmptyTrail()
    scenario = load_scenarios().by_name["drift-exec"]
    expectation = Expectation.of(scenario, "run-1234", scenario.expect)
    started = time.monotonic()
    [verdict] = await asyncio.wait_for(poll(client, [expectation], timeout=0.3, interval=3600), 5)
    assert not verdict.passed and not verdict.settled
    # Said as a wait that ended, not a final answer (review-replay M3).
    assert "(gave up waiting after --timeout 0.3 s)" in verdict.reason, verdict.reason
    # And what the whole run left in the trail: nothing (review-replay M3, the rest).
    assert client.runs_asked == ["run-1234"]
    assert verdict.reason.endswith("does the rule's output carry the marker?)"), verdict.reason
    assert time.monotonic() - started < 2
    assert len(client.asked) == 2 and 0.25 < client.asked[1] - client.asked[0] < 1


async def test_poll_asks_every_interval_while_the_timeout_lasts() -> None:
    client = _EmptyTrail()
    scenario = load_scenarios().by_name["drift-exec"]
    expectation = Expectation.of(scenario, "run-1234", scenario.expect)
    await poll(client, [expectation], timeout=0.5, interval=0.1)
    assert 4 <= len(client.asked) <= 7


# -- replay --rules: the file must define what the scenarios send -----------------------------------

FORGED_FILE = ["replay", "--pod", "a/b", "--forge", "--file"]


@pytest.fixture
def unrelated_rules(tmp_path: Path) -> Path:
    path = tmp_path / "r_other.yaml"
    path.write_text(
        "- rule: Other\n  desc: d\n  condition: proc.name = x\n  output: o\n  priority: INFO\n",
        encoding="utf-8",
    )
    return path


def test_replay_rules_without_the_scenarios_rule_is_refused(
    tmp_path: Path, unrelated_rules: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    empty = tmp_path / "r_empty.yaml"
    empty.write_text("", encoding="utf-8")
    out_file = tmp_path / "alerts.jsonl"
    for rules in (empty, unrelated_rules):
        argv = [*FORGED_FILE, str(out_file), "shell-in-serving-pod", "--rules", str(rules)]
        assert user_error(argv, capsys) == (
            f"serving-guard: error: --rules {rules}: no rule 'Shell in serving pod' "
            "(scenario shell-in-serving-pod)"
        )
    argv = [
        *FORGED_FILE,
        "-",
        "shell-in-serving-pod",
        "drift-exec",
        "benign-serving",
        "--rules",
        str(unrelated_rules),
    ]
    assert user_error(argv, capsys) == (
        f"serving-guard: error: --rules {unrelated_rules}: no rule 'Shell in serving pod' "
        "(scenario shell-in-serving-pod); "
        "no rule 'Drift: new executable in serving pod' (scenario drift-exec)"
    )
    assert not out_file.exists()


def test_replay_rules_given_as_an_empty_path_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    argv = [*FORGED_FILE, "-", "shell-in-serving-pod", "--rules", ""]
    assert user_error(argv, capsys) == "serving-guard: error: --rules: the path is empty"


def test_replay_rules_that_define_the_rule_are_followed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(
        "- rule: Shell in serving pod\n  desc: d\n  condition: proc.name = sh\n"
        "  output: custom shell %proc.cmdline\n  priority: CRITICAL\n  tags: [mine]\n",
        encoding="utf-8",
    )
    out_file = tmp_path / "alerts.jsonl"
    argv = [
        *FORGED_FILE,
        str(out_file),
        "--rules",
        str(rules),
        "--run-id",
        "run-1234",
        "shell-in-serving-pod",
    ]
    assert cli_main(argv) == 0
    capsys.readouterr()
    for line in out_file.read_text(encoding="utf-8").splitlines():
        alert = json.loads(line)
        assert alert["priority"] == "Critical" and alert["tags"] == ["mine"]
        assert alert["output"].split(": ", 1)[1].startswith("Critical custom shell ")


def test_replay_without_rules_and_without_a_pack_falls_back_to_a_generic_output(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The fallback is for an install without the rules pack (a wheel has no rules/): kept."""
    monkeypatch.setattr(alerts, "default_rules_file", lambda: None)
    out_file = tmp_path / "alerts.jsonl"
    argv = [*FORGED_FILE, str(out_file), "--run-id", "run-1234", "shell-in-serving-pod"]
    assert cli_main(argv) == 0
    out, err = capsys.readouterr()
    assert err == ""
    assert out.startswith("note: no rules pack found (use --rules): alerts carry a generic output line\n")
    for line in out_file.read_text(encoding="utf-8").splitlines():
        assert json.loads(line)["output"].split(": ", 1)[1].startswith("Warning Shell in serving pod (")


def test_replay_without_rules_follows_the_checkouts_pack(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out_file = tmp_path / "alerts.jsonl"
    assert cli_main([*FORGED_FILE, str(out_file), "--run-id", "run-1234", "shell-in-serving-pod"]) == 0
    explicit = tmp_path / "explicit.jsonl"
    argv = [
        *FORGED_FILE,
        str(explicit),
        "--run-id",
        "run-1234",
        "shell-in-serving-pod",
        "--rules",
        str(default_pack()),
    ]
    assert cli_main(argv) == 0
    out, _ = capsys.readouterr()
    assert "note:" not in out
    specs = load_rule_specs(default_pack())
    for text in (out_file, explicit):
        for line in text.read_text(encoding="utf-8").splitlines():
            alert = json.loads(line)
            assert alert["tags"] == list(specs["Shell in serving pod"].tags)
            # The pack's output format, not the generic "<rule> (field=...)" form.
            pack_output = specs["Shell in serving pod"].output
            assert alert["output"].split(": ", 1)[1].startswith("Warning " + pack_output.split("%", 1)[0])
