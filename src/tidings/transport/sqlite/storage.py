"""The SQLite log's file: its tables, how it is opened, and the range lookups of retention.

``records`` is a rowid table with a unique index on (topic, partition, offset) rather than
a WITHOUT ROWID table keyed by them: WITHOUT ROWID keeps whole rows in index pages, whose
local payload limit (~1000 bytes on 4 KiB pages) sends every 1 KiB event to an overflow
page; measured, that publishes at a quarter of the rate of this layout. The small, hot
tables (heads, offsets, members, leases) are WITHOUT ROWID, which suits small rows.

``heads`` holds each partition's next offset, its byte count and last timestamp; the
publish that inserts records updates it in the same transaction, so offsets have neither
gaps nor duplicates however many processes publish. ``pos`` is where a record starts in
its partition's byte stream, which makes retention by size a range delete.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from collections.abc import Iterator

from tidings.transport.errors import BrokerUnavailable

SCHEMA = """
CREATE TABLE IF NOT EXISTS topics (
    name TEXT PRIMARY KEY, partitions INTEGER NOT NULL,
    retention_ms INTEGER, retention_bytes INTEGER) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS heads (
    topic TEXT NOT NULL, partition INTEGER NOT NULL, next_offset INTEGER NOT NULL,
    bytes INTEGER NOT NULL, last_ts REAL NOT NULL,
    PRIMARY KEY (topic, partition)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS records (
    seq INTEGER PRIMARY KEY,
    topic TEXT NOT NULL, partition INTEGER NOT NULL, offset INTEGER NOT NULL,
    key TEXT, value BLOB NOT NULL, headers TEXT, ts REAL NOT NULL, pos INTEGER NOT NULL);
CREATE UNIQUE INDEX IF NOT EXISTS records_by_offset ON records (topic, partition, offset);
CREATE TABLE IF NOT EXISTS group_offsets (
    grp TEXT NOT NULL, topic TEXT NOT NULL, partition INTEGER NOT NULL,
    next_offset INTEGER NOT NULL,
    PRIMARY KEY (grp, topic, partition)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS members (
    grp TEXT NOT NULL, member TEXT NOT NULL, topics TEXT NOT NULL, heartbeat REAL NOT NULL,
    PRIMARY KEY (grp, member)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS leases (
    grp TEXT NOT NULL, topic TEXT NOT NULL, partition INTEGER NOT NULL,
    owner TEXT NOT NULL, expires_at REAL NOT NULL,
    PRIMARY KEY (grp, topic, partition)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS generations (
    grp TEXT PRIMARY KEY, generation INTEGER NOT NULL) WITHOUT ROWID;
"""

INSERT_RECORD = (
    "INSERT INTO records (topic, partition, offset, key, value, headers, ts, pos)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)
SELECT_RECORDS = (
    "SELECT offset, key, value, headers, ts FROM records"
    " WHERE topic = ? AND partition = ? AND offset >= ? ORDER BY offset LIMIT ?"
)


@contextlib.contextmanager
def write_transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """``BEGIN IMMEDIATE`` ... ``COMMIT``: the write lock is taken before anything is read,
    so a read-then-write cannot be invalidated by another process (no SQLITE_BUSY upgrade)."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def open_log_file(path: str, url: str, synchronous: str) -> sqlite3.Connection:
    """Open (creating if needed) the log file, or say in one line why it cannot be."""
    if path != ":memory:":
        directory = os.path.dirname(os.path.abspath(path))
        try:
            os.makedirs(directory, exist_ok=True)
        except OSError as exc:
            raise BrokerUnavailable(
                f"{url}: cannot create directory {directory}: {exc.strerror or exc}"
            ) from None
    try:
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
        conn.execute("PRAGMA busy_timeout=30000")
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={synchronous}")
        with write_transaction(conn):
            # Not executescript: it would commit the transaction it runs in.
            for statement in SCHEMA.split(";"):
                if statement.strip():
                    conn.execute(statement)
    except sqlite3.Error as exc:
        raise BrokerUnavailable(f"{url}: cannot open the SQLite log {path}: {exc}") from None
    return conn


def first_offset_at_least(
    conn: sqlite3.Connection, topic: str, partition: int, column: str, threshold: float
) -> int:
    """The first offset whose ``ts`` or ``pos`` is >= ``threshold`` (the head if none)."""
    # Both columns only grow along a partition, so a binary search over index lookups finds
    # the boundary in O(log n) reads, with no extra index to slow every insert.
    if column not in ("ts", "pos"):
        raise ValueError(column)
    probe = (
        f"SELECT offset, {column} FROM records WHERE topic = ? AND partition = ?"
        " AND offset >= ? ORDER BY offset LIMIT 1"
    )
    row = conn.execute(
        "SELECT next_offset FROM heads WHERE topic = ? AND partition = ?", (topic, partition)
    ).fetchone()
    hi = int(row[0]) if row else 0
    first = conn.execute(probe, (topic, partition, 0)).fetchone()
    lo = hi if first is None else int(first[0])
    while lo < hi:
        mid = (lo + hi) // 2
        found = conn.execute(probe, (topic, partition, mid)).fetchone()
        if found is None or found[1] >= threshold:
            hi = mid
        else:
            lo = int(found[0]) + 1
    return lo


def delete_expired(
    conn: sqlite3.Connection, max_age_ms: int | None, max_bytes: int | None, now: float
) -> int:
    """Apply retention (per-topic settings first, else these defaults); returns the count."""
    deleted = 0
    rows = conn.execute(
        "SELECT t.name, h.partition, h.bytes, coalesce(t.retention_ms, ?),"
        " coalesce(t.retention_bytes, ?) FROM topics t JOIN heads h ON h.topic = t.name",
        (max_age_ms, max_bytes),
    ).fetchall()
    for topic, part, total, age_ms, size in rows:
        if age_ms is None and size is None:
            continue
        with write_transaction(conn):  # one partition at a time: publishers wait little
            keep_from = 0
            if age_ms is not None:
                keep_from = first_offset_at_least(conn, topic, part, "ts", now - age_ms / 1000)
            if size is not None:
                # Keep the records that start within the partition's last `size` bytes.
                keep_from = max(
                    keep_from, first_offset_at_least(conn, topic, part, "pos", total - size)
                )
            deleted += conn.execute(
                "DELETE FROM records WHERE topic = ? AND partition = ? AND offset < ?",
                (topic, part, keep_from),
            ).rowcount
    return deleted
