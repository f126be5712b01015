"""Test helpers shared across test packages: a responder config for a seeded emulator."""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import ssl
import subprocess
import time
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import yaml
from aiohttp import web

from responder.config import Config, load_config_text

SHELL_RULE = "Shell in serving pod"


@contextlib.contextmanager
def refusing_port() -> Iterator[int]:
    """A loopback port that refuses connections for as long as it is held: bound, never listening.
    (A port bound and closed again can be taken meanwhile by any other socket of the machine.)"""
    with socket.socket() as bound:
        bound.bind(("127.0.0.1", 0))
        yield int(bound.getsockname()[1])


def responder_config(
    tmp_path: Path,
    kubeconfig: str,
    *,
    http: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
) -> Config:
    """A config with the seeded cluster, a journal under tmp_path and loopback listeners."""
    data: dict[str, Any] = {
        "inputs": {"http": http or {"listen": "127.0.0.1:0", "allow_unauthenticated": True}},
        "server": {"metrics_listen": "127.0.0.1:0"},
        "cluster": {
            "kubeconfig": kubeconfig,
            "cache_ttl_seconds": 5,
            "retry": {"attempts": 3, "initial_backoff_seconds": 0.01},
        },
        "journal": {"path": str(tmp_path / "journal.db"), "commit_interval_ms": 1},
        "policies": [
            {
                "name": "isolate-shells",
                "match": {"rules": [SHELL_RULE, "Reverse shell*"], "min_priority": "notice"},
                "actions": ["notify", "quarantine"],
            },
            {
                "name": "flag-downloads",
                "match": {"rules": ["Runtime download*"]},
                "actions": ["notify", "annotate"],
            },
        ],
        "logging": {"level": "warning", "format": "text"},
    }
    for key, value in (extra or {}).items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    return load_config_text(yaml.safe_dump(data), str(tmp_path / "config.yaml"))


class FakeClock:
    """A clock the test moves: the responder's notion of "now" (time-based rules without sleeping)."""

    def __init__(self) -> None:
        self.now = time.time_ns()

    def __call__(self) -> int:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += int(seconds * 1e9)


class Records(logging.Handler):
    """The records of one logger, kept whatever earlier tests did to propagation (setup_logging
    stops ``serving_guard`` records at its own handler, out of caplog's reach)."""

    def __init__(self, name: str, level: int) -> None:
        super().__init__(level)
        self.logger = logging.getLogger(name)
        self.messages: list[str] = []
        self.levels: list[int] = []
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())
        self.levels.append(record.levelno)
        self.records.append(record)

    def __enter__(self) -> Records:
        self.saved_level = self.logger.level
        self.logger.setLevel(self.level)
        self.logger.addHandler(self)
        return self

    def __exit__(self, *exc: object) -> None:
        self.logger.removeHandler(self)
        self.logger.setLevel(self.saved_level)


@contextlib.asynccontextmanager
async def loopback_server(
    answer: Callable[[web.Request], Awaitable[web.StreamResponse]],
    *,
    path: str = "/v1/audit",
    ssl_context: ssl.SSLContext | None = None,
) -> AsyncIterator[int]:
    """An aiohttp server on 127.0.0.1 (a free port, yielded) answering GET ``path`` with ``answer``;
    ``path="*"`` answers every method and path."""
    app = web.Application()
    if path == "*":
        app.router.add_route("*", "/{tail:.*}", answer)
    else:
        app.router.add_get(path, answer)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ssl_context).start()
    try:
        yield runner.addresses[0][1]
    finally:
        await runner.cleanup()


def without_unchecked_names_note(err: str) -> str:
    """`config check`'s stderr without its note that, without --rules, the policies' rule names were
    not checked (tests of other notes and warnings compare stderr whole)."""
    return "".join(
        line for line in err.splitlines(keepends=True) if "are not checked against any rules file" not in line
    )


def wait_until_ready(port: int, process: subprocess.Popen[bytes], timeout: float = 60.0) -> None:
    """Until the responder ``process`` started says it is ready on /readyz at ``port``; fails at
    once, with what it said, if it exits first. A bound on a hang, not a timing assertion: a cold
    interpreter importing grpc, kubernetes and slack-sdk on a loaded machine takes seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            said = process.stderr.read().decode(errors="replace")[-2000:] if process.stderr else ""
            raise AssertionError(f"responder exited ({process.returncode}) before it was ready: {said}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as response:
                if json.loads(response.read())["ready"] is True:
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"responder never became ready in {timeout:g} s")
