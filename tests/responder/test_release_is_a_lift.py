"""A person's `serving-guard release` while an incident's alerts still come is a lift, not a lapse:
nothing says "no longer holds", the incident's repeats fold in without putting the quarantine or a
block back, and the thread hears of the release once (from the command with --incident, or from
the responder, which finds it on the pod, when the command ran without it). A label removed by
hand is still a lapse, also on a pod released before. Against the Kubernetes emulator and the
Slack sink, over loopback HTTP."""

from __future__ import annotations

import asyncio
import sqlite3
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from responder.actions.outcome import ActionOutcome
from responder.actions.quarantine import ClusterActions
from responder.alert import Alert
from responder.cli import main
from responder.cluster.context import PodContext
from responder.service import Responder
from simulators.seed import SeededPod
from simulators.slack_sink import SlackSink
from tests.helpers import FakeClock
from tests.notify.slack_fixtures import visible_text
from tests.responder.test_block_destination import BLOCK_LABEL, egress_alert, started_blocking
from tests.responder.test_by_hand_in_slack import by_hand_posts, cli_config, incident_of, incident_post
from tests.responder.test_isolation_recheck import rechecked
from tests.responder.test_lapse_notice import lapse_replies, lapse_rows
from tests.responder.test_notifications import Seeded, incident_posts, settle, shell, sink, start
from tests.responder.test_pipeline import labels, submit_all
from tests.responder.test_quarantine import Harness
from tests.responder.test_workload_threads import submit

__all__ = ["sink"]  # the fixture, used by name

LABEL = "serving-guard.io/quarantine"
RELEASED_AT = "serving-guard.io/released-at"
REASON = "model rebuilt from the signed image"


def pod_annotations(seeded: Seeded, pod: SeededPod) -> dict[str, str]:
    running = seeded[0]
    stored = running.call(running.emulator.get_object, "v1/pods", pod.namespace, pod.name)
    return dict(stored["metadata"].get("annotations") or {})


def actions(responder: Responder) -> list[tuple[str, str, str | None]]:
    with closing(sqlite3.connect(responder.config.journal.path)) as conn:
        return [
            (str(action), str(status), actor)
            for action, status, actor in conn.execute("SELECT action, status, actor FROM actions ORDER BY id")
        ]


def incident_count(responder: Responder) -> int:
    with closing(sqlite3.connect(responder.config.journal.path)) as conn:
        return int(conn.execute("SELECT COUNT(*) FROM incidents").fetchone()[0])


def release_argv(pod: SeededPod | PodContext, *options: str) -> list[str]:
    """`serving-guard release` of ``pod`` by bob, as a person runs it, with ``options``."""
    return ["release", "-n", pod.namespace, pod.name, "--reason", REASON, "--by", "bob", *options]


async def release(seeded: Seeded, pod: SeededPod, *options: str) -> None:
    assert await asyncio.to_thread(main, release_argv(pod, *options)) == 0


async def repeat_after_a_recheck(responder: Responder, clock: FakeClock, pod: SeededPod, n: int) -> bool:
    """A repeat past RECHECK_SECONDS (it starts a recheck); whether the recheck reopened the incident."""
    clock.advance(16)
    await submit(responder, shell(pod, n))
    return await rechecked(responder)


