"""The runtime: runs a :class:`~tidings.service.Service` on a transport and a store.

For every delivery it: decodes the envelope (undecodable -> dead letter at once, with the
reason); skips types the service does not handle; validates the payload into the typed
message (invalid -> dead letter at once); then, in one unit of work, checks the inbox
(already handled -> nothing to do), runs the handler, marks the event handled and writes
what the handler published to the outbox. When a step fails, what to do (retry the
handler, back off a conflict, wait out an outage, or dead-letter with a kind) is decided
in one place, :mod:`tidings.reliability.policy`; this module carries it out, and every
delay goes through the injected ``sleep``. Only once the event is handled, found a
duplicate, skipped or dead-lettered is the delivery acked, so a crash anywhere before
leads to redelivery, which the inbox makes harmless. Records of one partition are handled
one after another, in order.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Literal

import pydantic

from tidings import codec
from tidings.envelope import Envelope
from tidings.messages import Message
from tidings.reliability import policy
from tidings.reliability.deadletter import DeadLetterReason, dead_letter, dlq_topic, replay_topic
from tidings.reliability.outbox import OutboxRelay
from tidings.reliability.policy import INFRASTRUCTURE_ERRORS, Action
from tidings.service import Context, HandlerSpec, Service
from tidings.store.base import (
    ConcurrencyConflict,
    OutboxEntry,
    Store,
    UnitOfWork,
)
from tidings.transport.base import (
    Delivery,
    Record,
    RecordTooLarge,
    Subscription,
    Transport,
)

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
    conflicts: int = 0  # units of work run again after a ConcurrencyConflict
    dead_lettered: int = 0
    published: int = 0


class Observer:
    """Hooks for metrics, tracing and logs; the default does nothing.

    :mod:`tidings.observability` implements them. Hooks run on the hot path (once per
    event), so an implementation keeps them cheap and never raises.
    """

    def handling(
        self, service: str, envelope: Envelope, record: Record
    ) -> contextlib.AbstractContextManager[object]:
        """Wraps the handling of one event by a handler (all its attempts): a consumer span."""
        return _NO_CONTEXT

    def publishing(self, service: str, topic: str, envelope: Envelope) -> Envelope:
        """The envelope ``Context.publish`` will write, e.g. with a producer span's traceparent."""
        return envelope

    def on_dead_lettered(
        self, service: str, record: Record, reason: DeadLetterReason, error: BaseException
    ) -> None:
        """An event went to the dead letters: ``reason.kind`` says why (never parse
        ``reason.detail``, the sentence for people)."""
        return None

    def wrap_http_app(self, app: Any) -> Any:
        """The service's HTTP app as served, e.g. behind tracing middleware."""
        return app

    async def run(self, runtime: Runtime) -> None:
        """Background work while ``runtime`` runs (e.g. sampling consumer lag)."""
        return None

    def close(self) -> None:
        """Flush and release what the observer holds (after the runtime stopped)."""
        return None

    def on_handled(
        self,
        service: str,
        envelope: Envelope | None,
        record: Record,
        outcome: Outcome,
        seconds: float,
    ) -> None:
        return None

    def on_retry(
        self, service: str, envelope: Envelope, attempt: int, error: BaseException
    ) -> None:
        return None

    def on_published(self, service: str, entries: list[OutboxEntry]) -> None:
        return None


