"""Which permanent Slack refusals the worker can get past (credentials to wait for, a channel to
post around, a deleted message), the secret read again after a refusal, and the start-up check
of a channel the bot cannot post to."""

from __future__ import annotations

import pytest

from responder.config import SlackMode
from responder.errors import UserError
from responder.notify.render import render_incident
from responder.notify.slack import DeliveryError, FailureKind, Refusal, SlackDelivery, refusal_of
from simulators.slack_sink import SlackSink
from tests.notify.slack_fixtures import TOKEN, bot_settings, make_report, quarantined, webhook_settings


def refused(code: str, *, retryable: bool = False) -> DeliveryError:
    return DeliveryError(
        retryable=retryable, reason=f"Slack error {code}", kind=FailureKind.REJECTED, code=code
    )


@pytest.mark.parametrize(
    ("code", "mode", "expected"),
    [
        ("token_revoked", SlackMode.BOT, Refusal.CREDENTIALS),
        ("invalid_auth", SlackMode.BOT, Refusal.CREDENTIALS),
        ("missing_scope", SlackMode.BOT, Refusal.CREDENTIALS),
        ("account_inactive", SlackMode.BOT, Refusal.CREDENTIALS),
        ("channel_not_found", SlackMode.BOT, Refusal.CHANNEL),
        ("not_in_channel", SlackMode.BOT, Refusal.CHANNEL),
        ("is_archived", SlackMode.BOT, Refusal.CHANNEL),
        # Per resource, not per token: one channel's refusal must not pause all sending.
        ("access_denied", SlackMode.BOT, Refusal.CHANNEL),
        ("no_permission", SlackMode.BOT, Refusal.CHANNEL),
        ("team_access_not_granted", SlackMode.BOT, Refusal.CHANNEL),
        ("thread_not_found", SlackMode.BOT, Refusal.MESSAGE_GONE),
        ("message_not_found", SlackMode.BOT, Refusal.MESSAGE_GONE),
        # The blocks refused, not the post: the same message goes out as text alone.
        ("invalid_blocks", SlackMode.BOT, Refusal.BLOCKS),
        ("msg_blocks_too_long", SlackMode.BOT, Refusal.BLOCKS),
        ("invalid_blocks", SlackMode.WEBHOOK, Refusal.BLOCKS),
        ("msg_too_long", SlackMode.BOT, None),
        # An incoming webhook has one channel: its channel gone is the webhook gone.
        ("channel_not_found", SlackMode.WEBHOOK, Refusal.CREDENTIALS),
        ("no_service", SlackMode.WEBHOOK, Refusal.CREDENTIALS),
        ("invalid_token", SlackMode.WEBHOOK, Refusal.CREDENTIALS),
        ("invalid_payload", SlackMode.WEBHOOK, None),
    ],
)
def test_refusals_are_told_apart(code: str, mode: SlackMode, expected: Refusal | None) -> None:
    assert refusal_of(refused(code), mode) is expected


def test_a_retryable_failure_is_no_refusal() -> None:
    assert refusal_of(refused("ratelimited", retryable=True), SlackMode.BOT) is None
    no_code = DeliveryError(retryable=False, reason="x", kind=FailureKind.REJECTED)
    assert refusal_of(no_code, SlackMode.BOT) is None


async def test_a_refused_token_is_read_again_from_its_secret(
    sink: SlackSink, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SG_TEST_SLACK_TOKEN", TOKEN)
    monkeypatch.setattr(sink, "token", "xoxb-rotated")  # the token the responder holds is refused
    delivery = SlackDelivery.from_config(bot_settings(sink))
    assert delivery is not None
    async with delivery:
        error = await _failure(delivery.post(render_incident(make_report(outcomes=(quarantined(),)))))
        assert refusal_of(error, delivery.mode) is Refusal.CREDENTIALS
        assert not delivery.reload_secret()  # the same secret: nothing to change
        monkeypatch.setenv("SG_TEST_SLACK_TOKEN", "xoxb-rotated")
        assert delivery.reload_secret()
        await delivery.post(render_incident(make_report(outcomes=(quarantined(),))))
    assert [r.token for r in sink.requests("chat.postMessage")] == [TOKEN, "xoxb-rotated"]


def test_a_webhook_secret_read_again_must_still_be_a_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SG_TEST_SLACK_WEBHOOK", "https://hooks.example.invalid/services/T/B/one")
    delivery = SlackDelivery.from_config(webhook_settings())
    assert delivery is not None
    monkeypatch.setenv("SG_TEST_SLACK_WEBHOOK", "not a url")
    with pytest.raises(UserError, match=r"slack.webhook_url: the secret is not an http\(s\) URL"):
        delivery.reload_secret()
    monkeypatch.setenv("SG_TEST_SLACK_WEBHOOK", "https://hooks.example.invalid/services/T/B/two")
    assert delivery.reload_secret()


async def test_the_start_up_channel_check(sink: SlackSink) -> None:
    sink.leave("#ml-alerts")
    async with SlackDelivery(bot_settings(sink), token=TOKEN) as delivery:
        await delivery.check()
        assert await delivery.channel_problem("#sec-alerts") is None
        assert (await delivery.channel_problem("#ml-alerts") or "").startswith("not_in_channel")
        assert (await delivery.channel_problem("#no-such-channel") or "").startswith("channel_not_found")
        # An id is asked about directly.
        assert await delivery.channel_problem(sink.channel_id("#sec-alerts") or "") is None
    sink.api_error("missing_scope", method="conversations.list")
    async with SlackDelivery(bot_settings(sink), token=TOKEN) as delivery:
        error = await _failure(delivery.channel_problem("#sec-alerts"))
        assert error.code == "missing_scope"  # cannot tell: said so, not taken for "fine"


async def _failure(call: object) -> DeliveryError:
    with pytest.raises(DeliveryError) as caught:
        await call  # type: ignore[misc]
    return caught.value
