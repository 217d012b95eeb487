"""A PostgreSQL unit of work: one REPEATABLE READ transaction on one pooled connection.

Round trips are what a unit of work waits on, so statements whose result nobody waits for
(BEGIN, SAVEPOINT and RELEASE, the inbox marks, the outbox rows, the snapshots) are not
sent on their own: they wait in the unit of work (``_defer``) and go with the next
statement that is waited for, in one round trip (psycopg's pipeline mode, left without an
explicit ``sync()``, which would cost a second round trip), at the latest with the COMMIT.
An error of a deferred statement is raised there, and rolls the unit of work back as any
error does. A unit of work that ran no statement sends nothing at all.

A unit of work that queues outbox rows also sends ``NOTIFY tidings_outbox, '<service>'``
on the same statement; PostgreSQL delivers it on commit only.

A document read or written once in a unit of work is read again from the unit of work,
not the server (``_docs``): under REPEATABLE READ the server would answer the same (its
snapshot plus this transaction's own writes), and a batch of events that all touch one
document (a SKU's stock, a report's row) pays one round trip for it instead of one per
event. A savepoint rolled back restores what it had. ``list`` still asks the server.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import Any

import psycopg
from psycopg.rows import TupleRow
from psycopg.types.json import Jsonb

from tidings.records import OutgoingRecord
from tidings.store.base import ConcurrencyConflict, Document, StoreUnavailable, UnitOfWork
from tidings.store.postgres import captured
from tidings.store.postgres.errors import Connection, first_line, lost_race, lost_server
from tidings.store.postgres.events import PostgresEvents, stream_conflict

CHANNEL = "tidings_outbox"
Params = Sequence[Any] | Mapping[str, Any]
# Units of work run in REPEATABLE READ: see _configure.
BEGIN = "BEGIN ISOLATION LEVEL REPEATABLE READ"
# One statement for a whole batch; ORDER BY keeps the outbox ids in the order given.
INSERT_OUTBOX = (
    "INSERT INTO outbox (service, topic, key, value, headers)"
    " SELECT %s, r.topic, r.key, r.value, r.headers"
    " FROM unnest(%s::text[], %s::text[], %s::bytea[], %s::jsonb[])"
    " WITH ORDINALITY AS r (topic, key, value, headers, n) ORDER BY r.n"
)
INSERT_OUTBOX_AND_NOTIFY = "WITH added AS (" + INSERT_OUTBOX + ") SELECT pg_notify(%s, %s)"
# The same for one record (the usual case), with plain parameters: cheaper to send.
INSERT_OUTBOX_ONE = (
    "INSERT INTO outbox (service, topic, key, value, headers) VALUES (%s, %s, %s, %s, %s)"
)
INSERT_OUTBOX_ONE_AND_NOTIFY = "WITH added AS (" + INSERT_OUTBOX_ONE + ") SELECT pg_notify(%s, %s)"


class PostgresUnitOfWork(PostgresEvents, UnitOfWork):
    def __init__(
        self,
        conn: Connection,
        service: str,
        unavailable: Callable[[BaseException], StoreUnavailable],
        *,
        captured: bool = False,
    ) -> None:
        self._conn = conn
        self.service = service
        self._captured = captured  # outbox rows for Debezium (tidings.store.postgres.captured)
        self._unavailable = unavailable
        self._notified = False
        # Statements whose result nobody waits for (BEGIN, SAVEPOINT, RELEASE, the inbox
        # marks, the outbox rows): sent with the next statement that is waited for, in
        # one round trip, at the latest with the COMMIT.
        self._pending: list[tuple[str, Sequence[Any]]] = [(BEGIN, ())]
        self._savepoints = 0
        # (collection, key) -> the document as this transaction sees it (None: absent).
        self._docs: dict[tuple[str, str], Document | None] = {}
        self._wrote = False  # any write asked for (see read_only)

    @property
    def began(self) -> bool:
        """Has the transaction been opened on the server (any statement sent)?"""
        return not self._pending or self._pending[0][0] != BEGIN

    @property
    def read_only(self) -> bool:
        """Has it only read so far (nothing written, queued or locked)?"""
        return not self._wrote

    def _defer(self, query: str, params: Sequence[Any]) -> None:
        self._pending.append((query, params))

    async def commit(self) -> None:
        if self._pending == [(BEGIN, ())]:
            self._pending = []  # nothing was done: there is nothing to commit
            return
        await self._all("COMMIT", ())

    async def rollback(self) -> None:
        began, self._pending = self.began, []
        if began and not self._conn.closed:
            # If this fails too (the server went away, a query was cancelled mid-way), the
            # pool discards or resets the connection when it is given back.
            with contextlib.suppress(psycopg.Error):
                await self._conn.execute("ROLLBACK")

    def _mapped(self, exc: psycopg.Error) -> Exception:
        """The error a caller of the store contract sees for ``exc``."""
        if lost_race(exc):
            return ConcurrencyConflict(f"{self.service}: {first_line(exc)}")
        conflict = stream_conflict(exc)
        if conflict is not None:
            return conflict
        if lost_server(exc, self._conn):
            return self._unavailable(exc)
        return exc

    async def _all(self, query: str, params: Params) -> list[TupleRow]:
        """Run ``query``; its rows (none for a statement without a result).

        Statements waiting in ``_pending`` go first, in the same round trip (psycopg's
        pipeline mode); an error of any of them is raised here.
        """
        pending, self._pending = self._pending, []
        # One cursor for all of them: it keeps the last statement's result, which is the
        # one asked for (a cursor per statement cost as much as the statement's own work).
        try:
            cur = self._conn.cursor()  # raises if the connection was closed under us
            if pending:
                async with self._conn.pipeline():
                    for statement, values in pending:
                        await cur.execute(statement, values)
                    await cur.execute(query, params)
                # Leaving the pipeline sends the one Sync and reads every result: one round
                # trip (a sync() inside the block would cost a second one on the way out).
            else:
                await cur.execute(query, params)
            # A result with columns has rows to fetch (cheaper to ask than cur.description,
            # which builds the column descriptions).
            result = cur.pgresult
            return await cur.fetchall() if result is not None and result.nfields else []
        except psycopg.Error as exc:
            mapped = self._mapped(exc)
            if mapped is exc:
                raise
            raise mapped from exc

    async def _one(self, query: str, params: Sequence[Any]) -> TupleRow | None:
        rows = await self._all(query, params)
        return rows[0] if rows else None

    async def seen(self, group: str, event_id: str) -> bool:
        row = await self._one(
            "SELECT 1 FROM inbox WHERE grp = %s AND event_id = %s", (group, event_id)
        )
        return row is not None

    async def mark_seen(self, group: str, event_id: str) -> None:
        await self.mark_seen_many(group, [event_id])

    async def seen_many(self, group: str, event_ids: Sequence[str]) -> set[str]:
        if not event_ids:
            return set()
        rows = await self._all(
            "SELECT event_id FROM inbox WHERE grp = %s AND event_id = ANY(%s)",
            (group, list(event_ids)),
        )
        return {r[0] for r in rows}

    async def mark_seen_many(self, group: str, event_ids: Sequence[str]) -> None:
        if event_ids:
            self._wrote = True
            self._defer(
                "INSERT INTO inbox (grp, event_id) SELECT %s, unnest(%s::text[])"
                " ON CONFLICT DO NOTHING",
                (group, list(event_ids)),
            )

    @contextlib.asynccontextmanager
    async def savepoint(self) -> AsyncIterator[None]:
        # SAVEPOINT and RELEASE cost a round trip each, as much as a handler's own
        # statements: so they are deferred like the other statements nobody waits for. A
        # savepoint whose block sent nothing is never sent at all.
        self._savepoints += 1
        name = f"tidings_{self._savepoints}"
        opened = (f"SAVEPOINT {name}", ())
        self._pending.append(opened)
        docs = dict(self._docs)
        try:
            yield
        except BaseException:
            self._docs = docs
            if opened in self._pending:  # nothing was sent since: drop the block's part
                del self._pending[self._pending.index(opened) :]
            else:  # what is still pending was queued inside the block: drop it, undo the rest
                self._pending = []
                await self._all(f"ROLLBACK TO SAVEPOINT {name}", ())
            raise
        if opened in self._pending and self._pending[-1] == opened:
            self._pending.pop()  # an empty block
        else:
            self._defer(f"RELEASE SAVEPOINT {name}", ())

    async def get(self, collection: str, key: str) -> Document | None:
        if (collection, key) in self._docs:
            return self._docs[collection, key]
        row = await self._one(
            "SELECT version, data FROM documents"
            " WHERE service = %s AND collection = %s AND key = %s",
            (self.service, collection, key),
        )
        doc = None if row is None else Document(key, int(row[0]), row[1])
        self._docs[collection, key] = doc
        return doc

    async def get_many(self, collection: str, keys: Sequence[str]) -> dict[str, Document]:
        unknown = [k for k in dict.fromkeys(keys) if (collection, k) not in self._docs]
        if unknown:
            rows = await self._all(
                "SELECT key, version, data FROM documents"
                " WHERE service = %s AND collection = %s AND key = ANY(%s)",
                (self.service, collection, unknown),
            )
            self._docs.update(dict.fromkeys(((collection, k) for k in unknown), None))
            self._docs.update({(collection, r[0]): Document(r[0], int(r[1]), r[2]) for r in rows})
        return {k: doc for k in keys if (doc := self._docs[collection, k]) is not None}

    async def put_many(self, collection: str, documents: Mapping[str, dict[str, Any]]) -> None:
        if not documents:
            return
        self._wrote = True
        self._defer(
            "INSERT INTO documents (service, collection, key, version, data)"
            " SELECT %s, %s, k, 1, d FROM unnest(%s::text[], %s::jsonb[]) AS t(k, d)"
            " ON CONFLICT (service, collection, key)"
            " DO UPDATE SET version = documents.version + 1, data = EXCLUDED.data",
            (self.service, collection, list(documents), [Jsonb(d) for d in documents.values()]),
        )
        for key in documents:  # its version is the server's to say: a get asks it
            self._docs.pop((collection, key), None)

    async def put(
        self,
        collection: str,
        key: str,
        data: dict[str, Any],
        expected_version: int | None = None,
    ) -> int:
        self._wrote = True
        where = (self.service, collection, key)
        # Each branch is one statement, so the version check and the write are atomic.
        if expected_version is None:
            row = await self._one(
                "INSERT INTO documents (service, collection, key, version, data)"
                " VALUES (%s, %s, %s, 1, %s) ON CONFLICT (service, collection, key)"
                " DO UPDATE SET version = documents.version + 1, data = EXCLUDED.data"
                " RETURNING version",
                (*where, Jsonb(data)),
            )
        elif expected_version == 0:
            row = await self._one(
                "INSERT INTO documents (service, collection, key, version, data)"
                " VALUES (%s, %s, %s, 1, %s) ON CONFLICT DO NOTHING RETURNING version",
                (*where, Jsonb(data)),
            )
        else:
            row = await self._one(
                "UPDATE documents SET version = version + 1, data = %s"
                " WHERE service = %s AND collection = %s AND key = %s AND version = %s"
                " RETURNING version",
                (Jsonb(data), *where, expected_version),
            )
        if row is None:
            self._docs.pop((collection, key), None)  # ask the server what it has
            current = await self.get(collection, key)
            raise ConcurrencyConflict(
                f"{collection}/{key} is at version {0 if current is None else current.version},"
                f" expected {expected_version}"
            )
        self._docs[collection, key] = Document(key, int(row[0]), data)
        return int(row[0])

    async def delete(self, collection: str, key: str) -> None:
        self._wrote = True
        # Nobody waits for its result: sent with the next statement (its error, if any,
        # raised there or at the COMMIT); reads in this unit see the key gone at once.
        self._defer(
            "DELETE FROM documents WHERE service = %s AND collection = %s AND key = %s",
            (self.service, collection, key),
        )
        self._docs[collection, key] = None

    async def list(
        self, collection: str, limit: int = 100, after: str | None = None
    ) -> list[Document]:
        rows = await self._all(
            "SELECT key, version, data FROM documents WHERE service = %s AND collection = %s"
            " AND key > %s ORDER BY key LIMIT %s",
            (self.service, collection, after or "", max(limit, 0)),
        )
        return [Document(r[0], int(r[1]), r[2]) for r in rows]

    async def add_outbox(self, records: Sequence[OutgoingRecord]) -> None:
        if not records:
            return
        self._wrote = True
        if self._captured:  # inserted and deleted at once: Debezium reads them in the WAL
            self._defer(captured.INSERT, captured.insert_params(self.service, records))
            self._defer(captured.DELETE, (self.service,))
            return
        if len(records) == 1:
            [r] = records
            params: tuple[Any, ...] = (
                self.service,
                r.topic,
                r.key,
                r.value,
                Jsonb(dict(r.headers)),
            )
            insert, insert_and_notify = INSERT_OUTBOX_ONE, INSERT_OUTBOX_ONE_AND_NOTIFY
        else:
            params = (
                self.service,
                [r.topic for r in records],
                [r.key for r in records],
                [r.value for r in records],
                [Jsonb(dict(r.headers)) for r in records],
            )
            insert, insert_and_notify = INSERT_OUTBOX, INSERT_OUTBOX_AND_NOTIFY
        if self._notified:
            self._defer(insert, params)
        else:
            # The NOTIFY rides on the same statement; PostgreSQL delivers it on commit only.
            self._defer(insert_and_notify, (*params, CHANNEL, self.service))
            self._notified = True
