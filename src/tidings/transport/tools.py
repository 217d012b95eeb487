"""Helpers for tools (CLI, dashboard, replay) written against the contract alone.

Tools read a window of the log, never all of it by default: the records stored since a
time (each partition from its ``offset_for_time``, the broker's time index), of the
topics that matter, fetched with ``read_ranges`` (on Kafka, every partition at once).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable

from tidings.records import Record
from tidings.transport.contract import PartitionRange, Transport
from tidings.transport.errors import (
    AuthenticationFailed,
    InvalidBrokerURL,
    NotAuthorized,
    TransportError,
    Unsupported,
)

__all__ = ["create_topic_settling", "partition_ranges", "read_topic"]

log = logging.getLogger("tidings.transport")
# Errors a second try cannot mend: raised at the first.
_FINAL_TOPIC_ERRORS = (AuthenticationFailed, NotAuthorized, InvalidBrokerURL, Unsupported)


async def create_topic_settling(
    transport: Transport,
    topic: str,
    partitions: int | None = None,
    *,
    within: float,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> None:
    """Create ``topic``, again every 2 s for ``within`` seconds while the broker settles.

    A fresh replicated cluster (three JetStream nodes, three Kafka brokers) can time out a
    create while it elects its leaders. What retrying cannot mend (a refused user or
    permission, a bad URL, a capability the broker lacks) is raised at once."""
    deadline = time.monotonic() + within
    while True:
        try:
            await transport.create_topic(topic, partitions)
            return
        except _FINAL_TOPIC_ERRORS:
            raise
        except (TransportError, TimeoutError) as exc:
            if time.monotonic() > deadline:
                raise
            log.warning("creating topic %s failed (%s); again in 2 s", topic, exc)
            await sleep(2.0)


async def partition_ranges(
    transport: Transport,
    since: float | None = None,
    topics: Callable[[str], bool] | None = None,
) -> list[PartitionRange]:
    """The ranges of the records stored since ``since`` (seconds since the epoch; None:
    every record kept) in the topics ``topics`` accepts (None: every topic), partition
    by partition; partitions with nothing in the window are left out."""
    ends = {
        (info.name, partition): end
        for info in await transport.topics()
        if topics is None or topics(info.name)
        for partition, end in info.end_offsets.items()
    }
    return await _since(transport, ends, since)


async def _since(
    transport: Transport, ends: dict[tuple[str, int], int], since: float | None
) -> list[PartitionRange]:
    """The ranges from the first offset stored since ``since`` to ``ends``, of the
    partitions with records in that window."""
    ends = {where: end for where, end in ends.items() if end > 0}
    if since is None:
        starts = dict.fromkeys(ends, 0)
    else:
        starts = await transport.offsets_for_time(ends, since)
    return [
        (t, p, starts[(t, p)], end) for (t, p), end in sorted(ends.items()) if starts[(t, p)] < end
    ]


async def read_topic(
    transport: Transport, topic: str, batch: int = 1000, *, since: float | None = None
) -> AsyncIterator[Record]:
    """The records of ``topic`` (stored since ``since``, if given), each partition in
    order (for tools, not consumers)."""
    # Only this topic's offsets: asking every topic's (partition_ranges) on a shared broker
    # costs a request per partition and meets every other topic's leader elections.
    ranges = await _since(transport, await transport.end_offsets([topic]), since)
    async for records in transport.read_ranges(ranges, batch):
        for record in records:
            yield record
