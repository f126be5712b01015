"""`serving-guard ingest`: lines bounded by ``inputs.http.max_body_bytes`` (an over-long one is reported
and read past, never held), a byte-order mark skipped only at the start of the file, stdin closed, a
read error mid-file; and any command whose reader went away (`| head -c 1`) exits 141 without a
traceback."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import io
import json
import os
import shlex
import signal
import sqlite3
import subprocess
import sys
import time
import tracemalloc
from itertools import islice
from pathlib import Path
from typing import Any

import pytest
import yaml

from responder.cli import EXIT_BROKEN_PIPE, main
from responder.commands.ingest import BOM, BOM_INSIDE, Line, LineSource, _is_json, _Tally, read_lines
from responder.commands.serve import build_responder
from responder.config import Inputs, load_config
from responder.journal.rows import AlertRow
from responder.journal.store import Journal
from responder.sender import Proof, Sender
from simulators.falco_json import falco_alert, falco_bytes
from simulators.seed import SeededPod
from tests.helpers import SHELL_RULE
from tests.responder.test_commands import Seeded, quarantined, write_config

pytestmark = pytest.mark.timeout(60)

LIMIT = 1024  # the smallest inputs.http.max_body_bytes the config accepts
TOO_LONG = f"line longer than {LIMIT} bytes (inputs.http.max_body_bytes)"
SERVING_GUARD = Path(sys.executable).with_name("serving-guard")


def lines(data: bytes, limit: int = 8) -> list[Line]:
    return list(read_lines(io.BytesIO(data), limit))


# --- read_lines over bytes ---------------------------------------------------------------------------


def test_a_line_of_exactly_the_limit_is_kept_one_byte_more_is_not() -> None:
    assert lines(b"12345678\n123456789\nok\n") == [
        Line(1, b"12345678"),
        Line(2, None),
        Line(3, b"ok"),
    ]


def test_the_limit_counts_the_line_without_its_ending_crlf_included() -> None:
    assert lines(b"12345678\r\n123456789\r\nok\r\n") == [
        Line(1, b"12345678"),
        Line(2, None),
        Line(3, b"ok"),
    ]
    # A lone \r is not an ending: it counts towards the limit.
    assert lines(b"1234567\r\n") == [Line(1, b"1234567")]
    assert lines(b"12345678\r") == [Line(1, None)]


@pytest.mark.parametrize("ending", [b"\n", b"\r\n"])
def test_an_over_long_line_two_past_the_limit_is_read_past_to_its_end(ending: bytes) -> None:
    # limit + 2 bytes fill the first read exactly (room for \r\n): the ending comes in the next one.
    assert lines(b"1234567890" + ending + b"next" + ending) == [Line(1, None), Line(2, b"next")]


def test_the_last_line_without_a_newline_is_a_line() -> None:
    assert lines(b"one\ntwo") == [Line(1, b"one"), Line(2, b"two")]
    assert lines(b"one\n12345678") == [Line(1, b"one"), Line(2, b"12345678")]
    assert lines(b"one\n123456789") == [Line(1, b"one"), Line(2, None)]
    # 10 bytes read, then the other 90 in one piece, then the end of the file.
    assert lines(b"one\n" + b"x" * 100) == [Line(1, b"one"), Line(2, None), Line(2, None, skipping=True)]
    assert lines(b"") == []


def test_blank_lines_keep_their_numbers() -> None:
    assert lines(b"\n\r\na\n") == [Line(1, b""), Line(2, b""), Line(3, b"a")]


def test_a_byte_order_mark_is_skipped_only_at_the_start_of_the_file() -> None:
    assert lines(BOM + b"first\n" + BOM + b"two\nthird\n") == [
        Line(1, b"first"),
        Line(2, BOM + b"two", bom=True),
        Line(3, b"third"),
    ]
    # The mark does not count towards line 1's limit...
    assert lines(BOM + b"12345678\r\n") == [Line(1, b"12345678")]
    assert lines(BOM + b"123456789\n") == [Line(1, None)]
    # ...and only one is skipped: a second one is the line's.
    assert lines(BOM + BOM + b"x\n") == [Line(1, BOM + b"x", bom=True)]
    assert lines(BOM) == [Line(1, b"")]


def test_an_over_long_line_is_reported_once_and_the_good_lines_after_it_come_through() -> None:
    data = b"a\n" + b"y" * 1000 + b"\n" + b"b\n" + b"z" * 9 + b"\nc"
    got = lines(data, limit=8)
    assert [line for line in got if not line.skipping] == [
        Line(1, b"a"),
        Line(2, None),
        Line(3, b"b"),
        Line(4, None),
        Line(5, b"c"),
    ]
    assert all(line.number == 2 and line.raw is None for line in got if line.skipping)


def test_a_huge_line_is_read_past_in_pieces_none_of_them_kept() -> None:
    huge = 10 * 1024 * 1024
    stream = io.BytesIO(b"x" * huge + b"\n" + b'{"ok": 1}\n')
    tracemalloc.start()
    try:
        got = []
        for line in read_lines(stream, LIMIT):
            got.append(line)
            # Nothing read so far is held: far less than the line is ever allocated at once. (The
            # peak counts every thread's allocations: the bound leaves room for another thread's.)
            assert tracemalloc.get_traced_memory()[1] < 2 * 1024 * 1024
    finally:
        tracemalloc.stop()
    assert got[0] == Line(1, None)
    assert got[-1] == Line(2, b'{"ok": 1}')
    skipped = got[1:-1]
    assert all(line == Line(1, None, skipping=True) for line in skipped)
    # One Line per 64 KiB piece read past: a few hundred, not one per byte or per kilobyte.
    assert 0 < len(skipped) <= huge // (64 * 1024) + 1


def test_an_endless_line_keeps_coming_as_pieces_read_past() -> None:
    with open("/dev/zero", "rb") as zero:
        first = list(islice(read_lines(zero, LIMIT), 50))
    assert first[0] == Line(1, None)
    assert first[1:] == [Line(1, None, skipping=True)] * 49


class FailingAfter(io.RawIOBase):
    """A stream that gives ``data``, then fails as a disk or a network file system can."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if not self.data:
            raise OSError(errno.EIO, "Input/output error")
        count = min(len(buffer), len(self.data))
        buffer[:count] = self.data[:count]
        self.data = self.data[count:]
        return count


