"""Projections on a real SQLite log, with the SQLite store and PostgreSQL: the fold, the
checkpoint committed with the rows (a failing handler leaves neither), rebuild and status."""

from __future__ import annotations

import asyncio
import types
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from tidings import Event, Service
from tidings.projection import ProjectionContext, ProjectionView, read_current
from tidings.runtime.projector import Projector
from tidings.store import make_store
from tidings.store.base import Store, read_only
from tidings.testing.postgres import sqlite_or_postgres
from tidings.testing.servers import require
from tidings.transport import make_transport
from tidings.transport.base import Transport
from tidings.units import direct_record

POSTGRES = "postgresql://127.0.0.1:5432/tidings"
TOPIC = f"unit.projection.{uuid.uuid4().hex[:8]}"


class Sold(Event, topic=TOPIC, key="sku"):
    sku: str
    units: int


class Tally(BaseModel):
    sku: str
    units: int = 0
    sales: int = 0


service = Service("projected")
tallies_projection = service.projection("tallies")
tallies = tallies_projection.collection("by_sku", Tally)
fail_on: set[int] = set()  # unit counts whose handler raises (a crash mid-batch)


@tallies_projection.on
async def count(event: Sold, view: ProjectionContext) -> None:
    row = await view.get(tallies, event.sku) or Tally(sku=event.sku)
    await view.put(
        tallies, event.sku, Tally(sku=event.sku, units=row.units + event.units, sales=row.sales + 1)
    )
    if event.units in fail_on:
        raise RuntimeError(f"cannot count {event.units} {event.sku}")


async def rows(view: ProjectionView) -> dict[str, Tally]:
    return {t.sku: t for t in await view.list(tallies)}


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    with sqlite_or_postgres(request.param, f"sqlite:///{tmp_path}/state.db", POSTGRES) as url:
        yield url


@pytest.fixture
async def parts(store_url: str, tmp_path: Path) -> AsyncIterator[tuple[Transport, Store]]:
    transport = make_transport(f"sqlite:///{tmp_path}/log.db")
    store = make_store(store_url, service.name)
    await transport.connect()
    await store.connect()
    await transport.create_topic(TOPIC, partitions=2)
    fail_on.clear()
    try:
        yield transport, store
    finally:
        await store.close()
        await transport.close()


async def publish(transport: Transport, *events: Sold) -> None:
    await transport.publish([direct_record(e, transport, source="test")[1] for e in events])


async def current(store: Store) -> dict[str, Tally]:
    async with read_only(store, service.name) as uow:
        return await read_current(tallies_projection, uow, rows)


async def test_folds_events_and_checkpoints_per_partition(parts: tuple[Transport, Store]) -> None:
    transport, store = parts
    await publish(transport, Sold(sku="a", units=2), Sold(sku="b", units=1), Sold(sku="a", units=3))
    projector = Projector(tallies_projection, transport, store)
    generation = await projector.serving()
    assert await projector.step(generation) == 3
    assert await projector.step(generation) == 0  # caught up
    assert await current(store) == {
        "a": Tally(sku="a", units=5, sales=2),
        "b": Tally(sku="b", units=1, sales=1),
    }
    status = await projector.status()
    assert (status.generation, status.lag) == (1, 0)
    assert sum(p.position for p in status.partitions) == 3
    await publish(transport, Sold(sku="b", units=4))
    assert (await projector.status()).lag == 1


async def test_a_failing_handler_rolls_back_rows_and_checkpoint(
    parts: tuple[Transport, Store],
) -> None:
    transport, store = parts
    projector = Projector(tallies_projection, transport, store)
    generation = await projector.serving()
    await publish(transport, Sold(sku="a", units=1), Sold(sku="a", units=1))
    await projector.step(generation)
    # One key, one partition: the failing event comes after one already applied in the batch.
    await publish(transport, Sold(sku="a", units=10), Sold(sku="a", units=13))
    fail_on.add(13)
    with pytest.raises(RuntimeError, match="cannot count 13 a") as raised:
        await projector.step(generation)
    assert "projection tallies: count on" in "\n".join(raised.value.__notes__)
    # Neither the row of the event before it in the batch nor the checkpoint moved.
    assert await current(store) == {"a": Tally(sku="a", units=2, sales=2)}
    assert (await projector.status()).lag == 2
    fail_on.clear()
    assert await projector.step(generation) == 2
    assert await current(store) == {"a": Tally(sku="a", units=25, sales=4)}


async def test_a_step_cut_short_by_its_time_commits_what_it_applied(
    parts: tuple[Transport, Store],
) -> None:
    transport, store = parts
    await publish(transport, *(Sold(sku=s, units=1) for s in "abababab"))
    projector = Projector(tallies_projection, transport, store, step_seconds=0.0)
    generation = await projector.serving()
    assert await projector.step(generation) == 1  # one record, then its time is up
    assert projector.behind
    assert sum(t.sales for t in (await current(store)).values()) == 1
    assert (await projector.status()).lag == 7
    while await projector.step(generation):
        pass
    assert await current(store) == {
        "a": Tally(sku="a", units=4, sales=4),
        "b": Tally(sku="b", units=4, sales=4),
    }


class Counting(Projector):
    steps = 0

    async def step(self, generation: int) -> int:
        self.steps += 1
        return await super().step(generation)


