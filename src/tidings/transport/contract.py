"""The transport contract: what every broker implements, and nothing else.

A transport is a durable, partitioned log with consumer groups (Kafka's model; NATS
JetStream and the embedded SQLite log are mapped onto it). It is three small interfaces,
each with its rules in its docstring, joined in :class:`Transport`:

* :class:`Publisher` - append batches durably;
* :class:`Subscriber` - join a consumer group, which hands out :class:`Delivery` objects
  through a :class:`Subscription`;
* :class:`Administration` - topics, committed offsets, reading and seeking, for tools.

The shared conformance suite (:mod:`tidings.testing.transport`) checks the rules for
every implementation. The errors are in :mod:`.errors`; partitioners and assignment in
:mod:`.placement`. **Thread safety**: none. A transport and its subscriptions belong to
one asyncio event loop; use one transport per process (or per loop).
"""

from __future__ import annotations

import abc
import asyncio
import dataclasses
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from typing import Literal

from tidings.records import OutgoingRecord, Record
from tidings.transport.errors import RecordTooLarge, Unsupported

__all__ = [
    "DEFAULT_MAX_RECORD_BYTES",
    "DEFAULT_PARTITIONS",
    "Administration",
    "Capabilities",
    "Delivery",
    "PartitionRange",
    "Publisher",
    "RecordFilter",
    "Subscriber",
    "Subscription",
    "TopicInfo",
    "Transport",
]

DEFAULT_PARTITIONS = 3
DEFAULT_MAX_RECORD_BYTES = 1024 * 1024
# (topic, partition, first offset, end offset): the records first <= offset < end.
PartitionRange = tuple[str, int, int, int]
# Whether a tool wants a record, from its headers and value alone (see read_ranges).
RecordFilter = Callable[[Mapping[str, str], bytes], bool]


@dataclasses.dataclass(frozen=True, slots=True)
class Capabilities:
    """What a broker can do beyond the promises every transport keeps (publish, groups,
    cumulative ack, nack with delay, per-key order), as Watermill's conformance suite has
    feature flags. The conformance suite skips exactly the cases a missing capability
    rules out, and tools say what the broker cannot show (:class:`Unsupported`).

    * ``history``: a new group reads records published before it first subscribed
      (``from_beginning=True``). Without it a group sees what is published once it
      exists, so a group must subscribe before its records are published.
    * ``offsets``: a partition is a log with positions, so ``read``, ``seek``,
      ``committed`` and the end offsets of ``topics()`` exist, and ``Record.offset`` is
      the same number for every reader. Without it those raise :class:`Unsupported`, and
      an offset numbers deliveries within one member only.
    * ``assignment``: a group's partitions are shared out, each read by one member at a
      time, and ``Subscription.assignment()`` names this member's. Without it every
      member reads every partition (and says so) while the broker keeps each key with
      one member at a time (SQS FIFO message groups), so per-key order still holds.
    * ``prefetch``: a member may fetch later records of a key while earlier ones are
      unacked. Without it (SQS FIFO) a key's next record waits for the ack of the one
      before; the runtime, which acks what it handled before fetching on, is not held up.
    * ``ordered``: records of one key are delivered in the order they were published.
      Without it (EventBridge on AWS, whose bus does not promise to deliver in order)
      a key's records may come out of order; handlers must not rely on it.
    """

    history: bool = True
    offsets: bool = True
    assignment: bool = True
    prefetch: bool = True
    ordered: bool = True


@dataclasses.dataclass(frozen=True, slots=True)
class TopicInfo:
    name: str
    partitions: int
    end_offsets: Mapping[int, int]  # partition -> offset the next record will get


class Publisher(abc.ABC):
    """Appends records.

    * When ``publish`` returns, every record of the batch is durable (as durable as the
      engine is configured to make it: committed to SQLite's WAL, which survives a killed
      process (``?synchronous=full`` also survives power loss), ``acks=all`` for Kafka, a
      stream ack for JetStream).
    * A record larger than ``max_record_bytes`` is refused with :class:`RecordTooLarge`
      before anything of the batch is written.
    * Records with the same key go to the same partition, and a partition is read in the
      order it was written. Order is per key, never global.
    """

    max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES

    @abc.abstractmethod
    async def publish(self, records: Sequence[OutgoingRecord]) -> None:
        """Append the records durably (topics are created on first use)."""

    def check_size(self, records: Sequence[OutgoingRecord]) -> None:
        """Refuse the whole batch if one record is larger than ``max_record_bytes``."""
        for record in records:
            size = len(record.value) + sum(len(k) + len(v) for k, v in record.headers.items())
            if size > self.max_record_bytes:
                raise RecordTooLarge(
                    f"record for topic {record.topic!r} is {size} bytes; "
                    f"this transport accepts at most {self.max_record_bytes} bytes"
                )


