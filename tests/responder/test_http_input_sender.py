"""Who sent each alert: the HTTP input journals it with the alert (the certificate's names, which
token, the address; never the token itself), and the audit trail shows it (review 77, item 2)."""

from __future__ import annotations

import json
import sqlite3
import ssl
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from responder.audit import format_incidents, format_table, sender_text
from responder.errors import UserError
from responder.service import Responder
from simulators.falco_json import falco_alert, falco_bytes
from simulators.pki import TestPKI
from tests.helpers import SHELL_RULE, responder_config
from tests.responder.test_http_input import AUDIT_TOKEN, TOKEN, Seeded, client_context, pki, post, start
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


def test_an_input_that_names_no_sender_shows_none() -> None:
    assert sender_text(None) == "-"
    assert sender_text({"address": "10.0.0.9", "proof": "token", "token": 1, "certificate": ["other"]}) == (
        "token 1 (certificate other) from 10.0.0.9"
    )


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
