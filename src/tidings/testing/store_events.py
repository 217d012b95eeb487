"""The event store's conformance suite: the event store rules of :mod:`tidings.store.base`
and of :mod:`tidings.eventsourcing`, against a real database.

Subclass :class:`EventStoreConformance` beside :class:`~tidings.testing.store.StoreConformance`
and give it the same ``store_url`` fixture. Writers that must overlap run in separate OS
processes (this module's :func:`worker_main`), each loading and saving an aggregate
through a handler's :class:`~tidings.service.Context`, as a service would.
"""

from __future__ import annotations

import asyncio
import json
import random
import sys
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import pytest

from tidings import codec
from tidings.eventsourcing import Aggregate, AggregateError, applies, repository
from tidings.messages import Event
from tidings.records import Record
from tidings.service import Context
from tidings.store import ConcurrencyConflict, Store, open_store
from tidings.store.base import NewEvent, Snapshot, StoredEvent, UnitOfWork, read_only
from tidings.testing.store import Boom, OpenStore, StoreFixtures, Worker, together
from tidings.transport.memory import MemoryTransport
from tidings.units import OutboxUnits


# -- the aggregate the suite writes -------------------------------------------------------
class Counted(Event, topic="conformance.counters", key="counter_id"):
    counter_id: str
    n: int
    note: str = ""


class CounterReset(Event, topic="conformance.counters", key="counter_id"):
    counter_id: str


class Counter(Aggregate):
    """A state every event changes in a way that shows order: sums, a tail, a count."""

    total: int = 0
    count: int = 0
    last: list[int] = []
    resets: int = 0

    def add(self, n: int, note: str = "") -> None:
        if n < 0:
            raise ValueError("a counter only counts up")
        self.record(Counted(counter_id=self.id, n=n, note=note))

    def reset(self) -> None:
        self.record(CounterReset(counter_id=self.id))

    @applies(Counted)
    def _counted(self, event: Counted) -> None:
        self.total += event.n
        self.count += 1
        self.last = [*self.last, event.n][-5:]

    @applies(CounterReset)
    def _reset(self, event: CounterReset) -> None:
        self.total = 0
        self.resets += 1


class SnapshottedCounter(Counter, name="Counter", snapshot_every=10):
    """The same stream as :class:`Counter`, with a snapshot every 10 events."""


def new_event(i: int, when: datetime | None = None) -> NewEvent:
    return NewEvent(
        event_id=f"ev-{i}",
        type="Counted",
        schema_version=1,
        time=when or datetime(2026, 1, 2, 3, 4, 5, 123456, tzinfo=UTC) + timedelta(seconds=i),
        data={"counter_id": "c", "n": i, "note": "naïve ✓", "big": 2**53},
    )


class CountingUnit:
    """A unit of work that counts the events and snapshots read through it."""

    def __init__(self, uow: UnitOfWork) -> None:
        self._uow = uow
        self.events_read = 0
        self.snapshot_version: int | None = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._uow, name)

    async def read_stream(
        self, stream: str, after_version: int = 0, to_version: int | None = None
    ) -> list[StoredEvent]:
        events = await self._uow.read_stream(stream, after_version, to_version)
        self.events_read += len(events)
        return events

    async def read_aggregate(
        self, stream: str, schema: str, to_version: int | None = None
    ) -> tuple[Snapshot | None, list[StoredEvent]]:
        snapshot, events = await self._uow.read_aggregate(stream, schema, to_version)
        self.snapshot_version = None if snapshot is None else snapshot.version
        self.events_read += len(events)
        return snapshot, events


# -- worker processes ---------------------------------------------------------------------
def worker_main() -> None:
    """Entry point of a worker process (see :class:`~tidings.testing.store.Worker`)."""
    asyncio.run(_worker(sys.argv[1]))


