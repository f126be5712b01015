"""The local Slack sink checks what real Slack checks, and can be driven from another process."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from typing import Any

import pytest
from slack_sdk import WebClient, WebhookClient
from slack_sdk.errors import SlackApiError

from simulators.slack_sink import Fault, RunningSlackSink, SlackSink, block_problems
from tests.notify.slack_fixtures import TOKEN


def web(sink: SlackSink, token: str = TOKEN) -> WebClient:
    # The sync client too: the sink is plain HTTP, any Slack client can use it.
    return WebClient(token=token, base_url=sink.base_url, retry_handlers=[])


def error_of(call: Any) -> str:
    with pytest.raises(SlackApiError) as caught:
        call()
    return str(caught.value.response["error"])


def test_block_kit_limits_are_enforced() -> None:
    assert block_problems([{"type": "header", "text": {"type": "plain_text", "text": "x" * 151}}]) == [
        "blocks[0].text.text: must be at most 150 characters (is 151)"
    ]
    assert block_problems([{"type": "section", "text": {"type": "mrkdwn", "text": "x" * 3001}}])
    assert block_problems([{"type": "section", "fields": [{"type": "mrkdwn", "text": "x"}] * 11}])
    assert block_problems([{"type": "divider"}] * 51)
    plain_verbatim = {"type": "plain_text", "text": "x", "verbatim": True}
    assert block_problems([{"type": "section", "text": plain_verbatim}])
    assert block_problems([{"type": "header", "text": {"type": "mrkdwn", "text": "x"}}])
    assert block_problems([{"type": "nonsense"}])
    good = {"type": "mrkdwn", "text": "ok", "verbatim": True}
    assert block_problems([{"type": "section", "text": good}]) == []


def test_web_api_checks_token_channel_ids_threads_and_metadata(sink: SlackSink) -> None:
    assert error_of(lambda: web(sink, "xoxb-other").auth_test()) == "invalid_auth"
    client = web(sink)
    posted = client.chat_postMessage(channel="#general", text="hello")
    channel, ts = posted["channel"], posted["ts"]
    assert channel == sink.channel_id("general")
    # chat.update and conversations.history need the id, as in real Slack.
    assert error_of(lambda: client.chat_update(channel="#general", ts=ts, text="x")) == "channel_not_found"
    unknown_ts = "1.000000"
    assert error_of(lambda: client.chat_update(channel=channel, ts=unknown_ts, text="x")) == (
        "message_not_found"
    )
    assert error_of(lambda: client.chat_postMessage(channel=channel, thread_ts="1.0", text="x")) == (
        "thread_not_found"
    )
    with pytest.warns(UserWarning, match="text"):  # slack-sdk warns; Slack refuses
        assert error_of(lambda: client.chat_postMessage(channel=channel)) == "no_text"
    bad_metadata = {"event_type": "has spaces", "event_payload": {}}
    assert error_of(lambda: client.chat_postMessage(channel=channel, text="x", metadata=bad_metadata)) == (
        "invalid_metadata_format"
    )
    too_big = [{"type": "header", "text": {"type": "plain_text", "text": "x" * 200}}]
    assert error_of(lambda: client.chat_postMessage(channel=channel, text="x", blocks=too_big)) == (
        "invalid_blocks"
    )
    metadata = {"event_type": "serving_guard_incident", "event_payload": {"incident_id": "i"}}
    client.chat_postMessage(channel=channel, text="with metadata", metadata=metadata)
    plain = client.conversations_history(channel=channel)["messages"]
    full = client.conversations_history(channel=channel, include_all_metadata=True)["messages"]
    assert [m["text"] for m in plain] == ["with metadata", "hello"]  # newest first
    assert "metadata" not in plain[0] and full[0]["metadata"] == metadata


def test_strict_channels_and_unknown_methods() -> None:
    with RunningSlackSink(SlackSink(channels=["#sec-alerts"])) as strict:
        client = web(strict)
        client.chat_postMessage(channel="#sec-alerts", text="x")
        unknown = "#elsewhere"
        assert error_of(lambda: client.chat_postMessage(channel=unknown, text="x")) == "channel_not_found"
        assert error_of(lambda: client.api_call("no.such.method")) == "unknown_method"
        names = [c["name"] for c in client.conversations_list()["channels"]]
        assert names == ["sec-alerts", "sink-webhook"]


def test_faults_queue_by_method_and_count(sink: SlackSink) -> None:
    sink.rate_limit(times=2, retry_after=3, method="chat.postMessage")
    client = web(sink)
    assert client.auth_test()["ok"]  # another method is not affected
    for _ in range(2):
        with pytest.raises(SlackApiError) as caught:
            client.chat_postMessage(channel="#a", text="x")
        assert caught.value.response.status_code == 429
        assert caught.value.response.headers["Retry-After"] == "3"
    client.chat_postMessage(channel="#a", text="x")
    assert [r.status for r in sink.requests("chat.postMessage")] == [429, 429, 200]
    assert [r.fault for r in sink.requests("chat.postMessage")] == [True, True, False]
    assert len(sink.messages("#a")) == 1  # failed calls change nothing


def test_webhook_answers_like_slack(sink: SlackSink) -> None:
    assert WebhookClient(sink.webhook_url).send(text="hi").body == "ok"
    assert WebhookClient(sink.webhook_url).send_dict({"attachments": []}).status_code == 400
    missing = WebhookClient(f"{sink.url}/services/T/B/unknown").send(text="hi")
    assert (missing.status_code, missing.body) == (404, "no_service")
    assert [m.text for m in sink.all_messages()] == ["hi"]


def test_control_endpoints_drive_a_sink_in_another_process(sink: SlackSink) -> None:
    def post(path: str, body: dict[str, Any]) -> Any:
        request = urllib.request.Request(
            f"{sink.url}{path}",
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=5) as response:
            return json.load(response)

    def get(path: str) -> Any:
        with urllib.request.urlopen(f"{sink.url}{path}", timeout=5) as response:
            return json.load(response)

    assert post("/_sink/faults", {"status": 503, "method": "chat.postMessage"}) == {"ok": True}
    client = web(sink)
    with pytest.raises(SlackApiError):
        client.chat_postMessage(channel="#a", text="first")
    client.chat_postMessage(channel="#a", text="second")
    recorded = get("/_sink/requests?method=chat.postMessage")
    assert [(r["status"], r["json"]["text"]) for r in recorded] == [(503, "first"), (200, "second")]
    assert [m["text"] for m in get("/_sink/messages")] == ["second"]
    assert post("/_sink/reset", {}) == {"ok": True}
    assert sink.requests() == []


def test_fault_fields_are_all_settable_remotely() -> None:
    # The control endpoint takes Fault's fields by name: keep them JSON-friendly.
    fault = Fault(**json.loads(json.dumps(Fault(status=429, retry_after=2, apply=True).__dict__)))
    assert fault.status == 429 and fault.apply


def test_runs_as_a_process_for_the_demo() -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "simulators.slack_sink", "--port", "0", "--quiet"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        first = process.stdout.readline()
        assert first.startswith("slack.base_url: http://127.0.0.1:")
        base_url = first.split(": ", 1)[1].strip()
        assert base_url.endswith("/api/")
        client = WebClient(token=TOKEN, base_url=base_url, retry_handlers=[])
        assert client.chat_postMessage(channel="#demo", text="from the demo")["ok"]
    finally:
        process.terminate()
        process.wait(timeout=10)
