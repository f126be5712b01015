"""The command line: config check, ingest, audit and release, run through the real entry point."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest
import yaml

from responder.cli import main
from responder.cluster.api import KubeGateway
from responder.commands.serve import YOUNG_GENERATION_THRESHOLD
from responder.service import Responder
from simulators.cluster_emulator import RunningCluster
from simulators.falco_json import falco_alert, falco_bytes
from simulators.seed import SeededPod
from tests.helpers import (
    SHELL_RULE,
    Records,
    responder_config,
    wait_until_ready,
    without_unchecked_names_note,
)

Seeded = tuple[RunningCluster, dict[str, SeededPod], str]
LABEL = "serving-guard.io/quarantine"


def write_config(tmp_path: Path, kubeconfig: str, **extra: Any) -> Path:
    data: dict[str, Any] = {
        "cluster": {"kubeconfig": kubeconfig},
        "journal": {"path": str(tmp_path / "journal.db")},
        "policies": [
            {"name": "isolate-shells", "match": {"rules": [SHELL_RULE]}, "actions": ["notify", "quarantine"]}
        ],
        "logging": {"level": "error"},
        **extra,
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_config_check_prints_the_effective_policy(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_config(tmp_path, "kc")
    assert main(["config", "check", str(path)]) == 0
    out = capsys.readouterr().out
    assert "1. isolate-shells: when rules Shell in serving pod" in out
    assert "do notify, quarantine" in out and "otherwise: notify" in out
    assert (
        "quarantine: label serving-guard.io/quarantine=true into NetworkPolicy serving-guard-quarantine,"
        " cutting ingress and egress; other policies that let traffic through are reported"
    ) in out
    assert main(["config", "check", str(path), "--format", "json"]) == 0
    effective = json.loads(capsys.readouterr().out)
    assert effective["policies"][0]["actions"] == ["notify", "quarantine"]
    assert effective["quarantine"]["isolate"] == "both"


def test_config_check_says_what_a_one_way_quarantine_cuts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "egress.yaml"
    path.write_text("quarantine:\n  isolate: egress\n  patch_other_policies: true\n")
    assert main(["config", "check", str(path)]) == 0
    out = capsys.readouterr().out
    assert "cutting egress only (the pod still receives requests)" in out
    assert "are patched to exclude the pod" in out


def test_config_check_says_how_destinations_are_blocked_where_a_policy_blocks_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_config(tmp_path, "kc")
    assert main(["config", "check", str(path)]) == 0
    out = capsys.readouterr().out
    assert "block_destination:" not in out and "newly blocked" not in out  # no policy blocks: not said
    path.write_text(
        "policies:\n"
        "  - {name: egress, match: {rules: [Anomalous egress*]}, actions: [notify, block_destination]}\n"
        "block_destination: {never_block: [203.0.113.0/24, 2001:db8::1]}\n"
        "guardrails: {max_blocks: {count: 8, window_seconds: 60}}\n"
    )
    assert main(["config", "check", str(path)]) == 0
    out = capsys.readouterr().out
    assert (
        "block_destination: the address in fd.rip or fd.sip, through the pod's own NetworkPolicy"
        " serving-guard-block-<hash of its uid> and label serving-guard.io/block; never blocked:"
        " 203.0.113.0/24, 2001:db8::1/128"
    ) in out
    assert (
        "at most 5 quarantines per 300s and 8 destinations newly blocked per 60s, 5 of them per pod"
        " (past it, the pod's egress is quarantined instead)"
    ) in out
    assert main(["config", "check", str(path), "--format", "json"]) == 0
    effective = json.loads(capsys.readouterr().out)
    assert effective["block_destination"]["never_block"] == ["203.0.113.0/24", "2001:db8::1/128"]
    assert effective["guardrails"]["max_blocks"] == {"count": 8, "window_seconds": 60.0, "per_pod": 5}


def test_config_check_names_the_policies_on_trial(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "trial.yaml"
    path.write_text(
        "policies:\n"
        "  - {name: enforced, match: {rules: [Shell in serving pod]}, actions: [notify, quarantine]}\n"
        "  - name: on-trial\n    match: {rules: [Anomalous egress*]}\n    actions: [notify, quarantine]\n"
        "    dry_run: true\n    isolate: egress\n"
    )
    assert main(["config", "check", str(path)]) == 0
    out = capsys.readouterr().out
    assert "do notify, quarantine cutting ingress and egress; Slack channel" in out
    assert (
        "do notify, quarantine cutting egress only (the pod still receives requests)"
        " (dry-run: predicted and reported, nothing changed); Slack channel" in out
    )
    assert main(["config", "check", str(path), "--format", "json"]) == 0
    effective = json.loads(capsys.readouterr().out)
    assert [(p["dry_run"], p["isolate"]) for p in effective["policies"]] == [
        (False, "both"),
        (True, "egress"),
    ]


@pytest.mark.parametrize(
    ("text", "line", "key"),
    [
        ('guardrails:\n  dry_run: "yes"\n', 2, "guardrails.dry_run"),
        ("policies:\n  - name: p\n    dry_run: 1\n", 3, "policies[0].dry_run"),
        ('quarantine:\n  patch_other_policies: "false"\n', 2, "quarantine.patch_other_policies"),
        ('inputs:\n  http:\n    allow_unauthenticated: "true"\n', 3, "inputs.http.allow_unauthenticated"),
    ],
)
def test_config_booleans_are_written_as_booleans(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, line: int, key: str
) -> None:
    # A quoted "true" or a number is refused, not read as a boolean: a switch such as
    # allow_unauthenticated is never turned on by a string that merely looks like one.
    path = tmp_path / "bools.yaml"
    path.write_text(text)
    assert main(["config", "check", str(path)]) == 2
    assert f"{path}:{line}: {key}: must be true or false" in capsys.readouterr().err


def test_config_errors_name_file_line_and_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(
        "journal:\n  path: /tmp/x\n  retention_dayz: 3\npolicies:\n  - name: p\n    actions: [explode]\n"
    )
    assert main(["config", "check", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"{path}:3: journal.retention_dayz: unknown key" in err
    assert f"{path}:6: policies[0].actions[0]:" in err and "Traceback" not in err


def test_config_syntax_error_and_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("policies: [\n")
    assert main(["config", "check", str(path)]) == 2
    assert f"{path}:2: invalid YAML" in capsys.readouterr().err
    assert main(["config", "check", str(tmp_path / "none.yaml")]) == 2
    assert "cannot read file" in capsys.readouterr().err


def test_secrets_come_from_files_or_env_not_the_config(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("slack:\n  mode: bot\n  default_channel: '#x'\n  token: xoxb-plaintext\n")
    assert main(["config", "check", str(path)]) == 2
    assert "slack.token" in capsys.readouterr().err


def test_ingest_feeds_the_pipeline_and_reports_bad_lines(
    tmp_path: Path, seeded: Seeded, capsys: pytest.CaptureFixture[str]
) -> None:
    running, pods, kubeconfig = seeded
    config = write_config(tmp_path, kubeconfig)
    lines = [
        falco_bytes(falco_alert(pods["vllm"], SHELL_RULE, "Notice", "shell", {"proc.name": "sh"})).decode(),
        "",
        '{"rule": "x", "priority": "Notice"}',
        "not json at all",
        falco_bytes(
            falco_alert(pods["torchserve"], SHELL_RULE, "Notice", "shell", {"proc.name": "sh"})
        ).decode(),
    ]
    source = tmp_path / "alerts.jsonl"
    source.write_text("\n".join(lines) + "\n")
    assert main(["ingest", str(source), "--config", str(config)]) == 1
    err = capsys.readouterr().err
    assert f"{source}:3: field 'time': missing" in err
    assert f"{source}:4: invalid JSON" in err
    assert f"{source}: 2 accepted, 0 already in the journal, 2 rejected" in err
    for name in ("vllm", "torchserve"):
        stored = running.call(running.emulator.get_object, "v1/pods", pods[name].namespace, pods[name].name)
        assert stored["metadata"]["labels"][LABEL] == "true"

    # A replay of the same file changes nothing: the alerts are already journaled.
    assert main(["ingest", str(source), "--config", str(config)]) == 1
    assert "0 accepted, 2 already in the journal, 2 rejected" in capsys.readouterr().err

    assert main(["audit", "--config", str(config), "--format", "json"]) == 0
    entries = json.loads(capsys.readouterr().out)
    assert [e["outcome"] for e in entries] == ["opened", "opened"]
    assert entries[0]["incident"]["actions"][0]["status"] == "quarantined"
    assert entries[0]["timings_ms"]["to_quarantine"] is not None
    assert main(["audit", "--config", str(config), "--pod", f"ml-serving/{pods['vllm'].name}"]) == 0
    table = capsys.readouterr().out
    assert "RULE" in table and "quarantine=quarantined" in table and pods["torchserve"].name not in table


def test_an_alert_time_past_2262_is_a_rejected_line_and_the_lines_after_it_are_ingested(
    tmp_path: Path, seeded: Seeded, capsys: pytest.CaptureFixture[str]
) -> None:
    _, pods, kubeconfig = seeded
    config = write_config(
        tmp_path, kubeconfig, journal={"path": str(tmp_path / "journal.db"), "writer": "thread"}
    )

    def line(name: str, when: str | None = None) -> str:
        alert = falco_alert(pods[name], SHELL_RULE, "Notice", "shell", {"proc.name": "sh"})
        return json.dumps(alert if when is None else dict(alert, time=when))

    source = tmp_path / "alerts.jsonl"
    source.write_text(
        "\n".join(
            [
                line("vllm"),
                line("triton", "2262-04-12T00:00:00Z"),  # past int64 ns: was an OverflowError
                line("torchserve"),
                line("kserve", "1900-01-01T00:00:00Z"),
                line("triton"),
            ]
        )
        + "\n"
    )
    assert main(["ingest", str(source), "--config", str(config), "--settle-seconds", "0"]) == 1
    err = capsys.readouterr().err
    assert (
        f"{source}:2: field 'time': timestamp out of range (after 2262-04-11T23:47:16.854775807Z):"
        " '2262-04-12T00:00:00Z'"
    ) in err
    assert f"{source}:4: field 'time': timestamp before 1970: '1900-01-01T00:00:00Z'" in err
    assert f"{source}: 3 accepted, 0 already in the journal, 2 rejected" in err
    assert "Traceback" not in err
    assert main(["audit", "--config", str(config), "--format", "json"]) == 0
    entries = json.loads(capsys.readouterr().out)
    assert sorted(e["pod"] for e in entries) == sorted(pods[n].name for n in ("vllm", "torchserve", "triton"))


def test_audit_summarises_what_a_policy_on_trial_would_have_done(
    tmp_path: Path, seeded: Seeded, capsys: pytest.CaptureFixture[str]
) -> None:
    """The trial's review: --policy keeps the incidents that policy decided, --format summary gives
    one line per incident and how many ended each way."""
    running, pods, kubeconfig = seeded
    download = "Runtime download or package install in serving pod"
    policies = [
        {"name": "isolate-shells", "match": {"rules": [SHELL_RULE]}, "actions": ["notify", "quarantine"]},
        {
            "name": "downloads trial",
            "match": {"rules": [download]},
            "actions": ["quarantine"],
            "dry_run": True,
        },
    ]
    config = write_config(tmp_path, kubeconfig, policies=policies)
    lines = [
        falco_alert(pods["vllm"], SHELL_RULE, "Notice", "x", {"proc.name": "sh"}),
        *[
            falco_alert(pods["triton"], download, "Warning", "pip", {"proc.cmdline": f"pip {n}"})
            for n in range(3)
        ],
        falco_alert(pods["torchserve"], download, "Warning", "curl", {"proc.name": "curl"}),
    ]
    source = tmp_path / "alerts.jsonl"
    source.write_text("".join(falco_bytes(line).decode() + "\n" for line in lines))
    assert main(["ingest", str(source), "--config", str(config), "--settle-seconds", "0"]) == 0
    capsys.readouterr()

    assert main(["audit", "--config", str(config), "--policy", "downloads trial", "--format", "summary"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["OPENED", "(UTC)", "RULE", "POD", "POLICY", "ALERTS", "OUTCOME"]
    triton = next(line for line in out[1:3] if pods["triton"].name in line)
    assert "downloads trial  3" in triton
    assert triton.endswith("dry-run: would quarantine, LEAKY through allow-gateway-to-triton")
    torchserve = next(line for line in out[1:3] if pods["torchserve"].name in line)
    assert torchserve.endswith("downloads trial  1       dry-run: would quarantine")
    assert out[3] == ""
    assert out[4:] == [
        "2 incident(s) on 2 pod(s), 4 alert(s) in all:",
        "       1  dry-run: would quarantine, LEAKY through allow-gateway-to-triton",
        "       1  dry-run: would quarantine",
    ]
    assert not quarantined(running, pods["triton"]) and quarantined(running, pods["vllm"])

    # A typo finds nothing: said, not passed off as "it decided nothing".
    assert main(["audit", "--config", str(config), "--policy", "downloads trail", "--format", "summary"]) == 0
    err = capsys.readouterr().err
    assert "--policy downloads trail: no incidents, and the config names no such policy" in err
    assert "(its policies: isolate-shells, downloads trial)" in err

    assert main(["audit", "--config", str(config), "--policy", "isolate-shells", "--format", "json"]) == 0
    entries = json.loads(capsys.readouterr().out)
    assert [e["pod"] for e in entries] == [pods["vllm"].name]
    assert (
        main(
            [
                "audit",
                "--config",
                str(config),
                "--policy",
                "isolate-shells",
                "--format",
                "summary",
                "--limit",
                "1",
            ]
        )
        == 0
    )
    # The one entry there is, and nothing older: no note of a cut (--limit cut nothing).
    summary = capsys.readouterr().out
    assert "1 incident(s) on 1 pod(s)" in summary and "raise --limit" not in summary
    assert main(["audit", "--config", str(config), "--policy", "no/such"]) == 2
    assert (
        "--policy 'no/such' is not a policy name (as the config's policies[].name)" in capsys.readouterr().err
    )


def test_audit_tells_one_incidents_whole_story(
    tmp_path: Path, seeded: Seeded, capsys: pytest.CaptureFixture[str]
) -> None:
    """--incident, with the id Slack shows: that incident's alerts (its repeats too) and nothing else."""
    _, pods, kubeconfig = seeded
    config = write_config(tmp_path, kubeconfig)
    lines = [
        *[
            falco_alert(pods["vllm"], SHELL_RULE, "Notice", "x", {"proc.cmdline": f"sh {n}"})
            for n in range(3)
        ],
        falco_alert(pods["triton"], SHELL_RULE, "Notice", "x", {"proc.name": "sh"}),
    ]
    source = tmp_path / "alerts.jsonl"
    source.write_text("".join(falco_bytes(line).decode() + "\n" for line in lines))
    assert main(["ingest", str(source), "--config", str(config), "--settle-seconds", "0"]) == 0
    capsys.readouterr()
    assert main(["audit", "--config", str(config), "--format", "json"]) == 0
    everything = json.loads(capsys.readouterr().out)
    vllm_incident = next(e["incident_id"] for e in everything if e["pod"] == pods["vllm"].name)

    assert main(["audit", "--config", str(config), "--incident", vllm_incident, "--format", "json"]) == 0
    entries = json.loads(capsys.readouterr().out)
    assert [(e["pod"], e["outcome"]) for e in entries] == [
        (pods["vllm"].name, "opened"),
        (pods["vllm"].name, "duplicate"),
        (pods["vllm"].name, "duplicate"),
    ]
    assert {e["incident_id"] for e in entries} == {vllm_incident}
    assert main(["audit", "--config", str(config), "--incident", "inc-" + "0" * 20]) == 1
    captured = capsys.readouterr()
    assert captured.out.splitlines()[1:] == []  # the header alone: no such incident, and it says so
    assert "nothing in the trail (mistyped, or pruned since)" in captured.err
    assert main(["audit", "--config", str(config), "--incident", "INC-1"]) == 2
    assert "--incident: 'INC-1' is not an incident id (inc- and 20 hex digits)" in capsys.readouterr().err