async def test_a_release_with_incident_is_told_once_and_the_repeats_do_not_quarantine_again(
    tmp_path: Path, seeded: Seeded, sink: SlackSink
) -> None:
    vllm = seeded[1]["vllm"]
    clock = FakeClock()
    responder = await start(tmp_path, seeded, sink, clock)
    try:
        post = await incident_post(responder, sink, vllm)
        await release(
            seeded,
            vllm,
            "--incident",
            incident_of(responder),
            "--config",
            str(cli_config(tmp_path, seeded[2])),
        )
        assert LABEL not in labels(seeded[0], vllm)

        assert not await repeat_after_a_recheck(responder, clock, vllm, 1)  # finds the release
        assert not await repeat_after_a_recheck(responder, clock, vllm, 2)  # finds it journaled
        await submit(responder, shell(vllm, 3))
        await settle(responder, lambda: len(by_hand_posts(sink)) == 1)

        assert LABEL not in labels(seeded[0], vllm)  # not quarantined again
        assert incident_count(responder) == 1  # the repeats folded in
        assert [a for a in actions(responder) if a[0] != "recheck"] == [
            ("quarantine", "quarantined", "responder"),
            ("release", "released", "bob"),
        ]
        assert lapse_rows(responder) == [] and lapse_replies(sink) == []
        (reply,) = by_hand_posts(sink)
        assert reply["thread_ts"] == post.ts
        await settle(responder, lambda: ":unlock:" in str(incident_posts(sink)[0].blocks))
        assert "no longer holds" not in str(incident_posts(sink)[0].blocks)
    finally:
        await responder.stop()


async def test_a_release_without_incident_is_found_on_the_pod_and_told_in_the_thread(
    tmp_path: Path, seeded: Seeded, sink: SlackSink
) -> None:
    vllm = seeded[1]["vllm"]
    clock = FakeClock()
    responder = await start(tmp_path, seeded, sink, clock)
    try:
        post = await incident_post(responder, sink, vllm)
        # Run from a workstation: no --config, no journal; the pod records who and why.
        await release(seeded, vllm, "--kubeconfig", seeded[2])
        assert pod_annotations(seeded, vllm)[RELEASED_AT]

        assert not await repeat_after_a_recheck(responder, clock, vllm, 1)  # found, journaled, told
        await settle(responder, lambda: len(by_hand_posts(sink)) == 1)
        assert not await repeat_after_a_recheck(responder, clock, vllm, 2)  # said once

        (reply,) = by_hand_posts(sink)
        assert reply["thread_ts"] == post.ts
        text = visible_text(reply["blocks"])
        assert (
            f"*bob* released `{vllm.namespace}/{vllm.name}` by hand: as the pod's annotations record it,"
            f" found by the responder (the command did not journal it).\nReason: {REASON}\n"
        ) in text
        assert len(by_hand_posts(sink)) == 1 and lapse_replies(sink) == []
        await settle(responder, lambda: ":unlock:" in str(incident_posts(sink)[0].blocks))
        headline = incident_posts(sink)[0].blocks[1]["text"]["text"]
        assert headline.startswith(
            ":unlock: *Released*: as the pod's annotations record it, found by the responder (the"
            f" command did not journal it). :raised_hand: By hand, by *bob*: {REASON}.\n"
        )
        assert LABEL not in labels(seeded[0], vllm) and incident_count(responder) == 1
        found = [a for a in actions(responder) if a[0] == "release"]
        assert found == [("release", "released", "bob")]
    finally:
        await responder.stop()


async def test_a_release_journaled_without_incident_becomes_the_incidents_once_found(
    tmp_path: Path, seeded: Seeded, sink: SlackSink, capsys: pytest.CaptureFixture[str]
) -> None:
    """Run with the journal but without --incident: the command's row had no incident, the
    responder's finding was then skipped as journaled, so the incident's story (audit --incident,
    its thread) never told the release; found the other way round, it was in the trail twice."""
    vllm = seeded[1]["vllm"]
    clock = FakeClock()
    responder = await start(tmp_path, seeded, sink, clock)
    try:
        post = await incident_post(responder, sink, vllm)
        incident = incident_of(responder)
        await release(seeded, vllm, "--config", str(cli_config(tmp_path, seeded[2])))
        assert not await repeat_after_a_recheck(responder, clock, vllm, 1)  # found: the command's row
        await settle(responder, lambda: len(by_hand_posts(sink)) == 1)
        assert not await repeat_after_a_recheck(responder, clock, vllm, 2)  # said once

        with closing(sqlite3.connect(responder.config.journal.path)) as conn:
            rows = conn.execute("SELECT incident_id, actor FROM actions WHERE action = 'release'").fetchall()
        assert rows == [(incident, "bob")]
        (reply,) = by_hand_posts(sink)
        assert reply["thread_ts"] == post.ts
        assert f"*bob* released `{vllm.namespace}/{vllm.name}` by hand" in visible_text(reply["blocks"])
        capsys.readouterr()
        assert (
            await asyncio.to_thread(
                main, ["audit", "--journal", responder.config.journal.path, "--format", "incidents"]
            )
            == 0
        )
        story = capsys.readouterr().out
        assert f"release released by bob: {REASON}" in story and "outside any incident" not in story
    finally:
        await responder.stop()


