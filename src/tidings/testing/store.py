"""The store conformance suite: every rule of :mod:`tidings.store.base`, against a real database.

Subclass :class:`StoreConformance` in a test module and give it a ``store_url`` fixture: the
URL of a database the suite may write to (a fresh one per test is best; the suite also
uses fresh service and group names, so a shared database works too)::

    class TestMyStore(StoreConformance):
        @pytest.fixture
        def store_url(self, tmp_path):
            return f"sqlite:///{tmp_path}/state.db"

Stores are opened by URL with :func:`tidings.store.open_store`, several at once where a
rule is about concurrency (two store objects = two connections). Transactions that must
overlap run in separate OS processes (this module's :func:`worker_main`): the contract
allows one store per event loop, and SQLite's writers would block a shared loop.

A store is held to wake a waiting relay within 200 ms of a commit of outbox rows made by
another unit of work of the same process (on the same store object or another one). A
store that can only poll says so with ``wakes_on_commit = False`` in its suite, and is then
held to its timeout alone.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from typing import Any, TypeVar

import pytest
import pytest_asyncio

import tidings
from tidings.store import ConcurrencyConflict, Document, Store, open_store
from tidings.store.base import read_only
from tidings.transport.base import OutgoingRecord

OpenStore = Callable[[], Awaitable[Store]]
T = TypeVar("T")
# Where worker processes import tidings from: wherever this process did.
TIDINGS_SRC = os.path.dirname(os.path.dirname(os.path.abspath(tidings.__file__)))
WAKE_LATENCY = 0.2  # seconds from commit to a woken relay, for stores that override wait_outbox


class Boom(Exception):
    """Raised inside units of work to make them fail."""


def record(i: int, topic: str = "orders.events") -> OutgoingRecord:
    """A record whose every field says which one it is, with awkward bytes in the value."""
    return OutgoingRecord(
        topic,
        f"v{i}".encode() + bytes(range(256)),
        f"k{i}" if i % 3 else None,
        {"n": str(i), "émoji": "✓"},
    )


async def together(*coros: Coroutine[Any, Any, T]) -> list[T]:
    """Run concurrently; if one fails, cancel the rest (no task outlives its test)."""
    async with asyncio.TaskGroup() as group:
        tasks = [group.create_task(c) for c in coros]
    return [t.result() for t in tasks]


# -- worker processes ---------------------------------------------------------------------
def worker_main() -> None:
    """Entry point of a worker process: ``python -c '...worker_main()' URL``.

    Reads one JSON command per line on stdin, answers one JSON line per command.
    """
    asyncio.run(_worker(sys.argv[1]))


async def _worker(url: str) -> None:
    store = await open_store(url)
    print(json.dumps({"ready": True}), flush=True)
    try:
        while line := await asyncio.to_thread(sys.stdin.readline):
            cmd = json.loads(line)
            answer: dict[str, Any]
            if cmd["op"] == "put":
                try:
                    async with store.unit_of_work(cmd["service"]) as uow:
                        version = await uow.put(
                            cmd["collection"], cmd["key"], cmd["data"], cmd["expected_version"]
                        )
                        await asyncio.sleep(cmd["hold"])  # keep the transaction open
                    answer = {"version": version}
                except ConcurrencyConflict as exc:
                    answer = {"conflict": str(exc)}
            elif cmd["op"] == "handle":  # what the runtime does with a delivery
                try:
                    async with store.unit_of_work(cmd["service"]) as uow:
                        if await uow.seen(cmd["group"], cmd["event_id"]):
                            answer = {"outcome": "duplicate"}
                        else:
                            await asyncio.sleep(cmd["hold"])  # the handler at work
                            await uow.add_outbox([record(cmd["n"])])
                            await uow.mark_seen(cmd["group"], cmd["event_id"])
                            answer = {"outcome": "handled"}
                except ConcurrencyConflict as exc:
                    answer = {"outcome": "conflict", "error": str(exc)}
            elif cmd["op"] == "claim_all":
                ids: list[int] = []
                # Bounded, so that a store that hands rows out twice fails instead of hanging.
                while len(ids) <= cmd["max_rows"] and (
                    batch := await store.claim_outbox(cmd["service"], cmd["limit"], 60.0)
                ):
                    ids += [entry.id for entry in batch]
                answer = {"ids": ids}
            else:
                answer = {"error": f"unknown op {cmd['op']!r}"}
            print(json.dumps(answer), flush=True)
    finally:
        await store.close()


class Worker:
    """A store opened in another OS process, driven by JSON lines."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    @classmethod
    async def start(cls, url: str, module: str = "tidings.testing.store") -> Worker:
        """A worker running ``module``'s ``worker_main`` (which answers ``{"ready": true}``
        first) on the store at ``url``."""
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [TIDINGS_SRC, env.get("PYTHONPATH")]))
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            f"from {module} import worker_main; worker_main()",
            url,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=env,
        )
        worker = cls(proc)
        assert await worker.receive() == {"ready": True}
        return worker

    def send(self, **cmd: Any) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write((json.dumps(cmd) + "\n").encode())

    async def receive(self) -> dict[str, Any]:
        assert self.proc.stdout is not None and self.proc.stderr is not None
        line = await asyncio.wait_for(self.proc.stdout.readline(), 60)
        if not line:
            err = await self.proc.stderr.read()
            raise AssertionError(f"store worker died:\n{err.decode(errors='replace')}")
        answer: dict[str, Any] = json.loads(line)
        return answer

    async def stop(self) -> None:
        if self.proc.returncode is None:
            assert self.proc.stdin is not None
            self.proc.stdin.close()
            try:
                await asyncio.wait_for(self.proc.wait(), 10)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()


