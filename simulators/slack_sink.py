"""A local Slack for the tests, the demo and the benchmark: real HTTP on 127.0.0.1 (aiohttp).

It speaks enough of the Slack Web API for slack-sdk's clients (``auth.test``,
``chat.postMessage``, ``chat.update``, ``conversations.history``, ``conversations.list``,
``conversations.replies``; JSON, form or query parameters; ``Authorization: Bearer``) and
incoming webhooks (``POST /services/...``, answered ``ok``), keeps the messages it was sent
(with threads and metadata), and records every request: method, headers, decoded body.

It checks what real Slack checks and a lenient fake would miss: the token, Block Kit sizes
(header 150, section 3000, field 2000, 50 blocks), metadata shape, that ``chat.update`` and
``conversations.history`` get a channel id (not a name), that a thread parent exists.

Faults are queued with :meth:`SlackSink.inject` (or POST ``/_sink/faults`` from another
process): the next N matching calls get HTTP 429 with Retry-After, a 5xx, an
``{"ok": false, "error": ...}`` answer, a slow answer, or — with ``apply`` — the real effect
followed by a failed answer (a post that landed but whose answer was lost).

Use it on the current loop (``async with SlackSink() as sink``), from a background thread
(``with RunningSlackSink() as sink``, for sync code and pytest fixtures), or as a process
(``python -m simulators.slack_sink``, for the demo). All state is guarded by a lock, so the
test thread can inspect it while the sink's loop serves.
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import hashlib
import json
import re
import sys
import threading
import time
import urllib.parse
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Self

import aiohttp.web

from simulators.background import BackgroundLoop

DEFAULT_TOKEN = "xoxb-serving-guard-sink"  # noqa: S105 - a test token for a loopback fake
DEFAULT_WEBHOOK_PATH = "/services/T0SINK/B0SINK/sink-webhook-secret"
DEFAULT_WEBHOOK_CHANNEL = "#sink-webhook"
# The channel the demo and the tests post to by default: it exists from the start (channels are
# otherwise made by the first post to them), so the responder's start-up check finds it.
DEFAULT_CHANNEL = "#sec-alerts"
TEAM_ID = "T0SINK"
BOT_USER_ID = "U0SINK"
BOT_ID = "B0SINK"

# Slack's Block Kit and message limits.
MAX_BLOCKS = 50
HEADER_TEXT_LIMIT = 150
SECTION_TEXT_LIMIT = 3000
FIELD_TEXT_LIMIT = 2000
MAX_FIELDS = 10
MAX_CONTEXT_ELEMENTS = 10
MESSAGE_TEXT_LIMIT = 40000
_BLOCK_TYPES = frozenset(
    {"header", "section", "context", "divider", "actions", "image", "rich_text", "markdown", "input", "file"}
)
_EVENT_TYPE = re.compile(r"^[A-Za-z0-9_]{1,255}$")
_CHANNEL_ID = re.compile(r"^[CGD][A-Z0-9]{8,}$")


@dataclass
class Fault:
    """Answer the next ``times`` matching calls with this instead of the normal answer.

    ``method``: an API method ("chat.postMessage"), "webhook", or None for any call.
    ``status`` 200 with no ``error`` and no ``body`` means "the normal answer, after
    ``delay_seconds``" (a slow Slack). ``apply``: perform the call first, then fail.
    """

    status: int = 500
    error: str | None = None
    body: str | None = None
    retry_after: float | None = None
    times: int = 1
    method: str | None = None
    delay_seconds: float = 0.0
    apply: bool = False

    def matches(self, kind: str, method: str) -> bool:
        if self.method is None:
            return True
        return self.method == ("webhook" if kind == "webhook" else method)

    @property
    def passes_through(self) -> bool:
        return self.status == 200 and self.error is None and self.body is None


@dataclass
class RecordedRequest:
    """One request as the sink saw it (``status`` is filled in once it has been answered)."""

    kind: str  # "api" or "webhook"
    method: str  # the API method, or the webhook path
    http_method: str
    path: str
    headers: dict[str, str]  # lower-case names
    query: dict[str, str]
    json: Any
    form: dict[str, str] | None
    raw: bytes
    status: int | None = None
    fault: bool = False

    @property
    def params(self) -> dict[str, Any]:
        """Query, form and JSON parameters merged (later ones win), as Slack reads them."""
        merged: dict[str, Any] = dict(self.query)
        if self.form:
            merged.update(self.form)
        if isinstance(self.json, Mapping):
            merged.update(self.json)
        return merged

    @property
    def token(self) -> str | None:
        auth = self.headers.get("authorization", "")
        if auth.lower().startswith("bearer "):
            return auth[7:].strip()
        token = self.params.get("token")
        return str(token) if token else None

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["raw"] = self.raw.decode("utf-8", "replace")
        return data


@dataclass
class SinkMessage:
    channel: str
    ts: str
    text: str
    blocks: list[Any]
    metadata: dict[str, Any] | None
    thread_ts: str | None = None
    via: str = "api"
    edits: int = 0
    replies: list[SinkMessage] = field(default_factory=list)

    def to_slack(self, *, with_metadata: bool) -> dict[str, Any]:
        """The message as conversations.history shows it."""
        data: dict[str, Any] = {
            "type": "message",
            "user": BOT_USER_ID,
            "bot_id": BOT_ID,
            "text": self.text,
            "ts": self.ts,
            "blocks": copy.deepcopy(self.blocks),
        }
        if self.thread_ts is not None:
            data["thread_ts"] = self.thread_ts
        if self.replies:
            data["thread_ts"] = self.ts
            data["reply_count"] = len(self.replies)
            data["latest_reply"] = self.replies[-1].ts
        if self.edits:
            data["edited"] = {"user": BOT_USER_ID, "ts": self.ts}
        if with_metadata and self.metadata is not None:
            data["metadata"] = copy.deepcopy(self.metadata)
        return data


class SlackError(Exception):
    """An ``{"ok": false}`` answer from a handler."""

    def __init__(self, error: str, **extra: Any) -> None:
        self.error = error
        self.extra = extra
        super().__init__(error)


def _truthy(value: object) -> bool:
    return value is True or str(value).lower() in ("1", "true", "yes")


def _decode_json_param(value: object, error: str) -> Any:
    """Form and query parameters carry blocks/metadata as JSON strings."""
    if isinstance(value, str):
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            raise SlackError(error) from None
    return value


def _text_object_problems(obj: object, where: str, limit: int, *, plain_only: bool = False) -> list[str]:
    if not isinstance(obj, Mapping):
        return [f"{where}: must be a text object"]
    kind = obj.get("type")
    text = obj.get("text")
    problems = []
    if kind not in ("plain_text", "mrkdwn") or (plain_only and kind != "plain_text"):
        problems.append(f"{where}.type: {kind!r} not allowed here")
    if not isinstance(text, str) or not text:
        problems.append(f"{where}.text: must be a non-empty string")
    elif len(text) > limit:
        problems.append(f"{where}.text: must be at most {limit} characters (is {len(text)})")
    if "verbatim" in obj and kind != "mrkdwn":
        problems.append(f"{where}.verbatim: only for mrkdwn")
    if "emoji" in obj and kind != "plain_text":
        problems.append(f"{where}.emoji: only for plain_text")
    return problems


def block_problems(blocks: object) -> list[str]:
    """Slack's Block Kit rules that a message renderer can break (a subset, enforced strictly)."""
    if not isinstance(blocks, list):
        return ["blocks: must be an array"]
    problems: list[str] = []
    if len(blocks) > MAX_BLOCKS:
        problems.append(f"blocks: at most {MAX_BLOCKS} (got {len(blocks)})")
    for index, block in enumerate(blocks):
        where = f"blocks[{index}]"
        if not isinstance(block, Mapping) or block.get("type") not in _BLOCK_TYPES:
            problems.append(f"{where}: unknown block")
            continue
        kind = block["type"]
        if kind == "header":
            problems += _text_object_problems(
                block.get("text"), f"{where}.text", HEADER_TEXT_LIMIT, plain_only=True
            )
        elif kind == "section":
            if "text" not in block and "fields" not in block:
                problems.append(f"{where}: needs text or fields")
            if "text" in block:
                problems += _text_object_problems(block["text"], f"{where}.text", SECTION_TEXT_LIMIT)
            if "fields" in block:
                fields = block["fields"]
                if not isinstance(fields, list) or not 1 <= len(fields) <= MAX_FIELDS:
                    problems.append(f"{where}.fields: 1 to {MAX_FIELDS} text objects")
                else:
                    for number, item in enumerate(fields):
                        problems += _text_object_problems(item, f"{where}.fields[{number}]", FIELD_TEXT_LIMIT)
        elif kind == "context":
            elements = block.get("elements")
            if not isinstance(elements, list) or not 1 <= len(elements) <= MAX_CONTEXT_ELEMENTS:
                problems.append(f"{where}.elements: 1 to {MAX_CONTEXT_ELEMENTS} elements")
            else:
                for number, item in enumerate(elements):
                    problems += _text_object_problems(item, f"{where}.elements[{number}]", SECTION_TEXT_LIMIT)
    return problems


