"""Drills, from the inputs to the decision (review-replay H1): only the drill token (or `ingest
--drill`) makes an alert a drill; the drill token is no sender's and no audit reader's, at start,
in `config check` and as the files rotate; a drill is decided in dry-run unless
guardrails.enforce_drills, and keyed apart from Falco's alerts."""

from __future__ import annotations

import dataclasses
import inspect
import json
import logging
import sqlite3
from pathlib import Path

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from responder.actions.outcome import OutcomeStatus
from responder.alert_json import parse_falco_json
from responder.cli import main
from responder.config import HttpInput, SecretRef, ServerTLS
from responder.errors import UserError
from responder.incident import IncidentKey
from responder.ingest.http import (
    AUDIT_IS_DRILL_SINCE_ROTATION,
    DRILL_NOT_VOUCHED,
    TOKEN_REFRESH_SECONDS,
    AuditReaders,
    Authenticator,
    AuthResult,
    TokenSource,
    alerts_route,
    drill_shared_since_rotation,
    drill_token_source,
    warn_of_plaintext_token,
)
from responder.ingest.httpserver import Request
from responder.ingest.refusals import RefusalLog
from responder.notify.render import render_incident
from responder.policy import DRY_RUN_BY_DRILL, DRY_RUN_BY_GUARDRAILS, GuardrailState, decide, dry_run_lifted
from responder.sender import Proof, Sender, is_drill
from simulators.falco_json import falco_alert, falco_bytes
from simulators.seed import SeededPod
from tests.helpers import SHELL_RULE, Records
from tests.ingest.test_httpserver_refusals_and_chunks import Journal
from tests.notify.slack_fixtures import all_texts, make_decision, make_report
from tests.notify.slack_fixtures import make_alert as fixture_alert
from tests.notify.slack_fixtures import quarantined as dry_run_of
from tests.responder.test_commands import Seeded, quarantined, write_config
from tests.responder.test_http_input import body_for, post, start
from tests.responder.test_policy import VERIFIED, make_alert, make_config, make_pod

SENDERS = "s3cret-senders-token-value"
DRILLS = "s3cret-drill-token-value"
READERS = "s3cret-audit-token-value"


def _files(tmp_path: Path) -> tuple[SecretRef, SecretRef, SecretRef]:
    refs = []
    for name, token in (("token", SENDERS), ("drill-token", DRILLS), ("audit-token", READERS)):
        (tmp_path / name).write_text(token + "\n")
        refs.append(SecretRef(file=str(tmp_path / name)))
    return refs[0], refs[1], refs[2]


def _request(
    token: str | None = None, *, drill_header: bool = False, names: tuple[str, ...] = (), value: str = "1"
) -> Request:
    headers = {"authorization": f"Bearer {token}"} if token is not None else {}
    if drill_header:
        headers["serving-guard-drill"] = value
    return Request("POST", "/v1/alerts", "", headers, b"", "127.0.0.1", bool(names), names)


def test_only_the_drill_token_sends_a_drill(tmp_path: Path) -> None:
    senders, drills, _ = _files(tmp_path)
    http = HttpInput(token=senders, drill_token=drills)
    authenticator = Authenticator(http, TokenSource(senders), TokenSource(drills))

    def sender(result: AuthResult) -> Sender:
        assert result.ok and result.sender is not None, result
        return result.sender

    drill = sender(authenticator.check(_request(DRILLS)))
    assert (drill.proof, drill.token, drill.drill) == (Proof.DRILL_TOKEN, 1, True)
    assert drill.text() == "drill token 1 from 127.0.0.1"
    assert Sender.from_record(drill.record()) == drill
    falco = sender(authenticator.check(_request(SENDERS)))
    assert (falco.proof, falco.drill) == (Proof.TOKEN, False)
    # The drill header refuses whatever is not the drill token, rather than act on it as Falco's.
    refused = authenticator.check(_request(SENDERS, drill_header=True))
    assert (refused.ok, refused.status, refused.reason) == (False, 403, DRILL_NOT_VOUCHED)
    assert sender(authenticator.check(_request(DRILLS, drill_header=True))).drill
    assert authenticator.check(_request("guess", drill_header=True)).status == 401
    # The header alone never makes a drill.
    assert not authenticator.check(_request(None, drill_header=True)).ok


