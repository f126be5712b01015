"""`verify` where the review (M3) found it awkward or impossible: a responder in dry-run
(``--expect all=dry_run``, which the failure line suggests), a trail with no HTTP input to ask
(``--config`` / ``--journal``: alerts fed to `ingest`, a gRPC-only responder), and the verify command
`replay` prints at its end, which now works as printed (the URL replayed to, or ``--config CONFIG``)."""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path

import pytest
import yaml

from simulators.replay_command import verify_trail_flags
from simulators.scenario import Expect, Outcome, load_reference_policy
from simulators.verify import Expectation, judge
from tests.responder.test_client_errors import usage_error, user_error
from tests.simulators.conftest import ChainFactory, Seeded, chain_config_data, reads_trail
from tests.simulators.test_replay_verify import FAST, SCENARIOS, _entry, cli, pod_ref, replay

VERIFY = ["verify", "drift-exec", "benign-serving", "--run-id", "run-1234"]
OUTCOMES = "quarantined, leaky, annotated, blocked, notified, dry_run, unverified, silent, any"


def printed_verify(out: str) -> list[str]:
    """The verify command `replay` printed, as argv for the CLI (without `serving-guard`)."""
    line = next(line for line in out.splitlines() if line.startswith("check the responder: "))
    argv = shlex.split(line.removeprefix("check the responder: "))
    assert argv[:2] == ["serving-guard", "verify"], line
    return argv[1:]


def test_expect_all_takes_an_outcome_word_and_names_the_valid_ones(
    capsys: pytest.CaptureFixture[str],
) -> None:
    base = [*VERIFY, "--responder", "http://127.0.0.1:1"]
    assert user_error([*base, "--expect", "all=bogus"], capsys) == (
        f"serving-guard: error: --expect 'all=bogus': outcome must be one of {OUTCOMES}"
    )
    assert user_error([*base, "--expect", "all=silent"], capsys) == (
        "serving-guard: error: --expect all=silent: all= sets the outcome of the scenarios other than the"
        " control, and only the control can expect silence"
    )
    assert user_error([*base, "--expect", "nope=dry_run"], capsys) == (
        "serving-guard: error: --expect 'nope=dry_run': use SCENARIO=OUTCOME with a scenario named on the"
        " command line, or all=OUTCOME"
    )


async def test_expect_all_verifies_a_dry_run_responder_and_the_failure_line_suggests_it(
    chain: ChainFactory, seeded: Seeded, run_id: str, capsys: pytest.CaptureFixture[str]
) -> None:
    guardrails = {**load_reference_policy().get("guardrails", {}), "dry_run": True}
    names = ("shell-in-serving-pod", "credential-read", "benign-serving")
    async with chain(guardrails=guardrails) as responder:
        out = await replay(seeded, capsys, responder.http_url, run_id, *names)
        # The printed command names the responder replayed to; the trail is read with the audit token.
        argv = printed_verify(out)
        assert argv[argv.index("--responder") + 1] == responder.http_url
        assert argv[argv.index("--pod") + 1] == pod_ref(seeded, "torchserve")
        token_at = argv.index("--token-file") + 1
        assert argv[token_at] == "AUDIT_TOKEN_FILE"
        argv[token_at : token_at + 1] = reads_trail(responder)[1:]
        code, out = await cli([*argv, *FAST, "--no-slack"], capsys)
        assert code == 1
        assert (
            "FAIL  shell-in-serving-pod  [quarantined]  expected quarantined, but guardrails.dry_run is on:"
            " nothing was changed; to verify a responder in dry-run, expect it: --expect all=dry_run"
        ) in out
        # all= covers every positive scenario, the control keeps its silence, a scenario's own wins.
        own = ["--expect", "credential-read=quarantined"]
        code, out = await cli([*argv, *FAST, "--no-slack", "--expect", "all=dry_run", *own], capsys)
    assert code == 1, out
    assert "PASS  shell-in-serving-pod  [dry_run]  dry_run" in out
    assert "FAIL  credential-read  [quarantined]  expected quarantined, but guardrails.dry_run" in out
    # The control is not in the printed command: a replay runs no serving traffic to prove it with.
    assert "benign-serving" not in out
    assert "1 of 2 scenario(s) passed" in out