def test_a_read_error_comes_out_of_read_lines_after_the_lines_read() -> None:
    reader = read_lines(io.BufferedReader(FailingAfter(b"one\ntwo\n")), LIMIT)
    assert next(reader) == Line(1, b"one")
    assert next(reader) == Line(2, b"two")
    with pytest.raises(OSError, match="Input/output error"):
        next(reader)


# --- ingest end to end --------------------------------------------------------------------------------


def alert_line(pod: SeededPod, message: str = "shell", *, size: int | None = None) -> bytes:
    """One Falco JSON alert; ``size``: padded (in its message) to exactly that many bytes."""
    line = falco_bytes(falco_alert(pod, SHELL_RULE, "Notice", message, {"proc.name": "sh"}))
    if size is None:
        return line
    padded = falco_bytes(
        falco_alert(pod, SHELL_RULE, "Notice", message + "x" * (size - len(line)), {"proc.name": "sh"})
    )
    assert len(padded) == size
    return padded


def small_limit_config(tmp_path: Path, kubeconfig: str) -> Path:
    return write_config(
        tmp_path,
        kubeconfig,
        inputs={"http": {"listen": "127.0.0.1:0", "allow_unauthenticated": True, "max_body_bytes": LIMIT}},
        server={"metrics_listen": None, "event_loop": "asyncio"},
    )


def audited_pods(config: Path, capsys: pytest.CaptureFixture[str]) -> list[str]:
    assert main(["audit", "--config", str(config), "--format", "json"]) == 0
    return sorted(entry["pod"] for entry in json.loads(capsys.readouterr().out))


def test_ingest_skips_the_bom_and_refuses_an_over_long_line_naming_it_and_the_limit(
    tmp_path: Path, seeded: Seeded, capsys: pytest.CaptureFixture[str]
) -> None:
    running, pods, kubeconfig = seeded
    config = small_limit_config(tmp_path, kubeconfig)
    source = tmp_path / "alerts.jsonl"
    # Line 3 is a well-formed alert: refused for its length alone.
    too_long = alert_line(pods["triton"], size=LIMIT + 1)
    source.write_bytes(
        BOM + alert_line(pods["vllm"]) + b"\n\n" + too_long + b"\n" + alert_line(pods["torchserve"]) + b"\n"
    )
    assert main(["ingest", str(source), "--config", str(config), "--settle-seconds", "0"]) == 1
    err = capsys.readouterr().err
    assert err.splitlines() == [
        f"{source}:3: {TOO_LONG}",
        f"{source}: 2 accepted, 0 already in the journal, 1 rejected",
        f"{source}: actions quarantine: 2 quarantined (serving-guard audit tells each)",
    ]
    assert quarantined(running, pods["vllm"]) and quarantined(running, pods["torchserve"])
    assert not quarantined(running, pods["triton"])
    assert audited_pods(config, capsys) == sorted([pods["vllm"].name, pods["torchserve"].name])


