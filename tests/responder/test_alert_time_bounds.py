"""An alert time past the journal's int64 nanoseconds (after 2262-04-11T23:47:16.854775807Z) is a bad
alert on every input, like one before 1970: refused naming the field, never a failed write."""

from __future__ import annotations

import json
from pathlib import Path

import aiohttp
import pytest

from responder.alert import MAX_TIME_NS, AlertError
from responder.cluster.api import KubeGateway
from responder.ingest.grpc import alert_from_response
from responder.ingest.proto import outputs_pb2
from responder.service import Responder
from simulators.cluster_emulator import RunningCluster
from simulators.falco_json import falco_alert
from simulators.seed import SeededPod
from tests.helpers import SHELL_RULE, responder_config

Seeded = tuple[RunningCluster, dict[str, SeededPod], str]


@pytest.mark.parametrize(
    ("when", "reason"),
    [
        ("2262-04-12T00:00:00Z", "timestamp out of range (after 2262-04-11T23:47:16.854775807Z)"),
        ("1900-01-01T00:00:00Z", "timestamp before 1970"),
    ],
)
async def test_the_http_input_answers_400_for_a_time_out_of_range(
    tmp_path: Path, seeded: Seeded, when: str, reason: str
) -> None:
    _, pods, kubeconfig = seeded
    config = responder_config(tmp_path, kubeconfig)
    responder = Responder(config, KubeGateway.from_config(config.cluster))
    await responder.start()
    try:
        alert = falco_alert(pods["vllm"], SHELL_RULE, "Notice", "shell", {"proc.name": "sh"})
        async with aiohttp.ClientSession() as session:
            for time_text in (when, alert["time"]):
                body = json.dumps(dict(alert, time=time_text)).encode()
                async with session.post(f"{responder.http_url}/v1/alerts", data=body) as response:
                    answer = await response.json(content_type=None)
                    if time_text == when:
                        assert response.status == 400, answer
                        assert answer["field"] == "time" and answer["reason"].startswith(reason)
                    else:  # the input goes on: the next good alert is taken
                        assert response.status == 202, answer
    finally:
        await responder.stop()


@pytest.mark.parametrize("time_ns", [MAX_TIME_NS + 1, (2**63 - 1) * 1_000_000_000])
def test_the_grpc_input_refuses_a_time_out_of_range(time_ns: int) -> None:
    response = outputs_pb2.response(rule="r", output="r happened", priority="NOTICE")
    response.time.seconds, response.time.nanos = divmod(time_ns, 1_000_000_000)
    with pytest.raises(AlertError) as caught:
        alert_from_response(response)
    assert caught.value.field == "time" and "out of range" in caught.value.reason


def test_the_grpc_input_takes_the_last_int64_nanosecond() -> None:
    response = outputs_pb2.response(rule="r", output="r happened", priority="NOTICE")
    response.time.seconds, response.time.nanos = divmod(MAX_TIME_NS, 1_000_000_000)
    assert alert_from_response(response).time_ns == MAX_TIME_NS
