"""The HTTP input: Falco's http_output and the Falcosidekick webhook POST one JSON alert to
/v1/alerts. The answer is 2xx only after the alert is in the journal.

Authentication (a request needs one of those configured):
- mutual TLS: a client certificate signed by ``tls.client_ca_file`` (Falco http_output can
  only do this: it cannot send custom headers);
- a bearer token (Falcosidekick webhook ``customheaders``), compared in constant time.
With only a client CA the TLS handshake itself refuses certificate-less clients; with a CA
and a token, either proves a sender that presents no certificate (one that presents a certificate
of another CA is refused at the handshake: OpenSSL verifies what is presented). ``allow_unauthenticated:
true`` must be explicit, and is refused beside a client CA (the config says why).

Refusals (authentication, framing, size, invalid alerts, TLS handshakes) are counted by reason and
logged rate-limited (``refusals.RefusalLog``), never one line per request.

Reading the audit trail (GET /v1/audit) is not sending alerts: only ``audit_token`` reads it, and
it cannot send alerts; without one the trail is not served (403). Every Falco node holds a sender's
credential, and a node under attack is where a stolen one comes from.

Each alert is journaled with who sent it (``Alert.sender``): the address, the client certificate's
names, which token matched (never the token).
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import sqlite3
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from responder.alert import WHOLE_PAYLOAD, Alert, AlertError, rejection_code
from responder.alert_json import parse_falco_json
from responder.config import CERTIFICATE_FILE, MAX_CERTIFICATE_BYTES, MAX_SECRET_BYTES, HttpInput, SecretRef
from responder.errors import UserError
from responder.ingest.httpserver import HttpServer, Limits, Request, Response, Route
from responder.ingest.refusals import RefusalLog
from responder.ingest.sink import Accepted, AlertSink, InputName, Overloaded, OverShare
from responder.ingest.tls_reload import CertificateFilesError, new_server_context
from responder.metrics import Metrics
from responder.sender import DRILL_HEADER, Proof, Sender, is_drill
from responder.yamlsource import FileRefused, FileTooLarge, read_bounded, read_regular_file, size_text

log = logging.getLogger("serving_guard.http")

ALERTS_PATH = "/v1/alerts"
BYTE_ORDER_MARK = b"\xef\xbb\xbf"
TOKEN_REFRESH_SECONDS = 30.0
AUDIT_READERS_ONLY = "the audit trail is read with the audit token (inputs.http.audit_token)"
AUDIT_TRAIL_OFF = (
    "the audit trail is not served: inputs.http.audit_token is not set (an alert sender's credential"
    " never reads it); set it to give the trail's readers a token of their own, or read the journal"
    " where the responder runs (serving-guard audit --config)"
)
SAME_TOKENS_SINCE_ROTATION = (
    "inputs.http.audit_token has become the same as inputs.http.token (a rotated Secret): "
    "the audit trail is not served until they differ again"
)


def client_certificates(config: HttpInput) -> ssl.VerifyMode:
    """What the handshake asks of a client: with a token as the alternative proof (a sender's, or
    the audit readers'), a certificate is optional there and each route asks for what it needs."""
    if config.tls is None or not config.tls.client_ca_file:
        return ssl.CERT_NONE
    token_configured = any(ref is not None for ref in (config.token, config.audit_token, config.drill_token))
    return ssl.CERT_OPTIONAL if token_configured else ssl.CERT_REQUIRED


def server_ssl_context(config: HttpInput) -> ssl.SSLContext | None:
    tls = config.tls
    if tls is None:
        return None
    for key, path in (
        ("cert_file", tls.cert_file),
        ("key_file", tls.key_file),
        ("client_ca_file", tls.client_ca_file),
    ):
        try:
            if path is not None:
                read_regular_file(path, MAX_CERTIFICATE_BYTES, CERTIFICATE_FILE)
        except FileRefused as exc:
            raise UserError(f"inputs.http.tls: cannot load certificates: {key} {path} {exc}") from None
        except OSError as exc:  # ssl's own error would not say which file
            raise UserError(
                f"inputs.http.tls: cannot load certificates: cannot read {key} {path}: {exc.strerror or exc}"
            ) from None
    try:
        return new_server_context(tls, client_certificates(config))
    except CertificateFilesError as exc:
        raise UserError(f"inputs.http.tls: cannot load certificates: {exc}") from None


def tokens_in(text: str) -> tuple[bytes, ...]:
    """The tokens a secret holds: one per line, blank lines skipped. Two during a rotation: the
    new one is added, the senders move to it, then the old one is taken out (no sender is ever
    refused, and Falcosidekick does not retry a refused alert)."""
    return tuple(line.strip().encode() for line in text.splitlines() if line.strip())


# A rotation's old and new token: a third line is a mistake (a file of passwords, a pasted list),
# each line of which would let its holder in.
MAX_TOKENS = 2
# Shorter tokens are said to be guessable (`openssl rand -hex 32` gives 64 characters).
MIN_TOKEN_CHARACTERS = 32


class TokenSource:
    """The bearer tokens, re-read from their file now and then so a rotated Secret takes effect."""

    def __init__(
        self, ref: SecretRef, clock: Callable[[], float] = time.monotonic, *, what: str = "inputs.http.token"
    ) -> None:
        self._ref = ref
        self._clock = clock
        self._what = what
        self._values = tokens_in(ref.read(what))  # read() refuses a secret with no text
        if len(self._values) > MAX_TOKENS:
            raise UserError(f"{what}: {self._source} {self._too_many(len(self._values))}")
        self._read_at = clock()

    @property
    def _source(self) -> str:
        return self._ref.file if self._ref.file is not None else f"${self._ref.env}"

    @staticmethod
    def _too_many(count: int) -> str:
        return (
            f"holds {count} tokens (one per line): at most {MAX_TOKENS}, the old and the new one during"
            " a rotation"
        )

    def short(self) -> str | None:
        """That a token is short enough to guess (fewer than MIN_TOKEN_CHARACTERS), or None. Said,
        not refused: anyone who guesses it can send alerts and have pods quarantined."""
        return _short(self._what, self._source, self._values)

    def current(self) -> tuple[bytes, ...]:
        """The tokens accepted now (one, or a rotation's two)."""
        if self._ref.file is not None and self._clock() - self._read_at > TOKEN_REFRESH_SECONDS:
            self._read_at = self._clock()
            self._values = self._reread(self._ref.file) or self._values
        return self._values

    def matches(self, presented: bytes) -> bool:
        return self.number_of(presented) is not None

    def number_of(self, presented: bytes) -> int | None:
        """Which of the tokens ``presented`` is (1: the file's first), or None; compared in constant
        time against each (so the time taken does not tell which one, nor how much of it, matched)."""
        found = 0
        for number, token in enumerate(self.current(), 1):
            if hmac.compare_digest(presented, token):
                found = number
        return found or None

    def _reread(self, path: str) -> tuple[bytes, ...] | None:
        """The file's tokens, or None (with a warning naming the file) when it holds none we can
        use: a Secret caught mid-rotation must not lock every sender out, nor fail their requests."""
        try:
            raw = read_bounded(path, MAX_SECRET_BYTES)  # as at start (SecretRef.read)
        except FileTooLarge:
            problem = f"{path} is larger than {size_text(MAX_SECRET_BYTES)}, far more than a token"
        except OSError as exc:
            problem = f"cannot read {path}: {exc.strerror or exc}"
        else:
            try:
                tokens = tokens_in(raw.decode("utf-8"))
            except UnicodeDecodeError as exc:
                problem = f"{path} is not UTF-8 text (byte {exc.start} is 0x{raw[exc.start]:02x})"
            else:
                if len(tokens) > MAX_TOKENS:
                    problem = f"{path} {self._too_many(len(tokens))}"
                elif tokens:
                    short = _short(self._what, path, tokens) if tokens != self._values else None
                    if short is not None:  # said once, as the rotation brings it in
                        log.warning(short)
                    return tokens
                else:
                    problem = f"{path} is empty"
        log.warning("%s: %s; keeping the previous token", self._what, problem)
        return None


def _short(what: str, source: str, tokens: tuple[bytes, ...]) -> str | None:
    lengths = [len(token.decode("utf-8", "replace")) for token in tokens]
    if all(length >= MIN_TOKEN_CHARACTERS for length in lengths):
        return None
    which = "its token is" if len(tokens) == 1 else "one of its tokens is"
    return (
        f"{what}: {which} shorter than {MIN_TOKEN_CHARACTERS} characters ({source}): anyone who"
        " guesses it can send alerts and have pods quarantined; use a random one (`openssl rand -hex 32`)"
    )


def share_a_token(one: TokenSource, other: TokenSource) -> bool:
    return any(other.matches(token) for token in one.current())


@dataclass(frozen=True)
class AuthResult:
    ok: bool
    status: int = 200
    reason: str = ""
    # Who was admitted (an alert sender; None for the audit trail's readers).
    sender: Sender | None = None


AUTHENTICATED = AuthResult(True)


def presented_bearer(request: Request) -> bytes | None:
    """The request's bearer token as sent, or None when it presents none."""
    header = request.headers.get("authorization", "")
    scheme, _, presented = header.partition(" ")
    if scheme.lower() != "bearer" or not presented.strip():
        return None
    # The header was decoded byte for byte (latin-1): encoding it back gives the bytes sent,
    # compared with the token file's (UTF-8) bytes.
    return presented.strip().encode("latin-1")


def bearer_matches(request: Request, token: TokenSource) -> bool | None:
    """Whether the request's bearer token is ``token`` (compared in constant time); None when it
    presents no bearer token."""
    presented = presented_bearer(request)
    return None if presented is None else token.matches(presented)


class Authenticator:
    def __init__(
        self,
        config: HttpInput,
        token: TokenSource | None,
        drill: TokenSource | None = None,
        audit: TokenSource | None = None,
    ) -> None:
        self._mtls = config.tls is not None and config.tls.client_ca_file is not None
        names = config.tls.allowed_client_names if config.tls is not None else None
        self._allowed_names = frozenset(map(_dns_form, names)) if names is not None else None
        self._token = token
        self._drill = drill
        # The audit readers' token: a drill token that has become it (a rotation) sends nothing.
        self._audit = audit
        self._open = config.allow_unauthenticated

    def check(self, request: Request) -> AuthResult:
        result = self._check(request)
        if result.ok and _DRILL_HEADER in request.headers and not is_drill(result.sender):
            if self._drill is None:
                return AuthResult(False, 403, f"{DRILL_NOT_VOUCHED}; this responder has no drill token")
            return AuthResult(False, 403, DRILL_NOT_VOUCHED)
        return result

    def _check(self, request: Request) -> AuthResult:
        # Read once: the drill token and the senders' are tried against the same bearer.
        tokens = self._drill is not None or self._token is not None
        presented = presented_bearer(request) if tokens else None
        if self._drill is not None and presented is not None:
            drill = self._drill.number_of(presented)
            if drill is not None:
                # The files are re-read as their Secrets rotate: that they differ must hold on every
                # read, or a sender's token would send drills, the drill token Falco's alerts, or the
                # trail's readers drills (and the drill token's holders read the trail).
                shared = next(
                    (
                        key
                        for key, other in (("token", self._token), ("audit_token", self._audit))
                        if other is not None and other.matches(presented)
                    ),
                    None,
                )
                if shared is not None:
                    refusal = drill_shared_since_rotation(shared)
                    log.error(refusal)
                    return AuthResult(False, 403, refusal)
                return _admitted(request, Proof.DRILL_TOKEN, drill)
        unnamed: AuthResult | None = None  # a certificate that verified, of no allowed name
        if self._mtls and request.peer_verified:
            if self._allowed_names is None or not self._allowed_names.isdisjoint(
                map(_dns_form, request.peer_names)
            ):
                return _admitted(request, Proof.CERTIFICATE)
            unnamed = AuthResult(False, 403, _not_allowed(request.peer_names))
        if self._token is not None and request.headers.get("authorization"):
            number = self._token.number_of(presented) if presented is not None else None
            if number is not None:
                return _admitted(request, Proof.TOKEN, number)
            return AuthResult(False, 401, "invalid bearer token")
        if unnamed is not None:
            return unnamed
        if self._open:
            return _admitted(request, Proof.NONE)
        if self._token is not None:
            return AuthResult(False, 401, "missing bearer token")
        return AuthResult(False, 403, "a client certificate is required")


_DRILL_HEADER = DRILL_HEADER.lower()  # as the server keeps header names
DRILL_NOT_VOUCHED = (
    "the request asks to be a drill (header Serving-Guard-Drill), and its credential is not the drill"
    " token (inputs.http.drill_token): refused, nothing done; send drills with the drill token, or"
    " replay with --live to have the responder act on them as on Falco's alerts"
)


def drill_shared_since_rotation(key: str) -> str:
    """Why a drill is refused whose token has become inputs.http.``key``'s too (a rotated Secret)."""
    return (
        f"inputs.http.drill_token has become the same as inputs.http.{key} (a rotated Secret): refused;"
        " give the drill token a secret of its own"
    )


def _admitted(request: Request, proof: Proof, token: int | None = None) -> AuthResult:
    """A sender let in, named by what it showed: its address, its verified certificate's names
    (whatever the proof: a certificate of no allowed name beside a good token says who holds it)."""
    names = request.peer_names if request.peer_verified else ()
    drill = proof is Proof.DRILL_TOKEN
    return AuthResult(True, sender=Sender(request.remote, proof, names, token, drill=drill))


def _dns_form(name: str) -> str:
    """A name as DNS compares it: case aside, and without the root's trailing dot. (A wildcard
    certificate's "*.example" is compared as written: it names no sender.)"""
    return name.lower().removesuffix(".")


def sender_not_the_node(sender: Sender | None, hostname: str | None) -> str | None:
    """Why ``sender`` may not send an alert claiming node ``hostname``
    (inputs.http.require_sender_matches_hostname), or None: it must be a client certificate that
    names that node (its common name or a DNS name, compared as DNS does)."""
    if sender is None or sender.proof is not Proof.CERTIFICATE:
        return (
            "an alert must come with a client certificate naming its node"
            " (inputs.http.require_sender_matches_hostname)"
        )
    if hostname and _dns_form(hostname) in map(_dns_form, sender.names):
        return None
    shown = ", ".join(repr(name[:64]) for name in sender.names[:3])
    claimed = repr(hostname[:64]) if hostname else "no hostname"
    return (
        f"client certificate {shown} does not name the alert's node ({claimed}):"
        " inputs.http.require_sender_matches_hostname"
    )


def _not_allowed(names: tuple[str, ...]) -> str:
    """Why a verified client certificate is refused, naming it (its names are the CA's to give)."""
    shown = ", ".join(repr(name[:64]) for name in names[:3]) or "no common name or DNS name"
    return f"client certificate {shown} is not one of inputs.http.tls.allowed_client_names"


class AuditReaders:
    """Who may read the audit trail: the holders of ``audit_token`` alone (a sender's certificate
    or token is refused). Without one, nobody: every Falco node holds a sender's credential, and the
    trail (other pods' alerts, what was verified and done) is not for a node under attack to read."""

    def __init__(
        self,
        audit_token: TokenSource | None,
        senders_token: TokenSource | None = None,
        drill_token: TokenSource | None = None,
    ) -> None:
        self._token = audit_token
        self._senders_token = senders_token
        self._drill_token = drill_token

    def check(self, request: Request) -> AuthResult:
        if self._token is None:
            return AuthResult(False, 403, AUDIT_TRAIL_OFF)
        matches = bearer_matches(request, self._token)
        if matches:
            # Both files are re-read as their Secrets rotate: the start-up check that they differ
            # has to hold on every read too, or every alert sender could read the trail.
            if self._senders_token is not None and bearer_matches(request, self._senders_token):
                log.error(SAME_TOKENS_SINCE_ROTATION)
                return AuthResult(False, 403, SAME_TOKENS_SINCE_ROTATION)
            if self._drill_token is not None and bearer_matches(request, self._drill_token):
                log.error(AUDIT_IS_DRILL_SINCE_ROTATION)
                return AuthResult(False, 403, AUDIT_IS_DRILL_SINCE_ROTATION)
            return AUTHENTICATED
        if matches is None:
            return AuthResult(False, 401, AUDIT_READERS_ONLY)
        return AuthResult(False, 401, "invalid audit token")

    def refusal(self, request: Request) -> Response | None:
        """The answer to a request that may not read the trail, or None: the route's head check."""
        auth = self.check(request)
        return None if auth.ok else json_error(auth.status, auth.reason)


def warn_of_plaintext_token(http: HttpInput) -> None:
    """A token on an input without TLS crosses the network readable by anyone on the path, who can
    then send alerts (and have pods quarantined): allowed (a service mesh may encrypt it), said."""
    if http.tls is not None:
        return
    for key, ref, what in (("token", http.token, "alerts"), ("drill_token", http.drill_token, "drills")):
        if ref is not None:
            log.warning(
                f"inputs.http.{key} is accepted over plain HTTP: anyone who can read the traffic can"
                f" replay it and send {what}; set inputs.http.tls (or make sure a mesh encrypts it)"
            )


def unauthenticated_input(http: HttpInput) -> str | None:
    """What allow_unauthenticated means, when set (and the input on): alerts from anyone."""
    if not (http.enabled and http.allow_unauthenticated):
        return None
    also = " (a request without a token is accepted; one with a wrong token is refused)" if http.token else ""
    return (
        f"inputs.http.allow_unauthenticated is true: anyone who can reach {http.listen} can send alerts"
        f" and have pods quarantined{also}; make sure only Falco can reach the port, or authenticate"
        " senders (tls.client_ca_file, token)"
    )


def warn_of_unauthenticated_input(http: HttpInput) -> None:
    """allow_unauthenticated takes alerts from anyone: said at every start, and by `config check`."""
    warning = unauthenticated_input(http)
    if warning is not None:
        log.warning(warning)


def audit_token_source(http: HttpInput, senders_token: TokenSource | None) -> TokenSource | None:
    """The audit readers' token, or None (said at start: then GET /v1/audit answers 403)."""
    if http.audit_token is None:
        log.info(
            "GET /v1/audit is not served (403): inputs.http.audit_token is not set, and an alert"
            " sender's credential never reads the trail; `serving-guard audit --config` reads the journal"
        )
        return None
    token = TokenSource(http.audit_token, what="inputs.http.audit_token")
    if senders_token is not None and share_a_token(token, senders_token):
        raise UserError(f"inputs.http.audit_token {SHARED_WITH_SENDERS}")
    return token


AUDIT_IS_DRILL_SINCE_ROTATION = (
    "inputs.http.audit_token has become the same as inputs.http.drill_token (a rotated Secret): the"
    " trail is not served with it; give each a secret of its own"
)


def drill_token_source(
    http: HttpInput, senders_token: TokenSource | None, audit_token: TokenSource | None
) -> TokenSource | None:
    """The drill token, or None (then no alert is a drill). Refused when it holds a sender's or the
    audit readers' token: a drill is told from Falco's alerts by a token no one else holds."""
    if http.drill_token is None:
        return None
    token = TokenSource(http.drill_token, what="inputs.http.drill_token")
    for other, key in ((senders_token, "token"), (audit_token, "audit_token")):
        if other is not None and share_a_token(token, other):
            raise UserError(f"inputs.http.drill_token {drill_shares_with(key)}")
    short = token.short()
    if short is not None:
        log.warning(short)
    return token


def drill_shares_with(key: str) -> str:
    """Why serve refuses a drill token that is also inputs.http.``key``'s (said by `config check` too)."""
    return (
        f"is the same as inputs.http.{key} (or holds one of its tokens): a drill must be told from"
        " Falco's alerts by a token no one else holds; give the drill token a secret of its own"
    )


# Why serve refuses an audit token that is also a sender's (said by `config check` too).
SHARED_WITH_SENDERS = (
    "is the same as inputs.http.token (or holds one of its tokens): every alert sender could read"
    " the audit trail; give its readers a token of their own"
)


def json_error(status: int, error: str, **extra: Any) -> Response:
    headers: tuple[tuple[str, str], ...] = ()
    if status == 401:
        headers = (("WWW-Authenticate", 'Bearer realm="serving-guard"'),)
    return Response.json(status, {"error": error, **extra}, headers)


def overloaded(exc: Overloaded) -> Response:
    return json_error(503, "overloaded", reason=exc.reason).with_headers(
        ("Retry-After", str(max(1, round(exc.retry_after_seconds))))
    )


# Why a journal write fails: its commit (sqlite3.Error), its fsync (SyncFailed) or its writer
# process being gone (JournalUnavailable), the last two OSErrors. Nothing was acknowledged: the
# sender may retry, here or after the restart that liveness asks for.
JOURNAL_FAILURES = (OSError, sqlite3.Error)
JOURNAL_RETRY_AFTER_SECONDS = 5


def journal_failed(exc: BaseException) -> Response:
    return json_error(503, "journal write failed", reason=str(exc)).with_headers(
        ("Retry-After", str(JOURNAL_RETRY_AFTER_SECONDS))
    )


def accepted_response(accepted: Accepted, drill: bool = False) -> Response:
    # Formatted directly: this is the one answer a busy sender gets thousands of times a second.
    status = "accepted" if accepted.new else "already accepted"
    # Deferred: the pipeline was full; journaled all the same, and processed once it has room.
    deferred = ', "deferred": true' if accepted.deferred else ""
    # Taken as a drill (the drill token): what `serving-guard replay` tells its user it sent.
    taken_as = ', "drill": true' if drill else ""
    return Response(
        202,
        f'{{"alert_id": {json.dumps(accepted.alert_id)}, "status": "{status}"{deferred}{taken_as}}}'.encode(),
    )


def _settle_answer(answer: asyncio.Future[Response], result: Accepted | BaseException, drill: bool) -> None:
    if answer.done():  # the server stopped waiting for it
        return
    if isinstance(result, JOURNAL_FAILURES):
        answer.set_result(journal_failed(result))
    elif isinstance(result, BaseException):
        answer.set_exception(result)
    else:
        answer.set_result(accepted_response(result, drill))


def alerts_route(
    config: HttpInput, sink: AlertSink, authenticator: Authenticator, refusals: RefusalLog
) -> Route:
    """POST /v1/alerts. Requests refused from their head (authentication, size) are counted and
    logged by the server; invalid alerts, here."""
    admission_timeout = config.admission_timeout_seconds
    bound_to_node = config.require_sender_matches_hostname

    def check(request: Request) -> Response | None:
        auth = authenticator.check(request)
        if not auth.ok:
            return json_error(auth.status, auth.reason)
        request.sender = auth.sender  # for the handler, once the body is in
        return None

    def too_large(limit: int, size: int) -> Response:
        # The reason, with the size, is what the server's refusal log says (with the sender).
        reason = f"a body of {size} bytes or more, over inputs.http.max_body_bytes ({limit})"
        return json_error(413, "payload too large", limit_bytes=limit, reason=reason)

    def invalid(request: Request, exc: AlertError) -> Response | Awaitable[Response]:
        body = request.body
        if body.startswith(BYTE_ORDER_MARK) and not body.startswith(BYTE_ORDER_MARK, len(BYTE_ORDER_MARK)):
            # Dropped, as `ingest` drops one at the start of its file (some clients write one).
            request.body = body[len(BYTE_ORDER_MARK) :]
            return handle(request)
        refusals.record(rejection_code(exc), request.remote, f"400 invalid alert: {exc}", request.sender)
        hint = ""
        if exc.field == WHOLE_PAYLOAD and request.content_type == "text/plain":
            hint = "Falco must run with json_output: true"
        return json_error(
            400, "invalid alert", field=exc.field, reason=exc.reason, **({"hint": hint} if hint else {})
        )

    def handle(request: Request) -> Response | Awaitable[Response]:
        body = request.body
        try:
            alert = parse_falco_json(body, request.sender)
        except AlertError as exc:
            return invalid(request, exc)
        # A drill is a person's replay, not a node's alert: the drill token vouches for it.
        if (
            bound_to_node
            and not is_drill(request.sender)
            and (mismatch := sender_not_the_node(request.sender, alert.hostname))
        ):
            refusals.record("unauthenticated", request.remote, f"403 {mismatch}", request.sender)
            return json_error(403, mismatch)
        # The busy path: a free slot is taken at once and the answer is a future, not a task.
        answer: asyncio.Future[Response] = asyncio.get_running_loop().create_future()
        try:
            drill = is_drill(alert.sender)
            taken = sink.offer(
                alert, InputName.HTTP, body, lambda result: _settle_answer(answer, result, drill)
            )
        except Overloaded as exc:
            return overloaded(exc)
        if taken:
            return answer
        return after_waiting(alert, body)

    async def after_waiting(alert: Alert, body: bytes) -> Response:
        try:
            accepted = await sink.submit(alert, InputName.HTTP, wait_seconds=admission_timeout, raw=body)
        except OverShare as exc:
            # Who fills the journal's deferred room is a security signal: said with the sender.
            sender = alert.sender
            refusals.record(
                "deferred_share",
                sender.address if sender is not None else "-",
                f"503 {exc.reason} (sender: {sender.text() if sender is not None else '-'})",
                sender,
            )
            return overloaded(exc)
        except Overloaded as exc:
            return overloaded(exc)
        except JOURNAL_FAILURES as exc:
            return journal_failed(exc)
        return accepted_response(accepted, is_drill(alert.sender))

    return Route(
        "POST",
        ALERTS_PATH,
        handle,
        check=check,
        max_body_bytes=config.max_body_bytes,
        too_large=too_large,
    )


def count_rejected(metrics: Metrics) -> Callable[[str], None]:
    """Counts an HTTP input refusal in ``serving_guard_alerts_rejected_total{input="http"}``."""

    def count(reason: str) -> None:
        metrics.rejected.labels(InputName.HTTP.value, reason).inc()

    return count


def build_input_server(
    config: HttpInput,
    sink: AlertSink,
    authenticator: Authenticator,
    extra_routes: list[Route] | None = None,
    *,
    metrics: Metrics | None = None,
) -> HttpServer:
    refusals = RefusalLog("HTTP input", log, count_rejected(metrics) if metrics is not None else None)
    server = HttpServer(
        [alerts_route(config, sink, authenticator, refusals), *(extra_routes or [])],
        Limits(
            max_connections=config.max_connections, max_connections_per_peer=config.max_connections_per_peer
        ),
        on_refused_connection=metrics.http_connections_refused.inc if metrics is not None else None,
        refusals=refusals,
    )
    if metrics is not None:
        metrics.http_connections_open.set_function(lambda: len(server.connections))
    return server
