"""The refusal log's lines cannot all be taken by one client: each address has a few of its own in
a window, and a sender that proved a credential (a token here) has its own, which unauthenticated
clients cannot take; a credential holder flooding refusals is bounded too. The summary names the
addresses most refusals came from, and the metric still counts every refusal. A running responder
on loopback, its clients on 127.0.0.1 and other loopback addresses (127.0.0.2, ...)."""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from responder.ingest import refusals
from responder.service import Responder
from tests.helpers import Records
from tests.responder.conftest import seeded
from tests.responder.test_http_input import TOKEN, Seeded, start

__all__ = ["seeded"]  # the fixture, used by name

# Six reasons any client gets without a credential.
JUNK = [
    b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",  # not_found
    b"GET /v1/alerts HTTP/1.1\r\nHost: x\r\n\r\n",  # method_not_allowed
    b"POST /v1/alerts HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}",  # unauthenticated
    b"BREW / HTTP/1.1\r\n\r\n",  # bad_request
    b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",  # uri_too_long
    b"GET / HTTP/1.1\r\nHost: x\r\nX: " + b"a" * 17000 + b"\r\n\r\n",  # headers_too_large
]

# Alerts a token holder may send that the responder refuses, each for a reason of its own.
INVALID_ALERTS = {
    b'{"rule": "r", "priority": "Critical"}': "bad_time",
    b'{"rule": "r"}': "bad_priority",
    b'{"priority": "Critical", "time": "2026-01-01T00:00:00Z"}': "bad_rule",
    b"not json": "bad_payload",
}


def alert_post(body: bytes, token: str) -> bytes:
    return (
        b"POST /v1/alerts HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\n"
        + f"Authorization: Bearer {token}\r\nContent-Length: {len(body)}\r\n\r\n".encode()
        + body
    )


class Input:
    """The responder's HTTP input, as clients at several loopback addresses reach it."""

    def __init__(self, responder: Responder) -> None:
        assert responder.http_url is not None and responder.input_server is not None
        host, port = responder.http_url.split("//")[1].rsplit(":", 1)
        self.host, self.port = host, int(port)
        self.responder = responder

    async def send(self, source: str, payload: bytes) -> int:
        """Send ``payload`` from ``source`` and read the answer to the end; its status."""
        reader, writer = await asyncio.open_connection(self.host, self.port, local_addr=(source, 0))
        try:
            writer.write(payload)
            await writer.drain()
            answer = await reader.read()  # the server answers and closes
        finally:
            writer.close()
        return int(answer.split(b" ", 2)[1])

    async def junk(self, sources: list[str]) -> None:
        for source in sources:
            for payload in JUNK:
                assert await self.send(source, payload) >= 400

    def end_window(self) -> None:
        """What the window's timer does 10 s on: the summary, now."""
        assert self.responder.input_server is not None
        self.responder.input_server.refusals.end_window()

    def rejected(self) -> int:
        """``serving_guard_alerts_rejected_total{input="http"}``, every reason together."""
        text = self.responder.metrics.render().decode()
        found = re.findall(r'serving_guard_alerts_rejected_total\{input="http",reason="\w+"\} ([\d.]+)', text)
        return int(sum(float(value) for value in found))


@pytest.fixture
async def token_input(tmp_path: Path, seeded: Seeded) -> AsyncIterator[Input]:
    (tmp_path / "token").write_text(TOKEN)
    responder = await start(tmp_path, seeded[2], {"token": {"file": str(tmp_path / "token")}})
    try:
        yield Input(responder)
    finally:
        await responder.stop()


def one_by_one(records: Records) -> list[logging.LogRecord]:
    """The refusals logged whole (not the summary)."""
    return [
        r
        for r in records.records
        if r.getMessage().startswith("HTTP input refused") and "more in the last" not in r.getMessage()
    ]


def addresses(n: int, first: int = 2) -> list[str]:
    return [f"127.0.0.{number}" for number in range(first, first + n)]


