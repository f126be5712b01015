"""Reaching a responder goes wrong in one clear line naming the flag and the problem, never a
traceback: for `audit --responder`, `replay --to` and `verify --responder` alike (they share the
client and its options). Also `audit`'s own flags: --since, --limit, --pod."""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from aiohttp import web

from responder.audit import AuditQuery
from responder.cli import main as cli_main
from responder.service import audit_query_from
from simulators.pki import TestPKI, make_test_pki

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
    with socket.socket() as bound:
        bound.bind(("127.0.0.1", 0))
        yield f"http://127.0.0.1:{bound.getsockname()[1]}"


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


@pytest.fixture
async def not_json() -> AsyncIterator[str]:
    """A loopback server answering every request 200 with a plain-text body (a metrics port)."""

    async def answer(request: web.Request) -> web.Response:
        return web.Response(text="# HELP up 1\nup 1\n")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", answer)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


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


@pytest.mark.parametrize(
    "since",
    ["99999999999999999999d", "9" * 400 + "d", "30000d", "99999999999999999999", "2262-05-01T00:00:00Z"],
)
@pytest.mark.parametrize("where", [["--journal", "j.db"], ["--responder", "http://127.0.0.1:1"]])
def test_audit_since_out_of_range_is_refused(
    since: str, where: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    line = user_error(["audit", *where, "--since", since], capsys)
    assert line == (
        f"serving-guard: error: --since {since}: out of range (1970-01-01T00:00:00Z to 2262-04-11T23:47:16Z)"
    )


@pytest.mark.parametrize("where", [["--journal", "j.db"], ["--responder", "http://127.0.0.1:1"]])
def test_audit_since_must_be_an_amount_or_a_time(
    where: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert user_error(["audit", *where, "--since", "1969-12-31T23:59:59Z"], capsys) == (
        "serving-guard: error: --since 1969-12-31T23:59:59Z: out of range "
        "(1970-01-01T00:00:00Z to 2262-04-11T23:47:16Z)"
    )
    assert user_error(["audit", *where, "--since", "yesterday"], capsys) == (
        "serving-guard: error: --since must be like 15m, 2h, 3d, epoch nanoseconds or an RFC 3339 time, "
        "got 'yesterday'"
    )


def test_the_audit_query_refuses_a_since_the_journal_cannot_hold() -> None:
    """The HTTP API's query: a 400 (ValueError), not SQLite's OverflowError (a 500)."""
    with pytest.raises(ValueError, match="since is out of range"):
        AuditQuery(since_ns=2**63)
    with pytest.raises(ValueError, match="since is out of range"):
        AuditQuery(since_ns=-1)
    for since in ("99999999999999999999d", "2262-05-01T00:00:00Z", "1969-12-31T23:59:59Z"):
        with pytest.raises(ValueError):
            audit_query_from({"since": since})
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

    app = web.Application()
    app.router.add_get("/v1/audit", answer)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
    await site.start()
    try:
        yield f"https://localhost:{runner.addresses[0][1]}", pki
    finally:
        await runner.cleanup()


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
