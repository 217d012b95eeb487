"""The SQLite store: inbox, outbox, documents and events in one SQLite file (WAL mode).

The event store's part is :mod:`tidings.store.sqlite_events`.

Calls are synchronous under async signatures on purpose: a local SQLite transaction takes
microseconds, far less than a thread hop would cost. An asyncio lock keeps the units of
work of one process from interleaving on the shared connection; ``BEGIN IMMEDIATE`` and a
busy timeout serialise the writers of several processes on one file.

An idle relay waits in :meth:`SQLiteStore.wait_outbox`, which wakes when a unit of work
that queued outbox rows for its service commits, through any store object on the same
file in this process (SQLite has no LISTEN/NOTIFY: the notice is passed in memory, after
the COMMIT returned, so a rolled-back unit of work wakes nobody). A commit made by another
process is not noticed: the relay finds those rows at its next sweep.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

from tidings.records import OutgoingRecord
from tidings.store.base import (
    ConcurrencyConflict,
    Document,
    OutboxEntry,
    Store,
    StoreUnavailable,
    UnitOfWork,
)
from tidings.store.sqlite_events import EVENT_SCHEMA, SQLiteEvents

SCHEMA = (
    """
CREATE TABLE IF NOT EXISTS inbox (
    grp TEXT NOT NULL, event_id TEXT NOT NULL, handled_at REAL NOT NULL,
    PRIMARY KEY (grp, event_id)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS inbox_handled_at ON inbox (grp, handled_at);
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT, service TEXT NOT NULL, topic TEXT NOT NULL,
    key TEXT, value BLOB NOT NULL, headers TEXT NOT NULL, claimed_until REAL NOT NULL DEFAULT 0);
CREATE INDEX IF NOT EXISTS outbox_service ON outbox (service, claimed_until, id);
CREATE TABLE IF NOT EXISTS documents (
    service TEXT NOT NULL, collection TEXT NOT NULL, key TEXT NOT NULL,
    version INTEGER NOT NULL, data TEXT NOT NULL,
    PRIMARY KEY (service, collection, key)) WITHOUT ROWID;