_NO_CONTEXT = contextlib.nullcontext()


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
        self.relay = OutboxRelay(
            store, transport, service.name, on_published=self._published, sleep=sleep
        )
        self.subscription: Subscription | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = asyncio.Event()

    # -- lifecycle -----------------------------------------------------------------------
    async def start(self, *, background: bool = True) -> None:
        """Create topics, run startup hooks, join the group.

        With ``background`` (the default) tasks then consume and relay until :meth:`stop`;
        without, the caller drives :meth:`poll` and ``relay.relay_once`` itself (tests).
        """
        group = self.service.group
        topics = [*self.service.topics(), replay_topic(group)]
        for topic in [*topics, dlq_topic(group)]:
            await self.transport.create_topic(topic)
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
        """Finish the delivery in hand, flush the outbox, leave the group.

        Each step runs even if an earlier one failed (a failed step is logged): a service
        that stops must always hand its partitions back and close what it opened.
        """
        self._stopping.set()
        consume = [t for t in self._tasks if t.get_name() == "consume"]
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
        async with self._transaction(cause) as (_, ctx):
            yield ctx

    @contextlib.asynccontextmanager
    async def _transaction(
        self, cause: Envelope | None
    ) -> AsyncIterator[tuple[UnitOfWork, Context]]:
        async with self.store.unit_of_work(self.service.name) as uow:
            ctx = Context(self.service.name, uow, cause, stamp=self._stamp)
            yield uow, ctx
            if ctx.outgoing:
                records = [
                    codec.encode(o.envelope, o.topic, self.content_mode) for o in ctx.outgoing
                ]
                self.transport.check_size(records)  # refuse now, not in the relay forever
                await uow.add_outbox(records)
        if ctx.outgoing:
            self.relay.wake()

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

        Partitions are handled concurrently, each in order (order is promised per key,
        and a key lives in one partition): on a database with a synchronous commit per
        unit of work this multiplies throughput by up to the number of partitions.
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
        done: dict[tuple[str, int], Delivery] = {}
        rewind: dict[tuple[str, int], Delivery] = {}

        async def handle_partition(pair: tuple[str, int], items: list[Delivery]) -> None:
            for delivery in items:
                try:
                    await self.process(delivery)
                except BaseException:
                    rewind[pair] = delivery
                    raise
                done[pair] = delivery

        results = await asyncio.gather(
            *(handle_partition(pair, items) for pair, items in partitions.items()),
            return_exceptions=True,
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
        """Handle one delivery (without acking it); returns what became of it."""
        record = delivery.record
        started = time.perf_counter()
        self.stats.consumed += 1
        envelope: Envelope | None = None
        try:
            envelope = codec.decode(record)
        except codec.DecodeError as exc:
            outcome = await self._dead_letter(record, policy.undecodable(exc), exc, 0)
        else:
            spec = self.service.handlers.get(envelope.type)
            if spec is None:
                self.stats.skipped += 1
                outcome = "skipped"
            else:
                with self.observer.handling(self.service.name, envelope, record):
                    outcome = await self._handle(record, envelope, spec)
        self.observer.on_handled(
            self.service.name, envelope, record, outcome, time.perf_counter() - started
        )
        return outcome

    async def _handle(self, record: Record, envelope: Envelope, spec: HandlerSpec) -> Outcome:
        try:
            message: Message = spec.message_type.model_validate(envelope.data)
        except pydantic.ValidationError as exc:
            return await self._dead_letter(record, policy.invalid(envelope.type, exc), exc, 0)
        group = self.service.group
        attempt = 0  # attempts of the handler, as its retry policy counts them
        conflicts = 0  # conflicts in a row, which are not attempts
        while True:
            attempt += 1
            try:
                async with self._transaction(envelope) as (uow, ctx):
                    if await uow.seen(group, envelope.id):
                        self.stats.duplicates += 1
                        return "duplicate"
                    await spec(message, ctx)
                    await uow.mark_seen(group, envelope.id)
                self.stats.handled += 1
                return "handled"
            except Exception as exc:
                decision = policy.after_failure(
                    exc,
                    handler=spec.name,
                    retry=spec.retry,
                    attempt=attempt,
                    conflicts=conflicts,
                    rng=self.rng,
                )
                if decision.action is Action.WAIT_OUT:
                    raise  # not the handler's fault: poll() rewinds and the loop waits
                if decision.action is Action.DEAD_LETTER:
                    assert decision.reason is not None
                    return await self._dead_letter(record, decision.reason, exc, attempt)
                if decision.action is Action.BACK_OFF:
                    if self._stopping.is_set():
                        raise  # cut the storm short: poll() rewinds, redelivered later
                    attempt -= 1
                    conflicts += 1
                    self.stats.conflicts += 1
                    if policy.is_storm(conflicts):
                        log.warning(
                            "%s: %d conflicts in a row on %s (%s); backing off %.3fs",
                            spec.name,
                            conflicts,
                            envelope.id,
                            exc,
                            decision.delay,
                        )
                else:  # Action.RETRY
                    conflicts = 0
                    self.stats.retries += 1
                    self.observer.on_retry(self.service.name, envelope, attempt, exc)
                    log.info(
                        "%s: %s on %s (attempt %d), retrying in %.3fs",
                        spec.name,
                        type(exc).__name__,
                        envelope.id,
                        attempt,
                        decision.delay,
                    )
                await self.sleep(decision.delay)

    async def _dead_letter(
        self, record: Record, reason: DeadLetterReason, error: BaseException, attempts: int
    ) -> Outcome:
        log.warning(
            "%s: dead-lettering %s/%d@%d (%s): %s",
            self.service.group,
            record.topic,
            record.partition,
            record.offset,
            reason.kind.value,
            reason.detail,
        )
        letter = dead_letter(record, self.service.group, reason, error, attempts)
        try:
            await self.transport.publish([letter])
        except RecordTooLarge:  # a near-limit record: keep the event, drop the details
            short = DeadLetterReason(reason.kind, reason.detail[:200])
            await self.transport.publish([dead_letter(record, self.service.group, short)])
        self.stats.dead_lettered += 1
        self.observer.on_dead_lettered(self.service.name, record, reason, error)
        return "dead_lettered"

    def _stamp(self, topic: str, envelope: Envelope) -> Envelope:
        return self.observer.publishing(self.service.name, topic, envelope)

    def _published(self, entries: list[OutboxEntry]) -> None:
        self.stats.published += len(entries)
        self.observer.on_published(self.service.name, entries)
