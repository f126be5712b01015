"""`serving-guard config check` says what the config means where it runs: a config `serve` refuses
(no input) is said to be one, with the reason serve gives; the Slack mode is shown, and no channel
is promised where none is used; `--rules` given before the config is a clear error."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from responder.cli import main
from responder.rulespack.paths import default_pack
from tests.helpers import SHELL_RULE, without_unchecked_names_note

# Makes a test's tokens long enough not to be warned of as guessable (TokenSource.short).
PAD = "-7f3a9c1e5b2d8f4a6c0e9b7d"
HTTP = {"http": {"listen": "127.0.0.1:0", "allow_unauthenticated": True}}
# What config check says of HTTP (serve says it at every start): a warning, not a finding.
OPEN_INPUT = (
    "warning: inputs.http.allow_unauthenticated is true: anyone who can reach 127.0.0.1:0 can send alerts and"
    " have pods quarantined; make sure only Falco can reach the port, or authenticate senders"
    " (tls.client_ca_file, token)\n"
)
NO_INPUT = (
    "no input is enabled: configure inputs.http (Falco's http_output, the Falcosidekick webhook)"
    " or inputs.grpc (Falco <= 0.43)"
)


def write(tmp_path: Path, name: str, document: dict[str, Any] | str) -> Path:
    path = tmp_path / name
    path.write_text(document if isinstance(document, str) else yaml.safe_dump(document, sort_keys=False))
    return path


def check(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["config", "check", *argv])
    captured = capsys.readouterr()
    return code, captured.out, without_unchecked_names_note(captured.err)


@pytest.mark.parametrize(
    "text", ["inputs: {}\n", "", "logging: {level: error}\n"], ids=["no-inputs", "empty", "other"]
)
def test_a_config_serve_refuses_is_said_to_be_valid_for_ingest_only(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str
) -> None:
    path = write(tmp_path, "ingest-only.yaml", text)
    code, out, _ = check(capsys, str(path))
    # Valid: `ingest` runs on it, so exit 0; the first line says serve does not, and why.
    assert code == 0
    assert (
        out.splitlines()[0] == f"{path}: valid for `serving-guard ingest` only; serve refuses it: {NO_INPUT}"
    )
    code, out, _ = check(capsys, str(path), "--format", "json")
    assert code == 0 and json.loads(out)["serve_refuses"] == NO_INPUT
    # serve refuses it with the same reason.
    assert main(["serve", "--config", str(path)]) == 2
    assert (
        f"serving-guard: error: {path}: {NO_INPUT}; `serving-guard ingest` reads" in capsys.readouterr().err
    )


def test_a_config_serve_runs_on_is_ok(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, "served.yaml", {"inputs": HTTP})
    code, out, err = check(capsys, str(path))
    assert code == 0 and out.splitlines()[0] == f"{path}: ok" and err == OPEN_INPUT
    code, out, _ = check(capsys, str(path), "--format", "json")
    assert json.loads(out)["serve_refuses"] is None


def _policies(**own_slack: str) -> list[dict[str, Any]]:
    shells: dict[str, Any] = {"name": "shells", "match": {"rules": [SHELL_RULE]}, "actions": ["notify"]}
    if own_slack:
        shells["slack"] = own_slack
    return [shells, {"name": "other", "actions": ["notify"]}]


def test_with_slack_disabled_no_channel_is_promised(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    document = {
        "inputs": HTTP,
        "policies": _policies(channel="#sec-oncall"),
        "slack": {"default_channel": "#sec"},
    }
    path = write(tmp_path, "disabled.yaml", document)
    code, out, err = check(capsys, str(path))
    assert code == 0 and err == OPEN_INPUT
    assert "#sec" not in out
    assert out.count("; Slack channel: none (slack.mode is disabled)") == 2
    assert (
        "slack: disabled: nothing is posted and no channel is used; the journal (serving-guard audit) is the"
        " only record"
    ) in out.splitlines()
    code, out, _ = check(capsys, str(path), "--format", "json")
    effective = json.loads(out)
    assert [p["slack_channel"] for p in effective["policies"]] == [None, None]
    assert effective["slack"] == {"mode": "disabled", "default_channel": None, "min_priority": "Warning"}


def test_in_webhook_mode_a_policy_channel_is_said_to_have_no_effect(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    hook = write(tmp_path, "hook", "https://hooks.slack.invalid/x")
    slack = {"mode": "webhook", "webhook_url": {"file": str(hook)}, "default_channel": "#sec"}
    path = write(
        tmp_path,
        "webhook.yaml",
        {"inputs": HTTP, "policies": _policies(channel="#sec-oncall"), "slack": slack},
    )
    code, out, err = check(capsys, str(path))
    assert code == 0  # a note, not a finding
    assert "#sec" not in out
    assert out.count("; Slack channel: the webhook's own") == 2
    assert (
        "slack: webhook, posting to the webhook's own channel (slack.default_channel and the policies'"
        " slack.channel are not used), from priority Warning"
    ) in out.splitlines()
    channel_line = path.read_text().splitlines().index("    channel: '#sec-oncall'") + 1
    assert err.splitlines() == [
        OPEN_INPUT.rstrip("\n"),
        f"note: {path}:{channel_line}: policies[0].slack.channel: '#sec-oncall' has no effect: slack.mode"
        " is webhook, which posts to the webhook's own channel",
    ]
    code, out, _ = check(capsys, str(path), "--format", "json")
    assert [p["slack_channel"] for p in json.loads(out)["policies"]] == [None, None]


def test_in_bot_mode_each_policy_names_where_it_posts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    token = write(tmp_path, "token", "xoxb-test")
    slack = {"mode": "bot", "token": {"file": str(token)}, "default_channel": "#sec", "min_priority": "error"}
    path = write(
        tmp_path, "bot.yaml", {"inputs": HTTP, "policies": _policies(channel="#sec-oncall"), "slack": slack}
    )
    code, out, err = check(capsys, str(path))
    assert code == 0 and err == OPEN_INPUT
    lines = out.splitlines()
    assert lines[2].endswith("; Slack channel #sec-oncall") and lines[4].endswith("; Slack channel #sec")
    assert "slack: bot, posting to #sec unless a policy names its channel, from priority Error" in lines


def test_rules_files_before_the_config_are_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write(tmp_path, "config.yaml", {"inputs": HTTP})
    pack = str(default_pack())
    code, out, err = check(capsys, "--rules", pack, str(config))
    assert code == 2 and out == ""
    assert err == (
        f"serving-guard: error: no config file: --rules took every file after it, {config} too; put the"
        " config file first: serving-guard config check CONFIG --rules RULES_FILE...\n"
    )
    code, _, err = check(capsys)
    assert code == 2 and "no config file: serving-guard config check CONFIG" in err
    # Put first, it is read as the config.
    assert check(capsys, str(config), "--rules", pack)[0] == 0


def test_help_describes_format_rules_and_the_exit_status(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["config", "check", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "usage: serving-guard config check FILE" in text
    assert "--format {text,json} text: the effective policy in words (default); json:" in text
    assert "Give the config file first: --rules takes every file after it" in text
    assert "exit status: 0 valid (also when only `ingest` can use it" in text
    assert "1 valid, with findings (stderr, file:line); 2 invalid" in text


def test_it_says_whether_the_audit_trail_is_served_and_to_whom(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without inputs.http.audit_token GET /v1/audit answers 403 (a sender's credential never reads
    the trail): said where the config is checked, not first met as a refusal."""
    path = write(tmp_path, "no-readers.yaml", {"inputs": HTTP})
    code, out, _ = check(capsys, str(path))
    assert code == 0
    assert (
        "audit trail: not served over HTTP (GET /v1/audit answers 403: inputs.http.audit_token is not set,"
        " and an alert sender's credential never reads it); serving-guard audit --config reads the journal"
    ) in out.splitlines()
    code, out, _ = check(capsys, str(path), "--format", "json")
    assert json.loads(out)["inputs"]["audit_over_http"] is False
    token = write(tmp_path, "audit-token", "readers")
    http = {"http": {**HTTP["http"], "audit_token": {"file": str(token)}}}
    path = write(tmp_path, "readers.yaml", {"inputs": http})
    code, out, _ = check(capsys, str(path))
    assert (
        "audit trail: GET /v1/audit, read with inputs.http.audit_token (never a sender's credential)"
    ) in out.splitlines()
    code, out, _ = check(capsys, str(path), "--format", "json")
    assert json.loads(out)["inputs"]["audit_over_http"] is True


