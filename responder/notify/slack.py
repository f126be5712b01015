"""Delivering rendered messages to Slack with slack-sdk's async clients (aiohttp).

The contract with the caller (the journal's notification worker):

- Every method makes ONE attempt and either returns or raises :class:`DeliveryError`; no
  slack-sdk exception escapes (one exception: a message whose blocks Slack refuses, and so did
  not post, is sent once more as text alone). There are no retry loops or sleeps in here
  (slack-sdk's own retry handlers are switched off): the worker schedules retries from the
  journal, honouring ``DeliveryError.retry_after_seconds``, so a slow or absent Slack never
  holds up a quarantine and a restart resumes where it stopped. A method Slack rate-limited is
  not called again until its Retry-After has passed (a rate-limit DeliveryError at once):
  Slack's limits are per method.
- ``retryable`` says whether trying the same call again later can succeed: HTTP 429 (with its
  Retry-After), 5xx, timeouts, connection errors, Slack's transient error codes, and answers
  that are not Slack's (unreadable, or an HTTP error without a Slack error code: a proxy or
  gateway) are retryable; ``invalid_auth``, ``channel_not_found``, ``not_in_channel``, bad
  payloads and the like are not.
- In bot mode each top-level post carries message metadata (event type
  ``serving_guard_incident``, payload ``incident_id``), and :meth:`SlackDelivery.find_posted`
  looks for it in the channel history, so a post that was in flight when the process died can
  be found instead of posted twice.

Bot mode needs the scopes ``chat:write`` (post, reply, update) and, for ``find_posted``,
``channels:history``/``groups:history`` plus ``channels:read``/``groups:read`` when the channel
is configured by name rather than by id. Incoming webhooks can only post: no threads, no
updates, no history (see ``supports_threads``).
"""

from __future__ import annotations

import email.utils
import ipaddress
import logging
import math
import re
import time
import urllib.parse
import urllib.request
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Self, TypeVar

import aiohttp
from slack_sdk.errors import SlackApiError, SlackClientError
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.web.async_slack_response import AsyncSlackResponse
from slack_sdk.webhook.async_client import AsyncWebhookClient

from responder.config import Slack, SlackMode
from responder.errors import UserError
from responder.notify.render import EVENT_TYPE, MessageKind, SlackMessage

# Slack error codes (``{"ok": false, "error": ...}``) that mean "try again later".
RETRYABLE_ERROR_CODES = frozenset(
    {
        "ratelimited",
        "rate_limited",
        "internal_error",
        "fatal_error",
        "service_unavailable",
        "request_timeout",
        "team_added_to_org",
    }
)
# Slack error codes that refuse the credentials themselves: every call fails the same way until the
# token is replaced (or a scope granted), wherever it posts. Waiting, not giving up, is the answer.
CREDENTIAL_REFUSALS = frozenset(
    {
        "not_authed",
        "invalid_auth",
        "account_inactive",
        "token_revoked",
        "token_expired",
        "missing_scope",
        "not_allowed_token_type",
        "org_login_required",
    }
)
# What an incoming webhook answers when the webhook itself is gone or disabled (its URL must be
# replaced): it has no other channel to fall back on.
WEBHOOK_REFUSALS = frozenset(
    {
        "invalid_token",
        "no_service",
        "no_service_id",
        "no_team",
        "team_disabled",
        "channel_not_found",
        "channel_is_archived",
        "action_prohibited",
        "posting_to_general_channel_denied",
    }
)
# Error codes by which one channel refuses the bot (gone, archived, the bot not in it, posting
# restricted there): another channel can still take the message.
CHANNEL_REFUSALS = frozenset(
    {
        "channel_not_found",
        "not_in_channel",
        "is_archived",
        "channel_is_archived",
        "restricted_action",
        "restricted_action_read_only_channel",
        "restricted_action_thread_only_channel",
        "restricted_action_non_threadable_channel",
        # Per resource, not per token (Slack answers them for one channel the bot may not use).
        "access_denied",
        "no_permission",
        "ekm_access_denied",
        "team_access_not_granted",
    }
)
# The message a reply or an update names is gone (deleted by a person).
MESSAGE_GONE = frozenset({"thread_not_found", "message_not_found", "cant_update_message"})
# Slack refuses the message's blocks (their shape or size), not the post: the same message as text
# alone still goes out.
BLOCKS_REFUSALS = frozenset(
    {"invalid_blocks", "invalid_blocks_format", "msg_blocks_too_long", "too_many_blocks"}
)
# What a Slack error code looks like ("channel_not_found"); a webhook answers with it as its body,
# and a proxy or gateway in the way answers with anything else (an HTML page).
_ERROR_CODE = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
# Slack channel, group and DM ids; anything else is a channel name.
_CHANNEL_ID = re.compile(r"^[CGD][A-Z0-9]{8,}$")
_LIST_PAGE = 1000
_REASON_LIMIT = 300

