"""Who sent each alert: the HTTP input journals it with the alert (the certificate's names, which
token, the address; never the token itself), and the audit trail shows it (review 77, item 2)."""

from __future__ import annotations

import dataclasses
import json
import sqlite3
import ssl
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from responder.audit.text import format_incidents, format_table
from responder.errors import UserError
from responder.journal.rows import encode_payload
from responder.journal.store import WRITERS, Journal, report_from_record
from responder.notify.render import render_incident
from responder.sender import Proof, Sender, sender_text
from responder.service import Responder
from simulators.falco_json import falco_alert, falco_bytes
from simulators.pki import TestPKI
from tests.helpers import SHELL_RULE, responder_config
from tests.notify.test_slack_render import text_of
from tests.responder.test_http_input import AUDIT_TOKEN, TOKEN, Seeded, client_context, pki, post, start
from tests.responder.test_journal import alert as journal_alert
from tests.responder.test_pipeline import all_done

__all__ = ["pki"]  # the fixture, used by name


def journaled_senders(responder: Responder) -> list[dict[str, Any] | None]:
    conn = sqlite3.connect(responder.config.journal.path)
    try:
        rows = conn.execute("SELECT sender FROM alerts ORDER BY seq").fetchall()
    finally:
        conn.close()
    return [json.loads(sender) if sender else None for (sender,) in rows]


async def audit_entries(responder: Responder, ssl_context: ssl.SSLContext | bool) -> list[dict[str, Any]]:
    async with (
        aiohttp.ClientSession() as session,
        session.get(
            f"{responder.http_url}/v1/audit",
            ssl=ssl_context,
            headers={"Authorization": f"Bearer {AUDIT_TOKEN}"},
        ) as response,
    ):
        assert response.status == 200
        entries: list[dict[str, Any]] = (await response.json())["entries"]
    return entries


def shell_alert(seeded: Seeded, pod: str, n: int) -> bytes:
    target = seeded[1][pod]
    return falco_bytes(falco_alert(target, SHELL_RULE, "Notice", "shell", {"proc.name": "sh", "n": n}))


async def test_each_alert_names_the_certificate_or_token_that_sent_it(
    tmp_path: Path, seeded: Seeded, pki: TestPKI
) -> None:
    """The forger of review 77 (any certificate of the CA claiming the victim's node) is named in the
    trail: its certificate and address, beside Falco's own alerts."""
    (tmp_path / "token").write_text(f"old-senders-token\n{TOKEN}\n")
    (tmp_path / "audit-token").write_text(AUDIT_TOKEN)
    tls = {"cert_file": pki.server.cert_file, "key_file": pki.server.key_file, "client_ca_file": pki.ca_file}
    http = {
        "tls": tls,
        "token": {"file": str(tmp_path / "token")},
        "audit_token": {"file": str(tmp_path / "audit-token")},
    }
    responder = await start(tmp_path, seeded[2], http)
    url = responder.http_url or ""
    other = ssl.create_default_context(cafile=pki.ca_file)
    other.load_cert_chain(pki.other_client.cert_file, pki.other_client.key_file)  # CN=model-registry
    no_cert = client_context(pki, cert=False)
    try:
        assert (await post(url, shell_alert(seeded, "vllm", 1), ssl_context=client_context(pki)))[0] == 202
        assert (await post(url, shell_alert(seeded, "triton", 2), ssl_context=other))[0] == 202
        bearer = {"Authorization": f"Bearer {TOKEN}"}
        assert (await post(url, shell_alert(seeded, "torchserve", 3), ssl_context=no_cert, headers=bearer))[
            0
        ] == 202
        await all_done(responder)
        address = "127.0.0.1"
        assert journaled_senders(responder) == [
            {"address": address, "proof": "certificate", "certificate": ["falco"]},
            {"address": address, "proof": "certificate", "certificate": ["model-registry"]},
            {"address": address, "proof": "token", "token": 2},  # the file's second line
        ]
        conn = sqlite3.connect(responder.config.journal.path)
        dump = "\n".join(conn.iterdump())
        conn.close()
        assert TOKEN not in dump and "old-senders-token" not in dump  # named, never written down

        entries = await audit_entries(responder, no_cert)
        by_pod = {entry["pod"]: entry for entry in entries}
        forged = by_pod[seeded[1]["triton"].name]
        assert forged["sender"] == {
            "address": address,
            "proof": "certificate",
            "certificate": ["model-registry"],
        }
        assert sender_text(forged["sender"]) == f"certificate model-registry from {address}"
        assert sender_text(by_pod[seeded[1]["torchserve"].name]["sender"]) == f"token 2 from {address}"
        table = format_table(entries).splitlines()
        assert table[0].rstrip().endswith("SENDER")
        assert any(line.endswith(f"certificate model-registry from {address}") for line in table)
        story = format_incidents([forged]).splitlines()
        assert story[2] == f"  sent by   certificate model-registry from {address}"
    finally:
        await responder.stop()


