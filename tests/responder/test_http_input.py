"""The HTTP input over real TLS sockets: authentication modes, limits and error answers."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import ssl
import urllib.parse
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from responder.cluster.api import KubeGateway
from responder.config import HttpInput, SecretRef
from responder.errors import UserError
from responder.ingest.http import (
    AUDIT_TRAIL_OFF,
    SAME_TOKENS_SINCE_ROTATION,
    TOKEN_REFRESH_SECONDS,
    AuditReaders,
    Authenticator,
    AuthResult,
    TokenSource,
    audit_token_source,
)
from responder.ingest.httpserver import Request
from responder.journal.process import ProcessWriter
from responder.service import Responder
from simulators.cluster_emulator import RunningCluster
from simulators.falco_json import falco_alert, falco_bytes
from simulators.pki import TestPKI, make_test_pki
from simulators.seed import SeededPod
from tests.helpers import SHELL_RULE, Records, responder_config
from tests.responder.test_pipeline import all_done

Seeded = tuple[RunningCluster, dict[str, SeededPod], str]
TOKEN = "s3cret-token-value"


@pytest.fixture
def pki(tmp_path: Path) -> TestPKI:
    return make_test_pki(tmp_path / "pki")


def client_context(pki: TestPKI, *, cert: bool = True, rogue: bool = False) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=pki.ca_file)
    if cert:
        pair = pki.rogue_client if rogue else pki.client
        context.load_cert_chain(pair.cert_file, pair.key_file)
    return context


async def start(tmp_path: Path, kubeconfig: str, http: dict[str, Any], **extra: Any) -> Responder:
    config = responder_config(
        tmp_path, kubeconfig, http={"listen": "127.0.0.1:0", **http}, extra=extra or None
    )
    responder = Responder(config, KubeGateway.from_config(config.cluster))
    await responder.start()
    return responder


def body_for(pods: dict[str, SeededPod], name: str = "vllm", **fields: Any) -> bytes:
    return falco_bytes(falco_alert(pods[name], SHELL_RULE, "Notice", "shell", {"proc.name": "sh", **fields}))


async def post(
    url: str,
    body: bytes,
    *,
    ssl_context: ssl.SSLContext | bool = False,
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, Any], dict[str, str]]:
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{url}/v1/alerts", data=body, ssl=ssl_context, headers=headers or {}) as response,
    ):
        payload = await response.json(content_type=None)
        return response.status, payload, dict(response.headers)


@pytest.fixture
async def mtls(tmp_path: Path, seeded: Seeded, pki: TestPKI) -> AsyncIterator[Responder]:
    tls = {"cert_file": pki.server.cert_file, "key_file": pki.server.key_file, "client_ca_file": pki.ca_file}
    responder = await start(tmp_path, seeded[2], {"tls": tls})
    yield responder
    await responder.stop()


async def test_mutual_tls_accepts_a_client_certificate(mtls: Responder, seeded: Seeded, pki: TestPKI) -> None:
    status, payload, _ = await post(mtls.http_url or "", body_for(seeded[1]), ssl_context=client_context(pki))
    assert status == 202 and payload["status"] == "accepted"


@pytest.mark.parametrize("rogue", [False, True])
async def test_mutual_tls_refuses_missing_or_foreign_certificates(
    mtls: Responder, seeded: Seeded, pki: TestPKI, rogue: bool
) -> None:
    context = client_context(pki, cert=rogue, rogue=rogue)
    with pytest.raises((aiohttp.ClientError, ssl.SSLError)):
        await post(mtls.http_url or "", body_for(seeded[1]), ssl_context=context)
    assert mtls.pipeline is not None and mtls.pipeline.stats.processed == 0


async def test_token_authentication(tmp_path: Path, seeded: Seeded) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    responder = await start(tmp_path, seeded[2], {"token": {"file": str(token_file)}})
    try:
        url = responder.http_url or ""
        status, payload, headers = await post(url, body_for(seeded[1]))
        assert status == 401 and payload["error"] == "missing bearer token"
        assert headers["WWW-Authenticate"].startswith("Bearer")
        status, payload, _ = await post(url, body_for(seeded[1]), headers={"Authorization": "Bearer wrong"})
        assert status == 401 and payload["error"] == "invalid bearer token"
        status, _, _ = await post(url, body_for(seeded[1]), headers={"Authorization": f"Bearer {TOKEN}"})
        assert status == 202
        metrics = responder.metrics.render().decode()
        assert 'serving_guard_alerts_rejected_total{input="http",reason="unauthenticated"} 2.0' in metrics
    finally:
        await responder.stop()


async def test_a_token_with_non_ascii_characters_matches_byte_for_byte(
    tmp_path: Path, seeded: Seeded
) -> None:
    token = "jeton-sécurité-トークン"
    token_file = tmp_path / "token"
    token_file.write_text(token + "\n", encoding="utf-8")
    responder = await start(tmp_path, seeded[2], {"token": {"file": str(token_file)}})
    try:
        host, port = (responder.http_url or "").removeprefix("http://").rsplit(":", 1)
        body = body_for(seeded[1])
        reader, writer = await asyncio.open_connection(host, int(port))
        head = f"POST /v1/alerts HTTP/1.1\r\nHost: {host}\r\nContent-Length: {len(body)}\r\n".encode()
        writer.write(head + b"Authorization: Bearer " + token.encode() + b"\r\n\r\n" + body)
        status_line = await asyncio.wait_for(reader.readline(), 5)
        writer.close()
        assert status_line.startswith(b"HTTP/1.1 202"), status_line
    finally:
        await responder.stop()


async def test_client_ca_and_token_each_suffice(tmp_path: Path, seeded: Seeded, pki: TestPKI) -> None:
    os_token = tmp_path / "token"
    os_token.write_text(TOKEN)
    tls = {"cert_file": pki.server.cert_file, "key_file": pki.server.key_file, "client_ca_file": pki.ca_file}
    responder = await start(tmp_path, seeded[2], {"tls": tls, "token": {"file": str(os_token)}})
    try:
        url = responder.http_url or ""
        no_cert = client_context(pki, cert=False)
        assert (await post(url, body_for(seeded[1], n=1), ssl_context=client_context(pki)))[0] == 202
        bearer = {"Authorization": f"Bearer {TOKEN}"}
        assert (await post(url, body_for(seeded[1], n=2), ssl_context=no_cert, headers=bearer))[0] == 202
        assert (await post(url, body_for(seeded[1], n=3), ssl_context=no_cert))[0] == 401
    finally:
        await responder.stop()


async def test_allowed_client_names_keep_out_other_certificates_of_the_same_ca(
    tmp_path: Path, seeded: Seeded, pki: TestPKI
) -> None:
    """A CA that signs others' certificates too (a cluster-wide issuer): with allowed_client_names,
    only a certificate of one of those names sends alerts; a sender's token still counts as its own
    credential."""
    os_token = tmp_path / "token"
    os_token.write_text(TOKEN)
    tls = {
        "cert_file": pki.server.cert_file,
        "key_file": pki.server.key_file,
        "client_ca_file": pki.ca_file,
        "allowed_client_names": ["Falco.", "falcosidekick"],  # compared as DNS does: case and root dot aside
    }
    responder = await start(tmp_path, seeded[2], {"tls": tls, "token": {"file": str(os_token)}})
    try:
        url = responder.http_url or ""
        other = ssl.create_default_context(cafile=pki.ca_file)
        other.load_cert_chain(pki.other_client.cert_file, pki.other_client.key_file)
        assert (await post(url, body_for(seeded[1], n=1), ssl_context=client_context(pki)))[0] == 202
        status, payload, _ = await post(url, body_for(seeded[1], n=2), ssl_context=other)
        assert status == 403
        assert payload["error"] == (
            "client certificate 'model-registry' is not one of inputs.http.tls.allowed_client_names"
        )
        bearer = {"Authorization": f"Bearer {TOKEN}"}
        assert (await post(url, body_for(seeded[1], n=3), ssl_context=other, headers=bearer))[0] == 202
    finally:
        await responder.stop()


@pytest.mark.parametrize(
    ("tls", "message"),
    [
        (
            {"cert_file": "c", "key_file": "k", "allowed_client_names": ["falco"]},
            "allowed_client_names is set without client_ca_file",
        ),
        (
            {"cert_file": "c", "key_file": "k", "client_ca_file": "ca", "allowed_client_names": []},
            "at least 1",
        ),
        (
            {"cert_file": "c", "key_file": "k", "client_ca_file": "ca", "allowed_client_names": [""]},
            "at least 1",
        ),
    ],
)
def test_allowed_client_names_are_checked_in_the_config(
    tmp_path: Path, tls: dict[str, Any], message: str
) -> None:
    with pytest.raises(UserError, match=message) as raised:
        responder_config(tmp_path, "kc", http={"listen": "127.0.0.1:0", "tls": tls})
    assert "inputs.http.tls" in str(raised.value)


def test_an_input_without_authentication_is_refused_at_startup(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="no authentication"):
        responder_config(tmp_path, "kc", http={"listen": "127.0.0.1:0"})


@pytest.fixture
async def open_input(tmp_path: Path, seeded: Seeded) -> AsyncIterator[Responder]:
    responder = await start(tmp_path, seeded[2], {"allow_unauthenticated": True, "max_body_bytes": 4096})
    yield responder
    await responder.stop()


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (b"not json", "body"),
        (b'{"rule": "r"}', "priority"),
        (b'{"rule": "r", "priority": "Loud", "time": "2026-01-01T00:00:00Z"}', "priority"),
        (b'{"rule": "r", "priority": "Notice", "time": "now"}', "time"),
        # Past the digit bound (1,000; Python's int() stops at 4,300 with a ValueError that was a 500).
        (
            b'{"rule": "r", "priority": "Notice", "time": "2026-01-01T00:00:00Z", "n": ' + b"1" * 1001 + b"}",
            "n",  # the field that holds it
        ),
    ],
)
async def test_bad_payloads_get_400_naming_the_field(open_input: Responder, body: bytes, field: str) -> None:
    status, payload, _ = await post(open_input.http_url or "", body)
    assert status == 400
    assert payload["error"] == "invalid alert" and payload["field"] == field and payload["reason"]


async def test_oversized_payload_gets_413(open_input: Responder, seeded: Seeded) -> None:
    status, payload, _ = await post(open_input.http_url or "", body_for(seeded[1], blob="x" * 8000))
    assert status == 413 and payload["limit_bytes"] == 4096


async def test_falcosidekick_payload_and_redelivery(open_input: Responder, seeded: Seeded) -> None:
    alert = falco_alert(seeded[1]["vllm"], SHELL_RULE, "Notice", "shell", {"proc.name": "sh"})
    alert["uuid"] = "0c8e2a54-2c64-4a3c-9d1e-7c6f5d4b3a21"
    alert["source"] = "syscalls"
    alert["time"] = alert["time"].rstrip("0Z") + "Z"  # Go's RFC3339Nano trims trailing zeros
    body = json.dumps(alert).encode()
    first = await post(open_input.http_url or "", body)
    again = await post(open_input.http_url or "", body)
    assert first[0] == again[0] == 202
    assert again[1]["status"] == "already accepted" and again[1]["alert_id"] == first[1]["alert_id"]


async def test_plain_text_falco_output_gets_a_hint(open_input: Responder) -> None:
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            f"{open_input.http_url}/v1/alerts",
            data=b"10:00:00.1: Notice Shell ...",
            headers={"Content-Type": "text/plain"},
        ) as response,
    ):
        payload = await response.json()
    assert response.status == 400 and "json_output: true" in payload["hint"]


async def test_health_readiness_and_metrics(open_input: Responder, seeded: Seeded) -> None:
    await post(open_input.http_url or "", body_for(seeded[1]))
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{open_input.metrics_url}/healthz") as response:
            assert response.status == 200
        async with session.get(f"{open_input.metrics_url}/readyz") as response:
            assert response.status == 200 and (await response.json())["ready"] is True
        async with session.get(f"{open_input.metrics_url}/metrics") as response:
            text = await response.text()
    assert 'serving_guard_alerts_received_total{input="http",source="syscall"}' in text
    assert "serving_guard_alert_to_decision_seconds_bucket" in text
    # Pod names never become label values.
    assert seeded[1]["vllm"].name not in text


async def test_max_connections_caps_the_input_and_is_counted(tmp_path: Path, seeded: Seeded) -> None:
    # Every connection comes from 127.0.0.1: the per-peer cap (unset, an eighth: 2) raised to the whole.
    responder = await start(
        tmp_path,
        seeded[2],
        {"allow_unauthenticated": True, "max_connections": 16, "max_connections_per_peer": 16},
    )
    held: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    try:
        server = responder.input_server
        assert server is not None and server.limits.max_connections == 16
        host, port = (responder.http_url or "").removeprefix("http://").rsplit(":", 1)
        head = b"POST /v1/alerts HTTP/1.1\r\nHost: guard\r\nContent-Length: 2\r\n"
        for _ in range(16):  # senders in the middle of a request
            reader, writer = await asyncio.open_connection(host, int(port))
            writer.write(head)
            held.append((reader, writer))
        async with asyncio.timeout(5):
            while len(server.connections) < 16:
                await asyncio.sleep(0.01)
        reader, writer = await asyncio.open_connection(host, int(port))
        held.append((reader, writer))
        writer.write(head + b"\r\n{}")
        with contextlib.suppress(ConnectionResetError):
            assert await asyncio.wait_for(reader.read(), 5) == b""
        metrics = responder.metrics.render().decode()
        assert "serving_guard_http_connections_refused_total 1.0" in metrics
        assert "serving_guard_http_connections_open 16.0" in metrics
        # The senders already in were not disturbed: each gets its answer.
        reader, writer = held[0]
        writer.write(b"\r\n{}")
        answer = await asyncio.wait_for(reader.readuntil(b"\r\n"), 5)
        assert answer.startswith(b"HTTP/1.1 400 ")  # {} is no alert, but it was read and answered
    finally:
        for _, writer in held:
            writer.close()
        await responder.stop()


async def test_liveness_fails_once_the_journal_writer_is_gone(open_input: Responder, seeded: Seeded) -> None:
    """Nothing can be accepted without the journal's writer: only a restart helps, so the liveness
    check fails (Kubernetes restarts the pod) and the input answers 503 meanwhile."""
    writer = open_input.journal._writer
    assert isinstance(writer, ProcessWriter) and writer._process is not None
    os.kill(writer._process.pid, signal.SIGKILL)
    async with aiohttp.ClientSession() as session:
        for _ in range(200):
            async with session.get(f"{open_input.metrics_url}/healthz") as response:
                if response.status == 503:
                    health = await response.json()
                    break
            await asyncio.sleep(0.05)
        else:
            pytest.fail("liveness stayed ok without the journal's writer")
    assert health == {"status": "failing", "journal": "journal writer process exited with code -9"}
    status, payload, _ = await post(open_input.http_url or "", body_for(seeded[1]))
    assert status == 503 and "journal writer process" in json.dumps(payload)


async def test_readiness_holds_and_alerts_are_taken_while_the_api_server_is_unreachable(
    tmp_path: Path,
) -> None:
    """The only endpoint of the responder's Service must not leave it when the API server is away:
    Falco drops an alert whose connection is refused. Its state is reported instead."""
    kubeconfig = tmp_path / "kc.json"
    kubeconfig.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "current-context": "c",
                "clusters": [{"name": "c", "cluster": {"server": "http://127.0.0.1:9"}}],
                "users": [{"name": "u", "user": {"token": "t"}}],
                "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}],
            }
        )
    )
    responder = await start(
        tmp_path,
        str(kubeconfig),
        {"allow_unauthenticated": True},
        cluster={"request_timeout_seconds": 0.5, "retry": {"attempts": 1}},
    )
    try:
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"{responder.metrics_url}/readyz") as response,
        ):
            payload = await response.json()
        assert response.status == 200 and payload["ready"] is True
        assert payload["journal"] == "ok" and payload["kubernetes"] == "unreachable"
        assert payload["detail"].startswith("kubernetes: ")
        assert "serving_guard_kubernetes_reachable 0.0" in responder.metrics.render().decode()
        pod = SeededPod("ml-serving", "vllm-0", "node-1", "vllm", "vllm/vllm-openai:v0.6", "ab" * 32, {})
        status, _, _ = await post(responder.http_url or "", body_for({"vllm": pod}))
        assert status == 202
    finally:
        await responder.stop()


AUDIT_TOKEN = "audit-readers-token"


async def get_audit(
    url: str, *, ssl_context: ssl.SSLContext | bool = False, token: str | None = None
) -> tuple[int, dict[str, Any]]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{url}/v1/audit", ssl=ssl_context, headers=headers) as response,
    ):
        return response.status, await response.json(content_type=None)


async def test_with_an_audit_token_only_its_holders_read_the_trail_and_they_cannot_send(
    tmp_path: Path, seeded: Seeded, pki: TestPKI
) -> None:
    (tmp_path / "token").write_text(TOKEN + "\n")
    (tmp_path / "audit-token").write_text(AUDIT_TOKEN + "\n")
    tls = {"cert_file": pki.server.cert_file, "key_file": pki.server.key_file, "client_ca_file": pki.ca_file}
    http = {
        "tls": tls,
        "token": {"file": str(tmp_path / "token")},
        "audit_token": {"file": str(tmp_path / "audit-token")},
    }
    responder = await start(tmp_path, seeded[2], http)
    url = responder.http_url or ""
    try:
        status, _, _ = await post(url, body_for(seeded[1]), ssl_context=client_context(pki))
        assert status == 202
        assert responder.pipeline is not None
        await responder.pipeline.drain(timeout=10)
        no_cert = client_context(pki, cert=False)
        # The trail's readers: the audit token, with or without a client certificate.
        for context in (no_cert, client_context(pki)):
            status, payload = await get_audit(url, ssl_context=context, token=AUDIT_TOKEN)
            assert status == 200 and len(payload["entries"]) == 1
        # A sender's credentials do not read it: a client certificate, the senders' token.
        status, payload = await get_audit(url, ssl_context=client_context(pki))
        assert status == 401
        assert payload["error"] == "the audit trail is read with the audit token (inputs.http.audit_token)"
        status, payload = await get_audit(url, ssl_context=no_cert, token=TOKEN)
        assert (status, payload["error"]) == (401, "invalid audit token")
        # Nor does the audit token send alerts.
        status, payload, _ = await post(
            url, body_for(seeded[1]), ssl_context=no_cert, headers={"Authorization": f"Bearer {AUDIT_TOKEN}"}
        )
        assert (status, payload["error"]) == (401, "invalid bearer token")
    finally:
        await responder.stop()


async def test_with_mutual_tls_and_an_audit_token_readers_need_no_certificate_and_senders_still_do(
    tmp_path: Path, seeded: Seeded, pki: TestPKI
) -> None:
    (tmp_path / "audit-token").write_text(AUDIT_TOKEN)
    tls = {"cert_file": pki.server.cert_file, "key_file": pki.server.key_file, "client_ca_file": pki.ca_file}
    audit_token = {"file": str(tmp_path / "audit-token")}
    responder = await start(tmp_path, seeded[2], {"tls": tls, "audit_token": audit_token})
    url = responder.http_url or ""
    no_cert = client_context(pki, cert=False)
    try:
        status, payload = await get_audit(url, ssl_context=no_cert, token=AUDIT_TOKEN)
        assert (status, payload) == (200, {"entries": []})
        status, payload, _ = await post(url, body_for(seeded[1]), ssl_context=no_cert)
        assert (status, payload["error"]) == (403, "a client certificate is required")
        status, payload, _ = await post(
            url, body_for(seeded[1]), ssl_context=no_cert, headers={"Authorization": f"Bearer {AUDIT_TOKEN}"}
        )
        assert status == 403
        status, _, _ = await post(url, body_for(seeded[1]), ssl_context=client_context(pki))
        assert status == 202
    finally:
        await responder.stop()


async def test_without_an_audit_token_no_sender_credential_reads_the_trail(
    mtls: Responder, seeded: Seeded, pki: TestPKI
) -> None:
    """Every Falco node holds a sender's certificate: one under attack must not read the trail
    (other pods' alerts, what was checked and done). Without an audit token it is not served at all,
    and the refusal says what to set."""
    status, _, _ = await post(mtls.http_url or "", body_for(seeded[1]), ssl_context=client_context(pki))
    assert status == 202
    assert mtls.pipeline is not None and await mtls.pipeline.drain(timeout=10)
    status, payload = await get_audit(mtls.http_url or "", ssl_context=client_context(pki))
    assert (status, payload["error"]) == (403, AUDIT_TRAIL_OFF)
    assert "inputs.http.audit_token is not set" in AUDIT_TRAIL_OFF
    with pytest.raises(
        (aiohttp.ClientError, ssl.SSLError)
    ):  # a sender's handshake still needs its certificate
        await get_audit(mtls.http_url or "", ssl_context=client_context(pki, cert=False))


@pytest.mark.parametrize("http", [{"token": {"file": "token"}}, {"allow_unauthenticated": True}])
async def test_without_an_audit_token_neither_a_senders_token_nor_an_open_input_reads_the_trail(
    tmp_path: Path, seeded: Seeded, http: dict[str, Any]
) -> None:
    (tmp_path / "token").write_text(TOKEN)
    http = {
        key: {"file": str(tmp_path / "token")} if key == "token" else value for key, value in http.items()
    }
    with Records("serving_guard", logging.INFO) as records:
        responder = await start(tmp_path, seeded[2], http)
    try:
        said = [m for m in records.messages if m.startswith("GET /v1/audit is not served (403)")]
        assert said and "inputs.http.audit_token is not set" in said[0]
        status, payload = await get_audit(responder.http_url or "", token=TOKEN)
        assert (status, payload["error"]) == (403, AUDIT_TRAIL_OFF)
        assert responder.pipeline is not None
        status, _, _ = await post(
            responder.http_url or "", body_for(seeded[1]), headers={"Authorization": f"Bearer {TOKEN}"}
        )
        assert status == 202  # the senders still send
    finally:
        await responder.stop()


async def test_the_audit_token_reads_the_trail_filtered_by_pod(
    tmp_path: Path, seeded: Seeded, pki: TestPKI
) -> None:
    (tmp_path / "audit-token").write_text(AUDIT_TOKEN)
    tls = {"cert_file": pki.server.cert_file, "key_file": pki.server.key_file, "client_ca_file": pki.ca_file}
    responder = await start(
        tmp_path, seeded[2], {"tls": tls, "audit_token": {"file": str(tmp_path / "audit-token")}}
    )
    try:
        await post(responder.http_url or "", body_for(seeded[1]), ssl_context=client_context(pki))
        assert responder.pipeline is not None and await responder.pipeline.drain(timeout=10)
        async with (
            aiohttp.ClientSession() as session,
            session.get(
                f"{responder.http_url}/v1/audit?pod=ml-serving/vllm-0",
                ssl=client_context(pki, cert=False),
                headers={"Authorization": f"Bearer {AUDIT_TOKEN}"},
            ) as response,
        ):
            entries = (await response.json())["entries"]
        assert len(entries) == 1 and entries[0]["incident"]["actions"][0]["status"] == "quarantined"
    finally:
        await responder.stop()


async def test_an_audit_token_equal_to_the_senders_token_is_refused_at_start(
    tmp_path: Path, seeded: Seeded
) -> None:
    (tmp_path / "token").write_text(TOKEN)
    (tmp_path / "same").write_text(TOKEN + "\n")
    http = {"token": {"file": str(tmp_path / "token")}, "audit_token": {"file": str(tmp_path / "same")}}
    config = responder_config(tmp_path, seeded[2], http={"listen": "127.0.0.1:0", **http})
    responder = Responder(config, KubeGateway.from_config(config.cluster))
    try:
        with pytest.raises(UserError, match=r"audit_token is the same as inputs\.http\.token"):
            await responder.start()
    finally:
        await responder.stop()


json_scalars = st.none() | st.booleans() | st.integers() | st.text(max_size=10)
payloads = st.dictionaries(
    st.sampled_from(["rule", "priority", "time", "output", "output_fields", "tags", "hostname", "source"]),
    st.recursive(
        json_scalars,
        lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=5), c, max_size=3),
        max_leaves=8,
    ),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(payload=payloads)
async def test_fuzzed_payloads_over_http_only_get_4xx_or_202(
    open_input: Responder, payload: dict[str, Any]
) -> None:
    status, answer, _ = await post(open_input.http_url or "", json.dumps(payload).encode())
    assert status in (202, 400), answer


async def test_a_full_pipeline_defers_alerts_and_a_full_journal_answers_503(
    tmp_path: Path, seeded: Seeded
) -> None:
    """Falco's http_output and Falcosidekick drop an alert refused 503 (no retry): past
    journal.max_pending it is journaled deferred (202, "deferred": true) and processed once there is
    room; only a journal at its size bound answers 503 with Retry-After."""
    running, pods, kubeconfig = seeded
    running.emulator.latency_seconds = 0.5  # pod reads are slow, so opened incidents pile up
    responder = await start(
        tmp_path,
        kubeconfig,
        {"allow_unauthenticated": True, "admission_timeout_seconds": 0},
        journal={"max_pending": 10},
    )
    try:
        answers = []
        for n in range(20):
            alert = falco_alert(pods["vllm"], f"Rule {n}", "Notice", "x", {"proc.name": "sh"})
            answers.append(await post(responder.http_url or "", falco_bytes(alert)))
        assert [status for status, _, _ in answers] == [202] * 20
        assert [payload.get("deferred", False) for _, payload, _ in answers[:10]] == [False] * 10
        assert [payload.get("deferred", False) for _, payload, _ in answers[10:]] == [True] * 10
        running.emulator.latency_seconds = 0
        await all_done(responder)
        journal = responder.journal
        journal._full = True  # as check_size finds a journal at journal.max_bytes
        alert = falco_alert(pods["vllm"], "Rule 99", "Notice", "x", {"proc.name": "sh"})
        status, payload, headers = await post(responder.http_url or "", falco_bytes(alert))
        assert status == 503 and payload["error"] == "overloaded" and int(headers["Retry-After"]) >= 1
    finally:
        running.emulator.latency_seconds = 0
        await responder.stop()


async def test_renewed_server_certificates_are_picked_up_without_a_restart(
    tmp_path: Path, seeded: Seeded, pki: TestPKI
) -> None:
    import shutil

    served = tmp_path / "served"
    served.mkdir()
    for name in ("tls.crt", "tls.key"):
        shutil.copy(pki.server.cert_file if name == "tls.crt" else pki.server.key_file, served / name)
    tls = {
        "cert_file": str(served / "tls.crt"),
        "key_file": str(served / "tls.key"),
        "client_ca_file": pki.ca_file,
    }
    responder = await start(tmp_path, seeded[2], {"tls": tls})
    try:
        assert responder.certificates is not None
        assert not responder.certificates.check()  # nothing changed yet
        renewed = make_test_pki(tmp_path / "renewed")  # a new CA signs the renewed server certificate
        shutil.copy(renewed.server.cert_file, served / "tls.crt")
        shutil.copy(renewed.server.key_file, served / "tls.key")
        assert responder.certificates.check()
        # Clients that trust only the new CA now complete the handshake (old clients must be re-issued).
        context = ssl.create_default_context(cafile=renewed.ca_file)
        context.load_cert_chain(pki.client.cert_file, pki.client.key_file)
        status, _, _ = await post(responder.http_url or "", body_for(seeded[1]), ssl_context=context)
        assert status == 202
        (served / "tls.key").write_text("garbage")
        (served / "tls.crt").write_text("garbage")
        assert not responder.certificates.check()  # a broken renewal keeps the working chain
    finally:
        await responder.stop()


async def test_a_client_ca_dropped_by_a_reload_closes_the_connections_it_verified(
    tmp_path: Path, seeded: Seeded, pki: TestPKI
) -> None:
    """A reload reaches connections already open, not only new handshakes: a sender whose CA was
    dropped (revoked) keeps no keep-alive connection it was verified on, and cannot make another."""
    import shutil

    served = tmp_path / "served-ca.crt"
    shutil.copy(pki.ca_file, served)
    tls = {"cert_file": pki.server.cert_file, "key_file": pki.server.key_file, "client_ca_file": str(served)}
    responder = await start(tmp_path, seeded[2], {"tls": tls})
    try:
        assert responder.certificates is not None
        url = urllib.parse.urlsplit(responder.http_url or "")
        body = body_for(seeded[1])
        request = (
            f"POST /v1/alerts HTTP/1.1\r\nHost: {url.netloc}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode() + body
        reader, writer = await asyncio.open_connection(url.hostname, url.port, ssl=client_context(pki))
        try:
            writer.write(request)
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            assert head.startswith(b"HTTP/1.1 202 ") and b"connection: close" not in head.lower()
            await reader.readexactly(int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0]))
            shutil.copy(pki.rogue_ca_file, served)  # the sender's CA dropped, another trusted
            assert responder.certificates.check()
            # The idle connection it was verified on is closed by the server.
            assert await asyncio.wait_for(reader.read(), 10) == b""
        finally:
            writer.close()
        status = None
        with contextlib.suppress(aiohttp.ClientError, ssl.SSLError, ConnectionError):
            status, _, _ = await post(responder.http_url or "", body, ssl_context=client_context(pki))
        assert status is None  # no new handshake either
    finally:
        await responder.stop()


def test_an_audit_token_rotated_into_the_senders_token_stops_serving_the_trail(tmp_path: Path) -> None:
    """Both tokens are re-read as their Secrets rotate: if they become equal, no one reads the
    trail with it (a sender's token must never read it), and the responder says why."""
    now = [0.0]
    (tmp_path / "token").write_text(TOKEN)
    (tmp_path / "audit-token").write_text(AUDIT_TOKEN)
    senders = TokenSource(SecretRef(file=str(tmp_path / "token")), lambda: now[0])
    audit = TokenSource(
        SecretRef(file=str(tmp_path / "audit-token")), lambda: now[0], what="inputs.http.audit_token"
    )
    readers = AuditReaders(audit, senders)

    def reading_with(token: str) -> AuthResult:
        headers = {"authorization": f"Bearer {token}"}
        return readers.check(Request("GET", "/v1/audit", "", headers, b"", "127.0.0.1", False))

    assert reading_with(AUDIT_TOKEN).ok
    (tmp_path / "audit-token").write_text(TOKEN + "\n")
    assert reading_with(AUDIT_TOKEN).ok, "the file is re-read only after the refresh interval"
    now[0] += TOKEN_REFRESH_SECONDS + 1
    with Records("serving_guard", logging.ERROR) as records:
        refused = reading_with(TOKEN)
    assert (refused.ok, refused.status) == (False, 403)
    assert refused.reason == SAME_TOKENS_SINCE_ROTATION
    assert records.messages == [SAME_TOKENS_SINCE_ROTATION]
    assert not reading_with(AUDIT_TOKEN).ok
    # Rotated again to a token of its own: served again.
    (tmp_path / "audit-token").write_text("a-fresh-audit-token")
    now[0] += TOKEN_REFRESH_SECONDS + 1
    assert reading_with("a-fresh-audit-token").ok
    assert reading_with(TOKEN).reason == "invalid audit token"


# -- token files rotated into something unusable ---------------------------------------------------


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b"\xff\xfe not text", "is not UTF-8 text (byte 0 is 0xff)"),
        (b"", "is empty"),
        (b" \n\t\n", "is empty"),
        (None, "cannot read {path}: No such file or directory"),
    ],
)
@pytest.mark.parametrize("what", ["inputs.http.token", "inputs.http.audit_token"])
def test_a_token_file_without_a_usable_token_keeps_the_previous_one(
    tmp_path: Path, content: bytes | None, problem: str, what: str
) -> None:
    now = [0.0]
    path = tmp_path / "token"
    path.write_text(TOKEN)
    source = TokenSource(SecretRef(file=str(path)), lambda: now[0], what=what)
    if content is None:
        path.unlink()
    else:
        path.write_bytes(content)
    now[0] += TOKEN_REFRESH_SECONDS + 1
    with Records("serving_guard", logging.WARNING) as records:
        assert source.current() == (TOKEN.encode(),)
        assert source.current() == (TOKEN.encode(),)  # read again only after the next interval
    shown = problem.format(path=path) if content is None else f"{path} {problem}"
    assert records.messages == [f"{what}: {shown}; keeping the previous token"]
    # A usable token again: it takes effect at the next read.
    path.write_text("rotated-token\n")
    now[0] += TOKEN_REFRESH_SECONDS + 1
    assert source.current() == (b"rotated-token",)


