"""Slots: the bound on alerts in flight, takeable at once or awaited."""

from __future__ import annotations

import asyncio

import pytest

from responder.slots import Slots


async def test_free_slots_are_taken_at_once_and_waiters_go_first() -> None:
    slots = Slots(1)
    assert slots.try_take()
    assert not slots.try_take()
    waiter = asyncio.ensure_future(slots.take())
    await asyncio.sleep(0)
    slots.release()  # goes straight to the waiter, not back to the pool
    assert not slots.try_take()
    await asyncio.wait_for(waiter, 1)
    slots.release()
    assert slots.try_take()


async def test_a_waiter_cancelled_after_being_handed_a_slot_passes_it_on() -> None:
    slots = Slots(1)
    assert slots.try_take()
    first = asyncio.ensure_future(slots.take())
    second = asyncio.ensure_future(slots.take())
    await asyncio.sleep(0)
    slots.release()  # handed to the first waiter...
    first.cancel()  # ...which is cancelled before it runs
    await asyncio.wait_for(second, 1)  # the slot went on to the second
    assert first.cancelled()
    assert not slots.try_take()
    slots.release()
    assert slots.try_take()


async def test_a_wait_that_times_out_leaves_no_trace() -> None:
    slots = Slots(1)
    assert slots.try_take()
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(slots.take(), 0.01)
    slots.release()
    assert slots.try_take(), "the timed-out waiter must not have kept the slot or blocked the pool"
