"""`serving-guard config explain`: which policy an alert meets, why the ones above it do not, and
what the responder checks before it acts."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from responder.cli import main

SHELL = "Shell in serving pod"
POLICIES = [
    {"name": "quiet", "match": {"rules": [SHELL], "min_priority": "critical"}, "actions": ["notify"]},
    {"name": "gold-pods", "match": {"pod_labels": {"tier": "gold"}}, "actions": ["notify", "annotate"]},
    {
        "name": "shells",
        "match": {"rules": ["Shell*"], "tags": ["T1059"]},
        "actions": ["notify", "quarantine"],
        "slack": {"channel": "#sec-oncall"},
        "dry_run": True,
    },
    {"name": "later", "actions": ["notify"]},
]


def files(tmp_path: Path, *, namespace: str = "ml-serving", **alert: Any) -> tuple[str, str]:
    config = tmp_path / "config.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "policies": POLICIES,
                "slack": {"mode": "bot", "default_channel": "#sec", "token": {"env": "SLACK_TOKEN"}},
            }
        )
    )
    body = {
        "hostname": "worker-1",
        "output": "shell",
        "output_fields": {
            "k8s.ns.name": namespace,
            "k8s.pod.name": "triton-0",
            "container.id": "abcdef123456",
        },
        "priority": "Warning",
        "rule": SHELL,
        "source": "syscall",
        "tags": ["T1059"],
        "time": "2026-12-03T08:00:00.000000000Z",
        **alert,
    }
    path = tmp_path / "alert.json"
    path.write_text(json.dumps(body))
    return str(config), str(path)


def explain(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, list[str], str]:
    code = main(["config", "explain", *argv])
    captured = capsys.readouterr()
    return code, captured.out.splitlines(), captured.err


def test_it_walks_the_policies_in_order_and_names_the_one_that_decides(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, lines, _ = explain(list(files(tmp_path)), capsys)
    assert code == 0
    assert lines == [
        "alert: 'Shell in serving pod', priority Warning, source syscall, pod ml-serving/triton-0",
        "  tags: T1059",
        "1. quiet: no: priority Warning is below Critical",
        "2. gold-pods: DEPENDS on the live pod's labels: it needs pod labels tier=gold, known only from"
        " the live pod",
        "3. shells: MATCHES",
        "4. later: not tried (the first match decides)",
        "decision: notify, quarantine",
        "  ONLY for a pod without the labels policy gold-pods asks for: on one with them, gold-pods"
        " decides (run again with --pod-label tier=gold to see it)",
        "  quarantine cuts both: label serving-guard.io/quarantine=true into NetworkPolicy"
        " serving-guard-quarantine (a pod already cut otherwise is widened, never narrowed)",
        "  dry-run (policy shells is in dry-run): its actions on the pod are predicted and reported,"
        " nothing is changed",
        "  Slack: #sec-oncall",
        "before it acts, the responder checks:",
        "  - the live pod ml-serving/triton-0 has container abcdef123456 (running, or restarted since)"
        " on node worker-1",
        "  - namespace ml-serving carries serving-guard.io/enforce=true (opted in)",
        "  - fewer than 5 pods were quarantined in the last 300s (circuit breaker)",
    ]


def test_pod_labels_given_on_the_command_line_are_matched(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config, alert = files(tmp_path)
    code, lines, _ = explain([config, alert, "--pod-label", "tier=gold"], capsys)
    assert code == 0 and "2. gold-pods: MATCHES" in lines and "decision: notify, annotate" in lines
    code, lines, _ = explain([config, alert, "--pod-label", "tier=silver"], capsys)
    assert "2. gold-pods: no: the pod does not carry tier=gold" in lines


def test_a_protected_namespace_and_an_unmatched_alert_are_said(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, lines, _ = explain(list(files(tmp_path, namespace="kube-system")), capsys)
    assert "  - namespace kube-system is protected: actions on the pod are ALWAYS withheld there" in lines
    _, lines, _ = explain(list(files(tmp_path, rule="Other rule", tags=[])), capsys)
    assert "1. quiet: no: rule 'Other rule' is not one of 'Shell in serving pod'" in lines
    assert "3. shells: no: rule 'Other rule' is not one of 'Shell*'" in lines
    assert "4. later: MATCHES" in lines and lines[-1] == "  Slack: #sec"
    assert lines[-3].startswith("decision: notify") and lines[-2].startswith("  ONLY for a pod without")


def test_bad_input_is_one_line_naming_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config, alert = files(tmp_path, priority="Loud")
    code, _, err = explain([config, alert], capsys)
    assert (
        code == 2
        and err.startswith(f"serving-guard: error: {alert}: field 'priority'")
        and "Traceback" not in err
    )
    code, _, err = explain([config, alert, "--pod-label", "tier"], capsys)
    assert code == 2 and "--pod-label 'tier': must be KEY=VALUE" in err
    code, _, err = explain([config, str(tmp_path)], capsys)
    assert code == 2 and "is a directory, not a file holding an alert" in err


@pytest.mark.parametrize(
    ("address", "said"),
    [
        (
            "203.0.113.7",
            "  block_destination: 203.0.113.7 (fd.sip), through the pod's own NetworkPolicy"
            " serving-guard-block-<hash of its uid> (made only where no other policy restricts the"
            " pod's egress)",
        ),
        ("10.0.3.4", "  block_destination: nothing to block: fd.sip 10.0.3.4 is not a public address"),
    ],
)
def test_a_destination_block_names_the_address_or_why_there_is_none(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], address: str, said: str
) -> None:
    _, alert = files(
        tmp_path,
        rule="Anomalous egress from serving pod",
        output_fields={"k8s.ns.name": "ml-serving", "k8s.pod.name": "triton-0", "fd.sip": address},
    )
    config = tmp_path / "blocking.yaml"
    policy = {"name": "egress", "match": {"rules": ["Anomalous*"]}, "actions": ["block_destination"]}
    config.write_text(yaml.safe_dump({"policies": [policy]}))
    code, lines, _ = explain([str(config), alert], capsys)
    assert code == 0 and any(line.startswith(said) for line in lines), lines
    # Its guardrail is the block circuit breaker, not the quarantines'.
    assert (
        "  - fewer than 20 destinations were newly blocked in the last 300s (block circuit breaker)" in lines
    )
    assert not any("pods were quarantined" in line for line in lines)


def test_an_input_binding_alerts_to_nodes_says_which_certificate_the_alert_needs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config, alert = files(tmp_path)
    document = yaml.safe_load(Path(config).read_text())
    tls = {"cert_file": "tls.crt", "key_file": "tls.key", "client_ca_file": "ca.crt"}
    document["inputs"] = {"http": {"tls": tls, "require_sender_matches_hostname": True}}
    Path(config).write_text(yaml.safe_dump(document))
    code, lines, _ = explain([config, alert], capsys)
    assert code == 0
    checks = lines[lines.index("before it acts, the responder checks:") + 1 :]
    assert checks[0] == (
        "  - over HTTP, the alert came with a client certificate naming node worker-1"
        " (inputs.http.require_sender_matches_hostname)"
    )


def test_json_lines_are_pointed_to_ingest_in_dry_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`head -3 alerts.jsonl | serving-guard config explain CONFIG -` said only the parser's words."""
    config, alert = files(tmp_path)
    one = Path(alert).read_text()
    Path(alert).write_text(f"{one}\n{one}\n")
    code, _, err = explain([config, alert], capsys)
    assert code == 2 and "Traceback" not in err
    assert err.startswith(f"serving-guard: error: {alert}: invalid JSON: Extra data (line 2, column 1)")
    assert "config explain takes one alert; for JSON lines (one alert each), run `serving-guard ingest" in err
    assert "guardrails.dry_run is true" in err


def test_an_alert_without_a_hostname_is_said_never_to_be_acted_on(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """It said "on node None", while the pipeline withholds such an alert as unverified."""
    config, alert = files(tmp_path, hostname=None)
    code, lines, _ = explain([config, alert], capsys)
    assert code == 0 and not any("None" in line for line in lines), lines
    assert (
        "  - the live pod ml-serving/triton-0 has container abcdef123456 (running, or restarted since) on the"
        " alert's node (it names none: such an alert is never acted on)"
    ) in lines