def test_a_token_file_with_two_tokens_accepts_both_for_a_rotation_without_refusals(tmp_path: Path) -> None:
    """Rotating the senders' token: the new one is added on a line of its own, the senders move to
    it, then the old one is taken out. Falcosidekick does not retry a refused alert: no sender may
    be refused on the way."""
    now = [0.0]
    path = tmp_path / "token"
    path.write_text(TOKEN)
    source = TokenSource(SecretRef(file=str(path)), lambda: now[0])
    http = HttpInput(token=SecretRef(file=str(path)))
    senders = Authenticator(http, source)

    def sending_with(token: str) -> AuthResult:
        headers = {"authorization": f"Bearer {token}"}
        return senders.check(Request("POST", "/v1/alerts", "", headers, b"", "127.0.0.1", False))

    path.write_text(f"{TOKEN}\n\n  rotated-token  \n")
    now[0] += TOKEN_REFRESH_SECONDS + 1
    assert source.current() == (TOKEN.encode(), b"rotated-token")
    assert sending_with(TOKEN).ok and sending_with("rotated-token").ok
    assert not sending_with(f"{TOKEN}\nrotated-token").ok  # the file's text is not a token
    assert sending_with("another").reason == "invalid bearer token"
    path.write_text("rotated-token\n")
    now[0] += TOKEN_REFRESH_SECONDS + 1
    assert sending_with("rotated-token").ok
    assert sending_with(TOKEN).reason == "invalid bearer token"


