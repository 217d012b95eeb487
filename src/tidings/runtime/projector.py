"""The projection engine: feeds a projection's generations from its topics, by offset.

A :class:`Projector` reads the topics of the events a projection handles with the
transport's ``read`` (no consumer group: the checkpoint is the projection's own), applies
a batch of records per step in ONE unit of work and writes the generation's checkpoint in
it (see :mod:`tidings.projection` for the rules). Hence:

* A handler that raises rolls the whole step back, rows and checkpoint: the batch is
  applied again from the same offsets, so nothing is counted twice. It is logged and
  tried again after ``retry_delay`` (a projection that cannot apply an event stops
  there, and ``tidings projection status`` shows its lag growing).
* A record that is not ours, cannot be decoded or does not validate is skipped (logged):
  the service's consumer dead-letters it; a projection only follows the log.
* :meth:`Projector.run` follows the serving generation (the pointer), so after a rebuild
  switched it carries on in the new one from that one's checkpoint.
* An inline projection's events applied in the unit of work that published or consumed
  them carry a mark: the step deletes it and skips the event, in its unit of work.
* A step reads at most ``step_max`` records in all (partitions take turns being read
  first), commits once it has applied for ``step_seconds`` (the checkpoint says how far
  it got; the rest is read again next step, which reads about what fitted), and yields
  to the event loop every ``YIELD_EVERY`` records: a cold replay (a new generation, a
  fresh store over a long log) is many short units of work in its own task, so the
  service's requests and handlers interleave with it (on SQLite they wait for the
  store's one writer one short step at most).
* Of several projectors of one projection (a service's processes), the one whose lease
  the checkpoint holds applies; a step of another reads the checkpoint and returns 0
  until the lease has lapsed (``lease`` seconds after the holder's last commit: it
  stopped, or was caught up and idle), so that they do not all apply every batch only
  for all but one to be rolled back.
* :meth:`Projector.rebuild` claims a new generation in the pointer (``building``), replays
  every topic from offset 0 into it until it has caught up with the end offsets, then
  moves the pointer in one commit (only if no other rebuild claimed a generation since)
  and removes the old generation: its checkpoint first, so a live step still applying to
  it conflicts and is rolled back rather than leaving rows behind.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable

import pydantic

from tidings import codec
from tidings.envelope import Envelope
from tidings.formats import SchemaSource, SchemaViolation
from tidings.messages import Message
from tidings.projection import (
    POINTERS,
    Checkpoint,
    Pointer,
    Projection,
    ProjectionContext,
    ProjectionHandler,
    read_checkpoint,
    read_pointer,
    set_up,
    write_checkpoint,
    write_pointer,
)
from tidings.reliability import policy
from tidings.reliability.policy import INFRASTRUCTURE_ERRORS
from tidings.runtime.decoding import decode
from tidings.store.base import ConcurrencyConflict, Store, UnitOfWork, read_only
from tidings.transport.base import Record, Transport
from tidings.upcasting import NoUpcastPath, upcast

log = logging.getLogger("tidings.projection")
YIELD_EVERY = 50  # records applied between two yields to the event loop


class RebuildSuperseded(ConcurrencyConflict):
    """Another rebuild claimed a newer generation, or the pointer moved, during a rebuild."""


@dataclasses.dataclass(frozen=True, slots=True)
class PartitionStatus:
    topic: str
    partition: int
    position: int  # the next offset the generation will read
    end: int  # the offset the next record will get

    @property
    def lag(self) -> int:
        return max(0, self.end - self.position)


@dataclasses.dataclass(frozen=True, slots=True)
class ProjectionStatus:
    name: str
    generation: int  # serving reads; 0: none yet
    building: int | None  # being filled by a rebuild
    partitions: list[PartitionStatus]

    @property
    def lag(self) -> int:
        return sum(p.lag for p in self.partitions)


@dataclasses.dataclass(frozen=True, slots=True)
class Rebuilt:
    generation: int
    previous: int  # 0: there was none
    records: int  # read from the topics


@dataclasses.dataclass(frozen=True, slots=True)
class _Ready:
    record: Record
    handler: ProjectionHandler
    message: Message
    envelope: Envelope


class Projector:
    """Feeds one projection of one service from a transport into a store."""

    def __init__(
        self,
        projection: Projection,
        transport: Transport,
        store: Store,
        *,
        batch: int = 500,
        step_max: int = 500,
        step_seconds: float = 0.1,
        schemas: SchemaSource | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        idle: float = 0.2,
        retry_delay: float = 1.0,
        lease: float = 5.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.projection = projection
        self.transport = transport
        self.store = store
        self.service = projection.service
        self.batch = batch  # records per partition per step at most
        self.step_max = step_max  # records per step at most, all partitions together
        self.step_seconds = step_seconds  # a step commits once it has applied this long
        self._turn = 0  # which partition is read first in the next step
        self._fit = step_max  # records to read next step: about what fits in the time
        self.behind = False  # did the last step leave records it could have read unread?
        self.schemas = schemas
        self.sleep = sleep
        self.idle = idle
        self.retry_delay = retry_delay
        self.lease = lease  # seconds a committed step keeps the others from applying
        self.clock = clock  # wall clock: the lease is compared across processes
        self.runner = uuid.uuid4().hex  # this projector, in the checkpoint's lease

    # -- one step ------------------------------------------------------------------------
    async def ends(self) -> dict[tuple[str, int], int]:
        """The end offset of every partition of the projection's topics."""
        return await self.transport.end_offsets(self.projection.topics())

    async def step(self, generation: int) -> int:
        """Apply the next batch of every partition to ``generation``, with its checkpoint,
        in one unit of work; how many records were read (0: caught up, or the generation
        has no checkpoint: it is not set up, or was removed).

        ``ConcurrencyConflict`` if another step moved the checkpoint meanwhile (the batch
        is rolled back); a handler's error is raised with the batch rolled back."""
        async with read_only(self.store, self.service) as uow:
            checkpoint = await read_checkpoint(uow, self.projection, generation)
        if checkpoint.version == 0 or checkpoint.leased_to_another(self.runner, self.clock()):
            self.behind = False
            return 0
        positions = dict(checkpoint.positions)
        batches: list[list[Record]] = []
        self.behind = False
        ends = sorted((await self.ends()).items())
        self._turn = (self._turn + 1) % max(1, len(ends))
        budget = self._fit
        for (topic, partition), end in ends[self._turn :] + ends[: self._turn]:
            start = positions.get((topic, partition), 0)
            if start >= end:
                continue
            if budget <= 0:
                self.behind = True
                continue
            records = await self.transport.read(
                topic, partition, start, min(self.batch, budget, end - start)
            )
            if records:
                batches.append(records)
                budget -= len(records)
            if start + len(records) < end:
                self.behind = True
        if not batches:
            return 0
        ready = {
            (item.record.topic, item.record.partition, item.record.offset): item
            for records in batches
            for item in await self._prepare(records)
        }
        marks = self.projection.marks_name(generation)
        done = 0
        async with self.store.unit_of_work(self.service) as uow:
            started = time.monotonic()
            marked = await self._marks(uow, marks, ready.values())
            for record in (record for records in batches for record in records):
                item = ready.get((record.topic, record.partition, record.offset))
                if item is not None:
                    await self._apply(uow, generation, marks, marked, item)
                positions[(record.topic, record.partition)] = record.offset + 1
                done += 1
                if done % YIELD_EVERY == 0:
                    await asyncio.sleep(0)
                if time.monotonic() - started > self.step_seconds:
                    self.behind = True
                    break  # the rest in the next step: a request waits one short step
            lease = (self.runner, self.clock() + self.lease)
            await write_checkpoint(
                uow, self.projection, generation, positions, checkpoint.version, lease
            )
        read = sum(len(records) for records in batches)
        # Read about what fits in the time next step (half as much again), up to step_max.
        self._fit = min(self.step_max, max(50, done * 3 // 2 if done < read else read * 2))
        return done

    async def _marks(self, uow: UnitOfWork, marks: str, items: Iterable[_Ready]) -> set[str]:
        """The events of ``items`` that carry a mark of the generation (applied inline),
        read in one statement."""
        if not self.projection.inline:
            return set()
        return set(await uow.get_many(marks, [item.envelope.id for item in items]))

    async def _apply(
        self, uow: UnitOfWork, generation: int, marks: str, marked: set[str], item: _Ready
    ) -> None:
        event_id = item.envelope.id
        if event_id in marked:
            await uow.delete(marks, event_id)  # applied inline already
            return
        view = ProjectionContext(self.projection, uow, generation, item.envelope)
        try:
            await item.handler.fn(item.message, view)
        except Exception as exc:
            record = item.record
            exc.add_note(
                f"projection {self.projection.name}: {item.handler.name} on "
                f"{item.envelope.type} {item.envelope.id} "
                f"({record.topic}/{record.partition}@{record.offset})"
            )
            raise

    async def _prepare(self, records: list[Record]) -> list[_Ready]:
        ready = []
        handlers = self.projection.handlers
        for n, record in enumerate(records, 1):
            if n % YIELD_EVERY == 0:
                await asyncio.sleep(0)  # decoding is CPU work: let requests in between
            where = f"{record.topic}/{record.partition}@{record.offset}"
            try:
                envelope = await decode(record, self.schemas, handlers)
            except (codec.DecodeError, codec.UnknownSchema, SchemaViolation) as exc:
                log.warning("projection %s: skipping %s: %s", self.projection.name, where, exc)
                continue
            handler = None if envelope is None else handlers.get(envelope.type)
            if envelope is None or handler is None:
                continue
            try:
                data = upcast(handler.message_type, envelope.data, envelope.version)
                message = handler.message_type.model_validate(data)
            except (NoUpcastPath, pydantic.ValidationError) as exc:
                log.warning("projection %s: skipping %s: %s", self.projection.name, where, exc)
                continue
            ready.append(_Ready(record, handler, message, envelope))
        return ready

    # -- the serving generation ----------------------------------------------------------
    async def serving(self) -> int:
        """The generation that serves reads; the first one is set up (pointer and empty
        checkpoint, in one commit) when the projection has no pointer yet."""
        async with read_only(self.store, self.service) as uow:
            pointer = await read_pointer(uow, self.projection)
        if pointer.version > 0:
            return pointer.generation
        async with self.store.unit_of_work(self.service) as uow:
            return (await set_up(uow, self.projection)).generation

    async def start_at_end(self) -> int:
        """Set up the first generation with its checkpoint at the topics' current ends, so
        that it applies only what is published from now on instead of replaying the log:
        for a read model of what happens next, or a new store beside a long log (a
        benchmark on a broker that keeps earlier runs' events). The generation set up;
        ``ValueError`` if the projection has one already (skipping part of the log under
        rows it has would leave holes: ``rebuild`` replays it)."""
        ends = await self.ends()
        async with self.store.unit_of_work(self.service) as uow:
            pointer = await read_pointer(uow, self.projection)
            if pointer.version > 0:
                raise ValueError(
                    f"projection {self.projection.name} of {self.service} is set up already "
                    f"(generation {pointer.generation}): it cannot start at the end"
                )
            return (await set_up(uow, self.projection, ends)).generation

    async def run(self, stopping: asyncio.Event) -> None:
        """Follow the serving generation until ``stopping`` is set."""
        failures = conflicts = 0
        while not stopping.is_set():
            try:
                applied = await self.step(await self.serving())
                failures = conflicts = 0
            except ConcurrencyConflict:
                # Another member applied it, or the generation moved: look again, after a
                # jittered pause, or the members of a group would race each other in a loop.
                conflicts += 1
                await self.sleep(policy.conflict_delay(conflicts))
                continue
            except INFRASTRUCTURE_ERRORS as exc:
                failures += 1
                log.warning("projection %s: %s; retrying", self.projection.name, exc)
                await self.sleep(min(30.0, self.retry_delay * failures))
                continue
            except Exception:
                failures += 1
                log.exception(
                    "projection %s: a handler failed; batch rolled back", self.projection.name
                )
                await self.sleep(min(30.0, self.retry_delay * failures))
                continue
            # An inline projection is kept current by the service's own units of work;
            # the projector only settles what they did not apply, so once it has caught
            # up it waits too, and reads a larger step next time (a step of a few records
            # each time was a fifth of the order service's CPU on Kafka).
            if applied == 0 or (self.projection.inline and not self.behind):
                await self.sleep(self.idle)

    # -- status and rebuild --------------------------------------------------------------
    async def status(self) -> ProjectionStatus:
        async with read_only(self.store, self.service) as uow:
            pointer = await read_pointer(uow, self.projection)
            checkpoint = await read_checkpoint(uow, self.projection, pointer.generation)
        ends = await self.ends()
        partitions = [
            PartitionStatus(topic, partition, checkpoint.positions.get((topic, partition), 0), end)
            for (topic, partition), end in sorted(ends.items())
        ]
        return ProjectionStatus(
            self.projection.name, pointer.generation, pointer.building, partitions
        )

    async def rebuild(self, progress: Callable[[int], None] | None = None) -> Rebuilt:
        """Replay every topic from offset 0 into a new generation, then switch reads to it
        in one commit and remove the old one; the old one serves reads until the switch.
        The three steps are :meth:`claim`, :meth:`fill` and :meth:`switch`."""
        claimed, previous = await self.claim()
        records = await self.fill(claimed, progress)
        await self.switch(claimed, previous)
        return Rebuilt(claimed.building or 0, previous.generation, records)

    async def claim(self) -> tuple[Pointer, Pointer]:
        """Claim a new generation in the pointer (``building``), with an empty checkpoint;
        the claimed pointer and the one before. From this commit on, inline units of work
        apply to the new generation too."""
        async with self.store.unit_of_work(self.service) as uow:
            pointer = await read_pointer(uow, self.projection)
            new = max(pointer.generation, pointer.building or 0) + 1
            claimed = Pointer(pointer.generation, new, pointer.version + 1)
            await write_pointer(uow, self.projection, claimed, pointer)
            await write_checkpoint(uow, self.projection, new, {}, 0)
        if pointer.building is not None:  # a rebuild that never finished left it behind
            await self.drop(pointer.building)
        return claimed, pointer

    async def fill(self, claimed: Pointer, progress: Callable[[int], None] | None = None) -> int:
        """Replay the topics into the claimed generation until it has caught up with their
        ends; how many records were read."""
        assert claimed.building is not None
        records = 0
        while applied := await self.step(claimed.building):
            records += applied
            if progress is not None:
                progress(records)
        return records

    async def switch(self, claimed: Pointer, previous: Pointer) -> None:
        """Move reads to the claimed generation (``RebuildSuperseded`` if the pointer is no
        longer as claimed), then remove the previous one."""
        new = claimed.building
        assert new is not None
        async with self.store.unit_of_work(self.service) as uow:
            current = await read_pointer(uow, self.projection)
            if current != claimed:
                raise RebuildSuperseded(
                    f"projection {self.projection.name}: generation {new} was not switched to: "
                    f"another rebuild claimed generation {current.building} meanwhile"
                )
            await write_pointer(uow, self.projection, Pointer(new, None, 0), current)
        if previous.generation > 0:
            await self.drop(previous.generation)

    async def drop(self, generation: int) -> int:
        """Remove a generation's checkpoint and rows (in one unit of work); how many rows."""
        removed = 0
        async with self.store.unit_of_work(self.service) as uow:
            await uow.delete(POINTERS, self.projection.checkpoint_key(generation))
            names = [
                self.projection.stored_name(n, generation) for n in self.projection.collections
            ]
            for stored in [*names, self.projection.marks_name(generation)]:
                while docs := await uow.list(stored, 1000):
                    for doc in docs:
                        await uow.delete(stored, doc.key)
                    removed += len(docs)
        return removed


__all__ = [
    "Checkpoint",
    "PartitionStatus",
    "ProjectionStatus",
    "Projector",
    "RebuildSuperseded",
    "Rebuilt",
]
