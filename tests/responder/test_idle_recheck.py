"""A quarantine proven when made is proven again while its incident is open, though no repeat
comes (a reverse shell alerts once): Pipeline.run_idle_rechecks. Against the emulator over real HTTP."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from responder.cli import main
from responder.isolated_pods import IsolatedPods, IsolationRecord
from responder.pipeline import Pipeline
from responder.service import Responder
from simulators.seed import LEAKY_POLICY
from tests.helpers import FakeClock
from tests.responder.test_by_hand_in_slack import cli_config
from tests.responder.test_isolation_recheck import ALLOW_ALL, Seeded, rechecked
from tests.responder.test_pipeline import rows, shell, start_with_clock, submit_all
from tests.responder.test_quarantine import Harness
from tests.responder.test_recheck_leak_directions import allow_egress_too
from tests.responder.test_retry_withheld import wait_for


@contextlib.asynccontextmanager
async def running(
    tmp_path: Path, seeded: Seeded
) -> AsyncIterator[tuple[Responder, Pipeline, FakeClock, Harness]]:
    """A responder on a clock the test moves, its pipeline, and a harness on the emulated cluster."""
    cluster, _, kubeconfig = seeded
    clock = FakeClock()
    responder = await start_with_clock(tmp_path, kubeconfig, clock)
    try:
        assert responder.pipeline is not None
        yield responder, responder.pipeline, clock, Harness(cluster, kubeconfig)
    finally:
        await responder.stop()


async def test_a_one_off_alerts_quarantine_is_checked_again_though_no_repeat_comes(
    tmp_path: Path, seeded: Seeded
) -> None:
    """A reverse shell alerts once: its quarantine is proven again by the idle pass
    (Pipeline.run_idle_rechecks), not only by repeats."""
    async with running(tmp_path, seeded) as (responder, pipeline, clock, harness):
        pods = seeded[1]
        vllm = pods["vllm"]
        await submit_all(responder, [shell(vllm, n=0)])
        assert pipeline.recheck_idle() == 0  # just made: not due yet
        clock.advance(16)
        assert pipeline.recheck_idle() == 1
        assert not await rechecked(responder)  # it holds
        harness.put_policy(vllm.namespace, "debug-allow-all", ALLOW_ALL)
        clock.advance(16)
        assert pipeline.recheck_idle() == 1
        assert await rechecked(responder)
        actions = rows(responder.config, "SELECT status, detail FROM actions ORDER BY id")
        assert [a["status"] for a in actions] == ["quarantined", "lapsed"]
        assert "debug-allow-all now allows" in actions[-1]["detail"]
        clock.advance(16)
        assert pipeline.recheck_idle() == 0  # said once: the rechecks of this incident are over
        assert any(task.get_name() == "idle-rechecks" and not task.done() for task in responder._tasks)


async def closed(responder: Responder, clock: FakeClock) -> None:
    """The incident's window passes and it is forgotten, as the maintenance pass does."""
    pipeline = responder.pipeline
    assert pipeline is not None
    clock.advance(400)
    pipeline.incidents.expire(clock())
    assert len(pipeline.incidents) == 0


async def test_a_quarantine_whose_incident_closed_is_still_checked_and_its_lapse_told_once(
    tmp_path: Path, seeded: Seeded
) -> None:
    """After its incident's window the quarantine is still on the pod: the journal lists it, and
    the pass proves it again, reporting under that incident what undid it."""
    async with running(tmp_path, seeded) as (responder, pipeline, clock, harness):
        pods = seeded[1]
        vllm, triton = pods["vllm"], pods["triton"]
        await submit_all(responder, [shell(vllm, n=0), shell(triton, n=0)])
        await closed(responder, clock)
        assert await pipeline.recheck_closed(50) == 2  # both hold as reported: nothing journaled
        statuses = [r["status"] for r in rows(responder.config, "SELECT status FROM actions ORDER BY id")]
        assert sorted(statuses) == ["leaky", "quarantined"]  # triton's known leak: not said again
        harness.put_policy(vllm.namespace, "debug-allow-all", ALLOW_ALL)
        assert await pipeline.recheck_closed(50) == 2

        def lapses() -> list[Any]:
            return rows(
                responder.config, "SELECT pod, detail FROM actions WHERE status = 'lapsed' ORDER BY pod"
            )

        # vllm and triton share the namespace: the policy opens both, each told under its own incident.
        await wait_for(lambda: [r["pod"] for r in lapses()] == sorted([vllm.name, triton.name]))
        assert all("debug-allow-all now allows" in r["detail"] for r in lapses())
        assert await pipeline.recheck_closed(50) == 0  # told once: no longer listed


async def test_a_closed_incidents_pod_released_or_deleted_is_not_checked_again(
    tmp_path: Path, seeded: Seeded
) -> None:
    async with running(tmp_path, seeded) as (responder, pipeline, clock, harness):
        pods = seeded[1]
        vllm, triton = pods["vllm"], pods["triton"]
        await submit_all(responder, [shell(vllm, n=0), shell(triton, n=0)])
        await closed(responder, clock)
        harness.gateway.request("DELETE", f"/api/v1/namespaces/{triton.namespace}/pods/{triton.name}")
        assert await pipeline.recheck_closed(50) == 2

        def gone() -> list[str]:
            return [
                r["pod"] for r in rows(responder.config, "SELECT pod FROM actions WHERE status = 'pod_gone'")
            ]

        await wait_for(lambda: gone() == [triton.name])
        assert await pipeline.recheck_closed(50) == 1  # the deleted pod's incident is over
        # The budget bounds a pass; the longest unchecked goes first.
        assert await pipeline.recheck_closed(0) == 0


