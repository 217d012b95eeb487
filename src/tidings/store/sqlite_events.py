"""The SQLite event store: streams of events and their snapshots, in the store's file.

Writers of one file are serialised by ``BEGIN IMMEDIATE`` (see :mod:`tidings.store.sqlite`),
so a unit of work that reads a stream's head and appends after it cannot be overtaken:
the check and the insert see the same stream. Positions come from an ``AUTOINCREMENT`` key,
which never hands out a number twice, and since commits are serialised too, positions
commit in increasing order, which is what subscriptions rely on.

Times are kept as ISO 8601 text in UTC with microseconds, which sorts as it reads and
gives back the same ``datetime``.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from tidings.store.base import ConcurrencyConflict, NewEvent, Snapshot, StoredEvent

# Appended to the store's schema (CREATE ... IF NOT EXISTS, run at every connect: the
# SQLite store's way to migrate a file made by an older version).
EVENT_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    position INTEGER PRIMARY KEY AUTOINCREMENT, service TEXT NOT NULL, stream TEXT NOT NULL,
    version INTEGER NOT NULL, event_id TEXT NOT NULL, type TEXT NOT NULL,
    schema_version INTEGER NOT NULL, time TEXT NOT NULL, data TEXT NOT NULL);
CREATE UNIQUE INDEX IF NOT EXISTS events_stream_version ON events (service, stream, version);
CREATE INDEX IF NOT EXISTS events_service_position ON events (service, position);
CREATE TABLE IF NOT EXISTS snapshots (
    service TEXT NOT NULL, stream TEXT NOT NULL, schema TEXT NOT NULL, version INTEGER NOT NULL,
    state TEXT NOT NULL, PRIMARY KEY (service, stream, schema, version)) WITHOUT ROWID;
"""

_COLUMNS = "position, stream, version, event_id, type, schema_version, time, data"


def _time_text(value: datetime) -> str:
    if value.tzinfo is None:
        raise ValueError(f"event time {value!r} has no time zone; use an aware datetime")
    return value.astimezone(UTC).isoformat(timespec="microseconds")


def _stored(row: Any) -> StoredEvent:
    return StoredEvent(
        position=int(row[0]),
        stream=row[1],
        version=int(row[2]),
        event_id=row[3],
        type=row[4],
        schema_version=int(row[5]),
        time=datetime.fromisoformat(row[6]),
        data=json.loads(row[7]),
    )


class SQLiteEvents:
    """The event store part of a SQLite unit of work (a mixin: it uses ``_conn`` and
    ``service``, which the unit of work sets)."""

    _conn: sqlite3.Connection
    service: str

    async def append(
        self, stream: str, expected_version: int, events: Sequence[NewEvent]
    ) -> list[int]:
        row = self._conn.execute(
            "SELECT max(version) FROM events WHERE service = ? AND stream = ?",
            (self.service, stream),
        ).fetchone()
        current = int(row[0] or 0)
        if current != expected_version:
            raise ConcurrencyConflict(
                f"stream {stream} is at version {current}, expected {expected_version}"
            )
        positions = []
        for n, event in enumerate(events, start=1):
            cur = self._conn.execute(
                "INSERT INTO events (service, stream, version, event_id, type, schema_version,"
                " time, data) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    self.service,
                    stream,
                    expected_version + n,
                    event.event_id,
                    event.type,
                    event.schema_version,
                    _time_text(event.time),
                    json.dumps(event.data),
                ),
            )
            positions.append(int(cur.lastrowid or 0))
        return positions

    async def read_stream(
        self, stream: str, after_version: int = 0, to_version: int | None = None
    ) -> list[StoredEvent]:
        rows = self._conn.execute(
            f"SELECT {_COLUMNS} FROM events WHERE service = ? AND stream = ?"
            " AND version > ? AND version <= ? ORDER BY version",
            (self.service, stream, after_version, 2**62 if to_version is None else to_version),
        ).fetchall()
        return [_stored(r) for r in rows]

    async def read_events(self, after_position: int = 0, limit: int = 100) -> list[StoredEvent]:
        rows = self._conn.execute(
            f"SELECT {_COLUMNS} FROM events WHERE service = ? AND position > ?"
            " ORDER BY position LIMIT ?",
            (self.service, after_position, max(limit, 0)),
        ).fetchall()
        return [_stored(r) for r in rows]

    async def save_snapshot(self, snapshot: Snapshot) -> None:
        self._conn.execute(
            "INSERT OR IGNORE INTO snapshots (service, stream, schema, version, state)"
            " VALUES (?, ?, ?, ?, ?)",
            (
                self.service,
                snapshot.stream,
                snapshot.schema,
                snapshot.version,
                json.dumps(snapshot.state),
            ),
        )

    async def latest_snapshot(
        self, stream: str, schema: str, to_version: int | None = None
    ) -> Snapshot | None:
        row = self._conn.execute(
            "SELECT version, state FROM snapshots WHERE service = ? AND stream = ?"
            " AND schema = ? AND version <= ? ORDER BY version DESC LIMIT 1",
            (self.service, stream, schema, 2**62 if to_version is None else to_version),
        ).fetchone()
        if row is None:
            return None
        return Snapshot(stream, int(row[0]), schema, json.loads(row[1]))
