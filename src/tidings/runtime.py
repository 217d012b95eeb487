"""The runtime: runs a :class:`~tidings.service.Service` on a transport and a store.

For every delivery it: decodes the envelope (undecodable -> dead letter at once, with the
reason); skips types the service does not handle; validates the payload into the typed
message (invalid -> dead letter at once); then, in one unit of work, checks the inbox
(already handled -> nothing to do), runs the handler, marks the event handled and writes
what the handler published to the outbox. A failing handler is retried by its
:class:`~tidings.reliability.retry.RetryPolicy`, each attempt in a fresh unit of work;
when the policy gives up, the event goes to the group's dead-letter topic. Only then is
the delivery acked, so a crash anywhere before leads to redelivery, which the inbox makes
harmless. Records of one partition are handled one after another, in order.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Literal

import pydantic

from tidings import codec
from tidings.envelope import Envelope
from tidings.messages import Message
from tidings.reliability.deadletter import dead_letter, dlq_topic, replay_topic
from tidings.reliability.outbox import OutboxRelay
from tidings.service import Context, HandlerSpec, Service
from tidings.store.base import OutboxEntry, Store, UnitOfWork
from tidings.transport.base import Delivery, Record, Subscription, Transport

log = logging.getLogger("tidings.runtime")
Outcome = Literal["handled", "duplicate", "skipped", "dead_lettered"]


@dataclasses.dataclass
class Stats:
    """Counters of one runtime (the metrics layer reads these too)."""

    consumed: int = 0
    handled: int = 0
    duplicates: int = 0
    skipped: int = 0
    retries: int = 0
    dead_lettered: int = 0
    published: int = 0


class Observer:
    """Hooks for metrics and tracing; the default does nothing."""

    def on_handled(
        self, service: str, envelope: Envelope | None, record: Record, outcome: Outcome,
        seconds: float,
    ) -> None:
        return None

    def on_retry(self, service: str, envelope: Envelope, attempt: int, error: BaseException) -> None:
        return None

    def on_published(self, service: str, entries: list[OutboxEntry]) -> None:
        return None


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
    ) -> None:
        self.service = service
        self.transport = transport
        self.store = store
        self.content_mode: codec.ContentMode = content_mode or transport.content_mode
        self.sleep = sleep
        self.rng = rng or random.Random()
        self.observer = observer or Observer()
        self.fetch_max = fetch_max
        self.stats = Stats()
        self.relay = OutboxRelay(store, transport, service.name, on_published=self._published)
        self.subscription: Subscription | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = asyncio.Event()

    # -- lifecycle -----------------------------------------------------------------------
    async def start(self, *, background: bool = True) -> None:
        """Create topics, run startup hooks, bind the service, join the group.

        With ``background`` (the default) tasks then consume and relay until :meth:`stop`;
        without, the caller drives :meth:`poll` and ``relay.relay_once`` itself (tests).
        """
        group = self.service.group
        topics = [*self.service.topics(), replay_topic(group)]
        for topic in [*topics, dlq_topic(group)]:
            await self.transport.create_topic(topic)
        self.service.bind(self)
        for hook in self.service.startup_hooks:
            async with self.unit_of_work() as ctx:
                await hook(ctx)
        if self.service.handlers:
            self.subscription = await self.transport.subscribe(group, topics)
        if background:
            if self.subscription is not None:
                self._tasks.append(asyncio.create_task(self._consume_loop(), name="consume"))
            self._tasks.append(asyncio.create_task(self.relay.run(), name="relay"))

    async def stop(self) -> None:
        """Finish the delivery in hand, flush the outbox, leave the group."""
        self._stopping.set()
        for task in self._tasks:
            if task.get_name() == "consume":
                await task
        await self.relay.stop()
        for task in self._tasks:
            if not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._tasks.clear()
        if self.subscription is not None:
            await self.subscription.close()
            self.subscription = None
        self.service.bind(None)

    async def wait(self) -> None:
        """Wait until a task fails (re-raising its error) or :meth:`stop` is called."""
        await asyncio.wait(
            [*self._tasks, asyncio.ensure_future(self._stopping.wait())],
            return_when=asyncio.FIRST_COMPLETED,
        )
        for task in self._tasks:
            if task.done() and not task.cancelled() and task.exception():
                raise task.exception()  # type: ignore[misc]

    # -- the unit of work (Binding for Service.unit_of_work) ------------------------------
    @contextlib.asynccontextmanager
    async def unit_of_work(self, cause: Envelope | None = None) -> AsyncIterator[Context]:
        async with self._transaction(cause) as (_, ctx):
            yield ctx

    @contextlib.asynccontextmanager
    async def _transaction(
        self, cause: Envelope | None
    ) -> AsyncIterator[tuple[UnitOfWork, Context]]:
        async with self.store.unit_of_work(self.service.name) as uow:
            ctx = Context(self.service.name, uow, cause)
            yield uow, ctx
            if ctx.outgoing:
                await uow.add_outbox(
                    [codec.encode(o.envelope, o.topic, self.content_mode) for o in ctx.outgoing]
                )
        if ctx.outgoing:
            self.relay.wake()

    # -- consuming -----------------------------------------------------------------------
    async def _consume_loop(self) -> None:
        while not self._stopping.is_set():
            await self.poll(timeout=0.2)

    async def poll(self, timeout: float = 0.0) -> int:
        """Fetch one batch, handle it and ack it; returns how many records it had."""
        assert self.subscription is not None, "start() the runtime first"
        deliveries = await self.subscription.fetch(self.fetch_max, timeout)
        last: dict[tuple[str, int], Delivery] = {}
        for delivery in deliveries:
            await self.process(delivery)
            last[(delivery.record.topic, delivery.record.partition)] = delivery
        # Acks are cumulative per partition: the last record of each is enough.
        for delivery in last.values():
            await delivery.ack()
        return len(deliveries)

    async def process(self, delivery: Delivery) -> Outcome:
        """Handle one delivery (without acking it); returns what became of it."""
        record = delivery.record
        started = time.perf_counter()
        self.stats.consumed += 1
        envelope: Envelope | None = None
        try:
            envelope = codec.decode(record)
        except codec.DecodeError as exc:
            outcome = await self._dead_letter(record, f"undecodable: {exc}", exc, 0)
        else:
            spec = self.service.handlers.get(envelope.type)
            if spec is None:
                self.stats.skipped += 1
                outcome = "skipped"
            else:
                outcome = await self._handle(record, envelope, spec)
        self.observer.on_handled(
            self.service.name, envelope, record, outcome, time.perf_counter() - started
        )
        return outcome

    async def _handle(self, record: Record, envelope: Envelope, spec: HandlerSpec) -> Outcome:
        try:
            message: Message = spec.message_type.model_validate(envelope.data)
        except pydantic.ValidationError as exc:
            reason = f"invalid {envelope.type}: {_short_validation_error(exc)}"
            return await self._dead_letter(record, reason, exc, 0)
        group = self.service.group
        attempt = 0
        while True:
            attempt += 1
            try:
                async with self._transaction(envelope) as (uow, ctx):
                    if await uow.seen(group, envelope.id):
                        self.stats.duplicates += 1
                        return "duplicate"
                    await spec.fn(message, ctx)
                    await uow.mark_seen(group, envelope.id)
                self.stats.handled += 1
                return "handled"
            except Exception as exc:
                if not spec.retry.should_retry(exc, attempt):
                    reason = (
                        f"{spec.name} failed after {attempt} attempt(s)"
                        if attempt >= spec.retry.max_attempts
                        else f"{spec.name} raised a non-recoverable error"
                    )
                    return await self._dead_letter(record, reason, exc, attempt)
                self.stats.retries += 1
                self.observer.on_retry(self.service.name, envelope, attempt, exc)
                delay = spec.retry.delay(attempt, self.rng)
                log.info(
                    "%s: %s on %s (attempt %d), retrying in %.3fs",
                    spec.name, type(exc).__name__, envelope.id, attempt, delay,
                )
                await self.sleep(delay)

    async def _dead_letter(
        self, record: Record, reason: str, error: BaseException, attempts: int
    ) -> Outcome:
        log.warning("%s: dead-lettering %s/%d@%d: %s", self.service.group, record.topic,
                    record.partition, record.offset, reason)
        await self.transport.publish([dead_letter(record, self.service.group, reason, error, attempts)])
        self.stats.dead_lettered += 1
        return "dead_lettered"

    def _published(self, entries: list[OutboxEntry]) -> None:
        self.stats.published += len(entries)
        self.observer.on_published(self.service.name, entries)


def _short_validation_error(exc: pydantic.ValidationError) -> str:
    parts = []
    for err in exc.errors()[:5]:
        where = ".".join(str(p) for p in err["loc"]) or "payload"
        parts.append(f"{where}: {err['msg']}")
    return "; ".join(parts)
