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


async def test_bytes_bound_alerts_in_flight_and_waiters_are_served_in_order() -> None:
    slots = Slots(10, max_bytes=100)
    assert slots.try_take(60)
    assert not slots.try_take(50)  # 110 bytes: over the bound, though slots are free
    heavy = asyncio.ensure_future(slots.take(50))
    light = asyncio.ensure_future(slots.take(10))
    await asyncio.sleep(0)
    assert not heavy.done() and not light.done()  # first come, first served: the light one waits too
    assert not slots.try_take(1)  # nor does a fresh arrival pass the waiters
    slots.release(60)
    await asyncio.wait_for(asyncio.gather(heavy, light), 1)
    assert slots.free_bytes == 40 and slots.free == 8


async def test_an_alert_heavier_than_the_bound_goes_through_alone() -> None:
    slots = Slots(10, max_bytes=100)
    assert slots.try_take(500)  # nothing else in flight: else it could never go
    assert not slots.try_take(1)
    slots.release(500)
    assert slots.try_take(1)
    assert not slots.try_take(500)  # not beside another


async def test_a_cancelled_heavy_waiter_lets_the_lighter_ones_behind_it_in() -> None:
    slots = Slots(10, max_bytes=100)
    assert slots.try_take(80)
    heavy = asyncio.ensure_future(slots.take(50))
    light = asyncio.ensure_future(slots.take(20))
    await asyncio.sleep(0)
    heavy.cancel()
    await asyncio.wait_for(light, 1)
    assert heavy.cancelled() and slots.free_bytes == 0


async def test_each_slot_weighs_its_overhead_too() -> None:
    slots = Slots(10, max_bytes=100, slot_bytes=30)
    assert slots.try_take(40)  # 70 of 100
    assert not slots.try_take(1)  # 31 more: over
    waiter = asyncio.ensure_future(slots.take(1))  # waits for room
    await asyncio.sleep(0)
    assert not waiter.done()
    slots.release(40)  # gives back 70
    await asyncio.wait_for(waiter, 1)
    assert slots.free_bytes == 69 and slots.free == 9
