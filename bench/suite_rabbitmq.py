"""RabbitMQ: the framework's transport against raw aio-pika, and the shop on RabbitMQ.

Publish: batches of 500 1 KiB records, every publisher confirm awaited (framework
``publish`` vs raw ``exchange.publish`` tasks + gather on a confirming channel), to a
direct exchange bound to one quorum queue. Consume: take and ack every record
(framework Subscription vs a raw consumer with the same prefetch, acking each message).
Rounds alternate which publisher goes first; medians. One partition on both sides.
"""

from __future__ import annotations

import asyncio
import statistics
import time
import uuid
from typing import Any

import aio_pika

from bench import shop
from bench.framework_rates import BATCH, PAYLOAD, framework_consume, framework_publish
from tidings.transport import open_transport

URL = "amqp://guest:guest@127.0.0.1:5672/"
STORE = "postgresql://127.0.0.1:5432/tidings"
PREFETCH = 256  # the transport's default
QUORUM = {"x-queue-type": "quorum"}


async def _raw_publish(exchange: aio_pika.abc.AbstractExchange, n: int) -> float:
    started = time.perf_counter()
    for _ in range(n // BATCH):
        sends = [
            asyncio.ensure_future(
                exchange.publish(
                    aio_pika.Message(PAYLOAD, delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
                    routing_key="0",
                )
            )
            for _ in range(BATCH)
        ]
        await asyncio.gather(*sends)
    return n / (time.perf_counter() - started)


async def _raw_consume(queue: aio_pika.abc.AbstractQueue, n: int) -> float:
    done = asyncio.Event()
    seen = 0

    async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
        nonlocal seen
        await message.ack()
        seen += 1
        if seen >= n:
            done.set()

    started = time.perf_counter()
    tag = await queue.consume(on_message)
    await asyncio.wait_for(done.wait(), 300)
    rate = n / (time.perf_counter() - started)
    await queue.cancel(tag)
    return rate


async def _clients(n: int, rounds: int) -> dict[str, float]:
    connection = await aio_pika.connect(URL)
    channel = await connection.channel(publisher_confirms=True)
    await channel.set_qos(prefetch_count=PREFETCH)
    transport = await open_transport(URL)
    rows: dict[str, list[float]] = {"raw_pub": [], "fw_pub": [], "raw_con": [], "fw_con": []}
    queues: list[str] = []
    try:
        for round_ in range(rounds):
            name = f"benchraw-{uuid.uuid4().hex[:8]}"
            exchange = await channel.declare_exchange(name, aio_pika.ExchangeType.DIRECT)
            queue = await channel.declare_queue(name, durable=True, arguments=QUORUM)
            await queue.bind(exchange, routing_key="0")
            topic, group = f"bench-{uuid.uuid4().hex[:8]}", f"bench{uuid.uuid4().hex[:8]}"
            await transport.create_topic(topic, 1)
            await (
                await transport.subscribe(group, [topic])
            ).close()  # its queue, before publishing
            queues += [name, f"{group}:{topic}:0"]
            pair = [
                ("raw_pub", _raw_publish(exchange, n)),
                ("fw_pub", framework_publish(transport, topic, n)),
            ]
            for key, job in pair if round_ % 2 == 0 else reversed(pair):
                rows[key].append(await job)
            rows["raw_con"].append(await _raw_consume(queue, n))
            rows["fw_con"].append(await framework_consume(transport, group, topic, n))
    finally:
        for name in queues:  # leave the server as we found it (exchanges are cheap; kept)
            try:
                await channel.queue_delete(name)
            except Exception:
                pass
        await transport.close()
        await connection.close()
    return {k: statistics.median(v) for k, v in rows.items()}


def run(n: int = 5_000, rounds: int = 3) -> dict[str, Any]:
    """Fewer records and orders than the Kafka and NATS suites: a quorum queue writes
    each confirmed batch to disk, at about a thousand 1 KiB messages a second here."""
    m = asyncio.run(_clients(n, rounds))
    result: dict[str, Any] = {
        "publish_events_per_s": round(m["fw_pub"]),
        "raw_publish_events_per_s": round(m["raw_pub"]),
        "publish_ratio_to_raw": round(m["fw_pub"] / m["raw_pub"], 3),
        "consume_events_per_s": round(m["fw_con"]),
        "raw_consume_events_per_s": round(m["raw_con"]),
        "consume_ratio_to_raw": round(m["fw_con"] / m["raw_con"], 3),
    }
    result.update(shop.run(URL, STORE, orders=300))
    return result
