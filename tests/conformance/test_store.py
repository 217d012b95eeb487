"""Every store against the store conformance suite, on the real engines.

``sqlite`` runs on a temporary file. ``postgres`` runs on the server ``scripts/services up
postgres`` starts (``TIDINGS_TEST_POSTGRES_URL`` picks another), each test in a schema of
its own that is dropped afterwards. Without a server the postgres tests are skipped, except
under CI=true, where they fail: CI must never go green without having run them.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from pydantic import BaseModel

from tidings import Collection, Context, Event, Service, codec
from tidings.runtime import Runtime
from tidings.store import Document, StoreUnavailable, make_store
from tidings.store.postgres import MIGRATIONS, PostgresStore, redact
from tidings.testing.harness import drain
from tidings.testing.postgres import fresh_schema
from tidings.testing.servers import skip_or_fail
from tidings.testing.store import StoreConformance
from tidings.testing.store_events import Counter, EventStoreConformance
from tidings.testing.topics import records
from tidings.transport.memory import MemoryTransport

POSTGRES_URL = os.environ.get("TIDINGS_TEST_POSTGRES_URL", "postgresql://127.0.0.1:5432/tidings")
_reachable: dict[str, str | None] = {}


def require_postgres() -> None:
    """Skip (fail under CI=true) when the test server is not there."""
    if POSTGRES_URL not in _reachable:
        try:
            psycopg.connect(POSTGRES_URL, connect_timeout=3).close()
            _reachable[POSTGRES_URL] = None
        except psycopg.Error as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc)
            _reachable[POSTGRES_URL] = (
                f"postgres: PostgreSQL at {redact(POSTGRES_URL)} is unreachable ({first});"
                " start it with `scripts/services up postgres`"
            )
    reason = _reachable[POSTGRES_URL]
    if reason is not None:
        skip_or_fail(reason)


@pytest.fixture
def pg_url() -> Iterator[str]:
    """The test server's URL, with a fresh schema first in the search path."""
    require_postgres()
    with fresh_schema(POSTGRES_URL) as url:
        yield url


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/state.db"
    url: str = request.getfixturevalue("pg_url")
    return url


class TestStore(StoreConformance):
    pass


class TestEventStore(EventStoreConformance):
    pass


class OutageHappened(Event, topic="outage.things", key="key"):
    key: str
    n: int


class Item(BaseModel):
    sku: str
    count: int


class Handled(BaseModel):
    ns: list[int] = []


handled_ns = Collection("handled", Handled)


# -- what only one backend has ------------------------------------------------------------
async def test_postgres_unreachable_is_one_line_naming_url_and_remedy() -> None:
    store = make_store("postgresql://tidings:s3cret@127.0.0.1:1/tidings")
    with pytest.raises(StoreUnavailable) as caught:
        await store.connect()
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith("postgresql://tidings:***@127.0.0.1:1/tidings: ")
    assert "s3cret" not in message
    assert "scripts/services up postgres" in message


