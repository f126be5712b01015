"""A token sent over http:// to a host other than loopback crosses the network readable: the
commands that reach a running responder (audit --responder, replay --to, verify --responder) warn
of it (review-platform L1: they sent it silently, while the README said they never connect
unverified). Nothing here connects: the client warns when it is made."""

from __future__ import annotations

import pytest

from responder.client import ClientAuth, ResponderClient, cleartext_token

TOKEN = ClientAuth(token="s3cr3t")


@pytest.mark.parametrize(
    "url",
    ["http://serving-guard.falco.svc:8443", "http://10.0.0.7:8443", "http://[fd00::1]:8443"],
)
def test_a_token_over_http_to_another_host_is_warned_of(url: str, capsys: pytest.CaptureFixture[str]) -> None:
    ResponderClient(url, TOKEN, flag="--responder")
    host = url.removeprefix("http://").rsplit(":", 1)[0].strip("[]")
    assert capsys.readouterr().err == (
        f"serving-guard: warning: --responder {url}: the token goes in cleartext over http:// to {host}:"
        " use https:// (the responder's inputs.http.tls), unless a service mesh encrypts the traffic on"
        " the way\n"
    )


@pytest.mark.parametrize(
    ("url", "auth"),
    [
        ("https://serving-guard.falco.svc:8443", TOKEN),
        ("http://127.0.0.1:8443", TOKEN),
        ("http://127.8.9.10:8443", TOKEN),
        ("http://[::1]:8443", TOKEN),
        ("http://localhost:8443", TOKEN),
        ("http://serving-guard.falco.svc:8443", ClientAuth()),
    ],
    ids=["https", "loopback", "loopback-range", "ipv6-loopback", "localhost", "no-token"],
)
def test_https_loopback_or_no_token_is_not_warned_of(
    url: str, auth: ClientAuth, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cleartext_token(url, auth) is None
    ResponderClient(url, auth)
    assert capsys.readouterr().err == ""
