"""A small client for a running responder's HTTP API (POST /v1/alerts, GET /v1/audit), with the
same authentication options the input accepts. Used by `audit`, `replay`, `verify`, the demo
and the benchmark.

Every way of failing to talk to the responder (a URL it cannot use, a CA or client certificate it
cannot load, a refused connection, a timeout, an answer that is not JSON, an audit trail not of
the shape this version reads) is a :class:`UserError` naming the responder and the problem, so
each command reports it as one line."""

from __future__ import annotations

import errno
import ipaddress
import json
import os
import re
import ssl
import sys
from dataclasses import dataclass
from typing import Any

import aiohttp
import yarl

from responder.audit.answer import AuditEntry, read_answer
from responder.errors import UserError
from responder.sender import DRILL_HEADER

# The API's paths (under a responder's base URL), which commands add to it.
API_PATHS = ("/v1/alerts", "/v1/audit")


def check_base_url(text: str) -> str:
    """``text`` if it is a responder's base URL (``http(s)://HOST[:PORT][/PATH]``), else a
    ValueError saying what is wrong with it (the caller names where it came from)."""
    if any(char.isspace() or not char.isprintable() for char in text):
        raise ValueError(f"{text!r} is not a URL: it has a space or a control character")
    try:
        url = yarl.URL(text)
    except ValueError as exc:
        raise ValueError(f"{text!r} is not a valid URL: {exc}") from None
    if url.scheme not in ("http", "https") or not url.host:
        raise ValueError(f"{text!r} is not an http(s) URL (like https://HOST:PORT)")
    if url.explicit_port == 0:
        raise ValueError(f"{text!r} is not a valid URL: port 0")
    if url.query_string or url.fragment or text.rstrip().endswith(("?", "#")):
        raise ValueError(f"{text!r}: a responder's URL has no query or fragment")
    path = url.path.rstrip("/")
    named = next((api for api in API_PATHS if path.endswith(api)), None)
    if named is not None:
        # Never guessed away: the command adds its own path, and this one would be asked for twice.
        base = str(url.with_path(path.removesuffix(named) or "/")).rstrip("/")
        raise ValueError(
            f"{text!r} names the API path {named}: give the responder's base URL ({base}); the command"
            " adds the path"
        )
    return text


def cleartext_token(base_url: str, auth: ClientAuth) -> str | None:
    """Why a token sent to ``base_url`` crosses the network readable: an http:// URL to a host other
    than loopback (anyone on the path may replay it: send alerts, read the audit trail). None: https,
    loopback, or no token."""
    url = yarl.URL(base_url)
    if not auth.token or url.scheme != "http" or _loopback(url.host or ""):
        return None
    return (
        f"{base_url}: the token goes in cleartext over http:// to {url.host}: use https:// (the"
        " responder's inputs.http.tls), unless a service mesh encrypts the traffic on the way"
    )


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class ClientAuth:
    """How to authenticate to the responder. The fields are the commands' ``--ca``, ``--cert``,
    ``--key`` and (read) ``--token-file``; errors loading the files name those flags."""

    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    token: str | None = None

    def ssl_context(self) -> ssl.SSLContext | None:
        if self.ca_file is None and self.cert_file is None:
            return None
        if self.ca_file is not None:
            _check_readable("--ca", self.ca_file)
        try:
            context = ssl.create_default_context(cafile=self.ca_file)
        except ssl.SSLError as exc:
            raise UserError(
                f"--ca {self.ca_file}: no CA certificate in it (PEM expected): {_ssl_reason(exc)}"
            ) from None
        except OSError as exc:
            raise UserError(f"--ca {self.ca_file}: cannot read: {exc.strerror or exc}") from None
        if self.cert_file:
            _check_readable("--cert", self.cert_file)
            if self.key_file:
                _check_readable("--key", self.key_file)
            try:
                context.load_cert_chain(self.cert_file, self.key_file)
            except (OSError, ssl.SSLError) as exc:
                what = f"--cert {self.cert_file}" + (f" with --key {self.key_file}" if self.key_file else "")
                raise UserError(
                    f"{what}: not a PEM certificate and its private key: {_ssl_reason(exc)}"
                ) from None
        return context

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}


def _check_readable(flag: str, path: str) -> None:
    try:
        with open(path, "rb"):
            pass
    except OSError as exc:
        raise UserError(f"{flag} {path}: cannot read: {exc.strerror or exc}") from None


def _ssl_reason(exc: OSError) -> str:
    """OpenSSL's reason (NO_CERTIFICATE_OR_CRL_FOUND), without the C source line it quotes."""
    if isinstance(exc, ssl.SSLError) and exc.reason:
        return str(exc.reason)
    text = str(exc.strerror or exc or type(exc).__name__)
    return re.sub(r"^\[SSL\] | \(_ssl\.c:\d+\)$", "", text)


@dataclass(frozen=True)
class PostResult:
    status: int
    body: dict[str, Any]
    retry_after: float | None = None