class StoreFixtures:
    """Fixtures of the store suites (this one and :mod:`tidings.testing.store_events`);
    needs a ``store_url`` fixture."""

    # Whose worker_main the ``workers`` fixture starts.
    worker_module = "tidings.testing.store"

    @pytest_asyncio.fixture
    async def open_another(self, store_url: str) -> AsyncIterator[OpenStore]:
        """Open more stores on the same database; all are closed after the test."""
        opened: list[Store] = []

        async def opener() -> Store:
            opened.append(await open_store(store_url))
            return opened[-1]

        yield opener
        for s in opened:
            await s.close()

    @pytest_asyncio.fixture
    async def store(self, open_another: OpenStore) -> Store:
        return await open_another()

    @pytest_asyncio.fixture
    async def workers(
        self, store_url: str
    ) -> AsyncIterator[Callable[[int], Awaitable[list[Worker]]]]:
        started: list[Worker] = []

        async def start(n: int) -> list[Worker]:
            new = await asyncio.gather(
                *(Worker.start(store_url, self.worker_module) for _ in range(n))
            )
            started.extend(new)
            return list(new)

        yield start
        await asyncio.gather(*(w.stop() for w in started))

    @pytest.fixture
    def svc(self) -> str:
        return f"svc-{uuid.uuid4().hex[:10]}"

    @pytest.fixture
    def other_svc(self) -> str:
        return f"other-{uuid.uuid4().hex[:10]}"


