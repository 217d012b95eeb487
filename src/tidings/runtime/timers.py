"""The timer loop: fires a service's due durable timers (see :mod:`tidings.timers`).

Every store keeps timers as documents of ``_timers``, keyed by due time, so one loop
serves them all: each ``interval`` (0.2 s) it lists the collection in key order (due
order), a page of ``PAGE`` at a time, until the first timer not due yet, and fires each
due one in a unit of work of its own: read it (gone: another member fired or cancelled
it), delete it, run the service's handler for its kind, commit. It reads on past the
timers that are backing off (below), so any number of failing timers never holds back
the ones due after them; the price is that each sweep lists the failing ones again.

The crash story:

* The process dies before the commit: nothing of the firing happened and the timer is
  still due, so it fires at the next sweep after the restart (of this process or of any
  member of the group, since the timer is in the shared store). Timers are therefore
  fired at least once, and late by at most the downtime plus one interval.
* It dies after the commit: the handler's effects and the deletion are durable together;
  what it published is in the outbox and the relay sends it after the restart.
* Two members fire one timer at once: both may run the handler; the store lets one
  commit (the saga's state is written with an expected version) and the other gets a
  ``ConcurrencyConflict``, backs off and tries again, and then finds the timer gone.
* A handler that raises is rolled back (the timer stays) and is tried again after a
  doubling delay (1 s up to 60 s), logged each time; other timers keep firing.
* A database outage stops the sweep; the loop logs it and tries again next interval.

A timer of a kind nobody handles (the code that armed it is gone) is deleted and logged,
so it cannot block the timers due after it.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from datetime import datetime, timedelta

from tidings.envelope import Envelope, utc_now
from tidings.reliability import policy
from tidings.reliability.policy import INFRASTRUCTURE_ERRORS
from tidings.service import Context, Service
from tidings.store.base import ConcurrencyConflict, UnitOfWork
from tidings.timers import TIMERS, due_of

log = logging.getLogger("tidings.timers")

PAGE = 100
Units = Callable[[Envelope | None], AbstractAsyncContextManager[tuple[UnitOfWork, Context]]]


class TimerLoop:
    """Fires the due timers of one service, through its units of work (``units``)."""

    def __init__(
        self,
        service: Service,
        units: Units,
        *,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        now: Callable[[], datetime] = utc_now,
        interval: float = 0.2,
        rng: random.Random | None = None,
    ) -> None:
        self.service = service
        self.units = units
        self.sleep = sleep
        self.now = now
        self.interval = interval
        self.rng = rng or random.Random()
        self.fired = 0
        self._failing: dict[str, tuple[int, datetime]] = {}  # key -> (failures, retry at)

    async def run(self, stopping: asyncio.Event) -> None:
        """Sweep every ``interval`` until ``stopping`` is set."""
        while not stopping.is_set():
            try:
                await self.fire_due()
            except INFRASTRUCTURE_ERRORS as exc:
                log.warning("%s: cannot read the timers: %s", self.service.name, exc)
            except Exception:
                # A conflict storm, a timer key that does not parse: logged, and the next
                # sweep goes on. Ending here would stop every timer of this process, and
                # the task's error would only surface (and be dropped) at stop.
                log.exception("%s: timer sweep failed", self.service.name)
            await self.sleep(self.interval)

    async def due(self, now: datetime | None = None) -> list[str]:
        """Keys of every timer due at ``now``, in due order (those backing off included)."""
        return [key async for key in self._due_keys(now or self.now())]

    async def _due_keys(self, now: datetime) -> AsyncIterator[str]:
        """The due keys, read a page at a time, each page after the last key of the one
        before (a cursor, so timers fired or deleted meanwhile do not shift it)."""
        after: str | None = None
        while True:
            async with self.units(None) as (uow, _):
                docs = await uow.list(TIMERS.name, PAGE, after)
            for doc in docs:
                if due_of(doc.key) > now:  # key order is due order: none after it is due
                    return
                yield doc.key
            if len(docs) < PAGE:
                return
            after = docs[-1].key

    async def fire_due(self, now: datetime | None = None) -> int:
        """Fire every timer due at ``now``; how many fired (ran their handler and committed).
        Timers backing off are skipped and read past, however many they are."""
        now = now or self.now()
        fired = 0
        async for key in self._due_keys(now):
            failing = self._failing.get(key)
            if failing is not None and failing[1] > now:
                continue
            if await self.fire(key):
                fired += 1
        self.fired += fired
        return fired

    async def fire(self, key: str) -> bool:
        """Fire the timer ``key`` if it is still there; whether it fired. Conflicts are
        backed off and tried again; a failing handler is left for a later sweep."""
        conflicts = 0
        while True:
            try:
                return await self._fire_once(key)
            except ConcurrencyConflict:
                conflicts += 1
                if conflicts >= policy.CONFLICT_STORM:
                    raise
                await self.sleep(policy.conflict_delay(conflicts, self.rng))
            except INFRASTRUCTURE_ERRORS:
                raise
            except Exception:
                failures = self._failing.get(key, (0, self.now()))[0] + 1
                delay = min(60.0, 2.0 ** (failures - 1))
                self._failing[key] = (failures, self.now() + timedelta(seconds=delay))
                log.exception(
                    "%s: timer %s failed (%d time(s)); tried again in %.0fs",
                    self.service.name,
                    key,
                    failures,
                    delay,
                )
                return False

    async def _fire_once(self, key: str) -> bool:
        service = self.service
        async with self.units(None) as (uow, ctx):
            doc = await uow.get(TIMERS.name, key)
            if doc is None:  # fired by another member, or cancelled
                self._failing.pop(key, None)
                return False
            timer = TIMERS.model.model_validate(doc.data)
            ctx.cause = timer.cause(service.name)  # what it publishes keeps the correlation
            await uow.delete(TIMERS.name, key)
            handler = service.timer_handlers.get(timer.kind)
            if handler is None:
                log.warning(
                    "%s: timer %s of kind %r has no handler (service.on_timer); dropped",
                    service.name,
                    key,
                    timer.kind,
                )
            else:
                await handler(timer, ctx)
        self._failing.pop(key, None)
        return True