def test_ingest_reports_an_integer_python_will_not_convert_and_goes_on(
    tmp_path: Path, seeded: Seeded, capsys: pytest.CaptureFixture[str]
) -> None:
    # 4,301 digits: Python's int() refuses them with a ValueError that used to stop ingest there.
    running, pods, kubeconfig = seeded
    config = write_config(tmp_path, kubeconfig, server={"metrics_listen": None, "event_loop": "asyncio"})
    alert = json.loads(alert_line(pods["triton"]))
    alert["output_fields"]["evt.num"] = 0
    big = json.dumps(alert).replace('"evt.num": 0', '"evt.num": ' + "1" * 4301).encode()
    source = tmp_path / "alerts.jsonl"
    source.write_bytes(
        alert_line(pods["vllm"]) + b"\n" + big + b"\n" + alert_line(pods["torchserve"]) + b"\n"
    )
    assert main(["ingest", str(source), "--config", str(config), "--settle-seconds", "0"]) == 1
    assert capsys.readouterr().err.splitlines() == [
        f"{source}:2: field 'output_fields.evt.num': a whole number of 4301 digits (at most 1000)",
        f"{source}: 2 accepted, 0 already in the journal, 1 rejected",
        f"{source}: actions quarantine: 2 quarantined (serving-guard audit tells each)",
    ]
    assert [quarantined(running, pods[name]) for name in ("vllm", "triton", "torchserve")] == [
        True,
        False,
        True,
    ]


def test_the_json_output_hint_is_for_lines_that_are_not_json_at_all(
    tmp_path: Path, seeded: Seeded, capsys: pytest.CaptureFixture[str]
) -> None:
    """Falco's text output gets the hint; JSON that is no alert (an array, a number, a broken
    object) is refused for what it is, without it."""
    _, pods, kubeconfig = seeded
    config = small_limit_config(tmp_path, kubeconfig)
    source = tmp_path / "alerts.jsonl"
    written = [
        b"10:00:00.123456789: Notice Shell spawned",
        b"[{}]",
        b"12",
        b'{"rule": ',
        # Falco's own log, as `kubectl logs` mixes it in: not an alert, and no sign of text output.
        b"Sat Dec  6 11:00:00 2026: Falco version: 0.44.1 (x86_64)",
        alert_line(pods["vllm"]),
    ]
    source.write_bytes(b"\n".join(written) + b"\n")
    assert main(["ingest", str(source), "--config", str(config), "--settle-seconds", "0"]) == 1
    lines = capsys.readouterr().err.splitlines()
    assert lines[:6] == [
        f"{source}:1: invalid JSON: Extra data (line 1, column 3); not a JSON object: Falco must run with"
        " json_output: true",
        f"{source}:2: must be a JSON object, got array",
        f"{source}:3: must be a JSON object, got number",
        f"{source}:4: invalid JSON: Expecting value (line 1, column 10)",
        f"{source}:5: not an alert: a line of Falco's own log (`kubectl logs` mixes it in with the alerts);"
        " ingest reads alert lines only: keep those starting with '{' (grep '^{')",
        f"{source}: 1 accepted, 0 already in the journal, 5 rejected",
    ]


def test_what_counts_as_json_for_the_hint() -> None:
    assert not _is_json(b"10:00:00.123456789: Notice Shell spawned")
    assert not _is_json(b"caf\xe9")
    assert _is_json(b"[{}]") and _is_json(b"12") and _is_json(b"null")
    assert _is_json(b"[" + b"1" * 4301 + b"]")  # JSON, whatever Python's int() makes of it
    assert _is_json(b"[" * 100_000)  # nested too deeply to read, but no text output either


def test_ingest_takes_a_line_of_exactly_the_limit_and_reports_a_bom_inside_the_file(
    tmp_path: Path, seeded: Seeded, capsys: pytest.CaptureFixture[str]
) -> None:
    running, pods, kubeconfig = seeded
    config = small_limit_config(tmp_path, kubeconfig)
    source = tmp_path / "alerts.jsonl"
    source.write_bytes(
        alert_line(pods["vllm"], size=LIMIT)
        + b"\r\n"
        + BOM
        + alert_line(pods["triton"])
        + b"\r\n"
        + alert_line(pods["torchserve"], size=LIMIT + 1)
        + b"\r\n"
        + alert_line(pods["kserve"], size=LIMIT)  # the last line, without a newline
    )
    assert main(["ingest", str(source), "--config", str(config), "--settle-seconds", "0"]) == 1
    err = capsys.readouterr().err
    assert err.splitlines() == [
        f"{source}:2: {BOM_INSIDE}",
        f"{source}:3: {TOO_LONG}",
        f"{source}: 2 accepted, 0 already in the journal, 2 rejected",
        f"{source}: actions quarantine: 2 quarantined (serving-guard audit tells each)",
    ]
    assert [quarantined(running, pods[name]) for name in ("vllm", "triton", "torchserve", "kserve")] == [
        True,
        False,
        False,
        True,
    ]