async def _worker(url: str) -> None:
    store = await open_store(url)
    print(json.dumps({"ready": True}), flush=True)
    try:
        while line := await asyncio.to_thread(sys.stdin.readline):
            cmd = json.loads(line)
            answer: dict[str, Any]
            if cmd["op"] == "add":  # a handler: load, decide, hold, save
                units = OutboxUnits(
                    cmd["service"], store, MemoryTransport(), "binary", on_outbox=lambda: None
                )
                try:
                    async with units.open() as (_, ctx):
                        counter = await ctx.load(Counter, cmd["id"]) or Counter(id=cmd["id"])
                        counter.add(cmd["n"], note=cmd["note"])
                    if cmd["apart"]:  # read in one unit of work, save in the next
                        await asyncio.sleep(cmd["hold"])
                    async with units.open() as (_, ctx):
                        if not cmd["apart"]:  # read, hold and save in one unit of work
                            counter = await ctx.load(Counter, cmd["id"]) or Counter(id=cmd["id"])
                            counter.add(cmd["n"], note=cmd["note"])
                            await asyncio.sleep(cmd["hold"])
                        await ctx.save(counter)
                    answer = {"version": counter.version}
                except ConcurrencyConflict as exc:
                    answer = {"conflict": str(exc)}
            else:
                answer = {"error": f"unknown op {cmd['op']!r}"}
            print(json.dumps(answer), flush=True)
    finally:
        await store.close()


def _ids_in_outbox(records: Sequence[Any]) -> list[str]:
    """The CloudEvents ids of outbox records, decoded as a consumer would."""
    return [codec.decode(Record(r.topic, 0, 0, r.key, r.value, r.headers, 0.0)).id for r in records]


