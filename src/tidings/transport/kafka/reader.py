"""Reading a partition without a consumer group (tools, dead letters, replay)."""

from __future__ import annotations

import time

from confluent_kafka import Consumer, KafkaException, Message, TopicPartition

from tidings.transport.kafka.config import KafkaTransportError, describe


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
