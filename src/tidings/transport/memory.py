"""The in-memory transport: the log in one process, deterministic, with fault injection.

For unit tests. Transports opened with the same URL in one process share one broker
(``memory://shop`` and ``memory://shop`` see the same topics; ``memory://other`` does
not). Nothing runs in the background, so a test decides every interleaving.

Faults (:class:`Faults`) imitate what a real broker does to a consumer:

* ``duplicate`` - after records are acked, deliver each of them once more (a redelivery
  after a rebalance, or a producer retry that the broker did not dedupe);
* ``delay`` - a published record becomes visible to consumers only after this many seconds;
* ``crash_before_ack`` - drop the next N acks and rewind the partition to its committed
  offset, as if the consumer process died after handling but before committing.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import time
from collections.abc import Sequence
from urllib.parse import urlsplit

from tidings.records import OutgoingRecord, Record
from tidings.transport.contract import (
    DEFAULT_PARTITIONS,
    Delivery,
    Subscription,
    TopicInfo,
    Transport,
)
from tidings.transport.errors import NotAssigned
from tidings.transport.placement import partition_for


@dataclasses.dataclass
class Faults:
    duplicate: bool = False
    delay: float = 0.0
    crash_before_ack: int = 0


@dataclasses.dataclass
class _Group:
    members: list[MemorySubscription] = dataclasses.field(default_factory=list)
    committed: dict[tuple[str, int], int] = dataclasses.field(default_factory=dict)


class _Broker:
    def __init__(self) -> None:
        self.topics: dict[str, list[list[Record]]] = {}
        self.groups: dict[str, _Group] = {}
        # Futures of fetches waiting for records; a plain set rather than a Condition so
        # that one broker can outlive the event loop of a test.
        self.waiters: set[asyncio.Future[None]] = set()
        self.faults = Faults()
        self.counter = itertools.count()

    def wake(self) -> None:
        for waiter in self.waiters:
            if not waiter.done():
                waiter.set_result(None)
        self.waiters.clear()

    def partitions(self, topic: str) -> list[list[Record]]:
        return self.topics.setdefault(topic, [[] for _ in range(DEFAULT_PARTITIONS)])


_BROKERS: dict[str, _Broker] = {}


class MemoryTransport(Transport):
    """In-process transport; see the module docstring. ``supports_processes`` is False."""

    supports_processes = False

    def __init__(self, url: str = "memory://") -> None:
        self.url = url
        name = urlsplit(url).netloc
        self._broker = _BROKERS.setdefault(name, _Broker())

    @property
    def faults(self) -> Faults:
        return self._broker.faults

    async def close(self) -> None:
        return None

    async def create_topic(self, name: str, partitions: int = DEFAULT_PARTITIONS) -> None:
        if name not in self._broker.topics:
            self._broker.topics[name] = [[] for _ in range(partitions)]

    async def publish(self, records: Sequence[OutgoingRecord]) -> None:
        self.check_size(records)
        visible_at = time.time() + self._broker.faults.delay
        for out in records:
            parts = self._broker.partitions(out.topic)
            p = partition_for(out.key, len(parts), next(self._broker.counter))
            parts[p].append(
                Record(
                    out.topic, p, len(parts[p]), out.key, out.value, dict(out.headers), visible_at
                )
            )
        self._broker.wake()

    async def subscribe(
        self, group: str, topics: Sequence[str], *, from_beginning: bool = True
    ) -> Subscription:
        for topic in topics:
            self._broker.partitions(topic)
        state = self._broker.groups.setdefault(group, _Group())
        if not from_beginning:
            for topic in topics:
                for p, records in enumerate(self._broker.topics[topic]):
                    state.committed.setdefault((topic, p), len(records))
        sub = MemorySubscription(self._broker, state, group, tuple(topics))
        state.members.append(sub)
        return sub

    async def topics(self) -> list[TopicInfo]:
        return [
            TopicInfo(name, len(parts), {p: len(r) for p, r in enumerate(parts)})
            for name, parts in sorted(self._broker.topics.items())
        ]

    async def committed(self, group: str) -> dict[tuple[str, int], int]:
        state = self._broker.groups.get(group)
        return dict(state.committed) if state else {}

    async def groups(self) -> list[str]:
        return sorted(self._broker.groups)

    async def read(self, topic: str, partition: int, offset: int, limit: int) -> list[Record]:
        return self._broker.partitions(topic)[partition][offset : offset + limit]

    async def seek(self, group: str, topic: str, partition: int, offset: int) -> None:
        state = self._broker.groups.setdefault(group, _Group())
        state.committed[(topic, partition)] = offset
        for member in state.members:
            member.positions.pop((topic, partition), None)


class MemorySubscription(Subscription):
    def __init__(self, broker: _Broker, state: _Group, group: str, topics: tuple[str, ...]):
        self._broker = broker
        self._state = state
        self.group = group
        self.topics = topics
        self.positions: dict[tuple[str, int], int] = {}
        self._paused_until: dict[tuple[str, int], float] = {}
        self._attempts: dict[tuple[str, int, int], int] = {}
        self._duplicates: list[Record] = []
        self._assigned: frozenset[tuple[str, int]] = frozenset()
        self._closed = False

    def _rebalance(self) -> None:
        # Round robin over the sorted partitions among the live members, in join order.
        members = self._state.members
        me = members.index(self)
        pairs = sorted((t, p) for t in self.topics for p in range(len(self._broker.partitions(t))))
        assigned = frozenset(pair for i, pair in enumerate(pairs) if i % len(members) == me)
        for pair in self._assigned - assigned:
            self.positions.pop(pair, None)
        self._assigned = assigned

    def assignment(self) -> frozenset[tuple[str, int]]:
        return self._assigned

    def _take(self, max_records: int) -> list[Delivery]:
        out: list[Delivery] = []
        now = time.time()
        while self._duplicates and len(out) < max_records:
            out.append(self._deliver(self._duplicates.pop(0)))
        for pair in sorted(self._assigned):
            if self._paused_until.get(pair, 0.0) > now:
                continue
            records = self._broker.partitions(pair[0])[pair[1]]
            pos = self.positions.setdefault(pair, self._state.committed.get(pair, 0))
            while pos < len(records) and len(out) < max_records and records[pos].timestamp <= now:
                out.append(self._deliver(records[pos]))
                pos += 1
            self.positions[pair] = pos
        return out

    def _deliver(self, record: Record) -> Delivery:
        key = (record.topic, record.partition, record.offset)
        self._attempts[key] = self._attempts.get(key, 0) + 1
        return Delivery(self, record, self._attempts[key])

    async def fetch(self, max_records: int = 100, timeout: float = 0.5) -> list[Delivery]:
        if self._closed:
            raise RuntimeError("subscription is closed")
        self._rebalance()
        out = self._take(max_records)
        if out or timeout <= 0:
            return out
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._broker.waiters.add(waiter)
        try:
            await asyncio.wait_for(waiter, timeout)
        except TimeoutError:
            pass
        finally:
            self._broker.waiters.discard(waiter)
        self._rebalance()
        return self._take(max_records)

    async def ack(self, delivery: Delivery) -> None:
        record = delivery.record
        pair = (record.topic, record.partition)
        if pair not in self._assigned:
            raise NotAssigned(f"{pair} is not assigned to this member of {self.group!r}")
        faults = self._broker.faults
        if faults.crash_before_ack > 0:
            faults.crash_before_ack -= 1
            self.positions.pop(pair, None)  # resume from the committed offset, as on restart
            return
        if record.offset >= self.positions.get(pair, record.offset + 1):
            return  # a nack rewound this partition before it: that record comes first
        current = self._state.committed.get(pair, 0)
        self._state.committed[pair] = max(current, record.offset + 1)
        if faults.duplicate:  # every record this (cumulative) ack covers comes once more
            for covered in self._broker.partitions(record.topic)[record.partition][
                current : record.offset + 1
            ]:
                if self._attempts.get((covered.topic, covered.partition, covered.offset), 0) < 2:
                    self._duplicates.append(covered)

    async def nack(self, delivery: Delivery, delay: float = 0.0) -> None:
        record = delivery.record
        pair = (record.topic, record.partition)
        self.positions[pair] = record.offset
        self._paused_until[pair] = time.time() + delay

    async def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._assigned = frozenset()
            self._state.members.remove(self)
            self._broker.wake()
