"""The transport contract: the one small protocol every broker implements.

A transport is a durable, partitioned log with consumer groups (Kafka's model; NATS
JetStream and the embedded SQLite log are mapped onto it). The rules, which the shared
conformance suite in :mod:`tidings.testing.transport` checks for every implementation:

* **Publish** takes a batch. When ``publish`` returns, every record in it is durable (as
  durable as the engine is configured to make it: committed to SQLite's WAL, which
  survives a killed process (``?synchronous=full`` also survives power loss),
  ``acks=all`` for Kafka, a stream ack for JetStream). A record larger than ``max_record_bytes`` is refused with
  :class:`RecordTooLarge` before anything of the batch is written.
* **Keys to partitions**: records with the same key go to the same partition, and a
  partition is read in the order it was written. Order is per key, never global.
* **Consumer groups**: every group sees every record of the topics it subscribes to;
  within a group each partition is read by at most one member at a time. When a member
  dies (stops heartbeating) its partitions are handed to the others.
* **Ack** is cumulative per partition: acking the record at offset *n* commits *n + 1*, the
  position the group resumes from. Nothing is committed that was not acked, so a member
  that dies between handling and ack has its records delivered again (at-least-once).
* **Nack** rewinds the partition to the nacked record, to be fetched again after
  ``delay`` seconds; records after it in that partition wait (per-key order holds). An
  ack of a later record of the same partition, fetched before the nack, commits nothing:
  the nacked record must come first.
* **Assignment changes only inside** :meth:`Subscription.fetch`. A caller that acks or
  nacks everything fetched before calling ``fetch`` again never has a partition taken
  from under a record it is handling.
* **Thread safety**: none. A transport and its subscriptions belong to one asyncio event
  loop; use one transport per process (or per loop).
"""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import AsyncIterator, Collection, Mapping, Sequence
from typing import Literal

from tidings.records import OutgoingRecord, Record

__all__ = [
    "BrokerUnavailable",
    "Delivery",
    "InvalidBrokerURL",
    "NotAssigned",
    "OutgoingRecord",
    "Record",
    "RecordTooLarge",
    "Subscription",
    "TopicInfo",
    "Transport",
    "TransportError",
    "assign",
    "partition_for",
    "read_topic",
]

DEFAULT_PARTITIONS = 3
DEFAULT_MAX_RECORD_BYTES = 1024 * 1024


class TransportError(Exception):
    """Base of the errors a transport raises on purpose."""


class BrokerUnavailable(TransportError):
    """The broker cannot be reached; the message names the URL and how to start it."""


class InvalidBrokerURL(TransportError, ValueError):
    """A broker URL that names no known transport, or is missing a part."""


class RecordTooLarge(TransportError):
    """A record exceeds the transport's ``max_record_bytes``."""


class NotAssigned(TransportError):
    """An ack or nack for a partition this member no longer owns (it was reassigned)."""


@dataclasses.dataclass(frozen=True, slots=True)
class TopicInfo:
    name: str
    partitions: int
    end_offsets: Mapping[int, int]  # partition -> offset the next record will get


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
    """One member of a consumer group, reading the partitions assigned to it."""

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


class Transport(abc.ABC):
    """A broker connection. Create one with :func:`tidings.transport.open_transport`."""

    url: str
    max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES
    # False for a broker that lives inside one process (memory://): the conformance suite
    # then skips, with this reason, the cases that share a group between OS processes.
    supports_processes: bool = True
    # How the codec writes envelopes for this broker (CloudEvents binary or structured).
    content_mode: Literal["binary", "structured"] = "binary"

    async def connect(self) -> None:  # noqa: B027 - optional hook
        """Open connections; raise :class:`BrokerUnavailable` if the broker is not there."""

    @abc.abstractmethod
    async def close(self) -> None: ...

    @abc.abstractmethod
    async def create_topic(self, name: str, partitions: int = DEFAULT_PARTITIONS) -> None:
        """Create ``name`` if it does not exist (an existing topic is left as it is)."""

    @abc.abstractmethod
    async def publish(self, records: Sequence[OutgoingRecord]) -> None:
        """Append the records durably; see the module docstring for the rules."""

    @abc.abstractmethod
    async def subscribe(
        self, group: str, topics: Sequence[str], *, from_beginning: bool = True
    ) -> Subscription:
        """Join ``group`` on ``topics``. A new group starts at the beginning (or the end)."""

    @abc.abstractmethod
    async def topics(self) -> list[TopicInfo]:
        """Every topic with its partitions and end offsets."""

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

    def check_size(self, records: Sequence[OutgoingRecord]) -> None:
        """Refuse the whole batch if one record is larger than ``max_record_bytes``."""
        for record in records:
            size = len(record.value) + sum(len(k) + len(v) for k, v in record.headers.items())
            if size > self.max_record_bytes:
                raise RecordTooLarge(
                    f"record for topic {record.topic!r} is {size} bytes; "
                    f"this transport accepts at most {self.max_record_bytes} bytes"
                )


async def read_topic(transport: Transport, topic: str, batch: int = 1000) -> AsyncIterator[Record]:
    """Every record of ``topic``, partition after partition (for tools, not consumers)."""
    for info in await transport.topics():
        if info.name != topic:
            continue
        for partition, end in sorted(info.end_offsets.items()):
            offset = 0
            while offset < end:
                records = await transport.read(topic, partition, offset, batch)
                if not records:
                    break
                for record in records:
                    yield record
                offset = records[-1].offset + 1


def assign(
    members: Sequence[tuple[str, Collection[str]]], partitions: Mapping[str, int]
) -> dict[str, set[tuple[str, int]]]:
    """Each (topic, partition), in sorted order, to the least loaded member subscribed to
    its topic, ties to the smallest member id: round robin when every member reads the
    same topics, and still balanced when they do not (where plain round robin is not)."""
    result: dict[str, set[tuple[str, int]]] = {member: set() for member, _ in members}
    ordered = sorted(members)
    for topic in sorted(partitions):
        eligible = [member for member, topics in ordered if topic in topics]
        for part in range(partitions[topic]) if eligible else ():
            chosen = min(eligible, key=lambda member: len(result[member]))  # stable: first wins
            result[chosen].add((topic, part))
    return result


def partition_for(key: str | None, partitions: int, counter: int = 0) -> int:
    """The partition of a key: a stable hash, the same in every process and language.

    Python's ``hash`` is salted per process, so it cannot be used; CRC32 is stable and
    cheap. Keyless records are spread round-robin by ``counter``.
    """
    import zlib

    if key is None:
        return counter % partitions
    return zlib.crc32(key.encode()) % partitions