async def test_sqlite_unavailable_names_url(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    url = f"sqlite:///{blocker}/sub/state.db"
    with pytest.raises(StoreUnavailable, match="sqlite:///"):
        await make_store(url).connect()


async def test_postgres_migrations_run_once_even_when_services_start_together(
    pg_url: str,
) -> None:
    stores = [PostgresStore(pg_url) for _ in range(4)]
    try:
        await asyncio.gather(*(s.connect() for s in stores))
    finally:
        await asyncio.gather(*(s.close() for s in stores))
    async with await psycopg.AsyncConnection.connect(pg_url) as conn:
        cur = await conn.execute("SELECT version FROM tidings_migrations ORDER BY version")
        assert [r[0] for r in await cur.fetchall()] == [v for v, _ in MIGRATIONS]
        cur = await conn.execute(
            "SELECT indexdef FROM pg_indexes WHERE schemaname = current_schema()"
            " AND indexname = 'inbox_handled_at'"
        )
        assert "(grp, handled_at)" in str(await cur.fetchone())
        cur = await conn.execute(
            "SELECT count(*) FROM information_schema.tables"
            " WHERE table_schema = current_schema()"
            " AND table_name IN ('inbox', 'outbox', 'documents')"
        )
        assert (await cur.fetchone()) == (3,)


async def test_postgres_read_only_units_commit_in_the_background_and_leak_nothing(
    pg_url: str,
) -> None:
    """A unit of work that only read returns before its COMMIT is through; its connection
    still goes back to the pool (two connections serve 40 of them, 10 at a time), no
    transaction is left open, and a unit that wrote is committed when it returns."""
    app = f"tidings_ro_{uuid.uuid4().hex[:8]}"
    # A leaked connection fails this test in 5 s (acquire_timeout), not 30.
    store = PostgresStore(
        f"{pg_url}&application_name={app}", max_connections=2, acquire_timeout=5.0
    )
    await store.connect()
    try:
        async with store.unit_of_work("svc") as uow:
            await uow.put("things", "a", {"n": 1})
        async with store.unit_of_work("svc") as uow:  # committed before it returned
            found = await uow.get("things", "a")
        assert found is not None and found.data == {"n": 1}

        async def read() -> None:
            async with store.unit_of_work("svc") as uow:
                assert (await uow.get("things", "a")) is not None

        for _ in range(4):
            await asyncio.gather(*(read() for _ in range(10)))
    finally:
        await store.close()  # waits for the COMMITs still on their way
    with psycopg.connect(POSTGRES_URL, autocommit=True) as admin:
        rows = admin.execute(
            "SELECT state FROM pg_stat_activity WHERE application_name = %s", (app,)
        ).fetchall()
    assert rows == []  # every connection closed, none left idle in a transaction


async def test_postgres_connections_cut_mid_batch_lose_nothing(pg_url: str) -> None:
    """The server cuts every connection of the store (pg_terminate_backend) while a batch
    over several partitions is being handled: the batch fails with StoreUnavailable, and
    once fetched again every event is handled once, each key in order."""
    app = f"tidings_outage_{uuid.uuid4().hex[:8]}"
    store = PostgresStore(f"{pg_url}&application_name={app}")
    await store.connect()
    transport = MemoryTransport(f"memory://outage-{app}")
    svc = Service(f"outage_{app}")
    cut = {"after": 7}

    @svc.on(OutageHappened)
    async def handle(event: OutageHappened, ctx: Context) -> None:
        doc = await ctx.get(handled_ns, event.key) or Handled()
        await ctx.put(handled_ns, event.key, Handled(ns=[*doc.ns, event.n]))
        cut["after"] -= 1
        if cut["after"] == 0:  # the server goes away before this unit of work commits
            with psycopg.connect(POSTGRES_URL, autocommit=True) as admin:
                admin.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                    " WHERE application_name = %s",
                    (app,),
                )

    rt = Runtime(svc, transport, store)
    try:
        await rt.start(background=False)
        events = [OutageHappened(key=f"k{i % 5}", n=i) for i in range(20)]
        async with rt.unit_of_work() as ctx:
            for event in events:
                ctx.publish(event)
        await rt.relay.relay_once()
        with pytest.raises(StoreUnavailable, match="lost the connection"):
            await rt.poll()
        assert rt.stats.handled < 20, "the cut should come in the middle of the batch"
        await asyncio.sleep(0.6)  # the partitions were rewound with a short pause
        await drain(rt)

        async with rt.unit_of_work() as ctx:
            handled = {
                f"k{k}": (await ctx.get(handled_ns, f"k{k}") or Handled()).ns for k in range(5)
            }
        for key, ns in handled.items():
            assert ns == [e.n for e in events if e.key == key], key
        committed = await transport.committed(svc.group)
        [info] = [t for t in await transport.topics() if t.name == "outage.things"]
        assert {p: committed.get((info.name, p), 0) for p in info.end_offsets} == dict(
            info.end_offsets
        )
        assert rt.stats.dead_lettered == 0 and rt.stats.retries == 0
    finally:
        await rt.stop()
        await store.close()


