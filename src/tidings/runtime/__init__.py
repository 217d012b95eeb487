"""The runtime: runs a :class:`~tidings.service.Service` on a transport and a store.

A :class:`Runtime` is one process's member of the service's consumer group plus its outbox
relay. It fetches batches of records, hands each partition's records to
:class:`~tidings.runtime.handling.Handling` (which handles them in order, several to a unit
of work when there are several), and acks each partition up to what was settled. Only
once an event is handled, found a duplicate, skipped or dead-lettered is it acked, so a
crash anywhere before leads to redelivery, which the inbox makes harmless. The partitions
of a batch are handled concurrently, each in order (order is promised per key, and a key
lives in one partition).

The inbox is pruned in the background: every ``prune_every`` seconds (60 by default,
waited through the injected ``sleep``), the marks of the group older than
``dedupe_window`` are removed. An event delivered again after its mark is gone is no
longer recognised as a duplicate and is handled again, so the window must exceed how long
the broker may redeliver an event: the default, 7 days, is Kafka's default retention
(``retention.ms``); a broker that keeps or redelivers events longer needs a longer window.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime
from typing import Any

from tidings import codec
from tidings.envelope import Envelope
from tidings.formats import SchemaSource
from tidings.projection import Projection, inline_gaps, set_up
from tidings.reliability import policy
from tidings.reliability.deadletter import dlq_topic, replay_topic
from tidings.reliability.debezium import DebeziumRelay, check_relay
from tidings.reliability.outbox import OutboxRelay
from tidings.reliability.policy import INFRASTRUCTURE_ERRORS
from tidings.runtime.handling import Handling
from tidings.runtime.observer import Observer, Outcome, Stats
from tidings.runtime.projector import Projector
from tidings.runtime.timers import TimerLoop
from tidings.service import Context, Service
from tidings.store.base import ConcurrencyConflict, OutboxEntry, Store
from tidings.transport.base import Delivery, Subscription, Transport
from tidings.transport.tools import create_topic_settling

__all__ = ["Observer", "Outcome", "Runtime", "Stats"]

log = logging.getLogger("tidings.runtime")
TOPIC_SETTLE_SECONDS = 60.0  # how long a start waits for a settling broker to create a topic

DEDUPE_WINDOW = 7 * 24 * 3600.0  # seconds; Kafka's default retention (see the module rules)


class Runtime:
    """One process's instance of a service: a consumer group member plus an outbox relay."""

    def __init__(
        self,
        service: Service,
        transport: Transport,
        store: Store,
        *,
        content_mode: codec.ContentMode | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        rng: random.Random | None = None,
        observer: Observer | None = None,
        fetch_max: int = 200,
        batch_max: int = 100,
        lanes: int = 1,
        dedupe_window: float = DEDUPE_WINDOW,
        prune_every: float = 60.0,
        schemas: SchemaSource | None = None,
        timer_interval: float = 0.2,
        relay: str = "polling",
        connect_url: str | None = None,
    ) -> None:
        self.service = service
        self.transport = transport
        self.store = store
        self.content_mode: codec.ContentMode = content_mode or transport.content_mode
        self.sleep = sleep
        self.rng = rng or random.Random()
        self.observer = observer or Observer()
        self.fetch_max = fetch_max
        if lanes < 1:
            raise ValueError(f"lanes must be at least 1, not {lanes}")
        self.lanes = lanes  # units of work one poll runs at once (see poll)
        self.dedupe_window = dedupe_window
        self.prune_every = prune_every
        self.stats = Stats()
        self.relay: OutboxRelay | DebeziumRelay
        if check_relay(relay) == "debezium":
            self.relay = DebeziumRelay(store, transport, service.name, connect_url=connect_url)
        else:
            self.relay = OutboxRelay(
                store, transport, service.name, on_published=self._published, sleep=sleep
            )
        self.subscription: Subscription | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = asyncio.Event()
        self.projectors = [
            Projector(projection, transport, store, schemas=schemas, sleep=sleep)
            for projection in service.projections.values()
        ]
        if self.projectors and not transport.capabilities.history:
            check_inline_fed(service, transport.platform)
            # The service runs without them (the shop on RabbitMQ): its reports stay empty;
            # inline ones are fed by the service's own units of work (tidings.projection).
            log_only = [p.name for p in service.projections.values() if not p.inline]
            if log_only:
                log.warning(
                    "%s: projections (%s) are not run: they read their topics by offset, "
                    "and %s keeps no history",
                    service.name,
                    ", ".join(log_only),
                    transport.platform,
                )
            self.projectors = []
        self.handling = Handling(
            service,
            store,
            transport,
            observer=self.observer,
            stats=self.stats,
            sleep=sleep,
            rng=self.rng,
            stopping=self._stopping,
            content_mode=self.content_mode,
            on_outbox=self.relay.wake,
            batch_max=batch_max,
            schemas=schemas,
        )

        # Durable timers (tidings.timers), fired by a sweep of the store's due ones.
        self.timers = TimerLoop(
            service, self.handling.transaction, sleep=sleep, interval=timer_interval, rng=self.rng
        )

    # -- lifecycle -----------------------------------------------------------------------
    async def start(self, *, background: bool = True) -> None:
        """Create topics, run startup hooks, join the group.

        With ``background`` (the default) tasks then consume and relay until :meth:`stop`;
        without, the caller drives :meth:`poll` and ``relay.relay_once`` itself (tests).
        """
        if isinstance(self.relay, DebeziumRelay):  # before anything may publish
            await self.relay.prepare()
        group = self.service.group
        topics = [*self.service.topics(), replay_topic(group)]
        projected = {t for p in self.service.projections.values() for t in p.topics()}
        for topic in sorted({*topics, dlq_topic(group), *projected}):
            await create_topic_settling(
                self.transport, topic, within=TOPIC_SETTLE_SECONDS, sleep=self.sleep
            )
        for projection in self.service.projections.values():
            if projection.inline:  # set up now, not by the first requests racing for it
                await self._set_up(projection)
        for hook in self.service.startup_hooks:
            await self._run_startup_hook(hook)
        if self.service.handlers:
            self.subscription = await self.transport.subscribe(group, topics)
        if background:
            if self.subscription is not None:
                self._tasks.append(asyncio.create_task(self._consume_loop(), name="consume"))
                self._tasks.append(asyncio.create_task(self._prune_loop(), name="prune-inbox"))
            for projector in self.projectors:
                name = f"projection-{projector.projection.name}"
                self._tasks.append(asyncio.create_task(projector.run(self._stopping), name=name))
            if self.service.timer_handlers:
                self._tasks.append(
                    asyncio.create_task(self.timers.run(self._stopping), name="timers")
                )
            self._tasks.append(self.relay.start())

    async def stop(self) -> None:
        """Finish the delivery in hand, flush the outbox, leave the group.

        Each step runs even if an earlier one failed (a failed step is logged): a service
        that stops must always hand its partitions back and close what it opened.
        """
        self._stopping.set()
        consume = [
            t
            for t in self._tasks
            if t.get_name() == "consume" or t.get_name().startswith("projection-")
        ]
        steps: list[Awaitable[Any]] = [
            asyncio.gather(*consume, return_exceptions=True),
            self.relay.stop(),
        ]
        for step in steps:
            try:
                await step
            except Exception:
                log.exception("%s: error while stopping", self.service.name)
        for task in self._tasks:
            if not task.done():
                task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        if self.subscription is not None:
            try:
                await self.subscription.close()
            except Exception:
                log.exception("%s: error while leaving the group", self.service.name)
            self.subscription = None
        log.info("%s: stopped; %s", self.service.name, self.stats.summary())

    async def _set_up(self, projection: Projection) -> None:
        """Set up an inline projection's first generation (members starting together race
        for it: the loser conflicts, looks again and finds it)."""

        async def set_up_once() -> None:
            async with self.store.unit_of_work(self.service.name) as uow:
                await set_up(uow, projection)

        await self._again_after_conflicts(set_up_once)

    async def _run_startup_hook(self, hook: Callable[[Context], Awaitable[None]]) -> None:
        """Run ``hook`` in a unit of work, again after a conflict: members of a group that
        start together run the same hook (seeding state, say) at the same time."""

        async def run_once() -> None:
            async with self.unit_of_work() as ctx:
                await hook(ctx)

        await self._again_after_conflicts(run_once)

    async def _again_after_conflicts(self, attempt: Callable[[], Awaitable[None]]) -> None:
        """``attempt()`` until it does not conflict, backing off; a storm is raised."""
        conflicts = 0
        while True:
            try:
                return await attempt()
            except ConcurrencyConflict:
                conflicts += 1
                if conflicts >= policy.CONFLICT_STORM:
                    raise
                await self.sleep(policy.conflict_delay(conflicts, self.rng))

    async def wait(self) -> None:
        """Wait until a task fails (re-raising its error) or :meth:`stop` is called."""
        stopping = asyncio.ensure_future(self._stopping.wait())
        try:
            await asyncio.wait([*self._tasks, stopping], return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopping.cancel()
        for task in self._tasks:
            if task.done() and not task.cancelled() and task.exception():
                raise task.exception()  # type: ignore[misc]

    # -- the unit of work ----------------------------------------------------------------
    @contextlib.asynccontextmanager
    async def unit_of_work(self, cause: Envelope | None = None) -> AsyncIterator[Context]:
        """A unit of work of this service outside a handler (startup hooks, HTTP requests).

        State changes and published messages commit together when the block exits.
        """
        async with self.handling.transaction(cause) as (_, ctx):
            yield ctx

    # -- the inbox -----------------------------------------------------------------------
    async def prune_inbox(self) -> int:
        """Remove the group's inbox marks older than ``dedupe_window``; how many."""
        return await self.store.prune_inbox(self.service.group, self.dedupe_window)

    async def _prune_loop(self) -> None:
        while not self._stopping.is_set():
            await self.sleep(self.prune_every)
            if self._stopping.is_set():
                break
            try:
                await self.prune_inbox()
            except INFRASTRUCTURE_ERRORS as exc:  # the database is down: try again next time
                log.warning("%s: cannot prune the inbox: %s", self.service.group, exc)

    # -- consuming -----------------------------------------------------------------------
    async def _consume_loop(self) -> None:
        outages = 0
        while not self._stopping.is_set():
            try:
                await self.poll(timeout=0.2)
                outages = 0
            except ConcurrencyConflict:
                break  # a conflict storm cut short by stop(): rewound, delivered again later
            except INFRASTRUCTURE_ERRORS as exc:
                # The broker or the database is down: nothing was acked past what was
                # handled, so wait and carry on where we were (never dead-letter for this).
                outages += 1
                delay = policy.outage_delay(outages, self.rng)
                log.warning("%s: %s; retrying in %.1fs", self.service.group, exc, delay)
                await self.sleep(delay)

    async def poll(self, timeout: float = 0.0) -> int:
        """Fetch one batch, handle it and ack it; returns how many records it had.

        The batch's partitions are dealt, whole and each in order, into ``lanes`` runs
        (order is promised per key, and a key lives in one partition). A run shares its
        units of work among its partitions; the runs go concurrently. With one lane (the
        default) a fetch is one unit of work (up to ``batch_max`` events): one commit for
        every partition, and no two units of this process race for a hot document (a
        stock row every order touches), which under REPEATABLE READ is a conflict, a
        rollback and the events handled again one by one. More lanes overlap the waits of
        handlers that wait on something slow (an HTTP call) across partitions.
        If the broker or the store fails, what was handled is acked, every partition
        with records not yet handled is rewound to the first of them (nack), and the
        error is raised. An ack or nack that the broker refuses is logged (group, topic,
        partition, offset) and not retried here: an ack not made only means records are
        delivered again, which the inbox absorbs, and an outage shows up at the next
        fetch, which the consume loop waits out.
        """
        assert self.subscription is not None, "start() the runtime first"
        deliveries = await self.subscription.fetch(self.fetch_max, timeout)
        partitions: dict[tuple[str, int], list[Delivery]] = {}
        for delivery in deliveries:
            partitions.setdefault((delivery.record.topic, delivery.record.partition), []).append(
                delivery
            )
        runs: list[list[Delivery]] = [[] for _ in range(min(self.lanes, len(partitions)))]
        for n, items in enumerate(partitions.values()):
            runs[n % len(runs)].extend(items)
        done: dict[tuple[str, int], Delivery] = {}
        rewind: dict[tuple[str, int], Delivery] = {}

        async def handle_run(items: list[Delivery]) -> None:
            count = 0  # the first `count` of items are settled

            def settled(n: int) -> None:
                nonlocal count
                count = n

            try:
                await self.handling.process_run(items, settled)
            finally:
                for delivery in items[:count]:
                    done[_partition(delivery)] = delivery
                for delivery in items[count:]:
                    rewind.setdefault(_partition(delivery), delivery)

        results = await asyncio.gather(
            *(handle_run(items) for items in runs), return_exceptions=True
        )
        # Acks are cumulative per partition: the last handled record of each is enough.
        for delivery in done.values():
            try:
                await delivery.ack()
            except INFRASTRUCTURE_ERRORS as exc:
                self._settle_failed("ack", delivery, exc)
        for delivery in rewind.values():
            try:
                await delivery.nack(0.5)
            except INFRASTRUCTURE_ERRORS as exc:
                self._settle_failed("nack", delivery, exc)
        for result in results:
            if isinstance(result, BaseException):
                raise result
        return len(deliveries)

    async def project_once(self) -> int:
        """One step of every projection in its serving generation (when not running in the
        background); how many records they read."""
        return sum([await p.step(await p.serving()) for p in self.projectors])

    async def fire_timers(self, now: datetime | None = None) -> int:
        """Fire the timers due at ``now`` (when not running in the background); how many."""
        return await self.timers.fire_due(now)

    def _settle_failed(self, what: str, delivery: Delivery, exc: Exception) -> None:
        record = delivery.record
        log.warning(
            "%s: %s of %s/%d@%d failed: %s",
            self.service.group,
            what,
            record.topic,
            record.partition,
            record.offset,
            exc,
            extra={
                "consumer_group": self.service.group,
                "topic": record.topic,
                "partition": record.partition,
                "offset": record.offset,
            },
        )

    async def process(self, delivery: Delivery) -> Outcome:
        """Handle one delivery in its own unit of work (without acking it)."""
        return await self.handling.process(delivery)

    def _published(self, entries: list[OutboxEntry]) -> None:
        self.stats.published += len(entries)
        self.observer.on_published(self.service.name, entries)


def _partition(delivery: Delivery) -> tuple[str, int]:
    return delivery.record.topic, delivery.record.partition


def check_inline_fed(service: Service, platform: str) -> None:
    """Refuse to run an inline projection on a broker without history that the service
    could not feed: a type it handles that the service neither publishes nor consumes."""
    published = {m.message_info.type for m in service.publishes}
    for projection in service.projections.values():
        gaps = inline_gaps(projection, published, set(service.handlers))
        if projection.inline and gaps:
            raise ValueError(
                f"{service.name}: projection {projection.name} handles {', '.join(gaps)}, which "
                f"the service neither publishes nor consumes; {platform} keeps no history, so "
                "only the service's own units of work can feed it (handle those types, or "
                "run on a broker with history)"
            )