log = logging.getLogger("serving_guard.notify")
_Sent = TypeVar("_Sent")


class FailureKind(StrEnum):
    """A bounded label for metrics and the audit trail."""

    RATE_LIMITED = "rate_limited"  # HTTP 429 or error "ratelimited"
    UNAVAILABLE = "unavailable"  # HTTP 5xx or a transient Slack error code
    TRANSPORT = "transport"  # timeout, refused or reset connection, TLS failure
    REJECTED = "rejected"  # Slack refused the call for good (auth, channel, payload)
    PROTOCOL = "protocol"  # an answer we cannot read
    UNSUPPORTED = "unsupported"  # not possible in this mode (webhooks cannot thread)


class DeliveryError(Exception):
    """One failed Slack call. Never carries the token or the webhook URL."""

    def __init__(
        self,
        *,
        retryable: bool,
        reason: str,
        kind: FailureKind,
        retry_after_seconds: float | None = None,
        status: int | None = None,
        code: str | None = None,
    ) -> None:
        self.retryable = retryable
        self.reason = reason
        self.kind = kind
        self.retry_after_seconds = retry_after_seconds
        self.status = status
        # Slack's error code ("channel_not_found") or a webhook's body ("invalid_payload").
        self.code = code
        super().__init__(reason)

    def __repr__(self) -> str:
        return (
            f"DeliveryError(retryable={self.retryable}, kind={self.kind.value}, "
            f"retry_after_seconds={self.retry_after_seconds}, reason={self.reason!r})"
        )


class Refusal(StrEnum):
    """Why Slack refused a call for good, where the worker can do better than give up."""

    CREDENTIALS = "credentials"  # the token or webhook is refused: nothing goes out until replaced
    CHANNEL = "channel"  # this channel refuses the bot: another channel can take the message
    MESSAGE_GONE = "message_gone"  # the message replied to or updated was deleted
    BLOCKS = "blocks"  # the message's blocks are refused: the text alone can go out


def refusal_of(error: DeliveryError, mode: SlackMode) -> Refusal | None:
    """The kind of permanent refusal ``error`` is, or None (retryable, or refused for other reasons:
    a bad payload, say)."""
    if error.retryable or error.code is None:
        return None
    if error.code in BLOCKS_REFUSALS:
        return Refusal.BLOCKS
    if mode is SlackMode.WEBHOOK:
        return Refusal.CREDENTIALS if error.code in WEBHOOK_REFUSALS else None
    if error.code in CREDENTIAL_REFUSALS:
        return Refusal.CREDENTIALS
    if error.code in CHANNEL_REFUSALS:
        return Refusal.CHANNEL
    if error.code in MESSAGE_GONE:
        return Refusal.MESSAGE_GONE
    return None


@dataclass(frozen=True, slots=True)
class SlackRef:
    """Where a message landed: the channel id Slack answered with and the message ts.

    ``ts`` is None for incoming webhooks (they answer only "ok"). ``thread_ts`` is the parent's
    ts for a thread reply. Store all three in the journal to reply to or update it later.
    """

    channel: str
    ts: str | None
    thread_ts: str | None = None


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or an HTTP date)."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError):
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    if not math.isfinite(seconds):
        return None
    return max(0.0, seconds)


def _header(headers: object, name: str) -> str | None:
    if not isinstance(headers, Mapping):
        return None
    value = headers.get(name)
    if value is None:  # a plain dict is case-sensitive; aiohttp's CIMultiDict is not
        wanted = name.lower()
        value = next((v for k, v in headers.items() if str(k).lower() == wanted), None)
    return None if value is None else str(value)


