"""The running responder's HTTP input leaves a trace of what it refuses, without flooding its log:
each refusal is in ``serving_guard_alerts_rejected_total{input="http", reason=...}``, the first of each
reason from each address is logged, the rest summed up once per window. Also what it accepts that it
refused before (a body with a byte-order mark) and what it says at start about unauthenticated input.
Real responders on 127.0.0.1."""

from __future__ import annotations

import logging
import re
import ssl
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from responder.service import Responder
from simulators.pki import TestPKI, make_test_pki
from tests.helpers import Records
from tests.responder.test_http_input import TOKEN, Seeded, body_for, client_context, post, start

BYTE_ORDER_MARK = b"\xef\xbb\xbf"


@pytest.fixture
def pki(tmp_path: Path) -> TestPKI:
    return make_test_pki(tmp_path / "pki")


def rejected(responder: Responder) -> dict[str, float]:
    """``serving_guard_alerts_rejected_total{input="http"}``, by reason."""
    text = responder.metrics.render().decode()
    found = re.findall(r'serving_guard_alerts_rejected_total\{input="http",reason="(\w+)"\} ([\d.]+)', text)
    return {reason: float(value) for reason, value in found}


def refusals_logged(records: Records) -> list[str]:
    return [m for m in records.messages if m.startswith("HTTP input refused")]


async def test_a_flood_of_unauthenticated_requests_is_counted_whole_and_logged_in_two_lines(
    tmp_path: Path, seeded: Seeded
) -> None:
    (tmp_path / "token").write_text(TOKEN)
    responder = await start(tmp_path, seeded[2], {"token": {"file": str(tmp_path / "token")}})
    try:
        with Records("serving_guard", logging.WARNING) as records:
            for number in range(40):
                status, _, _ = await post(responder.http_url or "", body_for(seeded[1], n=number))
                assert status == 401
            assert responder.input_server is not None
            responder.input_server.refusals.end_window()  # what its timer does 10 s on
        assert rejected(responder) == {"unauthenticated": 40.0}
        assert refusals_logged(records) == [
            "HTTP input refused 127.0.0.1: 401 missing bearer token",
            "HTTP input refused 39 more in the last 10 s, not logged one by one (the first few of each "
            "address and sender were); most from 127.0.0.1 (39)",
        ]
        assert records.records[-1].__dict__["by_reason"] == {"unauthenticated": 39}
        assert not any("alert rejected" in m for m in records.messages)  # no line per request
    finally:
        await responder.stop()


async def test_a_wrong_path_and_invalid_alerts_are_counted_by_reason(tmp_path: Path, seeded: Seeded) -> None:
    """Falcosidekick and Talon listen on /: Falco's http_output.url without /v1/alerts is refused
    with 404, which Falco ignores. The responder's side says so."""
    responder = await start(tmp_path, seeded[2], {"allow_unauthenticated": True})
    url = responder.http_url or ""
    try:
        with Records("serving_guard", logging.WARNING) as records:
            async with aiohttp.ClientSession() as session, session.post(f"{url}/", data=b"{}") as response:
                assert response.status == 404
            for _ in range(3):
                assert (await post(url, b'{"rule": "r"}'))[0] == 400
        assert rejected(responder) == {"not_found": 1.0, "bad_priority": 3.0}
        assert refusals_logged(records) == [
            "HTTP input refused 127.0.0.1: 404 no such path: /",
            "HTTP input refused 127.0.0.1: 400 invalid alert: field 'priority': missing",
        ]
    finally:
        await responder.stop()


@pytest.mark.parametrize("certificate", ["none", "from another CA"])
async def test_a_sender_refused_at_the_tls_handshake_is_counted_and_logged_with_the_reason(
    tmp_path: Path, seeded: Seeded, pki: TestPKI, certificate: str
) -> None:
    tls = {"cert_file": pki.server.cert_file, "key_file": pki.server.key_file, "client_ca_file": pki.ca_file}
    responder = await start(tmp_path, seeded[2], {"tls": tls})
    try:
        context = client_context(pki, cert=certificate != "none", rogue=True)
        with Records("serving_guard", logging.WARNING) as records:
            with pytest.raises((aiohttp.ClientError, ssl.SSLError)):
                await post(responder.http_url or "", body_for(seeded[1]), ssl_context=context)
            assert responder.input_server is not None
            responder.input_server.refusals.end_window()
        why = (
            "no client certificate"
            if certificate == "none"
            else "client certificate from an unknown CA (unable to get local issuer certificate)"
        )
        assert refusals_logged(records) == [f"HTTP input refused 127.0.0.1: TLS handshake failed: {why}"]
        assert rejected(responder) == {"tls_handshake": 1.0}
    finally:
        await responder.stop()


async def test_a_body_with_a_byte_order_mark_is_accepted_as_ingest_accepts_one(
    tmp_path: Path, seeded: Seeded
) -> None:
    responder = await start(tmp_path, seeded[2], {"allow_unauthenticated": True})
    try:
        url = responder.http_url or ""
        body = body_for(seeded[1])
        status, payload, _ = await post(url, BYTE_ORDER_MARK + body)
        assert (status, payload["status"]) == (202, "accepted")
        # The alert is the one without the mark: sent again without it, it is the same alert.
        again = await post(url, body)
        assert again[1] == {"alert_id": payload["alert_id"], "status": "already accepted"}
        # One mark is dropped, as ingest drops one; two are not a JSON document.
        status, payload, _ = await post(url, BYTE_ORDER_MARK * 2 + body_for(seeded[1], n=2))
        assert status == 400 and payload["field"] == "body"
    finally:
        await responder.stop()


@pytest.mark.parametrize(
    ("with_token", "also"),
    [(False, ""), (True, " (a request without a token is accepted; one with a wrong token is refused)")],
)
async def test_an_unauthenticated_input_is_warned_of_at_start(
    tmp_path: Path, seeded: Seeded, with_token: bool, also: str
) -> None:
    (tmp_path / "token").write_text(TOKEN)
    http: dict[str, Any] = {"allow_unauthenticated": True}
    if with_token:
        http["token"] = {"file": str(tmp_path / "token")}
    with Records("serving_guard", logging.WARNING) as records:
        responder = await start(tmp_path, seeded[2], http)
        await responder.stop()
    assert (
        "inputs.http.allow_unauthenticated is true: anyone who can reach 127.0.0.1:0 can send alerts and "
        f"have pods quarantined{also}; make sure only Falco can reach the port, or authenticate senders "
        "(tls.client_ca_file, token)"
    ) in records.messages
