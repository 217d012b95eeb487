"""Transports: brokers behind one contract (:mod:`tidings.transport.contract`).

Pick one by URL with :func:`open_transport`:

* ``memory://`` - in-process and deterministic, with fault injection (unit tests);
* ``sqlite:///path/to/log.db`` - the embedded durable log (the default);
* ``kafka://host:port`` - Apache Kafka;
* ``nats://host:port`` - NATS JetStream;
* ``amqp://user:password@host:port/vhost`` - RabbitMQ (quorum queues; no offsets or
  history, see its ``capabilities``);
* ``sqs+sns://host:port?region=us-east-1`` - AWS SNS FIFO topics fanning out to SQS FIFO
  queues (no host: AWS itself; no offsets, history or partition assignment);
* ``eventbridge://host:port?region=us-east-1`` - an AWS EventBridge bus routing to the
  same SQS FIFO queues (the same limits, and no promised order on AWS itself).

The layout, which lint-imports checks (no cycles; each layer imports only those below):

* brokers: :mod:`.memory` and one package each, :mod:`.sqlite`, :mod:`.kafka`,
  :mod:`.nats`, :mod:`.rabbitmq`, :mod:`.aws`; they never import each other;
* what they share, each module with its rules in its docstring: :mod:`.ledger`
  (deliveries handed out, attempts, cumulative settling), :mod:`.loop` (the fetch loop),
  :mod:`.membership` (member ids, the heartbeat task), :mod:`.options` (URL options);
  helpers receive values and callables, never a transport;
* the contract: :mod:`.contract`, :mod:`.errors`, :mod:`.placement` (partitioner and
  assignment), and :mod:`.tools` (helpers for tools written against the contract);
* :mod:`.base` re-exports, for the rest of the framework, what it imports.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from tidings.transport.base import (
    BrokerUnavailable,
    Delivery,
    InvalidBrokerURL,
    NotAssigned,
    OutgoingRecord,
    Record,
    RecordTooLarge,
    Subscription,
    TopicInfo,
    Transport,
    TransportError,
)
from tidings.urls import sqlite_path

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
    "make_transport",
    "open_transport",
]


def make_transport(url: str) -> Transport:
    """Build (but do not connect) the transport a URL names."""
    parts = urlsplit(url)
    scheme = parts.scheme
    if scheme == "memory":
        from tidings.transport.memory import MemoryTransport

        return MemoryTransport(url)
    if scheme == "sqlite":
        from tidings.transport.sqlite.log import SQLiteLog

        try:
            path = sqlite_path(url)
        except ValueError as exc:
            raise InvalidBrokerURL(str(exc)) from None
        return SQLiteLog(path, url=url)
    if scheme == "kafka":
        if not parts.hostname:
            raise InvalidBrokerURL(f"{url!r}: give host and port, e.g. kafka://127.0.0.1:9092")
        from tidings.transport.kafka.transport import KafkaTransport

        return KafkaTransport(url)
    if scheme == "nats":
        if not parts.hostname:
            raise InvalidBrokerURL(f"{url!r}: give host and port, e.g. nats://127.0.0.1:4222")
        from tidings.transport.nats.transport import NatsTransport

        return NatsTransport(url)
    if scheme == "amqp":
        if not parts.hostname:
            raise InvalidBrokerURL(
                f"{url!r}: give host and port, e.g. amqp://guest:guest@127.0.0.1:5672/"
            )
        try:
            from tidings.transport.rabbitmq.transport import RabbitMQTransport
        except ImportError as exc:
            raise InvalidBrokerURL(
                f"{url!r}: RabbitMQ needs aio-pika: pip install 'tidings[rabbitmq]' ({exc})"
            ) from None
        return RabbitMQTransport(url)
    if scheme == "sqs+sns":
        try:
            from tidings.transport.aws.transport import SnsSqsTransport
        except ImportError as exc:
            raise InvalidBrokerURL(
                f"{url!r}: AWS needs aiobotocore: pip install 'tidings[aws]' ({exc})"
            ) from None
        return SnsSqsTransport(url)
    if scheme == "eventbridge":
        try:
            from tidings.transport.aws.eventbridge import EventBridgeTransport
        except ImportError as exc:
            raise InvalidBrokerURL(
                f"{url!r}: AWS needs aiobotocore: pip install 'tidings[aws]' ({exc})"
            ) from None
        return EventBridgeTransport(url)
    raise InvalidBrokerURL(
        f"{url!r} is not a broker URL; use one of: memory://, sqlite:///./tidings.db, "
        "kafka://127.0.0.1:9092, nats://127.0.0.1:4222, amqp://guest:guest@127.0.0.1:5672/, "
        "sqs+sns://127.0.0.1:4566?region=us-east-1, eventbridge://127.0.0.1:4566?region=us-east-1"
    )


async def open_transport(url: str) -> Transport:
    """Build and connect the transport a URL names."""
    transport = make_transport(url)
    await transport.connect()
    return transport
