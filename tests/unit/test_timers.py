"""Durable timers on a real SQLite store: armed with the unit of work, fired once when due,
kept (and backed off) when the handler fails, and carrying the armer's correlation."""

from __future__ import annotations

from datetime import timedelta

import pytest

from tidings import Context, Event, Service
from tidings.envelope import utc_now
from tidings.runtime import timers as timers_loop
from tidings.testing import TestApp
from tidings.timers import TIMERS, Timer


class Remind(Event, topic="timers.remind", key="name"):
    name: str
    after: float = 5


class Reminded(Event, topic="timers.reminded", key="name"):
    name: str


service = Service("reminder")
fired: list[str] = []
failing: set[str] = set()


@service.on
async def arm(event: Remind, ctx: Context) -> None:
    await ctx.schedule("remind", event.name, after=event.after, data={"who": event.name})


@service.on_timer("remind")
async def remind(timer: Timer, ctx: Context) -> None:
    if timer.name in failing:
        raise RuntimeError(f"cannot remind {timer.name}")
    fired.append(timer.data["who"])
    ctx.publish(Reminded(name=timer.name))


async def test_a_timer_fires_once_when_due_and_keeps_the_correlation() -> None:
    fired.clear()
    async with TestApp(service) as app:
        cause = await app.publish(Remind(name="ada"))
        await app.drain()
        async with app.unit_of_work(service) as ctx:
            [timer] = await ctx.list(TIMERS)
        runtime = app.runtime(service)
        assert await runtime.fire_timers(timer.due - timedelta(seconds=1)) == 0
        assert await runtime.fire_timers(timer.due) == 1
        assert await runtime.fire_timers(timer.due + timedelta(seconds=60)) == 0  # gone
        assert fired == ["ada"]
        await app.drain()  # relays what the firing published
        [reminded] = await app.envelopes("timers.reminded")
        assert reminded.correlationid == cause.id  # the armer's correlation goes on


async def test_a_failing_handler_keeps_its_timer_and_backs_off() -> None:
    fired.clear()
    failing.add("bob")
    try:
        async with TestApp(service) as app:
            await app.publish(Remind(name="bob", after=0))
            await app.drain()
            loop = app.runtime(service).timers
            now = utc_now() + timedelta(seconds=1)
            assert await loop.fire_due(now) == 0  # raised: rolled back, the timer stays
            assert len(await loop.due(now)) == 1
            assert await loop.fire_due(now) == 0  # backing off: not tried again yet
            failing.discard("bob")
            assert await loop.fire_due(now + timedelta(seconds=2)) == 1  # after the delay
            assert fired == ["bob"]
    finally:
        failing.discard("bob")


async def test_a_cancelled_timer_never_fires() -> None:
    fired.clear()
    async with TestApp(service) as app:
        await app.publish(Remind(name="cy", after=1))
        await app.drain()
        async with app.unit_of_work(service) as ctx:
            [timer] = await ctx.list(TIMERS)
            await ctx.cancel_timer(timer.key)
        assert await app.runtime(service).fire_timers(timer.due + timedelta(seconds=5)) == 0
        assert fired == []


async def test_a_page_of_failing_timers_does_not_block_the_ones_due_after_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """More failing timers than a page holds, then a good one: the sweep reads past them."""
    monkeypatch.setattr(timers_loop, "PAGE", 3)  # a page of 3: the same rule as 100, faster
    fired.clear()
    bad = [f"bad{i}" for i in range(4)]  # more than a page
    failing.update(bad)
    try:
        async with TestApp(service) as app:
            start = utc_now() - timedelta(seconds=10)
            async with app.unit_of_work(service) as ctx:
                for i, name in enumerate([*bad, "good"]):  # due in this order
                    at = start + timedelta(seconds=i)
                    await ctx.schedule("remind", name, at=at, data={"who": name})
            loop = app.runtime(service).timers
            assert len(await loop.due()) == 5  # every due one, across pages
            assert await loop.fire_due() == 1  # the bad ones fail, the good one fires
            assert fired == ["good"]
            assert await loop.fire_due() == 0  # the bad ones back off: skipped, read past
            assert len(await loop.due()) == 4
    finally:
        failing.difference_update(bad)
