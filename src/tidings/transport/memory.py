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
from collections.abc import Iterator, Sequence
from urllib.parse import urlsplit

from tidings.records import OutgoingRecord, Record
from tidings.transport.contract import (
    DEFAULT_PARTITIONS,
    Delivery,
    Subscription,
    TopicInfo,
    Transport,
)
from tidings.transport.ledger import DeliveryLedger, check_held
from tidings.transport.loop import fetch_loop
from tidings.transport.placement import assign, partition_for


@dataclasses.dataclass
class Faults:
    duplicate: bool = False
    delay: float = 0.0
    crash_before_ack: int = 0


@dataclasses.dataclass
class _Group:
    members: list[MemorySubscription] = dataclasses.field(default_factory=list)
    committed: dict[tuple[str, int], int] = dataclasses.field(default_factory=dict)
    joined: Iterator[int] = dataclasses.field(default_factory=itertools.count)


class _Broker:
    def __init__(self) -> None:
        self.topics: dict[str, list[list[Record]]] = {}
        self.groups: dict[str, _Group] = {}
        # The wake events of the subscriptions; plain events rather than a Condition so
        # that one broker can outlive the event loop of a test.
        self.listeners: set[asyncio.Event] = set()
        self.faults = Faults()
        self.counter = itertools.count()

    def wake(self) -> None:
        for listener in self.listeners:
            listener.set()

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

    async def create_topic(self, name: str, partitions: int | None = None) -> None:
        if name not in self._broker.topics:
            self._broker.topics[name] = [[] for _ in range(partitions or DEFAULT_PARTITIONS)]

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
        member = f"{next(state.joined):09d}"  # assign() then goes round robin in join order
        sub = MemorySubscription(self._broker, state, group, tuple(topics), member, self.url)
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
        partitions = self._broker.topics.get(topic, [])  # reading creates no topic
        if not 0 <= partition < len(partitions):
            return []
        return partitions[partition][offset : offset + limit]

    async def seek(self, group: str, topic: str, partition: int, offset: int) -> None:
        state = self._broker.groups.setdefault(group, _Group())
        state.committed[(topic, partition)] = offset
        for member in state.members:
            member.positions.pop((topic, partition), None)


class MemorySubscription(Subscription):
    def __init__(
        self,
        broker: _Broker,
        state: _Group,
        group: str,
        topics: tuple[str, ...],
        member: str,
        url: str,
    ) -> None:
        self._broker = broker
        self._state = state
        self.group = group
        self.topics = topics
        self.member = member
        self.url = url
        self.positions: dict[tuple[str, int], int] = {}
        self._ledger = DeliveryLedger(self)
        self._duplicates: list[Record] = []
        self._assigned: frozenset[tuple[str, int]] = frozenset()
        self._closed = False
        self._wake = asyncio.Event()
        broker.listeners.add(self._wake)

    def _rebalance(self) -> None:
        # The SQLite log's and NATS's assignment, over the live members in join order.
        members = [(m.member, m.topics) for m in self._state.members]
        counts = {t: len(self._broker.partitions(t)) for _, topics in members for t in topics}
        assigned = frozenset(assign(members, counts)[self.member])
        lost = self._assigned - assigned
        for pair in lost:
            self.positions.pop(pair, None)
        self._ledger.forget(lost)
        self._assigned = assigned

    def assignment(self) -> frozenset[tuple[str, int]]:
        return self._assigned

    def _take(self, max_records: int) -> list[Delivery]:
        out: list[Delivery] = []
        now, mono = time.time(), time.monotonic()
        while self._duplicates and len(out) < max_records:
            record = self._duplicates.pop(0)
            tp = (record.topic, record.partition)
            out.append(Delivery(self, record, self._ledger.attempts(tp, record.offset) + 1))
        for pair in sorted(self._assigned):
            if not self._ledger.ready(pair, mono):
                continue
            records = self._broker.partitions(pair[0])[pair[1]]
            pos = end = self.positions.setdefault(pair, self._state.committed.get(pair, 0))
            room = max_records - len(out)
            while end < len(records) and end - pos < room and records[end].timestamp <= now:
                end += 1
            out += self._ledger.issue_partition(pair, records[pos:end])
            self.positions[pair] = end
        return out

    def _idle(self, now: float) -> float:
        # Until a nack's pause ends or a delayed record becomes visible (else a publish).
        resume = self._ledger.next_resume(self._assigned)
        nap = float("inf") if resume is None else resume - now
        wall = time.time()
        for topic, part in self._assigned:
            records = self._broker.partitions(topic)[part]
            pos = self.positions.get((topic, part), 0)
            if pos < len(records) and records[pos].timestamp > wall:
                nap = min(nap, records[pos].timestamp - wall)
        return nap

    async def fetch(self, max_records: int = 100, timeout: float = 0.5) -> list[Delivery]:
        if self._closed:
            raise RuntimeError("subscription is closed")

        async def look() -> list[Delivery]:
            self._rebalance()
            return self._take(max_records)

        return await fetch_loop(timeout, self._wake, look, self._idle)

    async def ack(self, delivery: Delivery) -> None:
        pair = check_held(self.url, self.group, delivery, self._assigned)
        record = delivery.record
        faults = self._broker.faults
        if faults.crash_before_ack > 0:
            faults.crash_before_ack -= 1
            self.positions.pop(pair, None)  # resume from the committed offset, as on restart
            return
        current = self._state.committed.get(pair, 0)
        covered: list[Record] = []
        if faults.duplicate:  # every record this (cumulative) ack covers comes once more
            covered = [
                r
                for r in self._broker.partitions(record.topic)[record.partition][
                    current : record.offset + 1
                ]
                if self._ledger.attempts(pair, r.offset) < 2
            ]
        if not self._ledger.ack(delivery):
            return  # a nack rewound this partition before it: that record comes first
        self._state.committed[pair] = max(current, record.offset + 1)
        self._duplicates += covered

    async def nack(self, delivery: Delivery, delay: float = 0.0) -> None:
        pair = check_held(self.url, self.group, delivery, self._assigned)
        if self._ledger.nack(delivery, delay):
            self.positions[pair] = delivery.record.offset

    async def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._assigned = frozenset()
            self._state.members.remove(self)
            self._broker.listeners.discard(self._wake)
            self._broker.wake()
