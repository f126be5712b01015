"""The Kubernetes client is synchronous: its calls run on a bounded thread pool, never on the
event loop, carrying the alert's log context with them."""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")


async def in_pool(executor: ThreadPoolExecutor, function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """``function(*args, **kwargs)`` run on ``executor``'s threads, awaited from the loop."""
    loop = asyncio.get_running_loop()
    context = contextvars.copy_context()  # the alert id follows the call onto the pool thread
    return await loop.run_in_executor(executor, lambda: context.run(function, *args, **kwargs))
