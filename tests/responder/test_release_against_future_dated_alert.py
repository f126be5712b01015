"""A release is weighed against the alert as dated no later than it came. A verified alert from a
node whose clock runs an hour ahead, withheld while the API was down, was quarantined by the retry
over a person's release made after it came: its date made it look newer than their judgement
(review-47 L4). Against the Kubernetes emulator and the Slack sink, over loopback HTTP."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from responder.actions.pod_records import dated_credibly
from responder.alert import format_time_ns
from responder.alert_json import alert_from_mapping
from responder.ingest.sink import InputName
from simulators.cluster_emulator import RunningCluster
from simulators.falco_json import falco_alert
from simulators.seed import SeededPod
from simulators.slack_sink import SlackSink
from tests.helpers import SHELL_RULE, FakeClock
from tests.responder.test_notifications import Seeded, settle, sink, start
from tests.responder.test_pipeline import LABEL, labels
from tests.responder.test_retry_withheld import QUICK, api_back, api_down, retries, wait_for

__all__ = ["sink"]  # the fixture, used by name

HOUR_NS = 3600 * 10**9


def record_release(running: RunningCluster, pod: SeededPod, at_ns: int) -> None:
    """bob's release of ``pod`` at ``at_ns``, as `serving-guard release` records it on the pod."""
    stored = running.call(running.emulator.get_object, "v1/pods", pod.namespace, pod.name)
    assert stored is not None
    annotations = stored["metadata"].setdefault("annotations", {})
    annotations["serving-guard.io/released-at"] = format_time_ns(at_ns)
    annotations["serving-guard.io/released-by"] = "bob"
    running.call(running.emulator.put_object, "v1/pods", stored)


def test_an_alert_is_dated_no_later_than_it_came(seeded: Seeded) -> None:
    clock = FakeClock()
    payload = falco_alert(
        seeded[1]["vllm"], SHELL_RULE, "Notice", "shell", {"proc.name": "sh"}, time_ns=clock.now + HOUR_NS
    )
    ahead = alert_from_mapping(payload)
    assert dated_credibly(ahead, clock.now) == dataclasses.replace(
        ahead, time_ns=clock.now, dated_ahead_ns=HOUR_NS
    )
    on_time = dataclasses.replace(ahead, time_ns=clock.now - 10**9)
    assert dated_credibly(on_time, clock.now) is on_time


async def test_a_release_after_a_future_dated_alert_came_holds_against_its_retry(
    tmp_path: Path, seeded: Seeded, sink: SlackSink
) -> None:
    running, pods, _ = seeded
    vllm = pods["vllm"]
    clock = FakeClock()
    api_down(running)
    responder = await start(tmp_path, seeded, sink, clock, extra=QUICK)
    try:
        assert responder.pipeline is not None
        payload = falco_alert(
            vllm, SHELL_RULE, "Notice", "shell", {"proc.name": "sh"}, time_ns=clock.now + HOUR_NS
        )
        came_ns = clock.now
        await responder.pipeline.submit(alert_from_mapping(payload), InputName.HTTP)
        await settle(responder, lambda: True)
        # The on-call looked (the API down for the responder, not for them) and released the pod.
        api_back(running)
        record_release(running, vllm, came_ns + 150 * 10**9)
        clock.advance(170)
        await wait_for(lambda: retries(responder, "nothing_to_do") + retries(responder, "acted") >= 1)
        assert LABEL not in labels(running, vllm)
        assert retries(responder, "acted") == 0  # the release withheld it: nothing to do, as the person said
    finally:
        await responder.stop()