def test_audit_argument_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["audit", "--journal", str(tmp_path / "none.db")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["audit", "--journal", str(tmp_path / "none.db"), "--pod", "nopod"]) == 2
    assert "NAMESPACE/NAME" in capsys.readouterr().err
    assert main(["audit", "--journal", str(tmp_path / "none.db"), "--since", "yesterday"]) == 2
    assert "since must be" in capsys.readouterr().err


def test_release_lifts_the_quarantine_and_records_who(
    tmp_path: Path, seeded: Seeded, capsys: pytest.CaptureFixture[str]
) -> None:
    running, pods, kubeconfig = seeded
    config = write_config(tmp_path, kubeconfig)
    source = tmp_path / "alerts.jsonl"
    source.write_text(
        falco_bytes(falco_alert(pods["vllm"], SHELL_RULE, "Notice", "x", {"proc.name": "sh"})).decode()
    )
    assert main(["ingest", str(source), "--config", str(config)]) == 0
    capsys.readouterr()
    code = main(
        [
            "release",
            "--namespace",
            "ml-serving",
            pods["vllm"].name,
            "--reason",
            "benign admin shell",
            "--by",
            "carol",
            "--config",
            str(config),
        ]
    )
    assert code == 0
    # "released" once, the reason once.
    assert (
        capsys.readouterr().out == f"ml-serving/{pods['vllm'].name}: released by carol: benign admin shell\n"
    )
    stored = running.call(running.emulator.get_object, "v1/pods", "ml-serving", pods["vllm"].name)
    assert LABEL not in stored["metadata"]["labels"]
    assert main(["audit", "--config", str(config), "--format", "json"]) == 0
    capsys.readouterr()
    assert (
        main(["release", "--namespace", "ml-serving", "ghost", "--reason", "x", "--kubeconfig", kubeconfig])
        == 1
    )
    # As quarantine says it: no raw status, the API's "not found" not said twice.
    assert capsys.readouterr().out == "ml-serving/ghost: not found\n"


