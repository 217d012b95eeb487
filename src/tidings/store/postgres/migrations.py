"""The PostgreSQL store's tables, created by versioned migrations.

Each migration is a version and its statements; :func:`migrate` applies those a database
lacks and records them in ``tidings_migrations``. Tables go to the first schema of the
``search_path`` (``?options=-csearch_path%3Dmyschema`` in the URL picks another).
"""

from __future__ import annotations

import logging
from typing import LiteralString

import psycopg
from psycopg.rows import TupleRow

from tidings.store.postgres import captured
from tidings.store.postgres.errors import redact

log = logging.getLogger("tidings.store.postgres")

Connection = psycopg.AsyncConnection[TupleRow]

# Any fixed 64-bit number; it only has to be the same for every tidings process.
MIGRATION_LOCK = 0x7469_6469_6E67_73  # "tidings"

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
    # The event store (tidings.store.postgres.events): streams of events with a global
    # position, and snapshots. COLLATE "C" as for document keys.
    (
        3,
        [
            """CREATE TABLE IF NOT EXISTS events (
                position bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                service text NOT NULL, stream text COLLATE "C" NOT NULL, version bigint NOT NULL,
                event_id text NOT NULL, type text NOT NULL, schema_version integer NOT NULL,
                time timestamptz NOT NULL, data jsonb NOT NULL,
                CONSTRAINT events_stream_version UNIQUE (service, stream, version))""",
            "CREATE INDEX IF NOT EXISTS events_service_position ON events (service, position)",
            """CREATE TABLE IF NOT EXISTS snapshots (
                service text NOT NULL, stream text COLLATE "C" NOT NULL, schema text NOT NULL,
                version bigint NOT NULL, state jsonb NOT NULL,
                PRIMARY KEY (service, stream, schema, version))""",
        ],
    ),
    # The outbox Debezium captures (--relay debezium): see tidings.store.postgres.captured.
    (4, [captured.CREATE]),
]


async def migrate(conn: Connection) -> None:
    """Apply the migrations ``conn``'s database lacks, in one transaction, under an
    advisory lock so that processes starting together do not race."""
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
            await conn.execute("INSERT INTO tidings_migrations (version) VALUES (%s)", (version,))
            log.info("%s: applied migration %d", redact(conn.info.dsn), version)
