"""The framework's side of a broker suite's publish and consume rates (events/s), the same
on every broker so that each suite only writes its raw client's side."""

from __future__ import annotations

import time

from tidings.transport.base import OutgoingRecord, Transport

BATCH = 500  # records a publish call takes, and a fetch asks for
PAYLOAD = b"x" * 1024


async def framework_publish(transport: Transport, topic: str, n: int) -> float:
    records = [OutgoingRecord(topic, PAYLOAD, f"key-{i % 100}") for i in range(BATCH)]
    started = time.perf_counter()
    for _ in range(n // BATCH):
        await transport.publish(records)
    return n / (time.perf_counter() - started)


async def framework_consume(transport: Transport, group: str, topic: str, n: int) -> float:
    """Fetch and ack ``n`` records of ``topic`` in a group ``group``."""
    subscription = await transport.subscribe(group, [topic])
    started, seen = time.perf_counter(), 0
    while seen < n:
        for delivery in await subscription.fetch(BATCH, 5.0):
            await delivery.ack()
            seen += 1
    rate = n / (time.perf_counter() - started)
    await subscription.close()
    return rate
