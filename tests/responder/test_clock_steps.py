"""A wall clock stepped back (an NTP step) holds no in-process wait for the length of the step: an
incident whose isolation failed for a passing reason is decided again by the next repeat after the
usual wait, a quarantine is still rechecked, and an incident's window ends within a window of the
step instead of stretching by it. Against the emulator over real HTTP, with a clock the test moves."""

from __future__ import annotations

from pathlib import Path

from responder.clock import deadline_passed, within_window
from simulators.cluster_emulator import Fault, RunningCluster
from simulators.seed import SeededPod
from tests.helpers import FakeClock
from tests.responder.test_isolation_recheck import DENY_ALL, delete_policy, rechecked
from tests.responder.test_pipeline import labels, rows, shell, start_with_clock, submit_all
from tests.responder.test_quarantine import NP, Harness

Seeded = tuple[RunningCluster, dict[str, SeededPod], str]
LABEL = "serving-guard.io/quarantine"
HOUR = 3600.0
SECOND = 1_000_000_000


def test_a_deadline_comes_at_its_time_or_when_it_lies_further_ahead_than_it_was_ever_set() -> None:
    assert not deadline_passed(100 * SECOND, 95 * SECOND, 10 * SECOND)  # 5 s to go, of at most 10
    assert deadline_passed(100 * SECOND, 100 * SECOND, 10 * SECOND)
    assert deadline_passed(100 * SECOND, 101 * SECOND, 10 * SECOND)
    # Set 10 s ahead, now an hour ahead: the clock went back an hour since.
    assert deadline_passed(100 * SECOND, 100 * SECOND - int(HOUR * SECOND), 10 * SECOND)


def test_a_window_takes_a_time_before_its_opening_for_at_most_one_window() -> None:
    opened, window = 1_000 * SECOND, 60 * SECOND
    assert within_window(opened + 60 * SECOND, opened, window)
    assert not within_window(opened + 61 * SECOND, opened, window)
    assert within_window(opened - 30 * SECOND, opened, window)  # stepped back half a window
    assert not within_window(opened - int(HOUR * SECOND), opened, window)  # stepped back an hour


async def test_a_failed_isolation_is_decided_again_after_the_clock_is_stepped_back(
    tmp_path: Path, seeded: Seeded
) -> None:
    running, pods, kubeconfig = seeded
    clock = FakeClock()
    responder = await start_with_clock(tmp_path, kubeconfig, clock)
    try:
        vllm = pods["vllm"]
        running.call(running.emulator.inject, Fault(status=503, method="GET", plural="pods", times=100))
        await submit_all(responder, [shell(vllm, n=0)])
        assert LABEL not in labels(running, vllm)
        running.emulator.faults.clear()
        clock.advance(-HOUR)  # before the re-decide's 10 s: it used to wait out the hour too
        clock.advance(11)
        await submit_all(responder, [shell(vllm, n=1)])
        assert labels(running, vllm)[LABEL] == "true"
        statuses = [r[0] for r in rows(responder.config, "SELECT status FROM actions ORDER BY id")]
        assert statuses == ["withheld", "quarantined"]
    finally:
        await responder.stop()


async def test_a_quarantine_is_rechecked_after_the_clock_is_stepped_back(
    tmp_path: Path, seeded: Seeded
) -> None:
    running, pods, kubeconfig = seeded
    clock = FakeClock()
    harness = Harness(running, kubeconfig)
    responder = await start_with_clock(tmp_path, kubeconfig, clock)
    try:
        vllm = pods["vllm"]
        await submit_all(responder, [shell(vllm, n=0)])
        assert labels(running, vllm)[LABEL] == "true"
        delete_policy(harness, vllm.namespace, DENY_ALL)
        clock.advance(-120)  # within the incident's 300 s window: the repeat folds in
        clock.advance(16)
        await submit_all(responder, [shell(vllm, n=1)])
        assert await rechecked(responder)  # the deleted deny-all is noticed, not two minutes later
        await submit_all(responder, [shell(vllm, n=2)])  # a new incident isolates again
        actions = [r[0] for r in rows(responder.config, "SELECT status FROM actions ORDER BY id")]
        assert actions == ["quarantined", "lapsed", "quarantined"]
        assert harness.stored(NP, vllm.namespace, DENY_ALL) is not None
    finally:
        await responder.stop()


async def test_an_incident_window_ends_when_the_clock_is_stepped_back_past_it(
    tmp_path: Path, seeded: Seeded
) -> None:
    _, pods, kubeconfig = seeded
    clock = FakeClock()
    responder = await start_with_clock(
        tmp_path, kubeconfig, clock, dedupe={"window_seconds": 60}, guardrails={"dry_run": True}
    )
    try:
        vllm = pods["vllm"]
        await submit_all(responder, [shell(vllm, n=0)])
        clock.advance(-HOUR)  # repeats after this used to fold in for the hour and its window
        await submit_all(responder, [shell(vllm, n=1)])
        clock.advance(30)
        await submit_all(responder, [shell(vllm, n=2)])  # within a window of the new opening
        counts = [r[0] for r in rows(responder.config, "SELECT count FROM incidents ORDER BY rowid")]
        assert counts == [1, 2]
    finally:
        await responder.stop()
