"""Inputs without an end are read only up to a bound: a YAML file (config, rules, examples, scenario)
past MAX_FILE_BYTES, a secret file past MAX_SECRET_BYTES, /dev/zero and an endless FIFO are each one
clear error naming the file (and the config key), never unbounded memory. A directory given for a
file says so. Each test has a timeout so a regression fails instead of filling memory."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from responder import yamlsource
from responder.cli import main
from responder.config import MAX_SECRET_BYTES, SecretRef
from responder.errors import SourceError, UserError
from responder.rulespack.rulesfile import read_rules_file
from responder.yamlsource import MAX_FILE_BYTES, MAX_VALUES, load_yaml, read_text, size_text

TOO_LARGE = "larger than 16 MiB: too large for {what} (the limit for YAML input)"
TOO_MANY = (
    f"invalid YAML: more than {MAX_VALUES} values (mappings, lists and scalars): far more than a config, "
    "rules, scenario or kubeconfig file holds"
)
SECRET_TOO_LARGE = "is larger than 64 KiB, far more than a token or URL"

pytestmark = pytest.mark.timeout(60)


def test_the_bounds_are_the_documented_numbers() -> None:
    assert MAX_FILE_BYTES == 16 * 1024 * 1024 and size_text(MAX_FILE_BYTES) == "16 MiB"
    assert MAX_SECRET_BYTES == 64 * 1024 and size_text(MAX_SECRET_BYTES) == "64 KiB"
    assert size_text(1000) == "1000 bytes"


@pytest.fixture
def zero(tmp_path: Path) -> Path:
    """A YAML-named symlink to /dev/zero: endless, and stat says its size is 0."""
    link = tmp_path / "zero.yaml"
    link.symlink_to("/dev/zero")
    return link


@pytest.fixture
def endless_fifo(tmp_path: Path) -> Iterator[Path]:
    """A FIFO whose writer sends YAML comments until the reader hangs up (a 'config' without end)."""
    fifo = tmp_path / "endless.yaml"
    os.mkfifo(fifo)

    def write() -> None:
        chunk = b"# a comment line that never ends the file\n" * 1024
        try:
            with open(fifo, "wb") as stream:
                while True:
                    stream.write(chunk)
        except (BrokenPipeError, OSError):
            return

    writer = threading.Thread(target=write, daemon=True)
    writer.start()
    yield fifo
    # A writer still waiting for a reader (the test did not read) is let in, then loses its
    # reader, by a reader that never blocks: a blocking open would wait forever for a writer that
    # had meanwhile ended on its own reader's close.
    os.close(os.open(fifo, os.O_RDONLY | os.O_NONBLOCK))
    writer.join(timeout=10)
    assert not writer.is_alive()


def _fifo_with(tmp_path: Path, content: bytes) -> Path:
    """A FIFO that yields ``content`` once, as `config check <(helm template ...)` would."""
    fifo = tmp_path / "once.yaml"
    os.mkfifo(fifo)

    def write() -> None:
        with open(fifo, "wb") as stream:
            stream.write(content)

    threading.Thread(target=write, daemon=True).start()
    return fifo


def test_config_check_refuses_dev_zero(zero: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config", "check", str(zero)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == f"serving-guard: error: {zero}: {TOO_LARGE.format(what='a config file')}\n"


def test_config_check_refuses_an_endless_fifo(endless_fifo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config", "check", str(endless_fifo)]) == 2
    err = capsys.readouterr().err
    assert err == f"serving-guard: error: {endless_fifo}: {TOO_LARGE.format(what='a config file')}\n"


def test_a_config_from_a_pipe_still_loads(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    fifo = _fifo_with(tmp_path, b"logging: {level: error}\n")
    assert main(["config", "check", str(fifo)]) == 0
    # Valid (no input: for `ingest` only, which the first line says).
    assert capsys.readouterr().out.startswith(
        f"{fifo}: valid for `serving-guard ingest` only; serve refuses it"
    )


def test_a_regular_file_one_byte_past_the_bound_is_refused_and_one_at_it_is_read(tmp_path: Path) -> None:
    big = tmp_path / "big.yaml"
    with open(big, "wb") as stream:
        stream.truncate(MAX_FILE_BYTES + 1)  # sparse: no disk used
    with pytest.raises(SourceError) as caught:
        read_text(str(big))
    assert str(caught.value) == f"{big}: {TOO_LARGE.format(what='a YAML file')}"
    at_bound = tmp_path / "at-bound.yaml"
    at_bound.write_bytes(b"#" * (MAX_FILE_BYTES - 1) + b"\n")
    assert len(read_text(str(at_bound))) == MAX_FILE_BYTES


def test_config_check_of_a_directory_says_so(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config", "check", str(tmp_path)]) == 2
    assert capsys.readouterr().err == f"serving-guard: error: {tmp_path}: is a directory, not a config file\n"


@pytest.mark.parametrize("kind", ["zero", "fifo", "directory"])
def test_rules_check_reports_them_as_problems(
    tmp_path: Path, zero: Path, endless_fifo: Path, capsys: pytest.CaptureFixture[str], kind: str
) -> None:
    path, message = {
        "zero": (zero, TOO_LARGE.format(what="a rules file")),
        "fifo": (endless_fifo, TOO_LARGE.format(what="a rules file")),
        "directory": (tmp_path, "is a directory, not a rules file"),
    }[kind]
    assert main(["rules", "check", "--no-falco", str(path)]) == 1
    out = capsys.readouterr().out
    assert f"\n{path}: error: {message}\n" in out
    assert "result: FAILED (1 errors, 0 warnings)" in out
    if kind != "fifo":  # the FIFO's writer is still waiting for a reader of its own
        read = read_rules_file(str(path))
        assert [problem.message for problem in read.problems] == [message]


def test_replay_refuses_a_scenario_that_has_no_end(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    scenarios = tmp_path / "scenarios"
    scenarios.mkdir()
    (scenarios / "zero.yaml").symlink_to("/dev/zero")
    out = tmp_path / "out.jsonl"
    argv = ["replay", "--file", str(out), "--forge", "--pod", "ml-serving/x-0", "--scenarios-dir"]
    assert main([*argv, str(scenarios), "all"]) == 2
    where = scenarios / "zero.yaml"
    assert (
        capsys.readouterr().err == f"serving-guard: error: {where}: {TOO_LARGE.format(what='a YAML file')}\n"
    )
    assert not out.exists()


def test_crlf_and_cr_line_breaks_still_read_as_newlines(tmp_path: Path) -> None:
    path = tmp_path / "crlf.yaml"
    path.write_bytes(b"a: 1\r\nb: 2\rc: 3\n")
    assert read_text(str(path)) == "a: 1\nb: 2\nc: 3\n"


def test_a_document_of_too_many_values_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # Two bytes a value: 16 MiB would be 8 million values, gigabytes while loading.
    path = tmp_path / "many.yaml"
    path.write_text("journal:\n  path: [" + "0," * MAX_VALUES + "0]\n", encoding="utf-8")
    assert main(["config", "check", str(path)]) == 2
    assert capsys.readouterr().err == f"serving-guard: error: {path}:2: {TOO_MANY}\n"


def test_the_value_bound_counts_every_value_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(yamlsource, "MAX_VALUES", 7)
    # The mapping, then a key and its value each: 1 + 3 * 2 = 7 values.
    assert load_yaml("a: 1\nb: 2\nc: 3\n", "ok.yaml").data == {"a": 1, "b": 2, "c": 3}
    # Aliases are bounded by MAX_ALIAS_VALUES, not counted again here.
    assert load_yaml("a: &x 1\nb: *x\nc: *x\n", "alias.yaml").data == {"a": 1, "b": 1, "c": 1}
    with pytest.raises(SourceError) as caught:
        load_yaml("a: 1\nb: 2\nc: [3]\n", "many.yaml")
    assert str(caught.value).startswith("many.yaml:3: invalid YAML: more than 7 values")


# --- secrets (token files, webhook URLs) ------------------------------------------------------


def test_a_secret_file_without_end_is_refused_naming_key_and_file(zero: Path) -> None:
    with pytest.raises(UserError) as caught:
        SecretRef(file=str(zero)).read("slack.token")
    assert str(caught.value) == f"slack.token: {zero} {SECRET_TOO_LARGE}"


def test_a_secret_file_past_the_bound_is_refused_and_one_at_it_is_read(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_bytes(b"t" * (MAX_SECRET_BYTES + 1))
    with pytest.raises(UserError) as caught:
        SecretRef(file=str(token)).read("inputs.http.token")
    assert str(caught.value) == f"inputs.http.token: {token} {SECRET_TOO_LARGE}"
    token.write_bytes(b"t" * MAX_SECRET_BYTES)
    assert SecretRef(file=str(token)).read("inputs.http.token") == "t" * MAX_SECRET_BYTES


def test_a_secret_file_that_is_a_directory_says_so(tmp_path: Path) -> None:
    with pytest.raises(UserError) as caught:
        SecretRef(file=str(tmp_path)).read("slack.webhook_url")
    assert str(caught.value) == f"slack.webhook_url: {tmp_path} is a directory, not a file"


def test_a_secret_variable_past_the_bound_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(os.environ, "SG_TEST_BIG_TOKEN", "t" * (MAX_SECRET_BYTES + 1))
    with pytest.raises(UserError) as caught:
        SecretRef(env="SG_TEST_BIG_TOKEN").read("slack.token")
    assert str(caught.value) == f"slack.token: $SG_TEST_BIG_TOKEN {SECRET_TOO_LARGE}"
