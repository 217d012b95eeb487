"""The reliability rules of the runtime, on the in-memory transport with a fake clock."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator

import pytest
from pydantic import BaseModel

from tidings import Collection, Context, Event, NonRecoverable, RetryPolicy, Service
from tidings.reliability.deadletter import DeadLetter, dlq_topic
from tidings.runtime import Runtime
from tidings.store.sqlite import SQLiteStore
from tidings.testing import records as all_records
from tidings.testing.harness import drain
from tidings.transport.base import OutgoingRecord
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
    assert await total(rt, "a") is None  # nothing of the failed attempts committed
    assert await all_records(transport, "unit.counts") == []


async def test_non_recoverable_error_is_dead_lettered_without_retry(transport, store) -> None:
    clock = FakeClock()
    svc = counter_service(fail_times=1, error=NonRecoverable)
    rt = await started(svc, transport, store, sleep=clock.sleep)
    await publish(rt, ThingHappened(thing_id="a", n=1))
    await drain(rt)
    assert clock.sleeps == []
    letters = await all_records(transport, dlq_topic(svc.group))
    assert [DeadLetter.from_record(r).attempts for r in letters] == [1]


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
    reasons = [
        DeadLetter.from_record(r).reason for r in await all_records(transport, dlq_topic(svc.group))
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


async def test_an_outage_of_the_store_is_waited_out_not_dead_lettered(transport, store) -> None:
    from tidings.store.base import StoreUnavailable

    svc = Service(f"outage{next(_names)}")
    outage = {"left": 1}
    seen: list[tuple[str, int]] = []

    @svc.on(ThingHappened)
    async def handle(event: ThingHappened, ctx: Context) -> None:
        if outage["left"]:
            outage["left"] -= 1
            raise StoreUnavailable("postgresql://db: connection lost")
        seen.append((event.thing_id, event.n))

    rt = await started(svc, transport, store)
    # Several keys, so one fetched batch spans several partitions.
    events = [ThingHappened(thing_id=f"t{i % 5}", n=i) for i in range(20)]
    await publish(rt, *events)
    with pytest.raises(StoreUnavailable):
        await drain(rt)
    await asyncio.sleep(0.6)  # the partitions were rewound with a short pause
    await drain(rt)
    # Nothing fetched in the failed batch was skipped, in any partition, and each key's
    # events came in order.
    assert sorted(n for _, n in seen) == list(range(20))
    for key in {e.thing_id for e in events}:
        ns = [n for k, n in seen if k == key]
        assert ns == sorted(ns)
    assert rt.stats.dead_lettered == 0
    assert rt.stats.retries == 0


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