def _short(text: object) -> str:
    flat = " ".join(str(text).split())
    return flat if len(flat) <= _REASON_LIMIT else flat[: _REASON_LIMIT - 1] + "…"


def _http_failure(what: str, status: int, headers: object, code: str | None) -> DeliveryError:
    retry_after = parse_retry_after(_header(headers, "Retry-After"))
    detail = f" ({code})" if code else ""
    if status == 429:
        return DeliveryError(
            retryable=True,
            reason=f"{what}: rate limited by Slack (HTTP 429){detail}",
            kind=FailureKind.RATE_LIMITED,
            retry_after_seconds=retry_after,
            status=status,
            code=code,
        )
    if status >= 500 or status == 408:
        return DeliveryError(
            retryable=True,
            reason=f"{what}: Slack unavailable (HTTP {status}){detail}",
            kind=FailureKind.UNAVAILABLE,
            retry_after_seconds=retry_after,
            status=status,
            code=code,
        )
    if code is None:
        # No Slack error code: a proxy or gateway answered, not Slack (whose refusals name one).
        # What stands in the way may go (a proxy's maintenance, a fixed allow-list): waited out.
        return DeliveryError(
            retryable=True,
            reason=f"{what}: HTTP {status} without a Slack error (a proxy or gateway in the way?)",
            kind=FailureKind.UNAVAILABLE,
            retry_after_seconds=retry_after,
            status=status,
        )
    return DeliveryError(
        retryable=False,
        reason=f"{what}: refused by Slack (HTTP {status}){detail}",
        kind=FailureKind.REJECTED,
        status=status,
        code=code,
    )


def _api_failure(what: str, exc: SlackApiError) -> DeliveryError:
    response = exc.response
    # slack-sdk passes an AsyncSlackResponse, or the raw aiohttp response for an unreadable body.
    status = getattr(response, "status_code", None) or getattr(response, "status", None)
    headers = getattr(response, "headers", None)
    data = getattr(response, "data", None)
    code = data.get("error") if isinstance(data, Mapping) else None
    code = _short(code) if code is not None else None
    if not isinstance(status, int):
        return DeliveryError(
            retryable=True, reason=f"{what}: unreadable answer from Slack", kind=FailureKind.PROTOCOL
        )
    if status != 200:
        return _http_failure(what, status, headers, code)
    if code is None:
        return DeliveryError(
            retryable=True,
            reason=f"{what}: Slack answered HTTP 200 without a readable JSON body",
            kind=FailureKind.PROTOCOL,
            status=status,
        )
    if code in ("ratelimited", "rate_limited"):
        return DeliveryError(
            retryable=True,
            reason=f"{what}: rate limited by Slack ({code})",
            kind=FailureKind.RATE_LIMITED,
            retry_after_seconds=parse_retry_after(_header(headers, "Retry-After")),
            status=status,
            code=code,
        )
    if code in RETRYABLE_ERROR_CODES:
        return DeliveryError(
            retryable=True,
            reason=f"{what}: Slack error {code}",
            kind=FailureKind.UNAVAILABLE,
            retry_after_seconds=parse_retry_after(_header(headers, "Retry-After")),
            status=status,
            code=code,
        )
    return DeliveryError(
        retryable=False,
        reason=f"{what}: Slack error {code}",
        kind=FailureKind.REJECTED,
        status=status,
        code=code,
    )


def _transport_failure(what: str, exc: BaseException) -> DeliveryError:
    text = "timed out" if isinstance(exc, TimeoutError) else (_short(exc) or type(exc).__name__)
    return DeliveryError(
        retryable=True, reason=f"{what}: {type(exc).__name__}: {text}", kind=FailureKind.TRANSPORT
    )


def _without_proxy(url: str) -> bool:
    """slack-sdk takes HTTPS_PROXY from the environment but ignores NO_PROXY; honour it, and
    never send loopback traffic (a local sink, a sidecar) through a proxy."""
    host = urllib.parse.urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        if ipaddress.ip_address(host).is_loopback:
            return True
    except ValueError:
        pass
    return bool(urllib.request.proxy_bypass(host))


