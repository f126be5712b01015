"""`replay` into a real responder (HTTP, gRPC, file) and `verify` against its audit trail: passes on
a healthy chain, fails clearly when an expectation is broken (wrong rule, no quarantine, Slack
missing, a forgery acted on, a noisy control)."""

from __future__ import annotations

import asyncio
import contextlib
import http.server
import json
import re
import shutil
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from bench.procs import free_port
from responder.alert_json import parse_falco_json
from responder.cli import main as cli_main
from responder.client import ClientAuth, ResponderClient
from responder.service import Responder
from simulators.pki import make_test_pki
from simulators.scenario import Expect, Outcome, load_scenarios
from simulators.slack_sink import SlackSink
from simulators.verify import Expectation, judge
from tests.helpers import refusing_port
from tests.simulators.conftest import (
    ChainFactory,
    Seeded,
    chain_config_data,
    reads_trail,
    running_responder,
    trail_token,
)

SCENARIOS = load_scenarios()
FAST = ["--timeout", "2", "--interval", "0.05", "--settle", "0.2"]


async def cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = await asyncio.to_thread(cli_main, argv)
    out, err = capsys.readouterr()
    return code, out + err


def pod_ref(seeded: Seeded, key: str) -> str:
    pod = seeded.pods[key]
    return f"{pod.namespace}/{pod.name}"


async def replay(
    seeded: Seeded,
    capsys: pytest.CaptureFixture[str],
    url: str,
    run_id: str,
    *names: str,
    pod: str = "torchserve",
    extra: tuple[str, ...] = (),
    live: bool = True,
) -> str:
    """Replays ``names``; ``live``: as Falco's alerts (these tests are about the responder acting),
    else as a drill."""
    # --forge reads no pod, so it takes no kubeconfig.
    kubeconfig = [] if "--forge" in extra else ["--kubeconfig", seeded.kubeconfig]
    argv = [
        "replay",
        *names,
        "--to",
        url,
        "--pod",
        pod_ref(seeded, pod),
        *kubeconfig,
        "--run-id",
        run_id,
        *(["--live"] if live else []),
        *extra,
    ]
    code, out = await cli(argv, capsys)
    assert code == 0, out
    return out


async def run_verify(
    responder: Responder,
    capsys: pytest.CaptureFixture[str],
    run_id: str,
    *names: str,
    extra: tuple[str, ...] = (),
) -> tuple[int, str]:
    """``verify`` of ``names`` for ``run_id`` against the responder, reading its trail (``extra``: more
    flags)."""
    url = responder.http_url
    assert url is not None
    argv = ["verify", *names, "--run-id", run_id, "--responder", url, *FAST, *reads_trail(responder), *extra]
    return await cli(argv, capsys)


async def test_verify_passes_on_a_healthy_chain(
    chain: ChainFactory, seeded: Seeded, sink: SlackSink, run_id: str, capsys: pytest.CaptureFixture[str]
) -> None:
    async with chain() as responder:
        out = await replay(
            seeded,
            capsys,
            responder.http_url,
            run_id,
            "shell-in-serving-pod",
            "runtime-download",
            "benign-serving",
        )
        assert "benign-serving: control, nothing to send" in out
        assert out.count("sent   ") == 4 and "HTTP 202" in out
        code, out = await run_verify(
            responder, capsys, run_id, "shell-in-serving-pod", "runtime-download", "benign-serving"
        )
    assert code == 0, out
    assert "PASS  shell-in-serving-pod  [quarantined]  quarantined" in out
    assert "PASS  runtime-download  [dry_run]  dry_run" in out
    assert "decision: report-runtime-changes: notify, quarantine; outcome: dry-run: would quarantine" in out
    assert "PASS  benign-serving  [silent]  nothing fired" in out
    assert "3 of 3 scenario(s) passed" in out
    # The Slack message is really there.
    assert len(sink.messages("#sec-oncall")) == 1 and len(sink.messages("#sec-alerts")) == 1


