"""Retries of withheld isolations beside the incident's other actions: a LEAKY quarantine is on the
pod (not taken, nor told, again while another action keeps failing); a block withheld before its
address was known is history once the retry blocks; an annotation told at its opening only because
it was withheld is told when the retry makes it; a block the block breaker held is taken once the
breaker's window passes; the block an incident made is not turned into an egress quarantine by a
retry of something else; a one-way quarantine by hand leaves a both-ways retry to do. Against the
Kubernetes emulator and the Slack sink, over loopback HTTP."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from responder.actions.outcome import BLOCK_DESTINATION, ActionOutcome, OutcomeStatus
from responder.cli import main
from responder.cluster.api import KubeGateway
from responder.service import Responder
from simulators.slack_sink import SlackSink
from tests.helpers import FakeClock, responder_config
from tests.notify.slack_fixtures import visible_text
from tests.responder.test_block_destination import EGRESS_RULE, egress_alert
from tests.responder.test_lapse_notice import headline
from tests.responder.test_notifications import Seeded, incident_posts, settle, sink, start
from tests.responder.test_pipeline import labels, rows, submit_all
from tests.responder.test_pipeline import shell as alert_on
from tests.responder.test_quarantine_command import write_config
from tests.responder.test_retry_withheld import (
    QUICK,
    api_back,
    api_down,
    retries,
    retry_replies,
    wait_for,
    withheld_before_a_restart,
)
from tests.responder.test_workload_threads import submit

__all__ = ["sink"]  # the fixture, used by name

LABEL = "serving-guard.io/quarantine"
DOWNLOAD_RULE = "Runtime download or package install in serving pod"


def policy(*actions: str, rules: tuple[str, ...] = (EGRESS_RULE,)) -> dict[str, Any]:
    return {"name": "p", "match": {"rules": list(rules)}, "actions": ["notify", *actions]}


async def test_a_leaky_quarantine_is_not_taken_again_while_a_block_keeps_failing(
    tmp_path: Path, seeded: Seeded, sink: SlackSink
) -> None:
    _, pods, _ = seeded
    triton = pods["triton"]  # another policy lets the gateway reach it: its quarantine is LEAKY
    extra = {
        "policies": [policy("quarantine", "block_destination")],
        "dedupe": {"retry_withheld_seconds": [0.3] * 3},
    }
    responder = await start(tmp_path, seeded, sink, extra=extra)
    assert responder.pipeline is not None

    def failing_block(*args: Any, **kwargs: Any) -> ActionOutcome:
        return ActionOutcome(BLOCK_DESTINATION, OutcomeStatus.FAILED, "HTTP 500: injected")

    responder.pipeline._actions.block_destination = failing_block  # type: ignore[method-assign]
    try:
        await submit(responder, egress_alert(triton, "203.0.113.7"))
        await wait_for(lambda: retries(responder, "failed") == 3)
        await settle(responder, lambda: len(retry_replies(sink)) == 1)
        await asyncio.sleep(0.5)
        quarantines = rows(responder.config, "SELECT status FROM actions WHERE action = 'quarantine'")
        assert [r[0] for r in quarantines] == ["leaky"]  # once, at the opening
        blocks = rows(responder.config, "SELECT status FROM actions WHERE action = 'block_destination'")
        assert [r[0] for r in blocks] == ["failed"] * 4
        (reply,) = retry_replies(sink)  # the last try's: the block failed again
        assert "*block_destination FAILED*" in visible_text(reply.blocks)
    finally:
        await responder.stop()


async def test_a_block_withheld_during_an_outage_is_history_once_the_retry_blocks(
    tmp_path: Path, seeded: Seeded, sink: SlackSink
) -> None:
    running, pods, _ = seeded
    api_down(running)
    responder = await start(
        tmp_path, seeded, sink, extra={"policies": [policy("block_destination")], **QUICK}
    )
    try:
        await submit(responder, egress_alert(pods["vllm"], "203.0.113.7"))
        await settle(responder, lambda: len(incident_posts(sink)) == 1)
        api_back(running)
        await wait_for(lambda: retries(responder, "acted") == 1)
        await settle(responder, lambda: headline(incident_posts(sink)[0]).startswith(":no_entry: *Blocked*"))
        text = headline(incident_posts(sink)[0])
        leading, _, history = text.partition("_Before that:_")
        assert "203.0.113.7" in leading and "withheld" not in leading, text
        assert "block_destination withheld: pod lookup failed" in history, text
    finally:
        await responder.stop()


async def test_an_annotation_told_only_because_it_was_withheld_is_told_when_the_retry_makes_it(
    tmp_path: Path, seeded: Seeded, sink: SlackSink
) -> None:
    """A Notice alert under an annotate-only policy is posted because its annotation was withheld
    (that needs eyes): the retry's annotation is told in its thread, and the post says it."""
    running, pods, _ = seeded
    api_down(running)
    extra = {"policies": [policy("annotate", rules=(DOWNLOAD_RULE,))], **QUICK}
    responder = await start(tmp_path, seeded, sink, extra=extra)
    try:
        await submit(responder, alert_on(pods["triton"], n=0, rule=DOWNLOAD_RULE))  # priority Notice
        await settle(responder, lambda: len(incident_posts(sink)) == 1)
        api_back(running)
        await wait_for(lambda: retries(responder, "acted") == 1)
        await settle(responder, lambda: len(retry_replies(sink)) == 1)
        assert ":memo: *Annotated* the pod" in visible_text(retry_replies(sink)[0].blocks)
        await settle(responder, lambda: headline(incident_posts(sink)[0]).startswith(":memo:"))
    finally:
        await responder.stop()


