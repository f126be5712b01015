"""Pods cut off while Slack is disabled: nobody would be told. `serve` warns of it when it starts and
`config check` says it; a config that cuts nothing for real, or tells Slack, is not warned of."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from bench.procs import free_port
from responder.cli import main
from responder.config import Config, load_config_text
from responder.serve_review import unannounced_cuts
from simulators.cluster_emulator import RunningCluster
from simulators.seed import SeededPod
from tests.helpers import SHELL_RULE, wait_until_ready, without_unchecked_names_note
from tests.responder.test_config_check_ux import HTTP, OPEN_INPUT

Seeded = tuple[RunningCluster, dict[str, SeededPod], str]
WARNING = (
    "slack.mode is disabled, yet pods are quarantined or blocked (policies: isolate-shells, block-egress):"
    " nobody is told when a pod is cut off (only the journal records it: serving-guard audit); set"
    " slack.mode to bot or webhook"
)


def cutting_policies() -> list[dict[str, Any]]:
    return [
        {"name": "isolate-shells", "match": {"rules": [SHELL_RULE]}, "actions": ["notify", "quarantine"]},
        {"name": "trial", "match": {"rules": ["Drift*"]}, "actions": ["quarantine"], "dry_run": True},
        {"name": "block-egress", "match": {"rules": ["Anomalous*"]}, "actions": ["block_destination"]},
        {"name": "annotate-only", "match": {"rules": ["Cred*"]}, "actions": ["notify", "annotate"]},
    ]


def config_of(**document: Any) -> Config:
    return load_config_text(yaml.safe_dump(document))


def test_pods_cut_with_slack_disabled_are_warned_of_naming_the_policies() -> None:
    assert unannounced_cuts(config_of(policies=cutting_policies())) == WARNING


@pytest.mark.parametrize(
    "document",
    [
        {"policies": cutting_policies(), "guardrails": {"dry_run": True}},  # nothing is changed
        {"policies": [{"name": "tell", "actions": ["notify", "annotate"]}]},  # nothing is cut
        {"policies": [{"name": "trial", "actions": ["quarantine"], "dry_run": True}]},
        {
            "policies": cutting_policies(),
            "slack": {"mode": "webhook", "webhook_url": {"env": "SG_TEST_WEBHOOK"}},
        },
    ],
    ids=["guardrails-dry-run", "notify-and-annotate", "policy-on-trial", "webhook"],
)
def test_no_warning_where_nothing_is_cut_or_slack_is_told(document: dict[str, Any]) -> None:
    assert unannounced_cuts(config_of(**document)) is None


def test_config_check_says_it_on_stderr_and_in_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({"inputs": HTTP, "policies": cutting_policies()}))
    assert main(["config", "check", str(path)]) == 0  # a warning, not a finding
    captured = capsys.readouterr()
    assert captured.out.startswith(f"{path}: ok\n")
    assert without_unchecked_names_note(captured.err).splitlines() == [
        f"warning: {WARNING}",
        OPEN_INPUT.rstrip("\n"),
    ]
    assert main(["config", "check", str(path), "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["warnings"] == [
        WARNING,
        OPEN_INPUT.removeprefix("warning: ").rstrip(),
    ]


def test_serve_warns_of_it_when_it_starts(tmp_path: Path, seeded: Seeded) -> None:
    port = free_port()
    document = {
        "inputs": HTTP,
        "server": {"metrics_listen": f"127.0.0.1:{port}", "event_loop": "asyncio"},
        "cluster": {"kubeconfig": seeded[2]},
        "journal": {"path": str(tmp_path / "journal.db")},
        "policies": cutting_policies(),
        "logging": {"level": "info"},
    }
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(document))
    process = subprocess.Popen(
        [sys.executable, "-m", "responder", "serve", "--config", str(config)], stderr=subprocess.PIPE
    )
    try:
        wait_until_ready(port, process)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=20) == 0
        assert process.stderr is not None
        logged = [
            json.loads(line) for line in process.stderr.read().decode().splitlines() if line.startswith("{")
        ]
    finally:
        if process.poll() is None:
            process.kill()
        assert process.stderr is not None
        process.stderr.close()
    warnings = [entry for entry in logged if entry.get("msg") == WARNING]
    assert len(warnings) == 1 and warnings[0]["level"].lower() == "warning", logged
    # Said at start: before the responder reports it is starting.
    messages = [entry.get("msg") for entry in logged]
    assert messages.index(WARNING) < messages.index("starting")
