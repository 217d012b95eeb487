"""Handling deliveries: one event in its own unit of work, or a run of them in one.

**One event** (:meth:`Handling.process`): decode the envelope (undecodable -> dead letter
at once, with the reason); skip types the service does not handle; validate the payload
into the typed message (invalid -> dead letter at once); then, in one unit of work, check
the inbox (already handled -> nothing to do), run the handler, mark the event handled and
write what the handler published to the outbox. When a step fails, what to do (retry the
handler, back off a conflict, wait out an outage, or dead-letter with a kind) is decided
in :mod:`tidings.reliability.policy`; this module carries it out, and every delay goes
through the injected ``sleep``.

**A run** (:meth:`Handling.process_run`): several records, each partition's in order (the
runtime puts whole partitions one after another into a run), in ONE unit of work: one inbox query for all of them, each handler in its own savepoint, then
one inbox insert and one outbox insert for all that succeeded, and one commit. That cuts
the round trips and commits per event, which is what a database such as PostgreSQL waits
on. The rules that keep every promise of the one-event path:

* A handler that raises is rolled back to its savepoint alone; the run stops there, what
  came before it commits, and that event goes through the one-event path (with its
  retries and dead letter), then the run carries on after it. So one failing handler
  never undoes or repeats the others, and order within each partition holds.
* A broker or database outage (an infrastructure error) rolls the whole run back and is
  raised: nothing of it was committed, so the caller rewinds to its first record.
* A ``ConcurrencyConflict`` raised outside a handler's savepoint (the inbox insert, the
  commit: another member handled one of these events at the same time) rolls the run back
  and the run is handled again event by event, where each conflict is backed off alone.
* Undecodable, invalid and unhandled records are settled as in the one-event path, once:
  a run handled again event by event does not dead-letter them twice.

A crash at any point before the commit loses the whole run's effects and its records are
delivered again (nothing was acked); after the commit and before the ack, they are
delivered again and found in the inbox.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from types import TracebackType

import pydantic

from tidings import codec
from tidings.envelope import Envelope
from tidings.formats import SchemaSource, SchemaViolation
from tidings.messages import Message
from tidings.records import OutgoingRecord
from tidings.reliability import policy
from tidings.reliability.deadletter import DeadLetterReason, dead_letter
from tidings.reliability.policy import INFRASTRUCTURE_ERRORS, Action
from tidings.runtime.decoding import decode
from tidings.runtime.observer import Observer, Outcome, Stats
from tidings.service import Context, HandlerSpec, Service
from tidings.store.base import ConcurrencyConflict, Store, UnitOfWork
from tidings.transport.base import Delivery, Record, RecordTooLarge, Transport
from tidings.units import OutboxUnits
from tidings.upcasting import NoUpcastPath, upcast

log = logging.getLogger("tidings.runtime")


@dataclasses.dataclass(slots=True)
class _Ready:
    """A record decoded, dispatched and validated: ready for its handler."""

    index: int
    record: Record
    envelope: Envelope
    spec: HandlerSpec
    message: Message


class _Entered(contextlib.AbstractContextManager[object]):
    """A context already entered: ``with`` it only exits it."""

    __slots__ = ("context",)

    def __init__(self, context: contextlib.AbstractContextManager[object]) -> None:
        self.context = context

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        return self.context.__exit__(kind, error, tb)


class Handling:
    """Handles deliveries of one service; acks are the caller's (see the runtime)."""

    def __init__(
        self,
        service: Service,
        store: Store,
        transport: Transport,
        *,
        observer: Observer,
        stats: Stats,
        sleep: Callable[[float], Awaitable[None]],
        rng: random.Random,
        stopping: asyncio.Event,
        content_mode: codec.ContentMode,
        on_outbox: Callable[[], None],
        batch_max: int = 100,
        schemas: SchemaSource | None = None,
    ) -> None:
        self.service = service
        self.store = store
        self.transport = transport
        self.observer = observer
        self.stats = stats
        self.sleep = sleep
        self.rng = rng
        self.stopping = stopping
        self.content_mode = content_mode
        self.on_outbox = on_outbox  # called after a commit that queued outbox rows
        self.batch_max = batch_max  # events in one unit of work at most
        self.schemas = schemas  # registered schemas (None: no registry)
        self.units = OutboxUnits(
            service.name,
            store,
            transport,
            content_mode,
            on_outbox=on_outbox,
            stamp=self._stamp,
            publishes=service.publishes,
            schemas=schemas,
            inline=tuple(p for p in service.projections.values() if p.inline),
        )

    # -- units of work -------------------------------------------------------------------
    def transaction(
        self, cause: Envelope | None, record: Record | None = None
    ) -> contextlib.AbstractAsyncContextManager[tuple[UnitOfWork, Context]]:
        """A unit of work with a context: what the context published goes to the outbox
        (``record``: the one ``cause`` was read from, for inline projections)."""
        return self.units.open(cause, None if record is None else _position(record))

    def _stamp(self, topic: str, envelope: Envelope) -> Envelope:
        return self.observer.publishing(self.service.name, topic, envelope)

    # -- one event -----------------------------------------------------------------------
    async def process(self, delivery: Delivery) -> Outcome:
        """Handle one delivery in its own unit of work (without acking it)."""
        started = time.perf_counter()
        ready = await self._prepare(0, delivery.record)
        if isinstance(ready, _Ready):
            with self.observer.handling(self.service.name, ready.envelope, ready.record):
                outcome = await self._handle(ready)
            self._handled(ready.envelope, ready.record, outcome, started)
        else:
            outcome = ready
        return outcome

    async def _prepare(self, index: int, record: Record) -> _Ready | Outcome:
        """Decode, dispatch and validate; a record that cannot be handled is settled here.

        Only an infrastructure error is raised (the registry is down and the record names
        a schema not fetched yet): the record is not settled, the caller rewinds to it."""
        self.stats.consumed += 1
        started = time.perf_counter()
        envelope: Envelope | None = None
        limit = self.transport.max_record_bytes
        if len(record.value) > limit:  # never decoded; too large for its dead letter too
            reason = policy.too_large_to_read(len(record.value), limit)
            kept = dataclasses.replace(record, value=b"")
            refused = await self._dead_letter(kept, reason, RecordTooLarge(reason.detail), 0)
            self._handled(None, record, refused, started)
            return refused
        try:
            envelope = await decode(
                record, self.schemas, self.service.handlers, self.service.foreign_decoders
            )
        except codec.DecodeError as exc:
            outcome: Outcome = await self._dead_letter(record, policy.undecodable(exc), exc, 0)
        except codec.UnknownSchema as exc:
            url = self.schemas.url if self.schemas is not None else "(none)"
            reason = policy.unknown_schema(exc.schema_id, url)
            outcome = await self._dead_letter(record, reason, exc, 0)
        except SchemaViolation as exc:
            outcome = await self._dead_letter(record, policy.breaks_schema(exc), exc, 0)
        else:
            spec = None if envelope is None else self.service.handlers.get(envelope.type)
            if envelope is None or spec is None:
                self.stats.skipped += 1
                outcome = "skipped"
            else:
                try:
                    data = upcast(spec.message_type, envelope.data, envelope.version)
                    message = spec.message_type.model_validate(data)
                except NoUpcastPath as exc:
                    outcome = await self._dead_letter(record, policy.not_upcast(exc), exc, 0)
                except pydantic.ValidationError as exc:
                    read = spec.message_type.message_info.version
                    reason = policy.invalid(envelope.type, exc, envelope.version, read)
                    outcome = await self._dead_letter(record, reason, exc, 0)
                else:
                    return _Ready(index, record, envelope, spec, message)
        self._handled(envelope, record, outcome, started)
        return outcome

    def _handled(
        self, envelope: Envelope | None, record: Record, outcome: Outcome, started: float
    ) -> None:
        self.observer.on_handled(
            self.service.name, envelope, record, outcome, time.perf_counter() - started
        )

    async def _handle(self, ready: _Ready, failed: Exception | None = None) -> Outcome:
        """Handle one event in its own units of work, retrying as the policy says.

        ``failed`` is the error of an attempt already made (in a batch's savepoint): it
        counts as the first attempt, so a handler runs no more often than its policy says.
        """
        envelope, spec = ready.envelope, ready.spec
        group = self.service.group
        attempt = 0  # attempts of the handler, as its retry policy counts them
        conflicts = 0  # conflicts in a row, which are not attempts
        error = failed
        while True:
            attempt += 1
            if error is None:
                try:
                    async with self.transaction(envelope, ready.record) as (uow, ctx):
                        if await uow.seen(group, envelope.id):
                            self.stats.duplicates += 1
                            return "duplicate"
                        await spec(ready.message, ctx)
                        await uow.mark_seen(group, envelope.id)
                    self.stats.handled += 1
                    return "handled"
                except Exception as exc:
                    error = exc
            decision = policy.after_failure(
                error,
                handler=spec.name,
                retry=spec.retry,
                attempt=attempt,
                conflicts=conflicts,
                rng=self.rng,
            )
            if decision.action is Action.WAIT_OUT:
                raise error  # not the handler's fault: the caller rewinds and waits
            if decision.action is Action.DEAD_LETTER:
                assert decision.reason is not None
                return await self._dead_letter(ready.record, decision.reason, error, attempt)
            if decision.action is Action.BACK_OFF:
                if self.stopping.is_set():
                    raise error  # cut the storm short: rewound, delivered again later
                attempt -= 1
                conflicts += 1
                self.stats.conflicts += 1
                if policy.is_storm(conflicts):
                    log.warning(
                        "%s: %d conflicts in a row on %s (%s); backing off %.3fs",
                        spec.name,
                        conflicts,
                        envelope.id,
                        error,
                        decision.delay,
                    )
            else:  # Action.RETRY
                conflicts = 0
                self.stats.retries += 1
                self.observer.on_retry(self.service.name, envelope, attempt, error)
                log.info(
                    "%s: %s on %s (attempt %d), retrying in %.3fs",
                    spec.name,
                    type(error).__name__,
                    envelope.id,
                    attempt,
                    decision.delay,
                )
            error = None
            await self.sleep(decision.delay)

    # -- a run of records -----------------------------------------------------------------
    async def process_run(
        self, deliveries: Sequence[Delivery], settled: Callable[[int], None]
    ) -> None:
        """Handle ``deliveries`` in order, batching them into units of work.

        ``settled(n)`` is called, with ``n`` growing, once the first ``n`` deliveries are
        settled (committed, or settled without the store), so the caller knows what it may
        ack and where to rewind if this raises. An infrastructure error is raised with
        nothing of the current unit of work committed. See the module docstring.
        """
        ready: list[_Ready] = []
        outage: Exception | None = None
        for index, delivery in enumerate(deliveries):
            try:
                prepared = await self._prepare(index, delivery.record)
            except INFRASTRUCTURE_ERRORS as exc:
                # The registry is down and this record needs a schema not fetched yet:
                # handle those before it, then raise (the caller rewinds to this one).
                outage, deliveries = exc, deliveries[:index]
                break
            if isinstance(prepared, _Ready):
                ready.append(prepared)

        def settle_up_to(position: int) -> None:
            # Every record before the first unsettled ready one is settled (those that
            # needed no handler were settled when prepared).
            following = ready[position].index if position < len(ready) else len(deliveries)
            if following > 0:
                settled(following)

        position = 0
        settle_up_to(position)
        while position < len(ready):
            batch = ready[position : position + self.batch_max]
            if len(batch) == 1:
                await self._handle_one(batch[0])
                position += 1
            else:
                position += await self._batch(batch)
            settle_up_to(position)
        if outage is not None:
            raise outage

    async def _handle_one(
        self,
        item: _Ready,
        failed: Exception | None = None,
        span: contextlib.AbstractContextManager[object] | None = None,
    ) -> None:
        """One event the one-event way; ``span``: its handling, still open from a batch."""
        started = time.perf_counter()
        with span or self.observer.handling(self.service.name, item.envelope, item.record):
            outcome = await self._handle(item, failed)
        self._handled(item.envelope, item.record, outcome, started)

    async def _batch(self, batch: list[_Ready]) -> int:
        """One unit of work for ``batch``; returns how many of it are settled (at least 1)."""
        try:
            failed = await self._batch_unit(batch)
        except ConcurrencyConflict:
            # Outside any handler's savepoint: another member handled one of these at the
            # same time. Nothing committed; each is handled alone, conflicts backed off.
            for item in batch:
                await self._handle_one(item)
            return len(batch)
        if failed is None:
            return len(batch)
        # A handler failed: those before it committed; it goes on the one-event way, its
        # failure counting as its first attempt.
        position, error, span = failed
        await self._handle_one(batch[position], error, span)
        return position + 1

    async def _batch_unit(self, ready: list[_Ready]) -> tuple[int, Exception, _Entered] | None:
        """Run the handlers of ``ready`` in one unit of work, each in a savepoint, and commit.

        Returns None when all ran, or the position in ``ready`` of the first handler that
        raised, with its error (rolled back alone; those after it were not run, those
        before it committed) and its observer's handling, left open: the one-event way
        goes on in the same span, so an event has one consumer span however it ended.
        """
        group = self.service.group
        outcomes: list[tuple[_Ready, Outcome, float]] = []
        failed: tuple[int, Exception, _Entered] | None = None
        outbox: list[OutgoingRecord] = []  # of every handler that ran, inserted once
        async with self.store.unit_of_work(self.service.name) as uow:
            seen = await uow.seen_many(group, [item.envelope.id for item in ready])
            marks: list[str] = []
            for position, item in enumerate(ready):
                started = time.perf_counter()
                if item.envelope.id in seen:
                    outcomes.append((item, "duplicate", started))
                    continue
                ctx = self.units.context(uow, item.envelope)
                # Entered and left by hand, not with an ExitStack (a tenth of what the
                # observer costs per event): on a handler's failure it stays open.
                span = self.observer.handling(self.service.name, item.envelope, item.record)
                span.__enter__()
                try:
                    async with uow.savepoint():
                        await item.spec(item.message, ctx)
                        await self.units.project(uow, ctx, _position(item.record))
                        encoded = self.units.encoded(ctx)
                except Exception as exc:
                    if isinstance(exc, INFRASTRUCTURE_ERRORS):
                        span.__exit__(type(exc), exc, exc.__traceback__)  # ends with the error
                        raise  # rolls the whole unit of work back
                    failed = (position, exc, _Entered(span))
                    break
                span.__exit__(None, None, None)
                outbox.extend(encoded)
                seen.add(item.envelope.id)
                marks.append(item.envelope.id)
                outcomes.append((item, "handled", started))
            await uow.mark_seen_many(group, marks)
            if outbox:
                await uow.add_outbox(outbox)
        if outbox:
            self.on_outbox()
        for item, outcome, started in outcomes:
            if outcome == "handled":
                self.stats.handled += 1
            else:
                self.stats.duplicates += 1
            self._handled(item.envelope, item.record, outcome, started)
        return failed

    # -- dead letters --------------------------------------------------------------------
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


def _position(record: Record) -> tuple[str, int, int]:
    return (record.topic, record.partition, record.offset)
