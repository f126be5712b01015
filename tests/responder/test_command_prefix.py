"""Slack's by-hand commands, as pasted on a workstation: slack.command_prefix (the chart sets
`kubectl -n NS exec deploy/NAME --`) goes before each, so the command runs in the responder's pod
with its config and journal; the words around it say so. Against the Kubernetes emulator and the
Slack sink, over loopback HTTP."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from responder.config import Slack
from responder.ingest.sink import InputName
from simulators.slack_sink import SlackSink
from tests.notify.slack_fixtures import visible_text
from tests.responder.test_notifications import Seeded, incident_posts, settle, shell, sink, start

__all__ = ["sink"]  # the fixture, used by name

PREFIX = "kubectl -n falco exec deploy/serving-guard --"


async def test_every_command_slack_gives_starts_with_the_prefix(
    tmp_path: Path, seeded: Seeded, sink: SlackSink
) -> None:
    responder = await start(tmp_path, seeded, sink, command_prefix=PREFIX)
    try:
        assert responder.pipeline is not None
        vllm = seeded[1]["vllm"]
        await responder.pipeline.submit(shell(vllm, 0), InputName.HTTP)
        await settle(responder, lambda: len(incident_posts(sink)) == 1)
        text = visible_text(incident_posts(sink)[0].blocks)
        assert f"```{PREFIX} serving-guard release --namespace ml-serving {vllm.name} --incident " in text
        assert (
            "*To release the pod* once it is safe (paste it where kubectl reaches the cluster: it runs in the"
            " responder's pod, is recorded under this incident, and a reply here says what it did):"
        ) in text
        assert "e.g. `kubectl exec` into its pod" not in text
    finally:
        await responder.stop()


@pytest.mark.parametrize(
    ("prefix", "why"),
    [
        ("kubectl exec `id` --", "a backquote would end the code block it is shown in"),
        ("kubectl -n falco\nexec deploy/x --", "one line"),
        ("kubectl -n falco\u2028exec deploy/x --", "a line separator"),
        ("kubectl -n \u202efalco exec deploy/x --", "a bidi override"),
        ("kubectl -n falco\x85exec deploy/x --", "a C1 control"),
        ("x" * 201, "at most 200 characters"),
    ],
)
def test_a_prefix_that_cannot_be_shown_as_one_command_is_refused(prefix: str, why: str) -> None:
    settings: dict[str, Any] = {"command_prefix": prefix}
    with pytest.raises(ValidationError) as refused:
        Slack.model_validate(settings)
    assert refused.value.errors()[0]["loc"] == ("command_prefix",), why
