"""The ``serve`` fixture: the responder's HTTP server on loopback, shared by the server's tests."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from responder.ingest.httpserver import HttpServer, Limits, Route
from responder.ingest.refusals import RefusalLog
from tests.ingest.test_httpserver import Running, Serve


@pytest.fixture
async def serve() -> AsyncIterator[Serve]:
    """Starts servers on loopback (with TLS when given a context); stops them after the test and
    fails it on any loop-level error."""
    loop = asyncio.get_running_loop()
    loop_errors: list[dict[str, Any]] = []
    previous_handler = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, context: loop_errors.append(context))
    started: list[Running] = []

    async def start(
        routes: list[Route],
        limits: Limits | None = None,
        *,
        on_refused_connection: Callable[[], None] | None = None,
        ssl_context: ssl.SSLContext | None = None,
        refusals: RefusalLog | None = None,
    ) -> Running:
        server = HttpServer(routes, limits, on_refused_connection=on_refused_connection, refusals=refusals)
        host, port = await server.start("127.0.0.1", 0, ssl_context)
        running = Running(server, host, port)
        started.append(running)
        return running

    try:
        yield start
    finally:
        for running in started:
            for writer in running.writers:
                writer.close()
            await running.server.stop(grace_seconds=1.0)
        loop.set_exception_handler(previous_handler)
    assert loop_errors == [], f"the event loop reported errors: {loop_errors}"
