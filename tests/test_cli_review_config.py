"""Config values refused at load with file:line, where they used to load and fail (or misbehave)
only at run time."""

from __future__ import annotations

from pathlib import Path

import pytest

from responder.cli import main
from responder.config import load_config_text
from responder.errors import UserError


def check(tmp_path: Path, text: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, Path]:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    code = main(["config", "check", str(path)])
    return code, capsys.readouterr().err, path


GRPC = (
    "inputs:\n  grpc:\n    enabled: true\n    tls: {{ca_file: a, cert_file: b, key_file: c}}\n"
    "    address: {}\n"
)


@pytest.mark.parametrize(
    ("address", "problem"),
    [
        ("127.0.0.1:99999", "got a port of '99999'"),
        ("falco:0", "got a port of '0'"),
        ("", "got ''"),
        ("unix://", "names no socket"),
        ("not an address", "got 'not an address'"),
        ("bad_host!:5060", "'bad_host!' is no IP address or host name"),
        ("::1:5060", "an IPv6 address goes in brackets"),
    ],
)
def test_a_grpc_address_that_reaches_no_falco_is_refused_with_file_and_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], address: str, problem: str
) -> None:
    code, err, path = check(tmp_path, GRPC.format(f'"{address}"'), capsys)
    assert code == 2
    assert f"{path}:5: inputs.grpc.address: " in err
    assert "must be unix:///PATH or HOST:PORT (a port of 1-65535)" in err
    assert problem in err


@pytest.mark.parametrize(
    "address",
    [
        "unix:///run/falco/falco.sock",
        "unix:falco.sock",
        "falco-grpc.falco.svc:5060",
        "10.0.0.1:5060",
        "[fd00::7]:6000",
    ],
)
def test_grpc_addresses_falco_serves_on_load(address: str) -> None:
    assert load_config_text(GRPC.format(f'"{address}"')).inputs.grpc.address == address


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("ftp://slack.example/api/", "must be an https:// URL such as https://slack.com/api/, got"),
        ("slack.com/api/", "must be an https:// URL such as https://slack.com/api/, got"),
        ("http://slack.example/api/", "must be https:// (the bot token would cross the network unencrypted)"),
        ("http://10.0.0.5:8080/api/", "plain http:// only to this machine (127.0.0.1, ::1, localhost)"),
        ("https://slack.com:99999/api/", "must be an https:// URL"),
        ("https://slack.com/api", "must end with '/'"),
    ],
)
def test_a_slack_base_url_that_is_not_https_is_refused_with_file_and_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], url: str, problem: str
) -> None:
    code, err, path = check(tmp_path, f'slack:\n  mode: disabled\n  base_url: "{url}"\n', capsys)
    assert code == 2
    assert f"{path}:3: slack.base_url: " in err and problem in err


@pytest.mark.parametrize(
    "url",
    [
        "https://slack.com/api/",
        "https://proxy.example:8443/slack/api/",
        "http://127.0.0.1:9/api/",
        "http://[::1]:9/api/",
        "http://localhost:9/api/",
        "http://127.0.0.2/api/",
    ],
)
def test_https_and_loopback_http_slack_base_urls_load(url: str) -> None:
    assert load_config_text(f'slack: {{base_url: "{url}"}}\n').slack.base_url == url


BOT = "slack:\n  mode: bot\n  default_channel: '#sec'\n  token: {token}\n"
WEBHOOK = "slack:\n  mode: webhook\n  webhook_url: {token}\n"


def test_a_slack_token_variable_of_two_lines_is_refused_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SG_REVIEW_TOKEN", "xoxb-a\nb")
    config = load_config_text(BOT.format(token="{env: SG_REVIEW_TOKEN}"))
    assert config.slack.token is not None
    with pytest.raises(UserError) as refused:
        config.slack.token.read("slack.token")
    assert str(refused.value) == (
        "slack.token: $SG_REVIEW_TOKEN must hold one line without control characters (the token or URL alone)"
    )