class SlackSink:
    """The fake Slack: state, HTTP handlers and fault queue. See the module docstring."""

    def __init__(
        self,
        *,
        token: str | None = DEFAULT_TOKEN,
        webhook_path: str = DEFAULT_WEBHOOK_PATH,
        webhook_channel: str = DEFAULT_WEBHOOK_CHANNEL,
        channels: Iterable[str] | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        echo: bool = False,
    ) -> None:
        # token None: accept any bearer token (still required).
        self.token = token
        self.webhook_path = webhook_path
        self.host = host
        self.port = port
        self.echo = echo
        # channels None: any channel name is created on first post; else only these exist.
        self._auto_create = channels is None
        self._lock = threading.Lock()
        self._requests: list[RecordedRequest] = []
        self._faults: list[Fault] = []
        self._names: dict[str, str] = {}  # name (no '#') -> id
        self._messages: dict[str, list[SinkMessage]] = {}  # id -> top-level, oldest first
        self._last_ts_us = 0
        self._runner: aiohttp.web.AppRunner | None = None
        # Channel ids the bot is not a member of: posts there answer "not_in_channel".
        self._not_member: set[str] = set()
        for name in channels if channels is not None else (DEFAULT_CHANNEL,):
            self._create_channel(name)
        self.webhook_channel_id = self._create_channel(webhook_channel)

    # ---- addresses ----------------------------------------------------------------------

    @property
    def url(self) -> str:
        if not self.port:
            raise RuntimeError("the Slack sink is not serving yet")
        return f"http://{self.host}:{self.port}"

    @property
    def base_url(self) -> str:
        """For ``slack.base_url`` / ``WebClient(base_url=...)``: ends with '/' as slack-sdk needs."""
        return f"{self.url}/api/"

    @property
    def webhook_url(self) -> str:
        return f"{self.url}{self.webhook_path}"

    # ---- serving --------------------------------------------------------------------------

    def app(self) -> aiohttp.web.Application:
        app = aiohttp.web.Application(client_max_size=4 * 1024 * 1024)
        app.router.add_route("*", "/api/{method}", self._serve_api)
        app.router.add_get("/_sink/requests", self._serve_requests)
        app.router.add_get("/_sink/messages", self._serve_messages)
        app.router.add_post("/_sink/faults", self._serve_add_fault)
        app.router.add_post("/_sink/reset", self._serve_reset)
        app.router.add_post("/{path:.*}", self._serve_webhook)
        return app

    async def start(self) -> None:
        runner = aiohttp.web.AppRunner(self.app(), access_log=None)
        await runner.setup()
        site = aiohttp.web.TCPSite(runner, self.host, self.port)
        await site.start()
        # Port 0 picks a free port: read back the one bound.
        self.port = int(runner.addresses[0][1])
        self._runner = runner

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # ---- test controls (thread-safe) ------------------------------------------------------

    def inject(self, fault: Fault) -> None:
        with self._lock:
            self._faults.append(fault)

    def rate_limit(self, times: int = 1, *, retry_after: float = 1.0, method: str | None = None) -> None:
        error = "rate_limited" if method == "webhook" else "ratelimited"
        self.inject(Fault(status=429, error=error, retry_after=retry_after, times=times, method=method))

    def server_error(
        self, times: int = 1, *, status: int = 500, method: str | None = None, html: bool = False
    ) -> None:
        body = f"<html><body><h1>{status}</h1></body></html>" if html else None
        self.inject(Fault(status=status, body=body, times=times, method=method))

    def api_error(self, error: str, times: int = 1, *, method: str | None = None) -> None:
        self.inject(Fault(status=200, error=error, times=times, method=method))

    def webhook_error(self, status: int, body: str, times: int = 1) -> None:
        self.inject(Fault(status=status, body=body, times=times, method="webhook"))

    def leave(self, channel: str) -> str:
        """The bot is no longer a member of ``channel`` (created if need be): posts there answer
        ``not_in_channel``, and conversations.info says ``is_member: false``. Returns its id."""
        with self._lock:
            channel_id = self._resolve(channel) or self._create_channel(channel)
            self._not_member.add(channel_id)
            return channel_id

    def join(self, channel: str) -> str:
        """The bot is invited (back) into ``channel`` (created if need be). Returns its id."""
        with self._lock:
            channel_id = self._resolve(channel) or self._create_channel(channel)
            self._not_member.discard(channel_id)
            return channel_id

    def delete(self, channel: str, ts: str) -> bool:
        """Delete a message (as a person would in Slack): a top-level one takes its thread along."""
        with self._lock:
            return self._remove(self._resolve(channel) or "", ts)

    def clear(self) -> None:
        """Forget requests, messages, pending faults and left channels (channels stay)."""
        with self._lock:
            self._requests.clear()
            self._faults.clear()
            self._not_member.clear()
            for messages in self._messages.values():
                messages.clear()

    def requests(self, method: str | None = None) -> list[RecordedRequest]:
        with self._lock:
            return [r for r in self._requests if method is None or r.method == method]

    def channel_id(self, name: str) -> str | None:
        with self._lock:
            return self._resolve(name)

    def messages(self, channel: str) -> list[SinkMessage]:
        """Top-level messages in ``channel`` (name or id), oldest first."""
        with self._lock:
            channel_id = self._resolve(channel)
            return copy.deepcopy(self._messages.get(channel_id or "", []))

    def all_messages(self) -> list[SinkMessage]:
        with self._lock:
            return copy.deepcopy([m for messages in self._messages.values() for m in messages])

    def replies(self, channel: str, ts: str) -> list[SinkMessage]:
        with self._lock:
            parent = self._find(self._resolve(channel) or "", ts)
            return copy.deepcopy(parent.replies if parent is not None else [])

    # ---- state (call with the lock held) --------------------------------------------------

    def _create_channel(self, name: str) -> str:
        bare = name.lstrip("#")
        digest = hashlib.sha256(bare.encode()).hexdigest().upper()
        channel_id = "C" + "".join(c for c in digest if c.isalnum())[:10]
        self._names[bare] = channel_id
        self._messages.setdefault(channel_id, [])
        return channel_id

    def _resolve(self, channel: str, *, create: bool = False, ids_only: bool = False) -> str | None:
        if channel in self._messages:
            return channel
        if ids_only or _CHANNEL_ID.match(channel):
            return None
        bare = channel.lstrip("#")
        if bare in self._names:
            return self._names[bare]
        if create and self._auto_create and bare:
            return self._create_channel(bare)
        return None

    def _next_ts(self) -> str:
        now_us = max(int(time.time() * 1_000_000), self._last_ts_us + 1)
        self._last_ts_us = now_us
        return f"{now_us // 1_000_000}.{now_us % 1_000_000:06d}"

    def _find(self, channel_id: str, ts: str) -> SinkMessage | None:
        for message in self._messages.get(channel_id, []):
            if message.ts == ts:
                return message
            for reply in message.replies:
                if reply.ts == ts:
                    return reply
        return None

    def _take_fault(self, kind: str, method: str) -> Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.matches(kind, method):
                    fault.times -= 1
                    if fault.times <= 0:
                        self._faults.remove(fault)
                    return fault
        return None

    # ---- HTTP -------------------------------------------------------------------------------

    async def _record(self, request: aiohttp.web.Request, kind: str, method: str) -> RecordedRequest:
        raw = await request.read()
        body_json: Any = None
        form: dict[str, str] | None = None
        if request.content_type == "application/json" and raw:
            try:
                body_json = json.loads(raw)
            except ValueError:
                body_json = None
        elif request.content_type == "application/x-www-form-urlencoded" and raw:
            form = dict(urllib.parse.parse_qsl(raw.decode("utf-8", "replace"), keep_blank_values=True))
        recorded = RecordedRequest(
            kind=kind,
            method=method,
            http_method=request.method,
            path=request.path,
            headers={k.lower(): v for k, v in request.headers.items()},
            query=dict(request.query),
            json=body_json,
            form=form,
            raw=raw,
        )
        with self._lock:
            self._requests.append(recorded)
        return recorded

    def _answered(self, recorded: RecordedRequest, response: aiohttp.web.Response, fault: bool) -> None:
        with self._lock:
            recorded.status = response.status
            recorded.fault = fault

    @staticmethod
    def _fault_response(fault: Fault, kind: str) -> aiohttp.web.Response:
        headers = {}
        if fault.retry_after is not None:
            headers["Retry-After"] = f"{fault.retry_after:g}"
        if fault.body is not None:
            content_type = "text/html" if fault.body.lstrip().startswith("<") else "text/plain"
            return aiohttp.web.Response(
                status=fault.status, text=fault.body, content_type=content_type, headers=headers
            )
        if kind == "webhook":
            text = fault.error or ("rate_limited" if fault.status == 429 else "internal_error")
            return aiohttp.web.Response(status=fault.status, text=text, headers=headers)
        error = fault.error or ("ratelimited" if fault.status == 429 else "internal_error")
        return aiohttp.web.json_response({"ok": False, "error": error}, status=fault.status, headers=headers)

    async def _answer(
        self, request: aiohttp.web.Request, kind: str, method: str, handle: Any
    ) -> aiohttp.web.Response:
        recorded = await self._record(request, kind, method)
        fault = self._take_fault(kind, method)
        response: aiohttp.web.Response | None = None
        if fault is None or fault.apply or fault.passes_through:
            response = handle(recorded)
        if fault is not None:
            if fault.delay_seconds:
                await asyncio.sleep(fault.delay_seconds)
            if not fault.passes_through:
                response = self._fault_response(fault, kind)
        assert response is not None
        self._answered(recorded, response, fault is not None)
        return response

    async def _serve_api(self, request: aiohttp.web.Request) -> aiohttp.web.Response:
        method = request.match_info["method"]
        return await self._answer(request, "api", method, lambda recorded: self._api(method, recorded))

    async def _serve_webhook(self, request: aiohttp.web.Request) -> aiohttp.web.Response:
        return await self._answer(request, "webhook", request.path, self._webhook)

    def _api(self, method: str, recorded: RecordedRequest) -> aiohttp.web.Response:
        handlers = {
            "auth.test": self._auth_test,
            "chat.postMessage": self._post_message,
            "chat.update": self._update,
            "chat.delete": self._delete,
            "conversations.info": self._info,
            "conversations.history": self._history,
            "conversations.list": self._list,
            "conversations.replies": self._replies,
        }
        try:
            token = recorded.token
            if not token:
                raise SlackError("not_authed")
            if self.token is not None and token != self.token:
                raise SlackError("invalid_auth")
            handler = handlers.get(method)
            if handler is None:
                raise SlackError("unknown_method")
            with self._lock:
                result = handler(recorded.params)
        except SlackError as exc:
            return aiohttp.web.json_response({"ok": False, "error": exc.error, **exc.extra})
        return aiohttp.web.json_response({"ok": True, **result})

    def _auth_test(self, params: Mapping[str, Any]) -> dict[str, Any]:
        return {
            "url": f"{self.url}/",
            "team": "Serving Guard Sink",
            "user": "serving-guard",
            "team_id": TEAM_ID,
            "user_id": BOT_USER_ID,
            "bot_id": BOT_ID,
        }

    def _content(self, params: Mapping[str, Any]) -> tuple[str, list[Any], dict[str, Any] | None]:
        text = params.get("text")
        text = text if isinstance(text, str) else ""
        blocks = _decode_json_param(params.get("blocks", []), "invalid_blocks")
        if not text and not blocks:
            raise SlackError("no_text")
        if len(text) > MESSAGE_TEXT_LIMIT:
            raise SlackError("msg_too_long")
        problems = block_problems(blocks)
        if problems:
            raise SlackError("invalid_blocks", errors=problems, response_metadata={"messages": problems})
        metadata = params.get("metadata")
        if metadata is not None:
            metadata = _decode_json_param(metadata, "invalid_metadata_format")
            if (
                not isinstance(metadata, dict)
                or not isinstance(metadata.get("event_type"), str)
                or not _EVENT_TYPE.match(metadata["event_type"])
                or not isinstance(metadata.get("event_payload"), dict)
            ):
                raise SlackError("invalid_metadata_format")
        return text, list(blocks), metadata

    def _post_message(self, params: Mapping[str, Any]) -> dict[str, Any]:
        channel_id = self._resolve(str(params.get("channel", "")), create=True)
        if channel_id is None:
            raise SlackError("channel_not_found")
        if channel_id in self._not_member:
            raise SlackError("not_in_channel")
        text, blocks, metadata = self._content(params)
        thread_ts = params.get("thread_ts")
        message = SinkMessage(channel_id, self._next_ts(), text, blocks, metadata)
        if thread_ts:
            parent = next((m for m in self._messages[channel_id] if m.ts == thread_ts), None)
            if parent is None:
                raise SlackError("thread_not_found")
            message.thread_ts = parent.ts
            parent.replies.append(message)
        else:
            self._messages[channel_id].append(message)
        self._echo(f"post {channel_id} {message.ts}" + (f" (thread {thread_ts})" if thread_ts else ""), text)
        return {"channel": channel_id, "ts": message.ts, "message": message.to_slack(with_metadata=True)}

    def _delete(self, params: Mapping[str, Any]) -> dict[str, Any]:
        channel_id = self._resolve(str(params.get("channel", "")), ids_only=True)
        if channel_id is None:
            raise SlackError("channel_not_found")
        ts = str(params.get("ts", ""))
        if not self._remove(channel_id, ts):
            raise SlackError("message_not_found")
        return {"channel": channel_id, "ts": ts}

    def _remove(self, channel_id: str, ts: str) -> bool:
        """Take a message (with its replies, as Slack hides them) or a reply out of ``channel_id``."""
        messages = self._messages.get(channel_id, [])
        for message in messages:
            if message.ts == ts:
                messages.remove(message)
                return True
            for reply in message.replies:
                if reply.ts == ts:
                    message.replies.remove(reply)
                    return True
        return False

    def _info(self, params: Mapping[str, Any]) -> dict[str, Any]:
        channel_id = self._resolve(str(params.get("channel", "")))
        if channel_id is None:
            raise SlackError("channel_not_found")
        name = next((n for n, cid in self._names.items() if cid == channel_id), channel_id)
        return {
            "channel": {
                "id": channel_id,
                "name": name,
                "is_channel": True,
                "is_private": False,
                "is_archived": False,
                "is_member": channel_id not in self._not_member,
            }
        }

    def _update(self, params: Mapping[str, Any]) -> dict[str, Any]:
        # Real Slack wants the id here; a name is "channel_not_found".
        channel_id = self._resolve(str(params.get("channel", "")), ids_only=True)
        if channel_id is None:
            raise SlackError("channel_not_found")
        message = self._find(channel_id, str(params.get("ts", "")))
        if message is None:
            raise SlackError("message_not_found")
        text, blocks, metadata = self._content(params)
        message.text = text
        message.blocks = blocks
        if metadata is not None:
            message.metadata = metadata
        message.edits += 1
        self._echo(f"update {channel_id} {message.ts}", text)
        return {
            "channel": channel_id,
            "ts": message.ts,
            "text": text,
            "message": message.to_slack(with_metadata=True),
        }

    @staticmethod
    def _page(params: Mapping[str, Any], default: int, maximum: int) -> tuple[int, int]:
        try:
            limit = int(params.get("limit") or default)
            start = int(str(params.get("cursor") or "offset:0").removeprefix("offset:"))
        except ValueError:
            raise SlackError("invalid_cursor") from None
        return start, max(1, min(limit, maximum))

    def _history(self, params: Mapping[str, Any]) -> dict[str, Any]:
        channel_id = self._resolve(str(params.get("channel", "")), ids_only=True)
        if channel_id is None:
            raise SlackError("channel_not_found")
        inclusive = _truthy(params.get("inclusive", False))
        try:
            oldest = float(params.get("oldest") or 0)
            latest = float(params.get("latest") or "inf")
        except ValueError:
            raise SlackError("invalid_ts_oldest") from None

        def within(ts: str) -> bool:
            value = float(ts)
            if inclusive:
                return oldest <= value <= latest
            return oldest < value < latest

        newest_first = [m for m in reversed(self._messages[channel_id]) if within(m.ts)]
        start, limit = self._page(params, 100, 999)
        page = newest_first[start : start + limit]
        more = start + limit < len(newest_first)
        with_metadata = _truthy(params.get("include_all_metadata", False))
        return {
            "messages": [m.to_slack(with_metadata=with_metadata) for m in page],
            "has_more": more,
            "response_metadata": {"next_cursor": f"offset:{start + limit}" if more else ""},
        }

    def _list(self, params: Mapping[str, Any]) -> dict[str, Any]:
        start, limit = self._page(params, 100, 1000)
        items = sorted(self._names.items())
        page = items[start : start + limit]
        more = start + limit < len(items)
        return {
            "channels": [
                {"id": cid, "name": name, "is_channel": True, "is_private": False, "is_archived": False}
                for name, cid in page
            ],
            "response_metadata": {"next_cursor": f"offset:{start + limit}" if more else ""},
        }

    def _replies(self, params: Mapping[str, Any]) -> dict[str, Any]:
        channel_id = self._resolve(str(params.get("channel", "")), ids_only=True)
        if channel_id is None:
            raise SlackError("channel_not_found")
        parent = next((m for m in self._messages[channel_id] if m.ts == params.get("ts")), None)
        if parent is None:
            raise SlackError("thread_not_found")
        with_metadata = _truthy(params.get("include_all_metadata", False))
        thread = [parent, *parent.replies]
        return {"messages": [m.to_slack(with_metadata=with_metadata) for m in thread], "has_more": False}

    def _webhook(self, recorded: RecordedRequest) -> aiohttp.web.Response:
        if recorded.path != self.webhook_path:
            return aiohttp.web.Response(status=404, text="no_service")
        body = recorded.json
        if not isinstance(body, dict):
            return aiohttp.web.Response(status=400, text="invalid_payload")
        raw_text = body.get("text")
        text = raw_text if isinstance(raw_text, str) else ""
        blocks = body.get("blocks") or []
        if not text and not blocks:
            return aiohttp.web.Response(status=400, text="no_text")
        if block_problems(blocks):
            return aiohttp.web.Response(status=400, text="invalid_blocks")
        with self._lock:
            message = SinkMessage(
                self.webhook_channel_id, self._next_ts(), text, list(blocks), None, via="webhook"
            )
            self._messages[self.webhook_channel_id].append(message)
        self._echo(f"webhook {message.ts}", text)
        return aiohttp.web.Response(status=200, text="ok", content_type="text/html")

    def _echo(self, what: str, text: str) -> None:
        if self.echo:
            print(f"slack-sink: {what}: {text[:200]}", file=sys.stderr, flush=True)

    # ---- control endpoints (for a sink in another process) ---------------------------------

    async def _serve_requests(self, request: aiohttp.web.Request) -> aiohttp.web.Response:
        method = request.query.get("method")
        return aiohttp.web.json_response([r.to_json() for r in self.requests(method)])

    async def _serve_messages(self, request: aiohttp.web.Request) -> aiohttp.web.Response:
        return aiohttp.web.json_response([asdict(m) for m in self.all_messages()])

    async def _serve_add_fault(self, request: aiohttp.web.Request) -> aiohttp.web.Response:
        try:
            fault = Fault(**await request.json())
        except (ValueError, TypeError) as exc:
            return aiohttp.web.json_response({"ok": False, "error": f"bad fault: {exc}"}, status=400)
        self.inject(fault)
        return aiohttp.web.json_response({"ok": True})

    async def _serve_reset(self, request: aiohttp.web.Request) -> aiohttp.web.Response:
        self.clear()
        return aiohttp.web.json_response({"ok": True})