class StoreConformance(StoreFixtures):
    """The rules of :mod:`tidings.store.base`; needs a ``store_url`` fixture."""

    # Does wait_outbox wake on a commit (else it only returns by its timeout)?
    wakes_on_commit = True

    # -- units of work --------------------------------------------------------------------
    async def test_commit_makes_inbox_documents_and_outbox_visible(
        self, store: Store, open_another: OpenStore, svc: str
    ) -> None:
        other = await open_another()
        async with store.unit_of_work(svc) as uow:
            await uow.mark_seen(f"{svc}-g", "e1")
            assert await uow.put("orders", "o1", {"total": 3}) == 1
            await uow.add_outbox([record(1)])
            assert await other.outbox_backlog(svc) == 0, "outbox row visible before commit"
        for s in (store, other):
            async with read_only(s, svc) as uow:
                assert await uow.seen(f"{svc}-g", "e1")
                assert await uow.get("orders", "o1") == Document("o1", 1, {"total": 3})
            assert await s.outbox_backlog(svc) == 1
        [entry] = await other.claim_outbox(svc)
        assert entry.record == record(1)

    async def test_exception_rolls_back_inbox_documents_and_outbox(
        self, store: Store, svc: str
    ) -> None:
        async with store.unit_of_work(svc) as uow:
            await uow.put("orders", "kept", {"v": 1})
            await uow.put("orders", "to-delete", {"v": 1})
        with pytest.raises(Boom):
            async with store.unit_of_work(svc) as uow:
                await uow.mark_seen(f"{svc}-g", "e1")
                await uow.put("orders", "kept", {"v": 2})
                await uow.put("orders", "new", {"v": 1})
                await uow.delete("orders", "to-delete")
                await uow.add_outbox([record(1), record(2)])
                raise Boom
        async with read_only(store, svc) as uow:
            assert not await uow.seen(f"{svc}-g", "e1")
            assert await uow.get("orders", "kept") == Document("kept", 1, {"v": 1})
            assert await uow.get("orders", "new") is None
            assert await uow.get("orders", "to-delete") is not None
        assert await store.outbox_backlog(svc) == 0
        assert await store.claim_outbox(svc) == []

    async def test_conflict_inside_unit_of_work_rolls_back_earlier_writes(
        self, store: Store, svc: str
    ) -> None:
        async with store.unit_of_work(svc) as uow:
            await uow.put("orders", "o1", {"v": 1})
        with pytest.raises(ConcurrencyConflict):
            async with store.unit_of_work(svc) as uow:
                await uow.put("orders", "o2", {"v": 1})
                await uow.add_outbox([record(1)])
                await uow.put("orders", "o1", {"v": 2}, expected_version=0)
        async with read_only(store, svc) as uow:
            assert await uow.get("orders", "o2") is None
            assert await uow.get("orders", "o1") == Document("o1", 1, {"v": 1})
        assert await store.outbox_backlog(svc) == 0

    async def test_savepoint_that_raises_undoes_only_its_own_writes(
        self, store: Store, svc: str
    ) -> None:
        async with store.unit_of_work(svc) as uow:
            await uow.put("orders", "o1", {"v": 1})
        async with store.unit_of_work(svc) as uow:
            await uow.put("orders", "before", {"v": 1})
            with pytest.raises(Boom):
                async with uow.savepoint():
                    await uow.put("orders", "inside", {"v": 1})
                    await uow.put("orders", "o1", {"v": 2})
                    await uow.delete("orders", "before")
                    raise Boom
            async with uow.savepoint():  # a later savepoint in the same unit of work commits
                await uow.put("orders", "after", {"v": 1})
            assert await uow.get("orders", "before") is not None
            await uow.add_outbox([record(1)])
        async with read_only(store, svc) as uow:
            assert await uow.get("orders", "inside") is None
            assert await uow.get("orders", "o1") == Document("o1", 1, {"v": 1})
            assert await uow.get("orders", "before") == Document("before", 1, {"v": 1})
            assert await uow.get("orders", "after") == Document("after", 1, {"v": 1})
        assert await store.outbox_backlog(svc) == 1

    async def test_a_unit_of_work_reads_its_own_writes_and_a_rolled_back_savepoint_undoes_them(
        self, store: Store, svc: str
    ) -> None:
        """What a unit of work reads back is what it wrote, read or deleted last, also
        after a savepoint that raised (a store that keeps documents it has seen must
        forget the savepoint's part)."""
        async with store.unit_of_work(svc) as uow:
            await uow.put("orders", "o1", {"v": 1})
            await uow.put("orders", "gone", {"v": 1})
        async with store.unit_of_work(svc) as uow:
            assert await uow.get("orders", "o1") == Document("o1", 1, {"v": 1})
            assert await uow.put("orders", "o1", {"v": 2}) == 2
            assert await uow.get("orders", "o1") == Document("o1", 2, {"v": 2})
            with pytest.raises(Boom):
                async with uow.savepoint():
                    await uow.put("orders", "o1", {"v": 3})
                    await uow.delete("orders", "gone")
                    await uow.put("orders", "new", {"v": 1})
                    assert await uow.get("orders", "o1") == Document("o1", 3, {"v": 3})
                    assert await uow.get("orders", "gone") is None
                    raise Boom
            assert await uow.get("orders", "o1") == Document("o1", 2, {"v": 2})
            assert await uow.get("orders", "gone") == Document("gone", 1, {"v": 1})
            assert await uow.get("orders", "new") is None
            with pytest.raises(ConcurrencyConflict):
                await uow.put("orders", "o1", {"v": 9}, expected_version=1)
            assert await uow.get("orders", "o1") == Document("o1", 2, {"v": 2})
            await uow.delete("orders", "gone")
            assert await uow.get("orders", "gone") is None
        async with read_only(store, svc) as uow:
            assert await uow.get("orders", "o1") == Document("o1", 2, {"v": 2})
            assert await uow.get("orders", "gone") is None

    async def test_conflict_in_a_savepoint_leaves_the_unit_of_work_usable(
        self, store: Store, svc: str
    ) -> None:
        async with store.unit_of_work(svc) as uow:
            await uow.put("orders", "o1", {"v": 1})
        async with store.unit_of_work(svc) as uow:
            await uow.put("orders", "o2", {"v": 1})
            with pytest.raises(ConcurrencyConflict):
                async with uow.savepoint():
                    await uow.put("orders", "o1", {"v": 2}, expected_version=0)
            await uow.mark_seen(f"{svc}-g", "e1")
        async with read_only(store, svc) as uow:
            assert await uow.get("orders", "o2") == Document("o2", 1, {"v": 1})
            assert await uow.seen(f"{svc}-g", "e1")

    async def test_seen_many_and_mark_seen_many(self, store: Store, svc: str) -> None:
        ids = [f"e{i}" for i in range(1200)]  # more than one statement's worth on SQLite
        async with store.unit_of_work(svc) as uow:
            assert await uow.seen_many(f"{svc}-g", ids) == set()
            await uow.mark_seen_many(f"{svc}-g", ids[::2])
            await uow.mark_seen_many(f"{svc}-g", ids[:4])  # idempotent, overlapping
            await uow.mark_seen_many(f"{svc}-g", [])
        async with read_only(store, svc) as uow:
            assert await uow.seen_many(f"{svc}-g", ids) == {*ids[::2], *ids[:4]}
            assert await uow.seen_many(f"{svc}-other", ids) == set()
            assert await uow.seen_many(f"{svc}-g", []) == set()

    async def test_cancelled_unit_of_work_rolls_back_and_store_stays_usable(
        self, store: Store, svc: str
    ) -> None:
        entered = asyncio.Event()

        async def handler() -> None:
            async with store.unit_of_work(svc) as uow:
                await uow.put("orders", "o1", {"v": 1})
                await uow.add_outbox([record(1)])
                entered.set()
                await asyncio.sleep(30)

        task = asyncio.create_task(handler())
        await asyncio.wait_for(entered.wait(), 10)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        async with store.unit_of_work(svc) as uow:
            assert await uow.get("orders", "o1") is None
            assert await uow.put("orders", "o2", {"v": 1}) == 1
        assert await store.outbox_backlog(svc) == 0

    async def test_unit_of_work_reads_its_own_writes(self, store: Store, svc: str) -> None:
        async with store.unit_of_work(svc) as uow:
            await uow.mark_seen(f"{svc}-g", "e1")
            assert await uow.seen(f"{svc}-g", "e1")
            await uow.put("orders", "o1", {"v": 1})
            assert await uow.get("orders", "o1") == Document("o1", 1, {"v": 1})
            assert [d.key for d in await uow.list("orders")] == ["o1"]
            await uow.delete("orders", "o1")
            assert await uow.get("orders", "o1") is None

    async def test_concurrent_units_of_work_in_one_store_all_commit(
        self, store: Store, svc: str
    ) -> None:
        async def handle(i: int) -> None:
            async with store.unit_of_work(svc) as uow:
                await uow.mark_seen(f"{svc}-g", f"e{i}")
                await asyncio.sleep(0)  # let the others interleave
                await uow.put("orders", f"o{i:02}", {"i": i})
                await uow.add_outbox([record(i)])

        await together(*(handle(i) for i in range(20)))
        async with read_only(store, svc) as uow:
            assert [d.data["i"] for d in await uow.list("orders")] == list(range(20))
            assert all([await uow.seen(f"{svc}-g", f"e{i}") for i in range(20)])
        assert await store.outbox_backlog(svc) == 20

    async def test_optimistic_retries_lose_no_update(self, store: Store, svc: str) -> None:
        async with store.unit_of_work(svc) as uow:
            await uow.put("counters", "c", {"n": 0})

        async def increment() -> None:
            for _ in range(200):
                try:
                    async with store.unit_of_work(svc) as uow:
                        doc = await uow.get("counters", "c")
                        assert doc is not None
                        await asyncio.sleep(0)
                        await uow.put("counters", "c", {"n": doc.data["n"] + 1}, doc.version)
                    return
                except ConcurrencyConflict:
                    await asyncio.sleep(0.001)
            raise AssertionError("no increment got through in 200 tries")

        await together(*(increment() for _ in range(10)))
        async with read_only(store, svc) as uow:
            assert await uow.get("counters", "c") == Document("c", 11, {"n": 10})

    # -- inbox ----------------------------------------------------------------------------
    async def test_inbox_is_per_group(self, store: Store, svc: str) -> None:
        async with store.unit_of_work(svc) as uow:
            await uow.mark_seen(f"{svc}-a", "e1")
        async with read_only(store, svc) as uow:
            assert await uow.seen(f"{svc}-a", "e1")
            assert not await uow.seen(f"{svc}-b", "e1")
            assert not await uow.seen(f"{svc}-a", "e2")
        async with store.unit_of_work(svc) as uow:
            await uow.mark_seen(f"{svc}-b", "e1")
        async with read_only(store, svc) as uow:
            assert await uow.seen(f"{svc}-a", "e1") and await uow.seen(f"{svc}-b", "e1")

    async def test_concurrent_deliveries_of_one_event_are_handled_once(
        self, store: Store, workers: Callable[[int], Awaitable[list[Worker]]], svc: str
    ) -> None:
        """Two members handle the same event at once (a rebalance): only one may commit."""
        pair = await workers(2)
        for n, w in enumerate(pair):
            w.send(op="handle", service=svc, group=f"{svc}-g", event_id="e1", n=n, hold=0.3)
        outcomes = sorted([(await w.receive())["outcome"] for w in pair])
        assert outcomes in (["duplicate", "handled"], ["conflict", "handled"]), outcomes
        assert await store.outbox_backlog(svc) == 1, "the event's effects committed twice"

    async def test_mark_seen_is_idempotent(self, store: Store, svc: str) -> None:
        for _ in range(2):
            async with store.unit_of_work(svc) as uow:
                await uow.mark_seen(f"{svc}-g", "e1")
                await uow.mark_seen(f"{svc}-g", "e1")
        async with read_only(store, svc) as uow:
            assert await uow.seen(f"{svc}-g", "e1")

    async def test_prune_inbox_removes_old_marks_and_keeps_recent_ones(
        self, store: Store, svc: str
    ) -> None:
        group, other = f"{svc}-g", f"{svc}-other"
        async with store.unit_of_work(svc) as uow:
            await uow.mark_seen_many(group, ["old1", "old2"])
            await uow.mark_seen(other, "old1")
        await asyncio.sleep(0.8)
        async with store.unit_of_work(svc) as uow:
            await uow.mark_seen(group, "new")
        # The cut is 0.4 s ago: 0.4 s clear of the old marks and of the recent one.
        assert await store.prune_inbox(group, older_than_seconds=0.4) == 2
        async with read_only(store, svc) as uow:
            assert await uow.seen_many(group, ["old1", "old2", "new"]) == {"new"}
            assert await uow.seen(other, "old1"), "another group's mark was pruned"
        assert await store.prune_inbox(group, older_than_seconds=0.4) == 0

    async def test_prune_inbox_keeps_what_is_younger_than_the_window(
        self, store: Store, svc: str
    ) -> None:
        async with store.unit_of_work(svc) as uow:
            await uow.mark_seen_many(f"{svc}-g", ["e1", "e2"])
        assert await store.prune_inbox(f"{svc}-g", older_than_seconds=3600) == 0
        assert await store.prune_inbox(f"{svc}-none", older_than_seconds=0) == 0
        async with read_only(store, svc) as uow:
            assert await uow.seen_many(f"{svc}-g", ["e1", "e2"]) == {"e1", "e2"}
        # A pruned event is handled again when it comes back: marking it works as new.
        await asyncio.sleep(0.05)
        assert await store.prune_inbox(f"{svc}-g", older_than_seconds=0) == 2
        async with store.unit_of_work(svc) as uow:
            assert not await uow.seen(f"{svc}-g", "e1")
            await uow.mark_seen(f"{svc}-g", "e1")
        async with read_only(store, svc) as uow:
            assert await uow.seen(f"{svc}-g", "e1")

    # -- documents ------------------------------------------------------------------------
    async def test_put_get_delete_roundtrip(self, store: Store, svc: str) -> None:
        data = {
            "s": "naïve ✓",
            "i": 2**53,
            "f": 1.5,
            "b": True,
            "n": None,
            "l": [1, "two", {"three": 3}],
            "d": {"nested": {"deep": []}},
        }
        async with store.unit_of_work(svc) as uow:
            assert await uow.get("orders", "o1") is None
            assert await uow.put("orders", "o1", data) == 1
        async with store.unit_of_work(svc) as uow:
            assert await uow.get("orders", "o1") == Document("o1", 1, data)
            await uow.delete("orders", "o1")
            await uow.delete("orders", "never-existed")
        async with store.unit_of_work(svc) as uow:
            assert await uow.get("orders", "o1") is None
            assert await uow.put("orders", "o1", {"again": 1}, expected_version=0) == 1

    async def test_get_many_finds_the_keys_that_exist(self, store: Store, svc: str) -> None:
        async with store.unit_of_work(svc) as uow:
            await uow.put("orders", "o1", {"n": 1})
            await uow.put("orders", "o2", {"n": 2})
            await uow.put("other", "o3", {"n": 3})
        async with store.unit_of_work(svc) as uow:
            assert await uow.get_many("orders", []) == {}
            found = await uow.get_many("orders", ["o2", "o3", "o1", "o2", "none"])
            assert found == {"o1": Document("o1", 1, {"n": 1}), "o2": Document("o2", 1, {"n": 2})}
            await uow.delete("orders", "o1")
            await uow.put("orders", "o4", {"n": 4})
            # Its own writes, as get sees them.
            assert set(await uow.get_many("orders", ["o1", "o2", "o4"])) == {"o2", "o4"}

    async def test_put_many_writes_without_a_version_check(self, store: Store, svc: str) -> None:
        async with store.unit_of_work(svc) as uow:
            await uow.put("orders", "o1", {"n": 1})
        async with store.unit_of_work(svc) as uow:
            await uow.put_many("orders", {})
            await uow.put_many("orders", {"o1": {"n": 10}, "o2": {"n": 2}})
            # Its own writes, as get sees them, with the versions the store gave them.
            assert await uow.get("orders", "o1") == Document("o1", 2, {"n": 10})
            assert await uow.get("orders", "o2") == Document("o2", 1, {"n": 2})
        with pytest.raises(Boom):
            async with store.unit_of_work(svc) as uow:
                await uow.put_many("orders", {"o3": {"n": 3}})
                raise Boom
        async with store.unit_of_work(svc) as uow:
            found = await uow.get_many("orders", ["o1", "o2", "o3"])
            assert {k: (d.version, d.data) for k, d in found.items()} == {
                "o1": (2, {"n": 10}),
                "o2": (1, {"n": 2}),
            }

    async def test_list_orders_by_key_and_pages_with_after(self, store: Store, svc: str) -> None:
        keys = ["b", "a", "B", "a-1", "aa", "ä", "10", "9", "Z", "a b", "é", "~"]
        async with store.unit_of_work(svc) as uow:
            for i, key in enumerate(keys):
                await uow.put("orders", key, {"i": i})
            await uow.put("other", "0", {})
        expected = sorted(keys)  # code point order, the same on every store
        async with read_only(store, svc) as uow:
            listed = await uow.list("orders")
            assert [d.key for d in listed] == expected
            assert all(d.version == 1 and d.data == {"i": keys.index(d.key)} for d in listed)
            pages: list[list[str]] = []
            after: str | None = None
            while len(pages) < 5 and (page := await uow.list("orders", limit=5, after=after)):
                pages.append([d.key for d in page])
                after = page[-1].key
            assert [len(p) for p in pages] == [5, 5, 2]
            assert [k for p in pages for k in p] == expected
            assert [d.key for d in await uow.list("orders", after="a")] == expected[
                expected.index("a") + 1 :
            ]
            assert await uow.list("empty") == []

    async def test_put_bumps_version(self, store: Store, svc: str) -> None:
        for expected in (1, 2, 3):
            async with store.unit_of_work(svc) as uow:
                assert await uow.put("orders", "o1", {"v": expected}) == expected
        async with store.unit_of_work(svc) as uow:
            assert await uow.put("orders", "o1", {"v": 4}, expected_version=3) == 4
            assert await uow.put("orders", "o1", {"v": 5}, expected_version=4) == 5
            assert await uow.get("orders", "o1") == Document("o1", 5, {"v": 5})

    async def test_expected_version_conflicts(self, store: Store, svc: str) -> None:
        async with store.unit_of_work(svc) as uow:
            await uow.put("orders", "o1", {"v": 1})
            await uow.put("orders", "o1", {"v": 2})
        for wrong in (0, 1, 3, 7):
            with pytest.raises(ConcurrencyConflict):
                async with store.unit_of_work(svc) as uow:
                    await uow.put("orders", "o1", {"v": "wrong"}, expected_version=wrong)
        with pytest.raises(ConcurrencyConflict):
            async with store.unit_of_work(svc) as uow:
                await uow.put("orders", "missing", {"v": 1}, expected_version=1)
        async with read_only(store, svc) as uow:
            assert await uow.get("orders", "o1") == Document("o1", 2, {"v": 2})
            assert await uow.get("orders", "missing") is None

    async def test_expected_version_zero_means_must_not_exist(self, store: Store, svc: str) -> None:
        async with store.unit_of_work(svc) as uow:
            assert await uow.put("orders", "o1", {"v": 1}, expected_version=0) == 1
        with pytest.raises(ConcurrencyConflict):
            async with store.unit_of_work(svc) as uow:
                await uow.put("orders", "o1", {"v": 2}, expected_version=0)

    async def test_concurrent_writers_with_same_expected_version_one_wins(
        self, store: Store, open_another: OpenStore, svc: str
    ) -> None:
        other = await open_another()
        async with store.unit_of_work(svc) as uow:
            await uow.put("orders", "o1", {"by": "setup"})

        async def write(s: Store, key: str, expected: int, by: str) -> str:
            try:
                async with s.unit_of_work(svc) as uow:
                    await uow.put("orders", key, {"by": by}, expected_version=expected)
                return by
            except ConcurrencyConflict:
                return "conflict"

        for key, expected in (("o1", 1), ("o2", 0)):
            results = await together(
                write(store, key, expected, "a"), write(other, key, expected, "b")
            )
            assert sorted(results) in (["a", "conflict"], ["b", "conflict"]), results
            async with read_only(store, svc) as uow:
                doc = await uow.get("orders", key)
            assert doc is not None and doc.version == expected + 1
            assert doc.data == {"by": min(results)}

    async def test_concurrent_writers_in_processes_one_wins(
        self, store: Store, workers: Callable[[int], Awaitable[list[Worker]]], svc: str
    ) -> None:
        async with store.unit_of_work(svc) as uow:
            await uow.put("orders", "o1", {"by": "setup"})
        pair = await workers(2)
        for key, expected in (("o1", 1), ("o2", 0)):
            for i, w in enumerate(pair):  # both hold their transaction open for a while
                w.send(
                    op="put",
                    service=svc,
                    collection="orders",
                    key=key,
                    data={"by": i},
                    expected_version=expected,
                    hold=0.3,
                )
            answers = [await w.receive() for w in pair]
            winners = [i for i, a in enumerate(answers) if "version" in a]
            assert len(winners) == 1, answers
            assert answers[winners[0]]["version"] == expected + 1
            assert "conflict" in answers[1 - winners[0]], answers
            async with read_only(store, svc) as uow:
                assert await uow.get("orders", key) == Document(
                    key, expected + 1, {"by": winners[0]}
                )

    # -- outbox ---------------------------------------------------------------------------
    async def test_claim_hands_out_rows_in_id_order(self, store: Store, svc: str) -> None:
        async with store.unit_of_work(svc) as uow:
            await uow.add_outbox([record(i) for i in range(5)])
        async with store.unit_of_work(svc) as uow:
            await uow.add_outbox([record(i) for i in range(5, 8)])
        first = await store.claim_outbox(svc, limit=4)
        second = await store.claim_outbox(svc, limit=4)
        assert [e.record for e in first + second] == [record(i) for i in range(8)]
        ids = [e.id for e in first + second]
        assert ids == sorted(ids) and len(set(ids)) == 8
        assert await store.claim_outbox(svc) == []

    async def test_claimed_row_not_handed_out_again_until_lease_expires(
        self, store: Store, open_another: OpenStore, svc: str
    ) -> None:
        other = await open_another()
        async with store.unit_of_work(svc) as uow:
            await uow.add_outbox([record(i) for i in range(3)])
        claimed = await store.claim_outbox(svc, lease_seconds=0.8)
        assert len(claimed) == 3
        assert await store.claim_outbox(svc) == []
        assert await other.claim_outbox(svc) == []
        async with store.unit_of_work(svc) as uow:
            await uow.add_outbox([record(3)])
        [fresh] = await other.claim_outbox(svc, lease_seconds=60)
        assert fresh.record == record(3)
        await asyncio.sleep(1.0)  # the first relay "died": its lease runs out
        again = await other.claim_outbox(svc)
        assert again == claimed, "expired rows must be handed out again, unchanged, in order"
        assert await store.claim_outbox(svc) == []

    async def test_concurrent_claimers_in_one_process_never_share_a_row(
        self, store: Store, open_another: OpenStore, svc: str
    ) -> None:
        others = [await open_another() for _ in range(2)]
        async with store.unit_of_work(svc) as uow:
            await uow.add_outbox([record(i) for i in range(90)])

        async def relay(s: Store) -> list[int]:
            ids: list[int] = []
            while len(ids) <= 90 and (batch := await s.claim_outbox(svc, 4, 60)):
                ids += [e.id for e in batch]
                await asyncio.sleep(0)
            return ids

        claims = await together(*(relay(s) for s in [store, *others]))
        every = [i for ids in claims for i in ids]
        assert len(every) == len(set(every)) == 90, [len(c) for c in claims]

    async def test_concurrent_claimers_in_processes_never_share_a_row(
        self, store: Store, workers: Callable[[int], Awaitable[list[Worker]]], svc: str
    ) -> None:
        async with store.unit_of_work(svc) as uow:
            await uow.add_outbox([record(i) for i in range(300)])
        relays = await workers(3)
        for w in relays:
            w.send(op="claim_all", service=svc, limit=3, max_rows=300)
        claims = [(await w.receive())["ids"] for w in relays]
        every = [i for ids in claims for i in ids]
        assert len(every) == len(set(every)) == 300, [len(c) for c in claims]

    async def test_delete_outbox(self, store: Store, svc: str) -> None:
        async with store.unit_of_work(svc) as uow:
            await uow.add_outbox([record(i) for i in range(4)])
        claimed = await store.claim_outbox(svc, lease_seconds=0.3)
        await store.delete_outbox([claimed[0].id, claimed[2].id])
        await store.delete_outbox([])
        await store.delete_outbox([claimed[0].id])  # already gone: no error
        assert await store.outbox_backlog(svc) == 2
        await asyncio.sleep(0.5)
        assert await store.claim_outbox(svc) == [claimed[1], claimed[3]]

    async def test_outbox_backlog_counts(self, store: Store, svc: str) -> None:
        assert await store.outbox_backlog(svc) == 0
        async with store.unit_of_work(svc) as uow:
            await uow.add_outbox([record(i) for i in range(3)])
            await uow.add_outbox([])
        assert await store.outbox_backlog(svc) == 3
        claimed = await store.claim_outbox(svc, limit=2)
        assert await store.outbox_backlog(svc) == 3, "claimed rows still wait until deleted"
        await store.delete_outbox([e.id for e in claimed])
        assert await store.outbox_backlog(svc) == 1

    # -- isolation ------------------------------------------------------------------------
    async def test_services_are_isolated(self, store: Store, svc: str, other_svc: str) -> None:
        async with store.unit_of_work(svc) as uow:
            await uow.put("orders", "o1", {"owner": "a"})
            await uow.put("orders", "o1", {"owner": "a"})
            await uow.put("orders", "o2", {"owner": "a"})
            await uow.add_outbox([record(1), record(2)])
        async with store.unit_of_work(other_svc) as uow:
            assert await uow.get("orders", "o1") is None
            assert await uow.list("orders") == []
            await uow.delete("orders", "o2")
            assert await uow.put("orders", "o1", {"owner": "b"}, expected_version=0) == 1
        assert await store.outbox_backlog(other_svc) == 0
        assert await store.claim_outbox(other_svc) == []
        async with read_only(store, svc) as uow:
            assert await uow.get("orders", "o1") == Document("o1", 2, {"owner": "a"})
            assert [d.key for d in await uow.list("orders")] == ["o1", "o2"]
        assert await store.outbox_backlog(svc) == 2
        assert [e.record for e in await store.claim_outbox(svc)] == [record(1), record(2)]

    # -- waking relays --------------------------------------------------------------------
    @pytest.mark.parametrize("writer_is", ["another store", "the same store"])
    async def test_wait_outbox_wakes_after_commit(
        self, store: Store, open_another: OpenStore, svc: str, writer_is: str
    ) -> None:
        writer = await open_another() if writer_is == "another store" else store
        timeout = 5.0 if self.wakes_on_commit else 0.3

        async def idle_relay() -> float:
            while await store.outbox_backlog(svc) == 0:
                await store.wait_outbox(svc, timeout)
            return time.perf_counter()

        relay = asyncio.create_task(idle_relay())
        await asyncio.sleep(0.3)
        assert not relay.done()
        async with writer.unit_of_work(svc) as uow:
            await uow.add_outbox([record(1)])
        committed = time.perf_counter()
        latency = await asyncio.wait_for(relay, timeout + 5) - committed
        limit = WAKE_LATENCY if self.wakes_on_commit else timeout + 0.5
        assert latency < limit, f"relay woke {latency * 1000:.0f} ms after the commit"

    async def test_wait_outbox_returns_by_its_timeout(self, store: Store, svc: str) -> None:
        for _ in range(3):
            started = time.perf_counter()
            await store.wait_outbox(svc, 0.2)
            assert time.perf_counter() - started < 0.7

    async def test_wait_outbox_ignores_rolled_back_and_other_services(
        self, store: Store, open_another: OpenStore, svc: str, other_svc: str
    ) -> None:
        writer = await open_another()
        await store.wait_outbox(svc, 0.05)  # a store may start listening on the first call
        await store.wait_outbox(svc, 0.05)
        started = time.perf_counter()
        waiter = asyncio.create_task(store.wait_outbox(svc, 0.8))
        await asyncio.sleep(0.1)
        async with writer.unit_of_work(other_svc) as uow:
            await uow.add_outbox([record(1)])
        with pytest.raises(Boom):
            async with writer.unit_of_work(svc) as uow:
                await uow.add_outbox([record(2)])
                raise Boom
        await waiter
        assert time.perf_counter() - started > 0.7, "woken by another service or a rollback"

    # -- connecting -----------------------------------------------------------------------
    async def test_reconnect_keeps_data(
        self, store: Store, open_another: OpenStore, svc: str
    ) -> None:
        await store.connect()  # a second connect() is a no-op
        async with store.unit_of_work(svc) as uow:
            await uow.put("orders", "o1", {"v": 1})
            await uow.add_outbox([record(1)])
        await store.close()
        later = await open_another()  # migrations run again on a database that has them
        async with read_only(later, svc) as uow:
            assert await uow.get("orders", "o1") == Document("o1", 1, {"v": 1})
        assert await later.outbox_backlog(svc) == 1
