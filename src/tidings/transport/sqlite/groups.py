"""Consumer groups of the SQLite log: membership, partition leases, fetch, ack and nack.

**Membership.** Each subscription is a member with a unique id and a heartbeat row. A
member whose heartbeat is older than ``session_timeout`` is dead: whichever member
notices first deletes it with its leases and bumps the group's *generation*. Every member
reads the generation on each poll (one primary-key read), so joins, leaves and deaths
are acted on within a poll interval rather than a heartbeat interval.

**Assignment** needs no leader and no join barrier: each member computes it alone from the
sorted (topic, partition) pairs and the sorted live member ids (:func:`assign`, a
balanced round robin), so every member that sees the same members agrees. While views
differ for a moment, the *lease* table keeps a partition to one reader: a member reads a
partition only while it holds its lease, and takes a lease only when it is free, expired
or already its own. A member gives up partitions that are no longer its own on its next
fetch (the contract: assignment changes only inside ``fetch``); the new owner, which
retries the partitions it wants but cannot get yet, picks them up on its next poll.

**Heartbeats** happen in two places. ``fetch`` syncs (heartbeat, expiry of the dead,
rebalance, lease renewal) when a beat is due or the generation moved. A light task on the
transport also renews the member and its leases every ``heartbeat_interval``, and never
reassigns: a handler that awaits something slow (an HTTP call, a retry backoff) for
longer than ``session_timeout`` keeps its partitions and its ack still counts. When the
process dies or its event loop is blocked the task stops too, and the partitions move,
which is what a session timeout is for.

**Fencing.** An ack commits, in one statement, only if the lease is still this member's:
a member presumed dead gets :class:`NotAssigned` instead of overwriting the progress of
the member that took its partitions.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import sqlite3
import time
import uuid
from collections.abc import Collection
from typing import TYPE_CHECKING

from tidings.records import Record
from tidings.transport.contract import Delivery, Subscription
from tidings.transport.errors import NotAssigned, TransportError
from tidings.transport.placement import assign
from tidings.transport.sqlite.storage import SELECT_RECORDS, write_transaction

if TYPE_CHECKING:
    from tidings.transport.sqlite.log import SQLiteLog

TopicPartition = tuple[str, int]

_MIN_NAP = 0.001  # first idle sleep of a fetch; doubles up to poll_interval_max


def _bump_generation(conn: sqlite3.Connection, group: str) -> None:
    conn.execute(
        "INSERT INTO generations (grp, generation) VALUES (?, 1)"
        " ON CONFLICT (grp) DO UPDATE SET generation = generation + 1",
        (group,),
    )


class SQLiteSubscription(Subscription):
    """One member of a consumer group on the SQLite log; see the module docstring."""

    def __init__(self, log: SQLiteLog, group: str, topics: tuple[str, ...]) -> None:
        self._log = log
        self.group = group
        self.topics = topics
        self.member = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self._held: frozenset[TopicPartition] = frozenset()
        self._wanted: frozenset[TopicPartition] = frozenset()
        self._position: dict[TopicPartition, int] = {}
        # Deliveries handed out and not yet settled, by identity: an ack of a delivery
        # that a nack rewound past must not commit beyond the nacked record.
        self._inflight: dict[TopicPartition, dict[int, Delivery]] = {}
        self._attempts: dict[TopicPartition, dict[int, int]] = {}
        self._paused_until: dict[TopicPartition, float] = {}
        self._generation: int | None = None
        self._next_sync = 0.0
        self._next_acquire = 0.0
        self._wake = asyncio.Event()
        self._nap = _MIN_NAP
        self._rotation = 0
        self._closed = False
        self._heads_sql = (
            "SELECT topic, partition, next_offset FROM heads WHERE topic IN"
            f" ({', '.join('?' * len(topics))})"
        )

    def assignment(self) -> frozenset[TopicPartition]:
        return self._held

    def wake(self, touched: Collection[TopicPartition]) -> None:
        """Called by the transport after a local publish: skip the rest of the idle nap."""
        if any(tp in self._held for tp in touched):
            self._wake.set()

    # -- membership -------------------------------------------------------------------

    def renew(self, now: float) -> None:
        """Heartbeat and extend this member's leases; the caller holds a write transaction."""
        if self._closed:
            return
        conn = self._log.conn
        alive = conn.execute(
            "UPDATE members SET heartbeat = ? WHERE grp = ? AND member = ?",
            (now, self.group, self.member),
        ).rowcount
        if alive:
            conn.execute(
                "UPDATE leases SET expires_at = ? WHERE grp = ? AND owner = ?",
                (now + self._log.session_timeout, self.group, self.member),
            )
        else:
            self._next_sync = 0.0  # the others presumed us dead: rejoin on the next fetch

    def _maybe_sync(self) -> None:
        now = time.monotonic()
        waiting = not self._wanted <= self._held  # for partitions another member still holds
        due = now >= self._next_sync or (waiting and now >= self._next_acquire)
        if not due:
            row = self._log.conn.execute(
                "SELECT generation FROM generations WHERE grp = ?", (self.group,)
            ).fetchone()
            due = (row[0] if row else 0) != self._generation
        if due:
            self._sync(time.time())

    def _sync(self, now: float) -> None:
        log, group, me = self._log, self.group, self.member
        with write_transaction(log.conn) as conn:
            joined = not conn.execute(
                "UPDATE members SET heartbeat = ? WHERE grp = ? AND member = ?", (now, group, me)
            ).rowcount
            if joined:
                conn.execute(
                    "INSERT INTO members (grp, member, topics, heartbeat) VALUES (?, ?, ?, ?)",
                    (group, me, json.dumps(self.topics), now),
                )
            dead = conn.execute(
                "DELETE FROM members WHERE grp = ? AND heartbeat < ?",
                (group, now - log.session_timeout),
            ).rowcount
            if joined or dead:
                conn.execute(
                    "DELETE FROM leases WHERE grp = ?"
                    " AND owner NOT IN (SELECT member FROM members WHERE grp = ?)",
                    (group, group),
                )
                _bump_generation(conn, group)
            (generation,) = conn.execute(
                "SELECT generation FROM generations WHERE grp = ?", (group,)
            ).fetchone()
            members = [
                (member, json.loads(topics))
                for member, topics in conn.execute(
                    "SELECT member, topics FROM members WHERE grp = ?", (group,)
                ).fetchall()
            ]
            wanted_topics = sorted({topic for _, topics in members for topic in topics})
            # Every member created its topics when it subscribed.
            counts = dict(
                conn.execute(
                    "SELECT name, partitions FROM topics WHERE name IN"
                    f" ({', '.join('?' * len(wanted_topics))})",
                    wanted_topics,
                ).fetchall()
            )
            wanted = frozenset(assign(members, counts).get(me, ()))
            owned_sql = "SELECT topic, partition FROM leases WHERE grp = ? AND owner = ?"
            before = {(t, p) for t, p in conn.execute(owned_sql, (group, me)).fetchall()}
            conn.executemany(
                "INSERT INTO leases (grp, topic, partition, owner, expires_at)"
                " VALUES (?, ?, ?, ?, ?) ON CONFLICT (grp, topic, partition) DO UPDATE SET"
                " owner = excluded.owner, expires_at = excluded.expires_at"
                " WHERE leases.owner = excluded.owner OR leases.expires_at < ?",
                [(group, t, p, me, now + log.session_timeout, now) for t, p in sorted(wanted)],
            )
            owned = {(t, p) for t, p in conn.execute(owned_sql, (group, me)).fetchall()}
            conn.executemany(
                "DELETE FROM leases WHERE grp = ? AND topic = ? AND partition = ? AND owner = ?",
                [(group, t, p, me) for t, p in owned - wanted],
            )
            held = frozenset(owned & wanted)
            # A lease that was not ours a moment ago may have been read by someone else
            # in between: start it again from what the group committed.
            gained = {tp for tp in held if tp not in before or tp not in self._held}
            committed = {
                tp: conn.execute(
                    "SELECT next_offset FROM group_offsets"
                    " WHERE grp = ? AND topic = ? AND partition = ?",
                    (group, *tp),
                ).fetchone()
                for tp in gained
            }
        for tp in (self._held - held) | gained:
            self._forget_partition(tp)
        for tp, row in committed.items():
            self._position[tp] = row[0] if row else 0
        self._held, self._wanted, self._generation = held, wanted, generation
        mono = time.monotonic()
        self._next_sync = mono + log.heartbeat_interval
        self._next_acquire = mono + max(log.poll_interval_max, 0.05)

    def _forget_partition(self, tp: TopicPartition) -> None:
        self._position.pop(tp, None)
        self._inflight.pop(tp, None)
        self._attempts.pop(tp, None)
        self._paused_until.pop(tp, None)

    # -- consuming --------------------------------------------------------------------

    async def fetch(
        self,
        max_records: int = 100,
        timeout: float = 0.5,
    ) -> list[Delivery]:
        if self._closed:
            raise TransportError(f"{self._log.url}: fetch on a closed subscription")
        deadline = time.monotonic() + max(timeout, 0.0)
        while True:
            self._wake.clear()  # before reading, so a publish during the read still wakes us
            self._maybe_sync()
            out = self._take(max_records)
            now = time.monotonic()
            if out:
                self._nap = _MIN_NAP  # records come in bursts: look again at once next time
                return out
            if now >= deadline:
                return []
            nap = min(self._nap, deadline - now)
            paused = [t for tp, t in self._paused_until.items() if tp in self._held]
            if paused:
                nap = max(0.0, min(nap, min(paused) - now))
            # Adaptive polling: an idle log costs a couple of reads every poll_interval_max,
            # a busy one is read back to back.
            self._nap = min(self._nap * 2, self._log.poll_interval_max)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(nap):
                    await self._wake.wait()

    def _take(self, max_records: int) -> list[Delivery]:
        if not self._held:
            return []
        conn = self._log.conn
        heads = {(t, p): n for t, p, n in conn.execute(self._heads_sql, self.topics).fetchall()}
        held = sorted(self._held)
        start = self._rotation % len(held)
        self._rotation += 1  # so that one busy partition cannot starve the others
        now = time.monotonic()
        out: list[Delivery] = []
        for tp in held[start:] + held[:start]:
            position = self._position.get(tp, 0)
            if len(out) >= max_records or heads.get(tp, 0) <= position:
                continue
            until = self._paused_until.get(tp)
            if until is not None:
                if until > now:
                    continue
                del self._paused_until[tp]
            rows = conn.execute(SELECT_RECORDS, (*tp, position, max_records - len(out))).fetchall()
            issued = self._inflight.setdefault(tp, {})
            attempts = self._attempts.setdefault(tp, {})
            for offset, key, value, headers, ts in rows:
                attempt = attempts[offset] = attempts.get(offset, 0) + 1
                record = Record(
                    tp[0], tp[1], offset, key, value, json.loads(headers) if headers else {}, ts
                )
                delivery = issued[offset] = Delivery(self, record, attempt)
                out.append(delivery)
            # Nothing left at or after position means retention removed it: skip to the head.
            self._position[tp] = rows[-1][0] + 1 if rows else heads[tp]
        return out

    def _settle(self, delivery: Delivery) -> dict[int, Delivery] | None:
        record = delivery.record
        tp = (record.topic, record.partition)
        if self._closed or tp not in self._held:
            raise NotAssigned(
                f"{self._log.url}: {record.topic}[{record.partition}] is not assigned to "
                f"this member of group {self.group!r} (any more)"
            )
        issued = self._inflight.get(tp, {})
        # Not ours to settle any more: a nack rewound past it, and it will come again.
        return issued if issued.get(record.offset) is delivery else None

    async def ack(self, delivery: Delivery) -> None:
        issued = self._settle(delivery)
        if issued is None:
            return
        record = delivery.record
        tp = (record.topic, record.partition)
        # One statement, so the lease check and the commit are atomic (a lone write
        # statement takes the write lock before it reads, like BEGIN IMMEDIATE).
        committed = self._log.conn.execute(
            "INSERT INTO group_offsets (grp, topic, partition, next_offset)"
            " SELECT ?, ?, ?, ? WHERE EXISTS (SELECT 1 FROM leases WHERE grp = ?"
            " AND topic = ? AND partition = ? AND owner = ?)"
            " ON CONFLICT (grp, topic, partition)"
            " DO UPDATE SET next_offset = max(next_offset, excluded.next_offset)",
            (self.group, *tp, record.offset + 1, self.group, *tp, self.member),
        ).rowcount
        if not committed:
            self._next_sync = 0.0
            raise NotAssigned(
                f"{self._log.url}: {record.topic}[{record.partition}] of group {self.group!r}"
                " was given to another member (this one missed its session timeout)"
            )
        # Cumulative: everything up to this offset is settled.
        for offset in [o for o in issued if o <= record.offset]:
            del issued[offset]
        attempts = self._attempts.get(tp, {})
        for offset in [o for o in attempts if o <= record.offset]:
            del attempts[offset]

    async def nack(self, delivery: Delivery, delay: float = 0.0) -> None:
        issued = self._settle(delivery)
        if issued is None:
            return
        record = delivery.record
        tp = (record.topic, record.partition)
        for offset in [o for o in issued if o >= record.offset]:
            del issued[offset]
        self._position[tp] = record.offset
        if delay > 0:
            self._paused_until[tp] = time.monotonic() + delay
        else:
            self._paused_until.pop(tp, None)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._log.forget(self)
        with write_transaction(self._log.conn) as conn:
            conn.execute(
                "DELETE FROM members WHERE grp = ? AND member = ?", (self.group, self.member)
            )
            conn.execute(
                "DELETE FROM leases WHERE grp = ? AND owner = ?", (self.group, self.member)
            )
            _bump_generation(conn, self.group)
        for tp in self._held:
            self._forget_partition(tp)
        self._held = self._wanted = frozenset()
