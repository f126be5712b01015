"""A container id its pod has not listed for longer than the kubelet's lag is a possible forgery,
however freshly its alerts are dated. A forger dating each alert "now" on a pod whose container
keeps restarting (CrashLoopBackOff, a sidecar) was "not verified yet" on every alert, retry and
later incident for as long as the restarts went on, and never told as a possible forgery
(review-47 M1). Against the Kubernetes emulator and the Slack sink, over loopback HTTP."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
from pathlib import Path

from responder.alert import Alert
from responder.alert_json import alert_from_mapping
from responder.cluster.unlisted_ids import UnlistedIds, UnlistedKey
from responder.cluster.verify import LISTING_LAG_NS, VerificationStatus, verify_alert
from responder.ingest.sink import InputName
from simulators.falco_json import falco_alert
from simulators.seed import SeededPod
from simulators.slack_sink import SlackSink
from tests.helpers import SHELL_RULE, FakeClock
from tests.notify.slack_fixtures import visible_text
from tests.responder.test_block_destination import EGRESS_RULE
from tests.responder.test_lapse_notice import headline
from tests.responder.test_notifications import Seeded, incident_posts, settle, sink, start
from tests.responder.test_pipeline import LABEL, labels, rows
from tests.responder.test_pipeline_lookup_states import incidents
from tests.responder.test_quarantine import Harness
from tests.responder.test_retry_withheld import QUICK, retries, retry_replies, wait_for
from tests.responder.test_verify_starting_container import (
    CREATING,
    RUNNING,
    _with_sidecar_starting,
    later,
    pod_reads,
    set_status,
)

__all__ = ["sink"]  # the fixture, used by name

MADE_UP_ID = hashlib.sha256(b"a forger's container id").hexdigest()
RESTARTING = {"waiting": {"reason": "CrashLoopBackOff"}}


class SteppingClock(FakeClock):
    """A clock stepped forward once, right after the reading that follows step_after_next_reading."""

    def __init__(self) -> None:
        super().__init__()
        self._step = 0.0

    def step_after_next_reading(self, seconds: float) -> None:
        self._step = seconds

    def __call__(self) -> int:
        now = self.now
        if self._step:
            self.advance(self._step)
            self._step = 0.0
        return now


def dated_now(pod: SeededPod, clock: FakeClock, container_id: str = MADE_UP_ID, n: int = 0) -> Alert:
    """A shell alert on ``pod`` dated at the responder's "now", as a forger dates each one."""
    payload = falco_alert(
        pod, SHELL_RULE, "Notice", "shell", {"proc.name": "sh", "proc.pid": n}, time_ns=clock.now
    )
    payload["output_fields"]["container.id"] = container_id[:12]
    return alert_from_mapping(payload)


def test_the_check_says_how_long_an_id_has_gone_unlisted(seeded: Seeded) -> None:
    running, pods, kubeconfig = seeded
    vllm = pods["vllm"]
    starting = _with_sidecar_starting(Harness(running, kubeconfig).pod(vllm))
    clock = FakeClock()
    alert = dated_now(vllm, clock)
    at_lag = verify_alert(alert, starting, check_node=True, now_ns=clock.now, unlisted_for_ns=LISTING_LAG_NS)
    assert at_lag.status is VerificationStatus.NOT_LISTED_YET
    past = verify_alert(
        alert, starting, check_node=True, now_ns=clock.now, unlisted_for_ns=LISTING_LAG_NS + 10**9
    )
    assert past.status is VerificationStatus.UNVERIFIED
    assert past.reason == (
        f"container.id {MADE_UP_ID[:12]} is not a container of the pod; still not listed 31 s after its"
        " first alert came (the kubelet lists a run within seconds): forged, or a run gone since"
    )
    # Said only where the wait decided: another node's alert is refused for its node.
    elsewhere = dataclasses.replace(alert, hostname="some-other-node")
    refused = verify_alert(
        elsewhere, starting, check_node=True, now_ns=clock.now, unlisted_for_ns=LISTING_LAG_NS + 10**9
    )
    assert refused.status is VerificationStatus.UNVERIFIED and "still not listed" not in refused.reason
    # An id the pod lists is verified however long it went unlisted before.
    own = dated_now(vllm, clock, vllm.container_id)
    assert verify_alert(
        own, starting, check_node=True, now_ns=clock.now, unlisted_for_ns=3600 * 10**9
    ).verified