async def test_verify_reads_the_trail_with_the_audit_token_where_one_is_set(
    chain: ChainFactory, seeded: Seeded, run_id: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    audit_token = tmp_path / "audit-token"
    audit_token.write_text("readers-only\n", encoding="utf-8")
    http = {"listen": "127.0.0.1:0", "allow_unauthenticated": True, "audit_token": {"file": str(audit_token)}}
    async with chain(inputs={"http": http}) as responder:
        await replay(seeded, capsys, responder.http_url, run_id, "shell-in-serving-pod")
        verify = ["verify", "shell-in-serving-pod", "--run-id", run_id, "--responder", responder.http_url]
        verify += FAST
        code, out = await cli(verify, capsys)
        assert code != 0
        # The responder's error in its own words, not the JSON body's Python repr.
        assert "audit request failed: HTTP 401: the audit trail is read with the audit token" in out
        assert "the audit trail is read with the audit token (inputs.http.audit_token)" in out
        assert "{'error'" not in out
        assert "Traceback" not in out
        code, out = await cli([*verify, "--token-file", str(audit_token)], capsys)
    assert code == 0, out
    assert "PASS  shell-in-serving-pod  [quarantined]  quarantined" in out


async def test_verify_fails_on_the_wrong_rule(
    chain: ChainFactory, seeded: Seeded, run_id: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    altered = tmp_path / "altered"
    shutil.copytree(SCENARIOS.directory, altered)
    path = altered / "shell-in-serving-pod.yaml"
    # Falco fires another rule than the one the scenario must trigger.
    text = path.read_text(encoding="utf-8").replace(
        "rule: Shell in serving pod\n", "rule: Runtime download or package install in serving pod\n", 1
    )
    path.write_text(text, encoding="utf-8")
    async with chain() as responder:
        await replay(
            seeded,
            capsys,
            responder.http_url,
            run_id,
            "shell-in-serving-pod",
            extra=("--scenarios-dir", str(altered)),
        )
        code, out = await run_verify(responder, capsys, run_id, "shell-in-serving-pod")
    assert code == 1
    assert (
        "FAIL  shell-in-serving-pod  [quarantined]  no alert for rule 'Shell in serving pod' with this run's "
        in out
    )
    assert "fired instead: Runtime download or package install in serving pod" in out


async def test_verify_fails_when_nothing_is_quarantined(
    chain: ChainFactory, seeded: Seeded, run_id: str, capsys: pytest.CaptureFixture[str]
) -> None:
    notify_only = [{"name": "tell-only", "match": {"rules": ["Shell in serving pod"]}, "actions": ["notify"]}]
    async with chain(policies=notify_only) as responder:
        await replay(seeded, capsys, responder.http_url, run_id, "shell-in-serving-pod")
        code, out = await run_verify(responder, capsys, run_id, "shell-in-serving-pod")
    assert code == 1
    assert "FAIL  shell-in-serving-pod  [quarantined]  no quarantine: decision was tell-only: notify" in out


async def test_verify_names_a_leaky_quarantine(
    chain: ChainFactory, seeded: Seeded, run_id: str, capsys: pytest.CaptureFixture[str]
) -> None:
    async with chain() as responder:
        await replay(seeded, capsys, responder.http_url, run_id, "shell-in-serving-pod", pod="triton")
        code, out = await run_verify(responder, capsys, run_id, "shell-in-serving-pod")
        assert code == 1
        assert "quarantine is LEAKY: still allowed by allow-gateway-to-triton" in out
        code, out = await run_verify(
            responder,
            capsys,
            run_id,
            "shell-in-serving-pod",
            extra=("--expect", "shell-in-serving-pod=leaky"),
        )
        assert code == 0, out


async def test_verify_passes_a_block_made_and_fails_one_a_quarantine_made_needless(
    chain: ChainFactory, seeded: Seeded, run_id: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """``blocked`` is the pod's own block policy, made and proven. Under a quarantine the address is
    out of reach already and no block is made: verify says so, where it used to pass it."""
    async with chain() as responder:
        url = responder.http_url

        async def verify(name: str, run: str) -> tuple[int, str]:
            return await run_verify(responder, capsys, run, name)

        await replay(seeded, capsys, url, run_id, "anomalous-egress", pod="embeddings")
        code, out = await verify("anomalous-egress", run_id)
        assert code == 0, out
        assert "PASS  anomalous-egress  [blocked]  blocked" in out and "outcome: blocked 203.0.113.10" in out
        await replay(seeded, capsys, url, run_id, "unexpected-model-load", pod="kserve")
        code, out = await verify("unexpected-model-load", run_id)
        assert code == 0, out
        later = "u" + run_id[1:]
        await replay(seeded, capsys, url, later, "anomalous-egress", pod="kserve")
        code, out = await verify("anomalous-egress", later)
    assert code == 1
    assert (
        "FAIL  anomalous-egress  [blocked]  expected blocked, but no block was made: 203.0.113.10 was out"
        " of reach already, kept out by quarantine (serving-guard-quarantine)" in out
    )
    assert "outcome: no block made: 203.0.113.10 already kept out by quarantine" in out


async def test_verify_fails_when_slack_is_missing(
    chain: ChainFactory, seeded: Seeded, run_id: str, capsys: pytest.CaptureFixture[str]
) -> None:
    async with chain(slack=False) as responder:
        await replay(seeded, capsys, responder.http_url, run_id, "drift-exec")
        code, out = await run_verify(responder, capsys, run_id, "drift-exec")
        assert code == 1
        assert "FAIL  drift-exec  [quarantined]  no Slack message recorded (is Slack configured" in out
        code, out = await run_verify(responder, capsys, run_id, "drift-exec", extra=("--no-slack",))
        assert code == 0, out


@pytest.mark.parametrize(
    ("error", "said"),
    [
        # Refused for good: recorded as failed.
        ("invalid_arguments", "Slack message failed after"),
        # Every channel refuses the bot: the message waits in the journal, not failed for good.
        ("channel_not_found", "Slack message not sent yet (pending, tried, and waiting to try again: "),
    ],
)
async def test_verify_reports_a_slack_message_not_delivered_and_why(
    chain: ChainFactory,
    seeded: Seeded,
    sink: SlackSink,
    run_id: str,
    capsys: pytest.CaptureFixture[str],
    error: str,
    said: str,
) -> None:
    sink.api_error(error, times=50, method="chat.postMessage")
    async with chain() as responder:
        await replay(seeded, capsys, responder.http_url, run_id, "credential-read", pod="vllm")
        code, out = await run_verify(responder, capsys, run_id, "credential-read")
    assert code == 1
    assert f"FAIL  credential-read  [quarantined]  {said}" in out
    assert error in out


async def test_forged_alerts_are_refused_and_verify_says_so(
    chain: ChainFactory, seeded: Seeded, run_id: str, capsys: pytest.CaptureFixture[str]
) -> None:
    async with chain() as responder:
        out = await replay(
            seeded,
            capsys,
            responder.http_url,
            run_id,
            "reverse-shell-one-liner",
            pod="vllm",
            extra=("--forge",),
        )
        assert "FORGED: random container id" in out
        # The command printed expects what forged alerts come to (review-replay L2: it failed as printed).
        printed = next(line for line in out.splitlines() if line.startswith("check the responder: "))
        assert " --expect reverse-shell-one-liner=unverified" in printed, printed
        # Its expectations are the reference policy's, said so (review-operator L3).
        lines = out.splitlines()
        assert lines[lines.index(printed) + 1] == (
            "  (it expects what simulators/reference_policy.yaml does with each scenario: where your"
            " policies do otherwise, say so with --expect SCENARIO=OUTCOME)"
        )
        code, out = await run_verify(
            responder,
            capsys,
            run_id,
            "reverse-shell-one-liner",
            extra=("--expect", "reverse-shell-one-liner=unverified"),
        )
        assert code == 0, out
        code, out = await run_verify(responder, capsys, run_id, "reverse-shell-one-liner")
    assert code == 1
    assert "alert not verified against the live pod (unverified: container.id" in out
    pod = seeded.cluster.call(seeded.cluster.emulator.get_object, "v1/pods", "ml-serving", "vllm-0")
    assert "serving-guard.io/quarantine" not in pod["metadata"].get("labels", {})


async def test_replay_through_the_falco_grpc_outputs_service(
    chain: ChainFactory, seeded: Seeded, run_id: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    socket_path = tmp_path / "falco.sock"
    grpc = {
        "enabled": True,
        "address": f"unix://{socket_path}",
        "poll_interval_seconds": 0.05,
        "backoff": {"initial_seconds": 0.02, "max_seconds": 0.1},
    }
    async with chain(
        inputs={"http": {"listen": "127.0.0.1:0", "allow_unauthenticated": True}, "grpc": grpc}
    ) as r:
        code, out = await cli(
            [
                "replay",
                "model-tampering",
                "--live",
                "--grpc",
                f"unix://{socket_path}",
                "--pod",
                pod_ref(seeded, "vllm"),
                "--kubeconfig",
                seeded.kubeconfig,
                "--run-id",
                run_id,
                "--timeout",
                "10",
            ],
            capsys,
        )
        assert code == 0, out
        assert out.count("collected from unix://") == 3
        code, out = await run_verify(r, capsys, run_id, "model-tampering")
    assert code == 0, out


async def test_replay_grpc_over_mutual_tls(
    chain: ChainFactory, seeded: Seeded, run_id: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pki = make_test_pki(tmp_path / "pki")
    address = f"127.0.0.1:{free_port()}"
    grpc = {
        "enabled": True,
        "address": address,
        "tls": {
            "ca_file": pki.ca_file,
            "cert_file": pki.client.cert_file,
            "key_file": pki.client.key_file,
            "server_name": "localhost",
        },
        "poll_interval_seconds": 0.05,
        "backoff": {"initial_seconds": 0.02, "max_seconds": 0.1},
    }
    async with chain(
        inputs={"http": {"listen": "127.0.0.1:0", "allow_unauthenticated": True}, "grpc": grpc}
    ) as r:
        code, out = await cli(
            [
                "replay",
                "credential-read",
                "--live",
                "--grpc",
                address,
                "--grpc-cert",
                pki.server.cert_file,
                "--grpc-key",
                pki.server.key_file,
                "--grpc-client-ca",
                pki.ca_file,
                "--pod",
                pod_ref(seeded, "vllm"),
                "--kubeconfig",
                seeded.kubeconfig,
                "--run-id",
                run_id,
                "--timeout",
                "10",
            ],
            capsys,
        )
        assert code == 0, out
        assert out.count(f"collected from {address}") == 2
        code, out = await run_verify(r, capsys, run_id, "credential-read")
    assert code == 0, out


async def test_replay_to_a_file_feeds_ingest(
    tmp_path: Path, seeded: Seeded, run_id: str, capsys: pytest.CaptureFixture[str]
) -> None:
    out_file = tmp_path / "alerts.jsonl"
    code, out = await cli(
        [
            "replay",
            "all",
            "--file",
            str(out_file),
            "--pod",
            pod_ref(seeded, "kserve"),
            "--kubeconfig",
            seeded.kubeconfig,
            "--run-id",
            run_id,
        ],
        capsys,
    )
    assert code == 0, out
    lines = out_file.read_bytes().splitlines()
    expected = sum(len(s.alerts) for s in SCENARIOS.by_name.values())
    assert len(lines) == expected
    for line in lines:
        alert = parse_falco_json(line)
        assert alert.pod == seeded.pods["kserve"].name and f"sg-run={run_id}." in alert.output
    config = tmp_path / "ingest.yaml"
    data = chain_config_data(tmp_path, seeded.kubeconfig, None)
    config.write_text(yaml.safe_dump(data), encoding="utf-8")
    code, out = await cli(["ingest", str(out_file), "--config", str(config), "--settle-seconds", "0"], capsys)
    assert code == 0, out
    code, out = await cli(
        ["audit", "--journal", data["journal"]["path"], "--run-id", run_id, "--format", "json"], capsys
    )
    entries = json.loads(out)
    assert len(entries) == expected and all(e["state"] == "done" for e in entries)


async def test_replay_errors_are_clear(
    tmp_path: Path, seeded: Seeded, capsys: pytest.CaptureFixture[str]
) -> None:
    base = ["replay", "drift-exec", "--kubeconfig", seeded.kubeconfig, "--file", str(tmp_path / "x")]
    code, out = await cli([*base, "--pod", "ml-serving/nope-0"], capsys)
    assert code == 2 and "pod ml-serving/nope-0 not found" in out
    code, out = await cli([*base, "--pod", "nope"], capsys)
    assert code == 2 and "--pod must be NAMESPACE/NAME" in out
    code, out = await cli(
        ["replay", "drift-exec", "--pod", "a/b", "--forge", "--live", "--grpc", "127.0.0.1:0"], capsys
    )
    assert code == 2 and "--grpc on TCP needs --grpc-cert, --grpc-key and --grpc-client-ca" in out
    with refusing_port() as port:
        closed = f"http://127.0.0.1:{port}"
        code, out = await cli(["replay", "drift-exec", "--pod", "a/b", "--forge", "--to", closed], capsys)
    assert code == 2 and f"serving-guard: error: --to {closed}: cannot connect: Connection refused\n" in out
    assert "Traceback" not in out


def _entry(rule: str, name: str = "shell-in-serving-pod", step: int = 1, **incident: Any) -> dict[str, Any]:
    """An audit entry of run r1's scenario ``name`` (step ``step``) that opened its incident."""
    base: dict[str, Any] = {
        "verification": {"status": "verified"},
        "decision": {"policy": "p", "actions": ["notify", "quarantine"], "notify": True},
        "actions": [{"action": "quarantine", "status": "quarantined", "finished_ns": 2_000_000}],
        "notifications": [{"kind": "incident", "state": "sent", "slack_channel": "C1"}],
    }
    base.update(incident)
    alert = {
        "time": "1970-01-01T00:00:00.001000000Z",
        "output": f"Warning {rule} (cmdline=sh -c true # sg-run=r1.{name}.{step})",
    }
    return {
        "rule": rule,
        "outcome": "opened",
        "state": "done",
        "incident": base,
        "alert": alert,
        "received_ns": 1_500_000,
        "namespace": "ml-serving",
        "pod": "pod-0",
    }


def test_judge_covers_each_outcome() -> None:
    scenario = SCENARIOS.by_name["shell-in-serving-pod"]

    def expectation(outcome: Outcome, slack: bool = True) -> Expectation:
        return Expectation.of(scenario, "r1", Expect(outcome=outcome, slack=slack))

    rule = "Shell in serving pod"
    ok = judge(expectation(Outcome.QUARANTINED), [_entry(rule)])
    assert ok.passed and ok.latency_ms == 1.0 and ok.slack == "sent to C1"
    pending = judge(
        expectation(Outcome.QUARANTINED), [{**_entry(rule), "outcome": "pending", "incident": None}]
    )
    assert not pending.passed and not pending.settled and "not decided yet" in pending.reason
    sending = judge(
        expectation(Outcome.QUARANTINED),
        [
            _entry(
                rule,
                notifications=[
                    {"kind": "incident", "state": "pending", "attempts": 2, "last_error": "rate limited"}
                ],
            )
        ],
    )
    assert (
        not sending.settled
        and "Slack message not sent yet (pending, 2 counted attempt(s): rate limited)" in sending.reason
    )
    annotated = judge(expectation(Outcome.ANNOTATED), [_entry(rule)])
    assert "expected annotated, got no annotate action" in annotated.reason
    blocked = judge(expectation(Outcome.BLOCKED), [_entry(rule)])
    assert "expected blocked, got no block_destination action" in blocked.reason
    # Blocked means the pod's own block policy made, the pod labelled into it and proven.
    block = {
        "action": "block_destination",
        "status": "blocked",
        "address": "203.0.113.10",
        "finished_ns": 2_000_000,
    }
    blocks = {"policy": "p", "actions": ["notify", "block_destination"], "notify": True}
    made = {**block, "network_policy": "serving-guard-block-0a1b", "labelled": True}
    assert judge(expectation(Outcome.BLOCKED), [_entry(rule, actions=[made], decision=blocks)]).passed
    kept_out = {**block, "kept_out": "quarantine", "kept_out_by": ["serving-guard-quarantine"]}
    under_quarantine = judge(
        expectation(Outcome.BLOCKED), [_entry(rule, actions=[kept_out], decision=blocks)]
    )
    assert not under_quarantine.passed and under_quarantine.reason == (
        "expected blocked, but no block was made: 203.0.113.10 was out of reach already, kept out by"
        " quarantine (serving-guard-quarantine); run the scenario on a pod that is neither quarantined"
        " nor restricted"
    )
    assert under_quarantine.outcome == "no block made: 203.0.113.10 already kept out by quarantine"
    assert under_quarantine.latency_ms is None  # nothing was done to time
    unproven = judge(expectation(Outcome.BLOCKED), [_entry(rule, actions=[block], decision=blocks)])
    assert not unproven.passed and "shows no block policy the pod was labelled into" in unproven.reason
    notified = judge(expectation(Outcome.NOTIFIED), [_entry(rule)])
    assert notified.reason == "expected notify only, but the pod was quarantined"
    # A policy on trial: the quarantine was predicted, and only that passes as a dry-run.
    predicted = {"action": "quarantine", "status": "dry_run", "finished_ns": 2_000_000}
    trial = {"policy": "report-runtime-changes", "actions": ["notify", "quarantine"], "dry_run": True}
    on_trial = _entry(rule, actions=[predicted], decision={**trial, "dry_run_by": "policy"})
    dry = judge(expectation(Outcome.DRY_RUN), [on_trial])
    assert dry.passed and dry.outcome == "dry-run: would quarantine" and dry.latency_ms is None
    enforced = judge(expectation(Outcome.DRY_RUN), [_entry(rule)])
    assert enforced.reason == "expected a dry-run, but the pod was quarantined"
    # The prediction confirmed by hand since: the responder's outcome is still the dry-run, and a
    # person's quarantine on a notify-only alert is theirs too (review-operator L2).
    by_hand = {"action": "quarantine", "status": "quarantined", "finished_ns": 3_000_000, "actor": "oncall"}
    confirmed = _entry(rule, actions=[predicted, by_hand], decision={**trial, "dry_run_by": "policy"})
    assert judge(expectation(Outcome.DRY_RUN), [confirmed]).passed
    told_then_cut = _entry(
        rule, actions=[by_hand], decision={"policy": "p", "actions": ["notify"], "notify": True}
    )
    assert judge(expectation(Outcome.NOTIFIED), [told_then_cut]).passed
    # An action journaled without an actor is the responder's, as everywhere in the trail.
    unnamed = _entry(
        rule, actions=[{**by_hand, "actor": None}], decision={"policy": "p", "actions": ["notify"]}
    )
    assert not judge(expectation(Outcome.NOTIFIED), [unnamed]).passed
    told_only = {"policy": "p", "actions": ["notify"], "notify": True}
    told = judge(expectation(Outcome.DRY_RUN), [_entry(rule, actions=[], decision=told_only)])
    assert told.reason == "expected a dry-run, decision was p: notify"
    missed = judge(expectation(Outcome.QUARANTINED), [on_trial])
    assert missed.reason == (
        "expected quarantined, but policy report-runtime-changes is in dry-run: nothing was changed"
    )
    forged = judge(expectation(Outcome.UNVERIFIED), [_entry(rule)])
    assert "expected the alert to be refused as unverified, but verification said verified" in forged.reason
    acted = judge(expectation(Outcome.UNVERIFIED), [_entry(rule, verification={"status": "unverified"})])
    assert "an unverified alert was acted on: quarantined" in acted.reason
    control = Expectation.of(
        SCENARIOS.by_name["benign-serving"], "r1", Expect(outcome=Outcome.SILENT, slack=False)
    )
    assert judge(control, []).passed
    noisy = judge(control, [_entry("Shell in serving pod", "benign-serving")])
    assert (
        not noisy.passed
        and noisy.reason == "expected silence, but 1 alert(s) mention this run: Shell in serving pod"
    )
    also = judge(
        expectation(Outcome.QUARANTINED), [_entry(rule), _entry("Drift: new executable in serving pod")]
    )
    assert also.passed and also.reason == "quarantined (also fired: Drift: new executable in serving pod)"


# -- a run's verdict is about that run: never an earlier run's incident, nor another run's alerts ------


async def test_verify_fails_when_the_alerts_folded_into_an_earlier_runs_incident(
    seeded: Seeded, sink: SlackSink, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A second run within the dedupe window folds into the first run's incident (same rule, pod,
    container and node). After a release its alerts act on nothing: verify used to report the first
    run's quarantine as this run's, with a negative alert->action time."""
    data = chain_config_data(tmp_path, seeded.kubeconfig, sink)
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(data), encoding="utf-8")
    pod = seeded.pods["torchserve"]
    async with running_responder(data, tmp_path) as responder:
        url = responder.http_url
        assert url is not None

        async def verify(run: str) -> tuple[int, str]:
            return await run_verify(responder, capsys, run, "shell-in-serving-pod")

        await replay(seeded, capsys, url, "runAAAA", "shell-in-serving-pod")
        code, out = await verify("runAAAA")
        assert code == 0, out
        code, out = await cli(
            ["audit", "--run-id", "runAAAA", "--responder", url, "--format", "json", *reads_trail(responder)],
            capsys,
        )
        incident = json.loads(out)[0]["incident_id"]
        release = ["release", "--namespace", pod.namespace, pod.name, "--reason", "test done", "--by", "me"]
        code, out = await cli([*release, "--config", str(config), "--incident", incident], capsys)
        assert code == 0, out
        await replay(seeded, capsys, url, "runBBBB", "shell-in-serving-pod")
        code, out = await verify("runBBBB")
    assert code == 1, out
    assert (
        "FAIL  shell-in-serving-pod  [quarantined]  this run's alerts for 'Shell in serving pod' folded into"
        f" incident {incident}, opened at " in out
    )
    assert "by an alert of another run (same rule, pod, container and node within the dedupe window)" in out
    assert "nothing was done for this run's alerts; the pod was released since at " in out
    assert " by me, and an incident's repeats put nothing back; wait out the dedupe window" in out
    assert "alert->action: -\n" in out and not re.search(r"alert->action: -\d", out)


def test_judge_counts_a_folded_incident_only_for_what_was_done_for_this_runs_alerts() -> None:
    scenario = SCENARIOS.by_name["shell-in-serving-pod"]
    expectation = Expectation.of(scenario, "r1", scenario.expect)
    rule = "Shell in serving pod"
    # Folded into another run's incident, quarantined (at 2 ms) before this run's alert came (5 ms).
    folded = {**_entry(rule), "outcome": "duplicate", "received_ns": 5_000_000, "incident_id": "inc-1"}
    folded["incident"] = {**folded["incident"], "incident_id": "inc-1", "opened_ns": 1_000_000}
    verdict = judge(expectation, [folded])
    assert not verdict.passed and verdict.settled
    assert verdict.reason.startswith(
        "this run's alerts for 'Shell in serving pod' folded into incident inc-1, opened at"
        " 1970-01-01T00:00:00.001000000Z by an alert of another run"
    )
    assert verdict.latency_ms is None
    # Acted on for this run's alerts (the quarantine finished after they came): this run's.
    later = {"action": "quarantine", "status": "quarantined", "finished_ns": 6_000_000, "actor": "responder"}
    acted = {**folded, "incident": {**folded["incident"], "actions": [later]}}
    verdict = judge(expectation, [acted])
    assert verdict.passed and verdict.latency_ms == 5.0
    # Only the responder's doing counts: not a person's quarantine by hand, nor a release.
    by_hand = {**later, "actor": "someone"}
    released = {"action": "release", "status": "released", "finished_ns": 4_000_000, "actor": "me"}
    stale = {
        **folded,
        "incident": {**folded["incident"], "actions": [*folded["incident"]["actions"], released, by_hand]},
    }
    verdict = judge(expectation, [stale])
    assert not verdict.passed
    assert "the pod was released since at 1970-01-01T00:00:00.004000000Z by me" in verdict.reason
    # A negative alert->action time is never a pass: the action came before the alert was made.
    early = _entry(rule, actions=[{"action": "quarantine", "status": "quarantined", "finished_ns": 500_000}])
    verdict = judge(expectation, [early])
    assert not verdict.passed and verdict.settled and verdict.latency_ms == -0.5
    assert verdict.reason.startswith("alert->action -0.5 ms: the action on incident")


async def test_run_ids_and_scenario_names_are_matched_whole(
    chain: ChainFactory, seeded: Seeded, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Run a-run1 is not run team-a-run1, and a scenario named shell is not shell-in-serving-pod: the
    run filter used to match the marker as a substring, in the responder and so in verify."""
    custom = tmp_path / "custom"
    custom.mkdir()
    text = (SCENARIOS.directory / "shell-in-serving-pod.yaml").read_text(encoding="utf-8")
    (custom / "shell.yaml").write_text(
        text.replace("name: shell-in-serving-pod", "name: shell"), encoding="utf-8"
    )
    async with chain() as responder:
        url = responder.http_url
        await replay(seeded, capsys, url, "team-a-run1", "shell-in-serving-pod")

        async def verify(*argv: str) -> tuple[int, str]:
            return await cli(["verify", *argv, "--responder", url, *FAST, *reads_trail(responder)], capsys)

        code, out = await verify("shell-in-serving-pod", "--run-id", "a-run1")
        assert code == 1
        assert "FAIL  shell-in-serving-pod  [quarantined]  no alert for rule 'Shell in serving pod'" in out
        code, out = await verify("shell", "--run-id", "team-a-run1", "--scenarios-dir", str(custom))
        assert code == 1
        assert "FAIL  shell  [quarantined]  no alert for rule 'Shell in serving pod'" in out
        # The responder's own filter (GET /v1/audit?run_id=...) takes the marker whole too: a run,
        # one scenario of it, or one step.
        found = {}
        async with ResponderClient(url, ClientAuth(token=trail_token(responder))) as client:
            for needle in (
                "a-run1",
                "team-a-run",
                "team-a-run1.shell",
                "team-a-run1",
                "team-a-run1.shell-in-serving-pod",
                "team-a-run1.shell-in-serving-pod.2",
                "team-a-run1.shell-in-serving-pod.20",
            ):
                found[needle] = len(await client.audit(run_id=needle))
        assert found == {
            "a-run1": 0,
            "team-a-run": 0,
            "team-a-run1.shell": 0,
            "team-a-run1": 2,
            "team-a-run1.shell-in-serving-pod": 2,
            "team-a-run1.shell-in-serving-pod.2": 1,
            "team-a-run1.shell-in-serving-pod.20": 0,
        }
        code, out = await verify("shell-in-serving-pod", "--run-id", "team-a-run1")
    assert code == 0, out


async def test_verify_requires_an_alert_for_every_step_that_ran(
    chain: ChainFactory, seeded: Seeded, run_id: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Each step carries its own marker (sg-run=<run id>.<scenario>.<n>); replay and simulate print
    the steps, and verify given them fails a scenario one of whose steps has no alert (a variant the
    rules missed), where any one alert used to pass it."""
    altered = tmp_path / "altered"
    shutil.copytree(SCENARIOS.directory, altered)
    path = altered / "shell-in-serving-pod.yaml"
    text = path.read_text(encoding="utf-8")
    second = text.index("  - fields:\n      proc.name: bash")
    path.write_text(text[:second] + text[text.index("expect:\n") :], encoding="utf-8")
    async with chain() as responder:
        url = responder.http_url
        out = await replay(seeded, capsys, url, run_id, "shell-in-serving-pod", "benign-serving")
        # The control is left out: a replay runs no serving traffic to prove it with.
        assert f"verify shell-in-serving-pod --run-id {run_id} --steps shell-in-serving-pod=1,2 " in out
        assert "benign-serving: control, nothing to send (a replay runs no serving traffic" in out
        steps = ("--steps", "shell-in-serving-pod=1,2")
        code, out = await run_verify(responder, capsys, run_id, "shell-in-serving-pod", extra=steps)
        assert code == 0, out
        assert "PASS  shell-in-serving-pod  [quarantined]  quarantined, every step alerted (2)" in out
        assert "note: without --steps" not in out
        # A run whose second step drew no alert.
        other = "o" + run_id[1:]
        out = await replay(
            seeded,
            capsys,
            url,
            other,
            "shell-in-serving-pod",
            pod="kserve",
            extra=("--scenarios-dir", str(altered)),
        )
        assert "--steps shell-in-serving-pod=1 " in out
        code, out = await run_verify(responder, capsys, other, "shell-in-serving-pod", extra=steps)
        assert code == 1
        assert (
            "FAIL  shell-in-serving-pod  [quarantined]  no alert for step(s) 2 of 2 that ran (rule 'Shell in"
            f" serving pod', markers sg-run={other}.shell-in-serving-pod.<step>): not detected, or not yet in"
        ) in out
        # Without the steps, one alert of the rule is enough, and verify says so.
        code, out = await run_verify(responder, capsys, other, "shell-in-serving-pod")
    assert code == 0, out
    assert "note: without --steps, one alert of its rule is enough for shell-in-serving-pod" in out


async def test_the_controls_silence_counts_only_beside_a_positive_scenario_on_its_pod(
    chain: ChainFactory, seeded: Seeded, run_id: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """verify benign-serving alone passed with Falco down (nothing fired, because nothing ran). The
    control's silence now counts only when a positive scenario of the same run passed on the same
    pod: Falco was watching it."""
    async with chain() as responder:
        url = responder.http_url
        await replay(seeded, capsys, url, run_id, "shell-in-serving-pod", "benign-serving")

        async def verify(*argv: str) -> tuple[int, str]:
            return await run_verify(responder, capsys, run_id, *argv)

        code, out = await verify("benign-serving")
        assert code == 1
        assert (
            "FAIL  benign-serving  [silent]  nothing fired, but silence alone proves nothing: no positive"
            f" scenario of run {run_id} passed in this verify, so Falco may not be watching (or not running)"
        ) in out
        torchserve, kserve = pod_ref(seeded, "torchserve"), pod_ref(seeded, "kserve")
        code, out = await verify("shell-in-serving-pod", "benign-serving", "--pod", kserve)
        assert code == 1
        assert "FAIL  shell-in-serving-pod  [quarantined]  no alert for rule 'Shell in serving pod'" in out
        assert f"no positive scenario of run {run_id} passed on {kserve} in this verify" in out
        code, out = await verify("shell-in-serving-pod", "benign-serving", "--pod", torchserve)
        assert code == 0, out
        assert (
            "PASS  benign-serving  [silent]  nothing fired, while shell-in-serving-pod of the same run"
            f" alerted from {torchserve}"
        ) in out
        code, out = await verify("shell-in-serving-pod", "benign-serving")
    assert code == 0, out


def test_a_control_beside_positive_scenarios_of_several_pods_needs_its_pod_named() -> None:
    from simulators.verify import confirm_controls

    shell = SCENARIOS.by_name["shell-in-serving-pod"]
    control = SCENARIOS.by_name["benign-serving"]
    positive = Expectation.of(shell, "r1", shell.expect)
    here, there = _entry("Shell in serving pod"), {**_entry("Shell in serving pod", step=2), "pod": "pod-1"}
    verdicts = [judge(positive, [here, there]), judge(Expectation.of(control, "r1", control.expect), [])]
    assert verdicts[0].passed and verdicts[0].pods == {"ml-serving/pod-0", "ml-serving/pod-1"}
    _, silent = confirm_controls(verdicts)
    assert not silent.passed and silent.reason.endswith(
        "alerted from several pods (ml-serving/pod-0, ml-serving/pod-1): name the control's with --pod"
    )
    named = judge(Expectation.of(control, "r1", control.expect, pod="ml-serving/pod-1"), [])
    _, silent = confirm_controls([verdicts[0], named])
    assert silent.passed and silent.reason.endswith("alerted from ml-serving/pod-1")


def test_verify_waits_for_a_decision_made_again_only_where_the_responder_makes_one() -> None:
    """The responder decides an alert again on a repeat when the pod could not be read, was not
    found or did not list its container yet, and its decision asked for an isolating action: verify
    judges the incident the repeat opens then, and waits for it, never elsewhere."""
    scenario = SCENARIOS.by_name["shell-in-serving-pod"]
    rule = "Shell in serving pod"
    quarantines = Expectation.of(scenario, "r1", Expect(outcome=Outcome.QUARANTINED, slack=False))
    not_found = {"status": "pod_not_found"}
    # As the responder records it: the quarantine asked for, withheld (not among the actions taken).
    withheld = {
        "policy": "p",
        "actions": ["notify"],
        "requested": ["notify", "quarantine"],
        "notify": True,
        "withheld": ["pod not found"],
    }
    first = _entry(rule, verification=not_found, decision=withheld, actions=[], notifications=[])
    waiting = judge(quarantines, [first])
    assert not waiting.passed and not waiting.settled
    assert waiting.reason == (
        "alert not verified against the live pod (pod_not_found); the responder decides it again on the"
        " rule's next alert"
    )
    again = {**_entry(rule), "received_ns": 12_000_000_000}
    assert judge(quarantines, [first, again]).passed
    # Told only (no isolating action asked): nothing is decided again, and the miss is settled.
    notify = {"policy": "p", "actions": ["notify"], "requested": ["notify"], "notify": True}
    notified = Expectation.of(scenario, "r1", Expect(outcome=Outcome.NOTIFIED, slack=False))
    lookup_failed = _entry(rule, verification={"status": "lookup_failed"}, decision=notify, actions=[])
    settled = judge(notified, [lookup_failed])
    assert not settled.passed and settled.settled
    assert settled.reason == "alert not verified against the live pod (lookup_failed)"


async def test_a_replay_nothing_reached_says_so_and_prints_no_verify(
    seeded: Seeded, run_id: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Every alert refused (a wrong sender token): the verify it printed could only find nothing
    (review-replay L1); it says what to fix instead."""

    def refuse(body: bytes) -> tuple[int, bytes]:
        del body
        return 401, b'{"error": "invalid bearer token"}'

    with answering(refuse) as url:
        argv = ["replay", "shell-in-serving-pod", "--to", url, "--pod", pod_ref(seeded, "torchserve")]
        code, out = await cli([*argv, "--kubeconfig", seeded.kubeconfig, "--run-id", run_id], capsys)
    assert code == 1, out
    assert "FAILED shell-in-serving-pod [1]" in out and "HTTP 401" in out, out
    assert "nothing was delivered: fix what the FAILED lines say, then replay again" in out
    assert "check the responder" not in out


async def test_the_printed_verify_names_only_what_got_through(
    seeded: Seeded, run_id: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A control alone sends nothing: no verify with no scenario in it (review-48b L3)."""
    target = tmp_path / "alerts.jsonl"
    argv = ["replay", "benign-serving", "--file", str(target), "--pod", "ml-serving/x-0", "--forge"]
    code, out = await cli([*argv, "--run-id", run_id], capsys)
    assert code == 0, out
    assert "nothing to verify: a control sends nothing" in out
    assert "check the responder" not in out


async def test_a_scenario_none_of_whose_alerts_got_through_is_left_out_of_the_printed_verify(
    seeded: Seeded, run_id: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Named, it would be waited for until --timeout (review-48b L4)."""

    def only_shells(body: bytes) -> tuple[int, bytes]:
        if b"Shell in serving pod" in body:
            return 202, b'{"alert_id": "0123456789abcdef", "status": "accepted"}'
        return 401, b'{"error": "no"}'

    with answering(only_shells) as url:
        names = ["shell-in-serving-pod", "credential-read"]
        argv = ["replay", *names, "--to", url, "--pod", pod_ref(seeded, "torchserve"), "--forge", "--live"]
        code, out = await cli([*argv, "--run-id", run_id], capsys)
    assert code == 1, out
    printed = next(line for line in out.splitlines() if line.startswith("check the responder: "))
    assert "verify shell-in-serving-pod --run-id" in printed, printed
    assert "credential-read" not in printed, printed


@contextlib.contextmanager
def answering(answer: Callable[[bytes], tuple[int, bytes]]) -> Iterator[str]:
    """A sender's HTTP endpoint on loopback answering each POSTed body as ``answer`` says (status,
    JSON body): its URL."""

    class Answering(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            status, body = answer(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            del format, args

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Answering)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


async def test_verify_of_the_wrong_pod_says_where_the_runs_alerts_are(
    chain: ChainFactory, seeded: Seeded, run_id: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """review-replay M3: a scenario with no alert on --pod says what the trail holds of its run."""
    async with chain() as responder:
        await replay(seeded, capsys, responder.http_url, run_id, "shell-in-serving-pod")
        code, out = await run_verify(
            responder, capsys, run_id, "shell-in-serving-pod", extra=("--pod", pod_ref(seeded, "vllm"))
        )
    assert code == 1, out
    assert (
        f"(gave up waiting after --timeout 2 s); the trail holds 2 alert(s) of run {run_id}: Shell in serving"
        f" pod on {pod_ref(seeded, 'torchserve')} (2)"
    ) in out, out
