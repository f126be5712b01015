"""An answer Slack gave "ok" without saying where the message landed: the post may be there, so
the call is tried again (the worker looks for the post first), never given up."""

from __future__ import annotations

import pytest
from slack_sdk.web.async_slack_response import AsyncSlackResponse

from responder.notify.slack import DeliveryError, FailureKind, SlackDelivery


@pytest.mark.parametrize(
    "data", [{"ok": True}, {"ok": True, "channel": "C0123456789"}, {"ok": True, "ts": "1.2"}]
)
def test_an_ok_answer_without_channel_and_ts_is_retryable(data: dict[str, object]) -> None:
    answer = AsyncSlackResponse(
        client=None,
        http_verb="POST",
        api_url="https://slack.example/api/chat.postMessage",
        req_args={},
        data=data,
        headers={},
        status_code=200,
    )
    with pytest.raises(DeliveryError) as caught:
        SlackDelivery._ref("chat.postMessage", answer, None)
    assert (caught.value.retryable, caught.value.kind) == (True, FailureKind.PROTOCOL)
