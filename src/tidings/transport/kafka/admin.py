"""Kafka's admin API for the transport: topics, end offsets, group offsets, broker limits.

librdkafka's AdminClient answers with concurrent futures, awaited here without a thread;
only ``list_topics`` (metadata) blocks, and runs in the default executor.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future
from typing import Any, TypeVar

from confluent_kafka import ConsumerGroupTopicPartitions, KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient

# Defined in these modules; confluent_kafka.admin re-exports them without an __all__.
from confluent_kafka.admin._config import ConfigResource
from confluent_kafka.admin._listoffsets import OffsetSpec
from confluent_kafka.cimpl import NewTopic

from tidings.transport.kafka.config import (
    BROKER_DEFAULT_MESSAGE_MAX_BYTES,
    KafkaSettings,
    KafkaTransportError,
    describe,
    kafka_error,
    log,
    not_authorized,
)

T = TypeVar("T")
TP = tuple[str, int]
_LATEST: Any = OffsetSpec.latest()  # type: ignore[no-untyped-call]
READER_GROUP = "tidings-reader"  # the group.id librdkafka insists on for read(); never joined


async def _wait(future: Future[T]) -> T:
    return await asyncio.wrap_future(future)


# Up to this many named topics, partition_counts asks for each one's metadata alone.
_ASKED_ONE_BY_ONE = 8
# A partition answering these has no leader this client can reach yet; asked again, it will.
_LEADER_MOVING = {
    KafkaError.NOT_LEADER_FOR_PARTITION,
    KafkaError.LEADER_NOT_AVAILABLE,
    KafkaError.UNKNOWN_TOPIC_OR_PART,  # in the metadata, not yet on its leader
}


def _leader_moving(exc: KafkaException) -> bool:
    error = kafka_error(exc)
    return error is not None and error.code() in _LEADER_MOVING


class KafkaAdmin:
    def __init__(self, settings: KafkaSettings, on_error: Callable[[KafkaError], None]) -> None:
        self.settings = settings
        # A metadata request naming a topic must not create it (brokers with
        # auto.create.topics.enable would, for this producer-type client, by default).
        self.client = AdminClient(
            {**settings.common("tidings-admin", on_error), "allow.auto.create.topics": False}
        )
        self._timeout = settings.connect_timeout_ms / 1000
        self._known_topics: set[str] = set()

    def _admin(self) -> AdminClient:
        self.client.poll(0)  # serve its error callbacks, which would otherwise pile up
        return self.client

    async def message_max_bytes(self, timeout: float) -> int:
        """The broker's ``message.max.bytes``: the largest record batch it accepts."""
        admin = self._admin()
        cluster = await _wait(admin.describe_cluster(request_timeout=timeout))
        broker = str(cluster.nodes[0].id) if cluster.nodes else "0"
        resource = ConfigResource(ConfigResource.Type.BROKER, broker)
        try:
            configs = await _wait(
                admin.describe_configs([resource], request_timeout=timeout)[resource]
            )
            return int(configs["message.max.bytes"].value)
        except (KafkaException, KeyError, ValueError, TypeError) as exc:
            log.info("%s: broker's message.max.bytes unknown (%s); assuming the default",
                     self.settings.url, exc)  # fmt: skip
            return BROKER_DEFAULT_MESSAGE_MAX_BYTES

    # -- topics -----------------------------------------------------------------------

    async def create_topics(self, names: Iterable[str], partitions: int) -> None:
        """Create the topics this client has not seen yet (an existing one is left alone)."""
        new = [n for n in names if n not in self._known_topics]
        if not new:
            return
        replicas = self.settings.replication_factor
        futures = self._admin().create_topics(
            [NewTopic(n, num_partitions=partitions, replication_factor=replicas) for n in new],
            request_timeout=self._timeout,
        )
        for name, future in futures.items():
            try:
                await _wait(future)
            except KafkaException as exc:
                error = kafka_error(exc)
                if error is not None and error.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED:
                    raise not_authorized(
                        self.settings.url, self.settings.username, "CREATE", "topic", name
                    ) from None
                if error is None or error.code() != KafkaError.TOPIC_ALREADY_EXISTS:
                    raise KafkaTransportError(f"{self.settings.url}: creating topic {name!r}:"
                                              f" {describe(exc)}") from None  # fmt: skip
            self._known_topics.add(name)

    async def wait_visible(self, names: Sequence[str], within: float = 10.0) -> None:
        """Until the broker's metadata lists the topics (a consumer joining before that
        would be assigned none of their partitions)."""
        deadline = time.monotonic() + within
        while True:
            counts = await self.partition_counts(names)
            missing = [n for n in names if not counts.get(n)]
            if not missing:
                return
            if time.monotonic() > deadline:
                raise KafkaTransportError(f"{self.settings.url}: topics {missing} created but not"
                                          f" visible after {within:g} s")  # fmt: skip
            await asyncio.sleep(0.05)

    async def partition_counts(self, topics: Iterable[str] | None = None) -> dict[str, int]:
        """Partitions per topic: of ``topics`` (those that exist), or of every topic but
        Kafka's internal ones."""
        admin = self._admin()
        wanted = None if topics is None else sorted(set(topics))
        if wanted is not None and len(wanted) <= _ASKED_ONE_BY_ONE:
            return await asyncio.get_running_loop().run_in_executor(None, self._counts, wanted)
        metadata = await asyncio.get_running_loop().run_in_executor(
            None, admin.list_topics, None, self._timeout
        )
        return {
            name: len(meta.partitions)
            for name, meta in metadata.topics.items()
            if (name in wanted if wanted is not None else not name.startswith("__"))
        }

    def _counts(self, names: list[str]) -> dict[str, int]:
        """Partitions of each of a few topics, by one metadata request each (blocking).
        A follower polls its topics' end offsets every step; listing every topic for
        that took a fifth of the order service's CPU on a broker holding 2,500
        partitions."""
        counts = {}
        for name in names:
            meta = self.client.list_topics(name, self._timeout).topics.get(name)
            if meta is not None and meta.error is None and meta.partitions:
                counts[name] = len(meta.partitions)
        return counts

    async def end_offsets(self, counts: dict[str, int]) -> dict[TP, int]:
        return await self._list_offsets([(t, p) for t, n in counts.items() for p in range(n)],
                                        _LATEST)  # fmt: skip

    async def offsets_for_time(self, partitions: list[TP], timestamp: float) -> dict[TP, int]:
        """The first offset at or after ``timestamp`` in each partition, by the broker's
        time index (``ListOffsets`` with a timestamp, all partitions in one request); the
        end offset where every record is older, 0 for a partition that does not exist."""
        counts = await self.partition_counts({t for t, _ in partitions})
        exist = [(t, p) for t, p in partitions if p < counts.get(t, 0)]
        found = await self._list_offsets(exist, OffsetSpec.for_timestamp(int(timestamp * 1000)))
        late = [tp for tp in exist if found[tp] < 0]  # no record that recent: the end
        found.update(await self._list_offsets(late, _LATEST))
        return {tp: found.get(tp, 0) for tp in partitions}

    async def _list_offsets(self, partitions: list[TP], spec: Any) -> dict[TP, int]:
        """``ListOffsets`` for ``partitions``. A partition whose leader is not known yet
        or is moving (a topic just created, a broker restarting, a leader election) is
        asked again, every 0.2 s for up to ``connect_timeout_ms``; other errors raise."""
        found: dict[TP, int] = {}
        pending = list(partitions)
        deadline = time.monotonic() + self._timeout
        while pending:
            futures = self._admin().list_offsets(
                {TopicPartition(t, p): spec for t, p in pending}, request_timeout=self._timeout
            )
            failed: dict[TP, KafkaException] = {}
            for tp, future in futures.items():
                try:
                    found[(tp.topic, tp.partition)] = (await _wait(future)).offset
                except KafkaException as exc:
                    failed[(tp.topic, tp.partition)] = exc
            pending = [tp for tp, exc in failed.items() if _leader_moving(exc)]
            final = [(tp, exc) for tp, exc in failed.items() if not _leader_moving(exc)]
            if pending and time.monotonic() > deadline:
                final.append((pending[0], failed[pending[0]]))
            if final:
                (topic, partition), error = final[0]
                raise KafkaTransportError(f"{self.settings.url}: listing offsets of {topic}"
                                          f"[{partition}]: {describe(error)}")  # fmt: skip
            if pending:
                await asyncio.sleep(0.2)
        return found

    # -- consumer groups --------------------------------------------------------------

    async def committed(self, group: str) -> dict[TP, int]:
        futures = self._admin().list_consumer_group_offsets([ConsumerGroupTopicPartitions(group)])
        try:
            result = await _wait(futures[group])
        except KafkaException as exc:
            error = kafka_error(exc)
            if error is not None and error.code() == KafkaError.GROUP_ID_NOT_FOUND:
                return {}
            raise KafkaTransportError(f"{self.settings.url}: offsets of {group!r}:"
                                      f" {describe(exc)}") from None  # fmt: skip
        return {
            (tp.topic, tp.partition): tp.offset
            for tp in result.topic_partitions or []
            if tp.offset >= 0
        }

    async def groups(self) -> list[str]:
        listed = await _wait(self._admin().list_consumer_groups(request_timeout=self._timeout))
        return sorted(g.group_id for g in listed.valid if g.group_id != READER_GROUP)

    async def set_offset(self, group: str, topic: str, partition: int, offset: int) -> None:
        where = TopicPartition(topic, partition, offset)
        futures = self._admin().alter_consumer_group_offsets(
            [ConsumerGroupTopicPartitions(group, [where])]
        )
        try:
            result = await _wait(futures[group])
        except KafkaException as exc:
            raise KafkaTransportError(
                f"{self.settings.url}: seek {group!r} on {topic}[{partition}] to {offset}:"
                f" {describe(exc)} (stop the group's members first)"
            ) from None
        for tp in result.topic_partitions or []:
            if tp.error is not None:
                raise KafkaTransportError(f"{self.settings.url}: seek {group!r} on {topic}"
                                          f"[{partition}]: {tp.error}")  # fmt: skip
