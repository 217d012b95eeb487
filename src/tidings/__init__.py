"""Tidings: event-driven microservices for Python.

The framework API that business code uses is all here; brokers and databases are
chosen by URL when a service is run (``tidings run``), never imported by business code.
A program that publishes without being a service opens a :class:`tidings.bus.Bus` with
:func:`connect`, which imports the broker's and the store's code only when called.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tidings.envelope import Envelope, new_event_id
from tidings.eventsourcing import Aggregate, applies
from tidings.messages import Command, Event, Message, MessageInfo
from tidings.reliability.retry import NonRecoverable, RetryPolicy
from tidings.service import Collection, Context, Service, Versioned
from tidings.upcasting import upcaster

if TYPE_CHECKING:
    from tidings.bus import Bus
    from tidings.formats import SchemaSource

__all__ = [
    "Aggregate",
    "Collection",
    "Command",
    "Context",
    "Envelope",
    "Event",
    "Message",
    "MessageInfo",
    "NonRecoverable",
    "RetryPolicy",
    "Service",
    "Versioned",
    "applies",
    "connect",
    "new_event_id",
    "upcaster",
]


def connect(
    broker_url: str,
    store_url: str | None = None,
    *,
    source: str,
    flush_seconds: float = 10.0,
    schemas: SchemaSource | None = None,
) -> Bus:
    """Publish from outside a handler: ``async with tidings.connect(url, source=...) as bus``.

    Without ``store_url`` ``bus.publish`` goes straight to the broker; with it, through
    the store's outbox (see :mod:`tidings.bus`). ``schemas``: registered schemas to write
    with (``tidings.registry.wire.RegistrySchemas``).
    """
    from tidings.bus import connect as connect_bus  # here, so importing tidings stays light

    return connect_bus(
        broker_url, store_url, source=source, flush_seconds=flush_seconds, schemas=schemas
    )
