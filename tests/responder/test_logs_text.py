"""Log lines quote what senders wrote (rule names, pod names, paths, details): in the text format a
newline in them must not forge a line of its own, nor a NUL make grep take the log for binary. The
JSON format escapes them by being JSON."""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path

from responder.logs import setup_logging
from simulators.falco_json import falco_alert, falco_bytes
from tests.responder.test_http_input import Seeded, post, start

FORGED = "\nerror   serving_guard.service: FORGED LINE"
# Every kind of character that breaks a line or a grep: C0 (newline, NUL, escape...), DEL, C1 and the
# Unicode line and paragraph separators; and a tab.
UNPRINTABLE = "a\x00b\rc\td\x1b[2Je\x7ff\x85g\u2028h\u2029i"
ESCAPED = "a\\x00b\\rc\\td\\x1b[2Je\\x7ff\\x85g\\u2028h\\u2029i"


def logged(fmt: str, message: str, **extra: object) -> str:
    stream = io.StringIO()
    setup_logging("info", fmt, stream)
    logging.getLogger("serving_guard.test").warning("%s", message, extra=extra)
    return stream.getvalue()


def test_text_lines_escape_control_characters_in_the_message_and_the_fields() -> None:
    text = logged("text", f"rule{FORGED}", pod=UNPRINTABLE, reason="plain")
    assert text.count("\n") == 1 and text.endswith("\n")
    assert text == (
        "warning serving_guard.test: rule\\nerror   serving_guard.service: FORGED LINE "
        f"pod={ESCAPED} reason=plain\n"
    )


def test_text_lines_without_control_characters_are_as_they_were() -> None:
    assert logged("text", "incident decided", pod="vllm-0", rule="Shell in serving pod — ü") == (
        "warning serving_guard.test: incident decided pod=vllm-0 rule=Shell in serving pod — ü\n"
    )


def test_json_lines_keep_every_character_escaped_on_one_line() -> None:
    text = logged("json", f"rule{FORGED}", pod=UNPRINTABLE)
    line = text.removesuffix("\n")
    assert "\n" not in line and "\r" not in line and "\x00" not in line
    entry = json.loads(line)
    assert entry["msg"] == f"rule{FORGED}" and entry["pod"] == UNPRINTABLE


async def test_an_alert_cannot_forge_lines_in_the_responder_s_text_log(
    tmp_path: Path, seeded: Seeded
) -> None:
    """As the audit did: an alert whose rule and pod name carry a log line of their own."""
    stream = io.StringIO()
    setup_logging("info", "text", stream)
    responder = await start(tmp_path, seeded[2], {"allow_unauthenticated": True})
    try:
        alert = falco_alert(seeded[1]["vllm"], f"Shell in serving pod{FORGED} rule", "Notice", "shell", {})
        alert["output_fields"]["k8s.pod.name"] += f"{FORGED} pod\x00"
        status, _, _ = await post(responder.http_url or "", falco_bytes(alert))
        assert status == 202
        assert responder.pipeline is not None and await responder.pipeline.drain(timeout=10)
    finally:
        await responder.stop()
    lines = stream.getvalue().splitlines()
    assert any("FORGED LINE" in line for line in lines), "the alert's text was logged"
    assert [line for line in lines if line.startswith("error   serving_guard.service: FORGED")] == []
    assert "\x00" not in stream.getvalue()