def test_release_takes_several_pods_and_says_which_were_not_released(
    tmp_path: Path, seeded: Seeded, capsys: pytest.CaptureFixture[str]
) -> None:
    """After an incident across a workload's replicas, one command releases them all; each pod is
    released and recorded on its own, and one that cannot be does not stop the others."""
    running, pods, kubeconfig = seeded
    config = write_config(tmp_path, kubeconfig)
    source = tmp_path / "alerts.jsonl"
    source.write_text(
        "".join(
            falco_bytes(falco_alert(pods[name], SHELL_RULE, "Notice", "x", {"proc.name": "sh"})).decode()
            + "\n"
            for name in ("vllm", "torchserve")
        )
    )
    assert main(["ingest", str(source), "--config", str(config), "--settle-seconds", "0"]) == 0
    assert quarantined(running, pods["vllm"]) and quarantined(running, pods["torchserve"])
    capsys.readouterr()
    names = [pods["vllm"].name, "ghost", pods["torchserve"].name, pods["vllm"].name]
    argv = ["release", "-n", "ml-serving", *names, "--reason", "replicas rebuilt", "--by", "carol"]
    assert main([*argv, "--config", str(config)]) == 1
    captured = capsys.readouterr()
    lines = captured.out.splitlines()
    assert [line.split(":")[0] for line in lines] == [
        f"ml-serving/{pods['vllm'].name}",
        "ml-serving/ghost",
        f"ml-serving/{pods['torchserve'].name}",
    ]
    assert "released by carol: replicas rebuilt" in lines[0] and lines[1] == "ml-serving/ghost: not found"
    assert captured.err == "1 of 3 pods not released\n"
    assert not quarantined(running, pods["vllm"]) and not quarantined(running, pods["torchserve"])
    assert release_actions(config) == ["carol", "carol", "carol"]  # the pod not found is recorded too


