"""The event store on SQLite and PostgreSQL: appends/s and aggregate loads/s.

* ``appends``: a unit of work that saves one new event of a live aggregate, one after
  another on one stream: the append, the outbox row for the broker (with its NOTIFY on
  PostgreSQL) and the commit, as a handler's save does.
* ``appends_store_only``: the same without the outbox row (a bare unit of work).
* ``loads``: a unit of work that loads an aggregate of 1,000 events, without snapshots and
  with one every 100 events (the same stream, read by two classes); and once, a stream of
  10,000 events both ways.

The ``eventsourcing`` library (the ``bench`` extra) does the same work on the same
database, with an aggregate of the same state (``@event`` methods), and each figure is
also given as a ratio, tidings / library (above 1: tidings is faster). Like with like?
Its save writes the event row (its notification log is the same table) and sends a
NOTIFY; ``appends`` writes the event row and an outbox row and sends a NOTIFY (one row
more), ``appends_store_only`` writes the event row alone (no NOTIFY: one statement less).
Its loads are two statements outside a transaction; ours one, in a REPEATABLE READ
unit of work.

The machine may be shared, so the two take turns: ``ROUNDS`` rounds, each measuring every
figure for tidings and then the library (the library first in odd rounds), and each
figure is the median of its rounds; the ratio is that of the medians, and
``*_ratio_rounds`` lists each round's own ratio.

PostgreSQL runs in a schema of its own (dropped afterwards) on
``TIDINGS_BENCH_POSTGRES_URL`` (default: the local test server).
"""

from __future__ import annotations

import asyncio
import os
import statistics
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
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
ROUNDS = int(os.environ.get("TIDINGS_BENCH_ROUNDS", "5"))
APPENDS = 300  # per round
LOAD_SECONDS = 1.0  # per round and figure


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


class Library:
    """The library's side: its applications, a live aggregate and two filled streams."""

    def __init__(self, env: dict[str, str]) -> None:
        self.plain, self.snapshotting = LibraryApp(env=env), LibrarySnapshotting(env=env)
        self.counter = LibraryCounter()
        self.ids = {}
        for label, events in (("k1", 1000), ("k10", 10_000)):
            filled = LibraryCounter()
            for start in range(0, events, 100):
                for n in range(start, min(start + 100, events)):
                    filled.add(n % 7)
                self.snapshotting.save(filled)  # a snapshot at each multiple of 100
            self.ids[label] = filled.id

    def close(self) -> None:
        self.plain.close()
        self.snapshotting.close()

    async def appends(self) -> float:
        started = time.perf_counter()
        for i in range(APPENDS):
            self.counter.add(i % 7)
            self.plain.save(self.counter)
        return APPENDS / (time.perf_counter() - started)

    async def loads(self, snapshots: bool) -> float:
        app = self.snapshotting if snapshots else self.plain
        done, started = 0, time.perf_counter()
        while (elapsed := time.perf_counter() - started) < LOAD_SECONDS:
            app.repository.get(self.ids["k1"])
            done += 1
        return done / elapsed

    async def load_10k_ms(self, snapshots: bool) -> float:
        app = self.snapshotting if snapshots else self.plain
        started = time.perf_counter()
        loaded = app.repository.get(self.ids["k10"])
        assert loaded.version == 10_001  # its Created event, then 10,000
        return (time.perf_counter() - started) * 1000