class RunningSlackSink:
    """A SlackSink served from a background thread with its own event loop.

    ``with RunningSlackSink() as sink:`` yields the started :class:`SlackSink`.
    """

    def __init__(self, sink: SlackSink | None = None) -> None:
        self.sink = sink or SlackSink()
        self._background = BackgroundLoop("slack-sink", lambda: self.sink)

    def start(self) -> SlackSink:
        self._background.start()
        return self.sink

    def stop(self) -> None:
        self._background.stop()

    def __enter__(self) -> SlackSink:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@dataclass(frozen=True)
class _Args:
    host: str
    port: int
    token: str | None
    quiet: bool


def _parse_args(argv: list[str] | None) -> _Args:
    parser = argparse.ArgumentParser(
        prog="python -m simulators.slack_sink", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--host", default="127.0.0.1", help="loopback address to listen on")
    parser.add_argument("--port", type=int, default=0, help="port (0: any free port)")
    parser.add_argument("--token", default=DEFAULT_TOKEN, help="bot token to accept ('' accepts any)")
    parser.add_argument("--quiet", action="store_true", help="do not print each message")
    args = parser.parse_args(argv)
    return _Args(host=args.host, port=args.port, token=args.token or None, quiet=args.quiet)


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)

    async def serve() -> None:
        sink = SlackSink(host=args.host, port=args.port, token=args.token, echo=not args.quiet)
        async with sink:
            print(f"slack.base_url: {sink.base_url}", flush=True)
            print(f"webhook url:    {sink.webhook_url}", flush=True)
            print(f"bot token:      {args.token or '(any)'}", flush=True)
            await asyncio.Event().wait()

    try:
        asyncio.run(serve())
    except KeyboardInterrupt:
        return 0
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
