"""The embedded durable log: partitioned topics and consumer groups in one SQLite file.

Any number of OS processes may open the same file. SQLite's WAL lets readers run while
one writer commits, ``BEGIN IMMEDIATE`` takes the write lock before reading what a write
depends on (the partition heads), and a busy timeout queues the writers of several
processes instead of failing them. As in :mod:`tidings.store.sqlite`, the calls are
synchronous under async signatures: a local transaction costs microseconds, less than a
hop to a thread would, and no ``await`` ever happens inside a transaction.

The tables and retention live in :mod:`.storage`, consumer groups (membership,
leases, fetch, ack) in :mod:`.groups`.

URL options (they override the keyword arguments): ``session_timeout``,
``heartbeat_interval``, ``poll_interval_max`` (seconds), ``retention_ms``,
``retention_bytes`` (per partition), ``retention_check_interval`` (seconds),
``max_record_bytes``, ``partitions`` (of auto-created topics) and ``synchronous``
(``normal``: survives a killed process; ``full``: also survives a power cut), e.g.
``sqlite:///./log.db?session_timeout=2&retention_ms=604800000``.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import time
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

from tidings.records import OutgoingRecord, Record
from tidings.transport.contract import (
    DEFAULT_MAX_RECORD_BYTES,
    DEFAULT_PARTITIONS,
    TopicInfo,
    Transport,
)
from tidings.transport.errors import InvalidBrokerURL, TransportError
from tidings.transport.membership import Heartbeat
from tidings.transport.options import check_heartbeat, url_options
from tidings.transport.placement import partition_for
from tidings.transport.sqlite.groups import SQLiteSubscription
from tidings.transport.sqlite.storage import (
    INSERT_RECORD,
    SELECT_RECORDS,
    delete_expired,
    first_offset_at_least,
    open_log_file,
    write_transaction,
)

logger = logging.getLogger(__name__)

_OPTIONS = {
    "session_timeout": float,
    "heartbeat_interval": float,
    "poll_interval_max": float,
    "retention_ms": int,
    "retention_bytes": int,
    "retention_check_interval": float,
    "max_record_bytes": int,
    "partitions": int,
    "synchronous": str,
}


class SQLiteLog(Transport):
    """The embedded log; see the module docstring. ``sqlite:///path/to/log.db``."""

    def __init__(
        self,
        path: str,
        url: str = "",
        *,
        session_timeout: float = 6.0,
        heartbeat_interval: float = 1.0,
        poll_interval_max: float = 0.005,
        retention_ms: int | None = None,
        retention_bytes: int | None = None,
        retention_check_interval: float = 5.0,
        max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES,
        partitions: int = DEFAULT_PARTITIONS,
        synchronous: str = "normal",
    ) -> None:
        options = url_options(url, _OPTIONS) if url else {}
        query = urlsplit(url).query if url else ""
        if query and path.endswith("?" + query):
            path = path[: -len(query) - 1]  # tidings.urls.sqlite_path keeps the query
        self.path = path
        self.url = url or f"sqlite:///{path}"
        self.session_timeout = float(options.get("session_timeout", session_timeout))
        self.heartbeat_interval = float(options.get("heartbeat_interval", heartbeat_interval))
        self.poll_interval_max = float(options.get("poll_interval_max", poll_interval_max))
        self.retention_ms: int | None = options.get("retention_ms", retention_ms)
        self.retention_bytes: int | None = options.get("retention_bytes", retention_bytes)
        self.retention_check_interval = float(
            options.get("retention_check_interval", retention_check_interval)
        )
        self.max_record_bytes = int(options.get("max_record_bytes", max_record_bytes))
        self.default_partitions = int(options.get("partitions", partitions))
        self.synchronous = str(options.get("synchronous", synchronous)).upper()
        if self.synchronous not in ("OFF", "NORMAL", "FULL", "EXTRA"):
            raise InvalidBrokerURL(f"{self.url!r}: synchronous must be normal or full")
        check_heartbeat(self.url, self.heartbeat_interval, self.session_timeout)
        self._conn: sqlite3.Connection | None = None
        self._partitions: dict[str, int] = {}  # a topic's partition count never changes
        self._spread: dict[str, int] = {}  # round-robin counters for keyless records
        self._heartbeat: Heartbeat[SQLiteSubscription] = Heartbeat(
            self.heartbeat_interval, self._beat
        )
        self._next_retention = 0.0

    # -- connection -------------------------------------------------------------------

    async def connect(self) -> None:
        if self._conn is None:
            self._conn = open_log_file(self.path, self.url, self.synchronous)

    @property
    def conn(self) -> sqlite3.Connection:
        if self._conn is None:
            raise TransportError(f"{self.url}: the SQLite log is not connected (call connect())")
        return self._conn

    async def close(self) -> None:
        for sub in list(self._heartbeat.members):
            await sub.close()
        await self._heartbeat.stop()
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    # -- topics and publishing --------------------------------------------------------

    async def create_topic(self, name: str, partitions: int | None = None) -> None:
        self._ensure_topics([name], partitions)

    def _ensure_topics(self, names: Sequence[str], partitions: int | None = None) -> None:
        """Create the topics that do not exist yet and learn every one's partition count."""
        unknown = sorted(set(names) - self._partitions.keys())
        if not unknown:
            return
        counts = {}
        with write_transaction(self.conn) as conn:
            for name in unknown:
                conn.execute(
                    "INSERT OR IGNORE INTO topics (name, partitions) VALUES (?, ?)",
                    (name, partitions or self.default_partitions),
                )
                (counts[name],) = conn.execute(
                    "SELECT partitions FROM topics WHERE name = ?", (name,)
                ).fetchone()
                conn.executemany(
                    "INSERT OR IGNORE INTO heads (topic, partition, next_offset, bytes, last_ts)"
                    " VALUES (?, ?, 0, 0, 0)",
                    [(name, p) for p in range(counts[name])],
                )
        # Cached only once committed; a topic's partition count never changes.
        self._partitions.update(counts)

    def check_size(self, records: Sequence[OutgoingRecord]) -> None:
        # The base rule, without summing the (usually empty) headers of every record.
        limit = self.max_record_bytes
        for record in records:
            if len(record.value) > limit or (
                record.headers
                and len(record.value) + sum(map(len, record.headers.keys()))
                + sum(map(len, record.headers.values())) > limit
            ):  # fmt: skip
                super().check_size([record])

    async def publish(self, records: Sequence[OutgoingRecord]) -> None:
        if not records:
            return
        self.check_size(records)
        conn = self.conn
        self._ensure_topics([record.topic for record in records])
        # Partitions and headers are worked out before taking the write lock, which the
        # publishers of every other process queue behind.
        by_partition: dict[tuple[str, int], list[tuple[str | None, bytes, str | None]]] = {}
        for record in records:
            topic, key = record.topic, record.key
            count = self._partitions[topic]
            if key is None:
                spread = self._spread[topic] = self._spread.get(topic, -1) + 1
                part = spread % count
            else:
                part = partition_for(key, count)
            # Most records carry no headers; NULL saves a json.dumps and a parse per record.
            headers = json.dumps(dict(record.headers)) if record.headers else None
            by_partition.setdefault((topic, part), []).append((key, record.value, headers))
        rows: list[tuple[Any, ...]] = []
        with write_transaction(conn):
            now = time.time()
            for (topic, part), batch in by_partition.items():
                size = sum(len(value) for _, value, _ in batch)
                # Reserve the offsets in the statement that reads them. max() keeps a
                # partition's timestamps growing even if this host's clock steps back.
                ((offset, pos, ts),) = conn.execute(
                    "UPDATE heads SET next_offset = next_offset + ?, bytes = bytes + ?,"
                    " last_ts = max(last_ts, ?) WHERE topic = ? AND partition = ?"
                    " RETURNING next_offset - ?, bytes - ?, last_ts",
                    (len(batch), size, now, topic, part, len(batch), size),
                ).fetchall()
                for key, value, headers in batch:
                    rows.append((topic, part, offset, key, value, headers, ts, pos))
                    offset += 1
                    pos += len(value)
            conn.executemany(INSERT_RECORD, rows)
        for sub in self._heartbeat.members:
            sub.wake(by_partition)
        if time.monotonic() >= self._next_retention:
            # Also when the log has no default: a topic may have its own retention.
            await self.enforce_retention()

    # -- retention --------------------------------------------------------------------

    async def set_retention(
        self, topic: str, *, retention_ms: int | None = None, retention_bytes: int | None = None
    ) -> None:
        """Override the log-wide retention for one topic (``None`` keeps the log default)."""
        self._ensure_topics([topic])
        with write_transaction(self.conn) as conn:
            conn.execute(
                "UPDATE topics SET retention_ms = ?, retention_bytes = ? WHERE name = ?",
                (retention_ms, retention_bytes, topic),
            )

    async def enforce_retention(self) -> int:
        """Delete records older than ``retention_ms`` or beyond ``retention_bytes`` per
        partition, whether or not a group has read them (as Kafka does); returns how many.

        Runs by itself after a publish at most every ``retention_check_interval`` seconds.
        """
        self._next_retention = time.monotonic() + self.retention_check_interval
        return delete_expired(self.conn, self.retention_ms, self.retention_bytes, time.time())

    async def offset_for_time(self, topic: str, partition: int, timestamp: float) -> int:
        """The first offset stored at or after ``timestamp`` (seconds since the epoch)."""
        return first_offset_at_least(self.conn, topic, partition, "ts", timestamp)

    async def seek_to_time(self, group: str, topic: str, timestamp: float) -> None:
        """Point ``group`` at the first record of each partition stored at or after
        ``timestamp``, to replay from then. Do it while the group is stopped."""
        self._ensure_topics([topic])
        for part in range(self._partitions[topic]):
            await self.seek(group, topic, part, await self.offset_for_time(topic, part, timestamp))

    # -- consumer groups --------------------------------------------------------------

    async def subscribe(
        self, group: str, topics: Sequence[str], *, from_beginning: bool = True
    ) -> SQLiteSubscription:
        self._ensure_topics(topics)
        if not from_beginning:
            # Pin "the end" now: a member that dies before its first ack must not let the
            # group skip what was published in between.
            with write_transaction(self.conn) as conn:
                conn.executemany(
                    "INSERT OR IGNORE INTO group_offsets (grp, topic, partition, next_offset)"
                    " SELECT ?, topic, partition, next_offset FROM heads WHERE topic = ?",
                    [(group, topic) for topic in topics],
                )
        sub = SQLiteSubscription(
            self.conn, group, tuple(topics), url=self.url,
            session_timeout=self.session_timeout, heartbeat_interval=self.heartbeat_interval,
            poll_interval_max=self.poll_interval_max, on_close=self._heartbeat.leave,
        )  # fmt: skip
        self._heartbeat.join(sub)
        return sub

    async def _beat(self, members: Sequence[SQLiteSubscription]) -> None:
        # Renews leases while a handler awaits something slow between two fetches; see
        # tidings.transport.membership for why fetch() alone is not enough.
        try:
            with write_transaction(self.conn):
                for sub in members:
                    sub.renew(time.time())
        except (sqlite3.Error, TransportError) as exc:  # the next beat tries again
            logger.warning("%s: heartbeat failed: %s", self.url, exc)

    # -- inspection and replay --------------------------------------------------------

    async def topics(self) -> list[TopicInfo]:
        counts: dict[str, int] = {}
        ends: dict[str, dict[int, int]] = {}
        for name, count, part, end in self.conn.execute(
            "SELECT t.name, t.partitions, h.partition, h.next_offset"
            " FROM topics t JOIN heads h ON h.topic = t.name ORDER BY t.name, h.partition"
        ).fetchall():
            counts[name] = count
            ends.setdefault(name, {})[part] = end
        return [TopicInfo(name, counts[name], ends[name]) for name in counts]

    async def committed(self, group: str) -> dict[tuple[str, int], int]:
        return {
            (topic, part): offset
            for topic, part, offset in self.conn.execute(
                "SELECT topic, partition, next_offset FROM group_offsets WHERE grp = ?", (group,)
            ).fetchall()
        }

    async def groups(self) -> list[str]:
        rows = self.conn.execute("SELECT DISTINCT grp FROM group_offsets ORDER BY grp").fetchall()
        return [row[0] for row in rows]

    async def read(self, topic: str, partition: int, offset: int, limit: int) -> list[Record]:
        return self.read_records(topic, partition, offset, limit)

    def read_records(self, topic: str, partition: int, offset: int, limit: int) -> list[Record]:
        rows = self.conn.execute(SELECT_RECORDS, (topic, partition, offset, limit)).fetchall()
        return [
            Record(topic, partition, off, key, value, json.loads(headers) if headers else {}, ts)
            for off, key, value, headers, ts in rows
        ]

    async def seek(self, group: str, topic: str, partition: int, offset: int) -> None:
        self.conn.execute(
            "INSERT INTO group_offsets (grp, topic, partition, next_offset) VALUES (?, ?, ?, ?)"
            " ON CONFLICT (grp, topic, partition) DO UPDATE SET next_offset = excluded.next_offset",
            (group, topic, partition, offset),
        )
