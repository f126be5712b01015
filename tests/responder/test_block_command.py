"""`serving-guard block`: a person blocks one destination for pods by hand, with the responder's
own block policy, checks and proof, recorded who and why; the platform's guardrails still hold."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest

from responder.cli import main
from simulators.falco_json import falco_alert
from tests.responder.test_block_destination import BLOCK_LABEL, EGRESS_RULE, Seeded
from tests.responder.test_quarantine_command import journaled_incident, stored, write_config


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(["block", *argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def labels(seeded: Seeded, name: str) -> dict[str, Any]:
    running, pods, _ = seeded
    found: dict[str, Any] = stored(running, pods[name])["metadata"].get("labels") or {}
    return found


def test_a_destination_blocked_by_hand_is_blocked_and_recorded_under_its_incident(
    tmp_path: Path, seeded: Seeded, capsys: pytest.CaptureFixture[str]
) -> None:
    running, pods, kubeconfig = seeded
    config = write_config(tmp_path, kubeconfig)
    vllm = pods["vllm"]
    # The responder journaled an incident on the pod (the default policy only notifies).
    incident = journaled_incident(
        tmp_path, config, falco_alert(vllm, EGRESS_RULE, "Warning", "egress", {"fd.sip": "203.0.113.7"})
    )
    capsys.readouterr()
    argv = ["-n", vllm.namespace, vllm.name, "--address", "203.0.113.7", "--reason", "exfil", "--by", "carol"]
    code, out, err = run([*argv, "--incident", incident, "--config", str(config)], capsys)
    assert code == 0, err
    assert out.startswith(f"{vllm.namespace}/{vllm.name}: blocked egress to 203.0.113.7 (blocked egress to")
    assert "(--address) with NetworkPolicy serving-guard-block-" in out
    assert BLOCK_LABEL in labels(seeded, "vllm")
    events = running.call(running.emulator.list_objects, "v1/events", vllm.namespace)
    assert "DestinationBlocked" in [e["reason"] for e in events]
    with sqlite3.connect(tmp_path / "journal.db") as conn:
        rows = conn.execute("SELECT incident_id, action, status, actor FROM actions").fetchall()
    assert rows == [(incident, "block_destination", "blocked", "carol")]
    # Release lifts it, and says so.
    code = main(["release", "-n", vllm.namespace, vllm.name, "--reason", "clean", "--config", str(config)])
    assert code == 0 and "lifted its destination block" in capsys.readouterr().out
    assert BLOCK_LABEL not in labels(seeded, "vllm")


def test_what_cannot_be_blocked_is_refused_before_the_cluster_is_touched(
    tmp_path: Path, seeded: Seeded, capsys: pytest.CaptureFixture[str]
) -> None:
    _, pods, kubeconfig = seeded
    vllm = pods["vllm"]
    config = str(write_config(tmp_path, kubeconfig))
    base = ["-n", vllm.namespace, vllm.name, "--reason", "r", "--config", config]
    for address, why in (
        ("10.2.3.4", "--address 10.2.3.4 is not a public address"),
        ("example.com", "--address is 'example.com', not an IP address"),
    ):
        code, out, err = run([*base, "--address", address], capsys)
        assert code == 2 and out == "" and why in err and "nothing was done" in err
    never = tmp_path / "never.yaml"
    never.write_text(
        f"cluster: {{kubeconfig: {kubeconfig}}}\nblock_destination: {{never_block: [203.0.113.0/24]}}\n"
    )
    code, _, err = run([*base[:-1], str(never), "--address", "203.0.113.7"], capsys)
    assert code == 2 and "is in block_destination.never_block (203.0.113.0/24)" in err
    assert BLOCK_LABEL not in labels(seeded, "vllm")
    # A quarantine label value whose cut forms no selector value can take (the API would refuse it).
    long_value = tmp_path / "long-value.yaml"
    long_value.write_text(f"cluster: {{kubeconfig: {kubeconfig}}}\nquarantine: {{label_value: {'v' * 56}}}\n")
    code, _, err = run([*base[:-1], str(long_value), "--address", "203.0.113.7"], capsys)
    assert code == 2 and f"{'v' * 56 + '-ingress'!r} is longer than 63 characters" in err
    assert "shorten quarantine.label_value; nothing was done" in err
    assert BLOCK_LABEL not in labels(seeded, "vllm")
    # The block policy must know the quarantine's labels: the responder's config is required.
    with pytest.raises(SystemExit) as exited:
        run(["-n", vllm.namespace, vllm.name, "--reason", "r", "--address", "203.0.113.7"], capsys)
    assert exited.value.code == 2
    code, _, err = run(
        ["-n", "kube-system", "coredns", "--address", "203.0.113.7", "--reason", "r", "--config", config],
        capsys,
    )
    assert code == 2 and "protected (guardrails.protected_namespaces): never blocked" in err
    sandbox = pods["sandbox"]
    code, out, err = run(
        [
            "-n",
            sandbox.namespace,
            sandbox.name,
            "--address",
            "203.0.113.7",
            "--reason",
            "r",
            "--config",
            config,
        ],
        capsys,
    )
    assert code == 1 and f"not blocked: namespace {sandbox.namespace} is not opted in" in out
    assert err == "1 of 1 pods not blocked\n"