async def test_a_label_removed_by_hand_is_a_lapse_even_on_a_pod_released_before(
    tmp_path: Path, seeded: Seeded, sink: SlackSink
) -> None:
    running, pods, _ = seeded
    vllm = pods["vllm"]
    clock = FakeClock()
    responder = await start(tmp_path, seeded, sink, clock)
    try:
        # Released once (an earlier incident): the pod keeps the record ...
        await release(seeded, vllm, "--kubeconfig", seeded[2])
        assert RELEASED_AT in pod_annotations(seeded, vllm)
        await incident_post(responder, sink, vllm)
        # ... until the quarantine: a release record on the pod is one made since.
        assert labels(running, vllm)[LABEL] == "true"
        assert RELEASED_AT not in pod_annotations(seeded, vllm)
        Harness(running, seeded[2]).gateway.patch_pod(
            vllm.namespace, vllm.name, {"metadata": {"labels": {LABEL: None}}}
        )
        assert await repeat_after_a_recheck(responder, clock, vllm, 1)  # reopened
        await settle(responder, lambda: len(lapse_replies(sink)) == 1)
        assert "its quarantine label is gone" in visible_text(lapse_replies(sink)[0].blocks)
        assert by_hand_posts(sink) == []
        # Journaled as a label gone: the incident offers no release of a quarantine no longer on the pod.
        with responder.journal.reader() as conn:
            (outcome,) = conn.execute("SELECT outcome FROM actions WHERE action = 'recheck'").fetchone()
        assert '"label_gone": true' in outcome
        await settle(
            responder, lambda: "serving-guard release" not in visible_text(incident_posts(sink)[0].blocks)
        )
    finally:
        await responder.stop()


async def test_a_release_of_a_blocked_pod_is_not_undone_by_a_repeat_naming_a_new_address(
    tmp_path: Path, seeded: Seeded
) -> None:
    running, pods, kubeconfig = seeded
    vllm = pods["vllm"]
    clock = FakeClock()
    responder = await started_blocking(tmp_path, kubeconfig, clock)

    def blocked() -> bool:
        return BLOCK_LABEL in labels(running, vllm)

    try:
        await submit_all(responder, [egress_alert(vllm, "203.0.113.7")])
        assert blocked()
        await release(seeded, vllm, "--kubeconfig", kubeconfig)
        assert not blocked()
        # At once (no recheck yet, the pod as cached is still blocked): a new destination.
        await submit_all(responder, [egress_alert(vllm, "198.51.100.9")])
        assert not await rechecked(responder)  # background done, not reopened
        assert not blocked()
        clock.advance(16)
        await submit_all(responder, [egress_alert(vllm, "192.0.2.44")])
        assert not await rechecked(responder)  # background done, not reopened
        assert not blocked() and incident_count(responder) == 1
        # The release, found on the pod, is journaled under the incident; nothing was blocked again.
        await settle(responder, lambda: len(actions(responder)) == 2)
        assert actions(responder) == [
            ("block_destination", "blocked", "responder"),
            ("release", "released", "bob"),
        ]
    finally:
        await responder.stop()


