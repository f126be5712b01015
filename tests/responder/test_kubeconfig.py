"""A kubeconfig the client cannot use is one clear error naming the file, for every command that
reaches the cluster (serve, ingest, release all build the same gateway), never a traceback."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from responder.cli import main
from responder.cluster.api import KubeGateway
from responder.config import Cluster
from responder.errors import UserError

GOOD: dict[str, Any] = {
    "apiVersion": "v1",
    "kind": "Config",
    "current-context": "c",
    "clusters": [{"name": "k", "cluster": {"server": "http://127.0.0.1:9"}}],
    "users": [{"name": "u", "user": {"token": "t"}}],
    "contexts": [{"name": "c", "context": {"cluster": "k", "user": "u"}}],
}


def write(tmp_path: Path, content: str | bytes, name: str = "kubeconfig") -> str:
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    return str(path)


def changed(**top: Any) -> str:
    return json.dumps({**GOOD, **top})


def refusal(kubeconfig: str | None, context: str | None = None) -> str:
    with pytest.raises(UserError) as caught:
        KubeGateway.from_config(Cluster(kubeconfig=kubeconfig, context=context))
    return str(caught.value)


def test_a_good_kubeconfig_loads(tmp_path: Path) -> None:
    KubeGateway.from_config(Cluster(kubeconfig=write(tmp_path, json.dumps(GOOD)))).close()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (
            "a: [b\n  c: {",
            ":2: not a kubeconfig: invalid YAML: expected ',' or ']', but got ':'"
            " (while parsing a flow sequence that starts on line 1)",
        ),
        ("clusters: 5\n", ":1: not a kubeconfig: clusters must be a list, got the number 5"),
        ("", ": not a kubeconfig: the file is empty"),
        (
            "- 1\n- 2\n",
            ":1: not a kubeconfig: expected a mapping with clusters, contexts and users, got a list",
        ),
        (b"\xff\xfe garbage", ": not a kubeconfig: not UTF-8 text (byte 0 is 0xff)"),
        (
            "users:\n- 5\n",
            ":2: not a kubeconfig: users[0] must be a mapping with name and user, got the number 5",
        ),
        ("contexts:\n- context: {}\n", ":2: not a kubeconfig: contexts[0] needs a name (a string)"),
        (
            "clusters:\n- name: k\n  cluster: x\n",
            ":3: not a kubeconfig: clusters[0].cluster must be a mapping, got a string",
        ),
        (
            "current-context: [c]\n",
            ":1: not a kubeconfig: current-context must be a context's name, got a list",
        ),
    ],
)
def test_a_file_that_is_not_a_kubeconfig_is_named_with_its_line(
    tmp_path: Path, content: str | bytes, message: str
) -> None:
    path = write(tmp_path, content)
    assert refusal(path) == f"cluster.kubeconfig {path}{message}"


def test_a_missing_kubeconfig_names_the_file(tmp_path: Path) -> None:
    missing = str(tmp_path / "missing")
    assert refusal(missing) == f"cluster.kubeconfig: cannot read {missing}: No such file or directory"


@pytest.mark.parametrize(
    ("top", "context", "message"),
    [
        ({"current-context": None}, None, ": sets no current-context; name one with cluster.context"),
        ({}, "prod", ": cluster.context 'prod': no such context (it has: c)"),
        ({"clusters": []}, None, ": context 'c' names cluster 'k': no such cluster (it has: none)"),
        (
            {"clusters": [{"name": "k", "cluster": {}}]},
            None,
            ": cluster 'k' has no server (its API server's URL)",
        ),
        (
            {"users": [{"name": "u", "user": None}]},
            None,
            ": user 'u' has no user settings (use user: {} for none)",
        ),
    ],
)
def test_a_kubeconfig_without_a_usable_context_is_refused(
    tmp_path: Path, top: dict[str, Any], context: str | None, message: str
) -> None:
    path = write(tmp_path, changed(**top))
    assert refusal(path, context) == f"cluster.kubeconfig {path}{message}"


def test_files_and_data_the_client_reads_are_named(tmp_path: Path) -> None:
    users = [{"name": "u", "user": {"tokenFile": str(tmp_path / "no-token")}}]
    path = write(tmp_path, changed(users=users))
    assert refusal(path) == (
        f"cluster.kubeconfig {path}: cannot read {tmp_path / 'no-token'}: No such file or directory"
    )
    clusters = [
        {"name": "k", "cluster": {"server": "https://127.0.0.1:9", "certificate-authority": "ca.crt"}}
    ]
    path = write(tmp_path, changed(clusters=clusters))
    assert (
        refusal(path)
        == f"cluster.kubeconfig {path}: cannot use it: File does not exist: {tmp_path / 'ca.crt'}"
    )
    clusters[0]["cluster"] = {"server": "https://127.0.0.1:9", "certificate-authority-data": "!!!notbase64"}
    path = write(tmp_path, changed(clusters=clusters))
    assert refusal(path).startswith(
        f"cluster.kubeconfig {path}: not a kubeconfig: Invalid base64-encoded string"
    )
    path = write(tmp_path, changed(users=[{"name": "u", "user": {"auth-provider": 5}}]))
    assert refusal(path) == (
        f"cluster.kubeconfig {path}: not a kubeconfig: a value of the wrong type "
        "(argument of type 'int' is not iterable)"
    )


def test_without_a_kubeconfig_outside_a_pod_the_default_file_is_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.delenv("KUBECONFIG", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert refusal(None) == (
        "cluster.kubeconfig (unset; not in a pod, so ~/.kube/config): "
        f"cannot read {tmp_path}/.kube/config: No such file or directory"
    )
    listed = f"{tmp_path / 'a'}:{tmp_path / 'b'}"
    monkeypatch.setenv("KUBECONFIG", listed)
    assert refusal(None) == (
        "cluster.kubeconfig (unset; not in a pod, so $KUBECONFIG): "
        f"none of {tmp_path / 'a'}, {tmp_path / 'b'} exists"
    )
    # In a list, a missing file is skipped as kubectl does; a broken one is not.
    (tmp_path / "b").write_text("clusters: 5\n")
    assert refusal(None) == (
        f"cluster.kubeconfig (unset; not in a pod, so $KUBECONFIG) {tmp_path / 'b'}:1: "
        "not a kubeconfig: clusters must be a list, got the number 5"
    )
    (tmp_path / "b").write_text(json.dumps(GOOD))
    KubeGateway.from_config(Cluster()).close()


RELEASE = ["release", "--namespace", "ml", "pod", "--reason", "r"]


def config_file(tmp_path: Path, kubeconfig: str, context: str | None = None) -> str:
    cluster = {"kubeconfig": kubeconfig, **({"context": context} if context is not None else {})}
    data = {
        "cluster": cluster,
        "journal": {"path": str(tmp_path / "journal.db")},
        "server": {"metrics_listen": None, "event_loop": "asyncio"},
        # serve needs an input; it is refused before it would listen.
        "inputs": {"http": {"listen": "127.0.0.1:0", "allow_unauthenticated": True}},
        "logging": {"level": "error"},
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(data))
    return str(path)


def refused_line(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    assert main(argv) == 2, argv
    err = capsys.readouterr().err
    assert err.startswith("serving-guard: error: ") and err.count("\n") == 1, err
    return err.removeprefix("serving-guard: error: ").rstrip("\n")


@pytest.mark.parametrize("content", ["a: [b\n  c: {", "clusters: 5\n", None])
def test_every_command_refuses_a_bad_kubeconfig_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str | None
) -> None:
    """Named as the user gave it: the config's cluster.kubeconfig, or a command's --kubeconfig."""
    kubeconfig = str(tmp_path / "missing") if content is None else write(tmp_path, content)
    problem = {
        "a: [b\n  c: {": f" {kubeconfig}:2: not a kubeconfig: invalid YAML: expected ',' or ']', but got ':'"
        " (while parsing a flow sequence that starts on line 1)",
        "clusters: 5\n": f" {kubeconfig}:1: not a kubeconfig: clusters must be a list, got the number 5",
        None: f": cannot read {kubeconfig}: No such file or directory",
    }[content]
    config = config_file(tmp_path, kubeconfig)
    alerts = write(tmp_path, "", "alerts.jsonl")
    replay = ["replay", "drift-exec", "--pod", "ml/pod", "--file", str(tmp_path / "out.jsonl")]
    for argv, name in (
        (["serve", "--config", config], "cluster.kubeconfig"),
        (["ingest", alerts, "--config", config], "cluster.kubeconfig"),
        ([*RELEASE, "--config", config], "cluster.kubeconfig"),
        ([*RELEASE, "--kubeconfig", kubeconfig], "--kubeconfig"),
        ([*RELEASE, "--config", config, "--kubeconfig", kubeconfig], "--kubeconfig"),
        ([*replay, "--kubeconfig", kubeconfig], "--kubeconfig"),
    ):
        assert refused_line(argv, capsys) == f"{name}{problem}", argv


def test_release_names_the_context_where_it_came_from(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    kubeconfig = write(tmp_path, json.dumps(GOOD))
    no_such = ": no such context (it has: c)"
    flag_line = refused_line([*RELEASE, "--kubeconfig", kubeconfig, "--context", "prod"], capsys)
    assert flag_line == f"--kubeconfig {kubeconfig}: --context 'prod'{no_such}"
    # The kubeconfig from the config, the context from the flag: each is named where it came from.
    config = config_file(tmp_path, kubeconfig)
    mixed_line = refused_line([*RELEASE, "--config", config, "--context", "prod"], capsys)
    assert mixed_line == f"cluster.kubeconfig {kubeconfig}: --context 'prod'{no_such}"
    config = config_file(tmp_path, kubeconfig, context="prod")
    config_line = refused_line([*RELEASE, "--config", config], capsys)
    assert config_line == f"cluster.kubeconfig {kubeconfig}: cluster.context 'prod'{no_such}"
    unset = write(tmp_path, changed(**{"current-context": None}), "unset")
    unset_line = refused_line([*RELEASE, "--kubeconfig", unset], capsys)
    assert unset_line == f"--kubeconfig {unset}: sets no current-context; name one with --context"


def test_release_without_a_config_names_the_flags_for_the_default_kubeconfig(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without --config the flag is the only way to name a kubeconfig, so it is what a message names."""
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.delenv("KUBECONFIG", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert refused_line(RELEASE, capsys) == (
        "--kubeconfig (unset; not in a pod, so ~/.kube/config): "
        f"cannot read {tmp_path}/.kube/config: No such file or directory"
    )
    assert refused_line([*RELEASE, "--kubeconfig", ""], capsys) == "--kubeconfig: names no file"
