"""Names and messages on RabbitMQ: how a topic, a partition and a group become an exchange,
routing keys and queues, and how a record becomes an AMQP message and back.

* Topic ``T`` is the durable direct exchange ``T``; its partition count is the exchange
  argument :data:`PARTITIONS_ARG`, read back through the management API.
* Partition ``p`` is routing key ``"p"``: the publisher picks it with
  :func:`tidings.transport.placement.partition_for`, as the SQLite log and NATS do.
* Group ``G`` reads partition ``p`` of ``T`` from the quorum queue ``G:T:p``
  (:func:`queue_name`), bound with key ``"p"``, with a single active consumer: each
  member consumes every queue of the group, RabbitMQ hands each queue to one of them.
* A topic ending in ``.dlq`` (the framework's dead letters) also gets the queues
  ``:T:p`` (group ``""``) when declared, so its letters are kept with no group
  reading them: a RabbitMQ exchange drops what no queue is bound to.
* A record's key travels in the header :data:`KEY_HEADER`; its headers as AMQP header
  fields (strings); the time it was published as the message ``timestamp`` (whole
  seconds: AMQP's type).
"""

from __future__ import annotations

import datetime
import time
from collections.abc import Mapping

import aio_pika

from tidings.records import OutgoingRecord, Record
from tidings.transport.errors import TransportError

__all__ = [
    "GROUP_ARG",
    "HOW_TO_START",
    "KEY_HEADER",
    "PARTITIONS_ARG",
    "QUEUE_ARGS",
    "kept",
    "message",
    "parse_queue",
    "queue_name",
    "record",
]

HOW_TO_START = "start it with `scripts/services up rabbitmq`"
PARTITIONS_ARG = "x-tidings-partitions"
GROUP_ARG = "x-tidings-group"
KEY_HEADER = "x-tidings-key"
# Quorum queues: replicated (on a cluster), durable, per-queue single active consumer,
# and cumulative (multiple) acks.
QUEUE_ARGS: Mapping[str, aio_pika.abc.FieldValue] = {
    "x-queue-type": "quorum",
    "x-single-active-consumer": True,
}


def queue_name(group: str, topic: str, partition: int) -> str:
    """The queue group ``group`` reads partition ``partition`` of ``topic`` from."""
    if ":" in group:
        raise TransportError(f"group {group!r}: a RabbitMQ group name may not contain ':'")
    return f"{group}:{topic}:{partition}"


def parse_queue(name: str) -> tuple[str, str, int] | None:
    """(group, topic, partition) of one of our queue names, else None."""
    group, sep, rest = name.partition(":")
    topic, sep2, part = rest.rpartition(":")
    if not (sep and sep2 and part.isdigit()):
        return None
    return group, topic, int(part)


def kept(topic: str) -> bool:
    """Whether a topic's records are kept with no group reading them (dead letters)."""
    return topic.endswith(".dlq")


def message(out: OutgoingRecord) -> aio_pika.Message:
    headers: dict[str, aio_pika.abc.FieldValue] = dict(out.headers)
    if out.key is not None:
        headers[KEY_HEADER] = out.key
    return aio_pika.Message(
        out.value,
        headers=headers,
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        timestamp=datetime.datetime.now(datetime.UTC),
    )


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def record(
    topic: str, partition: int, offset: int, incoming: aio_pika.abc.AbstractMessage
) -> Record:
    """The record a delivered message carries; ``offset`` is the member's own count."""
    headers = {k: _text(v) for k, v in (incoming.headers or {}).items()}
    key = headers.pop(KEY_HEADER, None)
    stamp = incoming.timestamp
    return Record(
        topic=topic,
        partition=partition,
        offset=offset,
        key=key,
        value=incoming.body,
        headers=headers,
        timestamp=stamp.timestamp() if stamp else time.time(),
    )