async def test_a_block_the_block_breaker_held_is_taken_once_its_window_passes(
    tmp_path: Path, seeded: Seeded
) -> None:
    _, pods, kubeconfig = seeded
    clock = FakeClock()
    extra = {
        "inputs": {},
        "policies": [policy("block_destination")],
        "guardrails": {"max_blocks": {"count": 1, "window_seconds": 60}},
        **QUICK,
    }
    config = responder_config(tmp_path, kubeconfig, extra=extra)
    responder = Responder(config, KubeGateway.from_config(config.cluster), clock_ns=clock)
    await responder.start()
    try:
        await submit_all(responder, [egress_alert(pods["vllm"], "203.0.113.1")])  # the breaker's one block
        torchserve = pods["torchserve"]
        await submit_all(responder, [egress_alert(torchserve, "203.0.113.7")])  # held by the breaker
        clock.advance(61)
        await wait_for(lambda: retries(responder, "acted") == 1)
        statuses = rows(config, "SELECT status FROM actions WHERE pod = ? ORDER BY id", torchserve.name)
        assert [r[0] for r in statuses] == ["withheld", "blocked"]
        assert rows(config, "SELECT COUNT(*) FROM incidents")[0][0] == 2  # no repeat, no new incident
    finally:
        await responder.stop()


async def test_a_retry_of_a_failed_annotation_leaves_the_block_made_as_it_is(
    tmp_path: Path, seeded: Seeded
) -> None:
    """The incident's own block counts against the pod's share (per_pod 1): re-decided for the
    failed annotation, the block is past its share, yet it is made already: not an egress quarantine."""
    running, pods, kubeconfig = seeded
    extra = {
        "inputs": {},
        "policies": [policy("block_destination", "annotate")],
        "guardrails": {"max_blocks": {"count": 20, "window_seconds": 300, "per_pod": 1}},
        "dedupe": {"retry_withheld_seconds": [0.3]},
    }
    config = responder_config(tmp_path, kubeconfig, extra=extra)
    responder = Responder(config, KubeGateway.from_config(config.cluster))
    await responder.start()
    pipeline = responder.pipeline
    assert pipeline is not None
    annotate = pipeline._actions.annotate
    calls: list[None] = []

    def annotate_failing_once(*args: Any, **kwargs: Any) -> Any:
        calls.append(None)
        if len(calls) == 1:
            return ActionOutcome("annotate", OutcomeStatus.FAILED, "HTTP 500: injected")
        return annotate(*args, **kwargs)

    pipeline._actions.annotate = annotate_failing_once  # type: ignore[method-assign]
    try:
        await submit_all(responder, [egress_alert(pods["vllm"], "203.0.113.7")])
        await wait_for(lambda: retries(responder, "acted") == 1)
        actions = [tuple(r) for r in rows(config, "SELECT action, status FROM actions ORDER BY id")]
        assert sorted(actions) == [
            ("annotate", "annotated"),
            ("annotate", "failed"),
            ("block_destination", "blocked"),
        ]
        assert LABEL not in labels(running, pods["vllm"])
    finally:
        await responder.stop()


async def test_a_one_way_quarantine_by_hand_leaves_a_both_ways_retry_to_do(
    tmp_path: Path, seeded: Seeded
) -> None:
    """A person cut the pod's egress by hand under the incident while its both-ways quarantine was
    withheld: the retry still widens it to both ways (the quarantine by name was taken as done)."""
    running, pods, kubeconfig = seeded
    vllm = pods["vllm"]
    await withheld_before_a_restart(tmp_path, seeded, vllm)
    (incident,) = rows(responder_config(tmp_path, kubeconfig), "SELECT incident_id FROM incidents")
    by_hand_config = write_config(tmp_path, kubeconfig)
    egress = ["--isolate", "egress", "--incident", incident["incident_id"], "--reason", "r", "--by", "alice"]
    assert (
        main(["quarantine", "-n", vllm.namespace, vllm.name, *egress, "--config", str(by_hand_config)]) == 0
    )
    assert labels(running, vllm).get(LABEL) == "true-egress"

    config = responder_config(tmp_path, kubeconfig, extra={"inputs": {}, **QUICK})
    restarted = Responder(config, KubeGateway.from_config(config.cluster))
    await restarted.start()
    try:
        await wait_for(lambda: labels(running, vllm).get(LABEL) == "true")  # both ways
        await wait_for(lambda: len(rows(config, "SELECT id FROM actions")) == 3)
        done = rows(config, "SELECT actor, status FROM actions ORDER BY id")
        assert [tuple(a) for a in done] == [
            ("responder", "withheld"),
            ("alice", "quarantined"),
            ("responder", "quarantined"),
        ]
    finally:
        await restarted.stop()