class Topped(Event, topic="conflict.topups", key="counter_id"):
    counter_id: str
    n: int


async def test_postgres_handler_whose_save_conflicts_is_run_again_on_the_new_state(
    pg_url: str,
) -> None:
    """Between the handler's load and its save another process appends to the same stream:
    the save raises ConcurrencyConflict, the runtime backs off (not an attempt) and runs the
    handler again, which loads the new state; nothing of the first try is published."""
    store, other = PostgresStore(pg_url), PostgresStore(pg_url)
    await store.connect()
    await other.connect()
    svc = Service(f"conflict_{uuid.uuid4().hex[:8]}")
    transport = MemoryTransport(f"memory://{svc.name}")
    tries: list[int] = []

    @svc.on
    async def top_up(event: Topped, ctx: Context) -> None:
        counter = await ctx.load(Counter, event.counter_id) or Counter(id=event.counter_id)
        tries.append(counter.version)
        if len(tries) == 1:  # another process saves the same counter meanwhile
            async with other.unit_of_work(svc.name) as uow:
                sneaky = Counter(id=event.counter_id)
                sneaky.add(100)
                await Context(svc.name, uow).save(sneaky)
        counter.add(event.n)
        await ctx.save(counter)

    rt = Runtime(svc, transport, store)
    try:
        await rt.start(background=False)
        async with rt.unit_of_work() as ctx:
            ctx.publish(Topped(counter_id="c1", n=1))
        await rt.relay.relay_once()
        await drain(rt)
        assert tries == [0, 1], "run again after the conflict, on the sneaky version"
        assert rt.stats.conflicts == 1 and rt.stats.retries == 0
        assert rt.stats.handled == 1 and rt.stats.dead_lettered == 0
        async with rt.unit_of_work() as ctx:
            counter = await ctx.load(Counter, "c1")
        assert counter is not None and (counter.version, counter.total) == (2, 101)
        await rt.relay.relay_once()
        published = [codec.decode(r) for r in await records(transport, "conformance.counters")]
        counted = [e for e in published if e.type == "Counted"]
        assert [e.data["n"] for e in counted] == [1], "only the retry's event is published"
    finally:
        await rt.stop()
        await store.close()
        await other.close()


async def test_postgres_members_starting_together_run_their_seeding_hook_once(
    pg_url: str,
) -> None:
    """Members of a group that start at once run the same startup hook at the same time;
    the one that loses the race runs it again (and finds the state seeded) instead of dying."""
    svc = Service(f"seeding{uuid.uuid4().hex[:8]}")
    shelf = svc.collection("shelf", Item)
    runs: list[bool] = []

    @svc.on_startup
    async def seed(ctx: Context) -> None:
        found = await ctx.get(shelf, "widget")
        runs.append(found is None)
        if found is None:
            await asyncio.sleep(0.2)  # both members read "absent" before either writes
            await ctx.put(shelf, "widget", Item(sku="widget", count=10), expected_version=0)

    transport = MemoryTransport()
    stores = [PostgresStore(pg_url) for _ in range(3)]
    for store in stores:
        await store.connect()
    members = [Runtime(svc, transport, store) for store in stores]
    try:
        await asyncio.gather(*(member.start(background=False) for member in members))
        assert runs.count(True) >= 2  # they did race
        assert len(runs) > len(members)  # and the losers ran the hook again
        async with stores[0].unit_of_work(svc.name) as uow:
            doc = await uow.get("shelf", "widget")
        assert doc is not None and (doc.version, doc.data["count"]) == (1, 10)
    finally:
        for member in members:
            await member.stop()
        for store in stores:
            await store.close()


class Bumped(Event, topic="hot.bumps", key="key"):
    key: str
    n: int


