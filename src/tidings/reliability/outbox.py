"""The outbox relay: moves committed outbox rows to the broker, after the commit.

A unit of work writes the records it publishes into the store's outbox, in the same
transaction as its state. The relay claims those rows, publishes them, and deletes them
once the broker has them. A crash between commit and publish therefore loses nothing (the
rows wait for the next relay), and a rolled-back unit of work publishes nothing (its rows
never existed). A crash between publish and delete publishes the rows again: consumers'
inboxes absorb the duplicates.

While the broker or the database is down the relay retries with a growing, capped delay
(:func:`tidings.reliability.policy.outage_delay`), slept through the injected ``sleep`` so
that tests with a fake clock see every wait.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from tidings.reliability.policy import outage_delay
from tidings.store.base import OutboxEntry, Store, StoreUnavailable
from tidings.transport.base import Transport

log = logging.getLogger("tidings.outbox")


class OutboxRelay:
    """Relays one service's outbox. Several relays (processes) may run at once."""

    def __init__(
        self,
        store: Store,
        transport: Transport,
        service: str,
        *,
        batch_size: int = 500,
        sweep_interval: float = 1.0,
        lease_seconds: float = 30.0,
        on_published: Callable[[list[OutboxEntry]], None] | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.store = store
        self.transport = transport
        self.service = service
        self.batch_size = batch_size
        self.sweep_interval = sweep_interval
        self.lease_seconds = lease_seconds
        self.on_published = on_published
        self.sleep = sleep
        self._wake = asyncio.Event()
        self._stopping = False
        self._task: asyncio.Task[None] | None = None
        self.published = 0

    def wake(self) -> None:
        """Tell the relay new rows were committed (saves waiting for the next sweep)."""
        self._wake.set()

    async def relay_once(self) -> int:
        """Claim, publish and delete one batch; returns how many rows it relayed."""
        entries = await self.store.claim_outbox(self.service, self.batch_size, self.lease_seconds)
        if not entries:
            return 0
        failures = 0
        while True:
            try:
                await self.transport.publish([e.record for e in entries])
                break
            except Exception as exc:  # the broker is down: keep the claimed rows and retry
                if self._stopping:
                    raise
                failures += 1
                delay = outage_delay(failures)
                log.warning(
                    "outbox relay of %s: publish failed (%s); retrying in %.1fs",
                    self.service,
                    exc,
                    delay,
                )
                await self.sleep(delay)
        await self.store.delete_outbox([e.id for e in entries])
        self.published += len(entries)
        if self.on_published is not None:
            self.on_published(entries)
        return len(entries)

    async def run(self) -> None:
        """Relay until :meth:`stop`; wakes on :meth:`wake`, the store's notice, or a sweep."""
        outages = 0
        while not self._stopping:
            try:
                relayed = await self.relay_once()
            except StoreUnavailable as exc:  # the rows stay in the outbox: try again later
                outages += 1
                delay = outage_delay(outages)
                log.warning("outbox relay of %s: %s; retrying in %.1fs", self.service, exc, delay)
                await self.sleep(delay)
                continue
            outages = 0
            if relayed:
                continue
            self._wake.clear()
            waiters = [
                asyncio.ensure_future(self._wake.wait()),
                asyncio.ensure_future(self.store.wait_outbox(self.service, self.sweep_interval)),
            ]
            try:
                await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for waiter in waiters:
                    waiter.cancel()

    def start(self) -> asyncio.Task[None]:
        """Run :meth:`run` in a task of its own, which :meth:`stop` ends."""
        self._task = asyncio.create_task(self.run(), name=f"relay {self.service}")
        return self._task

    async def stop(self, drain_seconds: float = 5.0) -> None:
        """Stop, relaying what is committed now if the broker takes it within
        ``drain_seconds``; whatever is left stays in the outbox for the next start.

        A relay started with :meth:`start` may hold a batch it claimed a moment ago: it
        is let finish that batch rather than cancelled mid-publish, which would leave the
        rows leased in the outbox until the lease ends.
        """
        self._stopping = True
        self._wake.set()
        task, self._task = self._task, None
        if task is not None:
            done, _ = await asyncio.wait([task], timeout=drain_seconds)
            if not done:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            elif not task.cancelled() and task.exception() is not None:
                log.warning("outbox relay of %s stopped with %r", self.service, task.exception())
        try:
            async with asyncio.timeout(drain_seconds):
                while await self.relay_once():
                    pass
        except Exception as exc:  # broker down or slow: the rows are safe in the outbox
            log.warning(
                "outbox relay of %s: left rows in the outbox at stop (%r)", self.service, exc
            )
