"""Broken and hostile YAML: every command that reads a YAML file (config, rules, examples, scenarios)
refuses it with file, line and what is wrong, never a traceback, and quickly: control characters,
nesting beyond the limit, an alias inside the node it names, a "billion laughs" file of nested
aliases, bytes that are not UTF-8. Merge keys (``<<: *anchor``) keep working as YAML defines them."""

from __future__ import annotations

import itertools
import time
from pathlib import Path

import pytest

from responder.cli import main
from responder.errors import SourceError
from responder.rulespack.sysdig import Sysdig
from responder.yamlsource import MAX_ALIAS_VALUES, MAX_DEPTH, load_yaml

CHARACTERS = "(YAML allows only printable characters, tabs and line breaks)"
NUL = f"invalid YAML: control character #x0000 at column 1 {CHARACTERS}"
TOO_DEEP = f"invalid YAML: nested too deeply (more than {MAX_DEPTH} levels)"
RECURSIVE = (
    "invalid YAML: an alias refers to itself: *a stands inside the node anchored &a (a recursive structure)"
)
LAUGHS = (
    f"invalid YAML: aliases expand to more than {MAX_ALIAS_VALUES} values (at *e): "
    "write the values out or use fewer nested aliases"
)


def _tagged(tag: str, kind: str = "mapping") -> str:
    return f"invalid YAML: tag {tag!r} on a {kind}: only plain {kind}s are read (remove the tag)"


def _billion_laughs() -> str:
    """Nine lines, about 300 bytes, that stand for 9**9 (387 million) values."""
    names = "abcdefghi"
    lines = ["a: &a [x, x, x, x, x, x, x, x, x]"]
    lines += [f"{name}: &{name} [{', '.join([f'*{prev}'] * 9)}]" for prev, name in itertools.pairwise(names)]
    return "\n".join(lines) + "\n"


def _write(tmp_path: Path, content: str | bytes, name: str = "bad.yaml") -> Path:
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return path


