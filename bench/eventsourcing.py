"""The event store on SQLite and PostgreSQL: appends/s and aggregate loads/s.

* ``append``: a unit of work that saves one new event of a live aggregate (append, outbox
  row, commit), one after another on one stream.
* ``load``: a unit of work that loads an aggregate of 1,000 events, without snapshots and
  with one every 100 events (the same stream, read by two classes); and once, a stream of
  10,000 events both ways.

The ``eventsourcing`` library (the ``bench`` extra) does the same work on the same
database, with an aggregate of the same state (``@event`` methods), and each figure is
also given as a ratio, tidings / library (above 1: tidings is faster). Its save writes
the event and its notification; ours the event and an outbox row for the broker.

PostgreSQL runs in a schema of its own (dropped afterwards) on
``TIDINGS_BENCH_POSTGRES_URL`` (default: the local test server).
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
import uuid
from typing import Any

import psycopg
from eventsourcing.application import Application
from eventsourcing.domain import Aggregate as LibraryAggregate
from eventsourcing.domain import event
from psycopg import sql

from tidings.service import Context
from tidings.store import Store, open_store
from tidings.testing.store_events import Counter
from tidings.transport.memory import MemoryTransport
from tidings.units import OutboxUnits

POSTGRES_URL = os.environ.get("TIDINGS_BENCH_POSTGRES_URL", "postgresql://127.0.0.1:5432/tidings")


class Snapshotted(Counter, name="Counter", snapshot_every=100):
    """The same stream as Counter, with a snapshot every 100 events."""


class LibraryCounter(LibraryAggregate):
    """:class:`Counter` in the ``eventsourcing`` library's style: the body is the mutator."""

    @event("Created")
    def __init__(self) -> None:
        self.total = 0
        self.count = 0
        self.last: list[int] = []
        self.resets = 0

    @event("Counted")
    def add(self, n: int, note: str = "") -> None:
        self.total += n
        self.count += 1
        self.last = [*self.last, n][-5:]


class LibraryApp(Application[Any]):
    """Without snapshots."""

    name = "Counters"  # tables are named after the application: share them


class LibrarySnapshotting(Application[Any]):
    name = "Counters"
    snapshotting_intervals = {LibraryCounter: 100}


def _library(env: dict[str, str]) -> dict[str, float]:
    """The same work as :func:`_measure`, done with the ``eventsourcing`` library."""
    plain, snapshotting = LibraryApp(env=env), LibrarySnapshotting(env=env)
    try:
        counter = LibraryCounter()
        appends, started = 2000, time.perf_counter()
        for i in range(appends):
            counter.add(i % 7)
            plain.save(counter)
        appends_per_s = appends / (time.perf_counter() - started)
        ids = {}
        for label, events in (("k1", 1000), ("k10", 10_000)):
            filled = LibraryCounter()
            for start in range(0, events, 100):
                for n in range(start, min(start + 100, events)):
                    filled.add(n % 7)
                snapshotting.save(filled)  # a snapshot at each multiple of 100
            ids[label] = filled.id

        def loads(app: Application[Any], seconds: float = 3) -> float:
            done, started = 0, time.perf_counter()
            while (elapsed := time.perf_counter() - started) < seconds:
                app.repository.get(ids["k1"])
                done += 1
            return done / elapsed

        result = {
            "appends_per_s": round(appends_per_s),
            "loads_per_s_1k_events": round(loads(plain)),
            "loads_per_s_1k_events_snapshots": round(loads(snapshotting)),
        }
        for app, label in ((plain, "replay"), (snapshotting, "snapshot")):
            started = time.perf_counter()
            loaded = app.repository.get(ids["k10"])
            assert loaded.version == 10_001  # its Created event, then 10,000
            result[f"load_10k_events_ms_{label}"] = round((time.perf_counter() - started) * 1000, 1)
        return result
    finally:
        plain.close()
        snapshotting.close()


def _side_by_side(prefix: str, ours: dict[str, float], theirs: dict[str, float]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in ours.items():
        result[f"{prefix}_{key}"] = value
        result[f"{prefix}_{key}_library"] = theirs[key]
        faster = value / theirs[key] if "per_s" in key else theirs[key] / value
        result[f"{prefix}_{key}_ratio"] = round(faster, 2)
    return result


async def _fill(store: Store, service: str, id: str, events: int, klass: type[Counter]) -> None:
    counter = klass(id=id)
    for start in range(0, events, 100):  # saves of 100 events: a snapshot at each
        async with store.unit_of_work(service) as uow:
            for n in range(start, min(start + 100, events)):
                counter.add(n % 7)
            await Context(service, uow).save(counter)


async def _loads(
    store: Store, service: str, id: str, klass: type[Counter], seconds: float
) -> float:
    done, started = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - started) < seconds:
        async with store.unit_of_work(service) as uow:
            counter = await Context(service, uow).load(klass, id)
        assert counter is not None
        done += 1
    return done / elapsed


async def _measure(url: str) -> dict[str, float]:
    store = await open_store(url)
    service = f"bench-{uuid.uuid4().hex[:8]}"
    units = OutboxUnits(service, store, MemoryTransport(), "binary", on_outbox=lambda: None)
    try:
        counter = Counter(id="appended")
        appends, started = 2000, time.perf_counter()
        for i in range(appends):
            async with units.open() as (_, ctx):
                counter.add(i % 7)
                await ctx.save(counter)
        appends_per_s = appends / (time.perf_counter() - started)
        await _fill(store, service, "k1", 1000, Snapshotted)
        await _fill(store, service, "k10", 10_000, Snapshotted)
        result = {
            "appends_per_s": round(appends_per_s),
            "loads_per_s_1k_events": round(await _loads(store, service, "k1", Counter, 3)),
            "loads_per_s_1k_events_snapshots": round(
                await _loads(store, service, "k1", Snapshotted, 3)
            ),
        }
        for klass, label in ((Counter, "replay"), (Snapshotted, "snapshot")):
            started = time.perf_counter()
            async with store.unit_of_work(service) as uow:
                loaded = await Context(service, uow).load(klass, "k10")
            assert loaded is not None and loaded.version == 10_000
            result[f"load_10k_events_ms_{label}"] = round((time.perf_counter() - started) * 1000, 1)
        return result
    finally:
        await store.close()


def run() -> dict[str, Any]:
    result: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        ours = asyncio.run(_measure(f"sqlite:///{tmp}/events.db"))
        env = {"PERSISTENCE_MODULE": "eventsourcing.sqlite", "SQLITE_DBNAME": f"{tmp}/library.db"}
        result.update(_side_by_side("sqlite", ours, _library(env)))
    schema = f"bench_events_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
        info = conn.info
        env = {
            "PERSISTENCE_MODULE": "eventsourcing.postgres",
            "POSTGRES_DBNAME": info.dbname,
            "POSTGRES_HOST": info.host,
            "POSTGRES_PORT": str(info.port),
            "POSTGRES_USER": info.user,
            "POSTGRES_PASSWORD": info.password,
            "POSTGRES_SCHEMA": schema,
        }
    try:
        sep = "&" if "?" in POSTGRES_URL else "?"
        ours = asyncio.run(_measure(f"{POSTGRES_URL}{sep}options=-c%20search_path%3D{schema}"))
        result.update(_side_by_side("postgres", ours, _library(env)))
    finally:
        with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))
    return result
