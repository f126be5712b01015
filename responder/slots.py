"""Slots: the bound on alerts in flight, by count and by bytes, takeable without awaiting.

An ``asyncio.Semaphore`` can only be taken by awaiting it, which costs the HTTP input a task per
request. ``Slots`` also offers ``try_take``: a free slot is taken in the same call that received
the alert, and only an input that has to wait for room awaits ``take``.

A slot is taken with a weight (the alert's bytes) and given back with the same weight: in flight
are at most ``count`` alerts and ``max_bytes`` of them, each weighing ``slot_bytes`` more (what any
alert holds beyond its bytes), so that a storm of large alerts holds no more memory than one of
small ones. One alert heavier than ``max_bytes`` still goes through when nothing else is in flight
(else it could never be taken).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque


class Slots:
    def __init__(self, count: int, max_bytes: int | None = None, slot_bytes: int = 0) -> None:
        self._free = count
        self._slot_bytes = slot_bytes
        self._count = count
        self._max_bytes = max_bytes if max_bytes is not None else 1 << 62
        self._free_bytes = self._max_bytes
        self._waiters: deque[tuple[asyncio.Future[None], int]] = deque()

    @property
    def free(self) -> int:
        return self._free

    @property
    def free_bytes(self) -> int:
        return self._free_bytes

    def _fits(self, weight: int) -> bool:
        return self._free > 0 and (weight <= self._free_bytes or self._free == self._count)

    def try_take(self, weight: int = 0) -> bool:
        return self._try_take(weight + self._slot_bytes)

    def _try_take(self, weight: int) -> bool:
        # Waiters go first: a burst of fresh arrivals must not starve an input that is waiting.
        if not self._waiters and self._fits(weight):
            self._free -= 1
            self._free_bytes -= weight
            return True
        return False

    async def take(self, weight: int = 0) -> None:
        weight += self._slot_bytes
        if self._try_take(weight):
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (waiter, weight)
        self._waiters.append(entry)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self._release(weight)  # handed a slot just as the wait was cancelled: pass it on
            else:
                self._remove(entry)
                self._hand_over()  # a heavy waiter gone may let lighter ones behind it in
            raise

    def release(self, weight: int = 0) -> None:
        self._release(weight + self._slot_bytes)

    def _release(self, weight: int) -> None:
        self._free += 1
        self._free_bytes += weight
        if self._waiters:
            self._hand_over()

    def _hand_over(self) -> None:
        """Give the freed room to the waiters, first come first served, while the first fits."""
        while self._waiters:
            waiter, weight = self._waiters[0]
            if waiter.done():  # cancelled, its removal not run yet
                self._waiters.popleft()
                continue
            if not self._fits(weight):
                return
            self._waiters.popleft()
            self._free -= 1
            self._free_bytes -= weight
            waiter.set_result(None)  # the slot goes straight to the waiter

    def _remove(self, entry: tuple[asyncio.Future[None], int]) -> None:
        with contextlib.suppress(ValueError):
            self._waiters.remove(entry)
