"""JSON log lines stay one record per line for any reader: JSON escapes the C0 controls, and the
formatter escapes what JSON may carry raw but a reader may split on (DEL, the C1 controls, NEL among
them, and U+2028/U+2029: Python's str.splitlines, JavaScript before ES2019). The text format's
escape_text guards the text format likewise (test_logs_text.py)."""

from __future__ import annotations

import asyncio
import io
import json
import logging
from collections.abc import Callable

from responder.alert import Alert
from responder.config import HttpInput
from responder.ingest.http import Authenticator, build_input_server
from responder.ingest.sink import Accepted, InputName
from responder.logs import escape_json, setup_logging

# What str.splitlines breaks on beyond \n and \r (\x0b, \x0c, \x1c-\x1e are C0: JSON escapes those).
SPLITTERS = "\x85\u2028\u2029"
RAW = f"a\x7fb\x80c{SPLITTERS}d\x9fe — ü ✓ 😀"


class NeverReached:
    """The sink of an input whose requests are all refused from their heads."""

    async def submit(
        self, alert: Alert, source: InputName, *, wait_seconds: float | None = None, raw: bytes | None = None
    ) -> Accepted:
        raise AssertionError("a refused request reached the sink")

    def offer(
        self,
        alert: Alert,
        source: InputName,
        raw: bytes | None,
        on_done: Callable[[Accepted | BaseException], None],
    ) -> bool:
        raise AssertionError("a refused request reached the sink")

    def reject(self, source: InputName, reason: str, detail: str) -> None:
        raise AssertionError("a refused request reached the sink")


def logged(message: str, **extra: object) -> str:
    stream = io.StringIO()
    setup_logging("info", "json", stream)
    logging.getLogger("serving_guard.test").warning("%s", message, extra=extra)
    return stream.getvalue()


def test_a_record_with_nel_and_line_separators_is_one_line_for_splitlines() -> None:
    text = logged(f"refused: Expect: {RAW}", header=RAW, **{f"key{SPLITTERS}": "value"})
    assert text.endswith("\n")
    (line,) = text.splitlines()
    for char in "\x7f\x80\x9f" + SPLITTERS:
        assert char not in line
    assert "\\u0085" in line and "\\u2028" in line and "\\u2029" in line and "\\u007f" in line
    entry = json.loads(line)  # the escapes mean the same characters
    assert entry["msg"] == f"refused: Expect: {RAW}"
    assert entry["header"] == RAW
    assert entry[f"key{SPLITTERS}"] == "value"


def test_other_text_is_written_as_it_was() -> None:
    text = logged("incident decided", pod="vllm-0", rule="Shell in serving pod — ü ✓ 😀")
    assert "Shell in serving pod — ü ✓ 😀" in text  # ensure_ascii stays off: readable
    assert escape_json('{"a": "b — ü"}') == '{"a": "b — ü"}'


def test_escape_json_writes_each_one_as_a_json_escape() -> None:
    assert escape_json('"\x7f\x85\x9f\u2028\u2029"') == '"\\u007f\\u0085\\u009f\\u2028\\u2029"'
    assert json.loads(escape_json(json.dumps(RAW, ensure_ascii=False))) == RAW


async def test_a_header_with_nel_refused_by_the_input_logs_one_record() -> None:
    """The review's case: a 417 on ``Expect: \\x85{...}\\x85`` (header bytes read as latin-1)."""
    stream = io.StringIO()
    setup_logging("info", "json", stream)
    config = HttpInput(enabled=True, allow_unauthenticated=True)

    server = build_input_server(config, NeverReached(), Authenticator(config, None))
    host, port = await server.start("127.0.0.1", 0)
    try:
        reader, writer = await asyncio.open_connection(host, port)
        forged = b'\x85{"level":"error","logger":"serving_guard.service","msg":"forged"}\xe2\x80\xa8'
        writer.write(
            b"POST /v1/alerts HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\nExpect: " + forged + b"\r\n\r\n{}"
        )
        assert (await asyncio.wait_for(reader.read(200), 3.0)).startswith(b"HTTP/1.1 417 ")
        writer.close()
    finally:
        await server.stop(0.5)
    records = [json.loads(line) for line in stream.getvalue().splitlines()]  # each piece is a record
    assert records and all(record["logger"].startswith("serving_guard") for record in records)
    assert not any(record.get("msg") == "forged" for record in records)
    assert any("\x85" in record["msg"] for record in records)
