"""Test services in one line: ``TestApp`` runs them in process on the memory transport.

    from tidings.testing import TestApp

    async def test_reserves_stock() -> None:
        async with TestApp(inventory.service) as app:
            await app.publish(OrderPlaced(order_id="o1", sku="widget", quantity=2))
            await app.drain()
            assert [e.order_id for e in await app.published(InventoryReserved)] == ["o1"]
            assert (await app.get(stock, "widget")).available == 8

Each service gets a runtime on one in-process broker (``memory://``) and its own SQLite
store in a throwaway directory: the inbox, the outbox, retries and dead letters all run
as in production, but nothing runs in the background. :meth:`TestApp.drain` relays and
consumes until every service is idle, so a test is deterministic. Retry back-off does not
wait: the delays asked for are recorded in :attr:`TestApp.sleeps`.
"""

from __future__ import annotations

import contextlib
import itertools
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import httpx

from tidings import codec
from tidings.envelope import Envelope
from tidings.eventsourcing import Aggregate
from tidings.http import with_units
from tidings.messages import Message, published_topic
from tidings.projection import Projection, ProjectionView
from tidings.reliability.deadletter import DeadLetter, read_dead_letters
from tidings.runtime import Runtime
from tidings.service import Collection, Context, Service
from tidings.store.sqlite import SQLiteStore
from tidings.testing.harness import drain
from tidings.testing.topics import records
from tidings.transport.memory import MemoryTransport
from tidings.units import direct_record

M = TypeVar("M", bound=Message)
A = TypeVar("A", bound=Aggregate)
T = TypeVar("T")
_apps = itertools.count()


class TestApp:
    """Services running in this process for a test; use as ``async with``."""

    __test__ = False  # not a pytest test class

    def __init__(self, *services: Service, source: str = "test") -> None:
        names = [s.name for s in services]
        if len(set(names)) != len(names):
            raise ValueError(f"each service once, please: {names}")
        self.services = services
        self.source = source
        self.sleeps: list[float] = []
        self.transport = MemoryTransport(f"memory://testapp-{next(_apps)}")
        self.runtimes: dict[str, Runtime] = {}
        self._stores: list[SQLiteStore] = []
        self._dir: tempfile.TemporaryDirectory[str] | None = None

    async def __aenter__(self) -> TestApp:
        self._dir = tempfile.TemporaryDirectory(prefix="tidings-testapp-")
        await self.transport.connect()
        try:
            for service in self.services:
                store = SQLiteStore(str(Path(self._dir.name) / f"{service.name}.db"))
                await store.connect()
                self._stores.append(store)
                runtime = Runtime(service, self.transport, store, sleep=self._sleep)
                await runtime.start(background=False)
                self.runtimes[service.name] = runtime
        except BaseException:
            await self.close()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        for runtime in self.runtimes.values():
            await runtime.stop()
        for store in self._stores:
            await store.close()
        await self.transport.close()
        self.runtimes.clear()
        self._stores.clear()
        if self._dir is not None:
            self._dir.cleanup()
            self._dir = None

    async def _sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)

    # -- driving ---------------------------------------------------------------------
    async def publish(self, message: Message, *, key: str | None = None) -> Envelope:
        """Publish ``message`` to the broker as an outside producer would."""
        envelope, record = direct_record(message, self.transport, source=self.source, key=key)
        await self.transport.create_topic(record.topic)
        await self.transport.publish([record])
        return envelope

    async def drain(self, max_rounds: int = 1000) -> int:
        """Relay and consume until every service is idle; returns how many records were read."""
        return await drain(*self.runtimes.values(), max_rounds=max_rounds)

    def runtime(self, service: Service | str) -> Runtime:
        name = service if isinstance(service, str) else service.name
        try:
            return self.runtimes[name]
        except KeyError:
            raise LookupError(
                f"{name!r} is not in this TestApp ({', '.join(self.runtimes)})"
            ) from None

    @contextlib.asynccontextmanager
    async def unit_of_work(self, service: Service | str) -> AsyncIterator[Context]:
        """A unit of work of ``service``, e.g. to call a function that takes a ``Context``."""
        async with self.runtime(service).unit_of_work() as ctx:
            yield ctx

    def http(self, service: Service | str) -> httpx.AsyncClient:
        """An HTTP client of the service's HTTP app, served in process (``async with`` it)."""
        runtime = self.runtime(service)
        if runtime.service.http_app is None:
            raise LookupError(f"{runtime.service.name} has no HTTP app (service.http(app))")
        app = with_units(runtime.service.http_app, runtime.unit_of_work)
        return httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url=f"http://{runtime.service.name}"
        )

    # -- looking -----------------------------------------------------------------------
    async def get(self, collection: Collection[Any], key: str) -> Any:
        """The document ``key`` of ``collection`` in the state of the service declaring it."""
        owner = next(
            (s for s in self.services if s.collections.get(collection.name) is collection), None
        )
        if owner is None:
            raise LookupError(f"no service in this TestApp declares collection {collection.name!r}")
        async with self.unit_of_work(owner) as ctx:
            return await ctx.get(collection, key)

    async def read(self, projection: Projection, fn: Callable[[ProjectionView], Awaitable[T]]) -> T:
        """``fn`` on the serving generation of ``projection``, in its service's state."""
        async with self.unit_of_work(projection.service) as ctx:
            return await ctx.read(projection, fn)

    async def load(self, aggregate_type: type[A], id: str) -> A | None:
        """The aggregate ``id`` as the service declaring it (``service.aggregate``) loads it."""
        owner = next((s for s in self.services if aggregate_type in s.aggregates.values()), None)
        if owner is None:
            raise LookupError(
                f"no service in this TestApp declares aggregate {aggregate_type.__name__}"
                " (service.aggregate(...))"
            )
        async with self.unit_of_work(owner) as ctx:
            return await ctx.load(aggregate_type, id)

    async def published(self, message_type: type[M]) -> list[M]:
        """Every ``message_type`` message on its topic so far, in log order per partition."""
        envelopes = await self.envelopes(published_topic(message_type))
        return [
            message_type.model_validate(envelope.data)
            for envelope in envelopes
            if envelope.type == message_type.message_info.type
        ]

    async def envelopes(self, topic: str) -> list[Envelope]:
        """Every envelope on ``topic`` so far (for its ids, correlation and causation)."""
        return [codec.decode(record) for record in await records(self.transport, topic)]

    async def dead_letters(self, group: Service | str) -> list[DeadLetter]:
        """The dead letters of a consumer group (a service's name), oldest first."""
        name = group if isinstance(group, str) else group.group
        return await read_dead_letters(self.transport, name)
