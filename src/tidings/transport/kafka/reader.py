"""Reading partitions without a consumer group (tools, dead letters, replay)."""

from __future__ import annotations

import time
from collections.abc import Sequence

from confluent_kafka import Consumer, KafkaException, Message, TopicPartition

from tidings.records import Record
from tidings.transport.contract import PartitionRange, RecordFilter
from tidings.transport.kafka.config import (
    KafkaTransportError,
    decode_headers,
    describe,
    to_record,
)


def read_partition(
    reader: Consumer, topic: str, partition: int, offset: int, limit: int, timeout: float
) -> list[Message]:
    """Up to ``limit`` messages of ``topic[partition]`` from ``offset`` on (blocking).

    Stops at the end offset read first, so it never waits for records not yet written.
    """
    where = TopicPartition(topic, partition)
    try:
        low, high = reader.get_watermark_offsets(where, timeout=timeout, cached=False)
    except KafkaException as exc:
        raise KafkaTransportError(f"reading {topic}[{partition}]: {describe(exc)}") from None
    start, end = max(offset, low), min(high, offset + limit)
    if start >= end:
        return []
    reader.assign([TopicPartition(topic, partition, start)])
    out: list[Message] = []
    deadline = time.monotonic() + timeout
    try:
        while len(out) < limit:
            batch = reader.consume(min(limit - len(out), 1000), 0.1)
            for message in batch:
                if message.error() is None and (message.offset() or 0) < end:
                    out.append(message)
            if out and (out[-1].offset() or 0) + 1 >= end:
                break
            if not batch:
                # Done if the position passed the end (the last offsets may be transaction
                # markers, which are never returned as messages).
                position = reader.position([where])[0].offset
                if position >= end:
                    break
                if time.monotonic() > deadline:
                    raise KafkaTransportError(
                        f"reading {topic}[{partition}]: stuck at offset {position} of {end}"
                    )
    finally:
        reader.unassign()
    return out[:limit]


class RangeReader:
    """Reads many partition ranges at once on its own consumer (blocking calls, one
    thread): every partition is assigned at its first offset, so librdkafka fetches them
    all concurrently, as a group member would, instead of one :func:`read_partition`
    (end offsets, assign, fetch, unassign) per batch per partition."""

    def __init__(self, reader: Consumer, ranges: Sequence[PartitionRange], timeout: float) -> None:
        self._reader = reader
        self._timeout = timeout
        self._ends = {(t, p): end for t, p, start, end in ranges if start < end}
        self._progress = time.monotonic()
        if self._ends:
            reader.assign(
                [TopicPartition(t, p, start) for t, p, start, end in ranges if start < end]
            )

    @property
    def done(self) -> bool:
        return not self._ends

    def take(self, batch: int, keep: RecordFilter | None = None) -> list[Record]:
        """The next records of the ranges (possibly none, while fetches are under way)
        that ``keep`` accepts, judged before a Record is made (a third of the cost)."""
        ends = self._ends
        out: list[Record] = []
        finished: list[TopicPartition] = []
        messages = self._reader.consume(batch, 0.1)
        got = bool(messages)
        for message in messages:
            if message.error() is not None:
                continue
            where = (message.topic() or "", message.partition() or 0)
            end = ends.get(where)
            offset = message.offset() or 0
            if end is None or offset >= end:
                continue
            if keep is None or keep(decode_headers(message.headers()), message.value() or b""):
                out.append(to_record(message))
            if offset + 1 >= end:
                del ends[where]
                finished.append(TopicPartition(*where))
        if not got and ends:
            # Done with a partition whose position passed its end without a last message
            # (the last offsets can be transaction markers, never returned as messages).
            positions = self._reader.position([TopicPartition(t, p) for t, p in ends])
            for tp in positions:
                if tp.offset >= ends[(tp.topic, tp.partition)]:
                    del ends[(tp.topic, tp.partition)]
                    finished.append(tp)
        if got or finished:
            self._progress = time.monotonic()
        elif time.monotonic() - self._progress > self._timeout:
            stuck = ", ".join(f"{t}[{p}]" for t, p in list(ends)[:5])
            raise KafkaTransportError(f"reading {stuck}: no progress in {self._timeout:g} s")
        if finished:
            self._reader.pause(finished)  # so librdkafka stops fetching past the end
        return out