"""
    + EVENT_SCHEMA
)


def connect_sqlite(path: str, url: str, busy_timeout: float = 30.0) -> sqlite3.Connection:
    """Open a SQLite file in WAL mode, or say in one line why it cannot be opened.

    A write that finds the file locked by another connection waits up to ``busy_timeout``
    seconds, then fails (the store raises :class:`StoreUnavailable`)."""
    if path != ":memory:":
        directory = os.path.dirname(os.path.abspath(path))
        try:
            os.makedirs(directory, exist_ok=True)
        except OSError as exc:
            raise StoreUnavailable(f"{url}: cannot create directory {directory}: {exc}") from None
    try:
        conn = sqlite3.connect(
            path, isolation_level=None, check_same_thread=False, timeout=busy_timeout
        )
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute(f"PRAGMA busy_timeout={round(busy_timeout * 1000)}")
    except sqlite3.Error as exc:
        raise StoreUnavailable(f"{url}: cannot open SQLite file {path}: {exc}") from None
    return conn


class _CommitNotices:
    """Who waits for outbox commits on which file and service, across the stores (and
    event loops) of this process."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waiting: dict[
            tuple[str, str], dict[int, tuple[asyncio.AbstractEventLoop, asyncio.Event]]
        ] = {}

    def register(self, file: str, service: str, event: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        with self._lock:
            self._waiting.setdefault((file, service), {})[id(event)] = (loop, event)

    def unregister(self, file: str, service: str, event: asyncio.Event) -> None:
        with self._lock:
            waiting = self._waiting.get((file, service), {})
            waiting.pop(id(event), None)
            if not waiting:
                self._waiting.pop((file, service), None)

    def announce(self, file: str, service: str) -> None:
        with self._lock:
            waiting = list(self._waiting.get((file, service), {}).values())
        try:
            current: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            current = None
        for loop, event in waiting:
            if loop is current:
                event.set()
            else:
                with contextlib.suppress(RuntimeError):  # that loop is closed: nobody waits
                    loop.call_soon_threadsafe(event.set)


_notices = _CommitNotices()


class SQLiteUnitOfWork(SQLiteEvents, UnitOfWork):
    def __init__(self, conn: sqlite3.Connection, service: str) -> None:
        self._conn = conn
        self.service = service
        self.queued_outbox = False
        self._savepoints = 0

    async def seen(self, group: str, event_id: str) -> bool:
        row = self._conn.execute(
            "SELECT 1 FROM inbox WHERE grp = ? AND event_id = ?", (group, event_id)
        ).fetchone()
        return row is not None

    async def mark_seen(self, group: str, event_id: str) -> None:
        await self.mark_seen_many(group, [event_id])

    async def seen_many(self, group: str, event_ids: Sequence[str]) -> set[str]:
        found: set[str] = set()
        for start in range(0, len(event_ids), 500):  # SQLite's limit of bound parameters
            chunk = event_ids[start : start + 500]
            rows = self._conn.execute(
                "SELECT event_id FROM inbox WHERE grp = ? AND event_id IN"
                f" ({','.join('?' * len(chunk))})",
                (group, *chunk),
            ).fetchall()
            found.update(r[0] for r in rows)
        return found

    async def mark_seen_many(self, group: str, event_ids: Sequence[str]) -> None:
        now = time.time()
        self._conn.executemany(
            "INSERT OR IGNORE INTO inbox (grp, event_id, handled_at) VALUES (?, ?, ?)",
            [(group, event_id, now) for event_id in event_ids],
        )

    @contextlib.asynccontextmanager
    async def savepoint(self) -> AsyncIterator[None]:
        self._savepoints += 1
        name = f"tidings_{self._savepoints}"
        self._conn.execute(f"SAVEPOINT {name}")
        try:
            yield
        except BaseException:
            self._conn.execute(f"ROLLBACK TO {name}")
            self._conn.execute(f"RELEASE {name}")
            raise
        self._conn.execute(f"RELEASE {name}")

    async def get(self, collection: str, key: str) -> Document | None:
        row = self._conn.execute(
            "SELECT version, data FROM documents WHERE service = ? AND collection = ? AND key = ?",
            (self.service, collection, key),
        ).fetchone()
        return None if row is None else Document(key, row[0], json.loads(row[1]))

    async def put(
        self,
        collection: str,
        key: str,
        data: dict[str, Any],
        expected_version: int | None = None,
    ) -> int:
        row = self._conn.execute(
            "SELECT version FROM documents WHERE service = ? AND collection = ? AND key = ?",
            (self.service, collection, key),
        ).fetchone()
        current = 0 if row is None else int(row[0])
        if expected_version is not None and expected_version != current:
            raise ConcurrencyConflict(
                f"{collection}/{key} is at version {current}, expected {expected_version}"
            )
        self._conn.execute(
            "INSERT INTO documents (service, collection, key, version, data) VALUES (?, ?, ?, ?, ?)"
            " ON CONFLICT (service, collection, key) DO UPDATE SET"
            " version = excluded.version, data = excluded.data",
            (self.service, collection, key, current + 1, json.dumps(data)),
        )
        return current + 1

    async def delete(self, collection: str, key: str) -> None:
        self._conn.execute(
            "DELETE FROM documents WHERE service = ? AND collection = ? AND key = ?",
            (self.service, collection, key),
        )

    async def list(
        self, collection: str, limit: int = 100, after: str | None = None
    ) -> list[Document]:
        rows = self._conn.execute(
            "SELECT key, version, data FROM documents WHERE service = ? AND collection = ?"
            " AND key > ? ORDER BY key LIMIT ?",
            (self.service, collection, after or "", limit),
        ).fetchall()
        return [Document(r[0], r[1], json.loads(r[2])) for r in rows]

    async def add_outbox(self, records: Sequence[OutgoingRecord]) -> None:
        if records:
            self.queued_outbox = True
        self._conn.executemany(
            "INSERT INTO outbox (service, topic, key, value, headers) VALUES (?, ?, ?, ?, ?)",
            [(self.service, r.topic, r.key, r.value, json.dumps(dict(r.headers))) for r in records],
        )


class SQLiteStore(Store):
    def __init__(self, path: str, url: str = "", *, busy_timeout: float = 30.0) -> None:
        self.path = path
        self.url = url or f"sqlite:///{path}"
        self.busy_timeout = busy_timeout
        self._conn: sqlite3.Connection | None = None
        self._lock = asyncio.Lock()
        # Commit notices are shared by the stores of one file; an in-memory database is
        # private to its connection.
        self._file = f"memory:{id(self)}" if path in ("", ":memory:") else os.path.realpath(path)
        self._wakeups: dict[str, asyncio.Event] = {}

    async def connect(self) -> None:
        if self._conn is not None:
            return
        conn = connect_sqlite(self.path, self.url, self.busy_timeout)
        conn.executescript(SCHEMA)
        self._conn = conn

    @property
    def conn(self) -> sqlite3.Connection:
        if self._conn is None:
            raise RuntimeError("SQLiteStore used before connect()")
        return self._conn

    async def close(self) -> None:
        for service, wakeup in self._wakeups.items():
            _notices.unregister(self._file, service, wakeup)
        self._wakeups.clear()
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    @contextlib.asynccontextmanager
    async def unit_of_work(self, service: str) -> AsyncIterator[UnitOfWork]:
        async with self._lock:
            conn = self.conn
            try:
                conn.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as exc:  # locked past the busy timeout, disk full
                raise StoreUnavailable(f"{self.url}: {exc}") from exc
            uow = SQLiteUnitOfWork(conn, service)
            try:
                yield uow
                conn.execute("COMMIT")
            except BaseException as exc:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                if isinstance(exc, sqlite3.OperationalError):
                    raise StoreUnavailable(f"{self.url}: {exc}") from exc
                raise
        if uow.queued_outbox:
            _notices.announce(self._file, service)

    async def claim_outbox(
        self, service: str, limit: int = 100, lease_seconds: float = 30.0
    ) -> list[OutboxEntry]:
        now = time.time()
        async with self._lock:
            rows = self.conn.execute(
                "UPDATE outbox SET claimed_until = ? WHERE id IN ("
                " SELECT id FROM outbox WHERE service = ? AND claimed_until < ?"
                " ORDER BY id LIMIT ?) RETURNING id, topic, key, value, headers",
                (now + lease_seconds, service, now, limit),
            ).fetchall()
        rows.sort(key=lambda r: r[0])  # RETURNING order is unspecified; keep outbox order
        return [
            OutboxEntry(r[0], OutgoingRecord(r[1], bytes(r[3]), r[2], json.loads(r[4])))
            for r in rows
        ]

    async def delete_outbox(self, ids: Sequence[int]) -> None:
        if not ids:
            return
        async with self._lock:
            self.conn.executemany("DELETE FROM outbox WHERE id = ?", [(i,) for i in ids])

    async def prune_inbox(self, group: str, older_than_seconds: float) -> int:
        # handled_at is in epoch seconds (time.time()), the clock of the processes on the file.
        async with self._lock:
            try:
                cur = self.conn.execute(
                    "DELETE FROM inbox WHERE grp = ? AND handled_at < ?",
                    (group, time.time() - older_than_seconds),
                )
            except sqlite3.OperationalError as exc:  # locked past the busy timeout
                raise StoreUnavailable(f"{self.url}: {exc}") from exc
        return cur.rowcount

    async def outbox_backlog(self, service: str) -> int:
        async with self._lock:
            row = self.conn.execute(
                "SELECT count(*) FROM outbox WHERE service = ?", (service,)
            ).fetchone()
        return int(row[0])

    async def wait_outbox(self, service: str, timeout: float) -> None:
        """Return when a unit of work of this process committed outbox rows for ``service``
        since the last call, or after ``timeout`` seconds. The first call for a service
        returns at once: until then nobody listened, so a commit may have slipped by."""
        wakeup = self._wakeups.get(service)
        if wakeup is None:
            wakeup = self._wakeups[service] = asyncio.Event()
            _notices.register(self._file, service, wakeup)
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(wakeup.wait(), timeout)
        wakeup.clear()
