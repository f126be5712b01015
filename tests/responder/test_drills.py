"""Drills, from the inputs to the decision (review-replay H1): only the drill token (or `ingest
--drill`) makes an alert a drill; the drill token is no sender's and no audit reader's, at start,
in `config check` and as the files rotate; a drill is decided in dry-run unless
guardrails.enforce_drills, and keyed apart from Falco's alerts."""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

import pytest

from responder.cli import main
from responder.config import HttpInput, SecretRef, ServerTLS
from responder.errors import UserError
from responder.incident import IncidentKey
from responder.ingest.http import (
    DRILL_NOT_VOUCHED,
    DRILL_SHARED_SINCE_ROTATION,
    TOKEN_REFRESH_SECONDS,
    Authenticator,
    AuthResult,
    TokenSource,
    drill_token_source,
)
from responder.ingest.httpserver import Request
from responder.policy import DRY_RUN_BY_DRILL, DRY_RUN_BY_GUARDRAILS, GuardrailState, decide, dry_run_lifted
from responder.sender import Proof, Sender
from simulators.falco_json import falco_alert, falco_bytes
from tests.helpers import SHELL_RULE, Records
from tests.responder.test_commands import Seeded, quarantined, write_config
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


def _request(token: str | None = None, *, drill_header: bool = False, names: tuple[str, ...] = ()) -> Request:
    headers = {"authorization": f"Bearer {token}"} if token is not None else {}
    if drill_header:
        headers["serving-guard-drill"] = "1"
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
    assert (refused.ok, refused.status, refused.reason) == (False, 403, DRILL_SHARED_SINCE_ROTATION)
    assert records.messages == [DRILL_SHARED_SINCE_ROTATION]


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
    http = (
        f"inputs:\n  http:\n    token: {{file: {senders.file}}}\n    drill_token: {{file: {drills.file}}}\n"
    )
    path = tmp_path / "config.yaml"
    path.write_text(http)
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
    path.write_text(
        f"inputs:\n  http:\n    token: {{file: {senders.file}}}\n    drill_token: {{file: {senders.file}}}\n"
    )
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
    assert not dry_run_lifted(decided, config)
    enforced = make_config(guardrails={"enforce_drills": True})
    assert not decide(drill, make_pod(), VERIFIED, GuardrailState(), enforced).dry_run
    # Drills enforced since: the next repeat is decided afresh (and acts).
    assert dry_run_lifted(decided, enforced)
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


def test_ingest_drill_journals_a_drill_in_dry_run_and_without_it_acts(
    tmp_path: Path, seeded: Seeded, capsys: pytest.CaptureFixture[str]
) -> None:
    running, pods, kubeconfig = seeded
    config = write_config(tmp_path, kubeconfig)
    source = tmp_path / "alerts.jsonl"

    def write(output: str) -> None:
        alert = falco_alert(pods["vllm"], SHELL_RULE, "Notice", output, {"proc.name": "sh"})
        source.write_text(falco_bytes(alert).decode() + "\n")

    write("drill")
    ingest = ["ingest", str(source), "--config", str(config), "--settle-seconds", "0"]
    assert main([*ingest, "--drill"]) == 0
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
    write("falco")
    assert main(ingest) == 0
    assert quarantined(running, pods["vllm"])
