"""What the RabbitMQ transport promises beyond the shared suite, on a real server.

The rules every transport keeps are checked by the conformance suite
(``tests/conformance/test_transport.py``, id ``rabbitmq``); these cases look at RabbitMQ
itself with the raw aio-pika API: records as another AMQP client sees them, a group's
quorum queues with a single active consumer taken over when a member's connection
dies, publisher confirms, the capabilities and the unreachable-server message.

Needs ``scripts/services up rabbitmq``; skipped without it, failed under ``CI=true``.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import aio_pika
import pytest
import pytest_asyncio

from tidings.testing.servers import require
from tidings.testing.transport import consume
from tidings.transport import make_transport, open_transport
from tidings.transport.base import BrokerUnavailable, OutgoingRecord, Transport, Unsupported
from tidings.transport.placement import partition_for
from tidings.transport.rabbitmq.wire import KEY_HEADER, PARTITIONS_ARG, queue_name

URL = "amqp://guest:guest@127.0.0.1:5672/?sync_interval=0.3"


@pytest_asyncio.fixture
async def transport() -> AsyncIterator[Transport]:
    require(URL)
    opened = await open_transport(URL)
    yield opened
    await opened.close()


@pytest.fixture
def topic() -> str:
    return f"rmq-{uuid.uuid4().hex[:10]}"


async def raw() -> aio_pika.abc.AbstractConnection:
    return await aio_pika.connect("amqp://guest:guest@127.0.0.1:5672/")


async def test_a_record_is_a_persistent_message_routed_by_partition(
    transport: Transport, topic: str
) -> None:
    await transport.create_topic(topic, 4)
    connection = await raw()
    try:
        channel = await connection.channel()
        mine = await channel.declare_queue(exclusive=True)  # another client's own queue
        part = partition_for("order-7", 4)
        await mine.bind(topic, routing_key=str(part))
        await transport.publish(
            [OutgoingRecord(topic, b'{"n": 1}', "order-7", {"ce_type": "OrderPlaced"})]
        )
        message = await mine.get(timeout=5)
        assert message is not None
        await message.ack()
        assert message.body == b'{"n": 1}'
        assert message.routing_key == str(part)
        assert message.delivery_mode == aio_pika.DeliveryMode.PERSISTENT
        assert message.headers == {"ce_type": "OrderPlaced", KEY_HEADER: "order-7"}
        assert message.timestamp is not None
        exchange = await channel.get_exchange(topic)  # declared durable, by the topic's name
        assert exchange.name == topic
    finally:
        await connection.close()
    assert {t.name: t.partitions for t in await transport.topics()}[topic] == 4
    assert PARTITIONS_ARG.startswith("x-")


async def test_a_group_reads_quorum_queues_that_another_client_can_inspect(
    transport: Transport, topic: str
) -> None:
    group = f"g{uuid.uuid4().hex[:8]}"
    sub = await transport.subscribe(group, [topic])
    await transport.publish([OutgoingRecord(topic, f"v{i}".encode(), "k") for i in range(5)])
    part = partition_for("k", 3)
    connection = await raw()
    try:
        channel = await connection.channel()
        # passive declare: the queue exists, is durable, and holds the unconsumed records
        queue = await channel.declare_queue(queue_name(group, topic, part), passive=True)
        assert queue.declaration_result.consumer_count == 1
    finally:
        await connection.close()
    got = await consume(sub, 5, within=10)
    assert [d.record.value for d in got] == [f"v{i}".encode() for i in range(5)]
    assert set(await transport.queued(group)) == {(topic, p) for p in range(3)}
    await sub.close()


async def test_a_dead_members_queues_are_taken_over(transport: Transport, topic: str) -> None:
    """Two members on two connections; the first one's connection dies with records
    handed out but not acked: the survivor becomes active and gets them again, in order."""
    group = f"g{uuid.uuid4().hex[:8]}"
    await transport.create_topic(topic, 2)
    other = await open_transport(URL)
    try:
        first = await other.subscribe(group, [topic])
        await asyncio.sleep(0.1)
        second = await transport.subscribe(group, [topic])
        records = [OutgoingRecord(topic, f"r{i}".encode(), f"k{i % 4}") for i in range(40)]
        await transport.publish(records)
        unacked = await consume(first, 40, within=10, ack=False)
        assert len(unacked) == 40, "the first member holds both queues before the second joins"
        assert not second.assignment() & first.assignment()
        # the connection dies (as with SIGKILL: no ack, no cancel)
        await other._connection.close()  # type: ignore[attr-defined]
        again = await consume(second, 40, within=20)
        assert sorted(d.record.value for d in again) == sorted(r.value for r in records)
        deadline = asyncio.get_running_loop().time() + 10
        while second.assignment() != {(topic, 0), (topic, 1)}:  # an empty queue: via the API
            assert asyncio.get_running_loop().time() < deadline, second.assignment()
            assert await second.fetch(timeout=0.1) == []
        per_key: dict[str | None, list[int]] = {}
        for delivery in again:
            per_key.setdefault(delivery.record.key, []).append(int(delivery.record.value[1:]))
        assert all(seq == sorted(seq) for seq in per_key.values()), per_key
    finally:
        await other.close()


async def test_publish_returns_after_the_broker_confirmed(transport: Transport, topic: str) -> None:
    group = f"g{uuid.uuid4().hex[:8]}"
    await (await transport.subscribe(group, [topic])).close()
    await transport.publish([OutgoingRecord(topic, b"x" * 100, f"k{i}") for i in range(200)])
    # confirmed means enqueued: the queues already hold all of them, read by another client
    connection = await raw()
    try:
        channel = await connection.channel()
        counts = [
            (
                await channel.declare_queue(queue_name(group, topic, p), passive=True)
            ).declaration_result.message_count
            for p in range(3)
        ]
    finally:
        await connection.close()
    assert sum(counts) == 200


async def test_capabilities_and_unsupported_calls(transport: Transport, topic: str) -> None:
    assert not transport.capabilities.history and not transport.capabilities.offsets
    for call in (
        transport.committed("g"),
        transport.read(topic, 0, 0, 10),
        transport.seek("g", topic, 0, 0),
    ):
        with pytest.raises(Unsupported, match="not supported on RabbitMQ"):
            await call


async def test_an_unreachable_server_says_how_to_start_it() -> None:
    transport = make_transport("amqp://guest:guest@127.0.0.1:1/?connect_timeout=1")
    with pytest.raises(BrokerUnavailable, match="scripts/services up rabbitmq"):
        await transport.connect()