async def test_a_release_made_while_a_follow_up_block_is_under_way_is_not_undone(
    tmp_path: Path, seeded: Seeded, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The release lands after the follow-up block read the pod fresh, before it labels it: the
    block gives way (the pod stays released), and the release is journaled under the incident."""
    running, pods, kubeconfig = seeded
    vllm = pods["vllm"]
    clock = FakeClock()
    responder = await started_blocking(tmp_path, kubeconfig, clock)
    block_destination = ClusterActions.block_destination
    releases: list[str] = []

    def released_first(self: ClusterActions, pod: PodContext, alert: Alert, **options: Any) -> ActionOutcome:
        if not releases:  # the follow-up's: its pod was read before this release
            releases.append(pod.name)
            assert main(release_argv(pod, "--kubeconfig", kubeconfig)) == 0
        return block_destination(self, pod, alert, **options)

    try:
        await submit_all(responder, [egress_alert(vllm, "203.0.113.7")])
        assert BLOCK_LABEL in labels(running, vllm)
        monkeypatch.setattr(ClusterActions, "block_destination", released_first)
        await submit_all(responder, [egress_alert(vllm, "198.51.100.9")])
        assert not await rechecked(responder)  # background done, not reopened
        assert releases == [vllm.name]
        assert BLOCK_LABEL not in labels(running, vllm)
        assert pod_annotations(seeded, vllm)["serving-guard.io/released-by"] == "bob"
        await settle(responder, lambda: len(actions(responder)) == 2)
        assert actions(responder) == [
            ("block_destination", "blocked", "responder"),
            ("release", "released", "bob"),
        ]
        # Later repeats fold in without blocking again.
        clock.advance(16)
        await submit_all(responder, [egress_alert(vllm, "192.0.2.44")])
        assert not await rechecked(responder)
        assert BLOCK_LABEL not in labels(running, vllm) and incident_count(responder) == 1
        assert len(actions(responder)) == 2
    finally:
        await responder.stop()


async def test_a_release_journaled_before_a_restart_still_holds_the_incidents_blocks_back(
    tmp_path: Path, seeded: Seeded
) -> None:
    running, pods, kubeconfig = seeded
    vllm = pods["vllm"]
    clock = FakeClock()
    responder = await started_blocking(tmp_path, kubeconfig, clock)
    try:
        await submit_all(responder, [egress_alert(vllm, "203.0.113.7")])
        assert BLOCK_LABEL in labels(running, vllm)
        incident = incident_of(responder)
        await release(seeded, vllm, "--incident", incident, "--config", str(cli_config(tmp_path, kubeconfig)))
    finally:
        await responder.stop()
    clock.advance(5)
    responder = await started_blocking(tmp_path, kubeconfig, clock)
    try:
        pipeline = responder.pipeline
        assert pipeline is not None
        (state,) = pipeline.incidents._open.values()
        assert state.incident_id == incident and state.released is not None and state.released.by == "bob"
        await submit_all(responder, [egress_alert(vllm, "198.51.100.9")])
        assert not await rechecked(responder)  # background done, not reopened
        assert BLOCK_LABEL not in labels(running, vllm) and incident_count(responder) == 1
        assert [a[0] for a in actions(responder)] == ["block_destination", "release"]
    finally:
        await responder.stop()


async def quarantine_by_hand(tmp_path: Path, seeded: Seeded, pod: SeededPod, incident_id: str) -> None:
    argv = ["quarantine", "-n", pod.namespace, pod.name, "--reason", "not safe after all", "--by", "carol"]
    argv += ["--incident", incident_id, "--config", str(cli_config(tmp_path, seeded[2]))]
    assert await asyncio.to_thread(main, argv) == 0


async def test_a_quarantine_by_hand_after_a_release_is_proven_again_and_the_release_stays_history(
    tmp_path: Path, seeded: Seeded, sink: SlackSink
) -> None:
    running, pods, kubeconfig = seeded
    vllm = pods["vllm"]
    clock = FakeClock()
    responder = await start(tmp_path, seeded, sink, clock)
    try:
        await incident_post(responder, sink, vllm)
        incident = incident_of(responder)
        await release(seeded, vllm, "--kubeconfig", kubeconfig)  # from a workstation
        assert not await repeat_after_a_recheck(responder, clock, vllm, 1)  # found and journaled
        await quarantine_by_hand(tmp_path, seeded, vllm, incident)
        assert labels(running, vllm)[LABEL] == "true" and RELEASED_AT not in pod_annotations(seeded, vllm)
        assert not await repeat_after_a_recheck(responder, clock, vllm, 2)  # holds: the release is history
        assert [a for a in actions(responder) if a[0] != "recheck"] == [
            ("quarantine", "quarantined", "responder"),
            ("release", "released", "bob"),
            ("quarantine", "quarantined", "carol"),
        ]
        # Then someone removes the label by hand: a lapse, as of any quarantine.
        Harness(running, kubeconfig).gateway.patch_pod(
            vllm.namespace, vllm.name, {"metadata": {"labels": {LABEL: None}}}
        )
        assert await repeat_after_a_recheck(responder, clock, vllm, 3)
        await settle(responder, lambda: len(lapse_replies(sink)) == 1)
    finally:
        await responder.stop()


async def test_incident_refuses_a_pod_that_is_not_the_incidents(
    tmp_path: Path, seeded: Seeded, sink: SlackSink, capsys: pytest.CaptureFixture[str]
) -> None:
    running, pods, kubeconfig = seeded
    vllm, triton = pods["vllm"], pods["triton"]
    responder = await start(tmp_path, seeded, sink)
    try:
        await incident_post(responder, sink, vllm)
        incident = incident_of(responder)
        capsys.readouterr()
        argv = ["release", "-n", triton.namespace, triton.name, "vllm-9", "--reason", "x", "--by", "bob"]
        argv += ["--incident", incident, "--config", str(cli_config(tmp_path, kubeconfig))]
        assert await asyncio.to_thread(main, argv) == 2
        err = capsys.readouterr().err
        assert (
            f"--incident {incident}: an incident about pod '{vllm.name}', not '{triton.name}', 'vllm-9';"
            in err
        )
        assert "nothing was done" in err
        assert labels(running, vllm)[LABEL] == "true"  # nothing was done
        assert [a[0] for a in actions(responder)] == ["quarantine"]
    finally:
        await responder.stop()


async def test_a_release_record_older_than_the_incidents_block_is_not_a_release(
    tmp_path: Path, seeded: Seeded
) -> None:
    """An earlier version's block left a release record in place: it predates what the incident
    put on the pod, and is no lift (a restart's first repeat rechecks; follow-up blocks go on)."""
    running, pods, kubeconfig = seeded
    vllm = pods["vllm"]
    clock = FakeClock()
    responder = await started_blocking(tmp_path, kubeconfig, clock)
    try:
        await submit_all(responder, [egress_alert(vllm, "203.0.113.7")])
        assert BLOCK_LABEL in labels(running, vllm)
        old = {RELEASED_AT: "2026-11-01T00:00:00Z", "serving-guard.io/released-by": "bob"}
        Harness(running, kubeconfig).gateway.patch_pod(
            vllm.namespace, vllm.name, {"metadata": {"annotations": old}}
        )
    finally:
        await responder.stop()
    clock.advance(5)
    responder = await started_blocking(tmp_path, kubeconfig, clock)
    try:
        clock.advance(16)
        await submit_all(responder, [egress_alert(vllm, "198.51.100.9")])
        assert not await rechecked(responder)
        assert [a[:2] for a in actions(responder)] == [
            ("block_destination", "blocked"),
            ("block_destination", "blocked"),
        ]
    finally:
        await responder.stop()
