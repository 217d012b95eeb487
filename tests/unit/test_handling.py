"""Batched units of work (runtime/handling.py): a run of one partition's events in one
transaction, each handler in a savepoint, on the memory transport and a real SQLite file."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator

import pytest
from pydantic import BaseModel

from tidings import Collection, Context, Event, NonRecoverable, RetryPolicy, Service
from tidings.reliability.deadletter import DeadLetter, dlq_topic
from tidings.runtime import Runtime
from tidings.store.sqlite import SQLiteStore
from tidings.testing import records
from tidings.testing.harness import drain
from tidings.transport.memory import MemoryTransport

_names = itertools.count()


class Step(Event, topic="unit.steps", key="key"):
    key: str
    n: int


class Seen(BaseModel):
    ns: list[int] = []


seen_ns = Collection("seen", Seen)


@pytest.fixture
def transport() -> MemoryTransport:
    return MemoryTransport(f"memory://handling-{next(_names)}")


@pytest.fixture
async def store(tmp_path) -> AsyncIterator[SQLiteStore]:
    s = SQLiteStore(str(tmp_path / "state.db"))
    await s.connect()
    commits: list[str] = []
    s.conn.set_trace_callback(lambda sql: commits.append(sql) if sql == "COMMIT" else None)
    s.commits = commits  # type: ignore[attr-defined]
    yield s
    await s.close()


def recorder(fail: dict[int, int], *, fatal: set[int] = frozenset()) -> Service:  # type: ignore[assignment]
    """Appends each n to its key's list; raises for n in ``fail`` (that many times)."""
    svc = Service(f"batch{next(_names)}", retry=RetryPolicy(max_attempts=3, jitter=0.0))
    calls: list[int] = []
    svc.calls = calls  # type: ignore[attr-defined]

    @svc.on(Step)
    async def record(event: Step, ctx: Context) -> None:
        calls.append(event.n)
        doc = await ctx.get(seen_ns, event.key) or Seen()
        await ctx.put(seen_ns, event.key, Seen(ns=[*doc.ns, event.n]))
        if event.n in fatal:
            raise NonRecoverable(f"step {event.n} is refused")
        if fail.get(event.n, 0) > 0:
            fail[event.n] -= 1
            raise RuntimeError(f"step {event.n} failed")

    return svc


async def run(
    svc: Service, transport: MemoryTransport, store: SQLiteStore, steps: list[Step]
) -> Runtime:
    async def instant(_: float) -> None: ...

    rt = Runtime(svc, transport, store, sleep=instant)
    await rt.start(background=False)
    async with rt.unit_of_work() as ctx:
        for step in steps:
            ctx.publish(step)
    await rt.relay.relay_once()
    store.commits.clear()  # type: ignore[attr-defined]
    await drain(rt)
    return rt


async def ns(rt: Runtime, key: str) -> list[int]:
    async with rt.unit_of_work() as ctx:
        doc = await ctx.get(seen_ns, key)
    return [] if doc is None else doc.ns


async def test_a_run_of_one_partition_commits_once(transport, store) -> None:
    rt = await run(recorder({}), transport, store, [Step(key="k", n=i) for i in range(50)])
    assert await ns(rt, "k") == list(range(50))
    assert rt.stats.handled == 50
    # 50 events in one unit of work (plus the read above): not one commit per event.
    assert len(store.commits) <= 3, store.commits


async def test_a_failing_handler_rolls_back_only_itself(transport, store) -> None:
    svc = recorder({}, fatal={4})
    rt = await run(svc, transport, store, [Step(key="k", n=i) for i in range(10)])
    # Step 4's write was rolled back with its savepoint; the others committed, in order.
    assert await ns(rt, "k") == [0, 1, 2, 3, 5, 6, 7, 8, 9]
    assert rt.stats.handled == 9 and rt.stats.dead_lettered == 1
    [letter] = [DeadLetter.from_record(r) for r in await records(transport, dlq_topic(svc.group))]
    assert letter.offset == 4 and letter.attempts == 1
    assert svc.calls.count(4) == 1, "a non-recoverable handler must run once"


async def test_a_handler_that_fails_then_succeeds_keeps_the_order(transport, store) -> None:
    svc = recorder({3: 2})
    rt = await run(svc, transport, store, [Step(key="k", n=i) for i in range(8)])
    assert await ns(rt, "k") == list(range(8))
    assert svc.calls.count(3) == 3, "two failures and a success: the policy's 3 attempts"
    assert rt.stats.handled == 8 and rt.stats.retries == 2 and rt.stats.dead_lettered == 0


async def test_duplicates_inside_one_fetch_are_handled_once(transport, store) -> None:
    transport.faults.duplicate = True
    rt = await run(recorder({}), transport, store, [Step(key="k", n=i) for i in range(10)])
    assert rt.stats.consumed > 10, "the fault should have delivered events twice"
    assert await ns(rt, "k") == list(range(10))
    assert rt.stats.handled == 10


async def test_effects_of_a_batch_are_published_once_each(transport, store) -> None:
    svc = Service(f"relay{next(_names)}")

    class Echoed(Event, topic="unit.echoes", key="key"):
        key: str
        n: int

    @svc.on(Step)
    async def echo(event: Step, ctx: Context) -> None:
        if event.n == 2:
            ctx.publish(Echoed(key=event.key, n=-1))  # published, then rolled back below
            raise NonRecoverable("no")
        ctx.publish(Echoed(key=event.key, n=event.n))

    rt = await run(svc, transport, store, [Step(key="k", n=i) for i in range(6)])
    await drain(rt)
    from tidings import codec

    echoed = [codec.decode(r).data["n"] for r in await records(transport, "unit.echoes")]
    assert echoed == [0, 1, 3, 4, 5]


async def test_a_record_over_the_size_limit_is_dead_lettered_without_its_value(
    transport, store
) -> None:
    from tidings.records import OutgoingRecord

    svc = recorder({})
    rt = await run(svc, transport, store, [Step(key="k", n=1)])
    big = b'{"specversion":"1.0","data":"' + b"x" * 5000 + b'"}'
    await transport.publish([OutgoingRecord(Step.message_info.topic, big, "k", {})])
    transport.max_record_bytes = 300
    await drain(rt)
    assert rt.stats.dead_lettered == 1 and await ns(rt, "k") == [1]
    [letter] = [DeadLetter.from_record(r) for r in await records(transport, dlq_topic(svc.group))]
    assert letter.kind == "too_large" and "over this transport's max_record_bytes=300" in (
        letter.reason
    )
    assert letter.record.value == b""  # the value would not fit the dead-letter topic either