def test_release_checks_every_name_before_touching_the_cluster(
    tmp_path: Path, seeded: Seeded, capsys: pytest.CaptureFixture[str]
) -> None:
    running, pods, _ = seeded
    config = quarantine_vllm(tmp_path, seeded, capsys)
    argv = ["release", "-n", "ml-serving", pods["vllm"].name, "Bad_Name", "--reason", "x", "--by", "carol"]
    assert main([*argv, "--config", str(config)]) == 2
    assert "pod: 'Bad_Name' is not a Kubernetes object name" in capsys.readouterr().err
    assert quarantined(running, pods["vllm"])


def quarantined(running: RunningCluster, pod: SeededPod) -> bool:
    stored = running.call(running.emulator.get_object, "v1/pods", pod.namespace, pod.name)
    return LABEL in (stored["metadata"].get("labels") or {})


def quarantine_vllm(tmp_path: Path, seeded: Seeded, capsys: pytest.CaptureFixture[str]) -> Path:
    running, pods, kubeconfig = seeded
    config = write_config(tmp_path, kubeconfig)
    source = tmp_path / "alerts.jsonl"
    source.write_text(
        falco_bytes(falco_alert(pods["vllm"], SHELL_RULE, "Notice", "x", {"proc.name": "sh"})).decode()
    )
    assert main(["ingest", str(source), "--config", str(config), "--settle-seconds", "0"]) == 0
    assert quarantined(running, pods["vllm"])
    capsys.readouterr()
    return config


