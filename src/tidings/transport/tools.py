"""Helpers for tools (CLI, dashboard, replay) written against the contract alone."""

from __future__ import annotations

from collections.abc import AsyncIterator

from tidings.records import Record
from tidings.transport.contract import Transport

__all__ = ["read_topic"]


async def read_topic(transport: Transport, topic: str, batch: int = 1000) -> AsyncIterator[Record]:
    """Every record of ``topic``, partition after partition (for tools, not consumers)."""
    for info in await transport.topics():
        if info.name != topic:
            continue
        for partition, end in sorted(info.end_offsets.items()):
            offset = 0
            while offset < end:
                records = await transport.read(topic, partition, offset, batch)
                if not records:
                    break
                for record in records:
                    yield record
                offset = records[-1].offset + 1
