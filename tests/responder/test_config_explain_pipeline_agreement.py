"""`config explain` predicts what the pipeline does: an alert that names no pod gets no quarantine
(the pipeline withholds it: verification no_pod_identity), and no pod "ns/None" is described; the
Slack line names the channel only where one is used, and a pod cut off is told in Slack whatever
the policy's actions and priority say."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from responder.cli import main
from simulators.cluster_emulator import RunningCluster
from simulators.falco_json import falco_alert, falco_bytes
from simulators.seed import SeededPod
from simulators.slack_sink import DEFAULT_TOKEN, RunningSlackSink
from tests.helpers import SHELL_RULE

Seeded = tuple[RunningCluster, dict[str, SeededPod], str]
POLICIES = [
    {"name": "tier-gold", "match": {"pod_labels": {"tier": "gold"}}, "actions": ["notify"]},
    {
        "name": "isolate-shells",
        "match": {"rules": [SHELL_RULE]},
        "actions": ["notify", "quarantine"],
        "slack": {"channel": "#sec-oncall"},
    },
]


def alert_without_pod(**fields: Any) -> dict[str, Any]:
    """A shell alert from Falco without Kubernetes metadata (k8s.pod.name missing)."""
    return {
        "hostname": "worker-3",
        "output": "Shell started in serving pod",
        "output_fields": {"container.id": "8a6310bfe61e", "proc.name": "sh", **fields},
        "priority": "Warning",
        "rule": SHELL_RULE,
        "source": "syscall",
        "tags": ["serving_guard", "shell"],
        "time": "2026-12-04T09:11:03.567927333Z",
    }


def explain(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], config: dict[str, Any], alert: dict[str, Any]
) -> list[str]:
    config_path = tmp_path / "config.yaml"
    config_path.write_text(yaml.safe_dump(config))
    alert_path = tmp_path / "alert.json"
    alert_path.write_text(json.dumps(alert))
    assert main(["config", "explain", str(config_path), str(alert_path), "--pod-label", "tier=gold"]) == 0
    return capsys.readouterr().out.splitlines()


@pytest.mark.parametrize("fields", [{"k8s.ns.name": "ml-serving"}, {}], ids=["namespace-only", "neither"])
def test_an_alert_naming_no_pod_gets_the_decision_the_pipeline_makes(
    tmp_path: Path, seeded: Seeded, capsys: pytest.CaptureFixture[str], fields: dict[str, str]
) -> None:
    config = {
        "cluster": {"kubeconfig": seeded[2]},
        "journal": {"path": str(tmp_path / "journal.db")},
        "policies": POLICIES,
        "logging": {"level": "error"},
    }
    alert = alert_without_pod(**fields)
    lines = explain(tmp_path, capsys, config, alert)
    assert not any("None" in line for line in lines), lines
    assert lines[0].endswith("pod (no pod named)")
    # No live pod carries labels here: --pod-label cannot make tier-gold match, nor does it "depend".
    assert lines[2] == "1. tier-gold: no: it needs pod labels tier=gold, known only from the live pod"
    assert lines[3] == "2. isolate-shells: MATCHES"
    assert lines[4:] == [
        "decision: notify, quarantine",
        "  quarantine WITHHELD: alert names no pod (no k8s.ns.name/k8s.pod.name: a host event, or Falco sends"
        " no output_fields)",
        "  Slack: slack.mode is disabled: journaled only, no channel is used",
    ]

    # The pipeline, on the same alert: no quarantine, for the reason explain gave.
    source = tmp_path / "alerts.jsonl"
    source.write_bytes(falco_bytes(alert) + b"\n")
    config_path = tmp_path / "config.yaml"
    assert main(["ingest", str(source), "--config", str(config_path)]) == 0
    capsys.readouterr()
    assert main(["audit", "--config", str(config_path), "--format", "json"]) == 0
    (entry,) = json.loads(capsys.readouterr().out)
    decision = entry["incident"]["decision"]
    assert decision["policy"] == "isolate-shells"
    assert decision["withheld"] == [
        "alert names no pod (no k8s.ns.name/k8s.pod.name: a host event, or Falco sends no output_fields)"
    ]
    assert "quarantine" not in decision["actions"]


@pytest.mark.parametrize(
    ("slack", "said"),
    [
        (
            {"mode": "webhook", "webhook_url": {"env": "SG_TEST_WEBHOOK"}},
            "  Slack: the webhook's own channel (#sec-oncall is not used: slack.mode is webhook)",
        ),
        (
            {"mode": "bot", "token": {"env": "SG_TEST_TOKEN"}, "default_channel": "#sec"},
            "  Slack: #sec-oncall",
        ),
        ({}, "  Slack: slack.mode is disabled: journaled only, no channel is used"),
    ],
    ids=["webhook", "bot", "disabled"],
)
def test_the_slack_line_names_a_channel_only_where_one_is_used(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], slack: dict[str, Any], said: str
) -> None:
    alert = alert_without_pod(**{"k8s.ns.name": "ml-serving", "k8s.pod.name": "vllm-0"})
    lines = explain(tmp_path, capsys, {"policies": POLICIES[1:], "slack": slack}, alert)
    assert said in lines
    assert sum("Slack:" in line for line in lines) == 1


def test_a_quarantine_without_notify_is_told_in_slack_as_explain_says(
    tmp_path: Path, seeded: Seeded, capsys: pytest.CaptureFixture[str]
) -> None:
    """The policy asks for quarantine alone, and Slack only from Critical: the pipeline posts the
    Warning's cut all the same (a pod cut off is always told), and explain says so."""
    token = tmp_path / "token"
    token.write_text(DEFAULT_TOKEN)
    torchserve = seeded[1]["torchserve"]
    alert = falco_alert(torchserve, SHELL_RULE, "Warning", "shell", {"proc.name": "sh"})
    with RunningSlackSink() as sink:
        config = {
            "cluster": {"kubeconfig": seeded[2]},
            "journal": {"path": str(tmp_path / "journal.db")},
            "policies": [
                {
                    "name": "q-only",
                    "match": {"rules": [SHELL_RULE]},
                    "actions": ["quarantine"],
                    "slack": {"channel": "#sec", "min_priority": "critical"},
                }
            ],
            "slack": {
                "mode": "bot",
                "token": {"file": str(token)},
                "default_channel": "#sec-alerts",
                "base_url": sink.base_url,
            },
            "logging": {"level": "error"},
        }
        lines = explain(tmp_path, capsys, config, alert)
        assert "decision: quarantine" in lines
        assert "  Slack: #sec" in lines

        source = tmp_path / "alerts.jsonl"
        source.write_bytes(falco_bytes(alert) + b"\n")
        ingest = ["ingest", str(source), "--config", str(tmp_path / "config.yaml"), "--settle-seconds", "30"]
        assert main(ingest) == 0
        (post,) = sink.messages("#sec")
        assert f"{torchserve.namespace}/{torchserve.name}" in str(post.blocks)
