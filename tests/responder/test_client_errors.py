"""Reaching a responder goes wrong in one clear line naming the flag and the problem, never a
traceback: for `audit --responder`, `replay --to` and `verify --responder` alike (they share the
client and its options), and so does an answer that is not an audit trail of the shape this version
reads. Also `audit`'s own flags: --since, --limit, --pod, --run-id."""

from __future__ import annotations

import argparse
import asyncio
import copy
import json
import ssl
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from responder.audit.answer import read_answer
from responder.audit.query import AuditQuery, audit_query_from
from responder.cli import main as cli_main
from responder.client import describe_failure
from responder.commands.common import client_auth
from responder.config import MAX_SECRET_BYTES, HttpInput, ServerTLS
from responder.ingest.http import server_ssl_context
from responder.ingest.httpserver import HttpServer, Response, Route
from simulators.pki import TestPKI, make_test_pki
from tests.helpers import loopback_server, refusing_port

# The three ways to name a responder, with the flag each command takes its URL from.
COMMANDS = {
    "audit": (["audit"], "--responder"),
    "replay": (["replay", "drift-exec", "--pod", "ml-serving/x", "--forge"], "--to"),
    "verify": (["verify", "drift-exec", "--run-id", "run-1234", "--timeout", "1"], "--responder"),
}


def usage_error(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    """The last stderr line of an argparse refusal (exit status 2), nothing on stdout."""
    with pytest.raises(SystemExit) as exited:
        cli_main(argv)
    assert exited.value.code == 2
    out, err = capsys.readouterr()
    assert out == "" and "Traceback" not in err
    return err.strip().splitlines()[-1]


def user_error(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    """The error line of a refusal the command makes (exit status 2, one line, no traceback)."""
    code = cli_main(argv)
    out, err = capsys.readouterr()
    assert code == 2, out + err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    return err.strip()


@pytest.fixture
def refusing_url() -> Iterator[str]:
    """A loopback port that refuses connections (bound, not listening) for the whole test."""
    with refusing_port() as port:
        yield f"http://127.0.0.1:{port}"


def argv_for(command: str, url: str, *extra: str) -> tuple[list[str], str]:
    words, flag = COMMANDS[command]
    return [*words, flag, url, *extra], flag


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("", "'' is not an http(s) URL (like https://HOST:PORT)"),
        ("ftp://x", "'ftp://x' is not an http(s) URL (like https://HOST:PORT)"),
        ("127.0.0.1:18443", "'127.0.0.1:18443' is not an http(s) URL (like https://HOST:PORT)"),
        ("http://127.0.0.1:99999", "'http://127.0.0.1:99999' is not a valid URL: Port out of range 0-65535"),
        ("http://[::1:18443", "'http://[::1:18443' is not a valid URL: Invalid IPv6 URL"),
        ("http://127.0.0.1:0", "'http://127.0.0.1:0' is not a valid URL: port 0"),
        ("http://127.0.0.1:1/?x=1", "'http://127.0.0.1:1/?x=1': a responder's URL has no query or fragment"),
        # An API path is never stripped silently: the command would ask for it twice (a bare 404).
        (
            "http://127.0.0.1:18443/v1/audit",
            "'http://127.0.0.1:18443/v1/audit' names the API path /v1/audit: give the responder's base URL"
            " (http://127.0.0.1:18443); the command adds the path",
        ),
        (
            "https://h:8443/guard/v1/alerts/",
            "'https://h:8443/guard/v1/alerts/' names the API path /v1/alerts: give the responder's base URL"
            " (https://h:8443/guard); the command adds the path",
        ),
    ],
)
def test_a_url_the_client_cannot_use_is_refused_at_its_flag(
    command: str, url: str, problem: str, capsys: pytest.CaptureFixture[str]
) -> None:
    argv, flag = argv_for(command, url)
    assert usage_error(argv, capsys) == f"serving-guard {command}: error: argument {flag}: {problem}"


