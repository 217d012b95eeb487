"""The store contract: what the reliability layer keeps, behind one protocol.

A store keeps, per service, in one database:

* the **inbox** - ids of the events a consumer group has handled (dedupe);
* the **outbox** - records a unit of work published, waiting to be relayed to the broker;
* **documents** - the service's own state, read models, saga instances and checkpoints,
  as JSON documents in named collections, each with a version for optimistic concurrency.

The rules, checked for every implementation by :mod:`tidings.testing.store`:

* A :class:`UnitOfWork` is one local transaction. Everything done through it (inbox marks,
  document writes, outbox records) commits together when its ``async with`` block exits
  normally, and none of it when the block raises. Inside it, a :meth:`UnitOfWork.savepoint`
  block that raises undoes only its own writes.
* ``put(..., expected_version=v)`` fails with :class:`ConcurrencyConflict` unless the
  document's current version is ``v`` (0 = must not exist); the write bumps the version.
* The inbox dedupes concurrent deliveries too: if two units of work both find an event not
  ``seen`` and mark it, only one commits; the other raises :class:`ConcurrencyConflict`.
  Any write may raise it when a concurrent unit of work changed the same row first: retry
  the whole unit of work.
* Outbox rows are handed out by :meth:`Store.claim_outbox` with a lease: several relays
  may run at once (in several processes) and a row is claimed by one of them at a time;
  a relay that dies leaves its rows to be claimed again when the lease runs out. Rows are
  removed by :meth:`Store.delete_outbox` only after the broker has them (at-least-once).
* Inbox marks are kept until :meth:`Store.prune_inbox` removes them by age: an event is
  recognised as a duplicate only while its mark is younger than what the caller prunes
  (the dedupe window), on the database's clock.
* The **event store** keeps, per service, streams of events (one per event-sourced
  aggregate). :meth:`UnitOfWork.append` adds events to a stream at versions
  ``expected_version + 1, + 2, ...`` and fails with :class:`ConcurrencyConflict` unless the
  stream is at ``expected_version`` (0 = must not exist), so of two writers that read the
  same version only one commits. ``(service, stream, version)`` is unique. Every event also
  gets a **global position**, increasing in commit order within a service: a reader that
  has read up to position ``p`` never later finds a committed event of that service below
  ``p`` (what a subscription or a projection needs). Appends commit or roll back with the
  rest of the unit of work, outbox rows included.
* **Snapshots** are an optimisation only: the state of a stream at a version, which a
  reader may start from instead of version 0. Deleting every snapshot changes no state.
* **Thread safety**: none; one store object per event loop.
"""

from __future__ import annotations

import abc
import builtins
import contextlib
import dataclasses
from collections.abc import AsyncIterator, Mapping, Sequence
from datetime import datetime
from typing import Any

from tidings.records import OutgoingRecord


class StoreError(Exception):
    """Base of the errors a store raises on purpose."""


class StoreUnavailable(StoreError):
    """The database cannot be reached; the message names the URL and how to start it."""


class ConcurrencyConflict(StoreError):
    """A document changed since it was read (optimistic concurrency)."""


@dataclasses.dataclass(frozen=True, slots=True)
class OutboxEntry:
    id: int
    record: OutgoingRecord


@dataclasses.dataclass(frozen=True, slots=True)
class Document:
    key: str
    version: int
    data: dict[str, Any]


@dataclasses.dataclass(frozen=True, slots=True)
class NewEvent:
    """An event to append to a stream: its envelope's id, type and schema version, when it
    was recorded, and its data as JSON (see :meth:`UnitOfWork.append`)."""

    event_id: str
    type: str
    schema_version: int
    time: datetime
    data: dict[str, Any]


@dataclasses.dataclass(frozen=True, slots=True)
class StoredEvent:
    """An event as the event store keeps it: where it sits in its stream (``version``,
    from 1) and among all the service's events (``position``, increasing)."""

    position: int
    stream: str
    version: int
    event_id: str
    type: str
    schema_version: int
    time: datetime
    data: dict[str, Any]


