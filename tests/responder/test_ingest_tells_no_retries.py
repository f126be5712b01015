"""What `serving-guard ingest` says of what is left when it exits: a withheld isolation's retry
scheduled for later would die with it, so Slack must not promise one (review-operator M6: "the
responder tries it again by itself over the next minutes", and nothing ever did); Slack messages
not sent yet are counted (M5)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from responder.cli import main
from simulators.cluster_emulator import Fault, RunningCluster
from simulators.falco_json import falco_alert, falco_bytes
from simulators.seed import SeededPod
from simulators.slack_sink import DEFAULT_TOKEN, RunningSlackSink
from tests.helpers import SHELL_RULE

Seeded = tuple[RunningCluster, dict[str, SeededPod], str]


def _ingest_a_shell(tmp_path: Path, seeded: Seeded, slack_url: str, **cluster: Any) -> None:
    """A shell alert on vllm-0 ingested under a config that quarantines shells and posts (bot mode)
    to ``slack_url``."""
    _, pods, kubeconfig = seeded
    token = tmp_path / "token"
    token.write_text(DEFAULT_TOKEN)
    source = tmp_path / "alerts.jsonl"
    source.write_bytes(
        falco_bytes(falco_alert(pods["vllm"], SHELL_RULE, "Warning", "shell", {"proc.name": "sh"})) + b"\n"
    )
    config = {
        "cluster": {"kubeconfig": kubeconfig, **cluster},
        "journal": {"path": str(tmp_path / "journal.db")},
        "policies": [{"name": "isolate-shells", "match": {"rules": [SHELL_RULE]}, "actions": ["quarantine"]}],
        "slack": {
            "mode": "bot",
            "token": {"file": str(token)},
            "default_channel": "#sec-alerts",
            "base_url": slack_url,
        },
        "logging": {"level": "error"},
    }
    config_path = tmp_path / "config.yaml"
    config_path.write_text(yaml.safe_dump(config))
    assert main(["ingest", str(source), "--config", str(config_path), "--settle-seconds", "5"]) == 0


def test_ingest_says_a_repeat_or_a_person_must_try_again_not_the_responder(
    tmp_path: Path, seeded: Seeded
) -> None:
    running = seeded[0]
    # The API refuses every pod read: a passing reason, withheld (the config keeps its default retries).
    running.call(running.emulator.inject, Fault(status=503, method="GET", plural="pods", times=100_000))
    with RunningSlackSink() as sink:
        _ingest_a_shell(tmp_path, seeded, sink.base_url, retry={"attempts": 1})
        (post,) = sink.messages("#sec-alerts")
    text = str(post.blocks)
    assert "withheld" in text, text
    assert "tries it again by itself" not in text, text
    assert "A repeat of this alert decides it again" in text and "serving-guard ingest" in text, text


def test_ingest_says_how_many_slack_messages_did_not_go_out(
    tmp_path: Path, seeded: Seeded, capsys: pytest.CaptureFixture[str]
) -> None:
    """A pod quarantined and Slack unreachable: the tally says the post waits in the journal, with
    the error, instead of reading as done."""
    capsys.readouterr()
    _ingest_a_shell(tmp_path, seeded, "http://127.0.0.1:1/api/")  # nothing listens there
    err = capsys.readouterr().err
    source = tmp_path / "alerts.jsonl"
    assert "actions quarantine: 1 quarantined" in err, err
    assert f"{source}: 1 Slack message(s) not sent yet (last error: " in err, err
    assert "they wait in the journal and go out when serving-guard serve, or the next ingest, runs" in err


def test_ingest_says_a_slack_message_refused_for_good(
    tmp_path: Path, seeded: Seeded, capsys: pytest.CaptureFixture[str]
) -> None:
    """Slack refusing the post for good (not waited for, not tried again) is said too: it was
    counted only while waiting (review-session-51 M1)."""
    capsys.readouterr()
    with RunningSlackSink() as sink:
        sink.api_error("invalid_blocks", times=1000, method="chat.postMessage")
        _ingest_a_shell(tmp_path, seeded, sink.base_url)
        assert not sink.messages("#sec-alerts")
    err = capsys.readouterr().err
    assert "actions quarantine: 1 quarantined" in err, err
    assert f"{tmp_path / 'alerts.jsonl'}: 1 Slack message(s) refused by Slack for good (" in err, err
    assert "nobody was told of them" in err