def _unsupported(what: str) -> DeliveryError:
    return DeliveryError(
        retryable=False,
        reason=f"{what}: not possible with an incoming webhook (use slack.mode: bot)",
        kind=FailureKind.UNSUPPORTED,
        code="webhook_unsupported",
    )


class SlackDelivery:
    """One Slack destination (a bot token or an incoming webhook) and its HTTP session.

    Create it inside the event loop's lifetime and close it (``async with`` or ``close()``).
    Calls may run concurrently; they share one aiohttp session (connection reuse).
    """

    def __init__(self, settings: Slack, *, token: str | None = None, webhook_url: str | None = None) -> None:
        if settings.mode is SlackMode.DISABLED:
            raise ValueError("Slack delivery is disabled (slack.mode: disabled)")
        if settings.mode is SlackMode.BOT and not token:
            raise ValueError("bot mode needs a token")
        if settings.mode is SlackMode.WEBHOOK:
            if not webhook_url:
                raise ValueError("webhook mode needs a webhook URL")
            if urllib.parse.urlsplit(webhook_url).scheme not in ("https", "http"):
                # Never echo the URL: it is the webhook's secret.
                raise UserError("slack.webhook_url: the secret is not an http(s) URL")
        self._settings = settings
        self._token = token
        self._webhook_url = webhook_url
        self._session: aiohttp.ClientSession | None = None
        self._web: AsyncWebClient | None = None
        self._hook: AsyncWebhookClient | None = None
        # Channel name -> id, learnt from post answers and conversations.list.
        self._channel_ids: dict[str, str] = {}
        # The token's scopes, as auth.test answered them (x-oauth-scopes).
        self._scopes: frozenset[str] = frozenset()
        # Until when (self._clock_ns) each method Slack rate-limited is not called, and for how long
        # it was told to wait: its limits are per method, so a 429 on chat.update holds back no post.
        self._paused_until: dict[str, tuple[int, int]] = {}
        self._clock_ns: Callable[[], int] = time.monotonic_ns

    @classmethod
    def from_config(cls, settings: Slack) -> SlackDelivery | None:
        """None when Slack is disabled. Reads the token or webhook URL from its file or env
        variable now (a UserError names which one is missing or empty)."""
        if settings.mode is SlackMode.DISABLED:
            return None
        if settings.mode is SlackMode.BOT:
            assert settings.token is not None  # the config model requires it
            return cls(settings, token=settings.token.read("slack.token"))
        assert settings.webhook_url is not None
        return cls(settings, webhook_url=settings.webhook_url.read("slack.webhook_url"))

    def __repr__(self) -> str:  # no secrets
        return f"SlackDelivery(mode={self.mode.value})"

    @property
    def mode(self) -> SlackMode:
        return self._settings.mode

    @property
    def default_channel(self) -> str | None:
        return self._settings.default_channel if self.mode is SlackMode.BOT else None

    def known_channel_id(self, channel: str) -> str | None:
        """The id of ``channel`` (a name or an id) as far as this process has learnt it (from post
        answers and conversations.list), or None when it has not."""
        if _CHANNEL_ID.match(channel):
            return channel
        return self._channel_ids.get(channel.lstrip("#"))

    def reload_secret(self) -> bool:
        """Read the token (or webhook URL) again from its file or variable, as after Slack refused
        it: a replaced Secret is used without a restart. True when it changed. Raises UserError
        (naming the config key and the file or variable) when it cannot be read."""
        if self.mode is SlackMode.BOT:
            assert self._settings.token is not None
            token = self._settings.token.read("slack.token")
            if not token or token == self._token:
                return False
            self._token = token
            self._web = None
            return True
        assert self._settings.webhook_url is not None
        url = self._settings.webhook_url.read("slack.webhook_url")
        if not url or url == self._webhook_url:
            return False
        if urllib.parse.urlsplit(url).scheme not in ("https", "http"):
            raise UserError("slack.webhook_url: the secret is not an http(s) URL")
        self._webhook_url = url
        self._hook = None
        return True

    @property
    def supports_threads(self) -> bool:
        """Replies, updates and ``find_posted`` work (bot mode only)."""
        return self.mode is SlackMode.BOT

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._session is not None and not self._session.closed:
            await self._session.close()
        self._session = None
        self._web = None
        self._hook = None

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            timeout = aiohttp.ClientTimeout(total=self._settings.timeout_seconds)
            self._session = aiohttp.ClientSession(timeout=timeout)
            self._web = None
            self._hook = None
        return self._session

    def _web_client(self) -> AsyncWebClient:
        session = self._http()
        if self._web is None:
            # retry_handlers=[]: one attempt per call; the journal worker owns retries.
            client = AsyncWebClient(
                token=self._token, base_url=self._settings.base_url, session=session, retry_handlers=[]
            )
            if _without_proxy(self._settings.base_url):
                client.proxy = None
            self._web = client
        return self._web

    def _hook_client(self) -> AsyncWebhookClient:
        session = self._http()
        if self._hook is None:
            assert self._webhook_url is not None
            client = AsyncWebhookClient(self._webhook_url, session=session, retry_handlers=[])
            if _without_proxy(self._webhook_url):
                client.proxy = None
            self._hook = client
        return self._hook

    def use_clock(self, clock_ns: Callable[[], int]) -> None:
        """Time Slack's Retry-After waits by ``clock_ns`` (the journal worker's, which schedules the
        retries by it) rather than the monotonic clock."""
        self._clock_ns = clock_ns

    def _check_pace(self, what: str) -> None:
        """Raise a rate-limit DeliveryError while Slack's Retry-After for ``what`` lasts."""
        until, waited = self._paused_until.get(what, (0, 0))
        left = until - self._clock_ns()
        if 0 < left <= waited:  # a clock stepped back never holds a method longer than Slack asked
            raise DeliveryError(
                retryable=True,
                reason=f"{what}: rate limited by Slack, not called for {left / 1e9:.1f}s more",
                kind=FailureKind.RATE_LIMITED,
                retry_after_seconds=left / 1e9,
            )

    def _paced(self, what: str, error: DeliveryError) -> DeliveryError:
        if error.kind is FailureKind.RATE_LIMITED:
            wait = int((error.retry_after_seconds or 1.0) * 1e9)
            self._paused_until[what] = (self._clock_ns() + wait, wait)
        return error

    async def _api(self, what: str, call: Awaitable[AsyncSlackResponse]) -> AsyncSlackResponse:
        try:
            self._check_pace(what)
        except DeliveryError:
            if isinstance(call, Coroutine):
                call.close()  # never sent
            raise
        try:
            return await call
        except SlackApiError as exc:
            raise self._paced(what, _api_failure(what, exc)) from exc
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise _transport_failure(what, exc) from exc
        except SlackClientError as exc:
            raise DeliveryError(
                retryable=False, reason=f"{what}: {_short(exc)}", kind=FailureKind.REJECTED
            ) from exc
        except (AttributeError, TypeError, ValueError) as exc:
            # slack-sdk trips over some non-JSON answers (a proxy's error page with HTTP 200).
            raise DeliveryError(
                retryable=True,
                reason=f"{what}: unreadable answer from Slack ({type(exc).__name__})",
                kind=FailureKind.PROTOCOL,
            ) from exc

    def _message_args(self, message: SlackMessage) -> dict[str, Any]:
        # parse=none and link_names=False: Slack must not turn any text into links or mentions.
        args: dict[str, Any] = {
            "text": message.text,
            "metadata": message.metadata(),
            "parse": "none",
            "link_names": False,
        }
        if message.blocks:
            args["blocks"] = message.blocks_json()
        return args

    async def _blocks_or_text(
        self, message: SlackMessage, send: Callable[[SlackMessage], Awaitable[_Sent]]
    ) -> _Sent:
        """``send(message)``; when Slack refuses its blocks (nothing was posted), once more as text
        alone: a message whose blocks Slack will not take must still reach on-call."""
        try:
            return await send(message)
        except DeliveryError as error:
            if refusal_of(error, self.mode) is not Refusal.BLOCKS or not message.blocks:
                raise
            log.warning(
                "Slack refused the message's blocks; sending it as text alone",
                extra={"incident": message.incident_id, "reason": error.reason},
            )
        return await send(message.without_blocks())

    @staticmethod
    def _ref(what: str, response: AsyncSlackResponse, thread_ts: str | None) -> SlackRef:
        channel = response.get("channel")
        ts = response.get("ts")
        if not isinstance(channel, str) or not isinstance(ts, str):
            # The post may have landed: tried again, and the worker looks for it first (find_posted).
            raise DeliveryError(
                retryable=True,
                reason=f"{what}: Slack answered ok without channel and ts",
                kind=FailureKind.PROTOCOL,
                status=response.status_code,
            )
        return SlackRef(channel=channel, ts=ts, thread_ts=thread_ts)

    async def post(self, message: SlackMessage, *, channel: str | None = None) -> SlackRef:
        """Post a top-level message to ``channel`` (name or id; default: slack.default_channel).

        Webhook mode posts to the webhook's own channel and returns ``SlackRef(channel, None)``.
        One attempt; raises DeliveryError.
        """
        target = channel or self._settings.default_channel or ""
        if self.mode is SlackMode.WEBHOOK:
            await self._blocks_or_text(message, self._send_webhook)
            return SlackRef(channel=target, ts=None)
        if not target:
            raise DeliveryError(
                retryable=False, reason="chat.postMessage: no channel to post to", kind=FailureKind.REJECTED
            )

        def send(shaped: SlackMessage) -> Awaitable[AsyncSlackResponse]:
            return self._api(
                "chat.postMessage",
                self._web_client().chat_postMessage(
                    channel=target, unfurl_links=False, unfurl_media=False, **self._message_args(shaped)
                ),
            )

        response = await self._blocks_or_text(message, send)
        ref = self._ref("chat.postMessage", response, None)
        if not _CHANNEL_ID.match(target):
            self._channel_ids[target.lstrip("#")] = ref.channel
        return ref

    async def post_in_thread(
        self, parent: SlackRef, message: SlackMessage, *, broadcast: bool = False
    ) -> SlackRef:
        """Reply in the thread of ``parent`` (a ref returned by ``post``), and with ``broadcast``
        show the reply in the channel too. Bot mode only."""
        if self.mode is SlackMode.WEBHOOK or parent.ts is None:
            raise _unsupported("thread reply")
        extra: dict[str, Any] = {"reply_broadcast": True} if broadcast else {}
        assert parent.ts is not None

        def send(shaped: SlackMessage) -> Awaitable[AsyncSlackResponse]:
            return self._api(
                "chat.postMessage",
                self._web_client().chat_postMessage(
                    channel=parent.channel,
                    thread_ts=parent.ts,
                    unfurl_links=False,
                    unfurl_media=False,
                    **extra,
                    **self._message_args(shaped),
                ),
            )

        response = await self._blocks_or_text(message, send)
        return self._ref("chat.postMessage", response, parent.ts)

    async def update(self, ref: SlackRef, message: SlackMessage) -> SlackRef:
        """Replace the message at ``ref`` (a top-level post or a thread reply). Bot mode only."""
        if self.mode is SlackMode.WEBHOOK or ref.ts is None:
            raise _unsupported("message update")
        ts = ref.ts

        def send(shaped: SlackMessage) -> Awaitable[AsyncSlackResponse]:
            return self._api(
                "chat.update",
                self._web_client().chat_update(channel=ref.channel, ts=ts, **self._message_args(shaped)),
            )

        response = await self._blocks_or_text(message, send)
        return self._ref("chat.update", response, ref.thread_ts)

    async def find_posted(
        self,
        channel: str,
        incident_id: str,
        oldest_ts: float | str,
        *,
        action_id: int | None = None,
        page_size: int = 200,
        max_pages: int = 20,
    ) -> SlackRef | None:
        """The top-level message already posted for ``incident_id`` in ``channel`` (its incident
        post; with ``action_id``, the post telling that action: by hand, a lapse or a retry) at or
        after ``oldest_ts`` (epoch seconds or a Slack ts), or None when the whole range was
        searched and there is none. If there are several (a duplicate slipped through), the oldest.

        Raises DeliveryError (retryable or not) when Slack cannot answer, and a permanent one
        (kind PROTOCOL, code ``history_too_long``) when more than ``max_pages`` pages would have
        to be read: then the caller must not assume "not posted". Bot mode only.
        """
        if self.mode is SlackMode.WEBHOOK:
            raise _unsupported("history search")
        channel_id = await self._channel_id(channel)
        oldest = oldest_ts if isinstance(oldest_ts, str) else f"{max(0.0, oldest_ts):.6f}"
        client = self._web_client()

        def page(cursor: str | None) -> Awaitable[AsyncSlackResponse]:
            return client.conversations_history(
                channel=channel_id,
                oldest=oldest,
                inclusive=True,
                limit=page_size,
                include_all_metadata=True,
                cursor=cursor,
            )

        ts = await self._oldest_post(
            "conversations.history", page, _Ours(incident_id, action_id), max_pages, f"since {oldest}"
        )
        return None if ts is None else SlackRef(channel=channel_id, ts=ts)

    async def find_posted_reply(
        self,
        parent: SlackRef,
        incident_id: str,
        *,
        action_id: int | None = None,
        kind: MessageKind = MessageKind.INCIDENT,
        page_size: int = 200,
        max_pages: int = 20,
    ) -> SlackRef | None:
        """The reply already posted for ``incident_id`` in the thread of ``parent`` (its incident
        post, or its repeat counter with ``kind`` REPEAT; with ``action_id``, its reply telling that
        action), or None when the whole thread was read and there is none (the oldest if several).
        Raises DeliveryError as ``find_posted`` does. Bot mode only."""
        if self.mode is SlackMode.WEBHOOK or parent.ts is None:
            raise _unsupported("thread search")
        channel_id = await self._channel_id(parent.channel)
        client = self._web_client()
        thread = parent.ts

        def page(cursor: str | None) -> Awaitable[AsyncSlackResponse]:
            return client.conversations_replies(
                channel=channel_id, ts=thread, limit=page_size, include_all_metadata=True, cursor=cursor
            )

        ts = await self._oldest_post(
            "conversations.replies",
            page,
            _Ours(incident_id, action_id, kind),
            max_pages,
            f"in thread {thread}",
        )
        return None if ts is None else SlackRef(channel=channel_id, ts=ts, thread_ts=thread)

    async def _oldest_post(
        self,
        what: str,
        page: Callable[[str | None], Awaitable[AsyncSlackResponse]],
        ours: _Ours,
        max_pages: int,
        where: str,
    ) -> str | None:
        """The ts of the oldest post ``ours`` names on the pages ``page`` reads (one per cursor),
        or None when every page was read and none is; a permanent DeliveryError when there are
        more than ``max_pages`` pages: then nobody may assume "not posted"."""
        found: list[str] = []
        cursor: str | None = None
        for _ in range(max_pages):
            response = await self._api(what, page(cursor))
            found += [str(m["ts"]) for m in response.get("messages") or [] if ours.posted(m)]
            cursor = _next_cursor(response)
            if not cursor:
                return min(found, key=float) if found else None
        raise DeliveryError(
            retryable=False,
            reason=f"{what}: over {max_pages} pages {where}; not searched to the end",
            kind=FailureKind.PROTOCOL,
            code="history_too_long",
        )

    async def _channel_id(self, channel: str) -> str:
        if _CHANNEL_ID.match(channel):
            return channel
        name = channel.lstrip("#")
        known = self._channel_ids.get(name)
        if known is not None:
            return known
        client = self._web_client()
        cursor: str | None = None
        while True:
            response = await self._api(
                "conversations.list",
                client.conversations_list(
                    types="public_channel,private_channel",
                    exclude_archived=True,
                    limit=_LIST_PAGE,
                    cursor=cursor,
                ),
            )
            for item in response.get("channels") or []:
                if isinstance(item, Mapping) and isinstance(item.get("id"), str):
                    self._channel_ids[str(item.get("name", ""))] = item["id"]
            if name in self._channel_ids:
                return self._channel_ids[name]
            cursor = _next_cursor(response)
            if not cursor:
                raise DeliveryError(
                    retryable=False,
                    reason=f"conversations.list: no channel named {_short(name)!r} visible to the bot",
                    kind=FailureKind.REJECTED,
                    code="channel_not_found",
                )

    async def check(self) -> str:
        """Who we are to Slack (``auth.test``), for start-up checks and /readyz.

        Webhook mode has no way to check without posting and answers from config only.
        """
        if self.mode is SlackMode.WEBHOOK:
            return "incoming webhook"
        response = await self._api("auth.test", self._web_client().auth_test())
        scopes = _header(response.headers, "x-oauth-scopes") or ""
        self._scopes = frozenset(scope.strip() for scope in scopes.split(",") if scope.strip())
        return f"{response.get('user', '?')} in {response.get('team', '?')}"

    async def channel_problem(self, channel: str) -> str | None:
        """Why the bot cannot post to ``channel`` (not found, archived, not a member), or None when
        it can. Raises DeliveryError when Slack cannot tell (a missing ``channels:read`` or
        ``groups:read`` scope, an outage). Bot mode only."""
        if self.mode is SlackMode.WEBHOOK:
            raise _unsupported("channel check")
        try:
            channel_id = await self._channel_id(channel)
            response = await self._api(
                "conversations.info", self._web_client().conversations_info(channel=channel_id)
            )
        except DeliveryError as error:
            if error.code == "channel_not_found":
                return "channel_not_found: no such channel visible to the bot"
            raise
        info = response.get("channel")
        if not isinstance(info, Mapping):
            raise DeliveryError(
                retryable=False,
                reason="conversations.info: Slack answered without the channel",
                kind=FailureKind.PROTOCOL,
            )
        if info.get("is_archived") is True:
            return "is_archived: the channel is archived"
        # A channel the bot is not in takes no posts ("not_in_channel"); DMs have no is_member.
        public = info.get("is_private") is False
        if info.get("is_member") is False and not (public and "chat:write.public" in self._scopes):
            return "not_in_channel: the bot is not a member (invite it: /invite @bot)"
        return None

    async def _send_webhook(self, message: SlackMessage) -> None:
        what = "incoming webhook"
        self._check_pace(what)
        try:
            response = await self._hook_client().send(
                text=message.text,
                blocks=message.blocks_json() or None,
                unfurl_links=False,
                unfurl_media=False,
            )
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise _transport_failure(what, exc) from exc
        # WebhookClient never raises on HTTP errors: the status is the answer.
        if 200 <= response.status_code < 300:
            return
        body = _short(response.body) if response.body else ""
        error = _http_failure(
            what, response.status_code, response.headers, body if _ERROR_CODE.match(body) else None
        )
        if error.code is None and body:
            error.reason += f": {body}"
        raise self._paced(what, error)


