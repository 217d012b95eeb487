"""The PostgreSQL store: inbox, outbox and documents in PostgreSQL, on psycopg 3 (async).

Each unit of work is one REPEATABLE READ transaction on its own pooled connection, so the
units of work of one process run concurrently and the database, not a lock here, keeps them
honest: a versioned write is one conditional statement, and a write that meets a row a
concurrent transaction committed after this one's snapshot fails with a serialization error
(raised as :class:`ConcurrencyConflict`). So two writers with the same ``expected_version``
cannot both win, and neither can two members handling one event after both found it unseen.

Several relays, in several processes, share the outbox: ``claim_outbox`` takes rows with
``FOR UPDATE SKIP LOCKED`` and stamps a lease (``claimed_until``, on the database's clock,
so relays on hosts with skewed clocks agree). A unit of work that queues outbox rows also
sends ``NOTIFY tidings_outbox, '<service>'``, which PostgreSQL delivers only on commit;
:meth:`PostgresStore.wait_outbox` listens on a dedicated connection, so an idle relay wakes
within milliseconds of a commit instead of polling.

Round trips are what a unit of work waits on, so statements whose result nobody waits for
(BEGIN, SAVEPOINT and RELEASE, the inbox marks, the outbox rows) are not sent on their
own: they wait in the unit of work and go with the next statement that is waited for, in
one round trip (psycopg's pipeline mode), at the latest with the COMMIT. An error of a
deferred statement is raised there, and rolls the unit of work back as any error does.
A unit of work that ran no statement sends nothing at all.

Tables are created by versioned migrations at :meth:`PostgresStore.connect`, under an
advisory lock so that services starting together do not race. They go to the first schema
of the ``search_path`` (``?options=-csearch_path%3Dmyschema`` in the URL picks another).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any, LiteralString

import psycopg
from psycopg import sql
from psycopg.rows import TupleRow
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from tidings.records import OutgoingRecord
from tidings.store.base import (
    ConcurrencyConflict,
    Document,
    OutboxEntry,
    Store,
    StoreUnavailable,
    UnitOfWork,
)

log = logging.getLogger(__name__)

Connection = psycopg.AsyncConnection[TupleRow]

CHANNEL = "tidings_outbox"
# Any fixed 64-bit number; it only has to be the same for every tidings process.
MIGRATION_LOCK = 0x7469_6469_6E67_73  # "tidings"
START_HINT = "start it with `scripts/services up postgres` (or `make services`)"

# Append-only: a released migration is never edited, a change is a new version.
MIGRATIONS: list[tuple[int, list[LiteralString]]] = [
    (
        1,
        [
            """CREATE TABLE IF NOT EXISTS inbox (
                grp text NOT NULL, event_id text NOT NULL,
                handled_at timestamptz NOT NULL DEFAULT now(),
                PRIMARY KEY (grp, event_id))""",
            """CREATE TABLE IF NOT EXISTS outbox (
                id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                service text NOT NULL, topic text NOT NULL, key text,
                value bytea NOT NULL, headers jsonb NOT NULL,
                claimed_until timestamptz NOT NULL DEFAULT '-infinity')""",
            "CREATE INDEX IF NOT EXISTS outbox_service ON outbox (service, id)",
            # COLLATE "C": keys sort by code point, as in SQLite, whatever the database locale.
            """CREATE TABLE IF NOT EXISTS documents (
                service text NOT NULL, collection text NOT NULL, key text COLLATE "C" NOT NULL,
                version bigint NOT NULL, data jsonb NOT NULL,
                PRIMARY KEY (service, collection, key))""",
        ],
    ),
    # Pruning the inbox by age reads a group's oldest marks, not all of them.
    (2, ["CREATE INDEX IF NOT EXISTS inbox_handled_at ON inbox (grp, handled_at)"]),
]


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


def redact(url: str) -> str:
    """The URL with any password masked, fit for a log line or an error message."""
    url = re.sub(r"(://[^:/?#@]*):[^@/?#]*@", r"\1:***@", url)
    return re.sub(r"(password=)[^&\s]*", r"\1***", url)


def _lost_race(exc: psycopg.Error) -> bool:
    """Did a concurrent transaction win (serialization failure, deadlock: SQLSTATE 40xxx)?"""
    return (exc.sqlstate or "").startswith("40")


def _lost_server(exc: psycopg.Error, conn: Connection) -> bool:
    """Is this the connection or the server going away (not a statement failing)?

    ``conn.broken`` is not always set yet when the first statement after a
    ``pg_terminate_backend`` or a server restart fails, so the SQLSTATE counts too:
    class 08 (connection exception), 57P (operator intervention: shutdown, terminated),
    or an OperationalError with no SQLSTATE (raised by the client, not the server).
    """
    if conn.broken or conn.closed:
        return True
    state = exc.sqlstate or ""
    if state.startswith(("08", "57P")):
        return True
    return isinstance(exc, psycopg.OperationalError) and not state


def _first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__


async def _configure(conn: Connection) -> None:
    # Units of work run in REPEATABLE READ: a row that a concurrent transaction committed
    # after this one's snapshot makes the write that meets it fail (-> ConcurrencyConflict)
    # instead of passing silently. That is what keeps the inbox honest: two members that
    # both found an event unseen cannot both commit their handling of it.
    await conn.set_isolation_level(psycopg.IsolationLevel.REPEATABLE_READ)


class PostgresUnitOfWork(UnitOfWork):
    def __init__(
        self,
        conn: Connection,
        service: str,
        unavailable: Callable[[BaseException], StoreUnavailable],
    ) -> None:
        self._conn = conn
        self.service = service
        self._unavailable = unavailable
        self._notified = False
        # Statements whose result nobody waits for (BEGIN, SAVEPOINT, RELEASE, the inbox
        # marks, the outbox rows): sent with the next statement that is waited for, in
        # one round trip, at the latest with the COMMIT.
        self._pending: list[tuple[str, Sequence[Any]]] = [(BEGIN, ())]
        self._savepoints = 0

    @property
    def began(self) -> bool:
        """Has the transaction been opened on the server (any statement sent)?"""
        return not self._pending or self._pending[0][0] != BEGIN

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
        if _lost_race(exc):
            return ConcurrencyConflict(f"{self.service}: {_first_line(exc)}")
        if _lost_server(exc, self._conn):
            return self._unavailable(exc)
        return exc

    async def _all(self, query: str, params: Sequence[Any]) -> list[TupleRow]:
        """Run ``query``; its rows (none for a statement without a result).

        Statements waiting in ``_pending`` go first, in the same round trip (psycopg's
        pipeline mode); an error of any of them is raised here.
        """
        pending, self._pending = self._pending, []
        try:
            if pending:
                async with self._conn.pipeline():
                    for statement, values in pending:
                        await self._conn.execute(statement, values)
                    cur = await self._conn.execute(query, params)
                # Leaving the pipeline sends the one Sync and reads every result: one round
                # trip (a sync() inside the block would cost a second one on the way out).
                return await cur.fetchall() if cur.description else []
            cur = await self._conn.execute(query, params)
            return await cur.fetchall() if cur.description else []
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
        try:
            yield
        except BaseException:
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
        row = await self._one(
            "SELECT version, data FROM documents"
            " WHERE service = %s AND collection = %s AND key = %s",
            (self.service, collection, key),
        )
        return None if row is None else Document(key, int(row[0]), row[1])

    async def put(
        self,
        collection: str,
        key: str,
        data: dict[str, Any],
        expected_version: int | None = None,
    ) -> int:
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
            current = await self.get(collection, key)
            raise ConcurrencyConflict(
                f"{collection}/{key} is at version {0 if current is None else current.version},"
                f" expected {expected_version}"
            )
        return int(row[0])

    async def delete(self, collection: str, key: str) -> None:
        await self._one(
            "DELETE FROM documents WHERE service = %s AND collection = %s AND key = %s",
            (self.service, collection, key),
        )

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
        params = (
            self.service,
            [r.topic for r in records],
            [r.key for r in records],
            [r.value for r in records],
            [Jsonb(dict(r.headers)) for r in records],
        )
        if self._notified:
            self._defer(INSERT_OUTBOX, params)
        else:
            # The NOTIFY rides on the same statement; PostgreSQL delivers it on commit only.
            self._defer(INSERT_OUTBOX_AND_NOTIFY, (*params, CHANNEL, self.service))
            self._notified = True


class PostgresStore(Store):
    """A pool of connections to one PostgreSQL database, plus one for LISTEN."""

    def __init__(
        self,
        url: str,
        *,
        min_connections: int = 1,
        max_connections: int = 10,
        connect_timeout: float = 5.0,
        acquire_timeout: float = 30.0,
    ) -> None:
        self.url = url
        self._min = min_connections
        self._max = max_connections
        self._connect_timeout = connect_timeout
        self._acquire_timeout = acquire_timeout
        self._pool: AsyncConnectionPool[Connection] | None = None
        self._listener: Connection | None = None
        self._listen_task: asyncio.Task[None] | None = None
        self._wakeups: dict[str, asyncio.Event] = {}
        self._listen_lock = asyncio.Lock()
        self._listen_failed = False

    def _unavailable(self, exc: BaseException, doing: str = "cannot connect") -> StoreUnavailable:
        return StoreUnavailable(
            f"{redact(self.url)}: {doing} to PostgreSQL ({_first_line(exc)}); {START_HINT}"
        )

    async def _open_connection(self) -> Connection:
        try:
            return await psycopg.AsyncConnection.connect(
                self.url, autocommit=True, connect_timeout=max(1, round(self._connect_timeout))
            )
        except psycopg.Error as exc:
            raise self._unavailable(exc) from None

    async def connect(self) -> None:
        if self._pool is not None:
            return
        # One plain connection first: it fails fast (a pool would retry until its timeout)
        # and runs the migrations before any unit of work can see the tables.
        conn = await self._open_connection()
        try:
            await self._migrate(conn)
        except psycopg.Error as exc:
            raise StoreUnavailable(
                f"{redact(self.url)}: cannot create the tidings tables ({_first_line(exc)})"
            ) from None
        finally:
            await conn.close()
        pool: AsyncConnectionPool[Connection] = AsyncConnectionPool(
            self.url,
            min_size=self._min,
            max_size=self._max,
            kwargs={"autocommit": True},
            configure=_configure,
            timeout=self._acquire_timeout,
            name=f"tidings {redact(self.url)}",
            open=False,
        )
        try:
            await pool.open(wait=True, timeout=self._connect_timeout)
        except PoolTimeout as exc:
            await pool.close()
            raise self._unavailable(exc) from None
        self._pool = pool

    @staticmethod
    async def _migrate(conn: Connection) -> None:
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
            await conn.execute(
                "CREATE TABLE IF NOT EXISTS tidings_migrations ("
                " version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
            )
            cur = await conn.execute("SELECT version FROM tidings_migrations")
            applied = {int(r[0]) for r in await cur.fetchall()}
            for version, statements in MIGRATIONS:
                if version in applied:
                    continue
                for statement in statements:
                    await conn.execute(statement)
                await conn.execute(
                    "INSERT INTO tidings_migrations (version) VALUES (%s)", (version,)
                )
                log.info("%s: applied migration %d", redact(conn.info.dsn), version)

    @property
    def pool(self) -> AsyncConnectionPool[Connection]:
        if self._pool is None:
            raise RuntimeError("PostgresStore used before connect()")
        return self._pool

    async def close(self) -> None:
        if self._listen_task is not None:
            self._listen_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._listen_task
            self._listen_task = None
        if self._listener is not None:
            await self._listener.close()
            self._listener = None
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    @contextlib.asynccontextmanager
    async def _connection(self) -> AsyncIterator[Connection]:
        pool = self.pool
        try:
            conn = await pool.getconn()
        except PoolTimeout as exc:
            raise self._unavailable(exc, "no connection") from None
        try:
            yield conn
        except psycopg.Error as exc:
            if _lost_server(exc, conn):  # the server went away (restart, failover, network)
                raise self._unavailable(exc, "lost the connection") from exc
            raise
        finally:
            await pool.putconn(conn)  # rolls back, or discards it if it was left broken

    @contextlib.asynccontextmanager
    async def unit_of_work(self, service: str) -> AsyncIterator[UnitOfWork]:
        async with self._connection() as conn:
            uow = PostgresUnitOfWork(
                conn, service, lambda exc: self._unavailable(exc, "lost the connection")
            )
            try:
                yield uow
                await uow.commit()
            except BaseException:
                await uow.rollback()
                raise

    async def claim_outbox(
        self, service: str, limit: int = 100, lease_seconds: float = 30.0
    ) -> list[OutboxEntry]:
        async with self._connection() as conn:
            cur = await conn.execute(
                "WITH picked AS ("
                " SELECT id FROM outbox WHERE service = %s AND claimed_until < now()"
                " ORDER BY id LIMIT %s FOR UPDATE SKIP LOCKED)"
                " UPDATE outbox o SET claimed_until = now() + %s * interval '1 second'"
                " FROM picked WHERE o.id = picked.id"
                " RETURNING o.id, o.topic, o.key, o.value, o.headers",
                (service, max(limit, 0), lease_seconds),
            )
            rows = await cur.fetchall()
        rows.sort(key=lambda r: int(r[0]))  # RETURNING order is unspecified
        return [OutboxEntry(int(r[0]), OutgoingRecord(r[1], bytes(r[3]), r[2], r[4])) for r in rows]

    async def delete_outbox(self, ids: Sequence[int]) -> None:
        if not ids:
            return
        async with self._connection() as conn:
            await conn.execute("DELETE FROM outbox WHERE id = ANY(%s)", (list(ids),))

    async def prune_inbox(self, group: str, older_than_seconds: float) -> int:
        async with self._connection() as conn:
            cur = await conn.execute(
                "DELETE FROM inbox WHERE grp = %s"
                " AND handled_at < now() - %s * interval '1 second'",
                (group, older_than_seconds),
            )
        return max(cur.rowcount, 0)

    async def outbox_backlog(self, service: str) -> int:
        async with self._connection() as conn:
            cur = await conn.execute("SELECT count(*) FROM outbox WHERE service = %s", (service,))
            row = await cur.fetchone()
        return 0 if row is None else int(row[0])

    # -- LISTEN / NOTIFY ------------------------------------------------------------------
    async def wait_outbox(self, service: str, timeout: float) -> None:
        wakeup = self._wakeups.setdefault(service, asyncio.Event())
        if self._listen_task is None or self._listen_task.done():
            # Not listening until now, so a commit may have slipped by: say "look now".
            started = False
            with contextlib.suppress(TimeoutError):
                started = await asyncio.wait_for(self._start_listening(), timeout)
            if not started:
                await asyncio.sleep(timeout)  # poll until the database is back
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(wakeup.wait(), timeout)
        wakeup.clear()

    async def _start_listening(self) -> bool:
        async with self._listen_lock:  # concurrent waiters must not open two listeners
            if self._listen_task is not None and not self._listen_task.done():
                return True
            if self._listener is not None:
                await self._listener.close()
                self._listener = None
            try:
                conn = await self._open_connection()
            except StoreUnavailable as exc:
                if not self._listen_failed:
                    log.warning("cannot LISTEN, relays poll until it is back: %s", exc)
                self._listen_failed = True
                return False
            self._listener = conn  # from here on, close() closes it even if we are cancelled
            await conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(CHANNEL)))
            self._listen_failed = False
            self._listen_task = asyncio.create_task(self._listen(conn), name="tidings-listen")
            return True

    async def _listen(self, conn: Connection) -> None:
        try:
            async for note in conn.notifies():
                self._wakeups.setdefault(note.payload, asyncio.Event()).set()
        except psycopg.Error as exc:
            log.warning("%s: LISTEN connection lost: %s", redact(self.url), _first_line(exc))
        # Notifications may be lost until a waiter listens again: wake them all to look now.
        for wakeup in self._wakeups.values():
            wakeup.set()
