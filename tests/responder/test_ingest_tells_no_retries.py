"""`serving-guard ingest` exits once its alerts are decided: a withheld isolation's retry scheduled
for later would die with it. Slack must not promise one (review-operator M6: "the responder tries it
again by itself over the next minutes", and nothing ever did)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from responder.cli import main
from simulators.cluster_emulator import Fault, RunningCluster
from simulators.falco_json import falco_alert, falco_bytes
from simulators.seed import SeededPod
from simulators.slack_sink import DEFAULT_TOKEN, RunningSlackSink
from tests.helpers import SHELL_RULE

Seeded = tuple[RunningCluster, dict[str, SeededPod], str]


def test_ingest_says_a_repeat_or_a_person_must_try_again_not_the_responder(
    tmp_path: Path, seeded: Seeded
) -> None:
    running, pods, kubeconfig = seeded
    token = tmp_path / "token"
    token.write_text(DEFAULT_TOKEN)
    vllm = pods["vllm"]
    source = tmp_path / "alerts.jsonl"
    source.write_bytes(
        falco_bytes(falco_alert(vllm, SHELL_RULE, "Warning", "shell", {"proc.name": "sh"})) + b"\n"
    )
    # The API refuses every pod read: a passing reason, withheld (the config keeps its default retries).
    running.call(running.emulator.inject, Fault(status=503, method="GET", plural="pods", times=100_000))
    with RunningSlackSink() as sink:
        config = {
            "cluster": {"kubeconfig": kubeconfig, "retry": {"attempts": 1}},
            "journal": {"path": str(tmp_path / "journal.db")},
            "policies": [
                {"name": "isolate-shells", "match": {"rules": [SHELL_RULE]}, "actions": ["quarantine"]}
            ],
            "slack": {
                "mode": "bot",
                "token": {"file": str(token)},
                "default_channel": "#sec-alerts",
                "base_url": sink.base_url,
            },
            "logging": {"level": "error"},
        }
        config_path = tmp_path / "config.yaml"
        config_path.write_text(yaml.safe_dump(config))
        assert main(["ingest", str(source), "--config", str(config_path), "--settle-seconds", "30"]) == 0
        (post,) = sink.messages("#sec-alerts")
    text = str(post.blocks)
    assert "withheld" in text, text
    assert "tries it again by itself" not in text, text
    assert "A repeat of this alert decides it again" in text and "serving-guard ingest" in text, text


def test_ingest_says_how_many_slack_messages_did_not_go_out(
    tmp_path: Path, seeded: Seeded, capsys: pytest.CaptureFixture[str]
) -> None:
    """A pod quarantined and Slack unreachable: the tally says the post waits in the journal, with
    the error, instead of reading as done (review-operator M5)."""
    _, pods, kubeconfig = seeded
    token = tmp_path / "token"
    token.write_text(DEFAULT_TOKEN)
    source = tmp_path / "alerts.jsonl"
    source.write_bytes(
        falco_bytes(falco_alert(pods["vllm"], SHELL_RULE, "Warning", "shell", {"proc.name": "sh"})) + b"\n"
    )
    config = {
        "cluster": {"kubeconfig": kubeconfig},
        "journal": {"path": str(tmp_path / "journal.db")},
        "policies": [{"name": "isolate-shells", "match": {"rules": [SHELL_RULE]}, "actions": ["quarantine"]}],
        "slack": {
            "mode": "bot",
            "token": {"file": str(token)},
            "default_channel": "#sec-alerts",
            "base_url": "http://127.0.0.1:1/api/",  # nothing listens there
        },
        "logging": {"level": "error"},
    }
    config_path = tmp_path / "config.yaml"
    config_path.write_text(yaml.safe_dump(config))
    capsys.readouterr()
    assert main(["ingest", str(source), "--config", str(config_path), "--settle-seconds", "2"]) == 0
    err = capsys.readouterr().err
    assert "actions quarantine: 1 quarantined" in err, err
    assert f"{source}: 1 Slack message(s) not sent yet (last error: " in err, err
    assert "they wait in the journal and go out when serving-guard serve, or the next ingest, runs" in err