class EventStoreConformance(StoreFixtures):
    """The event store's rules; needs a ``store_url`` fixture."""

    worker_module = "tidings.testing.store_events"

    @staticmethod
    def units(store: Store, service: str) -> OutboxUnits:
        """Units of work with a context, whose published events go to the outbox."""
        return OutboxUnits(service, store, MemoryTransport(), "binary", on_outbox=lambda: None)

    async def save_counter(
        self, store: Store, svc: str, id: str, ns: Sequence[int], klass: type[Counter] = Counter
    ) -> Counter:
        async with self.units(store, svc).open() as (_, ctx):
            counter = await ctx.load(klass, id) or klass(id=id)
            for n in ns:
                counter.add(n)
            await ctx.save(counter)
        return counter

    # -- append and read ------------------------------------------------------------------
    async def test_append_and_read_round_trip(self, store: Store, svc: str, other_svc: str) -> None:
        async with store.unit_of_work(svc) as uow:
            first = await uow.append("s-1", 0, [new_event(1), new_event(2)])
            assert await uow.read_stream("s-1") != [], "a unit of work reads its own appends"
        async with store.unit_of_work(svc) as uow:
            second = await uow.append("s-1", 2, [new_event(3)])
            assert await uow.append("s-1", 3, []) == []
        positions = first + second
        assert positions == sorted(positions) and len(set(positions)) == 3
        async with read_only(store, svc) as uow:
            events = await uow.read_stream("s-1")
            assert [e.version for e in events] == [1, 2, 3]
            assert [e.position for e in events] == positions
            for e, i in zip(events, (1, 2, 3), strict=True):
                expected = new_event(i)
                assert (e.stream, e.event_id, e.type, e.schema_version) == (
                    "s-1",
                    expected.event_id,
                    "Counted",
                    1,
                )
                assert e.time == expected.time and e.time.tzinfo is not None
                assert e.data == expected.data
            assert [e.version for e in await uow.read_stream("s-1", after_version=1)] == [2, 3]
            assert [e.version for e in await uow.read_stream("s-1", 1, to_version=2)] == [2]
            assert await uow.read_stream("s-2") == []
        async with read_only(store, other_svc) as uow:
            assert await uow.read_stream("s-1") == [], "streams are per service"
            assert await uow.read_events() == []

    async def test_expected_version_conflicts_and_leaves_no_gap(
        self, store: Store, svc: str
    ) -> None:
        async with store.unit_of_work(svc) as uow:
            await uow.append("s", 0, [new_event(i) for i in range(1, 4)])
        for wrong in (0, 1, 2, 4, 9):
            with pytest.raises(ConcurrencyConflict):
                async with store.unit_of_work(svc) as uow:
                    await uow.put("docs", "d", {"v": wrong})
                    await uow.append("s", wrong, [new_event(10 + wrong)])
        async with read_only(store, svc) as uow:
            assert [e.version for e in await uow.read_stream("s")] == [1, 2, 3]
            assert await uow.get("docs", "d") is None, "the conflict rolls back the unit"

    async def test_saving_a_stale_aggregate_conflicts(
        self, store: Store, open_another: OpenStore, svc: str
    ) -> None:
        other = await open_another()
        await self.save_counter(store, svc, "c1", [1])
        async with self.units(store, svc).open() as (_, ctx):
            stale = await ctx.load(Counter, "c1")
        assert stale is not None and stale.version == 1
        await self.save_counter(other, svc, "c1", [10])  # another process got there first
        stale.add(2)
        with pytest.raises(ConcurrencyConflict, match=r"Counter:c1 is at version 2, expected 1"):
            async with self.units(store, svc).open() as (_, ctx):
                await ctx.save(stale)
        async with read_only(store, svc) as uow:
            counter = await Context(svc, uow).load(Counter, "c1")
        assert counter is not None and (counter.version, counter.total) == (2, 11)
        assert await store.outbox_backlog(svc) == 2, "the loser's event was published"

    @pytest.mark.parametrize("apart", [True, False], ids=["read-then-save", "one-unit"])
    async def test_concurrent_appends_from_two_processes_never_both_win(
        self,
        store: Store,
        workers: Callable[[int], Awaitable[list[Worker]]],
        svc: str,
        apart: bool,
    ) -> None:
        """Two processes add to one counter at once, each holding what it read for 0.3 s.

        ``read-then-save``: both read the same version in one unit of work and append in
        the next, so exactly one may win. ``one-unit``: read, hold and append in one unit of
        work; a store that serialises writers (SQLite) lets the second read the first's
        event, one that does not (PostgreSQL) must refuse it. Either way no two appends win
        at the same version and the state is the sum of the winners."""
        await self.save_counter(store, svc, "hot", [1])
        pair = await workers(2)
        won: list[int] = []
        for round_ in range(3):
            for i, w in enumerate(pair):
                n = 10 ** (round_ * 2 + i + 1)  # which adds won shows in the total
                w.send(
                    op="add", service=svc, id="hot", n=n, note=f"{round_}", hold=0.3, apart=apart
                )
            answers = [await w.receive() for w in pair]
            winners = [i for i, a in enumerate(answers) if "version" in a]
            if apart:
                assert len(winners) == 1, answers
                assert f"expected {round_ + 1}" in answers[1 - winners[0]]["conflict"], answers
            versions = [answers[i]["version"] for i in winners]
            assert winners and len(set(versions)) == len(versions), answers
            won += [10 ** (round_ * 2 + i + 1) for i in winners]
        async with read_only(store, svc) as uow:
            events = await uow.read_stream(Counter.stream_id("hot"))
            counter = await Context(svc, uow).load(Counter, "hot")
        assert [e.version for e in events] == list(range(1, len(won) + 2))
        assert counter is not None and counter.total == 1 + sum(won)
        claimed = await store.claim_outbox(svc, limit=100)
        assert _ids_in_outbox([c.record for c in claimed]) == [e.event_id for e in events]

    # -- the outbox -----------------------------------------------------------------------
    async def test_saved_events_are_in_the_outbox_of_the_same_commit(
        self, store: Store, open_another: OpenStore, svc: str
    ) -> None:
        other = await open_another()
        async with self.units(store, svc).open() as (_, ctx):
            counter = Counter(id="c1")
            counter.add(1)
            counter.add(2)
            await ctx.save(counter)
            assert counter.pending_events() == []
            assert await other.outbox_backlog(svc) == 0, "published before the commit"
        async with read_only(store, svc) as uow:
            events = await uow.read_stream(Counter.stream_id("c1"))
        claimed = await other.claim_outbox(svc)
        assert _ids_in_outbox([c.record for c in claimed]) == [e.event_id for e in events]
        assert [c.record.topic for c in claimed] == ["conformance.counters"] * 2
        assert [c.record.key for c in claimed] == ["c1", "c1"]
        decoded = [
            codec.decode(Record(c.record.topic, 0, 0, None, c.record.value, c.record.headers, 0))
            for c in claimed
        ]
        assert [d.data for d in decoded] == [e.data for e in events]
        assert [d.time for d in decoded] == [e.time for e in events]

    async def test_rolled_back_save_leaves_neither_events_nor_outbox_rows(
        self, store: Store, svc: str
    ) -> None:
        await self.save_counter(store, svc, "c1", [1])
        with pytest.raises(Boom):
            async with self.units(store, svc).open() as (_, ctx):
                counter = await ctx.load(Counter, "c1")
                assert counter is not None
                counter.add(5)
                await ctx.save(counter)
                raise Boom
        async with read_only(store, svc) as uow:
            assert [e.version for e in await uow.read_stream(Counter.stream_id("c1"))] == [1]
        assert await store.outbox_backlog(svc) == 1

    async def test_save_in_a_rolled_back_savepoint_is_undone(self, store: Store, svc: str) -> None:
        async with store.unit_of_work(svc) as uow:
            ctx = Context(svc, uow)
            with pytest.raises(Boom):
                async with uow.savepoint():
                    counter = Counter(id="gone")
                    counter.add(1)
                    await ctx.save(counter)
                    raise Boom
            kept = Counter(id="kept")
            kept.add(2)
            await ctx.save(kept)
        async with read_only(store, svc) as uow:
            assert await uow.read_stream(Counter.stream_id("gone")) == []
            assert len(await uow.read_stream(Counter.stream_id("kept"))) == 1

    # -- snapshots --------------------------------------------------------------------------
    async def test_snapshot_gives_the_state_of_a_full_replay(self, store: Store, svc: str) -> None:
        ns = [(i * 7) % 13 for i in range(1, 254)]  # 253 events: snapshots, then 3 more
        for start in range(0, len(ns), 50):  # saves of 50: crossing several multiples of 10
            await self.save_counter(store, svc, "c1", ns[start : start + 50], SnapshottedCounter)
        async with store.unit_of_work(svc) as uow:
            counting = CountingUnit(uow)
            fast = await repository.load(cast(UnitOfWork, counting), SnapshottedCounter, "c1")
            full = await repository.load(uow, Counter, "c1")
            assert fast is not None and full is not None
            assert counting.snapshot_version == 250 and counting.events_read == 3
            assert fast.model_dump() == full.model_dump()
            assert fast.version == full.version == 253
            assert full.count == 253 and full.total == sum(ns) and full.last == ns[-5:]
            for version in (1, 10, 49, 50, 51, 137, 250):  # from the snapshot before it
                counting = CountingUnit(uow)
                past = await repository.load(
                    cast(UnitOfWork, counting), SnapshottedCounter, "c1", version=version
                )
                replayed = await repository.load(uow, Counter, "c1", version=version)
                assert past is not None and replayed is not None
                assert past.model_dump() == replayed.model_dump(), version
                assert past.version == replayed.version == version
                # A save of 50 crossing multiples of 10 keeps the state it reaches: 50, 100...
                from_snapshot = max([v for v in range(50, 251, 50) if v <= version], default=0)
                assert counting.events_read == version - from_snapshot, version

    async def test_a_10000_event_stream_loads_from_its_snapshot(
        self, store: Store, svc: str
    ) -> None:
        ns = [i % 11 for i in range(10_007)]
        for start in range(0, len(ns), 1000):  # snapshots at 1000, 2000, ... 10000
            await self.save_counter(store, svc, "big", ns[start : start + 1000], SnapshottedCounter)
        async with read_only(store, svc) as uow:
            counting = CountingUnit(uow)
            fast = await repository.load(cast(UnitOfWork, counting), SnapshottedCounter, "big")
            full = await repository.load(uow, Counter, "big")
        assert counting.snapshot_version == 10_000 and counting.events_read == 7
        assert fast is not None and full is not None
        assert fast.model_dump() == full.model_dump() and fast.version == full.version == 10_007
        assert full.total == sum(ns)

    async def test_a_snapshot_that_no_longer_validates_is_ignored(
        self, store: Store, svc: str
    ) -> None:
        await self.save_counter(store, svc, "c1", range(1, 11), SnapshottedCounter)
        await self.save_counter(store, svc, "c1", [11, 12], SnapshottedCounter)
        async with store.unit_of_work(svc) as uow:
            snapshot = await uow.latest_snapshot(
                Counter.stream_id("c1"), SnapshottedCounter.aggregate_info.snapshot_schema
            )
            assert snapshot is not None and snapshot.version == 10
            assert snapshot.state["total"] == sum(range(1, 11))
            broken = snapshot.__class__(
                snapshot.stream, 11, snapshot.schema, {**snapshot.state, "total": "many"}
            )
            await uow.save_snapshot(broken)
        async with read_only(store, svc) as uow:
            counter = await Context(svc, uow).load(SnapshottedCounter, "c1")
        assert counter is not None and (counter.version, counter.total) == (12, sum(range(1, 13)))

    # -- positions ------------------------------------------------------------------------
    async def test_global_positions_follow_commit_order(self, store: Store, svc: str) -> None:
        """Writers append concurrently to many streams while a reader tails by position:
        whatever it read, it never later finds an event below a position it passed."""
        done = asyncio.Event()
        tailed: list[StoredEvent] = []

        async def writer(w: int) -> None:
            rng = random.Random(w)
            for i in range(15):
                async with self.units(store, svc).open() as (_, ctx):
                    counter = await ctx.load(Counter, f"w{w}-{i % 3}") or Counter(
                        id=f"w{w}-{i % 3}"
                    )
                    counter.add(i)
                    counter.add(w)
                    await ctx.save(counter)
                    # Commits come late and in any order: a position taken is not committed.
                    await asyncio.sleep(rng.random() * 0.005)

        async def tail() -> None:
            while True:
                finished = done.is_set()
                async with read_only(store, svc) as uow:
                    after = tailed[-1].position if tailed else 0
                    page = await uow.read_events(after, limit=7)
                tailed.extend(page)
                if finished and not page:
                    return
                await asyncio.sleep(0)

        reader = asyncio.create_task(tail())
        await together(*(writer(w) for w in range(6)))
        done.set()
        await reader
        async with read_only(store, svc) as uow:
            every: list[StoredEvent] = []
            while page := await uow.read_events(every[-1].position if every else 0, 50):
                every.extend(page)
        assert len(every) == 6 * 15 * 2
        assert [e.position for e in every] == sorted({e.position for e in every})
        assert [e.event_id for e in tailed] == [e.event_id for e in every], "the tail missed some"
        for stream in {e.stream for e in every}:
            assert [e.version for e in every if e.stream == stream] == list(range(1, 11))

    # -- loading --------------------------------------------------------------------------
    async def test_load_at_a_past_time_and_unknown_aggregates(self, store: Store, svc: str) -> None:
        first = await self.save_counter(store, svc, "c1", [1, 2])
        async with read_only(store, svc) as uow:
            [*_, second] = await uow.read_stream(Counter.stream_id("c1"))
        await asyncio.sleep(0.01)
        await self.save_counter(store, svc, "c1", [40])
        async with read_only(store, svc) as uow:
            ctx = Context(svc, uow)
            then = await ctx.load(Counter, "c1", at=second.time)
            now = await ctx.load(Counter, "c1")
            assert await ctx.load(Counter, "c1", at=second.time - timedelta(days=1)) is None
            assert await ctx.load(Counter, "nobody") is None
        assert then is not None and now is not None
        assert (then.version, then.total) == (first.version, 3) == (2, 3)
        assert (now.version, now.total) == (3, 43)

    async def test_a_stream_with_an_event_the_aggregate_does_not_know_fails_clearly(
        self, store: Store, svc: str
    ) -> None:
        stranger = NewEvent("ev-x", "Stranger", 1, datetime.now(UTC), {"counter_id": "c1"})
        async with store.unit_of_work(svc) as uow:
            await uow.append(Counter.stream_id("c1"), 0, [stranger])
        with pytest.raises(
            AggregateError, match=r"Counter:c1 v1: Counter does not apply .*Stranger"
        ):
            async with read_only(store, svc) as uow:
                await Context(svc, uow).load(Counter, "c1")

    async def test_a_command_that_refuses_records_nothing(self) -> None:
        counter = Counter(id="c1")
        with pytest.raises(ValueError, match="only counts up"):
            counter.add(-1)
        assert counter.pending_events() == [] and counter.version == 0
        with pytest.raises(TypeError, match="does not apply Stray"):
            counter.record(Stray(counter_id="c1"))


class Stray(Event, topic="conformance.stray", key="counter_id"):
    counter_id: str
