"""Config values the responder cannot use are refused by `config check` naming file:line and key:
a journal SQLite would not keep, numbers that are not numbers, ports that are not digits, and
secrets that are not text (naming the key and the file or variable)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from responder.cli import main
from responder.config import DEFAULT_PROTECTED, Isolation, SecretRef, load_config_text
from responder.errors import UserError
from simulators.cluster_emulator import RunningCluster
from simulators.seed import SeededPod

Seeded = tuple[RunningCluster, dict[str, SeededPod], str]


def check(tmp_path: Path, text: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, Path]:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    code = main(["config", "check", str(path)])
    return code, capsys.readouterr().err, path


@pytest.mark.parametrize(
    ("value", "shown"),
    [('""', "''"), ('":memory:"', "':memory:'"), ('"   "', "''")],
)
def test_a_journal_path_sqlite_would_not_keep_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], value: str, shown: str
) -> None:
    code, err, path = check(tmp_path, f"logging: {{level: error}}\njournal:\n  path: {value}\n", capsys)
    assert code == 2
    assert (
        f"{path}:3: journal.path: must be the path of a file, got {shown} (SQLite would keep nothing)" in err
    )


def test_a_journal_path_with_a_nul_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, err, path = check(tmp_path, 'journal:\n  path: "/var/lib/j\\0.db"\n', capsys)
    assert code == 2 and f"{path}:2: journal.path: must not contain a NUL character" in err


URI = "must be a file path, not an SQLite URI ('file:...')"
READ_ONLY_URI = (
    "SQLite would read the path as a URI when the journal is opened read-only (serving-guard audit)"
)


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ('"file::memory:"', URI),
        ('"file:/var/lib/sg/journal.db"', URI),
        ('"file:journal.db?mode=memory"', URI),
        ('"/var/lib/sg/a?b.db"', f"must not contain '?': {READ_ONLY_URI}"),
        ('"/var/lib/sg/a#b.db"', f"must not contain '#': {READ_ONLY_URI}"),
        ('"/var/lib/sg/100%41.db"', f"must not contain '%': {READ_ONLY_URI}"),
        ('"/var/lib/sg/a%?#.db"', f"must not contain '#' or '%' or '?': {READ_ONLY_URI}"),
    ],
    ids=["memory-uri", "file-uri", "uri-with-query", "query", "fragment", "escape", "all-three"],
)
def test_a_journal_path_sqlite_would_misread_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], value: str, reason: str
) -> None:
    code, err, path = check(tmp_path, f"logging: {{level: error}}\njournal:\n  path: {value}\n", capsys)
    assert code == 2
    assert err == f"serving-guard: error: invalid config:\n  {path}:3: journal.path: {reason}\n"


@pytest.mark.parametrize("value", ["FILE:journal.db", "/var/lib/sg/file:journal.db", "./file:x.db"])
def test_a_journal_path_that_only_looks_like_a_uri_loads(value: str) -> None:
    # SQLite takes a name as a URI only when it starts with "file:" (lower case), as the writer opens it.
    assert load_config_text(f'journal: {{path: "{value}"}}\n').journal.path == value


SLACK_BOT = "slack:\n  mode: bot\n  default_channel: '#sec'\n"
OPEN_HTTP = "inputs:\n  http:\n    allow_unauthenticated: true\n"


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        (SLACK_BOT + '  token: {env: ""}\n', "slack.token.env: must name an environment variable"),
        (SLACK_BOT + '  token: {env: "  "}\n', "slack.token.env: must name an environment variable"),
        (SLACK_BOT + '  token: {env: "A=B"}\n', "slack.token.env: must name an environment variable"),
        (SLACK_BOT + '  token: {file: ""}\n', "slack.token.file: must name a file"),
        (SLACK_BOT + '  token: {file: "a\\0b"}\n', "slack.token.file: must not contain a NUL character"),
        (
            "slack:\n  mode: webhook\n  webhook_url: {env: ''}\n",
            "slack.webhook_url.env: must name an environment variable",
        ),
        (OPEN_HTTP + "    token: {env: ''}\n", "inputs.http.token.env: must name an environment variable"),
        (OPEN_HTTP + "    audit_token: {file: ''}\n", "inputs.http.audit_token.file: must name a file"),
    ],
)
def test_a_secret_ref_must_name_a_variable_or_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, reason: str
) -> None:
    # Refused by config check, not first at start as "slack.token: $ is empty".
    code, err, path = check(tmp_path, text, capsys)
    assert code == 2
    assert err == f"serving-guard: error: invalid config:\n  {path}:{text.count(chr(10))}: {reason}\n"


@pytest.mark.parametrize(
    ("section", "key", "value", "reason"),
    [
        ("cluster", "workers", "true", "must be a whole number"),
        ("cluster", "workers", "'8'", "must be a whole number"),
        ("cluster", "workers", "8.5", "must be a whole number"),
        ("cluster", "cache_ttl_seconds", "false", "must be a number"),
        ("journal", "max_pending", "yes", "must be a whole number"),
        ("journal", "commit_interval_ms", "true", "must be a number"),
        ("dedupe", "window_seconds", "'300'", "must be a number"),
    ],
)
def test_numbers_must_be_numbers_not_booleans_or_strings(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], section: str, key: str, value: str, reason: str
) -> None:
    code, err, path = check(tmp_path, f"{section}:\n  {key}: {value}\n", capsys)
    assert code == 2
    assert f"{path}:2: {section}.{key}: {reason}" in err and "Traceback" not in err


def test_whole_numbers_still_fill_seconds_and_valid_numbers_load() -> None:
    config = load_config_text(
        "cluster: {workers: 8, cache_ttl_seconds: 10, request_timeout_seconds: 2.5}\n"
        "journal: {max_pending: 100, commit_interval_ms: 0, max_bytes: 1048576}\n"
        "dedupe: {window_seconds: 60}\n"
    )
    assert config.cluster.workers == 8 and config.cluster.cache_ttl_seconds == 10.0
    assert config.journal.commit_interval_ms == 0 and config.dedupe.window_seconds == 60


@pytest.mark.parametrize(
    ("text", "where", "value"),
    [
        ("server:\n  metrics_listen: {}\n", "2: server.metrics_listen", "0.0.0.0:\u00b2"),
        # An Arabic-Indic 3: int() takes it, a port does not.
        ("server:\n  metrics_listen: {}\n", "2: server.metrics_listen", "0.0.0.0:\u0663"),
        ("server:\n  metrics_listen: {}\n", "2: server.metrics_listen", "0.0.0.0:65536"),
        ("server:\n  metrics_listen: {}\n", "2: server.metrics_listen", "0.0.0.0:"),
        ("server:\n  metrics_listen: {}\n", "2: server.metrics_listen", "0.0.0.0:-1"),
        (
            "inputs:\n  http:\n    allow_unauthenticated: true\n    listen: {}\n",
            "4: inputs.http.listen",
            "127.0.0.1:http",
        ),
    ],
)
def test_a_listen_port_must_be_digits(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, where: str, value: str
) -> None:
    code, err, path = check(tmp_path, text.format(f'"{value}"'), capsys)
    assert code == 2
    assert (
        f"{path}:{where}: listen address must be HOST:PORT with a port of digits 0-65535, got {value!r}"
    ) in err
    assert "invalid literal" not in err


@pytest.mark.parametrize("listen", ["0.0.0.0:0", "127.0.0.1:65535", "[::1]:9090", ":9090", "localhost:80"])
def test_valid_listen_addresses_load(listen: str) -> None:
    assert load_config_text(f'server: {{metrics_listen: "{listen}"}}\n').server.metrics_listen == listen


def test_a_secret_file_that_is_not_utf8_names_the_key_and_file(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_bytes(b"ok-\xff-token\n")
    with pytest.raises(UserError) as caught:
        SecretRef(file=str(token)).read("inputs.http.token")
    assert str(caught.value) == f"inputs.http.token: {token} is not UTF-8 text (byte 3 is 0xff)"


def test_a_secret_variable_that_is_not_utf8_names_the_key_and_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(os.environ, "SG_TEST_TOKEN", os.fsdecode(b"ab\xff"))  # X=$'ab\xff'
    with pytest.raises(UserError) as caught:
        SecretRef(env="SG_TEST_TOKEN").read("slack.token")
    assert str(caught.value) == "slack.token: $SG_TEST_TOKEN is not UTF-8 text (byte 2 is 0xff)"
    monkeypatch.setitem(os.environ, "SG_TEST_TOKEN", " jeton-sécurité \n")
    assert SecretRef(env="SG_TEST_TOKEN").read("slack.token") == "jeton-sécurité"


@pytest.mark.parametrize("source", ["file", "env"])
def test_serve_with_a_token_that_is_not_utf8_is_a_clear_error(
    tmp_path: Path,
    seeded: Seeded,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    source: str,
) -> None:
    token = tmp_path / "token"
    token.write_bytes(b"\xff")
    monkeypatch.setitem(os.environ, "SG_TEST_TOKEN", os.fsdecode(b"\xff"))
    ref = {"file": str(token)} if source == "file" else {"env": "SG_TEST_TOKEN"}
    config = tmp_path / "config.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "inputs": {"http": {"listen": "127.0.0.1:0", "token": ref}},
                "server": {"metrics_listen": None},
                "cluster": {"kubeconfig": seeded[2]},
                "journal": {"path": str(tmp_path / "journal.db"), "writer": "thread"},
                "logging": {"level": "error"},
            }
        )
    )
    assert main(["serve", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    shown = token if source == "file" else "$SG_TEST_TOKEN"
    assert f"serving-guard: error: inputs.http.token: {shown} is not UTF-8 text (byte 0 is 0xff)\n" in err
    assert "Traceback" not in err


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("'4096'", "must be a whole number"),
        ("true", "must be a whole number"),
        ("4096.5", "must be a whole number"),
        ("15", "must be at least 16, not 15"),
        ("100001", "must be at most 100000, not 100001"),
    ],
)
def test_max_connections_must_be_a_whole_number_in_bounds(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], value: str, reason: str
) -> None:
    code, err, path = check(tmp_path, OPEN_HTTP + f"    max_connections: {value}\n", capsys)
    assert code == 2
    assert f"{path}:4: inputs.http.max_connections: {reason}" in err and "Traceback" not in err


def test_max_connections_defaults_to_4096_and_takes_its_bounds() -> None:
    assert load_config_text(OPEN_HTTP).inputs.http.max_connections == 4096
    for value in (16, 100_000):
        config = load_config_text(OPEN_HTTP + f"    max_connections: {value}\n")
        assert config.inputs.http.max_connections == value


def test_isolate_names_what_the_quarantine_cuts(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert load_config_text("quarantine:\n  isolate: egress\n").quarantine.isolate.directions == ("egress",)
    assert load_config_text("{}").quarantine.isolate.directions == ("ingress", "egress")
    code, err, path = check(tmp_path, "quarantine:\n  isolate: outbound\n", capsys)
    assert code == 2
    assert f"{path}:2: quarantine.isolate: must be one of both, egress, ingress; not 'outbound'" in err, err


def test_a_policys_cut_is_checked_and_the_names_it_needs_must_fit(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    egress = "policies:\n  - name: egress\n    actions: [quarantine]\n    isolate: egress\n"
    config = load_config_text(egress)
    assert config.policies[0].isolate is Isolation.EGRESS
    assert config.quarantine.cut(Isolation.EGRESS).network_policy == "serving-guard-quarantine-egress"
    code, err, path = check(tmp_path, egress.replace("isolate: egress", "isolate: outbound"), capsys)
    assert code == 2 and f"{path}:4: policies[0].isolate: " in err, err
    long_value = "quarantine:\n  label_value: " + "v" * 60 + "\n" + egress
    code, err, path = check(tmp_path, long_value, capsys)
    assert (
        code == 2 and f"{path}:6: policies[0].isolate: cuts egress, not quarantine.isolate (both)" in err
    ), err
    assert f"{'v' * 60 + '-egress'!r} is longer than 63 characters" in err
    # The same value is fine while every policy keeps quarantine.isolate's cut.
    assert (
        load_config_text("quarantine:\n  label_value: " + "v" * 60 + "\n").quarantine.label_value == "v" * 60
    )


@pytest.mark.parametrize(
    ("leaves_out", "needed"),
    [
        ("  patch_other_policies: true\n", "quarantine.patch_other_policies"),
        ("policies:\n  - name: block\n    actions: [notify, block_destination]\n", "block_destination"),
    ],
)
def test_blocks_and_patched_policies_need_every_cuts_label_value_to_fit(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], leaves_out: str, needed: str
) -> None:
    """They leave quarantined pods out by every cut's label value (a NotIn), whatever cut is in use:
    a value the API server refuses would fail every block and every patch, each time."""
    fits = "quarantine:\n  label_value: " + "v" * 55 + "\n"
    assert load_config_text(fits + leaves_out).quarantine.label_value == "v" * 55
    too_long = fits.replace("v" * 55, "v" * 56)
    code, err, path = check(tmp_path, too_long + leaves_out, capsys)
    assert code == 2
    assert (
        f"{path}:2: quarantine.label_value: {needed} leaves quarantined pods out by every cut's label value"
        in err
    )
    assert f"{'v' * 56 + '-ingress'!r} is longer than 63 characters: shorten quarantine.label_value" in err


def test_block_destination_settings_are_checked_where_they_are_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = (
        "logging: {level: error}\n"
        "block_destination:\n"
        "  never_block: [203.0.113.0/24, not-an-ip]\n"
        "  adress_fields: [fd.sip]\n"
        "  network_policy_prefix: Block_Me\n"
    )
    code, err, path = check(tmp_path, text, capsys)
    assert code == 2
    assert f"{path}:3: block_destination.never_block[1]: 'not-an-ip' is not an IP address or network" in err
    assert f"{path}:4: block_destination.adress_fields: unknown key" in err
    assert f"{path}:5: block_destination.network_policy_prefix:" in err
    blocking = load_config_text("block_destination: {never_block: ['2001:db8::1', 198.51.100.7/24]}\n")
    assert blocking.block_destination.never_block == ("2001:db8::1/128", "198.51.100.0/24")


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        (
            "block_destination: {label: serving-guard.io/quarantine}\n",
            "block_destination.label and quarantine.label are both 'serving-guard.io/quarantine'",
        ),
        ("default_actions: [notify, block_destination]\n", "default_actions may not block_destination"),
    ],
)
def test_a_block_that_could_lift_a_quarantine_or_act_on_every_alert_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, reason: str
) -> None:
    code, err, _ = check(tmp_path, "logging: {level: error}\n" + text, capsys)
    assert code == 2 and reason in err


def test_a_policy_without_actions_is_refused_naming_the_line() -> None:
    """It would journal every alert it matches and tell no one: silencing belongs in the rules pack."""
    text = "policies:\n  - name: catch-all\n    actions: []\n"
    with pytest.raises(UserError) as refused:
        load_config_text(text, "mute.yaml")
    assert "mute.yaml:3: policies[0].actions: actions is empty" in str(refused.value)
    assert "silence a noisy rule in the rules pack" in str(refused.value)
    # default_actions may be empty: alerts no policy matches are then journaled only.
    assert load_config_text("default_actions: []\n").default_actions == ()


@pytest.mark.parametrize(
    ("text", "said"),
    [
        (
            "guardrails:\n  protected_namespaces: kube-system\n",
            "c.yaml:2: guardrails.protected_namespaces: must be a list (e.g. [a, b]), not 'kube-system'",
        ),
        (
            'quarantine:\n  label: "Serving Guard"\n',
            "c.yaml:2: quarantine.label: 'Serving Guard': must be a Kubernetes label key:",
        ),
        (
            'policies:\n  - name: "a/b"\n',
            "c.yaml:2: policies[0].name: 'a/b': must start with a letter or digit,",
        ),
        (
            "inputs:\n  http:\n    max_connections: 15\n",
            "c.yaml:3: inputs.http.max_connections: must be at least 16, not 15",
        ),
        (
            "slack:\n  mode: bot\n  token: {env: X}\n  default_channel: #sec-alerts\n",
            "c.yaml:4: slack.default_channel: is empty: slack.mode bot needs a channel to post to; in YAML a"
            " value starting with # is a comment",
        ),
        (
            "policies:\n  - name: a\n    slack:\n      channel: #sec\n",
            "c.yaml:4: policies[0].slack.channel: is empty: in YAML a value starting with # is a comment",
        ),
        # Choices and kinds say the value the file had, as the rest do.
        ("slack:\n  mode: Bot\n", "c.yaml:2: slack.mode: must be one of disabled, bot, webhook; not 'Bot'"),
        ("slack:\n  mode:\n", "c.yaml:2: slack.mode: must be one of disabled, bot, webhook (it is empty)"),
        (
            "policies:\n  - name: a\n    actions: [notify, explode]\n",
            "c.yaml:3: policies[0].actions[1]: must be one of notify, quarantine, annotate,"
            " block_destination; not 'explode'",
        ),
        ('logging:\n  format: "a\\tb"\n', "c.yaml:2: logging.format: must be one of json, text; not 'a\\tb'"),
        (
            "slack:\n  mode: " + "B" * 200 + "\n",
            "c.yaml:2: slack.mode: must be one of disabled, bot, webhook; not '" + "B" * 76 + "...",
        ),
        ("journal:\n  path: x\n1: x\n", "c.yaml:3: (top level): keys must be text, not 1"),
        ("policies:\n  - actions: [notify]\n", "c.yaml:2: policies[0].name: required, missing"),
        ("slack: [bot]\n", "c.yaml:1: slack: must be a mapping of keys to values, not ['bot']"),
        # A value that names a sibling key is no tagged union's tag: the missing key stays under tls.
        (
            "inputs:\n  http:\n    listen: tls\n    tls: {key_file: /k}\n",
            "c.yaml:4: inputs.http.tls.cert_file: required, missing",
        ),
        ("policies:\n  - name: [a]\n", "c.yaml:2: policies[0].name: must be text, not ['a']"),
    ],
)
def test_errors_say_what_the_key_must_be_in_the_configs_terms(text: str, said: str) -> None:
    """Not the validation library's words (a "tuple", a regular expression, "Input should be"), and
    an unquoted `#channel` (a YAML comment) is named at its own line, not as a missing key at the top."""
    with pytest.raises(UserError) as refused:
        load_config_text(text, "c.yaml")
    message = str(refused.value)
    assert said in message, message
    assert "tuple" not in message and "should match pattern" not in message
    assert "Input should be" not in message and "Field required" not in message
    assert "Keys should be" not in message


def test_an_empty_value_is_said_empty_and_a_long_one_is_clipped() -> None:
    with pytest.raises(UserError) as refused:
        load_config_text("guardrails:\n  max_blocks: {count: }\n", "c.yaml")
    assert str(refused.value).endswith("guardrails.max_blocks.count: must be a whole number (it is empty)")
    with pytest.raises(UserError) as refused:
        load_config_text(f"quarantine:\n  label: '{'x' * 5000}!'\n", "c.yaml")
    assert len(str(refused.value)) < 500 and "...: must be a Kubernetes label key" in str(refused.value)


def test_an_explicit_null_default_channel_outside_bot_mode_still_loads() -> None:
    assert (
        load_config_text("slack:\n  mode: disabled\n  default_channel: null\n").slack.default_channel is None
    )


def test_problems_across_keys_are_all_said_each_at_its_own_line() -> None:
    text = (
        "policies:\n  - name: a\n  - name: b\n  - name: a\n"
        "default_actions: [notify, block_destination]\n"
        "block_destination: {label: serving-guard.io/quarantine}\n"
    )
    with pytest.raises(UserError) as refused:
        load_config_text(text, "c.yaml")
    assert str(refused.value).splitlines()[1:] == [
        "  c.yaml:4: policies[2].name: policy name 'a' is used twice (first at policies[0])",
        "  c.yaml:5: default_actions[1]: default_actions may not block_destination: name the rules in a"
        " policy",
        "  c.yaml:6: block_destination.label: block_destination.label and quarantine.label are both"
        " 'serving-guard.io/quarantine': they must differ",
    ]


TLS_FILES = "    tls:\n      cert_file: /tls/tls.crt\n      key_file: /tls/tls.key\n"


@pytest.mark.parametrize(
    ("key", "text", "instead"),
    [
        (
            "client_ca_file",
            TLS_FILES + '      client_ca_file: ""\n',
            " (or leave the key out: no mutual TLS)",
        ),
        (
            "client_ca_file",
            TLS_FILES + '      client_ca_file: "  "\n',
            " (or leave the key out: no mutual TLS)",
        ),
        ("cert_file", TLS_FILES.replace("/tls/tls.crt", "''") + "      client_ca_file: /tls/ca.crt\n", ""),
    ],
)
def test_an_empty_certificate_path_is_refused_at_its_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], key: str, text: str, instead: str
) -> None:
    """It passed, then failed at start with "cannot read client_ca_file : Is a directory"."""
    code, err, path = check(tmp_path, "inputs:\n  http:\n" + text, capsys)
    line = 4 if key == "cert_file" else 6
    assert code == 2
    assert f"{path}:{line}: inputs.http.tls.{key}: is empty: give the path of a PEM file{instead}" in err


def test_allow_unauthenticated_beside_a_client_ca_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The certificate would look required and prove nothing: refused, not warned of."""
    text = (
        "inputs:\n  http:\n    allow_unauthenticated: true\n"
        + TLS_FILES
        + "      client_ca_file: /tls/ca.crt\n"
    )
    code, err, path = check(tmp_path, text, capsys)
    assert code == 2
    assert (
        f"{path}:2: inputs.http: allow_unauthenticated: true with tls.client_ca_file: a request without a "
        "client certificate would be accepted, so the certificate would prove nothing (only a certificate of "
        "another CA would be refused); remove one of the two"
    ) in err