def test_unlisted_ids_keep_the_first_time_and_forget_the_least_recent_past_their_bound() -> None:
    ids = UnlistedIds(limit=2)
    first, second, third = (UnlistedKey("ns", "pod", str(n)) for n in range(3))
    assert ids.since(first) is None  # not noted: a first check waits its reads
    ids.note(first, 100)
    assert ids.since(first) == 100
    ids.note(second, 200)
    ids.note(first, 100)  # noted again: the most recent
    ids.note(third, 300)
    assert len(ids) == 2
    assert ids.since(second) is None  # forgotten, the least recently noted
    assert ids.since(first) == 100
    ids.forget(first)
    assert ids.since(first) is None


async def test_a_made_up_id_still_unlisted_past_the_lag_is_told_as_a_possible_forgery_by_a_retry(
    tmp_path: Path, seeded: Seeded, sink: SlackSink
) -> None:
    running, pods, _ = seeded
    vllm = pods["vllm"]
    set_status(running, vllm, vllm.container_id, RESTARTING)  # a crash loop: a run is always to come
    clock = FakeClock()
    responder = await start(tmp_path, seeded, sink, clock, extra=QUICK)
    try:
        assert responder.pipeline is not None
        await responder.pipeline.submit(dated_now(vllm, clock), InputName.HTTP)
        await settle(responder, lambda: len(incident_posts(sink)) == 1)
        [opened] = incidents(responder)
        assert opened["verification"]["status"] == "not_listed_yet"
        assert "not verified yet" in headline(incident_posts(sink)[0])
        await wait_for(lambda: retries(responder, "withheld") >= 1)  # still within the lag: tried again

        clock.advance(31)
        await wait_for(lambda: retries(responder, "unverified") == 1)
        await settle(responder, lambda: len(retry_replies(sink)) == 1)
        [reply] = retry_replies(sink)
        text = visible_text(reply.blocks)
        assert ":warning: *Possible forgery* on `ml-serving/vllm-0`" in text, text
        assert "still not listed 31 s after its first alert came" in text, text
        assert "*Nothing more is tried* unless the alert repeats: the pod is *not* isolated." in text, text
        [decided] = incidents(responder)
        assert decided["verification"]["status"] == "unverified"
        assert decided["decision"]["unverified"]
        # The incident's post is rendered again as an unverified alert's.
        await settle(responder, lambda: "Unverified alert" in headline(incident_posts(sink)[0]))
        assert "still not listed 31 s after" in headline(incident_posts(sink)[0])

        # The opening's "not verified yet" is history now, under the current verdict.
        text = visible_text(incident_posts(sink)[0].blocks)
        assert text.index("_Before that:_") < text.index("not verified yet: a container of the pod"), text

        # Nothing more is tried by itself; a repeat after REDECIDE_AFTER_SECONDS decides again: still
        # unlisted, unverified at once (its repeats fold into that one).
        withheld = retries(responder, "withheld")
        clock.advance(11)
        await responder.pipeline.submit(dated_now(vllm, clock, n=1), InputName.HTTP)
        await settle(responder, lambda: len(incidents(responder)) == 2)
        assert incidents(responder)[1]["verification"]["status"] == "unverified"
        clock.advance(11)
        await responder.pipeline.submit(dated_now(vllm, clock, n=2), InputName.HTTP)
        await settle(responder, lambda: True)
        assert len(incidents(responder)) == 2
        assert retries(responder, "withheld") == withheld
        assert LABEL not in labels(running, vllm)
    finally:
        await responder.stop()


