"""The HTTP input: Falco's http_output and the Falcosidekick webhook POST one JSON alert to
/v1/alerts. The answer is 2xx only after the alert is in the journal.

Authentication (a request needs one of those configured):
- mutual TLS: a client certificate signed by ``tls.client_ca_file`` (Falco http_output can
  only do this: it cannot send custom headers);
- a bearer token (Falcosidekick webhook ``customheaders``), compared in constant time.
With only a client CA the TLS handshake itself refuses certificate-less clients; with a CA
and a token, either proves the sender. ``allow_unauthenticated: true`` must be explicit.
"""

from __future__ import annotations

import hmac
import json
import logging
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web

from responder.alert import AlertError, parse_falco_json, rejection_code
from responder.config import HttpInput, SecretRef
from responder.errors import UserError
from responder.ingest.sink import AlertSink, InputName, Overloaded
from responder.ingest.tls_reload import load_server_certificates

log = logging.getLogger("serving_guard.http")

ALERTS_PATH = "/v1/alerts"
TOKEN_REFRESH_SECONDS = 30.0


def server_ssl_context(config: HttpInput, *, token_configured: bool) -> ssl.SSLContext | None:
    tls = config.tls
    if tls is None:
        return None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        load_server_certificates(context, tls)
        if tls.client_ca_file:
            # With a token as the alternative proof, a certificate is optional at the handshake.
            context.verify_mode = ssl.CERT_OPTIONAL if token_configured else ssl.CERT_REQUIRED
    except (OSError, ssl.SSLError) as exc:
        raise UserError(f"inputs.http.tls: cannot load certificates: {exc}") from None
    return context


class TokenSource:
    """The bearer token, re-read from its file now and then so a rotated Secret takes effect."""

    def __init__(self, ref: SecretRef, clock: Callable[[], float] = time.monotonic) -> None:
        self._ref = ref
        self._clock = clock
        self._value = ref.read("inputs.http.token").encode()
        self._read_at = clock()

    def current(self) -> bytes:
        if self._ref.file is not None and self._clock() - self._read_at > TOKEN_REFRESH_SECONDS:
            self._read_at = self._clock()
            try:
                self._value = Path(self._ref.file).read_text(encoding="utf-8").strip().encode() or self._value
            except OSError as exc:
                log.warning("token file unreadable, keeping the previous token", extra={"error": str(exc)})
        return self._value


@dataclass(frozen=True)
class AuthResult:
    ok: bool
    status: int = 200
    reason: str = ""


class Authenticator:
    def __init__(self, config: HttpInput, token: TokenSource | None) -> None:
        self._mtls = config.tls is not None and config.tls.client_ca_file is not None
        self._token = token
        self._open = config.allow_unauthenticated

    def check(self, request: web.Request) -> AuthResult:
        if self._mtls and _has_verified_peer(request):
            return AuthResult(True)
        header = request.headers.get("Authorization", "")
        if self._token is not None and header:
            scheme, _, presented = header.partition(" ")
            if scheme.lower() == "bearer" and hmac.compare_digest(
                presented.strip().encode(), self._token.current()
            ):
                return AuthResult(True)
            return AuthResult(False, 401, "invalid bearer token")
        if self._open:
            return AuthResult(True)
        if self._token is not None:
            return AuthResult(False, 401, "missing bearer token")
        return AuthResult(False, 403, "a client certificate is required")


def _has_verified_peer(request: web.Request) -> bool:
    transport = request.transport
    if transport is None:
        return False
    ssl_object = transport.get_extra_info("ssl_object")
    # getpeercert() is empty unless the chain verified against our client CA.
    return bool(ssl_object is not None and ssl_object.getpeercert())


def _json_error(status: int, error: str, **extra: Any) -> web.Response:
    headers = {}
    if status == 401:
        headers["WWW-Authenticate"] = 'Bearer realm="serving-guard"'
    return web.json_response({"error": error, **extra}, status=status, headers=headers)


def alert_handler(
    sink: AlertSink, authenticator: Authenticator, admission_timeout: float
) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    async def handle(request: web.Request) -> web.StreamResponse:
        auth = authenticator.check(request)
        if not auth.ok:
            sink.reject(InputName.HTTP, "unauthenticated", f"{auth.reason} from {request.remote}")
            return _json_error(auth.status, auth.reason)
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge as exc:
            sink.reject(InputName.HTTP, "too_large", str(exc))
            return _json_error(413, "payload too large", limit_bytes=request.app[MAX_BODY_KEY])
        try:
            alert = parse_falco_json(body)
        except AlertError as exc:
            sink.reject(InputName.HTTP, rejection_code(exc), str(exc))
            hint = ""
            if exc.field == "body" and request.content_type == "text/plain":
                hint = "Falco must run with json_output: true"
            return _json_error(
                400, "invalid alert", field=exc.field, reason=exc.reason, **({"hint": hint} if hint else {})
            )
        try:
            accepted = await sink.submit(alert, InputName.HTTP, wait_seconds=admission_timeout, raw=body)
        except Overloaded as exc:
            response = _json_error(503, "overloaded", reason=exc.reason)
            response.headers["Retry-After"] = str(max(1, round(exc.retry_after_seconds)))
            return response
        # The same bytes web.json_response would send, without a JSON encoder per answer: this is
        # the one response a busy sender gets thousands of times a second.
        status = "accepted" if accepted.new else "already accepted"
        return web.Response(
            text=f'{{"alert_id": {json.dumps(accepted.alert_id)}, "status": "{status}"}}',
            status=202,
            content_type="application/json",
        )

    return handle


MAX_BODY_KEY: web.AppKey[int] = web.AppKey("max_body", int)


def build_input_app(
    config: HttpInput,
    sink: AlertSink,
    authenticator: Authenticator,
    extra_routes: Callable[[web.Application], None] | None = None,
) -> web.Application:
    app = web.Application(client_max_size=config.max_body_bytes)
    app[MAX_BODY_KEY] = config.max_body_bytes
    app.router.add_post(ALERTS_PATH, alert_handler(sink, authenticator, config.admission_timeout_seconds))
    if extra_routes is not None:
        extra_routes(app)
    return app
