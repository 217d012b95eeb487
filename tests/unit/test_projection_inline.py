"""Inline projections: applied in the unit of work that publishes an event (read your
writes), skipped by the projector when it meets that event in the log (marks), fed by the
consumed events on a broker without history, and counted once across a rebuild."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from pydantic import BaseModel

from tidings import Context, Event, Service
from tidings.projection import ProjectionContext, ProjectionView
from tidings.runtime import Runtime
from tidings.store import make_store
from tidings.store.base import read_only
from tidings.testing.harness import drain
from tidings.testing.postgres import sqlite_or_postgres
from tidings.transport import make_transport
from tidings.transport.memory import MemoryTransport
from tidings.units import direct_record

POSTGRES = "postgresql://127.0.0.1:5432/tidings"
TOPIC = f"unit.inline.{uuid.uuid4().hex[:8]}"
SOLD_TOPIC = f"unit.inline.sold.{uuid.uuid4().hex[:8]}"


class Sold(Event, topic=TOPIC, key="sku"):
    sku: str
    units: int


class Counted(Event, topic=SOLD_TOPIC, key="sku"):
    """Published by the service for each Sold it consumes."""

    sku: str


class Tally(BaseModel):
    sku: str
    units: int = 0
    sales: int = 0


service = Service("inline", publishes=[Sold, Counted])
tallies = service.projection("tallies", inline=True)
by_sku = tallies.collection("by_sku", Tally)


@tallies.on
async def count(event: Sold, view: ProjectionContext) -> None:
    """Not idempotent on purpose: an event applied twice would count twice."""
    row = await view.get(by_sku, event.sku) or Tally(sku=event.sku)
    await view.put(by_sku, event.sku, row.model_copy(
        update={"units": row.units + event.units, "sales": row.sales + 1}))  # fmt: skip


@service.on
async def consumed(event: Sold, ctx: Context) -> None:
    ctx.publish(Counted(sku=event.sku))


async def rows(view: ProjectionView) -> dict[str, Tally]:
    return {t.sku: t for t in await view.list(by_sku)}


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    with sqlite_or_postgres(request.param, f"sqlite:///{tmp_path}/state.db", POSTGRES) as url:
        yield url


@pytest.fixture
async def runtime(store_url: str, tmp_path: Path) -> AsyncIterator[Runtime]:
    transport = make_transport(f"sqlite:///{tmp_path}/log.db")
    store = make_store(store_url, service.name)
    await transport.connect()
    await store.connect()
    rt = Runtime(service, transport, store)
    await rt.start(background=False)
    try:
        yield rt
    finally:
        await rt.stop()
        await store.close()
        await transport.close()


async def view_of(rt: Runtime) -> dict[str, Tally]:
    async with rt.unit_of_work() as ctx:
        return await ctx.read(tallies, rows)


async def marks(rt: Runtime, generation: int) -> list[str]:
    async with read_only(rt.store, service.name) as uow:
        return [doc.key for doc in await uow.list(tallies.marks_name(generation), 100)]


async def test_published_is_read_at_once_and_the_log_does_not_apply_it_again(
    runtime: Runtime,
) -> None:
    async with runtime.unit_of_work() as ctx:
        published = ctx.publish(Sold(sku="a", units=2))
    # Read your writes: nothing relayed or projected yet.
    assert await view_of(runtime) == {"a": Tally(sku="a", units=2, sales=1)}
    assert await marks(runtime, 1) == [published.id]
    # The projector meets it in the log: skipped, its mark removed; another's event counts.
    await runtime.transport.publish(
        [direct_record(Sold(sku="a", units=5), runtime.transport, source="elsewhere")[1]]
    )
    await drain(runtime)
    assert await view_of(runtime) == {"a": Tally(sku="a", units=7, sales=2)}
    assert await marks(runtime, 1) == []
    assert (await runtime.projectors[0].status()).lag == 0


async def test_a_consumed_event_is_applied_once_whichever_comes_first(runtime: Runtime) -> None:
    transport = runtime.transport

    async def another(units: int) -> None:
        record = direct_record(Sold(sku="c", units=units), transport, source="elsewhere")[1]
        await transport.publish([record])

    await another(1)
    assert await runtime.poll(timeout=1) == 1  # the handler's unit of work applies it
    assert await view_of(runtime) == {"c": Tally(sku="c", units=1, sales=1)}
    assert await runtime.project_once() == 1  # the projector finds the mark
    await another(2)
    assert await runtime.project_once() == 1  # the projector first, this time
    assert await runtime.poll(timeout=1) == 1  # the handler sees the checkpoint past it
    await drain(runtime)
    assert await view_of(runtime) == {"c": Tally(sku="c", units=3, sales=2)}
    assert await marks(runtime, 1) == []


async def test_a_unit_of_work_that_fails_leaves_neither_row_nor_mark(runtime: Runtime) -> None:
    with pytest.raises(RuntimeError, match="crash"):
        async with runtime.unit_of_work() as ctx:
            ctx.publish(Sold(sku="a", units=2))
            raise RuntimeError("crash before the commit")
    assert await view_of(runtime) == {}
    assert await marks(runtime, 1) == []
    assert await drain(runtime) == 0  # nothing in the outbox either


async def test_a_rebuild_counts_events_published_while_it_fills_once(runtime: Runtime) -> None:
    async with runtime.unit_of_work() as ctx:
        ctx.publish(Sold(sku="a", units=1))
    await drain(runtime)
    projector = runtime.projectors[0]
    claimed, previous = await projector.claim()
    async with runtime.unit_of_work() as ctx:  # applied to generations 1 and 2, marked
        during = ctx.publish(Sold(sku="a", units=10))
    assert await marks(runtime, 2) == [during.id]
    await runtime.relay.relay_once()  # in the log before the fill reads it
    assert await projector.fill(claimed) == 2
    await projector.switch(claimed, previous)
    assert await view_of(runtime) == {"a": Tally(sku="a", units=11, sales=2)}
    assert await marks(runtime, 2) == []
    await drain(runtime)  # the consumer's Counted events; the view stays as it is
    assert await view_of(runtime) == {"a": Tally(sku="a", units=11, sales=2)}


async def test_without_history_the_consumed_events_feed_it_once(tmp_path: Path) -> None:
    transport = MemoryTransport(f"memory://inline-{uuid.uuid4().hex[:6]}")
    # The memory broker keeps history; this one is told it does not, as RabbitMQ says.
    transport.capabilities = dataclasses.replace(transport.capabilities, history=False)
    transport.faults.duplicate = True  # every record delivered twice: the inbox drops one
    store = make_store(f"sqlite:///{tmp_path}/state.db", service.name)
    await transport.connect()
    await store.connect()
    rt = Runtime(service, transport, store)
    assert rt.projectors == []  # nothing reads the log
    await rt.start(background=False)
    try:
        records = [
            direct_record(Sold(sku="b", units=n), transport, source="elsewhere")[1] for n in (1, 2)
        ]
        await transport.publish(records)
        await drain(rt)
        assert await view_of(rt) == {"b": Tally(sku="b", units=3, sales=2)}
        assert await marks(rt, 1) == []  # nothing replays the log: no marks kept
    finally:
        await rt.stop()
        await store.close()
        await transport.close()


def test_without_history_every_handled_type_must_reach_the_service(tmp_path: Path) -> None:
    lonely = Service("lonely", publishes=[Counted])
    lonely_view = lonely.projection("view", inline=True)

    @lonely_view.on
    async def never(event: Sold, view: ProjectionContext) -> None:
        pass

    transport = MemoryTransport("memory://lonely")
    transport.capabilities = dataclasses.replace(transport.capabilities, history=False)
    with pytest.raises(ValueError, match="projection view handles Sold, which the service neither"):
        Runtime(lonely, transport, make_store(f"sqlite:///{tmp_path}/state.db", "lonely"))
