"""A quarantined pod deleted (the usual remedy), or made again under its name by its StatefulSet, is
no lapse: the recheck tells the incident's thread it is gone, its post offers no release any more,
and a command naming the incident refuses the pod made again under that name (its quarantine went
with the old pod). Against the Kubernetes emulator and the Slack sink, over loopback HTTP."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from responder.cli import main
from simulators.slack_sink import SlackSink
from tests.helpers import FakeClock
from tests.notify.slack_fixtures import visible_text
from tests.responder.test_by_hand_in_slack import cli_config
from tests.responder.test_isolation_recheck import rechecked
from tests.responder.test_lapse_notice import incident_ids, lapse_replies, quarantined_and_posted
from tests.responder.test_notifications import Seeded, incident_posts, settle, shell, sink, start
from tests.responder.test_pipeline import labels
from tests.responder.test_quarantine import Harness
from tests.responder.test_workload_threads import submit

__all__ = ["sink"]  # the fixture, used by name

LABEL = "serving-guard.io/quarantine"
NEW_UID = "0f1e2d3c-aaaa-bbbb-cccc-000000000003"


async def test_a_pod_made_again_is_told_gone_and_its_incidents_commands_refuse_the_new_one(
    tmp_path: Path, seeded: Seeded, sink: SlackSink, capsys: pytest.CaptureFixture[str]
) -> None:
    running, pods, kubeconfig = seeded
    vllm = pods["vllm"]
    clock = FakeClock()
    harness = Harness(running, kubeconfig)
    responder = await start(tmp_path, seeded, sink, clock)
    try:
        await quarantined_and_posted(responder, sink, vllm)
        (incident,) = incident_ids(responder)
        assert "serving-guard release" in visible_text(incident_posts(sink)[0].blocks)
        # Its StatefulSet makes it again: the same name, a new uid; then quarantined by another incident.
        stored = harness.stored("v1/pods", vllm.namespace, vllm.name)
        assert stored is not None
        stored["metadata"] = {**stored["metadata"], "uid": NEW_UID}
        running.call(running.emulator.put_object, "v1/pods", stored)
        clock.advance(16)
        await submit(responder, shell(vllm, 2))
        assert not await rechecked(responder)  # gone is no lapse: nothing reopens
        await settle(responder, lambda: len(lapse_replies(sink)) == 1)
        (reply,) = lapse_replies(sink)
        told = visible_text(reply.blocks)
        assert told.startswith(
            f":ghost: *Pod gone*: `{vllm.namespace}/{vllm.name}`: the pod was replaced since"
        )
        assert "Nothing of this incident is left to release" in told
        await settle(
            responder, lambda: "serving-guard release" not in visible_text(incident_posts(sink)[0].blocks)
        )
        assert visible_text(incident_posts(sink)[0].blocks).split("\n")[1].startswith(":ghost: *Pod gone*")
        # The old incident's release command would lift the new pod's quarantine: refused.
        capsys.readouterr()
        argv = ["release", "-n", vllm.namespace, vllm.name, "--reason", "done", "--by", "bob"]
        argv += ["--incident", incident, "--config", str(cli_config(tmp_path, kubeconfig))]
        assert await asyncio.to_thread(main, argv) == 2
        err = capsys.readouterr().err
        assert f"--incident {incident}: {vllm.namespace}/{vllm.name} was made again since the incident" in err
        assert f"this one has {NEW_UID}" in err and "nothing was done" in err
        assert labels(running, vllm)[LABEL] == "true"  # still quarantined
    finally:
        await responder.stop()