class Delivery:
    """A record handed to one consumer group member; ack or nack it exactly once."""

    __slots__ = ("_subscription", "attempt", "record")

    def __init__(self, subscription: Subscription, record: Record, attempt: int = 1) -> None:
        self._subscription = subscription
        self.record = record
        # How many times this member has been handed this record (1 on first delivery).
        self.attempt = attempt

    async def ack(self) -> None:
        await self._subscription.ack(self)

    async def nack(self, delay: float = 0.0) -> None:
        await self._subscription.nack(self, delay)


class Subscription(abc.ABC):
    """One member of a consumer group, reading the partitions assigned to it.

    * Every group sees every record of the topics it subscribes to; within a group each
      partition is read by at most one member at a time. When a member dies (stops
      heartbeating) its partitions are handed to the others.
    * **Ack** is cumulative per partition: acking the record at offset *n* commits *n + 1*,
      the position the group resumes from. Nothing is committed that was not acked, so a
      member that dies between handling and ack has its records delivered again
      (at-least-once).
    * **Nack** rewinds the partition to the nacked record, to be fetched again after
      ``delay`` seconds; records after it in that partition wait (per-key order holds).
      An ack of a later record of the same partition, fetched before the nack, commits
      nothing: the nacked record must come first.
    * **Assignment changes only inside** :meth:`fetch`. A caller that acks or nacks
      everything fetched before calling ``fetch`` again never has a partition taken from
      under a record it is handling; otherwise ack and nack raise :class:`NotAssigned`.
    """

    group: str
    topics: tuple[str, ...]

    @abc.abstractmethod
    async def fetch(self, max_records: int = 100, timeout: float = 0.5) -> list[Delivery]:
        """Wait up to ``timeout`` seconds for records; may return fewer, or none."""

    @abc.abstractmethod
    async def ack(self, delivery: Delivery) -> None:
        """Commit ``delivery.record.offset + 1`` for its partition."""

    @abc.abstractmethod
    async def nack(self, delivery: Delivery, delay: float = 0.0) -> None:
        """Deliver this record (and what follows it in its partition) again later."""

    @abc.abstractmethod
    def assignment(self) -> frozenset[tuple[str, int]]:
        """The (topic, partition) pairs this member reads now."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Leave the group, handing this member's partitions to the others."""


class Subscriber(abc.ABC):
    """Joins consumer groups. A new group starts at the beginning of each partition, or
    at the end as it was when ``subscribe`` was called (``from_beginning=False``)."""

    @abc.abstractmethod
    async def subscribe(
        self, group: str, topics: Sequence[str], *, from_beginning: bool = True
    ) -> Subscription:
        """Join ``group`` on ``topics`` (created if they do not exist)."""