def test_a_client_certificate_with_the_drill_token_sends_a_drill_naming_both(tmp_path: Path) -> None:
    _, drills, _ = _files(tmp_path)
    tls = ServerTLS(cert_file="c", key_file="k", client_ca_file="ca")
    http = HttpInput(tls=tls, drill_token=drills)
    authenticator = Authenticator(http, None, TokenSource(drills))
    result = authenticator.check(_request(DRILLS, names=("falco",)))
    assert result.sender is not None and result.sender.drill
    assert result.sender.text() == "drill token 1 (certificate falco) from 127.0.0.1"
    falco = authenticator.check(_request(names=("falco",)))
    assert falco.sender is not None and falco.sender.proof is Proof.CERTIFICATE
    assert authenticator.check(_request("wrong", names=("falco",))).sender == falco.sender


def test_a_drill_token_rotated_into_the_senders_token_sends_nothing(tmp_path: Path) -> None:
    senders, drills, _ = _files(tmp_path)
    now = [0.0]
    drill_source = TokenSource(drills, lambda: now[0], what="inputs.http.drill_token")
    authenticator = Authenticator(
        HttpInput(token=senders, drill_token=drills), TokenSource(senders), drill_source
    )
    assert authenticator.check(_request(DRILLS)).ok
    Path(str(drills.file)).write_text(SENDERS + "\n")
    now[0] += TOKEN_REFRESH_SECONDS + 1
    with Records("serving_guard", logging.ERROR) as records:
        refused = authenticator.check(_request(SENDERS))
    assert (refused.ok, refused.status) == (False, 403)
    assert refused.reason == drill_shared_since_rotation("token")
    assert records.messages == [refused.reason]


@pytest.mark.parametrize("other", ["token", "audit_token"])
def test_a_drill_token_holding_another_token_is_refused_at_start(tmp_path: Path, other: str) -> None:
    senders, drills, readers = _files(tmp_path)
    shared = SENDERS if other == "token" else READERS
    Path(str(drills.file)).write_text(f"{DRILLS}\n{shared}\n")
    http = HttpInput(token=senders, audit_token=readers, drill_token=drills)
    with pytest.raises(UserError) as refused:
        drill_token_source(http, TokenSource(senders), TokenSource(readers, what="inputs.http.audit_token"))
    assert str(refused.value).startswith(
        f"inputs.http.drill_token is the same as inputs.http.{other} (or holds one of its tokens)"
    )