async def test_a_known_leak_that_opens_another_direction_is_told_by_the_pipelines_recheck(
    tmp_path: Path, seeded: Seeded
) -> None:
    """The incident was reported LEAKY through a policy's ingress; the policy later lets egress out
    too: the recheck (held to the leaks by policy and direction) says so."""
    async with running(tmp_path, seeded) as (responder, pipeline, clock, harness):
        pods = seeded[1]
        triton = pods["triton"]
        await submit_all(responder, [shell(triton, n=0)])
        assert [r["status"] for r in rows(responder.config, "SELECT status FROM actions")] == ["leaky"]
        clock.advance(16)
        assert pipeline.recheck_idle() == 1
        assert not await rechecked(responder)  # the known leak, as reported
        allow_egress_too(harness, triton)
        clock.advance(16)
        assert pipeline.recheck_idle() == 1
        assert await rechecked(responder)
        lapse = rows(responder.config, "SELECT detail FROM actions WHERE status = 'lapsed'")
        assert [r["detail"] for r in lapse] == [f"NetworkPolicy {LEAKY_POLICY} now allows its egress too"]


async def test_a_pod_quarantined_by_two_closed_incidents_is_checked_and_told_once(
    tmp_path: Path, seeded: Seeded
) -> None:
    """Of each pod, the latest incident that put something on it is checked: its lapse ends the
    pod's listing, so an older incident of the pod never tells the same lapse again."""
    async with running(tmp_path, seeded) as (responder, pipeline, clock, harness):
        pods = seeded[1]
        vllm = pods["vllm"]
        await submit_all(responder, [shell(vllm, n=0)])
        await closed(responder, clock)
        await submit_all(responder, [shell(vllm, n=1)])  # a new incident quarantines it again
        await closed(responder, clock)
        incidents = [
            r["incident_id"] for r in rows(responder.config, "SELECT incident_id FROM actions ORDER BY id")
        ]
        assert len(set(incidents)) == 2
        assert await pipeline.recheck_closed(50) == 1  # the latest only
        harness.put_policy(vllm.namespace, "debug-allow-all", ALLOW_ALL)
        assert await pipeline.recheck_closed(50) == 1

        def lapsed_under() -> list[str]:
            return [
                r["incident_id"]
                for r in rows(responder.config, "SELECT incident_id FROM actions WHERE status = 'lapsed'")
            ]

        await wait_for(lambda: lapsed_under() == [incidents[-1]])
        for _ in range(3):  # the older incident does not take its turn to say it again
            assert await pipeline.recheck_closed(50) == 0
        assert lapsed_under() == [incidents[-1]]


async def test_a_release_under_the_newer_incident_ends_the_pods_checks(
    tmp_path: Path, seeded: Seeded
) -> None:
    async with running(tmp_path, seeded) as (responder, pipeline, clock, _harness):
        pods = seeded[1]
        vllm = pods["vllm"]
        await submit_all(responder, [shell(vllm, n=0)])
        await closed(responder, clock)
        await submit_all(responder, [shell(vllm, n=1)])
        await closed(responder, clock)
        newer = rows(responder.config, "SELECT incident_id FROM actions ORDER BY id DESC")[0]["incident_id"]
        argv = ["release", "-n", vllm.namespace, vllm.name, "--reason", "rebuilt", "--by", "bob"]
        argv += ["--incident", newer, "--config", str(cli_config(tmp_path, seeded[2]))]
        assert await asyncio.to_thread(main, argv) == 0
        assert await pipeline.recheck_closed(50) == 0  # released: nothing of either is on the pod


def test_the_latest_incident_that_put_something_on_each_pod_is_listed_until_ended() -> None:
    pods = IsolatedPods()
    pods.read(
        [
            IsolationRecord(1, "inc-a", "ml", "vllm-0", puts_on=True),
            IsolationRecord(2, "inc-b", "ml", "vllm-0", puts_on=True),
            IsolationRecord(3, "inc-c", "ml", "triton-0", puts_on=True),
        ]
    )
    assert pods.incidents() == {("ml", "vllm-0"): "inc-b", ("ml", "triton-0"): "inc-c"} and pods.after == 3
    # A release journaled without an incident ends it too; a later quarantine lists the pod again.
    pods.read([IsolationRecord(4, None, "ml", "vllm-0", puts_on=False)])
    assert pods.incidents() == {("ml", "triton-0"): "inc-c"}
    pods.read([IsolationRecord(6, "inc-d", "ml", "vllm-0", puts_on=True)])
    assert pods.incidents()[("ml", "vllm-0")] == "inc-d" and pods.after == 6
    pods.forget(("ml", "triton-0"))
    assert pods.incidents() == {("ml", "vllm-0"): "inc-d"}
