"""A pod quarantined by two configs (two responders with their own quarantine.label, or a person's
quarantine under another config) and released by one: that config's label goes, the other's
quarantine record stands, and the release record names the config it is of
(serving-guard.io/released-labels), so the other config's responder never reads it as its own
(review-session-45b H1, M2, M3). Against the emulated API server, with the real CLI and a real
responder."""

from __future__ import annotations

import asyncio
import sqlite3
from contextlib import closing
from pathlib import Path

import pytest

from responder.actions.lockdown import HeldPods
from responder.cli import main
from responder.service import Responder
from simulators.slack_sink import SlackSink
from tests.helpers import FakeClock
from tests.notify.slack_fixtures import visible_text
from tests.responder.test_by_hand_in_slack import by_hand_posts, cli_config, incident_of, incident_post
from tests.responder.test_lapse_notice import lapse_replies
from tests.responder.test_notifications import Seeded, settle, sink, start
from tests.responder.test_pipeline import labels
from tests.responder.test_quarantine import Harness
from tests.responder.test_quarantine_command import (
    ACME,
    LABEL,
    QUARANTINE_LABELS,
    QUARANTINED_AT,
    acme_config,
    edit_pod,
    run,
    stored,
    write_config,
)
from tests.responder.test_release_is_a_lift import pod_annotations, repeat_after_a_recheck

__all__ = ["sink"]
RELEASED_LABELS = "serving-guard.io/released-labels"
BLOCK_LABEL = "serving-guard.io/block"


async def _acme_quarantines_and_releases(tmp_path: Path, seeded: Seeded) -> None:
    vllm = seeded[1]["vllm"]
    acme = str(acme_config(tmp_path, seeded[2], journal="acme.db"))
    where = ["-n", vllm.namespace, vllm.name]
    quarantine = ["quarantine", *where, "--reason", "r", "--by", "carol", "--config", acme]
    assert await asyncio.to_thread(main, quarantine) == 0
    release = ["release", *where, "--reason", "acme done", "--by", "bob", "--config", acme]
    assert await asyncio.to_thread(main, release) == 0


async def _acme_quarantines_and_bob_releases_the_default(tmp_path: Path, seeded: Seeded) -> list[str]:
    """acme quarantines vllm (carol, by hand); bob releases the default's label, without the
    journal (a partial release). Returns acme's quarantine command, to run again."""
    vllm = seeded[1]["vllm"]
    acme = str(acme_config(tmp_path, seeded[2], journal="acme.db"))
    where = ["-n", vllm.namespace, vllm.name]
    quarantine = ["quarantine", *where, "--reason", "r", "--by", "carol", "--config", acme]
    assert await asyncio.to_thread(main, quarantine) == 0
    release = ["release", *where, "--reason", "default done", "--by", "bob", "--kubeconfig", seeded[2]]
    assert await asyncio.to_thread(main, release) == 0
    return quarantine


async def test_the_other_configs_responder_does_not_read_a_release_of_acmes_label_as_its_own(
    tmp_path: Path, seeded: Seeded, sink: SlackSink
) -> None:
    """The responder (the default label) quarantines vllm on an alert; acme quarantines and releases
    it too. The responder's quarantine stands, and its incident is not told "bob released ... by
    hand" (its repeats would then act no more, and its rechecks stop)."""
    vllm = seeded[1]["vllm"]
    clock = FakeClock()
    responder = await start(tmp_path, seeded, sink, clock)
    try:
        await incident_post(responder, sink, vllm)
        await _acme_quarantines_and_releases(tmp_path, seeded)
        assert labels(seeded[0], vllm)[LABEL] == "true"
        annotations = pod_annotations(seeded, vllm)
        assert annotations[QUARANTINE_LABELS] == f"{LABEL}=true"
        assert QUARANTINED_AT in annotations and annotations[RELEASED_LABELS] == ACME

        await repeat_after_a_recheck(responder, clock, vllm, 1)
        await repeat_after_a_recheck(responder, clock, vllm, 2)
        await asyncio.sleep(0.3)
        assert [visible_text(p["blocks"]) for p in by_hand_posts(sink)] == []
    finally:
        await responder.stop()