def test_the_connections_one_address_may_hold_are_bounded_and_512_by_default() -> None:
    assert load_config_text(OPEN_HTTP).inputs.http.max_connections_per_peer == 512
    config = load_config_text(OPEN_HTTP + "    max_connections_per_peer: 2048\n")
    assert config.inputs.http.max_connections_per_peer == 2048
    with pytest.raises(
        UserError, match=r"c.yaml:4: inputs.http.max_connections_per_peer: must be at least 1"
    ):
        load_config_text(OPEN_HTTP + "    max_connections_per_peer: 0\n", "c.yaml")


# --- namespace names: a name Kubernetes would not give a namespace matches nothing, silently -------


@pytest.mark.parametrize(
    ("text", "said"),
    [
        (
            "guardrails:\n  protected_namespaces:\n    - kube-system\n    - Kube-System\n",
            "c.yaml:4: guardrails.protected_namespaces[1]: 'Kube-System': must be a Kubernetes namespace"
            " name: up to 63 lower-case letters, digits or '-', starting and ending with a letter or digit"
            " (namespace names are lower-case: 'kube-system')",
        ),
        (
            "guardrails:\n  protected_namespaces: [kube.system]\n",
            "c.yaml:2: guardrails.protected_namespaces[0]: 'kube.system': must be a Kubernetes"
            " namespace name",
        ),
        (
            f"guardrails:\n  protected_namespaces: [{'a' * 64}]\n",
            "c.yaml:2: guardrails.protected_namespaces[0]: 'aaaa",
        ),
        (
            "guardrails:\n  protected_namespaces: ['-models']\n",
            "c.yaml:2: guardrails.protected_namespaces[0]: '-models': must be a Kubernetes namespace name",
        ),
        (
            "policies:\n  - name: p\n    match:\n      namespaces: [ml-serving, Models]\n",
            "c.yaml:4: policies[0].match.namespaces[1]: 'Models': must be a Kubernetes namespace name:"
            " up to 63 lower-case letters, digits or '-', starting and ending with a letter or digit"
            " (namespace names are lower-case: 'models')",
        ),
        (
            "policies:\n  - name: p\n    match:\n      namespaces:\n        - ML-*\n",
            "c.yaml:5: policies[0].match.namespaces[0]: 'ML-*': must be a Kubernetes namespace name or a"
            " shell-style glob of them (ml-*, team-?, [ab]-models): lower-case letters, digits, '-' and the"
            " glob's * ? [ ] ! (namespace names are lower-case: 'ml-*')",
        ),
        (
            "policies:\n  - name: p\n    match:\n      namespaces: ['ml serving*']\n",
            "c.yaml:4: policies[0].match.namespaces[0]: 'ml serving*': must be a Kubernetes namespace name"
            " or a shell-style glob of them",
        ),
    ],
    ids=[
        "upper-case",
        "dotted",
        "too-long",
        "leading-dash",
        "policy-upper-case",
        "glob-upper-case",
        "glob-space",
    ],
)
def test_a_namespace_that_is_no_kubernetes_namespace_name_is_refused_at_its_line(
    text: str, said: str
) -> None:
    with pytest.raises(UserError) as refused:
        load_config_text(text, "c.yaml")
    message = str(refused.value)
    assert said in message, message
    assert "Traceback" not in message and "should match pattern" not in message