def release_actions(config: Path) -> list[str]:
    import sqlite3

    from responder.config import load_config

    with sqlite3.connect(load_config(str(config)).journal.path) as conn:
        return [row[0] for row in conn.execute("SELECT actor FROM actions WHERE action = 'release'")]


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        (["--by", "\udcff"], "--by: not UTF-8 text at character 1 (byte 0xff)"),  # argv b"\xff"
        (["--by", "car\udce9ol"], "--by: not UTF-8 text at character 4 (byte 0xe9)"),
        (["--by", " "], "--by: must not be empty"),
        (["--reason", ""], "--reason: must not be empty"),
        (["--reason", " \t"], "--reason: must not be empty"),
        (["--reason", "ok\udcc3"], "--reason: not UTF-8 text at character 3 (byte 0xc3)"),
    ],
)
def test_release_refuses_text_it_cannot_record_before_touching_the_cluster(
    tmp_path: Path, seeded: Seeded, capsys: pytest.CaptureFixture[str], flags: list[str], expected: str
) -> None:
    running, pods, _ = seeded
    config = quarantine_vllm(tmp_path, seeded, capsys)
    argv = ["release", "-n", "ml-serving", pods["vllm"].name, "--reason", "benign", "--by", "carol"]
    assert main([*argv, *flags, "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert f"serving-guard: error: {expected}\n" in err and "Traceback" not in err
    assert quarantined(running, pods["vllm"]), "refused, yet the cluster was changed"
    assert release_actions(config) == []


def test_release_refuses_a_default_by_that_is_not_utf8(
    tmp_path: Path, seeded: Seeded, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    running, pods, _ = seeded
    config = quarantine_vllm(tmp_path, seeded, capsys)
    monkeypatch.setattr("getpass.getuser", lambda: "\udcfe")  # USER=$'\xfe'
    assert (
        main(["release", "-n", "ml-serving", pods["vllm"].name, "--reason", "x", "--config", str(config)])
        == 2
    )
    err = capsys.readouterr().err
    assert "error: the default --by (USER@host; set --by): not UTF-8 text at character 1 (byte 0xfe)" in err
    assert quarantined(running, pods["vllm"])


def test_release_opens_the_journal_first_and_changes_nothing_when_it_cannot(
    tmp_path: Path, seeded: Seeded, capsys: pytest.CaptureFixture[str]
) -> None:
    running, pods, _ = seeded
    config = quarantine_vllm(tmp_path, seeded, capsys)
    for leftover in tmp_path.glob("journal.db-*"):  # its -wal and -shm
        leftover.unlink()
    (tmp_path / "journal.db").write_bytes(b"not a journal any more" * 100)
    argv = ["release", "-n", "ml-serving", pods["vllm"].name, "--reason", "x", "--by", "carol"]
    assert main([*argv, "--config", str(config)]) == 2
    captured = capsys.readouterr()
    assert f"error: journal {tmp_path / 'journal.db'}: cannot open: file is not a database" in captured.err
    assert "released" not in captured.out and "Traceback" not in captured.err
    assert quarantined(running, pods["vllm"]), "the journal cannot record it, yet the pod was released"


def test_a_release_the_journal_then_fails_to_record_says_it_was_done(
    tmp_path: Path, seeded: Seeded, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import sqlite3

    from responder.journal.store import Journal

    running, pods, _ = seeded
    config = quarantine_vllm(tmp_path, seeded, capsys)

    def disk_full(self: Journal, op: object) -> None:
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(Journal, "run_sync", disk_full)
    argv = ["release", "-n", "ml-serving", pods["vllm"].name, "--reason", "x", "--by", "carol"]
    assert main([*argv, "--config", str(config)]) == 2
    captured = capsys.readouterr()
    assert f"ml-serving/{pods['vllm'].name}: released by carol: x" in captured.out
    assert (
        f"error: journal {tmp_path / 'journal.db'}: the release above is done in the cluster,"
        " but recording it failed: database or disk is full"
    ) in captured.err
    assert not quarantined(running, pods["vllm"])


def test_unknown_command_and_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["frobnicate"]) == 2
    assert "unknown command" in capsys.readouterr().err
    assert main([]) == 0
    assert "config check" in capsys.readouterr().out


def test_the_documented_example_config_is_valid(capsys: pytest.CaptureFixture[str]) -> None:
    example = Path(__file__).parents[2] / "responder" / "config.example.yaml"
    assert main(["config", "check", str(example)]) == 0
    assert "1. isolate-compromise" in capsys.readouterr().out
    from responder.config import Config, load_config

    # Every top-level section of the config model is documented in the example.
    documented = yaml.safe_load(example.read_text())
    assert set(documented) == set(Config.model_fields)
    assert load_config(str(example)).inputs.http.tls is not None


def test_serve_refuses_unreadable_certificates_with_a_clear_error(
    tmp_path: Path, seeded: Seeded, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = str(tmp_path / "missing.crt")
    config = write_config(
        tmp_path,
        seeded[2],
        inputs={
            "http": {
                "listen": "127.0.0.1:0",
                "tls": {"cert_file": missing, "key_file": missing, "client_ca_file": missing},
            }
        },
    )
    assert main(["serve", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert "inputs.http.tls: cannot load certificates" in err and "Traceback" not in err


@pytest.mark.parametrize("event_loop", ["uvloop", "asyncio"])
def test_serve_runs_until_sigterm(tmp_path: Path, seeded: Seeded, event_loop: str) -> None:
    import signal
    import subprocess
    import sys

    from bench.procs import free_port

    port = free_port()
    server = {"metrics_listen": f"127.0.0.1:{port}", "event_loop": event_loop}
    inputs = {"http": {"listen": "127.0.0.1:0", "allow_unauthenticated": True}}
    config = write_config(tmp_path, seeded[2], server=server, inputs=inputs, logging={"level": "info"})
    process = subprocess.Popen(
        [sys.executable, "-m", "responder", "serve", "--config", str(config)], stderr=subprocess.PIPE
    )
    try:
        wait_until_ready(port, process)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=20) == 0
        assert process.stderr is not None
        lines = process.stderr.read().decode().splitlines()
        starting = [line for line in lines if "starting" in line]
        assert starting and f'"event_loop": "{event_loop}"' in starting[0], starting
        tuned = [json.loads(line) for line in lines if "garbage collector tuned" in line]
        assert tuned and tuned[0]["frozen_objects"] > 10_000, tuned
        assert tuned[0]["thresholds"][0] == YOUNG_GENERATION_THRESHOLD
        # A clean stop is logged, from the signal to its end: not to be taken for a SIGKILL.
        stopping = [json.loads(line) for line in lines if "responder stopping" in line]
        assert [entry["signal"] for entry in stopping] == ["SIGTERM"]
        assert json.loads(lines[-1])["msg"] == "responder stopped"
    finally:
        if process.poll() is None:
            process.kill()
        assert process.stderr is not None
        process.stderr.close()


def test_serve_on_uvloop_where_it_is_missing_is_a_clear_error(
    tmp_path: Path, seeded: Seeded, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import sys

    monkeypatch.setitem(
        sys.modules, "uvloop", None
    )  # an import of it now fails, as where it is not installed
    inputs = {"http": {"listen": "127.0.0.1:0", "allow_unauthenticated": True}}
    config = write_config(tmp_path, seeded[2], inputs=inputs)
    assert main(["serve", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert "server.event_loop: uvloop is not installed" in err and "Traceback" not in err


def test_audit_of_a_file_that_is_not_a_journal_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bogus = tmp_path / "notes.db"
    bogus.write_text("just text, not SQLite" * 50)
    assert main(["audit", "--journal", str(bogus)]) == 2
    err = capsys.readouterr().err
    assert "not a readable Serving Guard journal" in err and "Traceback" not in err


def test_release_refuses_names_that_are_not_object_names(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["release", "--namespace", "ml-serving", "..", "--reason", "x", "--kubeconfig", "nope"]) == 2
    assert "not a Kubernetes object name" in capsys.readouterr().err


def test_the_audit_table_never_passes_terminal_control_characters() -> None:
    from responder.audit.text import format_table

    entry = {
        "received": "2026-01-01T00:00:00.000000000Z",
        "rule": "Shell\x1b[2J\rfake line",
        "namespace": "ml",
        "pod": "p\x1b]0;title\x07",
        "outcome": "opened",
        "incident": {},
    }
    table = format_table([entry])
    assert "\x1b" not in table and "\r" not in table and "\x07" not in table
    assert "\\x1b" in table


def test_serve_refuses_a_config_with_no_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """It would run, healthy, and never receive an alert (a file without `inputs:` has HTTP off)."""
    path = write_config(tmp_path, "kc")
    assert main(["serve", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"{path}: no input is enabled: configure inputs.http" in err and "Traceback" not in err
    assert not (tmp_path / "journal.db").exists()  # refused before anything was opened


async def test_a_token_over_plain_http_is_warned_of(tmp_path: Path, seeded: Seeded) -> None:
    token = tmp_path / "token"
    token.write_text("s3cret-token-value")
    http = {"listen": "127.0.0.1:0", "token": {"file": str(token)}}
    config = responder_config(tmp_path, seeded[2], http=http, extra={"inputs": {"http": http}})
    responder = Responder(config, KubeGateway.from_config(config.cluster))
    with Records("serving_guard.http", logging.WARNING) as records:
        await responder.start()
        await responder.stop()
    assert any(m.startswith("inputs.http.token is accepted over plain HTTP") for m in records.messages)


def test_config_check_notes_the_secrets_and_files_it_cannot_read_here(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`ok` would be read as "serve will start"; the files may exist only in the pod, so notes only."""
    monkeypatch.delenv("SG_UNSET_TOKEN", raising=False)
    path = tmp_path / "secrets.yaml"
    path.write_text(
        "inputs:\n  http:\n    token: {file: /nonexistent/token}\n"
        "    tls: {cert_file: /nonexistent/tls.crt, key_file: /nonexistent/tls.key}\n"
        "slack:\n  mode: bot\n  default_channel: '#sec'\n  token: {env: SG_UNSET_TOKEN}\n"
    )
    assert main(["config", "check", str(path)]) == 0
    captured = capsys.readouterr()
    assert captured.out.startswith(f"{path}: ok")
    notes = [line for line in captured.err.splitlines() if line.startswith("note: ")]
    assert [note.split(":")[1].strip() for note in notes] == [
        "inputs.http.token",
        "slack.token",
        "inputs.http.tls.cert_file",
        "inputs.http.tls.key_file",
    ]
    assert all(note.endswith("unless it is there where the responder runs)") for note in notes)
    assert main(["config", "check", str(write_config(tmp_path, "kc"))]) == 0
    assert "note:" not in without_unchecked_names_note(capsys.readouterr().err)


def test_config_check_says_when_a_withheld_isolation_is_tried_again(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_config(tmp_path, "kc")
    assert main(["config", "check", str(path)]) == 0
    assert (
        "an isolation withheld for a passing reason (API outage, breaker, failed call) is tried again"
        " after 10, 20, 40, 80, 120 s in turn, and by a repeat"
    ) in capsys.readouterr().out
    for waits, said in (("[2.5, 30]", "after 2.5, 30 s in turn"), ("[]", "by a repeat only")):
        path.write_text(f"dedupe: {{retry_withheld_seconds: {waits}}}\n")
        assert main(["config", "check", str(path)]) == 0
        assert f"is tried again {said}" in capsys.readouterr().out
    path.write_text("dedupe: {window_seconds: 60}\n")
    assert main(["config", "check", str(path)]) == 0
    assert (
        "warning: dedupe.retry_withheld_seconds: 3 of its tries would come after dedupe.window_seconds"
        " (60 s), at 70, 150, 270 s, and never run; shorten the waits or lengthen the window"
    ) in capsys.readouterr().err
    path.write_text("dedupe: {retry_withheld_seconds: [10, 0]}\n")
    assert main(["config", "check", str(path)]) == 2
    assert (
        f"{path}:1: dedupe.retry_withheld_seconds[1]: must be more than 0.0, not 0" in capsys.readouterr().err
    )
