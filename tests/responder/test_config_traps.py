"""Smaller traps of the config and of `ingest`: a policy's `sources: [syscalls]` matches as an
alert's "syscalls" does; a relative journal.path is the config file's neighbour, whatever directory
a command runs in (and `config check` shows it whole); a pretty-printed alert file gets the hint
that fits it; a config file that sets nothing is warned of."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from responder.cli import main
from responder.config import load_config
from simulators.falco_json import falco_alert, falco_bytes
from tests.helpers import SHELL_RULE
from tests.responder.test_pipeline import Seeded


@pytest.mark.parametrize("alert_source", ["syscall", "syscalls"])
def test_a_policy_for_source_syscalls_matches_as_the_alerts_syscalls_does(
    tmp_path: Path, seeded: Seeded, capsys: pytest.CaptureFixture[str], alert_source: str
) -> None:
    config = tmp_path / "config.yaml"
    policy = {"name": "p-syscalls", "match": {"rules": ["*"], "sources": ["syscalls"]}, "actions": ["notify"]}
    config.write_text(yaml.safe_dump({"policies": [policy]}))
    alert = {**falco_alert(seeded[1]["vllm"], SHELL_RULE, "Warning", "shell", {}), "source": alert_source}
    alert_file = tmp_path / "alert.json"
    alert_file.write_bytes(falco_bytes(alert))
    assert main(["config", "explain", str(config), str(alert_file)]) == 0
    assert "1. p-syscalls: MATCHES" in capsys.readouterr().out.splitlines()


def test_a_relative_journal_path_is_beside_the_config_file_wherever_a_command_runs(
    tmp_path: Path, seeded: Seeded, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    here, elsewhere = tmp_path / "etc", tmp_path / "elsewhere"
    here.mkdir()
    elsewhere.mkdir()
    config = here / "config.yaml"
    config.write_text(
        yaml.safe_dump({"cluster": {"kubeconfig": seeded[2]}, "journal": {"path": "relative.db"}})
    )
    alerts = tmp_path / "alerts.jsonl"
    alerts.write_bytes(falco_bytes(falco_alert(seeded[1]["vllm"], "r", "Notice", "m", {})) + b"\n")

    monkeypatch.chdir(elsewhere)
    assert main(["ingest", str(alerts), "--config", str(config), "--settle-seconds", "0"]) == 0
    assert (here / "relative.db").is_file() and not (elsewhere / "relative.db").exists()
    capsys.readouterr()
    monkeypatch.chdir(tmp_path)  # `audit --config` from yet another directory finds the same journal
    assert main(["audit", "--config", "etc/config.yaml", "--format", "json"]) == 0
    assert len(json.loads(capsys.readouterr().out)) == 1
    assert main(["config", "check", "etc/config.yaml"]) == 0
    assert f"journal: {here / 'relative.db'}" in capsys.readouterr().out.splitlines()


def test_every_relative_file_of_a_config_is_beside_it(
    tmp_path: Path, seeded: Seeded, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not the journal alone: a kubeconfig, token or certificate named beside the config was read
    from wherever the command ran (`ingest` failed on the kubeconfig, `config check` on the token)."""
    here, elsewhere = tmp_path / "etc", tmp_path / "elsewhere"
    here.mkdir()
    elsewhere.mkdir()
    (here / "kubeconfig.json").write_text(Path(seeded[2]).read_text())
    (here / "token").write_text("senders-token\n")
    (here / "audit-token").write_text("readers-token\n")
    http = {
        "listen": "127.0.0.1:0",
        "token": {"file": "token"},
        "audit_token": {"file": "audit-token"},
        "tls": {"cert_file": "tls/server.crt", "key_file": "tls/server.key", "client_ca_file": "tls/ca.crt"},
    }
    document = {
        "cluster": {"kubeconfig": "kubeconfig.json"},
        "journal": {"path": "journal.db"},
        "inputs": {"http": http},
        "slack": {"mode": "webhook", "webhook_url": {"file": "webhook"}},
    }
    config = here / "config.yaml"
    config.write_text(yaml.safe_dump(document))
    loaded = load_config(str(config))
    assert loaded.cluster.kubeconfig == str(here / "kubeconfig.json")
    assert loaded.inputs.http.token is not None and loaded.inputs.http.token.file == str(here / "token")
    assert loaded.inputs.http.tls is not None and loaded.inputs.http.tls.client_ca_file == str(
        here / "tls/ca.crt"
    )
    assert loaded.slack.webhook_url is not None and loaded.slack.webhook_url.file == str(here / "webhook")
    # Absolute paths, secrets from the environment and the home directory are as written.
    document["cluster"] = {"kubeconfig": "~/.kube/config"}
    document["inputs"] = {"http": {**http, "token": {"env": "SG_TOKEN"}, "audit_token": {"file": "/run/a"}}}
    config.write_text(yaml.safe_dump(document))
    loaded = load_config(str(config))
    assert loaded.cluster.kubeconfig == "~/.kube/config"
    assert loaded.inputs.http.token is not None and loaded.inputs.http.token.env == "SG_TOKEN"
    assert loaded.inputs.http.audit_token is not None and loaded.inputs.http.audit_token.file == "/run/a"

    # From another directory, the commands read the files beside the config.
    document = {"cluster": {"kubeconfig": "kubeconfig.json"}, "journal": {"path": "journal.db"}}
    config.write_text(yaml.safe_dump(document))
    alerts = tmp_path / "alerts.jsonl"
    alerts.write_bytes(falco_bytes(falco_alert(seeded[1]["vllm"], "r", "Notice", "m", {})) + b"\n")
    monkeypatch.chdir(elsewhere)
    assert main(["ingest", str(alerts), "--config", str(config), "--settle-seconds", "0"]) == 0
    assert (here / "journal.db").is_file()


def test_a_pretty_printed_alert_file_is_said_to_be_one(
    tmp_path: Path, seeded: Seeded, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(
        yaml.safe_dump({"cluster": {"kubeconfig": seeded[2]}, "journal": {"path": str(tmp_path / "j.db")}})
    )
    pretty = tmp_path / "pretty.json"
    pretty.write_text(json.dumps(falco_alert(seeded[1]["vllm"], "r", "Notice", "m", {}), indent=2) + "\n")
    assert main(["ingest", str(pretty), "--config", str(config), "--settle-seconds", "0"]) == 1
    err = capsys.readouterr().err.splitlines()
    reports = [line for line in err if line.startswith(f"{pretty}:") and line[len(str(pretty)) + 1].isdigit()]
    assert len(reports) > 5 and all("this file looks pretty-printed" in line for line in reports), reports
    assert f"`jq -c . {pretty}` puts each alert on one line" in reports[0]
    assert not any("json_output" in line for line in reports)


@pytest.mark.parametrize(
    "text", ["", "# nothing yet\n", "null\n", "{}\n"], ids=["empty", "comment", "null", "{}"]
)
def test_a_config_that_sets_nothing_is_warned_of(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str
) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(text)
    assert main(["config", "check", str(config)]) == 0  # valid (for ingest): a warning, not a finding
    warnings = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning:")]
    assert warnings == [
        f"warning: {config} sets nothing: every setting is its default (no policy, the journal at"
        " /var/lib/serving-guard/journal.db); is it the file meant (a ConfigMap key mounted wrong)?"
    ]