@dataclasses.dataclass(frozen=True, slots=True)
class Snapshot:
    """The state of ``stream`` at ``version``, written by code that knows its ``schema``."""

    stream: str
    version: int
    schema: str
    state: dict[str, Any]


class UnitOfWork(abc.ABC):
    """One local transaction of one service. Obtain it from :meth:`Store.unit_of_work`."""

    service: str

    # -- inbox ---------------------------------------------------------------------------
    @abc.abstractmethod
    async def seen(self, group: str, event_id: str) -> bool:
        """Has ``group`` already handled ``event_id``?"""

    @abc.abstractmethod
    async def mark_seen(self, group: str, event_id: str) -> None:
        """Record that ``group`` handled ``event_id`` (commits with the rest)."""

    async def seen_many(self, group: str, event_ids: Sequence[str]) -> set[str]:
        """Which of ``event_ids`` ``group`` has already handled (one query where it can)."""
        return {event_id for event_id in event_ids if await self.seen(group, event_id)}

    async def mark_seen_many(self, group: str, event_ids: Sequence[str]) -> None:
        """:meth:`mark_seen` for several events (one statement where it can)."""
        for event_id in event_ids:
            await self.mark_seen(group, event_id)

    # -- savepoints ----------------------------------------------------------------------
    @abc.abstractmethod
    def savepoint(self) -> contextlib.AbstractAsyncContextManager[None]:
        """A nested scope: what is written in it is undone if the block raises (the error
        propagates), while the rest of the unit of work stays and can still commit.

        The runtime runs each handler of a batch in one, so that one failing handler
        rolls back only itself.
        """

    # -- documents -----------------------------------------------------------------------
    @abc.abstractmethod
    async def get(self, collection: str, key: str) -> Document | None: ...

    @abc.abstractmethod
    async def put(
        self,
        collection: str,
        key: str,
        data: dict[str, Any],
        expected_version: int | None = None,
    ) -> int:
        """Write a document; returns its new version. See the module rules."""

    async def put_many(self, collection: str, documents: Mapping[str, dict[str, Any]]) -> None:
        """Write ``documents`` (key -> data) without a version check, as ``put`` without
        ``expected_version`` does each, and without waiting for their new versions (the
        PostgreSQL store sends them with its next statement); this default puts each."""
        for key, data in documents.items():
            await self.put(collection, key, data)

    async def get_many(self, collection: str, keys: Sequence[str]) -> dict[str, Document]:
        """The documents of ``keys`` that exist, by key (one statement where the store
        has round trips to save; this default asks for each)."""
        found = {}
        for key in dict.fromkeys(keys):
            doc = await self.get(collection, key)
            if doc is not None:
                found[key] = doc
        return found

    @abc.abstractmethod
    async def delete(self, collection: str, key: str) -> None: ...

    @abc.abstractmethod
    async def list(
        self, collection: str, limit: int = 100, after: str | None = None
    ) -> list[Document]:
        """Documents of a collection in key order, ``limit`` at most, keys after ``after``.

        Key order is code point order (Python's ``sorted``), on every store and locale.
        """

    # -- event store ---------------------------------------------------------------------
    @abc.abstractmethod
    async def append(
        self, stream: str, expected_version: int, events: Sequence[NewEvent]
    ) -> builtins.list[int]:
        """Append ``events`` to ``stream`` at ``expected_version + 1, ...``; their global
        positions. :class:`ConcurrencyConflict` unless the stream is at ``expected_version``
        (it may be raised here or when the unit of work commits)."""

    @abc.abstractmethod
    async def read_stream(
        self, stream: str, after_version: int = 0, to_version: int | None = None
    ) -> builtins.list[StoredEvent]:
        """The events of ``stream`` with ``after_version < version <= to_version``, in order."""

    @abc.abstractmethod
    async def read_events(
        self, after_position: int = 0, limit: int = 100
    ) -> builtins.list[StoredEvent]:
        """Up to ``limit`` events of this service after ``after_position``, in position order."""

    @abc.abstractmethod
    async def save_snapshot(self, snapshot: Snapshot) -> None:
        """Keep ``snapshot`` (a second one of the same stream and version is ignored)."""

    @abc.abstractmethod
    async def latest_snapshot(
        self, stream: str, schema: str, to_version: int | None = None
    ) -> Snapshot | None:
        """The snapshot of ``stream`` written with ``schema`` at the highest version (at most
        ``to_version``), or None."""

    async def read_aggregate(
        self, stream: str, schema: str, to_version: int | None = None
    ) -> tuple[Snapshot | None, builtins.list[StoredEvent]]:
        """:meth:`latest_snapshot` and the events after it (up to ``to_version``): what
        loading an aggregate reads, in one round trip where the store can."""
        snapshot = await self.latest_snapshot(stream, schema, to_version)
        after = 0 if snapshot is None else snapshot.version
        return snapshot, await self.read_stream(stream, after, to_version)

    # -- outbox --------------------------------------------------------------------------
    @abc.abstractmethod
    async def add_outbox(self, records: Sequence[OutgoingRecord]) -> None:
        """Queue records to be published once this unit of work commits."""