def test_an_audit_token_that_is_a_senders_token_is_refused_as_serve_refuses_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The chart can mount one Secret's key as both tokens, under two paths: `config check` said ok
    and `serve` refused to start. Where both files can be read, check says what serve would."""
    senders = write(tmp_path, "token", f"rotating-new{PAD}\nshared-one{PAD}\n")
    readers = write(tmp_path, "audit-token", f"shared-one{PAD}\n")
    http = {
        "http": {
            "listen": "127.0.0.1:0",
            "token": {"file": str(senders)},
            "audit_token": {"file": str(readers)},
        }
    }
    path = write(tmp_path, "shared.yaml", {"inputs": http})
    code, _, err = check(capsys, str(path))
    assert code == 1
    assert (
        f"{path}:6: inputs.http.audit_token: is the same as inputs.http.token (or holds one of its"
        " tokens): every alert sender could read the audit trail; give its readers a token of their own"
    ) in err.splitlines()
    readers.write_text(f"readers-own{PAD}\n")
    code, out, err = check(capsys, str(path))
    assert (code, out.splitlines()[0], err) == (0, f"{path}: ok", "")
    # Unreadable here: a note, as any secret (it may exist only where the responder runs).
    readers.unlink()
    code, _, err = check(capsys, str(path))
    assert code == 0 and "note: inputs.http.audit_token" in err


def test_an_audit_token_naming_the_senders_secret_is_an_error_in_the_config(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for source in ({"file": "/run/secrets/token"}, {"env": "SG_TOKEN"}):
        http = {"http": {"listen": "127.0.0.1:0", "token": source, "audit_token": dict(source)}}
        path = write(tmp_path, "same.yaml", {"inputs": http})
        code, _, err = check(capsys, str(path))
        assert code == 2
        assert f"{path}:2: inputs.http: audit_token names the same secret as token" in err, err


def test_a_senders_token_falcosidekick_cannot_carry_is_warned_of(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Falcosidekick splits its custom headers on ',' and ':' and drops one that does not split in
    two: with such a token its posts carry none, and the responder refuses them (401) unseen."""
    senders = write(tmp_path, "token", f"old-token{PAD}\nnew:token{PAD}\n")  # a rotation's second line
    http = {"http": {"listen": "127.0.0.1:0", "token": {"file": str(senders)}}}
    path = write(tmp_path, "colon.yaml", {"inputs": http})
    code, _, err = check(capsys, str(path))
    assert code == 0
    assert (
        "warning: inputs.http.token: a token holds ',' or ':', which Falcosidekick's webhook customheaders"
        " cannot carry (it splits headers on both and drops the Authorization header): its posts would be"
        " refused (401); use a token without them (`openssl rand -hex 32`)"
    ) in err.splitlines()
    senders.write_text("0123456789abcdef0123456789abcdef\n")
    code, _, err = check(capsys, str(path))
    assert (code, err) == (0, "")