class ResponderClient:
    def __init__(
        self,
        base_url: str,
        auth: ClientAuth | None = None,
        *,
        timeout_seconds: float = 10.0,
        connections: int = 100,
        flag: str | None = None,
    ) -> None:
        """``flag``: the command-line option the URL came from (``--responder``), named in errors."""
        try:
            check_base_url(base_url)
        except ValueError as exc:
            raise UserError(f"{flag or 'responder URL'}: {exc}") from None
        self.base_url = base_url.rstrip("/")
        self._where = f"{flag} {self.base_url}" if flag else f"the responder at {self.base_url}"
        self._auth = auth or ClientAuth()
        cleartext = cleartext_token(self.base_url, self._auth)
        if cleartext is not None:
            print(f"serving-guard: warning: {flag or 'responder URL'} {cleartext}", file=sys.stderr)
        self._timeout_seconds = timeout_seconds
        self._timeout = aiohttp.ClientTimeout(total=timeout_seconds)
        self._connections = connections
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> ResponderClient:
        # Without --ca or --cert, https:// is verified against the system's CAs (never unverified).
        connector = aiohttp.TCPConnector(ssl=self._auth.ssl_context() or True, limit=self._connections)
        self._session = aiohttp.ClientSession(
            connector=connector, timeout=self._timeout, headers=self._auth.headers()
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise RuntimeError("use ResponderClient as an async context manager")
        return self._session

    async def post_alert(self, body: bytes, *, drill: bool = False) -> PostResult:
        """POST one alert; ``drill``: as a drill (the responder refuses it, 403, unless this client's
        credential is its drill token; a responder of a version before drills ignores the header)."""
        headers = {"Content-Type": "application/json"}
        if drill:
            headers[DRILL_HEADER] = "1"
        try:
            url = f"{self.base_url}/v1/alerts"
            async with self.session.post(url, data=body, headers=headers) as response:
                try:
                    payload = await response.json(content_type=None)
                except ValueError:
                    payload = {"error": (await response.text(errors="replace"))[:200]}
                retry = response.headers.get("Retry-After")
                return PostResult(
                    response.status,
                    payload if isinstance(payload, dict) else {},
                    float(retry) if retry and retry.isdigit() else None,
                )
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise self._unreachable(exc) from None

    async def audit(self, **params: str) -> list[AuditEntry]:
        """``GET /v1/audit``: the entries, their shape checked (one line naming the first difference)."""
        query = {k: v for k, v in params.items() if v}
        try:
            async with self.session.get(f"{self.base_url}/v1/audit", params=query) as response:
                try:
                    payload = await response.json(content_type=None)
                except ValueError:
                    if response.status == 200:
                        raise UserError(
                            f"{self._where}: answered {response.status} with a body that is not JSON "
                            "(is that the responder's HTTP input?)"
                        ) from None
                    payload = (await response.text(errors="replace"))[:200]
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise self._unreachable(exc) from None
        if response.status != 200:
            raise UserError(f"audit request failed: HTTP {response.status}: {_error_text(payload)}")
        try:
            return read_answer(payload)
        except ValueError as exc:
            raise UserError(
                f"{self._where}: answered with an audit trail this version cannot read: {exc}"
            ) from None

    def _unreachable(self, exc: BaseException) -> UserError:
        tls = self.base_url.startswith("https:")
        return UserError(f"{self._where}: {describe_failure(exc, self._timeout_seconds, tls=tls)}")


def _error_text(payload: object) -> str:
    """What an error answer says: its ``error`` (the responder's JSON errors are ``{"error": ...}``),
    else the body as it came."""
    if isinstance(payload, dict) and isinstance(payload.get("error"), str):
        return str(payload["error"])
    return payload if isinstance(payload, str) else json.dumps(payload)[:200]


def _cut_off(exc: BaseException) -> bool:
    """The server reset or closed the connection without an answer: while connecting, or on the
    first read (aiohttp's ways of saying so)."""
    if isinstance(exc, aiohttp.ClientConnectorError):
        return isinstance(exc.os_error, ConnectionResetError)
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return True
    return isinstance(exc, aiohttp.ClientOSError) and exc.errno == errno.ECONNRESET


def describe_failure(exc: BaseException, timeout_seconds: float | None = None, *, tls: bool = False) -> str:
    """What went wrong talking to a server, in a few words (``cannot connect: Connection refused``).
    ``tls``: the URL is https://."""
    if tls and _cut_off(exc):
        # A TLS server that refuses the client's certificate (or its lack of one) drops the
        # connection without a TLS alert: with TLS 1.3 after the client thinks itself connected,
        # and has sent its request (then a reset or a close, depending on what the server read).
        return "cannot connect: the server refused the TLS handshake (client certificate?)"
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        cert_error = exc.certificate_error
        reason = getattr(cert_error, "verify_message", None) or str(cert_error)
        return f"cannot connect: its TLS certificate is not trusted ({reason}; see --ca)"
    if isinstance(exc, aiohttp.ClientSSLError):
        return f"cannot connect: TLS handshake failed ({_ssl_reason(exc.os_error)})"
    if isinstance(exc, aiohttp.ClientConnectorDNSError):
        return f"cannot connect: cannot resolve {exc.host}"
    if isinstance(exc, aiohttp.ClientConnectorError):
        os_error = exc.os_error
        reason = os.strerror(os_error.errno) if os_error.errno else os_error.strerror
        return f"cannot connect: {reason or os_error or type(os_error).__name__}"
    if isinstance(exc, TimeoutError):
        within = f" within {timeout_seconds:g}s" if timeout_seconds is not None else ""
        return f"no answer{within}"
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return "the connection closed without an answer (plain http:// to a TLS port?)"
    return f"request failed: {exc or type(exc).__name__}"