# The replies that tell an action journaled under the incident (the journal's actions.id is in their
# metadata): one a person took by hand, the recheck's finding that what the incident put on the
# pod no longer holds, or what a withheld isolation did when tried again.
_ACTION_REPLIES = frozenset({MessageKind.BY_HAND.value, MessageKind.LAPSE.value, MessageKind.RETRY.value})


@dataclass(frozen=True, slots=True)
class _Ours:
    """Which of our posts a search looks for: an incident's own post, or (``action_id``) its
    reply telling an action taken by hand, a lapse the recheck found, or what a retry did."""

    incident_id: str
    action_id: int | None = None
    # Without action_id: the incident's own post, or its repeat counter (REPEAT).
    kind: MessageKind = MessageKind.INCIDENT

    def posted(self, message: object) -> bool:
        if not isinstance(message, Mapping) or not isinstance(message.get("ts"), str):
            return False
        metadata = message.get("metadata")
        if not isinstance(metadata, Mapping) or metadata.get("event_type") != EVENT_TYPE:
            return False
        payload = metadata.get("event_payload")
        if not isinstance(payload, Mapping) or payload.get("incident_id") != self.incident_id:
            return False
        if self.action_id is None:
            return payload.get("kind") == self.kind.value
        return payload.get("kind") in _ACTION_REPLIES and payload.get("action_id") == self.action_id


def _next_cursor(response: AsyncSlackResponse) -> str | None:
    meta = response.get("response_metadata")
    cursor = meta.get("next_cursor") if isinstance(meta, Mapping) else None
    return cursor if isinstance(cursor, str) and cursor else None


__all__ = [
    "CHANNEL_REFUSALS",
    "CREDENTIAL_REFUSALS",
    "RETRYABLE_ERROR_CODES",
    "DeliveryError",
    "FailureKind",
    "Refusal",
    "SlackDelivery",
    "SlackRef",
    "parse_retry_after",
    "refusal_of",
]