def _config_check(path: Path, capsys: pytest.CaptureFixture[str]) -> str:
    assert main(["config", "check", str(path)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    return captured.err


@pytest.mark.parametrize(
    ("content", "line", "message"),
    [
        (b"\x00journal: 1\n", 1, NUL),
        (
            b'journal:\n  path: "a\x07b"\n',
            2,
            f"invalid YAML: control character #x0007 at column 11 {CHARACTERS}",
        ),
        (
            b"journal:\r\n  path: \x1b\r\n",
            2,
            f"invalid YAML: control character #x001b at column 9 {CHARACTERS}",
        ),
        (
            "journal:\n  path: \u00e9\x9f\n".encode(),
            2,
            f"invalid YAML: control character #x009f at column 10 {CHARACTERS}",
        ),
        ("journal: \ufffe\n".encode(), 1, f"invalid YAML: character #xfffe at column 10 {CHARACTERS}"),
        ("journal: " + "[" * 500 + "]" * 500 + "\n", 1, TOO_DEEP),
        ("journal: &a [*a]\n", 1, RECURSIVE),
        ("journal:\n  path: x\nx: &a\n  b: [1, {c: *a}]\n", 4, RECURSIVE),
        ("x: &a {<<: *a}\n", 1, RECURSIVE),
        (_billion_laughs(), 6, LAUGHS),
        (
            b"journal:\n  path: caf\xe9\n",
            2,
            "not UTF-8 text: invalid continuation byte (byte 0xe9 at column 12)",
        ),
        ("journal:\n  path: x\n  path: y\n", 3, "duplicate key 'path'"),
        (
            "journal:\n  <<: 1\n",
            2,
            "a merge key (<<) takes an alias of a mapping or a list of them",
        ),
        ("journal:\n  ? [a]\n  : 1\n", 2, "mapping keys must be scalars"),
        # A tag on a mapping or a list is refused as one on a scalar is, not dropped.
        ("dedupe: !!python/object:os.system {}\n", 1, _tagged("tag:yaml.org,2002:python/object:os.system")),
        ("journal:\n  path: x\nslack: !!set {a, b}\n", 3, _tagged("tag:yaml.org,2002:set")),
        ("guardrails:\n  protected_namespaces: !custom\n    - a\n", 2, _tagged("!custom", "list")),
        (
            "base: &b {level: info}\nlogging: {<<: !!omap [*b]}\n",
            2,
            _tagged("tag:yaml.org,2002:omap", "list"),
        ),
        (
            "journal: !!python/object:os.system\n  path: x\n",
            1,
            _tagged("tag:yaml.org,2002:python/object:os.system"),
        ),
        # Found at the end of the file, caused on line 2: both said.
        (
            'journal:\n  path: "x\ndedupe:\n  window_seconds: 60\n',
            5,
            "invalid YAML: found unexpected end of stream"
            " (while scanning a quoted scalar that starts on line 2)",
        ),
    ],
    ids=[
        "nul",
        "bell-in-quotes",
        "escape-crlf",
        "c1-control",
        "non-character",
        "deep-flow",
        "self-alias",
        "alias-to-ancestor",
        "recursive-merge",
        "billion-laughs",
        "not-utf8",
        "duplicate-key",
        "merge-of-a-scalar",
        "sequence-key",
        "python-object-mapping",
        "set",
        "custom-tag-list",
        "omap-merge",
        "python-object-block",
        "unclosed-quote",
    ],
)
def test_config_check_names_file_line_and_problem(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str | bytes, line: int, message: str
) -> None:
    path = _write(tmp_path, content)
    started = time.monotonic()
    err = _config_check(path, capsys)
    assert err == f"serving-guard: error: {path}:{line}: {message}\n"
    assert time.monotonic() - started < 10


def test_billion_laughs_is_refused_quickly(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _write(tmp_path, _billion_laughs())
    assert path.stat().st_size < 400
    started = time.monotonic()
    assert f"{path}:6: {LAUGHS}" in _config_check(path, capsys)
    assert time.monotonic() - started < 2


def test_block_style_nesting_is_bounded_too(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = "".join(f"{'  ' * level}k{level}:\n" for level in range(150)) + "  " * 150 + "v\n"
    path = _write(tmp_path, text)
    assert _config_check(path, capsys) == f"serving-guard: error: {path}:{MAX_DEPTH}: {TOO_DEEP}\n"


def test_the_limits_leave_room_for_real_files() -> None:
    # Nesting up to the limit loads (the root mapping and the key's value make two levels).
    deep = load_yaml("x: " + "[" * (MAX_DEPTH - 1) + "]" * (MAX_DEPTH - 1) + "\n", "deep.yaml")
    value = deep.data["x"]
    for _ in range(MAX_DEPTH - 2):
        value = value[0]
    assert value == []
    with pytest.raises(SourceError) as caught:
        load_yaml("x: " + "[" * MAX_DEPTH + "]" * MAX_DEPTH + "\n", "deep.yaml")
    assert str(caught.value) == f"deep.yaml:1: {TOO_DEEP}"
    # Aliases that expand to a lot, but less than the bound, load (and are copies, not shared).
    items = ", ".join(["x"] * 99)
    shared = load_yaml(f"a: &a [{items}]\nb: [{', '.join(['*a'] * 900)}]\n", "shared.yaml")
    assert len(shared.data["b"]) == 900 and shared.data["b"][0] == shared.data["a"]
    assert shared.data["b"][0] is not shared.data["b"][1]


def test_plain_and_default_tags_on_mappings_and_lists_still_load() -> None:
    doc = load_yaml("a: !!map {b: 1}\nc: !!seq [1]\nd: ! {e: [2]}\nf: ! [3]\n", "t.yaml")
    assert doc.data == {"a": {"b": 1}, "c": [1], "d": {"e": [2]}, "f": [3]}
    assert load_yaml("--- !!map\nb: 1\n", "t.yaml").data == {"b": 1}
    # Unknown tags on scalars were refused already; these are refused alike.
    with pytest.raises(SourceError, match="could not determine a constructor for the tag '!foo'"):
        load_yaml("a: !foo x\n", "t.yaml")


def test_merge_keys_follow_yaml(tmp_path: Path) -> None:
    doc = load_yaml(
        "base: &base {a: 1, b: 2}\n"
        "other: &other\n"
        "  b: 20\n"
        "  c: 30\n"
        "one:\n"
        "  <<: *base\n"
        "  a: 10\n"
        "two:\n"
        "  <<: [*base, *other]\n"
        "  d: 4\n",
        "m.yaml",
    )
    # The mapping's own keys win over merged ones; an earlier merged mapping over a later one.
    assert doc.data["one"] == {"a": 10, "b": 2}
    assert doc.data["two"] == {"a": 1, "b": 2, "c": 30, "d": 4}
    # A merged key is at the line where the anchored mapping gives it; an own key at its own line.
    assert doc.line_of(("one", "a")) == 7
    assert doc.line_of(("two", "c")) == 4
    assert doc.line_of(("two", "d")) == 10
    # The anchored mapping itself is left as written.
    assert doc.data["base"] == {"a": 1, "b": 2}


def test_config_merge_keys_keep_working(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _write(
        tmp_path,
        "policies:\n"
        "  - &base\n"
        "    name: isolate-shells\n"
        "    match: {rules: [Shell in serving pod]}\n"
        "    actions: [notify, quarantine]\n"
        "  - <<: *base\n"
        "    name: isolate-downloads\n"
        "    match: {rules: [Runtime download*]}\n",
        "merge.yaml",
    )
    assert main(["config", "check", str(path)]) == 0
    out = capsys.readouterr().out
    do = "do notify, quarantine cutting ingress and egress;"
    assert f"1. isolate-shells: when rules Shell in serving pod\n   {do}" in out
    assert f"2. isolate-downloads: when rules Runtime download*\n   {do}" in out


def _commands(path: Path, tmp_path: Path) -> dict[str, list[str]]:
    scenarios = tmp_path / "scenarios"
    scenarios.mkdir(exist_ok=True)
    (scenarios / path.name).write_bytes(path.read_bytes())
    replay = ["replay", "--file", str(tmp_path / "out.jsonl"), "--forge", "--pod", "ml-serving/x-0"]
    return {
        "ingest --config": ["ingest", "--config", str(path), "-"],
        "replay --rules": [*replay, "all", "--rules", str(path)],
        "demo --rules": ["demo", "--rules", str(path)],
        "replay --scenarios-dir": [*replay, "--scenarios-dir", str(scenarios), "all"],
    }


@pytest.mark.parametrize(
    ("content", "line", "message"),
    [(b"\x00journal: 1\n", 1, NUL), ("journal: &a [*a]\n", 1, RECURSIVE), (_billion_laughs(), 6, LAUGHS)],
    ids=["nul", "self-alias", "billion-laughs"],
)
@pytest.mark.parametrize(
    "command", ["ingest --config", "replay --rules", "demo --rules", "replay --scenarios-dir"]
)
def test_every_command_that_reads_yaml_refuses_it(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    command: str,
    content: str | bytes,
    line: int,
    message: str,
) -> None:
    path = _write(tmp_path, content)
    argv = _commands(path, tmp_path)[command]
    assert main(argv) == 2
    err = capsys.readouterr().err
    where = (
        f"{path}:{line}"
        if command != "replay --scenarios-dir"
        else f"{tmp_path / 'scenarios' / path.name}:{line}"
    )
    if command.endswith("--rules"):
        expected = (
            "serving-guard: error: the rules do not load (1 error; see `serving-guard rules check`): "
            f"{where}: error: {message}\n"
        )
    else:
        expected = f"serving-guard: error: {where}: {message}\n"
    assert err == expected
    assert not (tmp_path / "out.jsonl").exists()


def test_rules_check_reports_it_as_a_problem(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _write(tmp_path, b"- rule: x\n\x00\n")
    assert main(["rules", "check", "--no-falco", str(path)]) == 1
    out = capsys.readouterr().out
    assert f"{path}:2: error: invalid YAML: control character #x0000 at column 1 {CHARACTERS}\n" in out
    assert "result: FAILED (1 errors, 0 warnings)" in out


@pytest.mark.skipif(Sysdig.find() is None, reason="rules test reads its examples only once sysdig is found")
def test_rules_test_examples_refuses_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _write(tmp_path, "captures: &a [*a]\n")
    assert main(["rules", "test", "--examples", str(path)]) == 2
    assert capsys.readouterr().err == f"serving-guard: error: {path}:1: {RECURSIVE}\n"