@pytest.mark.parametrize("inline", [True, False])
async def test_the_projector_waits_once_caught_up_and_an_inline_one_without_an_empty_step(
    parts: tuple[Transport, Store], monkeypatch: pytest.MonkeyPatch, inline: bool
) -> None:
    transport, store = parts
    await publish(transport, *(Sold(sku="a", units=1) for _ in range(5)))  # one partition
    monkeypatch.setattr(tallies_projection, "inline", inline)
    stopping = asyncio.Event()
    waited: list[tuple[int, int]] = []  # (steps so far, sales applied) at each wait

    async def sleep(seconds: float) -> None:
        waited.append((projector.steps, sum(t.sales for t in (await current(store)).values())))
        stopping.set()

    projector = Counting(tallies_projection, transport, store, batch=2, sleep=sleep)
    await projector.run(stopping)
    # 2, 2 (records left: on at once), then 1 (caught up): an inline projection, kept
    # current by its service's units of work, waits there; another reads once more first.
    assert waited == [(3 if inline else 4, 5)]
    assert not projector.behind


async def test_two_projectors_on_one_batch_commit_it_once(parts: tuple[Transport, Store]) -> None:
    transport, store = parts
    await publish(transport, *(Sold(sku="a", units=1) for _ in range(5)))
    first = Projector(tallies_projection, transport, store)
    second = Projector(tallies_projection, transport, store)
    generation = await first.serving()
    assert await first.step(generation) == 5
    assert await second.step(generation) == 0
    assert (await current(store))["a"] == Tally(sku="a", units=5, sales=5)


async def test_one_projector_at_a_time_applies_until_its_lease_lapses(
    parts: tuple[Transport, Store],
) -> None:
    transport, store = parts
    now = [1000.0]
    first, second = (
        Projector(tallies_projection, transport, store, lease=5.0, clock=lambda: now[0])
        for _ in range(2)
    )
    generation = await first.serving()
    await publish(transport, Sold(sku="a", units=1))
    assert await first.step(generation) == 1
    await publish(transport, Sold(sku="a", units=2))
    assert await second.step(generation) == 0  # the first holds the lease
    now[0] += 4.9
    assert await second.step(generation) == 0
    assert await first.step(generation) == 1  # its own lease: it applies, and renews
    await publish(transport, Sold(sku="a", units=3))
    now[0] += 5.1  # the first went quiet: its lease lapsed
    assert await second.step(generation) == 1
    await publish(transport, Sold(sku="a", units=4))
    assert await first.step(generation) == 0  # now the second's
    assert await second.step(generation) == 1
    assert (await current(store))["a"] == Tally(sku="a", units=10, sales=4)


async def test_rebuild_replays_into_a_new_generation_and_removes_the_old(
    parts: tuple[Transport, Store],
) -> None:
    transport, store = parts
    await publish(transport, *(Sold(sku=s, units=n) for n, s in enumerate("abcabca", 1)))
    projector = Projector(tallies_projection, transport, store, batch=2)
    while await projector.step(await projector.serving()):
        pass
    live = await current(store)
    done = await projector.rebuild()
    assert (done.generation, done.previous, done.records) == (2, 1, 7)
    assert await current(store) == live
    async with read_only(store, service.name) as uow:
        assert await uow.list(tallies_projection.stored_name("by_sku", 1)) == []
        assert await uow.get("_projections", "tallies@1") is None
    # The live projector carries on in the new generation.
    await publish(transport, Sold(sku="a", units=100))
    assert await projector.step(await projector.serving()) == 1
    assert (await current(store))["a"].units == live["a"].units + 100


async def test_a_projection_started_at_the_end_applies_only_what_comes_after(
    parts: tuple[Transport, Store],
) -> None:
    transport, store = parts
    await publish(transport, Sold(sku="a", units=1), Sold(sku="b", units=2))
    projector = Projector(tallies_projection, transport, store)
    assert await projector.start_at_end() == 1
    assert await projector.step(1) == 0
    assert (await projector.status()).lag == 0
    await publish(transport, Sold(sku="a", units=5))
    assert await projector.step(await projector.serving()) == 1
    assert await current(store) == {"a": Tally(sku="a", units=5, sales=1)}
    with pytest.raises(ValueError, match="set up already"):
        await projector.start_at_end()


async def test_reads_before_any_generation_are_empty(parts: tuple[Transport, Store]) -> None:
    _, store = parts
    assert await current(store) == {}


@pytest.mark.parametrize(
    "broker", ["kafka://127.0.0.1:9092", "nats://127.0.0.1:4222"], ids=["kafka", "nats"]
)
async def test_a_projection_replays_a_real_broker_from_offset_zero(
    broker: str, tmp_path: Path
) -> None:
    require(broker)
    topic = f"unit.projection.{uuid.uuid4().hex[:10]}"
    sold = types.new_class(
        "Sold", (Event,), {"topic": topic, "key": "sku"},
        lambda ns: ns.update({"__annotations__": {"sku": str, "units": int}}),
    )  # fmt: skip
    projection = Service(f"projected-{uuid.uuid4().hex[:6]}").projection("units")
    units = projection.collection("units", Tally)

    @projection.on(sold)
    async def add(event: Any, view: ProjectionContext) -> None:
        row = await view.get(units, event.sku) or Tally(sku=event.sku)
        await view.put(units, event.sku, row.model_copy(update={"units": row.units + event.units}))

    transport = make_transport(broker)
    store = make_store(f"sqlite:///{tmp_path}/state.db", projection.service)
    await transport.connect()
    await store.connect()
    try:
        await transport.create_topic(topic, partitions=2)
        events = [sold(sku=s, units=n) for n, s in enumerate("abcab", 1)]
        await transport.publish([direct_record(e, transport, source="test")[1] for e in events])
        projector = Projector(projection, transport, store)
        while await projector.step(await projector.serving()):
            pass
        done = await projector.rebuild()
        assert done.records == 5
        async with read_only(store, projection.service) as uow:
            found = await read_current(projection, uow, lambda view: view.list(units))
        assert {t.sku: t.units for t in found} == {"a": 5, "b": 7, "c": 3}
        assert (await projector.status()).lag == 0
    finally:
        await store.close()
        await transport.close()