async def test_after_acmes_release_the_responder_still_tells_its_own_label_taken_off_by_hand(
    tmp_path: Path, seeded: Seeded, sink: SlackSink
) -> None:
    vllm = seeded[1]["vllm"]
    clock = FakeClock()
    responder = await start(tmp_path, seeded, sink, clock)
    try:
        await incident_post(responder, sink, vllm)
        await _acme_quarantines_and_releases(tmp_path, seeded)
        await repeat_after_a_recheck(responder, clock, vllm, 1)
        Harness(seeded[0], seeded[2]).gateway.patch_pod(
            vllm.namespace, vllm.name, {"metadata": {"labels": {LABEL: None}}}
        )

        reopened = await repeat_after_a_recheck(responder, clock, vllm, 2)
        await asyncio.sleep(0.3)
        assert reopened or lapse_replies(sink), "the lapse of the responder's own quarantine went unsaid"
    finally:
        await responder.stop()


def test_a_quarantine_after_a_partial_release_keeps_the_other_configs_label_named(
    tmp_path: Path, seeded: Seeded, capsys: pytest.CaptureFixture[str]
) -> None:
    """acme and the default quarantine; the default releases (partly), then quarantines again: the
    record still names acme's label, and the next release says acme's still cuts the pod."""
    running, pods, kubeconfig = seeded
    pod = pods["torchserve"]
    where = ["-n", pod.namespace, pod.name]
    default = str(write_config(tmp_path, kubeconfig))
    for config in (str(acme_config(tmp_path, kubeconfig)), default):
        code, _, err = run([*where, "--reason", "r", "--by", "carol", "--config", config], capsys)
        assert code == 0, err
    assert main(["release", *where, "--reason", "done", "--by", "carol", "--config", default]) == 0
    meta = stored(running, pod)["metadata"]
    # acme's quarantine is still recorded: HeldPods of a third config reads it as acme's.
    held = HeldPods.of({"matchLabels": {"app": "torchserve"}}, [{"metadata": meta}], "third.io/q", {"true"})
    assert held.elsewhere == (pod.name,) and not held.unquarantined
    code, _, err = run([*where, "--reason", "again", "--by", "carol", "--config", default], capsys)
    assert code == 0, err

    meta = stored(running, pod)["metadata"]
    assert meta["annotations"][QUARANTINE_LABELS] == f"{ACME}=true,{LABEL}=true"
    assert RELEASED_LABELS not in meta["annotations"]  # a quarantine clears the release record
    assert main(["release", *where, "--reason", "done", "--by", "carol", "--config", default]) == 0
    assert f"still quarantined under {ACME}=true" in capsys.readouterr().out


def test_a_block_on_a_pod_another_config_quarantined_is_not_lifted_by_this_config(
    tmp_path: Path, seeded: Seeded, capsys: pytest.CaptureFixture[str]
) -> None:
    """The pod carries acme's quarantine and a destination block under the block label both configs
    share (neither set block_destination.label): the block cannot be told from acme's, so a release
    with the default config is refused, saying the block stays (lifting it gave the pod its traffic
    to the blocked address back under acme's ingress cut; review-session-45c M3)."""
    running, pods, kubeconfig = seeded
    pod = pods["torchserve"]
    where = ["-n", pod.namespace, pod.name]
    code, _, err = run(
        [*where, "--reason", "r", "--by", "carol", "--config", str(acme_config(tmp_path, kubeconfig))], capsys
    )
    assert code == 0, err
    edit_pod(running, pod, lambda meta: meta["labels"].__setitem__(BLOCK_LABEL, "0123456789ab"))

    release = ["release", *where, "--reason", "done", "--by", "carol"]
    assert main([*release, "--config", str(write_config(tmp_path, kubeconfig))]) == 1
    out = capsys.readouterr().out
    assert f"it was quarantined under {ACME}=true; nothing was changed" in out
    assert f"(the destination block, label {BLOCK_LABEL}, stays: it cannot be told from that config's)" in out
    meta = stored(running, pod)["metadata"]
    assert meta["labels"][BLOCK_LABEL] == "0123456789ab" and meta["labels"][ACME] == "true"