class Bumps(BaseModel):
    n: int = 0


bumps = Collection("bumps", Bumps)


@pytest.mark.parametrize("lanes", [1, 4])
async def test_postgres_lanes_and_a_document_every_partition_touches(
    pg_url: str, lanes: int
) -> None:
    """Events of many keys (so of every partition) all bump one document, as every order
    takes from one SKU's stock, and wait on a slow call. None is lost and each key's
    events keep their order whatever the lanes. One lane: a fetch's partitions go one
    after another in one unit of work, so the document costs no conflict. Several: the
    handlers of different lanes wait at once, and their units race for the document
    under REPEATABLE READ (the losers are backed off and run again)."""
    store = PostgresStore(pg_url)
    await store.connect()
    svc = Service(f"hot_{uuid.uuid4().hex[:8]}")
    transport = MemoryTransport(f"memory://{svc.name}")
    running, peak, seen = 0, 0, []

    @svc.on
    async def bump(event: Bumped, ctx: Context) -> None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        try:
            doc = await ctx.get(bumps, "hot") or Bumps()
            await asyncio.sleep(0.005)  # a slow call the handler waits on
            await ctx.put(bumps, "hot", Bumps(n=doc.n + 1))
        finally:
            running -= 1
        seen.append((event.key, event.n))

    rt = Runtime(svc, transport, store, lanes=lanes)
    try:
        await rt.start(background=False)
        async with rt.unit_of_work() as ctx:
            for i in range(60):
                ctx.publish(Bumped(key=f"k{i % 12}", n=i))
        await rt.relay.relay_once()
        partitions = {r.partition for r in await records(transport, "hot.bumps")}
        assert len(partitions) > 1, "the keys should spread over partitions"
        await drain(rt)
        async with rt.unit_of_work() as ctx:
            doc = await ctx.get(bumps, "hot")
        assert doc is not None and doc.n == 60
        assert rt.stats.handled == 60 and rt.stats.dead_lettered == 0
        for key in {k for k, _ in seen}:
            # A unit that lost a race ran its handlers again: first runs are what count.
            ns = list(dict.fromkeys(n for k, n in seen if k == key))
            assert ns == sorted(ns), f"{key} handled out of order: {ns}"
        if lanes == 1:
            assert rt.stats.conflicts == 0 and peak == 1
        else:
            assert peak > 1, "lanes should overlap the handlers' waits"
        with pytest.raises(ValueError, match="lanes must be at least 1"):
            Runtime(svc, transport, store, lanes=0)
    finally:
        await rt.stop()
        await store.close()


async def test_postgres_a_document_read_again_in_a_unit_of_work_is_not_fetched_again(
    pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch whose events all touch one document (a SKU's stock) reads it from the
    server once: later reads in the unit of work are answered from what it read or
    wrote (the same answer under REPEATABLE READ)."""
    store = PostgresStore(pg_url)
    await store.connect()
    try:
        async with store.unit_of_work("stock") as uow:
            await uow.put("stock", "widget", {"n": 10})
        async with store.unit_of_work("stock") as uow:
            sent: list[str] = []
            round_trip = uow._all  # type: ignore[attr-defined]  # a spy on what is waited for

            async def counting(query: str, params: object) -> object:
                sent.append(query)
                return await round_trip(query, params)

            monkeypatch.setattr(uow, "_all", counting)
            for n in range(9, 4, -1):
                doc = await uow.get("stock", "widget")
                assert doc is not None and doc.data == {"n": n + 1}
                await uow.put("stock", "widget", {"n": n})
            assert await uow.get("stock", "missing") is None
            assert await uow.get("stock", "missing") is None
        reads = [q for q in sent if q.startswith("SELECT version, data FROM documents")]
        assert len(reads) == 2, "one read of widget, one of missing"
        async with store.unit_of_work("stock") as uow:
            assert await uow.get("stock", "widget") == Document("widget", 6, {"n": 5})
    finally:
        await store.close()