def test_a_slack_webhook_file_of_two_lines_is_refused_naming_the_file(tmp_path: Path) -> None:
    url_file = tmp_path / "url"
    url_file.write_text("https://hooks.slack.com/services/T/B/x\nhttps://hooks.slack.com/services/T/B/y\n")
    config = load_config_text(WEBHOOK.format(token=f"{{file: {url_file}}}"))
    assert config.slack.webhook_url is not None
    with pytest.raises(UserError) as refused:
        config.slack.webhook_url.read("slack.webhook_url")
    assert f"slack.webhook_url: {url_file} must hold one line without control characters" in str(
        refused.value
    )


def test_config_check_notes_a_slack_token_of_two_lines(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SG_REVIEW_TOKEN", "xoxb-a\nb")
    _, err, _ = check(tmp_path, BOT.format(token="{env: SG_REVIEW_TOKEN}"), capsys)
    assert "note: slack.token: $SG_REVIEW_TOKEN must hold one line without control characters" in err


def test_an_http_token_file_still_holds_a_rotations_two_tokens(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("old\nnew\n")
    config = load_config_text(
        f"inputs:\n  http:\n    listen: 127.0.0.1:0\n    token: {{file: {token_file}}}\n"
    )
    assert config.inputs.http.token is not None
    assert config.inputs.http.token.read("inputs.http.token") == "old\nnew"


@pytest.mark.parametrize(
    ("text", "said"),
    [
        ("journal:\n  max_pending: true\n", ":2: journal.max_pending: must be a whole number, not true"),
        ("journal:\n  path: 2024-01-01\n", ":2: journal.path: must be text, not 2024-01-01"),
        ("journal:\n  path: !!binary /w==\n", ":2: journal.path: must be text, not !!binary /w=="),
        (
            "journal:\n  yes: 3\n",
            ":2: journal: keys must be text, not true (quote a key that is meant as text)",
        ),
        ("\ufeffjournal: {}\n", ":1: <U+FEFF byte-order mark>journal: unknown key"),
        (
            "journal:\n  !!binary cGF0aA==: x\n",
            ":2: mapping keys must be text, not !!binary cGF0aA== (quote a key that is meant as text)",
        ),
    ],
)
def test_config_errors_show_values_as_the_yaml_file_writes_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, said: str
) -> None:
    path = tmp_path / "config.yaml"
    path.write_bytes(b"\xef\xbb\xbf" + text.encode())  # the file's own byte-order mark is skipped
    assert main(["config", "check", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"{path}{said}\n" in err


@pytest.mark.parametrize(
    ("text", "said"),
    [
        (
            "inputs:\n  http: {listen: '0.0.0.0:8443', allow_unauthenticated: true}\n"
            "server:\n  metrics_listen: '127.0.0.1:8443'\n",
            ":4: server.metrics_listen: '127.0.0.1:8443' takes the port of inputs.http.listen '0.0.0.0:8443'",
        ),
        (
            "inputs:\n  http: {listen: '127.0.0.1:9090', allow_unauthenticated: true}\nserver: {}\n",
            ":3: server.metrics_listen: '0.0.0.0:9090' takes the port of inputs.http.listen '127.0.0.1:9090'",
        ),
        (
            "journal:\n  max_bytes: 100000000000000000000000000000000\n",
            ":2: journal.max_bytes: must be at most",
        ),
        (
            "journal:\n  max_bytes: 100000000000000000\n",
            ":2: journal.max_bytes: must be at most 1099511627776",
        ),
    ],
)
def test_listeners_on_one_port_and_a_journal_past_1_tib_are_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, said: str
) -> None:
    code, err, path = check(tmp_path, text, capsys)
    assert code == 2
    assert f"{path}{said}" in err


def test_listeners_on_their_own_ports_load() -> None:
    text = "inputs:\n  http: {listen: '127.0.0.1:0', allow_unauthenticated: true}\n"
    text += "server: {metrics_listen: ':0'}\n"
    assert load_config_text(text).server.metrics_listen == ":0"
    assert load_config_text("journal: {max_bytes: 1099511627776}\n").journal.max_bytes == 1024**4
