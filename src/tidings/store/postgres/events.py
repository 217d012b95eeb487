"""The PostgreSQL event store: streams of events and their snapshots (migration 3).

**Appending** is one statement: it reads the stream's head and inserts the events at
``expected_version + 1, ...`` only if the head is ``expected_version``, returning the head
and the new positions (one round trip). Two units of work that read the same head cannot
both commit: the second one's insert meets the first one's ``(service, stream, version)``
row (``events_stream_version``), which is raised as :class:`ConcurrencyConflict`, as is a
head that is not the expected one.

**Positions commit in order within a service.** An identity column hands out numbers when
rows are inserted, not when they commit, so without more a reader could see position 7
committed before position 6 and skip 6 for ever. Each append therefore takes a
transaction-scoped advisory lock for its service (``pg_advisory_xact_lock``), held until
the commit, in the append statement itself, before it reads the head or numbers a row:
the appends of one service are serialised from their insert to their commit, and a later
position is always committed later. Services do not wait for each other. (The ``eventsourcing``
library locks the whole table for the same reason.)

Snapshots are written deferred (nobody waits for them) and a second one of the same
stream, schema and version is ignored.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC
from typing import Any, LiteralString

import psycopg
from psycopg.rows import TupleRow
from psycopg.types.json import Jsonb

from tidings.store.base import ConcurrencyConflict, NewEvent, Snapshot, StoredEvent

STREAM_VERSION = "events_stream_version"  # the unique constraint of (service, stream, version)
# The statement takes the service's advisory lock (a 64-bit hash of this prefix and the
# service) before it reads the head: the head is read in the lock's row, so no plan can
# read it, or number a row, before the lock is held.
LOCKED_HEAD = (
    "WITH lock AS MATERIALIZED (SELECT pg_advisory_xact_lock("
    "hashtextextended('tidings.events:' || %(service)s, 0))),"
    " head AS (SELECT (SELECT coalesce(max(version), 0) FROM events"
    " WHERE service = %(service)s AND stream = %(stream)s) AS v FROM lock),"
)
APPEND = (
    LOCKED_HEAD + " added AS (INSERT INTO events"
    " (service, stream, version, event_id, type, schema_version, time, data)"
    " SELECT %(service)s, %(stream)s, %(expected)s + r.n, r.event_id, r.type, r.schema_version,"
    " r.time, r.data"
    " FROM unnest(%(ids)s::text[], %(types)s::text[], %(schemas)s::integer[],"
    " %(times)s::timestamptz[], %(data)s::jsonb[])"
    " WITH ORDINALITY AS r (event_id, type, schema_version, time, data, n), head"
    " WHERE head.v = %(expected)s ORDER BY r.n RETURNING position)"
    " SELECT head.v, (SELECT coalesce(array_agg(position ORDER BY position), '{}')"
    " FROM added) FROM head"
)
# The same for one event (the usual save), without arrays: they cost more to send than
# the statement costs to run.
APPEND_ONE = (
    LOCKED_HEAD + " added AS (INSERT INTO events"
    " (service, stream, version, event_id, type, schema_version, time, data)"
    " SELECT %(service)s, %(stream)s, head.v + 1, %(id)s, %(type)s, %(schema)s, %(time)s,"
    " %(data)s FROM head WHERE head.v = %(expected)s RETURNING position)"
    " SELECT head.v, (SELECT coalesce(array_agg(position), '{}') FROM added) FROM head"
)
COLUMNS: LiteralString = "position, stream, version, event_id, type, schema_version, time, data"
# The latest snapshot (its row has no position) and the events after it, in one statement.
READ_AGGREGATE = (
    "WITH snap AS (SELECT version, state FROM snapshots WHERE service = %(service)s"
    " AND stream = %(stream)s AND schema = %(schema)s AND version <= %(to)s"
    " ORDER BY version DESC LIMIT 1)"
    " SELECT NULL::bigint, NULL::text, version, NULL::text, NULL::text, NULL::integer,"
    " NULL::timestamptz, state FROM snap"
    f" UNION ALL SELECT {COLUMNS} FROM events WHERE service = %(service)s"
    " AND stream = %(stream)s AND version <= %(to)s"
    " AND version > coalesce((SELECT version FROM snap), 0)"
    " ORDER BY 3"
)


def stream_conflict(exc: psycopg.Error) -> ConcurrencyConflict | None:
    """The conflict ``exc`` means if it is a second event at one stream version."""
    constraint = getattr(exc.diag, "constraint_name", None)
    if exc.sqlstate == "23505" and constraint == STREAM_VERSION:
        return ConcurrencyConflict(
            f"another unit of work appended to the stream first ({exc.diag.message_detail})"
        )
    return None


def _stored(row: TupleRow) -> StoredEvent:
    return StoredEvent(
        position=int(row[0]),
        stream=row[1],
        version=int(row[2]),
        event_id=row[3],
        type=row[4],
        schema_version=int(row[5]),
        time=row[6].astimezone(UTC),
        data=row[7],
    )


class PostgresEvents:
    """The event store part of a PostgreSQL unit of work (a mixin over its statements)."""

    service: str
    _wrote: bool  # set by each write (the unit of work's read_only)

    # Provided by the unit of work (tidings.store.postgres.unit).
    def _defer(self, query: str, params: Sequence[Any]) -> None:
        raise NotImplementedError

    async def _all(self, query: str, params: Sequence[Any] | Mapping[str, Any]) -> list[TupleRow]:
        raise NotImplementedError

    async def append(
        self, stream: str, expected_version: int, events: Sequence[NewEvent]
    ) -> list[int]:
        if not events:
            return []
        self._wrote = True
        params: dict[str, Any] = {
            "service": self.service,
            "stream": stream,
            "expected": expected_version,
        }
        if len(events) == 1:
            [e] = events
            params.update(
                id=e.event_id, type=e.type, schema=e.schema_version, time=e.time, data=Jsonb(e.data)
            )
        else:
            params.update(
                ids=[e.event_id for e in events],
                types=[e.type for e in events],
                schemas=[e.schema_version for e in events],
                times=[e.time for e in events],
                data=[Jsonb(e.data) for e in events],
            )
        try:
            [(head, positions)] = await self._all(
                APPEND_ONE if len(events) == 1 else APPEND, params
            )
        except ConcurrencyConflict as exc:
            cause = exc.__cause__
            if not (isinstance(cause, psycopg.Error) and stream_conflict(cause)):
                raise  # not this stream's: a deferred statement's conflict
            # Another unit of work appended after this one's snapshot and committed first.
            raise ConcurrencyConflict(
                f"stream {stream} is at version {expected_version + 1} or later, expected"
                f" {expected_version} (another unit of work appended first)"
            ) from exc
        if int(head) != expected_version:
            raise ConcurrencyConflict(
                f"stream {stream} is at version {head}, expected {expected_version}"
            )
        return [int(p) for p in positions]

    async def read_stream(
        self, stream: str, after_version: int = 0, to_version: int | None = None
    ) -> list[StoredEvent]:
        rows = await self._all(
            f"SELECT {COLUMNS} FROM events WHERE service = %s AND stream = %s"
            " AND version > %s AND version <= %s ORDER BY version",
            (self.service, stream, after_version, 2**62 if to_version is None else to_version),
        )
        return [_stored(r) for r in rows]

    async def read_aggregate(
        self, stream: str, schema: str, to_version: int | None = None
    ) -> tuple[Snapshot | None, list[StoredEvent]]:
        rows = await self._all(
            READ_AGGREGATE,
            {
                "service": self.service,
                "stream": stream,
                "schema": schema,
                "to": 2**62 if to_version is None else to_version,
            },
        )
        if rows and rows[0][0] is None:
            snapshot = Snapshot(stream, int(rows[0][2]), schema, rows[0][7])
            return snapshot, [_stored(r) for r in rows[1:]]
        return None, [_stored(r) for r in rows]

    async def read_events(self, after_position: int = 0, limit: int = 100) -> list[StoredEvent]:
        rows = await self._all(
            f"SELECT {COLUMNS} FROM events WHERE service = %s AND position > %s"
            " ORDER BY position LIMIT %s",
            (self.service, after_position, max(limit, 0)),
        )
        return [_stored(r) for r in rows]

    async def save_snapshot(self, snapshot: Snapshot) -> None:
        self._wrote = True
        self._defer(
            "INSERT INTO snapshots (service, stream, schema, version, state)"
            " VALUES (%s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
            (
                self.service,
                snapshot.stream,
                snapshot.schema,
                snapshot.version,
                Jsonb(snapshot.state),
            ),
        )

    async def latest_snapshot(
        self, stream: str, schema: str, to_version: int | None = None
    ) -> Snapshot | None:
        rows = await self._all(
            "SELECT version, state FROM snapshots WHERE service = %s AND stream = %s"
            " AND schema = %s AND version <= %s ORDER BY version DESC LIMIT 1",
            (self.service, stream, schema, 2**62 if to_version is None else to_version),
        )
        return Snapshot(stream, int(rows[0][0]), schema, rows[0][1]) if rows else None