async def test_a_few_addresses_cannot_keep_another_clients_refusal_out_of_the_log(token_input: Input) -> None:
    """Four addresses with six reasons each used to take every line of the window: a sender whose
    token was rotated out (401) was only counted."""
    with Records("serving_guard", logging.WARNING) as records:
        await token_input.junk(addresses(4))
        assert await token_input.send("127.0.0.1", alert_post(b"{}", "an-old-token")) == 401
        token_input.end_window()
    said = one_by_one(records)
    by_address = {peer: sum(r.__dict__["peer"] == peer for r in said) for peer in addresses(4)}
    assert by_address == dict.fromkeys(addresses(4), 3)  # three each, not the six they sent
    mine = [r.getMessage() for r in said if r.__dict__["peer"] == "127.0.0.1"]
    assert mine == ["HTTP input refused 127.0.0.1: 401 invalid bearer token"]
    assert token_input.rejected() == 4 * 6 + 1


async def test_a_senders_refusal_is_logged_whole_whatever_unauthenticated_clients_send(
    token_input: Input,
) -> None:
    """Seven addresses take every line unauthenticated clients have in a window: a token holder's
    invalid alert still has a line of its own, naming it."""
    with Records("serving_guard", logging.WARNING) as records:
        await token_input.junk(addresses(7))
        assert await token_input.send("127.0.0.9", JUNK[0]) == 404  # no room left for it
        body = b'{"rule": "r", "priority": "Critical"}'
        assert await token_input.send("127.0.0.1", alert_post(body, TOKEN)) == 400
        token_input.end_window()
    said = one_by_one(records)
    assert not any(r.__dict__["peer"] == "127.0.0.9" for r in said)
    [mine] = [r for r in said if r.__dict__["peer"] == "127.0.0.1"]
    assert mine.getMessage() == "HTTP input refused 127.0.0.1: 400 invalid alert: field 'time': missing"
    assert (mine.__dict__["reason"], mine.__dict__["sender"]) == ("bad_time", "token 1 from 127.0.0.1")
    total = 7 * 6 + 1 + 1
    assert token_input.rejected() == total  # the metric counts every refusal, as before

    # Named: the addresses with the most refusals only counted. The seventh had two lines before the
    # window's were all taken, so four of its six were counted; the others, three each.
    summary = records.records[-1]
    assert summary.getMessage() == (
        f"HTTP input refused {total - len(said)} more in the last 10 s, not logged one by one (the first"
        " few of each address and sender were); most from 127.0.0.8 (4), 127.0.0.2 (3), 127.0.0.3 (3)"
    )
    assert summary.__dict__["most_from"] == {"127.0.0.8": 4, "127.0.0.2": 3, "127.0.0.3": 3}
    assert summary.__dict__["addresses"] == 8


async def test_a_credential_holders_refusals_are_bounded_too(token_input: Input) -> None:
    """One sender's invalid alerts, several reasons, over and over: a few lines. The token from
    many addresses (many senders): no more lines than the senders' share of a window."""
    with Records("serving_guard", logging.WARNING) as records:
        for _ in range(5):
            for body in INVALID_ALERTS:
                assert await token_input.send("127.0.0.1", alert_post(body, TOKEN)) == 400
        one_sender = one_by_one(records)
        many = addresses(refusals.MAX_SAID_FROM_SENDERS_PER_WINDOW + 5, first=10)
        for source in many:
            assert await token_input.send(source, alert_post(b"not json", TOKEN)) == 400
        token_input.end_window()
    assert len(one_sender) == refusals.MAX_SAID_PER_SENDER
    assert {r.__dict__["reason"] for r in one_sender} < set(INVALID_ALERTS.values())
    said = one_by_one(records)
    assert len(said) == refusals.MAX_SAID_FROM_SENDERS_PER_WINDOW
    sent = 5 * len(INVALID_ALERTS) + len(many)
    assert token_input.rejected() == sent
    summary = records.records[-1]
    assert summary.getMessage().startswith(f"HTTP input refused {sent - len(said)} more in the last 10 s")
    assert summary.__dict__["most_from"]["127.0.0.1"] == 5 * len(INVALID_ALERTS) - len(one_sender)
