"""Read a topic whole, to look at what was published: for tests, demos and checks.

Not a way to consume: nothing is committed, and records published meanwhile may or may
not be included.

    records(transport, "shop.billing")         # on a connected transport
    await envelopes(broker_url, "shop.billing")  # on the broker a URL names, decoded
"""

from __future__ import annotations

import uuid

from tidings import codec
from tidings.envelope import Envelope
from tidings.transport import Record, Transport, open_transport
from tidings.transport.tools import read_topic


async def records(transport: Transport, topic: str) -> list[Record]:
    """Every record of ``topic`` so far, partition after partition, in offset order
    within each (an empty list if the topic does not exist)."""
    found = [record async for record in read_topic(transport, topic)]
    return sorted(found, key=lambda r: (r.partition, r.offset))  # Kafka reads them interleaved


async def envelopes(broker: str, topic: str, *, witness: str | None = None) -> list[Envelope]:
    """Every envelope of ``topic`` on the broker at URL ``broker``, e.g. that services
    running in other processes published; with ``witness`` (see :func:`witness`), those
    that group kept, taken from it."""
    transport = await open_transport(broker)
    try:
        if witness is not None:
            kept = await _drain(transport, witness, topic, quiet=1.0)
            return [codec.decode(record) for record in kept]
        return [codec.decode(record) for record in await records(transport, topic)]
    finally:
        await transport.close()


async def witness(broker: str, topic: str) -> str | None:
    """A fresh group that keeps ``topic``'s records from now on, on a broker without
    history (RabbitMQ: a queue keeps what is published once it exists), for
    ``envelopes(broker, topic, witness=group)`` to read later; None where the log can
    be read whole, as ``envelopes`` does by default."""
    transport = await open_transport(broker)
    try:
        if transport.capabilities.history:
            return None
        group = f"witness-{uuid.uuid4().hex[:10]}"
        await (await transport.subscribe(group, [topic])).close()
        return group
    finally:
        await transport.close()


async def _drain(transport: Transport, group: str, topic: str, quiet: float) -> list[Record]:
    """What ``group`` holds of ``topic``, until nothing came for ``quiet`` seconds."""
    sub = await transport.subscribe(group, [topic])
    got: list[Record] = []
    try:
        while deliveries := await sub.fetch(max_records=500, timeout=quiet):
            got += [d.record for d in deliveries]
            for delivery in deliveries:
                await delivery.ack()
    finally:
        await sub.close()
    return got