async def test_verify_reads_the_journal_of_alerts_replayed_to_a_file_and_ingested(
    tmp_path: Path, seeded: Seeded, run_id: str, capsys: pytest.CaptureFixture[str]
) -> None:
    alerts = tmp_path / "alerts.jsonl"
    names = ("shell-in-serving-pod", "benign-serving")
    pod = ["--pod", pod_ref(seeded, "torchserve"), "--kubeconfig", seeded.kubeconfig]
    code, out = await cli(["replay", *names, "--file", str(alerts), *pod, "--run-id", run_id], capsys)
    assert code == 0, out
    argv = printed_verify(out)
    assert "--responder" not in argv and argv[argv.index("--config") + 1] == "CONFIG"
    # A replay is a drill: ingested as one, as it says, its quarantine is only predicted (review-50 M3).
    assert f"ingest them as a drill: serving-guard ingest {alerts} --drill --config CONFIG" in out
    assert argv[-2:] == ["--expect", "shell-in-serving-pod=dry_run"], argv
    config = tmp_path / "ingest.yaml"
    data = chain_config_data(tmp_path, seeded.kubeconfig, None)
    config.write_text(yaml.safe_dump(data), encoding="utf-8")
    ingest = ["ingest", str(alerts), "--drill", "--config", str(config), "--settle-seconds", "0"]
    code, out = await cli(ingest, capsys)
    assert code == 0, out
    # As printed, CONFIG being the config ingest ran with (Slack is off in it).
    argv[argv.index("CONFIG")] = str(config)
    code, out = await cli([*argv, *FAST, "--no-slack"], capsys)
    assert code == 0, out
    assert "PASS  shell-in-serving-pod  [dry_run]  dry_run, every step alerted (2)" in out
    assert "sent by: file " in out and "(a DRILL: replayed alerts prove the responder, not detection)" in out
    assert "benign-serving" not in out  # a control: nothing replayed proves it
    # --journal: the file itself.
    at = argv.index("--config")
    argv[at : at + 2] = ["--journal", data["journal"]["path"]]
    code, out = await cli([*argv, *FAST, "--no-slack"], capsys)
    assert code == 0, out
    assert "1 of 1 scenario(s) passed" in out


def test_verify_reads_the_trail_from_exactly_one_place(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    journal = str(tmp_path / "journal.db")
    both = [*VERIFY, "--responder", "http://127.0.0.1:1", "--journal", journal]
    assert usage_error(both, capsys).endswith("argument --journal: not allowed with argument --responder")
    line = usage_error(VERIFY, capsys)
    assert line.endswith("one of the arguments --responder --config --journal is required")
    assert user_error([*VERIFY, "--journal", journal], capsys) == (
        f"serving-guard: error: journal {journal} does not exist"
    )
    token = tmp_path / "token"
    token.write_text("t\n", encoding="utf-8")
    assert user_error([*VERIFY, "--journal", journal, "--token-file", str(token)], capsys) == (
        "serving-guard: error: --token-file applies to --responder only, not to --journal"
    )
    assert user_error([*VERIFY, "--config", journal, "--ca", str(token)], capsys) == (
        "serving-guard: error: --ca applies to --responder only, not to --config"
    )


@pytest.mark.parametrize(
    ("outcome", "action"),
    [
        (Outcome.QUARANTINED, "quarantine"),
        (Outcome.LEAKY, "quarantine"),
        (Outcome.ANNOTATED, "annotate"),
        (Outcome.BLOCKED, "block_destination"),
    ],
)
def test_a_real_action_only_predicted_by_the_guardrail_suggests_expect_all_dry_run(
    outcome: Outcome, action: str
) -> None:
    rule = "Shell in serving pod"
    expectation = Expectation.of(SCENARIOS.by_name["shell-in-serving-pod"], "r1", Expect(outcome=outcome))
    predicted = [{"action": action, "status": "dry_run", "finished_ns": 2_000_000}]
    decision = {"policy": "p", "actions": ["notify", action], "notify": True, "dry_run": True}
    guardrail = _entry(rule, actions=predicted, decision={**decision, "dry_run_by": "guardrails"})
    verdict = judge(expectation, [guardrail])
    assert verdict.reason == (
        f"expected {outcome.value}, but guardrails.dry_run is on: nothing was changed;"
        " to verify a responder in dry-run, expect it: --expect all=dry_run"
    )
    # A policy on trial is that scenario's own: its file expects dry_run, no flag for all of them.
    on_trial = _entry(rule, actions=predicted, decision={**decision, "dry_run_by": "policy"})
    assert judge(expectation, [on_trial]).reason == (
        f"expected {outcome.value}, but policy p is in dry-run: nothing was changed"
    )


def test_replay_prints_verify_reading_the_responders_journal_after_grpc_or_file() -> None:
    out = {"pod": "ml-serving/triton-0", "to": None, "ca_file": None}
    assert verify_trail_flags(argparse.Namespace(**out)) == " --pod ml-serving/triton-0 --config CONFIG"
    to = {**out, "to": "https://127.0.0.1:8443", "ca_file": "/etc/sg/ca dir/ca.crt"}
    assert verify_trail_flags(argparse.Namespace(**to)) == (
        " --pod ml-serving/triton-0 --responder https://127.0.0.1:8443 --ca '/etc/sg/ca dir/ca.crt'"
        " --token-file AUDIT_TOKEN_FILE"
    )