async def test_a_later_incident_of_the_same_unlisted_id_counts_from_its_first_alert(
    tmp_path: Path, seeded: Seeded, sink: SlackSink
) -> None:
    """Without retries (only a repeat decides again), the repeat that opens a new incident past the
    lag is a possible forgery at once, without waiting reads."""
    running, pods, _ = seeded
    vllm = pods["vllm"]
    set_status(running, vllm, vllm.container_id, RESTARTING)
    clock = FakeClock()
    responder = await start(tmp_path, seeded, sink, clock, extra={"dedupe": {"retry_withheld_seconds": []}})
    try:
        assert responder.pipeline is not None
        await responder.pipeline.submit(dated_now(vllm, clock), InputName.HTTP)
        await settle(responder, lambda: len(incident_posts(sink)) == 1)
        clock.advance(31)
        before = pod_reads(running, vllm)
        await responder.pipeline.submit(dated_now(vllm, clock, n=1), InputName.HTTP)
        await settle(responder, lambda: len(incident_posts(sink)) == 2)
        assert [i["verification"]["status"] for i in incidents(responder)] == ["not_listed_yet", "unverified"]
        assert "still not listed 31 s after" in incidents(responder)[1]["verification"]["reason"]
        assert pod_reads(running, vllm) - before <= 2  # the cache, a fresh read: no waiting reads
        # Another made-up id gets its own window: not listed yet, as before.
        clock.advance(1)
        await responder.pipeline.submit(
            dated_now(vllm, clock, hashlib.sha256(b"another").hexdigest()), InputName.HTTP
        )
        await settle(responder, lambda: len(incidents(responder)) == 3)
        assert incidents(responder)[2]["verification"]["status"] == "not_listed_yet"
    finally:
        await responder.stop()


async def test_a_run_the_kubelet_lists_late_is_still_verified_and_quarantined(
    tmp_path: Path, seeded: Seeded, sink: SlackSink
) -> None:
    """The bound calls only an id still unlisted a forgery: a genuine run listed past the lag (a
    kubelet under pressure) is verified at the retry that finds it, and isolated."""
    running, pods, _ = seeded
    vllm = pods["vllm"]
    started = hashlib.sha256(b"a run listed late").hexdigest()
    set_status(running, vllm, None, CREATING)
    clock = FakeClock()
    responder = await start(tmp_path, seeded, sink, clock, extra=QUICK)
    try:
        assert responder.pipeline is not None
        await responder.pipeline.submit(dated_now(vllm, clock, started), InputName.HTTP)
        await settle(responder, lambda: len(incident_posts(sink)) == 1)
        clock.advance(45)
        set_status(running, vllm, started, RUNNING)
        await wait_for(lambda: retries(responder, "acted") == 1)
        assert labels(running, vllm)[LABEL] == "true"
        assert retries(responder, "unverified") == 0
    finally:
        await responder.stop()


async def test_a_block_only_policys_retry_tells_the_possible_forgery_too(
    tmp_path: Path, seeded: Seeded, sink: SlackSink
) -> None:
    """A block withheld is left out of the tries' end only for the block breaker's hold: a possible
    forgery found by the retry of a block-only policy is told and journaled as a quarantine's is."""
    running, pods, _ = seeded
    vllm = pods["vllm"]
    set_status(running, vllm, vllm.container_id, RESTARTING)
    clock = FakeClock()
    policy = {
        "name": "block-egress",
        "match": {"rules": [EGRESS_RULE]},
        "actions": ["notify", "block_destination"],
    }
    responder = await start(tmp_path, seeded, sink, clock, extra={**QUICK, "policies": [policy]})
    try:
        assert responder.pipeline is not None
        payload = falco_alert(
            vllm, EGRESS_RULE, "Warning", "egress", {"fd.sip": "203.0.113.9"}, time_ns=clock.now
        )
        payload["output_fields"]["container.id"] = MADE_UP_ID[:12]
        await responder.pipeline.submit(alert_from_mapping(payload), InputName.HTTP)
        await settle(responder, lambda: len(incident_posts(sink)) == 1)
        clock.advance(31)
        await wait_for(lambda: retries(responder, "unverified") == 1)
        await settle(responder, lambda: len(retry_replies(sink)) == 1)
        assert ":warning: *Possible forgery*" in visible_text(retry_replies(sink)[0].blocks)
        rows_ = rows(responder.config, "SELECT verification FROM incidents")
        assert [json.loads(r[0])["status"] for r in rows_] == ["unverified"]
    finally:
        await responder.stop()