def test_an_audit_token_sharing_a_line_with_the_senders_is_refused_at_start(tmp_path: Path) -> None:
    (tmp_path / "token").write_text(f"{TOKEN}\nnext-senders-token\n")
    (tmp_path / "audit-token").write_text(f"{AUDIT_TOKEN}\nnext-senders-token\n")
    senders = SecretRef(file=str(tmp_path / "token"))
    http = HttpInput(token=senders, audit_token=SecretRef(file=str(tmp_path / "audit-token")))
    with pytest.raises(UserError) as refused:
        audit_token_source(http, TokenSource(senders))
    assert str(refused.value).startswith(
        "inputs.http.audit_token is the same as inputs.http.token (or holds one of its tokens)"
    )


async def test_senders_keep_working_while_the_token_file_holds_no_usable_token(
    tmp_path: Path, seeded: Seeded, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Over HTTP: a token file caught mid-rotation (not UTF-8, empty) is no 500 and no lock-out."""
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    responder = await start(tmp_path, seeded[2], {"token": {"file": str(token_file)}})
    monkeypatch.setattr("responder.ingest.http.TOKEN_REFRESH_SECONDS", -1.0)  # re-read on every request
    try:
        url = responder.http_url or ""
        bearer = {"Authorization": f"Bearer {TOKEN}"}
        for content, problem in ((b"\xc3\x28", "is not UTF-8 text (byte 0 is 0xc3)"), (b"", "is empty")):
            token_file.write_bytes(content)
            with Records("serving_guard", logging.WARNING) as records:
                status, _, _ = await post(url, body_for(seeded[1]), headers=bearer)
            assert status == 202
            assert (
                f"inputs.http.token: {token_file} {problem}; keeping the previous token" in records.messages
            )
        token_file.write_text("rotated-token")
        status, payload, _ = await post(url, body_for(seeded[1]), headers=bearer)
        assert (status, payload["error"]) == (401, "invalid bearer token")
    finally:
        await responder.stop()


# -- GET /v1/audit?since=... out of range -----------------------------------------------------------

LATEST = "2262-04-11T23:47:16.854775807Z"
OUT_OF_RANGE = f": out of range (1970-01-01T00:00:00Z to {LATEST})"


@pytest.mark.parametrize(
    ("since", "reason"),
    [
        ("99999999999999999999", f"since '99999999999999999999'{OUT_OF_RANGE}"),
        ("9" * 5000, f"since '{'9' * 64}'{OUT_OF_RANGE}"),
        ("2263-01-01T00:00:00Z", f"since '2263-01-01T00:00:00Z'{OUT_OF_RANGE}"),
        ("2262-04-11T23:47:16.854775808Z", f"since '2262-04-11T23:47:16.854775808Z'{OUT_OF_RANGE}"),
        ("9999-12-31T23:59:59+01:00", f"since '9999-12-31T23:59:59+01:00'{OUT_OF_RANGE}"),
        ("1969-12-31T23:59:59Z", f"since '1969-12-31T23:59:59Z'{OUT_OF_RANGE}"),
        ("100000000d", f"since '100000000d'{OUT_OF_RANGE}"),
        ("9" * 400 + "s", f"since '{'9' * 64}'{OUT_OF_RANGE}"),
        ("2026-02-30T00:00:00Z", "since: no such date: 2026-02-30"),
        ("²", "since must be like 15m, 2h, 3d, epoch nanoseconds or an RFC 3339 time, got '²'"),
        (
            "yesterday",
            "since must be like 15m, 2h, 3d, epoch nanoseconds or an RFC 3339 time, got 'yesterday'",
        ),
    ],
)
async def test_an_audit_since_out_of_range_is_a_400_naming_it(
    tmp_path: Path, seeded: Seeded, since: str, reason: str
) -> None:
    (tmp_path / "audit-token").write_text(AUDIT_TOKEN)
    http = {"allow_unauthenticated": True, "audit_token": {"file": str(tmp_path / "audit-token")}}
    responder = await start(tmp_path, seeded[2], http)
    try:
        async with (
            aiohttp.ClientSession() as session,
            session.get(
                f"{responder.http_url}/v1/audit",
                params={"since": since},
                headers={"Authorization": f"Bearer {AUDIT_TOKEN}"},
            ) as response,
        ):
            payload = await response.json(content_type=None)
        assert (response.status, payload) == (400, {"error": "bad query", "reason": reason})
    finally:
        await responder.stop()


async def test_audit_since_and_limit_at_their_bounds(tmp_path: Path, seeded: Seeded) -> None:
    (tmp_path / "audit-token").write_text(AUDIT_TOKEN)
    http = {"allow_unauthenticated": True, "audit_token": {"file": str(tmp_path / "audit-token")}}
    responder = await start(tmp_path, seeded[2], http)
    try:
        async with aiohttp.ClientSession() as session:
            for params, status in (
                ({"since": str(2**63 - 1)}, 200),
                ({"since": LATEST}, 200),
                ({"since": "0"}, 200),
                ({"since": "1970-01-01T00:00:00Z"}, 200),
                ({"since": "15m", "limit": "5000"}, 200),
                ({"limit": "5001"}, 400),
                ({"limit": "abc"}, 400),
                ({"limit": "9" * 5000}, 400),
            ):
                async with session.get(
                    f"{responder.http_url}/v1/audit",
                    params=params,
                    headers={"Authorization": f"Bearer {AUDIT_TOKEN}"},
                ) as response:
                    payload = await response.json(content_type=None)
                assert response.status == status, (params, payload)
                if status == 400:
                    shown = repr(params["limit"][:40])
                    assert (
                        payload["reason"] == f"limit must be a whole number between 1 and 5000, got {shown}"
                    )
    finally:
        await responder.stop()


async def test_audit_query_parameters_are_known_and_given_once(tmp_path: Path, seeded: Seeded) -> None:
    (tmp_path / "audit-token").write_text(AUDIT_TOKEN)
    http = {"allow_unauthenticated": True, "audit_token": {"file": str(tmp_path / "audit-token")}}
    responder = await start(tmp_path, seeded[2], http)
    known = "since, pod, run_id, policy, incident, limit, format"
    long_pod = "a" * 7000 + "/b"
    try:
        async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {AUDIT_TOKEN}"}) as session:
            for query, status, reason in (
                # A typo would otherwise answer the whole trail, silently unfiltered.
                ("limt=5", 400, f"unknown parameter 'limt' (known: {known})"),
                ("since=1s&since=zzz", 400, "parameter 'since' given more than once"),
                ("limit=1&limit=2", 400, "parameter 'limit' given more than once"),
                ("format=xml", 400, "format must be json or table, got 'xml'"),
                (
                    f"pod={long_pod}",
                    400,
                    f"pod {long_pod[:320]}...: {('a' * 64)!r} is not a namespace name "
                    "(lower-case letters, digits, '-')",
                ),
                (
                    "policy=a%2Fb",
                    400,
                    "policy 'a/b' is not a policy name (as the config's policies[].name)",
                ),
                (
                    "incident=inc-zz",
                    400,
                    "incident: 'inc-zz' is not an incident id (inc- and 20 hex digits)",
                ),
                ("format=json&limit=1", 200, None),
                ("policy=downloads%20trial", 200, None),
                ("incident=inc-0123456789abcdef0123", 200, None),
                ("since=15m&pod=ml-serving%2Fx&run_id=r&limit=1", 200, None),
            ):
                async with session.get(f"{responder.http_url}/v1/audit?{query}") as response:
                    payload = await response.json(content_type=None)
                assert response.status == status, (query, payload)
                if reason is not None:
                    assert payload == {"error": "bad query", "reason": reason}
                else:
                    assert payload == {"entries": []}
            async with session.get(f"{responder.http_url}/v1/audit?format=table") as response:
                assert response.status == 200 and response.content_type == "text/plain"
                assert (await response.text()).startswith("RECEIVED")
    finally:
        await responder.stop()