async def test_an_open_input_names_the_address_alone(tmp_path: Path, seeded: Seeded) -> None:
    responder = await start(tmp_path, seeded[2], {"allow_unauthenticated": True})
    try:
        assert (await post(responder.http_url or "", shell_alert(seeded, "vllm", 1)))[0] == 202
        await all_done(responder)
        [sender] = journaled_senders(responder)
        assert sender == {"address": "127.0.0.1", "proof": "none"}
        assert sender_text(sender) == "unauthenticated from 127.0.0.1"
    finally:
        await responder.stop()


async def test_slack_names_the_sender_of_an_alert_that_does_not_match_its_pod(
    tmp_path: Path, seeded: Seeded, pki: TestPKI
) -> None:
    """On-call's first question about a possible forgery is whose credential sent it: the warning
    names the certificate (from the journal's record, as after a restart), not only "check who can
    reach the input"."""
    tls = {"cert_file": pki.server.cert_file, "key_file": pki.server.key_file, "client_ca_file": pki.ca_file}
    responder = await start(tmp_path, seeded[2], {"tls": tls})
    other = ssl.create_default_context(cafile=pki.ca_file)
    other.load_cert_chain(pki.other_client.cert_file, pki.other_client.key_file)  # CN=model-registry
    vllm = seeded[1]["vllm"]
    not_its_container = {"proc.name": "sh", "container.id": "fffffffffff0"}
    forged = falco_alert(vllm, SHELL_RULE, "Notice", "shell", not_its_container)
    try:
        assert (await post(responder.http_url or "", falco_bytes(forged), ssl_context=other))[0] == 202
        await all_done(responder)
        conn = sqlite3.connect(responder.config.journal.path)
        [(incident_id,)] = conn.execute("SELECT incident_id FROM incidents").fetchall()
        conn.close()
        record = responder.journal.incident_record(incident_id)
        assert record is not None
        report = report_from_record(record)
        assert report is not None and report.decision.unverified
        assert report.alert.sender == Sender("127.0.0.1", Proof.CERTIFICATE, ("model-registry",))
        text = text_of(render_incident(report))
        assert (
            "Nothing was done to the pod. It was sent by `certificate model-registry from 127.0.0.1`:"
            " check who holds that client certificate, and the Falco on node"
        ) in text
        assert "Check who can reach" not in text
    finally:
        await responder.stop()


def test_an_input_that_names_no_sender_shows_none() -> None:
    assert sender_text(None) == "-"
    assert sender_text({"address": "10.0.0.9", "proof": "token", "token": 1, "certificate": ["other"]}) == (
        "token 1 (certificate other) from 10.0.0.9"
    )
    # A proof of a later version's is named as it is, never taken for an open input.
    assert sender_text({"address": "10.0.0.9", "proof": "telepathy"}) == "telepathy from 10.0.0.9"


@pytest.mark.parametrize(
    "sender",
    [
        Sender("unix:///run/falco/falco.sock", Proof.SOCKET),
        Sender("falco.falco:5060", Proof.SERVER_CERTIFICATE, ("falco-grpc",)),
        Sender("falco.falco:5060", Proof.SERVER_CERTIFICATE),
        Sender("/var/log/falco/events.jsonl", Proof.FILE),
        Sender("-", Proof.FILE),
    ],
)
def test_the_grpc_input_and_ingest_senders_come_back_from_their_records(sender: Sender) -> None:
    assert Sender.from_record(sender.record()) == sender
    assert sender_text(json.loads(sender.record())) == sender.text()