def test_ingest_from_stdin_bounds_its_lines_too(tmp_path: Path, seeded: Seeded) -> None:
    running, pods, kubeconfig = seeded
    config = small_limit_config(tmp_path, kubeconfig)
    data = (
        BOM + alert_line(pods["vllm"]) + b"\n" + b"{" * (3 * 64 * 1024) + b"\n" + alert_line(pods["triton"])
    )
    result = subprocess.run(
        [str(SERVING_GUARD), "ingest", "-", "--config", str(config), "--settle-seconds", "0"],
        input=data,
        capture_output=True,
        timeout=30,
        check=False,
    )
    err = result.stderr.decode()
    assert result.returncode == 1, err
    assert err.splitlines() == [
        f"<stdin>:2: {TOO_LONG}",
        "<stdin>: 2 accepted, 0 already in the journal, 1 rejected",
        "<stdin>: actions quarantine: 1 leaky, 1 quarantined (serving-guard audit tells each)",
    ]
    assert quarantined(running, pods["vllm"]) and quarantined(running, pods["triton"])


def test_ingested_alerts_name_the_file_or_stdin_they_were_read_from(
    tmp_path: Path, seeded: Seeded, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Their sender is the file (by its absolute path: the journal outlives the directory the
    command ran in) or standard input: what the audit trail and Slack's forgery warning name."""
    _running, pods, kubeconfig = seeded
    config = small_limit_config(tmp_path, kubeconfig)
    (tmp_path / "falco").mkdir()
    (tmp_path / "falco" / "events.jsonl").write_bytes(alert_line(pods["vllm"]) + b"\n")
    monkeypatch.chdir(tmp_path / "falco")
    assert main(["ingest", "events.jsonl", "--config", str(config), "--settle-seconds", "0"]) == 0
    from_stdin = subprocess.run(
        [str(SERVING_GUARD), "ingest", "-", "--config", str(config), "--settle-seconds", "0"],
        input=alert_line(pods["triton"]),
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert from_stdin.returncode == 0, from_stdin.stderr.decode()
    capsys.readouterr()
    assert main(["audit", "--config", str(config), "--format", "json"]) == 0
    senders = {entry["pod"]: entry["sender"] for entry in json.loads(capsys.readouterr().out)}
    assert senders == {
        pods["vllm"].name: {"address": str(tmp_path / "falco" / "events.jsonl"), "proof": "file"},
        pods["triton"].name: {"address": "-", "proof": "file"},
    }
    assert main(["audit", "--config", str(config), "--format", "incidents"]) == 0
    said = [line.strip() for line in capsys.readouterr().out.splitlines() if "sent by" in line]
    assert sorted(said) == sorted(
        [f"sent by   file {tmp_path / 'falco' / 'events.jsonl'}", "sent by   standard input"]
    )


def test_an_alert_from_a_pipe_is_acted_on_while_the_pipe_stays_open(tmp_path: Path, seeded: Seeded) -> None:
    """`falco | serving-guard ingest -`: the read that waits for Falco's next line does not hold back
    the work on the alerts read so far (it did, on the event loop, until another line came)."""
    running, pods, kubeconfig = seeded
    config = small_limit_config(tmp_path, kubeconfig)
    command = [str(SERVING_GUARD), "ingest", "-", "--config", str(config), "--settle-seconds", "0"]
    with subprocess.Popen(command, stdin=subprocess.PIPE, stderr=subprocess.PIPE) as ingest:
        assert ingest.stdin is not None
        try:
            ingest.stdin.write(alert_line(pods["vllm"]) + b"\n")
            ingest.stdin.flush()
            deadline = time.monotonic() + 30  # a bound on a hang, not a timing assertion
            while not quarantined(running, pods["vllm"]):
                assert ingest.poll() is None, "ingest ended with its stdin still open"
                assert time.monotonic() < deadline, "not quarantined while the pipe stayed open"
                time.sleep(0.05)
        finally:
            ingest.stdin.close()
        assert ingest.wait(timeout=30) == 0
        assert ingest.stderr is not None
        assert b"<stdin>: 1 accepted" in ingest.stderr.read()


@pytest.mark.parametrize(
    ("signum", "status"),
    [(signal.SIGINT, 130), (signal.SIGTERM, 128 + signal.SIGTERM), (signal.SIGHUP, 128 + signal.SIGHUP)],
    ids=["ctrl-c", "sigterm", "sighup"],
)
def test_ctrl_c_says_where_to_take_ingest_up_again(
    tmp_path: Path, seeded: Seeded, signum: signal.Signals, status: int
) -> None:
    """Ctrl-C, and the signals `timeout`, `kill`, systemd and a closed session send, alike; sent
    to the whole process group, as a terminal sends them (the journal's writer process is in it)."""
    running, pods, kubeconfig = seeded
    config = small_limit_config(tmp_path, kubeconfig)
    command = [str(SERVING_GUARD), "ingest", "-", "--config", str(config), "--settle-seconds", "0"]
    with subprocess.Popen(
        command, stdin=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True
    ) as ingest:
        assert ingest.stdin is not None and ingest.stderr is not None
        ingest.stdin.write(b"10:00:00.123456789: Notice Shell spawned\n" + alert_line(pods["vllm"]) + b"\n")
        ingest.stdin.flush()
        deadline = time.monotonic() + 30  # a bound on a hang, not a timing assertion
        while not quarantined(running, pods["vllm"]):
            assert time.monotonic() < deadline, "not quarantined"
            time.sleep(0.05)
        os.killpg(ingest.pid, signum)
        returncode = ingest.wait(timeout=30)
        err = ingest.stderr.read().decode()
        ingest.stdin.close()
    # The reading thread, still waiting on the open pipe, must not abort the interpreter's exit.
    assert returncode == status and "Fatal Python error" not in err, err
    assert err.splitlines()[:2] == [
        "<stdin>:1: invalid JSON: Extra data (line 1, column 3); not a JSON object: Falco must run with"
        " json_output: true",
        # Lines 1 and 2 are done (the pipe waits for line 3): line 3 is where to take it up.
        "<stdin>: interrupted at line 3 (1 accepted, 0 already in the journal, 1 rejected): every line before"
        " it is journaled; resume from line 3 (a line journaled already counts as already in the journal)",
    ]
    # ...and so is what was done: the writer process outlived the signal (a hang-up killed it).
    with sqlite3.connect(tmp_path / "journal.db") as conn:
        actions = conn.execute("SELECT action, status FROM actions").fetchall()
    assert actions == [("quarantine", "quarantined")], err


async def test_a_line_handed_over_when_ingest_is_interrupted_is_counted_and_not_resumed_from(
    tmp_path: Path, seeded: Seeded
) -> None:
    """Stopped while line 1's alert is on its way into the journal: it is journaled all the same,
    so the tally counts it and the line to resume from is line 2."""
    _, pods, kubeconfig = seeded
    config = load_config(str(small_limit_config(tmp_path, kubeconfig)))
    responder = build_responder(config.model_copy(update={"inputs": Inputs()}))
    await responder.start()
    try:
        assert responder.pipeline is not None
        tally = _Tally(responder.pipeline, "<stdin>", Sender("-", Proof.FILE))
        data = alert_line(pods["vllm"]) + b"\n" + alert_line(pods["triton"]) + b"\n"
        feeding = asyncio.create_task(tally.feed(LineSource(read_lines(io.BytesIO(data), LIMIT)), LIMIT))
        await asyncio.sleep(0)  # line 1 read and its alert handed over
        feeding.cancel()
        with pytest.raises(asyncio.CancelledError):
            await feeding
        assert (tally.accepted, tally.line) == (1, 2)
        assert tally.interrupted().startswith("<stdin>: interrupted at line 2 (1 accepted, ")
        assert "resume from line 2 " in tally.interrupted()
    finally:
        await responder.stop()
    with sqlite3.connect(config.journal.path) as journal:
        assert journal.execute("SELECT count(*) FROM alerts").fetchone()[0] == 1


def test_a_read_error_mid_file_ends_ingest_with_one_error_after_the_summary(
    tmp_path: Path, seeded: Seeded, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    running, pods, kubeconfig = seeded
    config = small_limit_config(tmp_path, kubeconfig)
    data = alert_line(pods["vllm"]) + b"\n" + alert_line(pods["triton"]) + b"\n"
    stdin = io.TextIOWrapper(io.BufferedReader(FailingAfter(data)))
    monkeypatch.setattr(sys, "stdin", stdin)
    assert main(["ingest", "-", "--config", str(config), "--settle-seconds", "0"]) == 2
    assert capsys.readouterr().err.splitlines() == [
        "<stdin>: 2 accepted, 0 already in the journal, 0 rejected",
        "<stdin>: actions quarantine: 1 leaky, 1 quarantined (serving-guard audit tells each)",
        "serving-guard: error: <stdin>: cannot read after line 2: Input/output error",
    ]
    # What was read before the error is ingested.
    assert quarantined(running, pods["vllm"]) and quarantined(running, pods["triton"])


# --- stdin closed ---------------------------------------------------------------------------------------


def test_ingest_from_a_closed_stdin_is_one_error_in_process(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # No kubeconfig at that path: the error comes before the responder (and its cluster) is set up.
    config = small_limit_config(tmp_path, str(tmp_path / "no-kubeconfig"))
    monkeypatch.setattr(sys, "stdin", None)  # what Python makes of fd 0 closed at start
    assert main(["ingest", "-", "--config", str(config)]) == 2
    assert capsys.readouterr().err == "serving-guard: error: ingest: stdin is closed\n"


def test_ingest_from_a_closed_stdin_is_one_error(tmp_path: Path) -> None:
    config = small_limit_config(tmp_path, str(tmp_path / "no-kubeconfig"))
    command = f"{shlex.quote(str(SERVING_GUARD))} ingest - --config {shlex.quote(str(config))} <&-"
    result = subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=30, check=False)
    assert (result.returncode, result.stdout, result.stderr) == (
        2,
        "",
        "serving-guard: error: ingest: stdin is closed\n",
    )
    assert not (tmp_path / "journal.db").exists()


# --- the reader of our output went away -----------------------------------------------------------------


@pytest.fixture
def big_policy(tmp_path: Path) -> Path:
    """A config whose `config check` prints ~240 KB to stdout: several pipe buffers."""
    data: dict[str, Any] = {
        "cluster": {"kubeconfig": "kc"},
        "journal": {"path": str(tmp_path / "journal.db")},
        "policies": [
            {
                "name": "many-rules",
                "match": {"rules": [f"rule number {i} " + "x" * 60 for i in range(3000)]},
                "actions": ["notify"],
            }
        ],
    }
    path = tmp_path / "big.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture
def many_errors(tmp_path: Path) -> Path:
    """A config whose `config check` prints ~250 KB of errors (one per action) to stderr."""
    data: dict[str, Any] = {
        "journal": {"path": str(tmp_path / "journal.db")},
        "policies": [{"name": f"p{i}", "actions": ["explode"] * 10} for i in range(250)],
    }
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def shell(command: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        ["bash", "-c", f"set -o pipefail; {command}"], capture_output=True, timeout=30, check=False
    )


def test_a_reader_of_stdout_that_goes_away_is_exit_141_without_a_traceback(big_policy: Path) -> None:
    check = f"{shlex.quote(str(SERVING_GUARD))} config check {shlex.quote(str(big_policy))}"
    whole = shell(f"{check} | wc -c")
    assert whole.returncode == 0, whole.stderr
    assert int(whole.stdout) > 3 * 64 * 1024  # far more than a pipe holds
    result = shell(f"{check} | head -c 1")
    assert result.returncode == EXIT_BROKEN_PIPE == 141
    assert result.stdout == b"/"  # "/tmp/.../big.yaml: ok"
    assert result.stderr == b""


def test_a_reader_of_stderr_that_goes_away_is_exit_141_too(many_errors: Path) -> None:
    check = f"{shlex.quote(str(SERVING_GUARD))} config check {shlex.quote(str(many_errors))}"
    whole = shell(f"{check} 2>&1 >/dev/null | wc -c")
    assert whole.returncode == 2 and int(whole.stdout) > 3 * 64 * 1024
    # stderr is the pipe: a traceback there would be lost, but the status would say so (1 or 120).
    result = shell(f"{check} 2>&1 >/dev/null | head -c 1")
    assert (result.returncode, result.stdout, result.stderr) == (141, b"s", b"")


def test_a_pipe_error_that_is_not_our_readers_is_not_hidden(monkeypatch: pytest.MonkeyPatch) -> None:
    """A BrokenPipeError from another pipe (a child, a socket) is a bug to see, not exit 141."""

    def broken(args: Any) -> int:
        raise BrokenPipeError(errno.EPIPE, "Broken pipe")

    from responder.commands import config_check as config_command

    monkeypatch.setattr(config_command, "run", broken)
    with pytest.raises(BrokenPipeError):
        main(["config", "check", "whatever.yaml"])


def test_a_refused_line_is_said_once_where_warnings_are_logged(
    tmp_path: Path, seeded: Seeded, capsys: pytest.CaptureFixture[str]
) -> None:
    _, pods, kubeconfig = seeded
    config = write_config(tmp_path, kubeconfig, logging={"level": "warning", "format": "text"})
    source = tmp_path / "alerts.jsonl"
    source.write_bytes(alert_line(pods["vllm"]) + b"\n" + b'{"rule": 5}\n')
    assert main(["ingest", str(source), "--config", str(config), "--settle-seconds", "0"]) == 1
    err = capsys.readouterr().err
    assert err.count(f"{source}:2:") == 1, err


# --- a journal that takes no more -----------------------------------------------------------------------


def fill_with_unfinishable_alerts(journal_path: Path, total_bytes: int) -> None:
    """Pending alert rows whose payloads are not alerts: recovery cannot resume them (it logs each),
    so they stay pending and are never pruned: the journal stays full of unfinished alerts."""
    journal = Journal(str(journal_path), max_bytes=64 * 1024 * 1024, retention_seconds=3600.0)
    with journal:
        for n in range(total_bytes // (60 * 1024) + 1):
            row = AlertRow(None, "http", n, None)
            row.alert_id, row.event_ns = f"unreadable-{n}", n
            row._params = (row.alert_id, n, "http", "r", 4, "ml", "p", n, b"{" + b"x" * 60 * 1024, "pending")
            row._params += (None, None, None, None)  # incident_id, outcome, finished_ns, sender
            assert journal.run_sync(row)


def test_ingest_into_a_full_journal_stops_at_the_line_it_reached_saying_where_to_resume(
    tmp_path: Path, seeded: Seeded, capsys: pytest.CaptureFixture[str]
) -> None:
    running, pods, kubeconfig = seeded
    config = write_config(
        tmp_path,
        kubeconfig,
        server={"metrics_listen": None, "event_loop": "asyncio"},
        journal={"path": str(tmp_path / "journal.db"), "max_bytes": 1024 * 1024},
    )
    fill_with_unfinishable_alerts(tmp_path / "journal.db", 1024 * 1024)
    source = tmp_path / "alerts.jsonl"
    source.write_bytes(
        b"\nnot json\n" + alert_line(pods["vllm"]) + b"\n" + alert_line(pods["triton"]) + b"\n"
    )
    assert main(["ingest", str(source), "--config", str(config), "--settle-seconds", "0"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err[-2:] == [
        f"{source}: 0 accepted, 0 already in the journal, 1 rejected",
        f"serving-guard: error: {source}:3: the journal is full (journal.max_bytes):"
        " not ingested from this line on; resume from line 3",
    ]
    assert not quarantined(running, pods["vllm"]) and not quarantined(running, pods["triton"])


def child_pids(pid: int) -> list[int]:
    return [int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def journaled_count(path: Path, *, finished: bool = False) -> int:
    """Alerts in the journal (``finished``: those decided, whose writes were answered first)."""
    if not path.exists():
        return 0
    with sqlite3.connect(path) as conn:
        try:
            where = " WHERE state = 'done'" if finished else ""
            return int(conn.execute("SELECT COUNT(*) FROM alerts" + where).fetchone()[0])
        except sqlite3.OperationalError:  # not created yet
            return 0


def test_ingest_whose_journal_writer_dies_stops_at_the_line_it_reached_without_a_traceback(
    tmp_path: Path, seeded: Seeded
) -> None:
    """The audit's case: the journal's writer process is killed while `ingest -` reads a pipe."""
    _, pods, kubeconfig = seeded
    config = write_config(tmp_path, kubeconfig, server={"metrics_listen": None, "event_loop": "asyncio"})
    names = ["vllm", "triton", "torchserve", "kserve"]
    ingest = subprocess.Popen(
        [str(SERVING_GUARD), "ingest", "-", "--config", str(config), "--settle-seconds", "0"],
        stdin=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert ingest.stdin is not None
        for name in names[:2]:
            ingest.stdin.write(alert_line(pods[name]) + b"\n")
        ingest.stdin.flush()
        deadline = time.monotonic() + 30  # a bound that only keeps a bug from hanging CI
        # Decided, not only committed: a row is in the file before its fsync, and its answer to
        # ingest comes after that (a writer killed in between leaves line 2 unanswered).
        while journaled_count(tmp_path / "journal.db", finished=True) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        (writer,) = child_pids(ingest.pid)
        os.kill(writer, signal.SIGKILL)
        for name in names[2:]:
            ingest.stdin.write(alert_line(pods[name]) + b"\n")
        ingest.stdin.close()
        assert ingest.stderr is not None
        err = ingest.stderr.read().decode()
        assert ingest.wait(timeout=30) == 2, err
    finally:
        ingest.kill()
    # Logged errors (JSON lines) may carry exceptions; Python's own traceback would start a line.
    assert not [line for line in err.splitlines() if line.startswith("Traceback")]
    assert "<stdin>: 2 accepted, 0 already in the journal, 0 rejected" in err.splitlines()
    # The writer's death is seen as its exit or as a broken pipe, whichever comes first.
    last = err.splitlines()[-1]
    assert last.startswith("serving-guard: error: <stdin>:3: journal write failed (journal writer process ")
    assert last.endswith("): not ingested from this line on; resume from line 3")
    assert journaled_count(tmp_path / "journal.db") == 2


def test_a_stop_while_slack_posts_wait_says_every_line_is_journaled(tmp_path: Path, seeded: Seeded) -> None:
    """SIGTERM once the file is read, while its Slack post waits (`timeout N serving-guard ingest`):
    it said nothing at all."""
    _, pods, kubeconfig = seeded
    webhook = tmp_path / "webhook"
    webhook.write_text("http://127.0.0.1:1/hooks/nobody-listens\n")  # refused at once: retried
    slack = {"mode": "webhook", "webhook_url": {"file": str(webhook)}, "timeout_seconds": 1}
    config = write_config(tmp_path, kubeconfig, slack=slack)
    alerts = tmp_path / "alerts.jsonl"
    alerts.write_bytes(alert_line(pods["vllm"]) + b"\n")
    command = [str(SERVING_GUARD), "ingest", str(alerts), "--config", str(config), "--settle-seconds", "60"]
    with subprocess.Popen(command, stderr=subprocess.PIPE) as ingest:
        assert ingest.stderr is not None
        deadline = time.monotonic() + 30  # a bound on a hang, not a timing assertion
        while not posts_tried(tmp_path / "journal.db"):
            assert time.monotonic() < deadline, "no post tried"
            time.sleep(0.05)
        ingest.send_signal(signal.SIGTERM)
        returncode = ingest.wait(timeout=30)
        err = ingest.stderr.read().decode()
    assert returncode == 128 + signal.SIGTERM
    assert (
        f"{alerts}: stopped after its last line (1 accepted, 0 already in the journal, 0 rejected): every"
        " line is journaled; what was not yet acted on or posted to Slack is taken up by the next start on"
        " this journal (serve, or ingest)"
    ) in err.splitlines(), err


def posts_tried(journal: Path) -> bool:
    """A Slack post was tried (and failed) at least once."""
    if not journal.exists():
        return False
    try:
        with contextlib.closing(sqlite3.connect(journal)) as conn:
            row = conn.execute("SELECT MAX(attempts) FROM notifications").fetchone()
    except sqlite3.OperationalError:  # not made yet
        return False
    return bool(row and row[0])


# --- ingest --check, and a source without an alert (review-replay L3) -----------------------------


def test_ingest_check_validates_every_line_and_journals_or_acts_on_none(
    tmp_path: Path, seeded: Seeded, capsys: pytest.CaptureFixture[str]
) -> None:
    running, pods, kubeconfig = seeded
    config = write_config(tmp_path, kubeconfig)
    good = falco_bytes(falco_alert(pods["vllm"], SHELL_RULE, "Notice", "x", {"proc.name": "sh"})).decode()
    source = tmp_path / "recorded.jsonl"
    source.write_text(f"{good}\n{{not json\n\n{good}\n")
    assert main(["ingest", str(source), "--config", str(config), "--check"]) == 1
    err = capsys.readouterr().err
    assert f"{source}:2: invalid JSON" in err, err
    assert f"{source}: 2 valid, 1 rejected (checked only: nothing ingested)" in err
    assert not quarantined(running, pods["vllm"])
    # Nothing journaled: the journal was never opened.
    assert not (tmp_path / "journal.db").exists()
    source.write_text(f"{good}\n")
    assert main(["ingest", str(source), "--config", str(config), "--check"]) == 0
    assert f"{source}: 1 valid, 0 rejected" in capsys.readouterr().err


def test_ingest_check_says_which_valid_lines_would_never_be_isolated_or_are_dated_ahead(
    tmp_path: Path, seeded: Seeded, capsys: pytest.CaptureFixture[str]
) -> None:
    """Valid lines that ingesting would never isolate (no pod check can verify them) or would date
    anew (ahead of this clock) are said, grouped by reason, with their lines (review-operator L9).
    They stay valid: the exit status is the lines' shape."""
    _, pods, kubeconfig = seeded
    config = write_config(tmp_path, kubeconfig)
    vllm = pods["vllm"]

    def line(fields: dict[str, Any], **kwargs: Any) -> str:
        return falco_bytes(falco_alert(vllm, SHELL_RULE, "Notice", "x", fields, **kwargs)).decode()

    good = line({"proc.name": "sh"})
    not_hex = line({"container.id": "not-an-id-at-all"})
    no_pod = line({"k8s.pod.name": None})
    bad_name = line({"k8s.pod.name": "Vllm_0"})
    in_2099 = line({}, time_ns=4_070_908_800 * 10**9)
    source = tmp_path / "recorded.jsonl"
    source.write_text("\n".join([good, not_hex, no_pod, not_hex, bad_name, in_2099, *[not_hex] * 5]) + "\n")
    assert main(["ingest", str(source), "--config", str(config), "--check"]) == 0
    err = capsys.readouterr().err
    assert err.splitlines() == [
        f"{source}: 11 valid, 0 rejected (checked only: nothing ingested)",
        f"{source}: 7 valid alerts are never isolated: the pod check cannot verify them (container.id is"
        " not a runtime container id (12 to 64 hex characters)): lines 2, 4, 7, 8, 9 and 2 more",
        f"{source}: 1 valid alert is never isolated: the pod check cannot verify it (alert carries no"
        " k8s.ns.name/k8s.pod.name): line 3",
        f"{source}: 1 valid alert is never isolated: the pod check cannot verify it (namespace or pod is"
        " not a valid Kubernetes name): line 5",
        f"{source}: 1 valid alert is dated more than 120 s ahead of this machine's clock: ingest dates each"
        " when it comes (a release made since is weighed against that): line 6",
    ]
    # Lines any pod may verify, dated now: the summary alone.
    source.write_text(f"{good}\n")
    assert main(["ingest", str(source), "--config", str(config), "--check"]) == 0
    assert capsys.readouterr().err.splitlines() == [
        f"{source}: 1 valid, 0 rejected (checked only: nothing ingested)"
    ]


@pytest.mark.parametrize("check", [False, True])
def test_a_source_without_an_alert_is_said(
    tmp_path: Path, seeded: Seeded, capsys: pytest.CaptureFixture[str], check: bool
) -> None:
    config = write_config(tmp_path, seeded[2])
    source = tmp_path / "empty.jsonl"
    source.write_text("\n  \n")
    argv = ["ingest", str(source), "--config", str(config), "--settle-seconds", "0"]
    # A check passes only on alerts (review-50 L: a CI gate on an empty capture); ingest says it.
    assert main([*argv, *(["--check"] if check else [])]) == (1 if check else 0)
    assert f"{source}: no alert in it (empty, or blank lines only)\n" in capsys.readouterr().err