async def test_acme_quarantining_again_after_the_defaults_release_keeps_that_release(
    tmp_path: Path, seeded: Seeded, sink: SlackSink
) -> None:
    """The responder (default) and acme quarantine vllm; bob releases the default's label (a partial
    release), which the responder tells. acme then quarantines again: its patch takes only acme off
    the release record, so the responder still reads its label's release, not a lapse, and the next
    alert does not put the label back (review-session-45c H1: the whole record was cleared, the
    incident told "no longer holds" and quarantined the pod again, undoing bob's release)."""
    vllm = seeded[1]["vllm"]
    clock = FakeClock()
    responder = await start(tmp_path, seeded, sink, clock)
    try:
        await incident_post(responder, sink, vllm)
        quarantine = await _acme_quarantines_and_bob_releases_the_default(tmp_path, seeded)
        assert LABEL not in labels(seeded[0], vllm)
        assert not await repeat_after_a_recheck(responder, clock, vllm, 1)
        await settle(responder, lambda: len(by_hand_posts(sink)) == 1)

        assert await asyncio.to_thread(main, quarantine) == 0
        assert pod_annotations(seeded, vllm)[RELEASED_LABELS] == LABEL
        reopened = await repeat_after_a_recheck(responder, clock, vllm, 2)
        await repeat_after_a_recheck(responder, clock, vllm, 3)
        await asyncio.sleep(0.3)

        assert not reopened and lapse_replies(sink) == []
        assert LABEL not in labels(seeded[0], vllm), "bob's release undone"
        assert len(by_hand_posts(sink)) == 1
    finally:
        await responder.stop()


def _releases(responder: Responder) -> list[tuple[str | None, str | None]]:
    """The journal's release rows: (incident, actor)."""
    with closing(sqlite3.connect(responder.config.journal.path)) as conn:
        rows = conn.execute("SELECT incident_id, actor FROM actions WHERE action = 'release' ORDER BY id")
        return [(incident, actor) for incident, actor in rows]


@pytest.mark.parametrize("carol_journals", [False, True], ids=["carol without the journal", "carol with it"])
async def test_a_rerun_with_incident_journals_the_release_the_pod_records_by_its_person(
    tmp_path: Path, seeded: Seeded, sink: SlackSink, carol_journals: bool
) -> None:
    """The responder (default) and acme quarantine vllm; carol releases the default's label (a
    partial release), with the responder's journal or not; dave reruns the release with --incident
    before the responder's recheck. The incident's release is carol's, for her reason, in one row
    told once (review-session-45d M1: journaled and told as dave's, and carol's never, or a second
    row beside hers)."""
    vllm = seeded[1]["vllm"]
    clock = FakeClock()
    responder = await start(tmp_path, seeded, sink, clock)
    try:
        await incident_post(responder, sink, vllm)
        incident = incident_of(responder)
        acme = str(acme_config(tmp_path, seeded[2], journal="acme.db"))
        cli = str(cli_config(tmp_path, seeded[2]))
        where = ["-n", vllm.namespace, vllm.name]
        quarantine = ["quarantine", *where, "--reason", "r", "--by", "erin", "--config", acme]
        assert await asyncio.to_thread(main, quarantine) == 0
        carol = ["--config", cli] if carol_journals else ["--kubeconfig", seeded[2]]
        release = ["release", *where, "--reason", "default done", "--by", "carol", *carol]
        assert await asyncio.to_thread(main, release) == 0
        rerun = ["release", *where, "--reason", "checking", "--by", "dave", "--incident", incident]
        assert await asyncio.to_thread(main, [*rerun, "--config", cli]) == 0

        assert not await repeat_after_a_recheck(responder, clock, vllm, 1)
        await settle(responder, lambda: len(by_hand_posts(sink)) >= 1)
        await asyncio.sleep(0.3)
        texts = [visible_text(p["blocks"]) for p in by_hand_posts(sink)]
        assert len(texts) == 1 and "*carol*" in texts[0] and "default done" in texts[0], texts
        assert _releases(responder) == [(incident, "carol")]
    finally:
        await responder.stop()


async def test_the_release_the_responder_finds_says_another_configs_quarantine_still_cuts_the_pod(
    tmp_path: Path, seeded: Seeded, sink: SlackSink
) -> None:
    """The responder (default) and acme quarantine vllm; bob releases the default's label without
    the journal. The responder finds the release on the pod, and its thread says acme's quarantine
    still cuts the pod (before: only that bob released it, read as the pod given back its traffic)."""
    vllm = seeded[1]["vllm"]
    clock = FakeClock()
    responder = await start(tmp_path, seeded, sink, clock)
    try:
        await incident_post(responder, sink, vllm)
        await _acme_quarantines_and_bob_releases_the_default(tmp_path, seeded)
        assert not await repeat_after_a_recheck(responder, clock, vllm, 1)
        await settle(responder, lambda: len(by_hand_posts(sink)) == 1)

        text = visible_text(by_hand_posts(sink)[0]["blocks"])
        assert "*bob*" in text and "default done" in text, text
        assert f"still quarantined under {ACME}=true (another config's quarantine.label)" in text, text
    finally:
        await responder.stop()
