"""RabbitMQ as a Tidings transport: ``amqp://user:password@host:port/vhost[?options]``.

**The mapping** (names in :mod:`.wire`). A topic is a durable direct exchange whose
routing key is the partition; a partition is chosen by
:func:`~tidings.transport.placement.partition_for`, as on the SQLite log and NATS. A
consumer group reads each partition from its own quorum queue with a single active
consumer (:mod:`.subscription`): the group's members share the queues, one takes over
the queues of a member that died the moment its connection drops, and per-key order
holds because a queue has one reader at a time and is read in order.

**Publishing**: a batch is published on one channel with publisher confirms, in order,
and ``publish`` returns when RabbitMQ has confirmed every message (persistent messages
in quorum queues: written to the Raft log of the queue's members). Nothing of a batch
is sent when one record is too large.

**A lost connection** (RabbitMQ restarted, the network cut): the connection is aio-pika's
robust one, which connects again every ``reconnect_interval`` seconds (a fixed interval,
aio-pika's; no growing backoff) and, once connected, opens its channels again with their
prefetch and confirms and consumes each queue again under the same consumer tag. What
we add: a publish that was not confirmed when the connection went (or does not get a
confirm within ``publish_timeout``) raises :class:`BrokerUnavailable`, so the outbox
publishes the batch again (the inbox drops what had arrived after all), and a publish
during the outage raises the same at once instead of waiting. Each subscription voids
what it held when the connection went (:meth:`RabbitMQSubscription.connection_lost`):
the broker returned those messages to their queues, so they come again, first.

**What RabbitMQ cannot do** (:class:`~tidings.transport.contract.Capabilities`): a
queue is not a log, so there is no history (a group sees what is published once its
queues exist: ``from_beginning`` cannot reach back) and no offsets (``read``, ``seek``,
``committed`` and end offsets raise :class:`Unsupported`; ``tidings lag`` shows queue
depths from :meth:`queued` instead). RabbitMQ streams would give both, but on 3.10 a
stream's single active consumer and its stored offsets exist only in the stream
protocol, not over AMQP; we would have to build group membership and offset storage on
top, as the NATS transport does on JetStream. Quorum queues give groups, takeover and
redelivery natively, which is what the runtime needs from RabbitMQ.

URL options: ``partitions`` (of topics created here), ``prefetch`` (unacked messages per
queue and member), ``sync_interval`` (seconds between a member's looks at who consumes
what), ``management`` (the management API's URL; default ``http://HOST:15672``),
``connect_timeout``, ``reconnect_interval`` (seconds, default 1), ``publish_timeout``
(seconds a batch may wait for its confirms, default 30).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from urllib.parse import unquote, urlsplit, urlunsplit

import aio_pika
import aio_pika.abc
import aio_pika.exceptions
import aiormq.exceptions

from tidings.records import OutgoingRecord
from tidings.transport.contract import DEFAULT_PARTITIONS, Capabilities, TopicInfo, Transport
from tidings.transport.errors import BrokerUnavailable, TransportError
from tidings.transport.membership import member_id
from tidings.transport.options import url_options
from tidings.transport.placement import partition_for
from tidings.transport.queues import WithoutOffsets
from tidings.transport.rabbitmq.management import Management
from tidings.transport.rabbitmq.subscription import RabbitMQSubscription
from tidings.transport.rabbitmq.wire import (
    GROUP_ARG,
    HOW_TO_START,
    PARTITIONS_ARG,
    QUEUE_ARGS,
    kept,
    message,
    queue_name,
)

__all__ = ["RabbitMQTransport"]

_OPTIONS = {
    "partitions": int, "prefetch": int, "sync_interval": float, "management": str,
    "connect_timeout": float, "reconnect_interval": float, "publish_timeout": float,
}  # fmt: skip
_AMQP_ERRORS = (aio_pika.exceptions.AMQPError, aiormq.exceptions.AMQPError, ConnectionError)


class RabbitMQTransport(WithoutOffsets, Transport):
    """RabbitMQ over AMQP 0-9-1 (aio-pika); see the module docstring."""

    capabilities = Capabilities(history=False, offsets=False)
    platform = "RabbitMQ"

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        options = url_options(url, _OPTIONS)
        self.url = url
        self.server = urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))
        self.default_partitions = int(options.get("partitions", DEFAULT_PARTITIONS))
        self.prefetch = max(1, int(options.get("prefetch", 256)))
        self.sync_interval = float(options.get("sync_interval", 1.0))
        self.connect_timeout = float(options.get("connect_timeout", 5.0))
        self.reconnect_interval = float(options.get("reconnect_interval", 1.0))
        self.publish_timeout = float(options.get("publish_timeout", 30.0))
        host = parts.hostname or "127.0.0.1"
        self.management_url = str(options.get("management", f"http://{host}:15672"))
        self.vhost = unquote(parts.path[1:]) if len(parts.path) > 1 else "/"
        self._auth = (unquote(parts.username or "guest"), unquote(parts.password or "guest"))
        self._connection: aio_pika.abc.AbstractConnection | None = None
        self._channel: aio_pika.abc.AbstractChannel | None = None
        self._management: Management | None = None
        self._partitions: dict[str, int] = {}
        self._exchanges: dict[str, aio_pika.abc.AbstractExchange] = {}
        self._publish_lock = asyncio.Lock()
        self._subscriptions: list[RabbitMQSubscription] = []

    # -- connection -------------------------------------------------------------------

    async def connect(self) -> None:
        if self._connection is not None:
            return
        try:
            self._connection = await aio_pika.connect_robust(
                self.server, timeout=self.connect_timeout,
                reconnect_interval=self.reconnect_interval,
            )  # fmt: skip
            self._connection.close_callbacks.add(self._connection_lost)
            self._channel = await self._connection.channel(publisher_confirms=True)
        except (*_AMQP_ERRORS, OSError, TimeoutError) as exc:
            await self.close()
            raise BrokerUnavailable(
                f"{self.url}: cannot reach RabbitMQ ({exc!r}); {HOW_TO_START}"
            ) from None
        self._management = Management(
            self.management_url, self.vhost, self._auth, self.connect_timeout
        )

    def _connection_lost(self, *_: object) -> None:
        for sub in self._subscriptions:
            sub.connection_lost()

    @property
    def channel(self) -> aio_pika.abc.AbstractChannel:
        if self._channel is None:
            raise TransportError(f"{self.url}: not connected (call connect())")
        return self._channel

    @property
    def management(self) -> Management:
        if self._management is None:
            raise TransportError(f"{self.url}: not connected (call connect())")
        return self._management

    async def close(self) -> None:
        for sub in list(self._subscriptions):
            await sub.close()
        connection, self._connection, self._channel = self._connection, None, None
        if connection is not None:
            await connection.close()
        management, self._management = self._management, None
        if management is not None:
            await management.close()

    # -- topics -----------------------------------------------------------------------

    async def create_topic(self, name: str, partitions: int | None = None) -> None:
        await self._topic(name, partitions)

    async def _topic(self, name: str, partitions: int | None = None) -> int:
        """The partition count of ``name``, declaring its exchange if it has none."""
        known = self._partitions.get(name)
        if known is not None:
            return known
        count = await self.management.partitions(name)
        if count is None:
            wanted = partitions or self.default_partitions
            try:
                await self.channel.declare_exchange(
                    name, aio_pika.ExchangeType.DIRECT, durable=True,
                    arguments={PARTITIONS_ARG: wanted},
                )  # fmt: skip
            except _AMQP_ERRORS as exc:
                raise BrokerUnavailable(
                    f"{self.url}: cannot declare topic {name!r}: {exc!r}"
                ) from None
            # Declaring does not compare unknown arguments: read back whose count won.
            count = await self.management.partitions(name) or wanted
            if kept(name):
                await self._bind_queues("", name, count)
        self._partitions[name] = count
        return count

    async def _bind_queues(self, group: str, topic: str, count: int) -> dict[tuple[str, int], str]:
        queues = {}
        for part in range(count):
            name = queue_name(group, topic, part)
            queue = await self.channel.declare_queue(
                name, durable=True, arguments={**QUEUE_ARGS, GROUP_ARG: group}
            )
            await queue.bind(topic, routing_key=str(part))
            queues[(topic, part)] = name
        return queues

    async def topics(self) -> list[TopicInfo]:
        found = await self.management.topics()
        return [TopicInfo(name, count, {}) for name, count in sorted(found.items())]

    # -- publishing -------------------------------------------------------------------

    async def publish(self, records: Sequence[OutgoingRecord]) -> None:
        self.check_size(records)
        if not records:
            return
        for topic in {r.topic for r in records}:
            if topic not in self._exchanges:
                await self._topic(topic)
                self._exchanges[topic] = await self.channel.get_exchange(topic, ensure=False)
        connection = self._connection
        if connection is None or connection.is_closed or self.channel.is_closed:
            raise BrokerUnavailable(f"{self.url}: not connected to RabbitMQ (reconnecting)")
        async with self._publish_lock:  # one batch at a time: its order is the wire's
            try:
                # Sent in order, confirmed together: each publish writes its frames
                # before yielding, so the tasks go out in the batch's order.
                confirms = [
                    asyncio.ensure_future(
                        self._exchanges[r.topic].publish(
                            message(r),
                            routing_key=str(partition_for(r.key, self._partitions[r.topic], n)),
                        )
                    )
                    for n, r in enumerate(records)
                ]
                async with asyncio.timeout(self.publish_timeout):
                    await asyncio.gather(*confirms)
            except (*_AMQP_ERRORS, TimeoutError) as exc:
                for confirm in confirms:
                    confirm.cancel()
                raise BrokerUnavailable(f"{self.url}: publish not confirmed: {exc!r}") from None

    # -- groups -----------------------------------------------------------------------

    async def subscribe(
        self, group: str, topics: Sequence[str], *, from_beginning: bool = True
    ) -> RabbitMQSubscription:
        if self._connection is None:
            raise TransportError(f"{self.url}: not connected (call connect())")
        queues: dict[tuple[str, int], str] = {}
        for topic in topics:
            queues.update(await self._bind_queues(group, topic, await self._topic(topic)))
        sub = RabbitMQSubscription(
            url=self.url, group=group, topics=topics, member=member_id(),
            connection=self._connection, queues=queues, prefetch=self.prefetch,
            sync_interval=self.sync_interval, consumers=self.management.consumers,
            on_close=self._subscriptions.remove,
        )  # fmt: skip
        self._subscriptions.append(sub)
        await sub.start()
        return sub

    async def groups(self) -> list[str]:
        return sorted({group for group, _, _ in await self.management.queues() if group})

    async def queued(self, group: str) -> dict[tuple[str, int], int]:
        depths = await self.management.queues()
        return {(t, p): n for (g, t, p), n in depths.items() if g == group}
