"""SlackDelivery (slack-sdk's async clients) against the local Slack sink over real loopback HTTP."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable
from pathlib import Path

import pytest

from responder.actions.outcome import ActionOutcome, OutcomeStatus
from responder.cluster.verify import Verification, VerificationStatus
from responder.config import Slack, load_config_text
from responder.errors import UserError
from responder.notify.render import EVENT_TYPE, SlackMessage, render_incident, render_repeat
from responder.notify.slack import DeliveryError, FailureKind, SlackDelivery, SlackRef, parse_retry_after
from simulators.slack_sink import Fault, SlackSink
from tests.helpers import refusing_port
from tests.notify.slack_fixtures import (
    BASE_FIELDS,
    TOKEN,
    bot_settings,
    make_alert,
    make_decision,
    make_report,
    quarantined,
    webhook_settings,
)


def message(incident_id: str = "inc-0123456789abcdef0123") -> SlackMessage:
    return render_incident(make_report(outcomes=(quarantined(),), incident_id=incident_id))


def bot(sink: SlackSink, **overrides: object) -> SlackDelivery:
    return SlackDelivery(bot_settings(sink, **overrides), token=TOKEN)


def hook(sink: SlackSink, url: str | None = None) -> SlackDelivery:
    return SlackDelivery(webhook_settings(), webhook_url=url or sink.webhook_url)


async def failure(call: Awaitable[object]) -> DeliveryError:
    with pytest.raises(DeliveryError) as caught:
        await call
    return caught.value


# ---- bot mode: what slack-sdk sends ---------------------------------------------------------


async def test_bot_post_sends_blocks_metadata_and_no_link_parsing(sink: SlackSink) -> None:
    rendered = message()
    async with bot(sink) as delivery:
        ref = await delivery.post(rendered, channel="#sec-oncall")
    [request] = sink.requests("chat.postMessage")
    assert request.http_method == "POST" and request.path == "/api/chat.postMessage"
    assert request.headers["authorization"] == f"Bearer {TOKEN}"
    assert request.headers["content-type"].startswith("application/json")
    assert request.json == {
        "channel": "#sec-oncall",
        "text": rendered.text,
        "blocks": rendered.blocks_json(),
        "metadata": {
            "event_type": EVENT_TYPE,
            "event_payload": {"incident_id": "inc-0123456789abcdef0123", "kind": "incident"},
        },
        "unfurl_links": False,
        "unfurl_media": False,
        "parse": "none",
        "link_names": False,
    }
    [stored] = sink.messages("#sec-oncall")
    assert ref == SlackRef(channel=sink.channel_id("#sec-oncall") or "", ts=stored.ts)
    assert ref.channel.startswith("C")  # the id Slack answers with, not the name


async def test_default_channel_when_the_decision_names_none(sink: SlackSink) -> None:
    async with bot(sink) as delivery:
        ref = await delivery.post(message())
    assert ref.channel == sink.channel_id("#sec-alerts")
    assert sink.requests("chat.postMessage")[0].json["channel"] == "#sec-alerts"


async def test_repeat_goes_in_the_thread_and_updates_in_place(sink: SlackSink) -> None:
    report = make_report(outcomes=(quarantined(),), count=2)
    async with bot(sink) as delivery:
        parent = await delivery.post(render_incident(report), channel="#sec-oncall")
        reply = await delivery.post_in_thread(parent, render_repeat(report))
        again = make_report(outcomes=(quarantined(),), count=9)
        updated = await delivery.update(reply, render_repeat(again))
        parent_updated = await delivery.update(parent, render_incident(again))
    assert reply.thread_ts == parent.ts and reply.channel == parent.channel and reply.ts != parent.ts
    assert updated == reply and parent_updated == parent
    post_reply = sink.requests("chat.postMessage")[1].json
    assert post_reply["thread_ts"] == parent.ts and post_reply["channel"] == parent.channel
    assert post_reply["metadata"]["event_payload"]["kind"] == "repeat"
    update = sink.requests("chat.update")[0].json
    assert update["channel"] == parent.channel and update["ts"] == reply.ts
    assert update["parse"] == "none" and update["link_names"] is False
    [top] = sink.messages("#sec-oncall")
    assert parent.ts is not None
    [thread_reply] = sink.replies("#sec-oncall", parent.ts)
    assert "Seen *9 times*" in thread_reply.text + json.dumps(thread_reply.blocks)
    assert thread_reply.edits == 1 and top.edits == 1
    assert len(sink.messages("#sec-oncall")) == 1  # repeats never post again at top level


async def test_auth_check(sink: SlackSink) -> None:
    async with bot(sink) as delivery:
        assert await delivery.check() == "serving-guard in Serving Guard Sink"


# ---- bot mode: failures become typed errors, one attempt each -------------------------------


async def test_429_is_retryable_with_retry_after_and_not_retried_here(sink: SlackSink) -> None:
    sink.rate_limit(retry_after=0.5)
    async with bot(sink) as delivery:
        error = await failure(delivery.post(message()))
        assert len(sink.requests("chat.postMessage")) == 1  # no retry loop inside delivery
        assert (error.retryable, error.kind, error.retry_after_seconds, error.status) == (
            True,
            FailureKind.RATE_LIMITED,
            0.5,
            429,
        )
        assert "429" in error.reason
        # Within its Retry-After the method is not called: Slack would only refuse again.
        early = await failure(delivery.post(message()))
        assert early.kind is FailureKind.RATE_LIMITED and 0 < (early.retry_after_seconds or 0) <= 0.5
        assert len(sink.requests("chat.postMessage")) == 1
        await asyncio.sleep(0.5)
        await delivery.post(message())  # the next attempt (scheduled by the journal) succeeds
    assert len(sink.messages("#sec-alerts")) == 1


@pytest.mark.parametrize("html", [False, True], ids=["json-body", "html-page"])
async def test_5xx_is_retryable(sink: SlackSink, html: bool) -> None:
    sink.server_error(status=500, html=html)
    sink.inject(Fault(status=503, retry_after=30, body="<html>maintenance</html>"))
    async with bot(sink) as delivery:
        first = await failure(delivery.post(message()))
        second = await failure(delivery.post(message()))
    assert (first.retryable, first.kind, first.status) == (True, FailureKind.UNAVAILABLE, 500)
    assert (second.retryable, second.status, second.retry_after_seconds) == (True, 503, 30.0)
    assert sink.messages("#sec-alerts") == []


@pytest.mark.parametrize(
    ("error_code", "retryable"),
    [
        ("invalid_auth", False),
        ("channel_not_found", False),
        ("not_in_channel", False),
        ("is_archived", False),
        ("invalid_arguments", False),
        ("account_inactive", False),
        ("internal_error", True),
        ("fatal_error", True),
        ("ratelimited", True),
    ],
)
async def test_slack_error_codes_are_classified(sink: SlackSink, error_code: str, retryable: bool) -> None:
    sink.api_error(error_code)
    async with bot(sink) as delivery:
        error = await failure(delivery.post(message()))
    assert error.code == error_code and error.retryable is retryable and error.status == 200
    assert error.kind is (FailureKind.REJECTED if not retryable else error.kind)
    assert error_code in error.reason


async def test_wrong_token_is_permanent(sink: SlackSink) -> None:
    async with SlackDelivery(bot_settings(sink), token="xoxb-wrong") as delivery:
        error = await failure(delivery.post(message()))
    assert (error.retryable, error.code, error.kind) == (False, "invalid_auth", FailureKind.REJECTED)
    assert "xoxb-wrong" not in error.reason and "xoxb-wrong" not in repr(delivery)


async def test_timeout_is_retryable(sink: SlackSink) -> None:
    sink.inject(Fault(status=200, delay_seconds=1, method="chat.postMessage"))
    async with bot(sink, timeout_seconds=0.2) as delivery:
        error = await failure(delivery.post(message()))
    assert (error.retryable, error.kind) == (True, FailureKind.TRANSPORT)
    assert "timed out" in error.reason


async def test_connection_refused_is_retryable(sink: SlackSink) -> None:
    with refusing_port() as closed_port:
        async with bot(sink, base_url=f"http://127.0.0.1:{closed_port}/api/") as delivery:
            error = await failure(delivery.post(message()))
    assert (error.retryable, error.kind) == (True, FailureKind.TRANSPORT)


async def test_loopback_is_reached_even_with_a_proxy_in_the_environment(
    sink: SlackSink, monkeypatch: pytest.MonkeyPatch
) -> None:
    # slack-sdk would send everything to HTTPS_PROXY (a dead port here) and ignores NO_PROXY.
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")
    async with bot(sink) as delivery:
        await delivery.post(message())
    assert len(sink.messages("#sec-alerts")) == 1


# ---- crash recovery: was it posted? ---------------------------------------------------------


async def test_find_posted_finds_a_post_whose_answer_was_lost(sink: SlackSink) -> None:
    sink.inject(Fault(status=500, apply=True, method="chat.postMessage"))
    async with bot(sink) as delivery:
        lost = await failure(delivery.post(message("inc-lost"), channel="#sec-oncall"))
        assert lost.retryable  # a blind retry would post twice ...
        await delivery.post(message("inc-other"), channel="#sec-oncall")
    # ... so the restarted responder asks first (a new process knows no channel ids).
    async with bot(sink) as restarted:
        found = await restarted.find_posted("#sec-oncall", "inc-lost", 0)
        [landed, _other] = sink.messages("#sec-oncall")
        assert found == SlackRef(channel=sink.channel_id("#sec-oncall") or "", ts=landed.ts)
        assert await restarted.find_posted("#sec-oncall", "inc-never-posted", 0) is None
        assert await restarted.find_posted(found.channel, "inc-lost", float(landed.ts) + 1) is None
        assert await restarted.find_posted(found.channel, "inc-lost", landed.ts) == found  # inclusive
    [history, *_] = sink.requests("conversations.history")
    assert history.query["include_all_metadata"] == "1"
    assert history.query["channel"] == found.channel
    # The name was resolved once through conversations.list, then cached.
    assert len(sink.requests("conversations.list")) == 1


async def test_find_posted_ignores_thread_replies_and_pages_through_history(sink: SlackSink) -> None:
    async with bot(sink) as delivery:
        parent = await delivery.post(message("inc-a"), channel="#sec-oncall")
        await delivery.post_in_thread(parent, message("inc-b"))  # replies are not top-level posts
        for index in range(5):
            await delivery.post(message(f"inc-filler-{index}"), channel="#sec-oncall")
        assert await delivery.find_posted(parent.channel, "inc-b", 0) is None
        assert await delivery.find_posted("#sec-oncall", "inc-a", 0, page_size=2) == SlackRef(
            parent.channel, parent.ts
        )
        too_long = await failure(delivery.find_posted("#sec-oncall", "inc-zzz", 0, page_size=2, max_pages=2))
    assert too_long.code == "history_too_long" and not too_long.retryable
    assert len(sink.requests("conversations.history")) >= 3 + 2


async def test_find_posted_errors_are_typed(sink: SlackSink) -> None:
    async with bot(sink) as delivery:
        missing = await failure(delivery.find_posted("#nowhere", "inc-a", 0))
        assert (missing.code, missing.retryable) == ("channel_not_found", False)
        await delivery.post(message("inc-a"), channel="#sec-oncall")
        sink.rate_limit(retry_after=60, method="conversations.history")
        limited = await failure(delivery.find_posted("#sec-oncall", "inc-a", 0))
    assert (limited.retryable, limited.retry_after_seconds) == (True, 60.0)


# ---- webhook mode ---------------------------------------------------------------------------


async def test_webhook_post_sends_blocks_without_metadata(sink: SlackSink) -> None:
    rendered = message()
    async with hook(sink) as delivery:
        assert not delivery.supports_threads
        ref = await delivery.post(rendered, channel="#ignored-by-webhooks")
    assert ref.ts is None
    [request] = sink.requests()
    assert request.kind == "webhook" and request.path == sink.webhook_path
    assert request.headers["content-type"].startswith("application/json")
    assert request.json == {
        "text": rendered.text,
        "blocks": rendered.blocks_json(),
        "unfurl_links": False,
        "unfurl_media": False,
    }
    assert "authorization" not in request.headers
    assert [m.via for m in sink.all_messages()] == ["webhook"]


@pytest.mark.parametrize(
    ("status", "body", "retryable", "kind"),
    [
        (400, "invalid_payload", False, FailureKind.REJECTED),
        (403, "invalid_token", False, FailureKind.REJECTED),
        (404, "channel_not_found", False, FailureKind.REJECTED),
        (410, "channel_is_archived", False, FailureKind.REJECTED),
        (500, "internal_error", True, FailureKind.UNAVAILABLE),
        (502, "<html>bad gateway</html>", True, FailureKind.UNAVAILABLE),
        # Not Slack's answer (a proxy's page): waited out, not taken for a refusal.
        (403, "<html>Forbidden by proxy</html>", True, FailureKind.UNAVAILABLE),
    ],
)
async def test_webhook_http_errors_are_detected(
    sink: SlackSink, status: int, body: str, retryable: bool, kind: FailureKind
) -> None:
    sink.webhook_error(status, body)
    async with hook(sink) as delivery:
        error = await failure(delivery.post(message()))
    # A Slack error code is the body; a page from something else is no code (said in the reason).
    code = None if body.startswith("<") else body
    assert (error.status, error.retryable, error.kind, error.code) == (status, retryable, kind, code)
    assert body in error.reason
    assert sink.all_messages() == []
    # The webhook URL is a secret: never in an error that reaches logs and the journal.
    assert "sink-webhook-secret" not in error.reason + repr(error)


async def test_webhook_429_honours_retry_after(sink: SlackSink) -> None:
    sink.rate_limit(retry_after=12, method="webhook")
    async with hook(sink) as delivery:
        error = await failure(delivery.post(message()))
    assert (error.retryable, error.kind, error.retry_after_seconds) == (True, FailureKind.RATE_LIMITED, 12.0)
    assert len(sink.requests()) == 1


async def test_unknown_webhook_and_unreachable_webhook(sink: SlackSink) -> None:
    async with hook(sink, url=f"{sink.url}/services/T0/B0/revoked") as delivery:
        revoked = await failure(delivery.post(message()))
    assert (revoked.status, revoked.code, revoked.retryable) == (404, "no_service", False)
    with refusing_port() as closed_port:
        async with hook(sink, url=f"http://127.0.0.1:{closed_port}/services/x") as delivery:
            down = await failure(delivery.post(message()))
    assert (down.retryable, down.kind) == (True, FailureKind.TRANSPORT)


async def test_webhook_cannot_thread_update_or_search(sink: SlackSink) -> None:
    async with hook(sink) as delivery:
        ref = SlackRef("C0123456789", "1.000001")
        for call in (
            delivery.post_in_thread(ref, message()),
            delivery.update(ref, message()),
            delivery.find_posted("#x", "inc", 0),
        ):
            error = await failure(call)
            assert (error.kind, error.retryable) == (FailureKind.UNSUPPORTED, False)
        assert await delivery.check() == "incoming webhook"
    assert sink.requests() == []


# ---- escaping, end to end -------------------------------------------------------------------


HOSTILE = {
    "proc.cmdline": "sh -c 'echo <!channel> ``` <https://evil.example|click> &amp; @here'",
    "fd.name": "/tmp/<@U123>&`x`",
    "proc.pname": "<!here|here>",
    "user.name": "```",
    "rule": "Shell <!channel> in `pod`",
    "output": "<!everyone> &amp; ```evil```",
    "reason": "container.id <@U999> is not a container of the pod",
    "detail": "<!channel> & friends",
}


def unverified_message(values: dict[str, str]) -> SlackMessage:
    fields = {**BASE_FIELDS, **{k: v for k, v in values.items() if "." in k}}
    alert = make_alert(fields, rule=values["rule"], output=values["output"])
    return render_incident(
        make_report(
            alert=alert,
            decision=make_decision(unverified=True, withheld=(f"not verified: {values['reason']}",)),
            verification=Verification(VerificationStatus.UNVERIFIED, values["reason"]),
            outcomes=(ActionOutcome("quarantine", OutcomeStatus.FAILED, values["detail"]),),
        )
    )


async def test_hostile_alert_text_arrives_escaped_in_bot_and_webhook_posts(sink: SlackSink) -> None:
    rendered = unverified_message(HOSTILE)
    # The same report with harmless text: its backticks are exactly the ones we add.
    twin = unverified_message({key: "x" for key in HOSTILE})
    async with bot(sink) as delivery:
        await delivery.post(rendered)
    async with hook(sink) as delivery:
        await delivery.post(rendered)
    assert [r.status for r in sink.requests()] == [200, 200]
    for request in sink.requests():
        raw = request.raw.decode()
        # Not one "<" in the whole request: no link, mention or broadcast can form.
        assert "<" not in raw and ">" not in raw and "\\u003c" not in raw.lower()
        assert "&lt;!channel&gt;" in raw and "&lt;https://evil.example|click&gt;" in raw
        assert "&amp;amp;" in raw  # a literal "&amp;" in the alert shows as typed
        assert "@here" not in raw and "@channel" not in raw
        blocks = json.dumps(request.json["blocks"])
        assert blocks.count("`") == json.dumps(twin.blocks_json()).count("`")
        assert "\\u02cb\\u02cb\\u02cb" in blocks  # the alert's ``` is shown, as look-alikes


# ---- secrets --------------------------------------------------------------------------------


async def test_token_is_read_from_a_file_and_sent_only_as_bearer(sink: SlackSink, tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(f"{TOKEN}\n", encoding="utf-8")
    settings = bot_settings(sink, token={"file": str(token_file)})
    delivery = SlackDelivery.from_config(settings)
    assert delivery is not None
    async with delivery:
        await delivery.post(message())
        assert TOKEN not in repr(delivery)
    [request] = sink.requests()
    assert request.headers["authorization"] == f"Bearer {TOKEN}"
    assert TOKEN not in request.raw.decode() and "token" not in request.query


async def test_token_and_webhook_url_from_env(sink: SlackSink, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SG_TEST_SLACK_TOKEN", TOKEN)
    monkeypatch.setenv("SG_TEST_SLACK_WEBHOOK", sink.webhook_url)
    for settings in (bot_settings(sink), webhook_settings()):
        delivery = SlackDelivery.from_config(settings)
        assert delivery is not None
        async with delivery:
            await delivery.post(message())
    assert [r.kind for r in sink.requests()] == ["api", "webhook"]


def test_missing_or_empty_secrets_are_clear_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    missing = tmp_path / "absent"
    with pytest.raises(UserError, match=rf"slack\.token: cannot read {missing}"):
        SlackDelivery.from_config(
            Slack.model_validate({"mode": "bot", "token": {"file": str(missing)}, "default_channel": "#a"})
        )
    monkeypatch.setenv("SG_TEST_SLACK_WEBHOOK", "  ")
    with pytest.raises(UserError, match=r"slack\.webhook_url: \$SG_TEST_SLACK_WEBHOOK is empty"):
        SlackDelivery.from_config(webhook_settings())
    monkeypatch.setenv("SG_TEST_SLACK_WEBHOOK", "hooks.slack.com/services/SECRET")
    with pytest.raises(UserError, match="not an http") as caught:
        SlackDelivery.from_config(webhook_settings())
    assert "SECRET" not in str(caught.value)
    assert SlackDelivery.from_config(Slack()) is None  # disabled


def test_a_token_written_in_the_config_text_is_refused() -> None:
    text = "slack:\n  mode: bot\n  default_channel: '#a'\n  token: xoxb-123-456-abc\n"
    with pytest.raises(UserError, match=r"<config>:4: slack\.token"):
        load_config_text(text)


def test_retry_after_forms() -> None:
    assert parse_retry_after("30") == 30.0
    assert parse_retry_after("1.5") == 1.5
    assert parse_retry_after("-4") == 0.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:10 GMT", now=1445412480.0) == 10.0
    assert parse_retry_after("soon") is None
    assert parse_retry_after(None) is None
    assert parse_retry_after("nan") is None