class Store(abc.ABC):
    """A database connection. Create one with :func:`tidings.store.open_store`."""

    url: str

    async def connect(self) -> None:  # noqa: B027 - optional hook
        """Open the connection and run migrations; raise :class:`StoreUnavailable`."""

    @abc.abstractmethod
    async def close(self) -> None: ...

    @abc.abstractmethod
    def unit_of_work(self, service: str) -> contextlib.AbstractAsyncContextManager[UnitOfWork]:
        """A transaction: commits when the block exits normally, rolls back on error."""

    @abc.abstractmethod
    async def claim_outbox(
        self, service: str, limit: int = 100, lease_seconds: float = 30.0
    ) -> list[OutboxEntry]:
        """Claim up to ``limit`` unclaimed (or lease-expired) outbox rows, oldest first."""

    @abc.abstractmethod
    async def delete_outbox(self, ids: Sequence[int]) -> None:
        """Remove relayed rows."""

    @abc.abstractmethod
    async def prune_inbox(self, group: str, older_than_seconds: float) -> int:
        """Remove the inbox marks of ``group`` made more than ``older_than_seconds`` ago;
        returns how many were removed. Other groups' marks are untouched.

        It runs on its own, outside any unit of work (like :meth:`delete_outbox`). An event
        delivered again after its mark was removed is no longer recognised as a duplicate:
        the age must exceed how long the broker may deliver an event again.
        """

    @abc.abstractmethod
    async def outbox_backlog(self, service: str) -> int:
        """How many rows wait in the outbox of ``service``."""

    async def capture_outbox(self, service: str) -> str:
        """Write ``service``'s outbox rows where change data capture publishes them
        (``--relay debezium``, :mod:`tidings.cdc.outbox`) instead of for a polling relay;
        returns the table Debezium reads. Only PostgreSQL's log can be captured."""
        raise StoreError(
            f"{self.url}: Debezium reads PostgreSQL's write-ahead log; this store has none to "
            "capture: use a postgresql:// store, or --relay polling"
        )

    async def wait_outbox(self, service: str, timeout: float) -> None:
        """Return when new outbox rows may be there, or after ``timeout`` seconds.

        The default just sleeps; PostgreSQL wakes relays with LISTEN/NOTIFY, SQLite with
        a notice passed in memory between the stores of one process.
        """
        import asyncio

        await asyncio.sleep(timeout)


@contextlib.asynccontextmanager
async def read_only(store: Store, service: str) -> AsyncIterator[UnitOfWork]:
    """A unit of work for reading (it commits nothing it was not asked to write)."""
    async with store.unit_of_work(service) as uow:
        yield uow
