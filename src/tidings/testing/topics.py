"""Read a topic whole, to look at what was published: for tests, demos and checks.

Not a way to consume: nothing is committed, and records published meanwhile may or may
not be included.

    records(transport, "shop.billing")         # on a connected transport
    await envelopes(broker_url, "shop.billing")  # on the broker a URL names, decoded
"""

from __future__ import annotations

from tidings import codec
from tidings.envelope import Envelope
from tidings.transport import Record, Transport, open_transport
from tidings.transport.tools import read_topic


async def records(transport: Transport, topic: str) -> list[Record]:
    """Every record of ``topic`` so far, partition after partition, in offset order
    within each (an empty list if the topic does not exist)."""
    found = [record async for record in read_topic(transport, topic)]
    return sorted(found, key=lambda r: (r.partition, r.offset))  # Kafka reads them interleaved


async def envelopes(broker: str, topic: str) -> list[Envelope]:
    """Every envelope of ``topic`` on the broker at URL ``broker``, e.g. that services
    running in other processes published."""
    transport = await open_transport(broker)
    try:
        return [codec.decode(record) for record in await records(transport, topic)]
    finally:
        await transport.close()
