"""The reliability rules of the runtime, on the in-memory transport with a fake clock."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import logging
import random
import sqlite3
import time
from collections.abc import AsyncIterator, Callable

import pytest
from pydantic import BaseModel

from tidings import Collection, Context, Event, NonRecoverable, RetryPolicy, Service
from tidings.reliability.deadletter import DeadLetter, DeadLetterKind, dlq_topic
from tidings.runtime import Observer, Runtime
from tidings.store.base import StoreUnavailable
from tidings.store.sqlite import SQLiteStore
from tidings.testing import records as all_records
from tidings.testing.harness import drain
from tidings.transport.base import BrokerUnavailable, OutgoingRecord
from tidings.transport.errors import NotAuthorized, TransportError
from tidings.transport.memory import MemoryTransport

_names = itertools.count()


class ThingHappened(Event, topic="unit.things", key="thing_id"):
    thing_id: str
    n: int


class ThingCounted(Event, topic="unit.counts", key="thing_id"):
    thing_id: str
    total: int


class Total(BaseModel):
    total: int = 0


totals = Collection("totals", Total)


class Handled(BaseModel):
    ns: list[int] = []


handled_ns = Collection("handled", Handled)


class FakeClock:
    def __init__(self) -> None:
        self.sleeps: list[float] = []

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)


@pytest.fixture
def transport() -> MemoryTransport:
    return MemoryTransport(f"memory://unit-{next(_names)}")


@pytest.fixture
async def store(tmp_path) -> AsyncIterator[SQLiteStore]:
    s = SQLiteStore(str(tmp_path / "state.db"))
    await s.connect()
    yield s
    await s.close()


def counter_service(fail_times: int = 0, error: type[Exception] = RuntimeError) -> Service:
    """Counts ThingHappened per thing and publishes the running total."""
    svc = Service(f"counter{next(_names)}", retry=RetryPolicy(max_attempts=3, jitter=0.0))
    failures = {"left": fail_times}

    @svc.on(ThingHappened)
    async def count(event: ThingHappened, ctx: Context) -> None:
        doc = await ctx.get(totals, event.thing_id) or Total()
        doc = Total(total=doc.total + event.n)
        await ctx.put(totals, event.thing_id, doc)
        ctx.publish(ThingCounted(thing_id=event.thing_id, total=doc.total))
        if failures["left"] > 0:
            failures["left"] -= 1
            raise error("boom")

    return svc


async def publish(rt: Runtime, *events: Event) -> list[str]:
    async with rt.unit_of_work() as ctx:
        return [ctx.publish(e).id for e in events]


async def total(rt: Runtime, thing: str) -> int | None:
    async with rt.unit_of_work() as ctx:
        doc = await ctx.get(totals, thing)
    return None if doc is None else doc.total


async def started(svc: Service, transport: MemoryTransport, store: SQLiteStore, **kw) -> Runtime:
    rt = Runtime(svc, transport, store, **kw)
    await rt.start(background=False)
    return rt


async def test_event_is_handled_and_its_effect_published(transport, store) -> None:
    rt = await started(counter_service(), transport, store)
    await publish(rt, ThingHappened(thing_id="a", n=2), ThingHappened(thing_id="a", n=3))
    await drain(rt)
    assert await total(rt, "a") == 5
    counted = await all_records(transport, "unit.counts")
    assert len(counted) == 2
    assert rt.stats.handled == 2


async def test_duplicate_delivery_is_handled_once(transport, store) -> None:
    transport.faults.duplicate = True
    rt = await started(counter_service(), transport, store)
    await publish(rt, ThingHappened(thing_id="a", n=2))
    await drain(rt)
    assert rt.stats.consumed >= 2, "the fault should have delivered the event twice"
    assert rt.stats.duplicates >= 1
    assert await total(rt, "a") == 2
    assert len(await all_records(transport, "unit.counts")) == 1


async def test_crash_before_ack_redelivers_and_the_inbox_absorbs_it(transport, store) -> None:
    rt = await started(counter_service(), transport, store)
    await publish(rt, ThingHappened(thing_id="a", n=7))
    transport.faults.crash_before_ack = 1
    await drain(rt)
    assert rt.stats.handled == 1
    assert rt.stats.duplicates == 1
    assert await total(rt, "a") == 7


async def test_failing_handler_is_retried_with_backoff_then_succeeds(transport, store) -> None:
    clock = FakeClock()
    rt = await started(counter_service(fail_times=2), transport, store, sleep=clock.sleep)
    await publish(rt, ThingHappened(thing_id="a", n=1))
    await drain(rt)
    assert rt.stats.retries == 2
    assert clock.sleeps == [pytest.approx(0.05), pytest.approx(0.1)]  # exponential, no jitter
    # Each failed attempt rolled back: the total counts the event once, one effect published.
    assert await total(rt, "a") == 1
    assert len(await all_records(transport, "unit.counts")) == 1
    assert rt.stats.dead_lettered == 0


async def test_retries_exhausted_go_to_dead_letters_with_error_and_coordinates(
    transport, store
) -> None:
    clock = FakeClock()
    svc = counter_service(fail_times=99)
    rt = await started(svc, transport, store, sleep=clock.sleep)
    await publish(rt, ThingHappened(thing_id="a", n=1), ThingHappened(thing_id="b", n=1))
    await drain(rt)
    assert len(clock.sleeps) == 4  # 2 retries for each of the two events
    letters = [
        DeadLetter.from_record(r) for r in await all_records(transport, dlq_topic(svc.group))
    ]
    assert len(letters) == 2
    letter = letters[0]
    assert letter.attempts == 3
    assert letter.error == "RuntimeError: boom"
    assert "raise error" in letter.traceback
    assert letter.topic == "unit.things" and letter.offset == 0
    assert "failed after 3 attempt(s)" in letter.reason
    assert letter.kind is DeadLetterKind.RETRIES_EXHAUSTED
    assert await total(rt, "a") is None  # nothing of the failed attempts committed
    assert await all_records(transport, "unit.counts") == []


async def test_non_recoverable_error_is_dead_lettered_without_retry(transport, store) -> None:
    clock = FakeClock()
    svc = counter_service(fail_times=1, error=NonRecoverable)
    rt = await started(svc, transport, store, sleep=clock.sleep)
    await publish(rt, ThingHappened(thing_id="a", n=1))
    await drain(rt)
    assert clock.sleeps == []
    letters = [
        DeadLetter.from_record(r) for r in await all_records(transport, dlq_topic(svc.group))
    ]
    assert [(d.attempts, d.kind) for d in letters] == [(1, DeadLetterKind.NON_RECOVERABLE)]


async def test_undecodable_and_invalid_events_go_to_dead_letters_at_once(transport, store) -> None:
    svc = counter_service()
    rt = await started(svc, transport, store)
    await transport.publish(
        [
            OutgoingRecord("unit.things", b"{not json", "k"),
            OutgoingRecord("unit.things", b'{"specversion": "1.0", "data": {}}', "k"),
            OutgoingRecord(
                "unit.things",
                b'{"thing_id": "a", "n": "many"}',
                "k",
                {
                    "ce_id": "x1",
                    "ce_source": "t",
                    "ce_type": "ThingHappened",
                    "ce_specversion": "1.0",
                },
            ),
        ]
    )
    await publish(rt, ThingHappened(thing_id="a", n=4))  # the consumer keeps going after them
    await drain(rt)
    letters = [
        DeadLetter.from_record(r) for r in await all_records(transport, dlq_topic(svc.group))
    ]
    reasons = [d.reason for d in letters]
    assert [d.kind for d in letters] == [
        DeadLetterKind.UNDECODABLE,
        DeadLetterKind.UNDECODABLE,
        DeadLetterKind.INVALID,
    ]
    assert len(reasons) == 3
    assert reasons[0].startswith("undecodable: structured CloudEvent is not valid JSON")
    assert "missing attribute(s) id, source, type" in reasons[1]
    assert reasons[2].startswith("invalid ThingHappened: n: Input should be a valid integer")
    assert await total(rt, "a") == 4


async def test_rolled_back_unit_of_work_publishes_nothing(transport, store) -> None:
    rt = await started(counter_service(), transport, store)
    with pytest.raises(ZeroDivisionError):
        async with rt.unit_of_work() as ctx:
            ctx.publish(ThingHappened(thing_id="a", n=1))
            await ctx.put(totals, "a", Total(total=100))
            1 / 0  # noqa: B018
    await drain(rt)
    assert await all_records(transport, "unit.things") == []
    assert await total(rt, "a") is None
    assert await store.outbox_backlog(rt.service.name) == 0


async def test_effects_inherit_correlation_and_causation(transport, store) -> None:
    from tidings import codec

    rt = await started(counter_service(), transport, store)
    [first] = await publish(rt, ThingHappened(thing_id="a", n=1))
    await drain(rt)
    [cause] = [codec.decode(r) for r in await all_records(transport, "unit.things")]
    [effect] = [codec.decode(r) for r in await all_records(transport, "unit.counts")]
    assert cause.id == first and cause.correlationid == first and cause.causationid is None
    assert effect.correlationid == first
    assert effect.causationid == first
    assert effect.source == rt.service.name
    assert effect.subject == "a"
    assert effect.id > cause.id  # UUIDv7 ids sort by time


async def test_dead_letter_replay_reaches_only_the_failing_group(
    transport, store, tmp_path
) -> None:
    failing = counter_service(fail_times=3)  # 3 attempts fail, then it would work
    other = counter_service()
    other_store = SQLiteStore(str(tmp_path / "other.db"))
    await other_store.connect()
    clock = FakeClock()
    rt = await started(failing, transport, store, sleep=clock.sleep)
    rt2 = await started(other, transport, other_store, sleep=clock.sleep)
    await publish(rt, ThingHappened(thing_id="a", n=5))
    await drain(rt, rt2)
    [record] = await all_records(transport, dlq_topic(failing.group))
    await transport.publish([DeadLetter.from_record(record).replay_record()])
    await drain(rt, rt2)
    assert await total(rt, "a") == 5
    assert await total(rt2, "a") == 5
    assert rt2.stats.consumed == 1, "the replay must not reach the group that handled it"
    await other_store.close()


class LockTheFileAfter(Observer):
    """After the ``n``-th handled event, another connection takes the SQLite file's write
    lock (as a backup or a migration in another process would) until ``release()``.

    ``on_handled`` runs right after the commit of the unit of work that handled the event
    (one event, or a run of up to ``batch_max`` events), before the next unit of work of
    the fetched batch can begin, so the outage starts in the middle of a batch.
    """

    def __init__(self, path: str, n: int) -> None:
        self.path = path
        self.left = n
        self.blocker: sqlite3.Connection | None = None

    def on_handled(self, service, envelope, record, outcome, seconds) -> None:  # type: ignore[no-untyped-def]
        self.left -= 1
        if self.left == 0:
            self.blocker = sqlite3.connect(self.path, isolation_level=None)
            self.blocker.execute("BEGIN IMMEDIATE")

    def release(self) -> None:
        assert self.blocker is not None, "the outage never started"
        self.blocker.execute("ROLLBACK")
        self.blocker.close()


async def test_an_outage_of_the_store_is_waited_out_not_dead_lettered(transport, tmp_path) -> None:
    path = str(tmp_path / "outage.db")
    store = SQLiteStore(path, busy_timeout=0.1)  # give up on a locked file quickly
    await store.connect()
    svc = Service(f"outage{next(_names)}")

    @svc.on(ThingHappened)
    async def handle(event: ThingHappened, ctx: Context) -> None:
        doc = await ctx.get(handled_ns, event.thing_id) or Handled()
        await ctx.put(handled_ns, event.thing_id, Handled(ns=[*doc.ns, event.n]))

    outage = LockTheFileAfter(path, n=7)
    rt = Runtime(svc, transport, store, observer=outage, batch_max=5)
    await rt.start(background=False)
    # Several keys, so the fetched batch spans several partitions; units of 5 events.
    events = [ThingHappened(thing_id=f"t{i % 5}", n=i) for i in range(20)]
    await publish(rt, *events)
    await rt.relay.relay_once()
    with pytest.raises(StoreUnavailable, match="database is locked"):
        await rt.poll()
    assert 7 <= rt.stats.handled < 20, "the outage should start in the middle of the batch"
    outage.release()
    await asyncio.sleep(0.6)  # the partitions were rewound with a short pause
    await drain(rt)

    # Every event was handled once, in every partition, and each key's events in order.
    async with rt.unit_of_work() as ctx:
        handled = {f"t{k}": (await ctx.get(handled_ns, f"t{k}") or Handled()).ns for k in range(5)}
    assert sorted(n for ns in handled.values() for n in ns) == list(range(20))
    for key, ns in handled.items():
        assert ns == [e.n for e in events if e.thing_id == key]
    assert rt.stats.handled == 20
    # And the group's committed offsets reach the end of every partition it was given.
    committed = await transport.committed(svc.group)
    [info] = [t for t in await transport.topics() if t.name == "unit.things"]
    assert {p: committed.get(("unit.things", p), 0) for p in info.end_offsets} == dict(
        info.end_offsets
    )
    assert rt.stats.dead_lettered == 0
    assert rt.stats.retries == 0
    await store.close()


async def test_an_event_with_a_field_this_consumer_does_not_know_is_still_handled(
    transport, store
) -> None:
    """Schema evolution: a producer added an optional field; old consumers keep working."""
    rt = await started(counter_service(), transport, store)
    headers = {
        "ce_id": "e-new",
        "ce_source": "newer",
        "ce_type": "ThingHappened",
        "ce_specversion": "1.0",
    }
    value = b'{"thing_id": "a", "n": 3, "colour": "blue"}'
    await transport.publish([OutgoingRecord("unit.things", value, "a", headers)])
    await drain(rt)
    assert await total(rt, "a") == 3
    assert rt.stats.dead_lettered == 0


async def test_a_dead_letter_written_before_letters_had_a_kind_is_still_read(
    transport, store
) -> None:
    svc = counter_service(fail_times=99)
    rt = await started(svc, transport, store, sleep=FakeClock().sleep)
    await publish(rt, ThingHappened(thing_id="a", n=1))
    await drain(rt)
    [record] = await all_records(transport, dlq_topic(svc.group))
    headers = {k: v for k, v in record.headers.items() if k != "dlq-kind"}
    letter = DeadLetter.from_record(dataclasses.replace(record, headers=headers))
    assert letter.kind is None
    assert "failed after 3 attempt(s)" in letter.reason
    assert letter.attempts == 3
    assert letter.replay_record().headers == {
        **{k: v for k, v in headers.items() if not k.startswith("dlq-")},
        "replayed-from": "unit.things",
    }


class BrokerDownFor(MemoryTransport):
    """The in-memory broker, refusing the first ``n`` publishes as an unreachable one does."""

    def __init__(self, url: str, n: int) -> None:
        super().__init__(url)
        self.refusals = n

    async def publish(self, records):  # type: ignore[no-untyped-def]
        if self.refusals > 0:
            self.refusals -= 1
            raise BrokerUnavailable("memory://down: connection refused")
        return await super().publish(records)


async def test_the_outbox_relay_waits_for_the_broker_through_the_injected_clock(store) -> None:
    transport = BrokerDownFor(f"memory://unit-{next(_names)}", n=0)
    clock = FakeClock()
    rt = await started(counter_service(), transport, store, sleep=clock.sleep)
    await publish(rt, ThingHappened(thing_id="a", n=1))
    transport.refusals = 3
    assert await rt.relay.relay_once() == 1
    # Three refusals, three growing waits (100 ms * 2**(n-1), less up to half), all seen
    # by the fake clock: none of them slept for real.
    assert len(clock.sleeps) == 3
    for n, slept in enumerate(clock.sleeps, start=1):
        assert 0.1 * 2 ** (n - 1) / 2 <= slept <= 0.1 * 2 ** (n - 1)
    assert len(await all_records(transport, "unit.things")) == 1
    assert await store.outbox_backlog(rt.service.name) == 0


class YieldingClock(FakeClock):
    """A fake clock for a runtime that runs in the background: waits take no time but let
    the other tasks run."""

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        await asyncio.sleep(0)


async def test_a_conflict_storm_backs_off_and_never_stops_the_service(
    transport, store, caplog
) -> None:
    conflicts = 120  # more than the 100 after which conflicts used to stop the consume loop
    svc = Service(f"storm{next(_names)}", retry=RetryPolicy(max_attempts=2, jitter=0.0))
    left = {"conflicts": conflicts}

    @svc.on(ThingHappened)
    async def count(event: ThingHappened, ctx: Context) -> None:
        doc = await ctx.get_versioned(totals, event.thing_id)
        version = 0 if doc is None else doc.version
        if left["conflicts"] > 0:  # as if another unit of work had written it meanwhile
            left["conflicts"] -= 1
            version += 1
        await ctx.put(totals, event.thing_id, Total(total=event.n), expected_version=version)

    clock = YieldingClock()
    rt = Runtime(svc, transport, store, sleep=clock.sleep, rng=random.Random(7))
    with caplog.at_level(logging.WARNING, logger="tidings.runtime"):
        await rt.start()
        try:
            await publish(rt, ThingHappened(thing_id="a", n=1))
            await wait_until(lambda: rt.stats.handled == 1)
            await publish(rt, ThingHappened(thing_id="b", n=2))  # the loop still consumes
            await wait_until(lambda: rt.stats.handled == 2)
            consuming = [t for t in rt._tasks if t.get_name() == "consume"]
            assert consuming and not consuming[0].done()
            assert await total(rt, "a") == 1 and await total(rt, "b") == 2
        finally:
            await rt.stop()
    assert rt.stats.conflicts == conflicts
    assert rt.stats.retries == 0 and rt.stats.dead_lettered == 0  # not the handler's attempts
    # One wait per conflict, doubling from 2 ms up to the 1 s cap, each less up to half.
    backoffs = [s for s in clock.sleeps if s > 0 and s != rt.prune_every]  # not the pruning's
    assert len(backoffs) == conflicts
    for n, slept in enumerate(backoffs, start=1):
        ceiling = min(1.0, 0.002 * 2 ** (n - 1))
        assert ceiling / 2 <= slept <= ceiling
    storms = [r for r in caplog.records if "conflicts in a row" in r.getMessage()]
    assert [r.getMessage().split(": ")[1].split()[0] for r in storms] == ["10", "100"]


async def wait_until(condition: Callable[[], bool], seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.01)


async def test_a_refused_ack_is_logged_and_the_event_comes_again(transport, store, caplog) -> None:
    svc = Service(f"evicted{next(_names)}")
    runtime: list[Runtime] = []

    @svc.on(ThingHappened)
    async def handle(event: ThingHappened, ctx: Context) -> None:
        await ctx.put(totals, event.thing_id, Total(total=event.n))
        sub = runtime[0].subscription
        if sub is not None and sub.assignment():
            # The member is put out of the group while it handles (as after a session
            # timeout): the broker refuses its ack.
            await sub.close()

    rt = await started(svc, transport, store)
    runtime.append(rt)
    await publish(rt, ThingHappened(thing_id="a", n=3))
    await rt.relay.relay_once()
    with caplog.at_level(logging.WARNING, logger="tidings.runtime"):
        assert await rt.poll() == 1  # the refusal is not an error of the batch
    [record] = await all_records(transport, "unit.things")
    [warning] = [r for r in caplog.records if " ack of " in r.getMessage()]
    assert warning.levelno == logging.WARNING
    assert (warning.consumer_group, warning.topic, warning.partition, warning.offset) == (
        svc.group,
        "unit.things",
        record.partition,
        record.offset,
    )
    # Nothing acked, so the group's next member gets the event again; the inbox absorbs it.
    rt.subscription = await transport.subscribe(svc.group, list(svc.topics()))
    await drain(rt)
    assert rt.stats.handled == 1 and rt.stats.duplicates == 1
    assert await total(rt, "a") == 3


async def test_an_effect_too_large_for_the_broker_is_dead_lettered_at_once(
    transport, store
) -> None:
    svc = Service(f"large{next(_names)}")

    @svc.on(ThingHappened)
    async def describe(event: ThingHappened, ctx: Context) -> None:
        ctx.publish(ThingCounted(thing_id="x" * (transport.max_record_bytes + 1), total=1))

    clock = FakeClock()
    rt = await started(svc, transport, store, sleep=clock.sleep)
    await publish(rt, ThingHappened(thing_id="a", n=1))
    await drain(rt)
    [letter] = [
        DeadLetter.from_record(r) for r in await all_records(transport, dlq_topic(svc.group))
    ]
    assert letter.kind is DeadLetterKind.TOO_LARGE
    assert letter.attempts == 1 and clock.sleeps == []
    assert await all_records(transport, "unit.counts") == []


async def test_stop_ends_a_conflict_storm_that_never_ends_and_keeps_the_event(
    transport, store
) -> None:
    svc = Service(f"endless{next(_names)}")

    @svc.on(ThingHappened)
    async def count(event: ThingHappened, ctx: Context) -> None:
        await ctx.put(totals, event.thing_id, Total(total=1), expected_version=7)

    rt = Runtime(svc, transport, store, sleep=YieldingClock().sleep)
    await rt.start()
    await publish(rt, ThingHappened(thing_id="a", n=1))
    await wait_until(lambda: rt.stats.conflicts > 50)
    await asyncio.wait_for(rt.stop(), 10)  # the storm must not hold stop() up
    assert rt.stats.handled == 0 and rt.stats.dead_lettered == 0
    assert await transport.committed(svc.group) == {}, "the event must not be acked"


async def test_the_inbox_is_pruned_in_the_background_past_the_dedupe_window(
    transport, store
) -> None:
    clock = YieldingClock()
    rt = Runtime(counter_service(), transport, store, sleep=clock.sleep)
    group, day = rt.service.group, 24 * 3600
    # Marks as the SQLite inbox holds them (epoch seconds): 8 days old and 6 days old.
    store.conn.executemany(
        "INSERT INTO inbox (grp, event_id, handled_at) VALUES (?, ?, ?)",
        [(group, "eight-days", time.time() - 8 * day), (group, "six-days", time.time() - 6 * day)],
    )

    def marks() -> set[str]:
        rows = store.conn.execute("SELECT event_id FROM inbox WHERE grp = ?", (group,))
        return {r[0] for r in rows}

    await rt.start()
    try:
        [event_id] = await publish(rt, ThingHappened(thing_id="a", n=1))
        await wait_until(lambda: rt.stats.handled == 1)
        await wait_until(lambda: "eight-days" not in marks())
    finally:
        await rt.stop()
    # The default window is 7 days: the 6-day-old mark and the fresh one stay.
    assert marks() == {"six-days", event_id}
    assert 60.0 in clock.sleeps, "pruning waits through the injected clock"


class SettlingTransport(MemoryTransport):
    """Creating a topic times out ``failures`` times (a cluster electing its leaders), or
    is refused when ``refusal`` is set."""

    def __init__(self, url: str, failures: int, refusal: Exception | None = None) -> None:
        super().__init__(url)
        self.failures = failures
        self.refusal = refusal
        self.attempts = 0

    async def create_topic(self, name: str, partitions: int | None = None) -> None:
        self.attempts += 1
        if self.refusal is not None:
            raise self.refusal
        if self.failures > 0:
            self.failures -= 1
            raise TransportError(f"{self.url}: creating {name} timed out")
        await super().create_topic(name, partitions)


async def test_a_start_waits_out_a_broker_that_is_still_settling(store) -> None:
    clock = FakeClock()
    transport = SettlingTransport(f"memory://unit-{next(_names)}", failures=2)
    rt = await started(counter_service(), transport, store, sleep=clock.sleep)
    assert clock.sleeps[:2] == [2.0, 2.0]  # two waits, then every topic was created
    assert {t.name for t in await transport.topics()} >= {"unit.things"}
    await rt.stop()


async def test_a_refused_topic_fails_the_start_at_once(store) -> None:
    refusal = NotAuthorized("user counter is refused CREATE on topic 'unit.things'")
    transport = SettlingTransport(f"memory://unit-{next(_names)}", 0, refusal)
    with pytest.raises(NotAuthorized, match="refused CREATE"):
        await started(counter_service(), transport, store, sleep=FakeClock().sleep)
    assert transport.attempts == 1