class Ours:
    """Our side: a store, units of work with an outbox, a live aggregate, filled streams."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.service = f"bench-{uuid.uuid4().hex[:8]}"
        self.units = OutboxUnits(
            self.service, store, MemoryTransport(), "binary", on_outbox=lambda: None
        )
        self.counter = Counter(id="appended")
        self.bare = Counter(id="appended-store-only")

    @classmethod
    async def open(cls, url: str) -> Ours:
        ours = cls(await open_store(url))
        await _fill(ours.store, ours.service, "k1", 1000, Snapshotted)
        await _fill(ours.store, ours.service, "k10", 10_000, Snapshotted)
        return ours

    async def appends(self) -> float:
        started = time.perf_counter()
        for i in range(APPENDS):
            async with self.units.open() as (_, ctx):
                self.counter.add(i % 7)
                await ctx.save(self.counter)
        return APPENDS / (time.perf_counter() - started)

    async def appends_store_only(self) -> float:
        started = time.perf_counter()
        for i in range(APPENDS):
            async with self.store.unit_of_work(self.service) as uow:
                self.bare.add(i % 7)
                await Context(self.service, uow).save(self.bare)  # no outbox: not published
        return APPENDS / (time.perf_counter() - started)

    async def loads(self, snapshots: bool) -> float:
        klass = Snapshotted if snapshots else Counter
        done, started = 0, time.perf_counter()
        while (elapsed := time.perf_counter() - started) < LOAD_SECONDS:
            async with self.store.unit_of_work(self.service) as uow:
                counter = await Context(self.service, uow).load(klass, "k1")
            assert counter is not None
            done += 1
        return done / elapsed

    async def load_10k_ms(self, snapshots: bool) -> float:
        started = time.perf_counter()
        async with self.store.unit_of_work(self.service) as uow:
            loaded = await Context(self.service, uow).load(
                Snapshotted if snapshots else Counter, "k10"
            )
        assert loaded is not None and loaded.version == 10_000
        return (time.perf_counter() - started) * 1000


async def _fill(store: Store, service: str, id: str, events: int, klass: type[Counter]) -> None:
    counter = klass(id=id)
    for start in range(0, events, 100):  # saves of 100 events: a snapshot at each
        async with store.unit_of_work(service) as uow:
            for n in range(start, min(start + 100, events)):
                counter.add(n % 7)
            await Context(service, uow).save(counter)


Figure = tuple[str, Callable[[], Awaitable[float]], Callable[[], Awaitable[float]]]


async def _compare(prefix: str, url: str, env: dict[str, str]) -> dict[str, Any]:
    """Every figure for both, in alternating rounds; medians and ratios (see the docstring)."""
    ours, theirs = await Ours.open(url), Library(env)
    try:
        figures: list[Figure] = [
            ("appends_per_s", ours.appends, theirs.appends),
            ("appends_per_s_store_only", ours.appends_store_only, theirs.appends),
            ("loads_per_s_1k_events", lambda: ours.loads(False), lambda: theirs.loads(False)),
            (
                "loads_per_s_1k_events_snapshots",
                lambda: ours.loads(True),
                lambda: theirs.loads(True),
            ),
        ]
        rounds: dict[str, list[tuple[float, float]]] = {name: [] for name, _, _ in figures}
        for r in range(ROUNDS):
            for name, mine, library in figures:
                if r % 2:  # the library first in odd rounds: neither always goes first
                    b = await library()
                    a = await mine()
                else:
                    a = await mine()
                    b = await library()
                rounds[name].append((a, b))
        for snapshots, label in ((False, "replay"), (True, "snapshot")):
            rounds[f"load_10k_events_ms_{label}"] = [
                (await ours.load_10k_ms(snapshots), await theirs.load_10k_ms(snapshots))
            ]
    finally:
        theirs.close()
        await ours.store.close()
    result: dict[str, Any] = {}
    for name, pairs in rounds.items():
        mine, library = (statistics.median(p[i] for p in pairs) for i in (0, 1))
        faster = (lambda a, b: a / b) if "per_s" in name else (lambda a, b: b / a)
        digits = 0 if "per_s" in name else 1
        result[f"{prefix}_{name}"] = round(mine, digits)
        result[f"{prefix}_{name}_library"] = round(library, digits)
        result[f"{prefix}_{name}_ratio"] = round(faster(mine, library), 2)
        if len(pairs) > 1:
            result[f"{prefix}_{name}_ratio_rounds"] = [round(faster(a, b), 2) for a, b in pairs]
    return result


def run() -> dict[str, Any]:
    result: dict[str, Any] = {"rounds": ROUNDS, "load_average": round(os.getloadavg()[0], 1)}
    with tempfile.TemporaryDirectory() as tmp:
        env = {"PERSISTENCE_MODULE": "eventsourcing.sqlite", "SQLITE_DBNAME": f"{tmp}/library.db"}
        result.update(asyncio.run(_compare("sqlite", f"sqlite:///{tmp}/events.db", env)))
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
        url = f"{POSTGRES_URL}{sep}options=-c%20search_path%3D{schema}"
        result.update(asyncio.run(_compare("postgres", url, env)))
    finally:
        with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))
    result["load_average_after"] = round(os.getloadavg()[0], 1)
    return result
