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
import json
import sqlite3
import time
from collections.abc import Callable, Collection

from tidings.records import Record
from tidings.transport.contract import Delivery, Subscription
from tidings.transport.errors import NotAssigned, TransportError
from tidings.transport.ledger import DeliveryLedger, check_held
from tidings.transport.loop import Backoff, fetch_loop
from tidings.transport.membership import member_id
from tidings.transport.placement import assign
from tidings.transport.sqlite.storage import SELECT_RECORDS, write_transaction

TopicPartition = tuple[str, int]


def _bump_generation(conn: sqlite3.Connection, group: str) -> None:
    conn.execute(
        "INSERT INTO generations (grp, generation) VALUES (?, 1)"
        " ON CONFLICT (grp) DO UPDATE SET generation = generation + 1",
        (group,),
    )


class SQLiteSubscription(Subscription):
    """One member of a consumer group on the SQLite log; see the module docstring."""

    def __init__(
        self,
        conn: sqlite3.Connection,
        group: str,
        topics: tuple[str, ...],
        *,
        url: str,
        session_timeout: float,
        heartbeat_interval: float,
        poll_interval_max: float,
        on_close: Callable[[SQLiteSubscription], None],
    ) -> None:
        self._conn = conn
        self.group = group
        self.topics = topics
        self.url = url
        self.member = member_id()
        self._session_timeout = session_timeout
        self._heartbeat_interval = heartbeat_interval
        self._poll_interval_max = poll_interval_max
        self._on_close = on_close
        self._held: frozenset[TopicPartition] = frozenset()
        self._wanted: frozenset[TopicPartition] = frozenset()
        self._position: dict[TopicPartition, int] = {}
        # Handed out and not settled yet: an ack of a delivery that a nack rewound past
        # must not commit beyond the nacked record.
        self._ledger = DeliveryLedger(self)
        self._generation: int | None = None
        self._next_sync = 0.0
        self._next_acquire = 0.0
        self._wake = asyncio.Event()
        self._backoff = Backoff(poll_interval_max)
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
        conn = self._conn
        alive = conn.execute(
            "UPDATE members SET heartbeat = ? WHERE grp = ? AND member = ?",
            (now, self.group, self.member),
        ).rowcount
        if alive:
            conn.execute(
                "UPDATE leases SET expires_at = ? WHERE grp = ? AND owner = ?",
                (now + self._session_timeout, self.group, self.member),
            )
        else:
            self._next_sync = 0.0  # the others presumed us dead: rejoin on the next fetch

    def _maybe_sync(self) -> None:
        now = time.monotonic()
        waiting = not self._wanted <= self._held  # for partitions another member still holds
        due = now >= self._next_sync or (waiting and now >= self._next_acquire)
        if not due:
            row = self._conn.execute(
                "SELECT generation FROM generations WHERE grp = ?", (self.group,)
            ).fetchone()
            due = (row[0] if row else 0) != self._generation
        if due:
            self._sync(time.time())

    def _sync(self, now: float) -> None:
        group, me = self.group, self.member
        with write_transaction(self._conn) as conn:
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
                (group, now - self._session_timeout),
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
                [(group, t, p, me, now + self._session_timeout, now) for t, p in sorted(wanted)],
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
        self._next_sync = mono + self._heartbeat_interval
        self._next_acquire = mono + max(self._poll_interval_max, 0.05)

    def _forget_partition(self, tp: TopicPartition) -> None:
        self._position.pop(tp, None)
        self._ledger.forget((tp,))

    # -- consuming --------------------------------------------------------------------

    async def fetch(self, max_records: int = 100, timeout: float = 0.5) -> list[Delivery]:
        if self._closed:
            raise TransportError(f"{self.url}: fetch on a closed subscription")

        async def look() -> list[Delivery]:
            self._maybe_sync()
            out = self._take(max_records)
            if out:
                self._backoff.reset()
            return out

        return await fetch_loop(timeout, self._wake, look, self._idle)

    def _idle(self, now: float) -> float:
        # Adaptive polling (see loop.Backoff), and no longer than a nack's pause.
        nap = self._backoff.next()
        resume = self._ledger.next_resume(self._held)
        return nap if resume is None else min(nap, resume - now)

    def _take(self, max_records: int) -> list[Delivery]:
        if not self._held:
            return []
        conn = self._conn
        heads = {(t, p): n for t, p, n in conn.execute(self._heads_sql, self.topics).fetchall()}
        held = sorted(self._held)
        start = self._rotation % len(held)
        self._rotation += 1  # so that one busy partition cannot starve the others
        now = time.monotonic()
        ledger = self._ledger
        out: list[Delivery] = []
        for tp in held[start:] + held[:start]:
            position = self._position.get(tp, 0)
            if len(out) >= max_records or heads.get(tp, 0) <= position:
                continue
            if not ledger.ready(tp, now):
                continue
            rows = conn.execute(SELECT_RECORDS, (*tp, position, max_records - len(out))).fetchall()
            topic, partition = tp
            out += ledger.issue_partition(tp, [
                Record(topic, partition, offset, key, value,
                       json.loads(headers) if headers else {}, ts)
                for offset, key, value, headers, ts in rows
            ])  # fmt: skip
            # Nothing left at or after position means retention removed it: skip to the head.
            self._position[tp] = rows[-1][0] + 1 if rows else heads[tp]
        return out

    async def ack(self, delivery: Delivery) -> None:
        tp = check_held(self.url, self.group, delivery, self._held, self._closed)
        if not self._ledger.ack(delivery):
            return  # a nack rewound past it: it comes again
        # One statement, so the lease check and the commit are atomic (a lone write
        # statement takes the write lock before it reads, like BEGIN IMMEDIATE).
        committed = self._conn.execute(
            "INSERT INTO group_offsets (grp, topic, partition, next_offset)"
            " SELECT ?, ?, ?, ? WHERE EXISTS (SELECT 1 FROM leases WHERE grp = ?"
            " AND topic = ? AND partition = ? AND owner = ?)"
            " ON CONFLICT (grp, topic, partition)"
            " DO UPDATE SET next_offset = max(next_offset, excluded.next_offset)",
            (self.group, *tp, delivery.record.offset + 1, self.group, *tp, self.member),
        ).rowcount
        if not committed:
            self._next_sync = 0.0
            raise NotAssigned(
                f"{self.url}: {tp[0]}[{tp[1]}] of group {self.group!r} was given to another"
                " member (this one missed its session timeout)"
            )

    async def nack(self, delivery: Delivery, delay: float = 0.0) -> None:
        tp = check_held(self.url, self.group, delivery, self._held, self._closed)
        if self._ledger.nack(delivery, delay):
            self._position[tp] = delivery.record.offset

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._on_close(self)
        with write_transaction(self._conn) as conn:
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