def test_namespace_names_and_the_globs_policies_match_with_are_taken() -> None:
    names = ["kube-system", "a", "0", "ml-serving", "a" * 63]
    globs = ["ml-*", "team-?", "[ab]-models", "[!x]-serving", "*", "*-prod"]
    text = yaml.safe_dump(
        {
            "guardrails": {"protected_namespaces": names},
            "policies": [{"name": "p", "match": {"namespaces": names + globs}, "actions": ["notify"]}],
        }
    )
    config = load_config_text(text, "c.yaml")
    assert list(config.guardrails.protected_namespaces) == names
    assert list(config.policies[0].match.namespaces) == names + globs
    # A glob is for policies only: a protected namespace is compared as it is.
    with pytest.raises(
        UserError, match=r"protected_namespaces\[0\]: 'ml-\*': must be a Kubernetes namespace"
    ):
        load_config_text("guardrails:\n  protected_namespaces: [ml-*]\n", "c.yaml")


def test_the_example_config_and_the_defaults_hold_namespace_names() -> None:
    example = Path(__file__).parents[2] / "responder" / "config.example.yaml"
    config = load_config_text(example.read_text(encoding="utf-8"), str(example))
    assert "kube-system" in config.guardrails.protected_namespaces
    assert load_config_text("{}").guardrails.protected_namespaces == DEFAULT_PROTECTED
