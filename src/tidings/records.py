"""Records: what brokers carry and stores keep for them, as bytes plus string headers.

Both transports and stores use these (the outbox holds records waiting to be published),
so they live below both layers.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping


@dataclasses.dataclass(frozen=True, slots=True)
class OutgoingRecord:
    """A record to publish. ``key`` picks the partition; ``None`` spreads records."""

    topic: str
    value: bytes
    key: str | None = None
    headers: Mapping[str, str] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True, slots=True)
class Record:
    """A record as stored in the log, with its coordinates."""

    topic: str
    partition: int
    offset: int
    key: str | None
    value: bytes
    headers: Mapping[str, str]
    timestamp: float  # seconds since the epoch, when the log stored it
