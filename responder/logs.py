"""Structured logs: one JSON object per line, with every `extra` field (alert_id, incident, ...)."""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from contextvars import ContextVar
from typing import Any

from responder.terminal import printable

# The alert being processed in this task or thread (set by the pipeline): every log line
# written while working on an alert carries its id, even from code that never saw the alert.
current_alert_id: ContextVar[str | None] = ContextVar("current_alert_id", default=None)

# Attributes every LogRecord has; anything else came in through `extra=`.
_STANDARD = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime", "taskName"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_"):
                entry[key] = value
        alert_id = current_alert_id.get()
        if alert_id is not None:
            entry.setdefault("alert_id", alert_id)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return escape_json(json.dumps(entry, default=str, ensure_ascii=False))


# What JSON may carry raw but a reader may take for a line break or a control: DEL, the C1 controls
# (U+0085 is NEL) and the Unicode line and paragraph separators (str.splitlines, JavaScript before
# ES2019). JSON escapes the C0 controls itself.
_JSON_UNSAFE = re.compile("[\x7f-\x9f\u2028\u2029]")


def escape_json(text: str) -> str:
    """JSON text (``ensure_ascii=False``) with those characters written as ``\\uXXXX`` escapes: they
    only occur inside its strings, where the escape means the same character."""
    if _JSON_UNSAFE.search(text) is None:
        return text
    return _JSON_UNSAFE.sub(lambda match: f"\\u{ord(match.group()):04x}", text)


def escape_text(text: str) -> str:
    """``text`` as a text log line may carry it: every character that could break the line (\\n,
    \\x00, DEL, C1, U+2028), reorder or hide what a terminal shows (bidi overrides such as U+202E,
    zero-width and other format characters, fillers such as U+3164) written as an escape, as the
    audit shows it (:func:`responder.terminal.printable`)."""
    return printable(text)


class TextFormatter(logging.Formatter):
    """One line per record, whatever the message and fields hold (they may quote an attacker)."""

    def format(self, record: logging.LogRecord) -> str:
        fields = {k: v for k, v in record.__dict__.items() if k not in _STANDARD and not k.startswith("_")}
        alert_id = current_alert_id.get()
        if alert_id is not None:
            fields.setdefault("alert_id", alert_id)
        extras = " ".join(f"{key}={escape_text(str(value))}" for key, value in fields.items())
        line = f"{record.levelname.lower():7} {record.name}: {escape_text(record.getMessage())}"
        return f"{line} {extras}" if extras else line


def setup_logging(level: str = "info", fmt: str = "json", stream: Any = None) -> None:
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger("serving_guard")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False