@pytest.mark.parametrize("command", COMMANDS)
def test_a_refused_connection_names_the_flag_and_the_reason(
    command: str, refusing_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    argv, flag = argv_for(command, refusing_url)
    code = cli_main(argv)
    _, err = capsys.readouterr()
    assert code == 2 and "Traceback" not in err
    assert err == f"serving-guard: error: {flag} {refusing_url}: cannot connect: Connection refused\n"


@pytest.mark.parametrize("command", COMMANDS)
def test_an_unusable_ca_file_names_the_flag(
    command: str, refusing_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "nope.pem"
    argv, _ = argv_for(command, refusing_url, "--ca", str(missing))
    line = user_error(argv, capsys)
    assert line == f"serving-guard: error: --ca {missing}: cannot read: No such file or directory"
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("garbage\n")
    argv, _ = argv_for(command, refusing_url, "--ca", str(garbage))
    assert user_error(argv, capsys) == (
        f"serving-guard: error: --ca {garbage}: no CA certificate in it (PEM expected): "
        "NO_CERTIFICATE_OR_CRL_FOUND"
    )
    argv, _ = argv_for(command, refusing_url, "--ca", str(tmp_path))
    assert user_error(argv, capsys) == f"serving-guard: error: --ca {tmp_path}: cannot read: Is a directory"


def test_an_unusable_client_certificate_names_its_flags(
    refusing_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("garbage\n")
    missing = tmp_path / "nope.key"
    base = ["audit", "--responder", refusing_url, "--cert", str(garbage)]
    assert user_error([*base, "--key", str(missing)], capsys) == (
        f"serving-guard: error: --key {missing}: cannot read: No such file or directory"
    )
    assert user_error([*base, "--key", str(garbage)], capsys) == (
        f"serving-guard: error: --cert {garbage} with --key {garbage}: "
        "not a PEM certificate and its private key: PEM lib"
    )


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b"\xff", "not UTF-8 text"),
        (b"", "empty (no token in it)"),
        (b" \n\n", "empty (no token in it)"),
        (b"first\nsecond\n", "the token must be one line without control characters"),
        (b"to\x01ken", "the token must be one line without control characters"),
    ],
)
def test_a_token_file_that_holds_no_usable_token_is_refused(
    command: str,
    content: bytes,
    problem: str,
    refusing_url: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    token_file = tmp_path / "token"
    token_file.write_bytes(content)
    argv, _ = argv_for(command, refusing_url, "--token-file", str(token_file))
    assert user_error(argv, capsys) == f"serving-guard: error: --token-file {token_file}: {problem}"


@pytest.mark.parametrize("command", COMMANDS)
def test_a_token_file_is_read_bounded_and_must_be_a_file(
    command: str, refusing_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """As the config's secret files (MAX_SECRET_BYTES): /dev/zero is refused, not read into memory
    until it fails with a MemoryError; a directory is said to be one."""
    for endless in ("/dev/zero", str(_oversized(tmp_path))):
        argv, _ = argv_for(command, refusing_url, "--token-file", endless)
        assert user_error(argv, capsys) == (
            f"serving-guard: error: --token-file {endless}: larger than 64 KiB, far more than a token"
            " (is that the token's file?)"
        )
    argv, _ = argv_for(command, refusing_url, "--token-file", str(tmp_path))
    assert (
        user_error(argv, capsys)
        == f"serving-guard: error: --token-file {tmp_path}: is a directory, not a file"
    )
    missing = tmp_path / "nope"
    argv, _ = argv_for(command, refusing_url, "--token-file", str(missing))
    assert user_error(argv, capsys) == (
        f"serving-guard: error: --token-file: cannot read {missing}: No such file or directory"
    )


def _oversized(tmp_path: Path) -> Path:
    """A token file one byte past the bound (a token of 64 KiB exactly is still taken)."""
    path = tmp_path / "huge-token"
    path.write_bytes(b"t" * (MAX_SECRET_BYTES + 1))
    return path


def test_a_token_of_the_bound_exactly_is_taken(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_bytes(b"t" * MAX_SECRET_BYTES)
    args = argparse.Namespace(token_file=str(path), ca_file=None, cert_file=None, key_file=None)
    assert client_auth(args).token == "t" * MAX_SECRET_BYTES


@pytest.fixture
async def not_json() -> AsyncIterator[str]:
    """A loopback server answering every request 200 with a plain-text body (a metrics port)."""

    async def answer(request: web.Request) -> web.Response:
        return web.Response(text="# HELP up 1\nup 1\n")

    async with loopback_server(answer, path="*") as port:
        yield f"http://127.0.0.1:{port}"


@pytest.mark.parametrize("command", ["audit", "verify"])
async def test_an_answer_that_is_not_json_is_said_so(
    command: str, not_json: str, capsys: pytest.CaptureFixture[str]
) -> None:
    argv, flag = argv_for(command, not_json)
    code = await asyncio.to_thread(cli_main, argv)
    out, err = capsys.readouterr()
    assert code == 2 and out == ""
    assert err == (
        f"serving-guard: error: {flag} {not_json}: answered 200 with a body that is not JSON "
        "(is that the responder's HTTP input?)\n"
    )


@pytest.fixture
async def silent() -> AsyncIterator[str]:
    """A loopback server that accepts connections and never answers."""
    stop = asyncio.Event()

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await stop.wait()
        writer.close()

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        stop.set()
        server.close()


async def test_a_responder_that_does_not_answer_in_time_is_said_so(
    silent: str, capsys: pytest.CaptureFixture[str]
) -> None:
    argv, _ = argv_for("replay", silent, "--timeout", "0.2")
    code = await asyncio.to_thread(cli_main, argv)
    _, err = capsys.readouterr()
    assert code == 2
    assert err == f"serving-guard: error: --to {silent}: no answer within 0.2s\n"


# The range a since may take, as every refusal of one outside it says.
SINCE_RANGE = "(1970-01-01T00:00:00Z to 2262-04-11T23:47:16.854775807Z)"
SINCES_OUT_OF_RANGE = [
    "99999999999999999999d",
    "9" * 400 + "d",
    "30000d",
    "99999999999999999999",
    "2262-05-01T00:00:00Z",
    "2262-04-11T23:47:16.854775808Z",
    "1969-12-31T23:59:59Z",
]


@pytest.mark.parametrize("since", SINCES_OUT_OF_RANGE)
@pytest.mark.parametrize("where", [["--journal", "j.db"], ["--responder", "http://127.0.0.1:1"]])
def test_audit_since_out_of_range_is_refused(
    since: str, where: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    line = user_error(["audit", *where, "--since", since], capsys)
    assert line == f"serving-guard: error: --since {since[:64]!r}: out of range {SINCE_RANGE}"


@pytest.mark.parametrize("since", [*SINCES_OUT_OF_RANGE, "yesterday", "2026-02-30T00:00:00Z"])
def test_audit_since_is_refused_in_the_words_of_the_http_api(
    since: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """One parser words both: the command's line is the API's reason with the flag for the parameter."""
    with pytest.raises(ValueError) as refused:
        audit_query_from({"since": since})
    reason = str(refused.value)
    assert reason.startswith("since")
    line = user_error(["audit", "--journal", "j.db", "--since", since], capsys)
    assert line == f"serving-guard: error: --{reason}"


@pytest.mark.parametrize("where", [["--journal", "j.db"], ["--responder", "http://127.0.0.1:1"]])
def test_audit_since_must_be_an_amount_or_a_time(
    where: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert user_error(["audit", *where, "--since", "yesterday"], capsys) == (
        "serving-guard: error: --since must be like 15m, 2h, 3d, epoch nanoseconds or an RFC 3339 time, "
        "got 'yesterday'"
    )
    assert user_error(["audit", *where, "--since", "2026-02-30T00:00:00Z"], capsys) == (
        "serving-guard: error: --since: no such date: 2026-02-30"
    )


def test_the_audit_query_refuses_a_since_the_journal_cannot_hold() -> None:
    """The HTTP API's query: a 400 (ValueError), not SQLite's OverflowError (a 500)."""
    with pytest.raises(ValueError) as refused:
        AuditQuery(since_ns=2**63)
    assert str(refused.value) == f"since '9223372036854775808': out of range {SINCE_RANGE}"
    with pytest.raises(ValueError) as refused:
        AuditQuery(since_ns=-1)
    assert str(refused.value) == f"since '-1': out of range {SINCE_RANGE}"
    for since in ("99999999999999999999d", "2262-05-01T00:00:00Z", "1969-12-31T23:59:59Z"):
        with pytest.raises(ValueError) as refused:
            audit_query_from({"since": since})
        assert str(refused.value) == f"since {since!r}: out of range {SINCE_RANGE}"
    with pytest.raises(ValueError, match="limit must be between 1 and 5000"):
        AuditQuery(limit=0)


@pytest.mark.parametrize("value", ["0", "-1", "5001", "x", "1.5"])
@pytest.mark.parametrize("where", [["--journal", "j.db"], ["--responder", "http://127.0.0.1:1"]])
def test_audit_limit_is_refused_at_the_flag_outside_what_the_api_accepts(
    value: str, where: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    line = usage_error(["audit", *where, f"--limit={value}"], capsys)
    problem = f"must be a whole number between 1 and 5000, got {value!r}"
    assert line == f"serving-guard audit: error: argument --limit: {problem}"


@pytest.mark.parametrize(
    ("pod", "problem"),
    [
        ("a/b/c", "--pod must be NAMESPACE/NAME, got 'a/b/c'"),
        ("nopod", "--pod must be NAMESPACE/NAME, got 'nopod'"),
        ("/x", "--pod must be NAMESPACE/NAME, got '/x'"),
        ("ml/", "--pod must be NAMESPACE/NAME, got 'ml/'"),
        ("ML/x", "--pod ML/x: 'ML' is not a namespace name (lower-case letters, digits, '-')"),
        ("ml/x y", "--pod ml/x y: 'x y' is not a pod name (lower-case letters, digits, '-', '.')"),
    ],
)
@pytest.mark.parametrize("where", [["--journal", "j.db"], ["--responder", "http://127.0.0.1:1"]])
def test_audit_pod_must_be_namespace_slash_name(
    pod: str, problem: str, where: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert user_error(["audit", *where, "--pod", pod], capsys) == f"serving-guard: error: {problem}"


def test_audit_pod_accepts_kubernetes_names() -> None:
    assert AuditQuery.parse_pod("ml-serving/vllm-0") == ("ml-serving", "vllm-0")
    assert AuditQuery.parse_pod("a/web.v2-7d9f") == ("a", "web.v2-7d9f")
    with pytest.raises(ValueError, match=r"^pod must be NAMESPACE/NAME, got 'a/b/c'$"):
        AuditQuery.parse_pod("a/b/c")  # the HTTP API's ?pod=


@pytest.fixture
async def tls_server(tmp_path: Path) -> AsyncIterator[tuple[str, TestPKI]]:
    """A loopback HTTPS server with the test PKI's localhost certificate, answering an empty trail."""
    pki = make_test_pki(tmp_path / "pki")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(pki.server.cert_file, pki.server.key_file)

    async def answer(request: web.Request) -> web.Response:
        return web.json_response({"entries": []})

    async with loopback_server(answer, ssl_context=context) as port:
        yield f"https://localhost:{port}", pki


async def test_a_certificate_the_ca_does_not_vouch_for_is_said_so(
    tls_server: tuple[str, TestPKI], capsys: pytest.CaptureFixture[str]
) -> None:
    url, pki = tls_server
    code = await asyncio.to_thread(cli_main, ["audit", "--responder", url, "--ca", pki.ca_file])
    out, err = capsys.readouterr()
    assert code == 0 and err == "" and out.startswith("RECEIVED")
    code = await asyncio.to_thread(cli_main, ["audit", "--responder", url, "--ca", pki.rogue_ca_file])
    out, err = capsys.readouterr()
    assert code == 2 and out == ""
    assert err == (
        f"serving-guard: error: --responder {url}: cannot connect: its TLS certificate is not trusted "
        "(unable to get local issuer certificate; see --ca)\n"
    )


async def test_https_without_ca_is_verified_against_the_system_cas(
    tls_server: tuple[str, TestPKI], capsys: pytest.CaptureFixture[str]
) -> None:
    # No --ca is not "trust anything": the test CA is not among the system's, so this is refused.
    url, _ = tls_server
    code = await asyncio.to_thread(cli_main, ["audit", "--responder", url])
    out, err = capsys.readouterr()
    assert code == 2 and out == ""
    assert err == (
        f"serving-guard: error: --responder {url}: cannot connect: its TLS certificate is not trusted "
        "(unable to get local issuer certificate; see --ca)\n"
    )


# -- a client certificate the responder refuses -------------------------------------------------------

REFUSED_AT_THE_HANDSHAKE = "cannot connect: the server refused the TLS handshake (client certificate?)"


@pytest.fixture
async def mutual_tls_input(tmp_path: Path) -> AsyncIterator[tuple[str, TestPKI]]:
    """The responder's own input server and TLS context, a client certificate required, answering
    an empty trail and accepting alerts."""
    pki = make_test_pki(tmp_path / "pki")
    tls = ServerTLS(cert_file=pki.server.cert_file, key_file=pki.server.key_file, client_ca_file=pki.ca_file)
    context = server_ssl_context(HttpInput(listen="127.0.0.1:0", tls=tls))
    routes = [
        Route("GET", "/v1/audit", lambda request: Response.json(200, {"entries": []})),
        Route(
            "POST", "/v1/alerts", lambda request: Response.json(202, {"alert_id": "a"}), max_body_bytes=65536
        ),
    ]
    server = HttpServer(routes)
    _, port = await server.start("127.0.0.1", 0, context)
    try:
        yield f"https://localhost:{port}", pki
    finally:
        await server.stop(grace_seconds=1.0)


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("certificate", ["none", "from another CA"])
async def test_a_client_certificate_refused_at_the_handshake_is_said_so(
    mutual_tls_input: tuple[str, TestPKI], command: str, certificate: str, capsys: pytest.CaptureFixture[str]
) -> None:
    url, pki = mutual_tls_input
    flags = ["--ca", pki.ca_file]
    if certificate != "none":
        flags += ["--cert", pki.rogue_client.cert_file, "--key", pki.rogue_client.key_file]
    argv, flag = argv_for(command, url, *flags)
    code = await asyncio.to_thread(cli_main, argv)
    _, err = capsys.readouterr()
    assert code == 2
    assert err == f"serving-guard: error: {flag} {url}: {REFUSED_AT_THE_HANDSHAKE}\n"


async def test_the_good_client_certificate_is_served(
    mutual_tls_input: tuple[str, TestPKI], capsys: pytest.CaptureFixture[str]
) -> None:
    url, pki = mutual_tls_input
    flags = ["--ca", pki.ca_file, "--cert", pki.client.cert_file, "--key", pki.client.key_file]
    code = await asyncio.to_thread(cli_main, ["audit", "--responder", url, *flags])
    out, err = capsys.readouterr()
    assert code == 0 and err == "" and out.startswith("RECEIVED")


async def test_a_refusal_during_a_tls_1_2_handshake_is_said_so_too(
    mutual_tls_input: tuple[str, TestPKI],
) -> None:
    """TLS 1.2 refuses the certificate before the client is done (1.3: after, on its first read)."""
    url, pki = mutual_tls_input
    context = ssl.create_default_context(cafile=pki.ca_file)
    context.maximum_version = ssl.TLSVersion.TLSv1_2
    async with aiohttp.ClientSession() as session:
        with pytest.raises(aiohttp.ClientError) as refused:
            await session.get(f"{url}/v1/audit", ssl=context)
    assert describe_failure(refused.value, tls=True) == REFUSED_AT_THE_HANDSHAKE


# -- an answer of the wrong shape --------------------------------------------------------------------

# One entry as the responder answers it (what responder.audit.trail.load_trail produces), to break.
GOOD_ENTRY: dict[str, Any] = {
    "outcome": "opened",
    "rule": "Shell in serving pod",
    "received": "2026-01-01T00:00:00.000000000Z",
    "received_ns": 1_767_225_600_000_000_000,
    "namespace": "ml-serving",
    "pod": "vllm-0",
    "incident_id": "inc-1",
    "state": "done",
    "alert_id": "a1",
    "input": "http",
    "priority": "Warning",
    "alert": {"time": "2026-01-01T00:00:00.000000000Z", "rule": "Shell in serving pod"},
    "incident": {
        "incident_id": "inc-1",
        "count": 1,
        "opened_ns": 1,
        "last_seen_ns": 1,
        "decided_ns": 2,
        "verification": {"status": "verified", "reason": "", "container_name": "vllm"},
        "decision": {"policy": "p", "actions": ["notify", "quarantine"], "withheld": [], "notify": True},
        "actions": [
            {
                "action": "quarantine",
                "status": "quarantined",
                "detail": "",
                "started_ns": 2,
                "finished_ns": 3,
                "duration_ms": 0.0,
                "actor": None,
            }
        ],
        "notifications": [
            {
                "kind": "incident",
                "state": "sent",
                "attempts": 1,
                "channel": "#sec",
                "slack_channel": "C1",
                "slack_ts": "1.2",
                "last_error": None,
                "sent_ns": 4,
            }
        ],
    },
    "timings_ms": {"to_decision": 0.1, "to_quarantine": None, "to_notification": 2},
}


def _changed(path: str, value: object) -> dict[str, Any]:
    """GOOD_ENTRY with the key at ``path`` (dotted, list indexes as numbers) set, or removed for DROP."""
    entry = copy.deepcopy(GOOD_ENTRY)
    *parents, last = path.split(".")
    where: Any = entry
    for part in parents:
        where = where[int(part)] if part.isdigit() else where[part]
    if value is DROP:
        del where[last]
    else:
        where[int(last) if last.isdigit() else last] = value
    return entry


DROP = object()


@pytest.fixture
async def answering() -> AsyncIterator[tuple[str, list[Any]]]:
    """A loopback server answering GET /v1/audit 200 with the JSON in ``bodies[0]``."""
    bodies: list[Any] = [{"entries": []}]

    async def answer(request: web.Request) -> web.Response:
        return web.json_response(bodies[0])

    async with loopback_server(answer) as port:
        yield f"http://127.0.0.1:{port}", bodies


WRONG_SHAPES = [
    ({"entries": [{}]}, "entries[0]: missing 'outcome'"),
    ({"entries": [5]}, "entries[0]: expected an object, got a number"),
    ({"entries": [GOOD_ENTRY, None]}, "entries[1]: expected an object, got null"),
    ({"entries": 5}, "entries: expected an array, got a number"),
    ({"entries": {}}, "entries: expected an array, got an object"),
    ({}, "missing 'entries'"),
    ([], "expected an object, got an array"),
    ("entries", "expected an object, got a string"),
    ({"entries": [_changed("rule", DROP)]}, "entries[0]: missing 'rule'"),
    ({"entries": [_changed("outcome", 5)]}, "entries[0].outcome: expected a string, got a number"),
    (
        {"entries": [_changed("received_ns", True)]},
        "entries[0].received_ns: expected a whole number, got true",
    ),
    (
        {"entries": [_changed("received_ns", 1.5)]},
        "entries[0].received_ns: expected a whole number, got a number",
    ),
    ({"entries": [_changed("pod", [])]}, "entries[0].pod: expected a string or null, got an array"),
    ({"entries": [_changed("alert", "x")]}, "entries[0].alert: expected an object, got a string"),
    ({"entries": [_changed("incident", None)]}, "entries[0].incident: expected an object, got null"),
    (
        {"entries": [_changed("incident.actions", None)]},
        "entries[0].incident.actions: expected an array, got null",
    ),
    (
        {"entries": [_changed("incident.actions.0", 5)]},
        "entries[0].incident.actions[0]: expected an object, got a number",
    ),
    (
        {"entries": [_changed("incident.actions.0.status", DROP)]},
        "entries[0].incident.actions[0]: missing 'status'",
    ),
    (
        {"entries": [_changed("incident.actions.0.finished_ns", "3")]},
        "entries[0].incident.actions[0].finished_ns: expected a whole number, got a string",
    ),
    (
        {"entries": [_changed("incident.decision.actions", "notify")]},
        "entries[0].incident.decision.actions: expected an array, got a string",
    ),
    (
        {"entries": [_changed("incident.decision.withheld", [1])]},
        "entries[0].incident.decision.withheld[0]: expected a string, got a number",
    ),
    (
        {"entries": [_changed("incident.verification", "verified")]},
        "entries[0].incident.verification: expected an object or null, got a string",
    ),
    (
        {"entries": [_changed("incident.notifications.0.attempts", None)]},
        "entries[0].incident.notifications[0].attempts: expected a whole number, got null",
    ),
    (
        {"entries": [_changed("timings_ms.to_quarantine", "1")]},
        "entries[0].timings_ms.to_quarantine: expected a number or null, got a string",
    ),
]


@pytest.mark.parametrize("command", ["audit", "verify"])
@pytest.mark.parametrize(("body", "problem"), WRONG_SHAPES)
async def test_an_answer_of_the_wrong_shape_is_said_so(
    command: str,
    body: object,
    problem: str,
    answering: tuple[str, list[Any]],
    capsys: pytest.CaptureFixture[str],
) -> None:
    url, bodies = answering
    bodies[0] = body
    argv, flag = argv_for(command, url)
    code = await asyncio.to_thread(cli_main, argv)
    out, err = capsys.readouterr()
    assert code == 2 and out == "", out + err
    assert err == (
        f"serving-guard: error: {flag} {url}: answered with an audit trail this version cannot read: "
        f"{problem}\n"
    )


@pytest.mark.parametrize(
    "entry",
    [
        GOOD_ENTRY,
        _changed("incident", DROP),  # an alert with no incident (yet)
        _changed("timings_ms", DROP),
        _changed("incident.decision", None),  # not decided yet
        _changed("incident.decided_ns", DROP),  # an incident pruned before its alerts
        _changed("namespace", None),
        _changed("pod", None),
        _changed("incident_id", None),
        _changed("extra", {"from": "a newer responder"}),  # unknown keys are kept
        _changed("incident.actions.0.leaky_policies", ["allow-x"]),
    ],
)
async def test_an_answer_of_the_right_shape_is_read(
    entry: dict[str, Any], answering: tuple[str, list[Any]], capsys: pytest.CaptureFixture[str]
) -> None:
    url, bodies = answering
    bodies[0] = {"entries": [entry]}
    code = await asyncio.to_thread(cli_main, ["audit", "--responder", url, "--format", "json"])
    out, err = capsys.readouterr()
    assert code == 0 and err == ""
    assert json.loads(out) == [entry]
    code = await asyncio.to_thread(cli_main, ["audit", "--responder", url])
    out, err = capsys.readouterr()
    assert code == 0 and err == "" and "Shell in serving pod" in out


def test_read_answer_names_the_first_difference() -> None:
    assert read_answer({"entries": [GOOD_ENTRY]}) == [GOOD_ENTRY]
    with pytest.raises(ValueError, match=r"^entries\[0\]: missing 'outcome'$"):
        read_answer({"entries": [{}]})


# -- audit --run-id: verify's check ---------------------------------------------------------------


@pytest.mark.parametrize("run_id", ["", "abc", "a" * 65, "run 1234", "run-1234.drift-exec", "-run1234"])
@pytest.mark.parametrize("where", [["--journal", "j.db"], ["--responder", "http://127.0.0.1:1"]])
def test_audit_run_id_is_checked_as_verify_checks_it(
    run_id: str, where: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    problem = f"--run-id {run_id!r}: use 4 to 64 letters, digits, '-' or '_' (it goes into file names)"
    assert user_error(["audit", *where, f"--run-id={run_id}"], capsys) == f"serving-guard: error: {problem}"
    verify = ["verify", "drift-exec", f"--run-id={run_id}", "--responder", "http://127.0.0.1:1"]
    assert user_error(verify, capsys) == f"serving-guard: error: {problem}"


async def test_audit_run_id_goes_to_the_responder(
    answering: tuple[str, list[Any]], capsys: pytest.CaptureFixture[str]
) -> None:
    url, _ = answering
    code = await asyncio.to_thread(cli_main, ["audit", "--responder", url, "--run-id", "run-1234"])
    out, err = capsys.readouterr()
    assert code == 0 and err == "" and out.startswith("RECEIVED")
