"""Serve an asyncio service from a daemon thread with its own event loop, for synchronous code
(the official kubernetes client, pytest fixtures) that needs a live loopback server beside it."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Any


class BackgroundLoop:
    """Runs ``serving()`` (an async context manager) until :meth:`stop`; ``start`` waits for it."""

    def __init__(self, name: str, serving: Callable[[], AbstractAsyncContextManager[Any]]) -> None:
        self._name = name
        self._serving = serving
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self._serve())
        except BaseException as exc:  # surfaced to the starting thread
            self._error = exc
            self._ready.set()
        finally:
            self._loop.close()

    async def _serve(self) -> None:
        self._stop = asyncio.Event()
        async with self._serving():
            self._ready.set()
            await self._stop.wait()

    def start(self) -> None:
        self._thread.start()
        self._ready.wait(timeout=30)
        if self._error is not None or not self._ready.is_set():
            raise RuntimeError(f"{self._name} did not start: {self._error!r}")

    def stop(self) -> None:
        if self._stop is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stop.set)
            self._thread.join(timeout=10)

    def call(self, function: Callable[..., Any], *args: Any) -> Any:
        """Run a callable on the service's loop (its state is not thread-safe)."""

        async def invoke() -> Any:
            return function(*args)

        return asyncio.run_coroutine_threadsafe(invoke(), self._loop).result(timeout=10)
