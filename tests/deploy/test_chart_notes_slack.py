"""The chart's NOTES warn when Slack is disabled while policies cut pods off (the default install),
as the responder itself does at start; with Slack disabled, on-call is sent to the journal, not to
Slack messages that never come."""

from __future__ import annotations

from typing import Any

import helm_python
import pytest

from responder.config import load_config_text
from responder.serve_review import unannounced_cuts
from tests.deploy.deploy_support import NAMESPACE, RELEASE, Case, Rendered, render

WARNING = "WARNING: SLACK IS DISABLED (slack.mode=disabled), YET POLICIES QUARANTINE OR BLOCK PODS:"
AUDIT = (
    f"kubectl -n {NAMESPACE} exec deploy/{RELEASE} -- serving-guard audit"
    " --config /etc/serving-guard/config.yaml --since 1h"
)
SLACK_BOT = {"mode": "bot", "secretName": "slack-bot", "defaultChannel": "#sec-alerts"}


def _render(chart: helm_python.Chart, values: dict[str, Any]) -> Rendered:
    return render(chart, Case("notes", values))


def test_the_default_install_warns_and_names_the_policies(renders: dict[str, Rendered]) -> None:
    notes = renders["defaults"].notes()
    assert WARNING in notes
    lines = notes.splitlines()
    assert lines[lines.index(WARNING) + 1] == "   shell-or-reverse-shell, serving-guard-critical."
    assert "Nobody is told when a pod is cut off" in notes
    # Step 4 sends on-call to the journal, with the config the pod mounts.
    assert "4. Slack is disabled, so nothing reports to you" in notes and AUDIT in notes
    assert "4. Act by hand on what Slack reports" not in notes
    assert "Slack thread" not in " ".join(notes.split())  # no thread to tell


@pytest.mark.parametrize("case", ["slack-bot", "slack-webhook"])
def test_with_slack_on_there_is_no_warning_and_slack_is_acted_on(
    renders: dict[str, Rendered], case: str
) -> None:
    notes = renders[case].notes()
    assert "SLACK IS DISABLED" not in notes and AUDIT not in notes
    assert "4. Act by hand on what Slack reports" in notes
    assert "the responder tells the incident's Slack thread" in " ".join(notes.split())


@pytest.mark.parametrize(
    "values",
    [
        {"guardrails": {"dryRun": True}},
        {
            "policies": [
                {"name": "tell", "match": {"tags": ["serving_guard"]}, "actions": ["notify", "annotate"]}
            ]
        },
        {"policies": [{"name": "trial", "actions": ["notify", "quarantine"], "dry_run": True}]},
        {"policies": [{"name": "no-actions-given"}]},  # the responder's default: notify
    ],
    ids=["guardrails-dry-run", "notify-and-annotate", "policy-on-trial", "default-actions"],
)
def test_nothing_cut_for_real_is_no_warning(chart: helm_python.Chart, values: dict[str, Any]) -> None:
    assert WARNING not in _render(chart, values).notes()


@pytest.mark.parametrize(
    "values",
    [
        {},
        {"slack": SLACK_BOT},
        {"guardrails": {"dryRun": True}},
        {
            "policies": [
                {"name": "egress", "match": {"rules": ["Anomalous*"]}, "actions": ["block_destination"]}
            ]
        },
        {"policies": [{"name": "trial", "actions": ["quarantine"], "dry_run": True}, {"name": "tell"}]},
    ],
    ids=["defaults", "bot", "dry-run", "block", "trial"],
)
def test_the_notes_warn_exactly_when_the_responder_warns(
    chart: helm_python.Chart, values: dict[str, Any]
) -> None:
    rendered = _render(chart, values)
    config = load_config_text(rendered.config_text(), "config.yaml")
    assert (WARNING in rendered.notes()) == (unannounced_cuts(config) is not None)