class Administration(abc.ABC):
    """Topics and offsets, for tools and replay; not on any hot path."""

    @abc.abstractmethod
    async def create_topic(self, name: str, partitions: int | None = None) -> None:
        """Create ``name`` if it does not exist (an existing topic is left as it is), with
        ``partitions`` or, by default, the count the transport was configured with."""

    @abc.abstractmethod
    async def topics(self) -> list[TopicInfo]:
        """Every topic with its partitions and end offsets."""

    async def end_offsets(self, topics: Iterable[str]) -> dict[tuple[str, int], int]:
        """The end offset of every partition of ``topics`` (those that exist). A follower
        that polls its few topics asks this, not :meth:`topics`, which on a shared broker
        looks at every topic; this default filters :meth:`topics`."""
        wanted = set(topics)
        return {
            (info.name, partition): end
            for info in await self.topics()
            if info.name in wanted
            for partition, end in info.end_offsets.items()
        }

    @abc.abstractmethod
    async def committed(self, group: str) -> dict[tuple[str, int], int]:
        """The group's committed offsets: (topic, partition) -> next offset to read."""

    @abc.abstractmethod
    async def groups(self) -> list[str]:
        """Every consumer group that has committed something."""

    @abc.abstractmethod
    async def read(self, topic: str, partition: int, offset: int, limit: int) -> list[Record]:
        """Read records from a partition without a group (for tools and replay)."""

    @abc.abstractmethod
    async def seek(self, group: str, topic: str, partition: int, offset: int) -> None:
        """Set a group's committed offset (replay). Do it while the group is stopped."""

    async def offset_for_time(self, topic: str, partition: int, timestamp: float) -> int:
        """The first offset of a partition stored at or after ``timestamp`` (seconds since
        the epoch); the end offset if none is. Tools start reading there (``--since``).

        This default binary-searches with :meth:`read`, so it assumes stored timestamps do
        not decrease along a partition (true of a log that stamps records as it stores
        them); brokers with a time index of their own override it. A topic or partition
        that does not exist answers 0.
        """
        ends = {i.name: i.end_offsets for i in await self.topics()}
        end = ends.get(topic, {}).get(partition, 0)
        first = await self.read(topic, partition, 0, 1)  # the oldest kept (retention)
        low, high = (first[0].offset, end) if first else (end, end)
        while low < high:  # every offset below low is older; high is not (or the end)
            middle = (low + high) // 2
            found = await self.read(topic, partition, middle, 1)
            if found and found[0].timestamp < timestamp:
                low = min(found[0].offset + 1, high)
            else:
                high = middle
        return low

    async def offsets_for_time(
        self, partitions: Iterable[tuple[str, int]], timestamp: float
    ) -> dict[tuple[str, int], int]:
        """:meth:`offset_for_time` of many partitions; a broker may answer in one request.
        This default asks for 16 partitions at a time."""
        wanted = list(partitions)
        limit = asyncio.Semaphore(16)

        async def one(topic: str, partition: int) -> int:
            async with limit:
                return await self.offset_for_time(topic, partition, timestamp)

        found = await asyncio.gather(*(one(t, p) for t, p in wanted))
        return dict(zip(wanted, found, strict=True))

    async def read_ranges(
        self, ranges: Sequence[PartitionRange], batch: int = 5000, keep: RecordFilter | None = None
    ) -> AsyncIterator[list[Record]]:
        """The records of each range, in batches of at most ``batch``, for
        tools that read much of the log: each partition in order, partitions possibly
        interleaved; at most one range per partition. Records that ``keep`` refuses are left out, before a :class:`Record`
        is made where the broker's client allows (which is most of the cost of a record).

        This default reads range after range with :meth:`read`; a broker that can fetch
        many partitions at once (Kafka) does so.
        """
        for topic, partition, start, end in ranges:
            offset = start
            while offset < end:
                records = await self.read(topic, partition, offset, min(batch, end - offset))
                records = [r for r in records if r.offset < end]
                if not records:
                    break
                offset = records[-1].offset + 1
                kept = records if keep is None else [r for r in records if keep(r.headers, r.value)]
                if kept:
                    yield kept


class Transport(Publisher, Subscriber, Administration):
    """A broker connection. Create one with :func:`tidings.transport.open_transport`."""

    url: str
    # False for a broker that lives inside one process (memory://): the conformance suite
    # then skips, with this reason, the cases that share a group between OS processes.
    supports_processes: bool = True
    # How the codec writes envelopes for this broker (CloudEvents binary or structured).
    content_mode: Literal["binary", "structured"] = "binary"
    # What it can do beyond the core promises (every flag on for a log-based broker).
    capabilities: Capabilities = Capabilities()
    # The broker's name, for messages such as "not supported on RabbitMQ".
    platform: str = "this broker"

    async def queued(self, group: str) -> dict[tuple[str, int], int]:
        """Records waiting for ``group`` per (topic, partition), for a broker without
        ``offsets`` (lag from queue depths); a log-based broker computes lag from
        ``committed`` and the end offsets instead and raises :class:`Unsupported`."""
        raise Unsupported(f"{self.url}: queue depths are not kept on {self.platform}")

    async def connect(self) -> None:
        """Open connections; raise :class:`BrokerUnavailable` if the broker is not there."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Close connections, after closing this transport's subscriptions."""