async def test_bound_to_its_node_an_alert_comes_only_from_a_certificate_naming_that_node(
    tmp_path: Path, seeded: Seeded, pki: TestPKI
) -> None:
    """inputs.http.require_sender_matches_hostname: the certificate must name the node the alert
    claims (its hostname, which verification checks the pod against), so that one node's certificate
    cannot speak for another's pods. (The test PKI's certificates are named falco and model-registry:
    an alert claiming node "falco" stands for a node with a certificate of its own.)"""
    (tmp_path / "token").write_text(TOKEN)
    tls = {"cert_file": pki.server.cert_file, "key_file": pki.server.key_file, "client_ca_file": pki.ca_file}
    http = {"tls": tls, "token": {"file": str(tmp_path / "token")}, "require_sender_matches_hostname": True}
    responder = await start(tmp_path, seeded[2], http)
    url = responder.http_url or ""
    vllm = seeded[1]["vllm"]

    def claiming(node: str, n: int) -> bytes:
        alert = falco_alert(vllm, SHELL_RULE, "Notice", "shell", {"proc.name": "sh", "n": n}, hostname=node)
        return falco_bytes(alert)

    try:
        status, payload, _ = await post(url, claiming(vllm.node, 1), ssl_context=client_context(pki))
        assert (status, payload["error"]) == (
            403,
            f"client certificate 'falco' does not name the alert's node ({vllm.node!r}):"
            " inputs.http.require_sender_matches_hostname",
        )
        bearer = {"Authorization": f"Bearer {TOKEN}"}
        no_cert = client_context(pki, cert=False)
        status, payload, _ = await post(url, claiming(vllm.node, 2), ssl_context=no_cert, headers=bearer)
        assert (status, payload["error"]) == (
            403,
            "an alert must come with a client certificate naming its node"
            " (inputs.http.require_sender_matches_hostname)",
        )
        assert (await post(url, claiming("Falco.", 3), ssl_context=client_context(pki)))[0] == 202
        await all_done(responder)
        assert journaled_senders(responder) == [
            {"address": "127.0.0.1", "proof": "certificate", "certificate": ["falco"]}
        ]
    finally:
        await responder.stop()


def test_binding_alerts_to_nodes_needs_client_certificates(tmp_path: Path) -> None:
    http = {"listen": "127.0.0.1:0", "allow_unauthenticated": True, "require_sender_matches_hostname": True}
    with pytest.raises(UserError) as refused:
        responder_config(tmp_path, "kc", http=http)
    said = str(refused.value)
    assert "inputs.http" in said and "require_sender_matches_hostname needs tls.client_ca_file" in said


@pytest.mark.parametrize("writer", WRITERS)
def test_the_sender_comes_back_with_a_pending_deferred_or_repeat_alert(tmp_path: Path, writer: str) -> None:
    """The sender travels on the alert itself, so every row kind keeps it, through the writer
    process too, and an alert taken up after a restart (pending or deferred) still names it: its
    Slack warning then says who sent it."""
    path = tmp_path / "j.db"
    sender = Sender("10.0.0.7", Proof.TOKEN, ("falco-node-a",), token=2)
    pending, deferred, repeat = (dataclasses.replace(journal_alert(n), sender=sender) for n in (1, 2, 3))
    journal = Journal(str(path), max_bytes=64 * 1024 * 1024, retention_seconds=3600.0, writer=writer)
    journal.open()
    try:
        assert journal.run_sync(Journal.op_append_alert(pending, "http", 10, encode_payload(pending)))
        assert journal.run_sync(Journal.op_append_deferred(deferred, "http", 20, encode_payload(deferred)))
        assert journal.run_sync(
            Journal.op_append_duplicate(repeat, "http", 30, encode_payload(repeat), "incident-1", 2)
        )
    finally:
        journal.close()
    conn = sqlite3.connect(path)
    try:
        stored = [json.loads(s) for (s,) in conn.execute("SELECT sender FROM alerts ORDER BY seq")]
    finally:
        conn.close()
    as_recorded = {"address": "10.0.0.7", "proof": "token", "certificate": ["falco-node-a"], "token": 2}
    assert stored == [as_recorded] * 3

    journal = Journal(str(path), max_bytes=64 * 1024 * 1024, retention_seconds=3600.0, writer=writer)
    journal.open()
    try:
        [taken_up] = journal.pending_alerts()
        assert taken_up.alert == pending and taken_up.alert.sender == sender
        [(seq, _, _)] = journal.deferred_rows(0, 10)
        waiting = journal.deferred_alert(seq)
        assert waiting is not None and waiting.alert == deferred
    finally:
        journal.close()


def test_a_sender_record_this_version_cannot_read_leaves_the_alert_readable(tmp_path: Path) -> None:
    path = tmp_path / "j.db"
    journal = Journal(str(path), max_bytes=64 * 1024 * 1024, retention_seconds=3600.0, writer="thread")
    journal.open()
    try:
        journal.run_sync(Journal.op_append_alert(journal_alert(1), "http", 10))
    finally:
        journal.close()
    conn = sqlite3.connect(path)
    conn.execute("""UPDATE alerts SET sender = '{"address": "10.0.0.7", "proof": "telepathy"}'""")
    conn.commit()
    conn.close()
    journal = Journal(str(path), max_bytes=64 * 1024 * 1024, retention_seconds=3600.0, writer="thread")
    journal.open()
    try:
        [taken_up] = journal.pending_alerts()
        assert taken_up.alert == journal_alert(1) and taken_up.alert.sender is None
    finally:
        journal.close()
    assert Sender.from_record("not json") is None
    assert Sender.from_record('{"address": "a", "proof": "token", "token": true}') == Sender("a", Proof.TOKEN)