async def test_a_clock_step_after_a_genuine_alert_does_not_skip_its_wait(
    tmp_path: Path, seeded: Seeded, sink: SlackSink
) -> None:
    """How long an id went unlisted is counted from an earlier check's finding only: the clock
    stepped forward past the lag just as the first alert of a starting container came must not make
    it a possible forgery without its waiting reads."""
    running, pods, _ = seeded
    vllm = pods["vllm"]
    started = hashlib.sha256(b"a run the clock stepped over").hexdigest()
    set_status(running, vllm, None, CREATING)
    clock = SteppingClock()
    responder = await start(tmp_path, seeded, sink, clock)
    try:
        assert responder.pipeline is not None
        listed = asyncio.create_task(later(0.5, set_status, running, vllm, started, RUNNING))
        clock.step_after_next_reading(45)  # a VM resumed, an NTP step: just after the alert came
        await responder.pipeline.submit(dated_now(vllm, clock, started), InputName.HTTP)
        await settle(responder, lambda: len(incidents(responder)) == 1)
        await listed
        assert incidents(responder)[0]["verification"]["status"] == "verified"
        assert labels(running, vllm)[LABEL] == "true"
    finally:
        await responder.stop()


async def test_a_run_listed_after_the_retry_called_it_a_possible_forgery_is_isolated_on_a_repeat(
    tmp_path: Path, seeded: Seeded, sink: SlackSink
) -> None:
    """A kubelet slower still than the lag: the retry's verdict is not the last word, the next
    repeat decides again, verified now, and quarantines."""
    running, pods, _ = seeded
    vllm = pods["vllm"]
    slow = hashlib.sha256(b"a run listed very late").hexdigest()
    set_status(running, vllm, None, CREATING)
    clock = FakeClock()
    responder = await start(tmp_path, seeded, sink, clock, extra=QUICK)
    try:
        assert responder.pipeline is not None
        await responder.pipeline.submit(dated_now(vllm, clock, slow), InputName.HTTP)
        await settle(responder, lambda: len(incident_posts(sink)) == 1)
        clock.advance(31)
        await wait_for(lambda: retries(responder, "unverified") == 1)
        set_status(running, vllm, slow, RUNNING)
        clock.advance(11)
        await responder.pipeline.submit(dated_now(vllm, clock, slow, n=1), InputName.HTTP)
        await settle(responder, lambda: len(incidents(responder)) == 2)
        assert [i["verification"]["status"] for i in incidents(responder)] == ["unverified", "verified"]
        assert labels(running, vllm)[LABEL] == "true"
    finally:
        await responder.stop()


async def test_a_retry_counts_from_its_incidents_opening_when_nothing_was_noted(
    tmp_path: Path, seeded: Seeded, sink: SlackSink
) -> None:
    """The noted time gone (a restart of the responder, the table's bound): a retry's check counts from
    when its alert came, not from now (review-48b M1: "not listed yet" again, a retry later)."""
    running, pods, _ = seeded
    vllm = pods["vllm"]
    set_status(running, vllm, vllm.container_id, RESTARTING)
    clock = FakeClock()
    responder = await start(
        tmp_path, seeded, sink, clock, extra={"dedupe": {"retry_withheld_seconds": [1.0] * 10}}
    )
    try:
        assert responder.pipeline is not None
        await responder.pipeline.submit(dated_now(vllm, clock), InputName.HTTP)
        await settle(responder, lambda: len(incident_posts(sink)) == 1)
        await wait_for(lambda: retries(responder, "withheld") >= 1)  # just after a try: the next is 1 s off
        clock.advance(31)
        unlisted = responder.pipeline._pod_check._unlisted
        unlisted.forget(UnlistedKey(vllm.namespace, vllm.name, MADE_UP_ID[:12]))
        withheld = retries(responder, "withheld")
        await wait_for(lambda: retries(responder, "unverified") == 1)
        assert retries(responder, "withheld") == withheld  # the next try said it, not one later
        assert incidents(responder)[0]["verification"]["status"] == "unverified"
    finally:
        await responder.stop()
