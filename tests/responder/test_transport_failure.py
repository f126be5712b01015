"""An API request that got no HTTP answer is told in words, from the socket error under urllib3's
(review-oncall 7; review-session-47 M3: urllib3's NewConnectionError is a timeout's kind, and an
unreachable network read as "timed out"). Real urllib3 requests whose connect raises, no network."""

from __future__ import annotations

import errno
import socket

import pytest
import urllib3
from urllib3.util import connection

from responder.cluster.api import NO_URLLIB3_RETRIES, transport_failure

UNRESOLVED = "cannot resolve the API server's name"


def _raised_by_urllib3(monkeypatch: pytest.MonkeyPatch, raised: BaseException) -> BaseException:
    """What a request made as the gateway makes it (no urllib3 retries) raises when connecting raises."""

    def create_connection(*args: object, **kwargs: object) -> socket.socket:
        raise raised

    monkeypatch.setattr(connection, "create_connection", create_connection)
    with pytest.raises(Exception) as info:
        urllib3.PoolManager(retries=NO_URLLIB3_RETRIES).request("GET", "http://127.0.0.1:9/api", timeout=5.0)
    return info.value


@pytest.mark.parametrize(
    ("raised", "said"),
    [
        (ConnectionRefusedError(errno.ECONNREFUSED, "refused"), "cannot connect: connection refused"),
        (OSError(errno.ENETUNREACH, "x"), "cannot connect: network is unreachable"),
        (OSError(errno.EHOSTUNREACH, "x"), "cannot connect: no route to host"),
        (OSError(errno.EACCES, "x"), "cannot connect: permission denied"),
        (TimeoutError("t"), "timed out: no answer within 5s"),
        (
            socket.gaierror(socket.EAI_NONAME, "unknown"),
            "cannot connect: cannot resolve the API server's name",
        ),
    ],
    ids=["refused", "network-unreachable", "no-route", "denied", "timeout", "unresolved"],
)
def test_a_failed_connect_is_said_in_words(
    monkeypatch: pytest.MonkeyPatch, raised: BaseException, said: str
) -> None:
    failure = _raised_by_urllib3(monkeypatch, raised)
    assert transport_failure(failure, 5.0) == f"{said} ({type(failure).__name__})"


def test_anything_else_is_said_as_it_came() -> None:
    class Odd(Exception):
        @property
        def reason(self) -> str:
            raise RuntimeError("a reason that cannot be read")

    assert transport_failure(ValueError("v"), 5.0) == "ValueError: v"
    assert transport_failure(Odd("o"), 5.0) == "Odd: o"