def test_config_check_finds_a_drill_token_shared_with_a_sender_and_says_what_drills_do(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    senders, drills, _ = _files(tmp_path)
    head = f"inputs:\n  http:\n    token: {{file: {senders.file}}}\n"
    path = tmp_path / "config.yaml"
    path.write_text(head)
    assert main(["config", "check", str(path)]) == 0
    assert (
        "drills: none over HTTP (inputs.http.drill_token is not set): every alert the input takes is acted"
        " on as Falco's, a `replay --live`'s too (a replay without --live is refused, 403)"
    ) in capsys.readouterr().out
    path.write_text(head + f"    drill_token: {{file: {drills.file}}}\n")
    assert main(["config", "check", str(path)]) == 0
    out = capsys.readouterr().out
    assert (
        "drills: alerts sent with inputs.http.drill_token are drills, in incidents of their own, decided in"
        " dry-run (guardrails.enforce_drills is off)" in out
    )
    Path(str(drills.file)).write_text(SENDERS + "\n")
    assert main(["config", "check", str(path)]) == 1
    err = capsys.readouterr().err
    assert f"{path}:4: inputs.http.drill_token: is the same as inputs.http.token" in err, err
    # The same file named twice is refused as the config loads, with its line.
    path.write_text(head + f"    drill_token: {{file: {senders.file}}}\n")
    assert main(["config", "check", str(path)]) == 2
    err = capsys.readouterr().err
    assert "drill_token names the same secret as token" in err and f"{path}:" in err, err


def test_a_drill_is_decided_in_dry_run_unless_drills_are_enforced() -> None:
    alert = make_alert()
    drill = dataclasses.replace(alert, sender=Sender("127.0.0.1", Proof.DRILL_TOKEN, token=1, drill=True))
    config = make_config()
    falco = decide(alert, make_pod(), VERIFIED, GuardrailState(), config)
    assert not falco.dry_run and falco.changes_pod
    decided = decide(drill, make_pod(), VERIFIED, GuardrailState(), config)
    assert decided.dry_run_by == DRY_RUN_BY_DRILL and decided.changes_pod
    assert not dry_run_lifted(decided, config, drill=True)
    enforced = make_config(guardrails={"enforce_drills": True})
    assert not decide(drill, make_pod(), VERIFIED, GuardrailState(), enforced).dry_run
    # Drills enforced since: the next repeat is decided afresh (and acts).
    assert dry_run_lifted(decided, enforced, drill=True)
    everything = make_config(guardrails={"dry_run": True})
    assert (
        decide(drill, make_pod(), VERIFIED, GuardrailState(), everything).dry_run_by == DRY_RUN_BY_GUARDRAILS
    )


def test_a_drill_and_falcos_alert_are_two_incidents() -> None:
    alert = make_alert()
    drill = dataclasses.replace(alert, sender=Sender("-", Proof.FILE, drill=True))
    falco_key, drill_key = IncidentKey.of(alert), IncidentKey.of(drill)
    assert falco_key != drill_key and falco_key.digest() != drill_key.digest()
    # Falco's alerts keep the incident ids of versions before drills.
    assert falco_key.digest() == IncidentKey(*falco_key[:-1]).digest()
    assert IncidentKey.of(dataclasses.replace(alert, sender=Sender("x", Proof.TOKEN, token=1))) == falco_key


def _write_shell_alert(source: Path, pod: SeededPod, output: str) -> None:
    alert = falco_alert(pod, SHELL_RULE, "Notice", output, {"proc.name": "sh"})
    source.write_text(falco_bytes(alert).decode() + "\n")


def _ingest_a_drill(tmp_path: Path, seeded: Seeded) -> tuple[Path, Path]:
    """A shell alert on vllm-0 ingested with --drill under a config that quarantines shells: the
    config's path and the source's."""
    _, pods, kubeconfig = seeded
    config = write_config(tmp_path, kubeconfig)
    source = tmp_path / "alerts.jsonl"
    _write_shell_alert(source, pods["vllm"], "drill")
    assert main(["ingest", str(source), "--config", str(config), "--settle-seconds", "0", "--drill"]) == 0
    return config, source


def test_ingest_drill_journals_a_drill_in_dry_run_and_without_it_acts(
    tmp_path: Path, seeded: Seeded, capsys: pytest.CaptureFixture[str]
) -> None:
    running, pods, _ = seeded
    config, source = _ingest_a_drill(tmp_path, seeded)
    assert not quarantined(running, pods["vllm"])
    capsys.readouterr()
    assert main(["audit", "--config", str(config), "--format", "json"]) == 0
    (entry,) = json.loads(capsys.readouterr().out)
    assert entry["sender"] == {"address": str(source), "proof": "file", "drill": True}
    assert entry["incident"]["decision"]["dry_run_by"] == "drill"
    assert main(["audit", "--config", str(config), "--format", "incidents"]) == 0
    shown = capsys.readouterr().out
    assert f"sent by   file {source} (drill)" in shown and "(dry-run by drill)" in shown, shown
    # Another alert of the same rule and pod without --drill: Falco's, its own incident, acted on.
    _write_shell_alert(source, pods["vllm"], "falco")
    assert main(["ingest", str(source), "--config", str(config), "--settle-seconds", "0"]) == 0
    assert quarantined(running, pods["vllm"])


# --- review-drills ---------------------------------------------------------------------------------


def test_a_drill_and_falcos_alert_of_the_same_bytes_are_two_alerts() -> None:
    """review-drills M1: a drill replaying a captured alert must not be taken for Falco's delivery of
    it (nor Falco's, later, for the drill's): their ids differ; Falco's id is as before drills."""
    body = json.dumps(fixture_alert().to_falco_json()).encode()
    falco = parse_falco_json(body, Sender("10.0.0.7", Proof.TOKEN, token=1))
    drill = parse_falco_json(body, Sender("10.0.0.8", Proof.DRILL_TOKEN, token=1, drill=True))
    assert drill.alert_id != falco.alert_id
    assert falco.alert_id == parse_falco_json(body).alert_id


def test_the_audit_token_rotated_into_the_drill_token_serves_neither(tmp_path: Path) -> None:
    """review-drills M3: the trail's readers must not send drills, nor the drill token read the trail."""
    senders, drills, readers = _files(tmp_path)
    now = [0.0]
    drill_source = TokenSource(drills, lambda: now[0], what="inputs.http.drill_token")
    audit_source = TokenSource(readers, lambda: now[0], what="inputs.http.audit_token")
    http = HttpInput(token=senders, audit_token=readers, drill_token=drills)
    authenticator = Authenticator(http, TokenSource(senders), drill_source, audit_source)
    trail = AuditReaders(audit_source, TokenSource(senders), drill_source)
    Path(str(readers.file)).write_text(DRILLS + "\n")
    now[0] += TOKEN_REFRESH_SECONDS + 1
    with Records("serving_guard", logging.ERROR) as records:
        sent = authenticator.check(_request(DRILLS))
        headers = {"authorization": f"Bearer {DRILLS}"}
        read = trail.check(Request("GET", "/v1/audit", "", headers, b"", "127.0.0.1", False))
    assert (sent.ok, sent.status, sent.reason) == (False, 403, drill_shared_since_rotation("audit_token"))
    assert (read.ok, read.status, read.reason) == (False, 403, AUDIT_IS_DRILL_SINCE_ROTATION)
    assert records.messages == [sent.reason, AUDIT_IS_DRILL_SINCE_ROTATION]


def test_an_open_input_with_a_drill_token_still_takes_a_request_with_another_bearer(tmp_path: Path) -> None:
    """review-drills L3: a leftover Authorization header (a removed sender token Falcosidekick still
    sends) on an input that takes anyone's alerts is admitted as before drills, not refused 401."""
    _, drills, _ = _files(tmp_path)
    http = HttpInput(allow_unauthenticated=True, drill_token=drills)
    authenticator = Authenticator(http, None, TokenSource(drills))
    leftover = authenticator.check(_request("leftover-sidekick-token"))
    assert leftover.sender is not None and leftover.sender.proof is Proof.NONE
    # Asked as a drill with it: refused, saying this responder's drill token is not it.
    refused = authenticator.check(_request("leftover-sidekick-token", drill_header=True))
    assert (refused.status, refused.reason) == (403, DRILL_NOT_VOUCHED)
    without = Authenticator(HttpInput(allow_unauthenticated=True), None).check(
        _request(None, drill_header=True)
    )
    assert without.reason == f"{DRILL_NOT_VOUCHED}; this responder has no drill token"
    # An empty header asks all the same.
    assert (
        Authenticator(http, None, TokenSource(drills))
        .check(_request(None, drill_header=True, value=""))
        .status
        == 403
    )


def test_a_drill_decided_under_the_global_dry_run_stays_a_drill_when_it_is_lifted() -> None:
    """review-drills L4: guardrails.dry_run turned off lifts no drill's dry-run (enforce_drills does)."""
    drill = dataclasses.replace(make_alert(), sender=Sender("-", Proof.FILE, drill=True))
    decided = decide(drill, make_pod(), VERIFIED, GuardrailState(), make_config(guardrails={"dry_run": True}))
    assert decided.dry_run_by == DRY_RUN_BY_GUARDRAILS
    assert not dry_run_lifted(decided, make_config(), drill=True)
    assert dry_run_lifted(decided, make_config(guardrails={"enforce_drills": True}), drill=True)
    assert dry_run_lifted(decided, make_config())  # Falco's alert: lifted


async def test_a_drill_is_not_bound_to_a_node(tmp_path: Path) -> None:
    """review-drills L7: require_sender_matches_hostname binds Falco's alerts to their node's
    certificate; a drill is a person's replay, vouched for by the drill token."""
    senders, drills, _ = _files(tmp_path)
    tls = ServerTLS(cert_file="c", key_file="k", client_ca_file="ca")
    http = HttpInput(tls=tls, token=senders, drill_token=drills, require_sender_matches_hostname=True)
    sink = Journal()  # takes every alert at once
    authenticator = Authenticator(http, TokenSource(senders), TokenSource(drills))
    route = alerts_route(http, sink, authenticator, RefusalLog("HTTP input", logging.getLogger("test")))
    body = json.dumps(fixture_alert().to_falco_json()).encode()

    async def post(token: str) -> int:
        request = _request(token)
        assert route.check is not None and route.check(request) is None
        request.body = body
        answer = route.handler(request)
        response = await answer if inspect.isawaitable(answer) else answer
        return response.status

    assert await post(SENDERS) == 403  # a sender's token names no node
    assert await post(DRILLS) == 202
    assert [is_drill(alert.sender) for alert in sink.alerts] == [True]


def test_quarantine_refuses_a_drills_incident(
    tmp_path: Path, seeded: Seeded, capsys: pytest.CaptureFixture[str]
) -> None:
    """review-drills M2: a drill's post gives no command to cut the pod, and one pasted from
    elsewhere under the drill's incident is refused, nothing done."""
    running, pods, _ = seeded
    config, _ = _ingest_a_drill(tmp_path, seeded)
    capsys.readouterr()
    assert main(["audit", "--config", str(config), "--format", "json"]) == 0
    (entry,) = json.loads(capsys.readouterr().out)
    incident = entry["incident"]["incident_id"]
    argv = ["quarantine", "--namespace", pods["vllm"].namespace, pods["vllm"].name, "--config", str(config)]
    argv += ["--incident", incident, "--reason", "pasted", "--by", "alice"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert f"--incident {incident}: a drill's incident" in err and "nothing was done" in err, err
    assert not quarantined(running, pods["vllm"])


def test_a_drills_post_says_how_it_came_and_gives_no_command_to_cut_the_pod() -> None:
    """review-drills M2, L6."""
    decision = make_decision(dry_run_by=DRY_RUN_BY_DRILL)
    for sender, how in (
        (
            Sender("/srv/drill.jsonl", Proof.FILE, drill=True),
            "ingested with --drill (`file /srv/drill.jsonl (drill)`)",
        ),
        (Sender("127.0.0.1", Proof.DRILL_TOKEN, token=1, drill=True), "a replay sent with the drill token"),
    ):
        report = make_report(
            alert=dataclasses.replace(fixture_alert(), sender=sender),
            decision=decision,
            outcomes=(dry_run_of(status=OutcomeStatus.DRY_RUN),),
        )
        assert report.quarantine_command() is not None  # what a dry-run of Falco's alert would offer
        message = render_incident(report)
        texts = "\n".join(all_texts(message.blocks))
        assert f":test_tube: *Drill*: {how}" in texts, texts
        assert "To quarantine it by hand" not in texts and "serving-guard quarantine --namespace" not in texts
        assert "*No command to cut the pod*: this is a drill" in texts
        assert message.text.startswith("DRILL: ")
        assert message.text_alone is not None and message.text_alone.startswith("DRILL: ")


def test_a_drill_token_over_plain_http_is_warned_of(tmp_path: Path) -> None:
    """review-drills L8: as the senders' token is."""
    _, drills, _ = _files(tmp_path)
    with Records("serving_guard", logging.WARNING) as records:
        warn_of_plaintext_token(HttpInput(allow_unauthenticated=True, drill_token=drills))
    assert records.messages == [
        "inputs.http.drill_token is accepted over plain HTTP: anyone who can read the traffic can replay it"
        " and send drills; set inputs.http.tls (or make sure a mesh encrypts it)"
    ]


def test_quarantine_refuses_an_incident_whose_opening_alert_cannot_be_read(
    tmp_path: Path, seeded: Seeded, capsys: pytest.CaptureFixture[str]
) -> None:
    """review-session-50 L: whether it is a drill's cannot be told then, so nothing is done under it."""
    running, pods, _ = seeded
    config, _ = _ingest_a_drill(tmp_path, seeded)
    with sqlite3.connect(tmp_path / "journal.db") as journal:
        (incident,) = journal.execute("SELECT incident_id FROM incidents").fetchone()
        journal.execute("UPDATE alerts SET payload = x'00'")
    capsys.readouterr()
    argv = ["quarantine", "--namespace", pods["vllm"].namespace, pods["vllm"].name, "--config", str(config)]
    assert main([*argv, "--incident", incident, "--reason", "pasted", "--by", "alice"]) == 2
    err = capsys.readouterr().err
    assert f"--incident {incident}: its opening alert cannot be read from the journal" in err, err
    assert not quarantined(running, pods["vllm"])


async def test_drills_are_counted_apart_in_the_metrics(tmp_path: Path, seeded: Seeded) -> None:
    """A dashboard of alerts received cannot tell the security team's drills from Falco's without
    a count of its own: serving_guard_drill_alerts_received_total{input} (stop 48 left-out)."""
    senders, drills, _ = _files(tmp_path)
    http = {"token": {"file": senders.file}, "drill_token": {"file": drills.file}}
    responder = await start(tmp_path, seeded[2], http)
    try:
        url = responder.http_url or ""
        falco = await post(url, body_for(seeded[1]), headers={"Authorization": f"Bearer {SENDERS}"})
        drill_headers = {"Authorization": f"Bearer {DRILLS}", "Serving-Guard-Drill": "1"}
        drill = await post(url, body_for(seeded[1], name="triton"), headers=drill_headers)
        assert (falco[0], drill[0], drill[1]["drill"]) == (202, 202, True), (falco, drill)
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"{responder.metrics_url}/metrics") as response,
        ):
            text = await response.text()
    finally:
        await responder.stop()
    samples = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }
    assert samples[("serving_guard_drill_alerts_received_total", (("input", "http"),))] == 1
    received = ("serving_guard_alerts_received_total", (("input", "http"), ("source", "syscall")))
    assert samples[received] == 2


def test_the_audit_summary_marks_a_drill_and_a_possible_forgery(
    tmp_path: Path, seeded: Seeded, capsys: pytest.CaptureFixture[str]
) -> None:
    """A drill's dry-run read as a policy that did not act on a real shell, and a forgery's withheld
    quarantine as an outage, in the summary a reviewer reads (review-operator L1)."""
    _, pods, _ = seeded
    config, source = _ingest_a_drill(tmp_path, seeded)
    forged = falco_alert(pods["triton"], SHELL_RULE, "Notice", "forged", {"proc.name": "sh"})
    forged["output_fields"]["container.id"] = "0123456789ab"
    source.write_text(falco_bytes(forged).decode() + "\n")
    assert main(["ingest", str(source), "--config", str(config), "--settle-seconds", "0"]) == 0
    capsys.readouterr()
    assert main(["audit", "--config", str(config), "--format", "summary"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    (drill,) = [line for line in lines if "/vllm" in line and SHELL_RULE in line]
    assert "DRILL: dry-run: would quarantine" in drill, out
    (forgery,) = [line for line in lines if "/triton" in line and SHELL_RULE in line]
    assert "UNVERIFIED: " in forgery, out
