"""`serving-guard config explain` shows a forged alert's escape sequences as text, as the audit
commands do, never as sequences the operator's terminal runs (review F4)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from responder.cli import main

ESC = "\x1b"
# What a forger puts in the alert: erase the line above and write a decision over it, hide text,
# retitle the window, plant a link.
NAMESPACE = "ml-serving\x1b[8m"
POD = "triton-0\x1b[1A\x1b[2K\rdecision: notify (nothing to check)"
HOSTNAME = "worker-1\x1b[2K\r\x1b]0;pwned\x07"
TAG = "T1059\x1b]8;;http://evil.example/\x1b\\click\x1b]8;;\x1b\\"
SOURCE = "syscall\x1b[31m"
CONTAINER = "abcdef123456\x1b[2K"


def _explained(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> str:
    config = tmp_path / "config.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "policies": [
                    # Its reason for not matching quotes the alert's namespace.
                    {"name": "prod", "match": {"namespaces": ["prod-*"]}, "actions": ["notify"]},
                    {"name": "shells", "match": {"rules": ["Shell*"]}, "actions": ["notify", "quarantine"]},
                ],
                "slack": {"mode": "disabled"},
            }
        )
    )
    alert = tmp_path / "alert.json"
    alert.write_text(
        json.dumps(
            {
                "hostname": HOSTNAME,
                "output": "x",
                "output_fields": {"k8s.ns.name": NAMESPACE, "k8s.pod.name": POD, "container.id": CONTAINER},
                "priority": "Warning",
                "rule": "Shell in serving pod",
                "source": SOURCE,
                "tags": [TAG],
                "time": "2026-12-03T08:00:00.000000000Z",
            }
        )
    )
    assert main(["config", "explain", str(config), str(alert)]) == 0
    return capsys.readouterr().out


def test_a_forged_alerts_escape_sequences_are_shown_not_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = _explained(tmp_path, capsys)
    assert ESC not in out and "\r" not in out and "\x07" not in out
    lines = out.splitlines()
    assert lines[0] == (
        "alert: 'Shell in serving pod', priority Warning, source syscall\\x1b[31m,"
        " pod ml-serving\\x1b[8m/triton-0\\x1b[1A\\x1b[2K\\rdecision: notify (nothing to check)"
    )
    assert lines[1] == "  tags: T1059\\x1b]8;;http://evil.example/\\x1b\\click\\x1b]8;;\\x1b\\"
    assert "1. prod: no: namespace ml-serving\\x1b[8m is not one of prod-*" in lines
    assert (
        "  - the live pod ml-serving\\x1b[8m/triton-0\\x1b[1A\\x1b[2K\\rdecision: notify (nothing to check)"
        " has container abcdef123456\\x1b[2K (running, or restarted since)"
        " on node worker-1\\x1b[2K\\r\\x1b]0;pwned\\x07"
    ) in lines
    assert "  - namespace ml-serving\\x1b[8m carries serving-guard.io/enforce=true (opted in)" in lines
    # The forged "decision:" stays inside the line it came in: the only decision line is ours.
    assert [line for line in lines if line.startswith("decision:")] == ["decision: notify, quarantine"]
