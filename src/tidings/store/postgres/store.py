"""The PostgreSQL store object: a pool of connections, the outbox relay's side, LISTEN."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Sequence

import psycopg
from psycopg import sql
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from tidings.records import OutgoingRecord
from tidings.store.base import OutboxEntry, Store, StoreError, StoreUnavailable, UnitOfWork
from tidings.store.postgres.captured import TABLE
from tidings.store.postgres.errors import (
    START_HINT,
    Connection,
    first_line,
    lost_server,
    redact,
)
from tidings.store.postgres.migrations import migrate
from tidings.store.postgres.unit import CHANNEL, PostgresUnitOfWork

log = logging.getLogger("tidings.store.postgres")


async def _configure(conn: Connection) -> None:
    # Units of work run in REPEATABLE READ: a row that a concurrent transaction committed
    # after this one's snapshot makes the write that meets it fail (-> ConcurrencyConflict)
    # instead of passing silently. That is what keeps the inbox honest: two members that
    # both found an event unseen cannot both commit their handling of it.
    await conn.set_isolation_level(psycopg.IsolationLevel.REPEATABLE_READ)


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
        self._captured: set[str] = set()  # services whose outbox Debezium publishes
        # Read-only units of work whose COMMIT is still on its way (see unit_of_work).
        self._ending: set[asyncio.Task[None]] = set()

    def _unavailable(self, exc: BaseException, doing: str = "cannot connect") -> StoreUnavailable:
        return StoreUnavailable(
            f"{redact(self.url)}: {doing} to PostgreSQL ({first_line(exc)}); {START_HINT}"
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
            await migrate(conn)
        except psycopg.Error as exc:
            raise StoreUnavailable(
                f"{redact(self.url)}: cannot create the tidings tables ({first_line(exc)})"
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
        if self._ending:
            await asyncio.gather(*self._ending, return_exceptions=True)
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
            if lost_server(exc, conn):  # the server went away (restart, failover, network)
                raise self._unavailable(exc, "lost the connection") from exc
            raise
        finally:
            await pool.putconn(conn)  # rolls back, or discards it if it was left broken

    @contextlib.asynccontextmanager
    async def unit_of_work(self, service: str) -> AsyncIterator[UnitOfWork]:
        """A unit of work on a pooled connection. One that only read (``read_only``) does
        not wait for its COMMIT: there is nothing to make durable and nothing that can
        fail, so the COMMIT is sent and the connection given back in the background
        (:meth:`_end_read_only`), and a load or a lookup costs one round trip, not two."""
        pool = self.pool
        try:
            conn = await pool.getconn()
        except PoolTimeout as exc:
            raise self._unavailable(exc, "no connection") from None
        given_back = False
        try:
            uow = PostgresUnitOfWork(
                conn,
                service,
                lambda exc: self._unavailable(exc, "lost the connection"),
                captured=service in self._captured,
            )
            try:
                yield uow
                if uow.read_only and uow.began:
                    given_back = True  # by _end_read_only, once the COMMIT is through
                    self._ending.add(asyncio.create_task(self._end_read_only(conn)))
                    return
                await uow.commit()
            except BaseException:
                await uow.rollback()
                raise
        except psycopg.Error as exc:
            if lost_server(exc, conn):  # the server went away (restart, failover, network)
                raise self._unavailable(exc, "lost the connection") from exc
            raise
        finally:
            if not given_back:
                await pool.putconn(conn)  # rolls back, or discards it if it was left broken

    async def _end_read_only(self, conn: Connection) -> None:
        """COMMIT a unit of work that only read, then give its connection back. If the
        COMMIT fails (the server went away), the pool discards the broken connection."""
        try:
            with contextlib.suppress(psycopg.Error):
                await conn.commit()  # a plain COMMIT, without a cursor's work
        finally:
            await self.pool.putconn(conn)
            self._ending.discard(asyncio.current_task())

    async def capture_outbox(self, service: str) -> str:
        """From now on, ``service``'s outbox rows go to the table Debezium captures
        (:mod:`~tidings.store.postgres.captured`); returns it as ``schema.table``."""
        async with self._connection() as conn:
            cur = await conn.execute("SELECT current_schema()")
            row = await cur.fetchone()
        if row is None or row[0] is None:
            raise StoreError(f"{redact(self.url)}: no schema in the search_path to find {TABLE}")
        self._captured.add(service)
        return f"{row[0]}.{TABLE}"

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
            log.warning("%s: LISTEN connection lost: %s", redact(self.url), first_line(exc))
        # Notifications may be lost until a waiter listens again: wake them all to look now.
        for wakeup in self._wakeups.values():
            wakeup.set()
