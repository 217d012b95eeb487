"""Units of work whose published messages go through the outbox, and envelopes sent direct.

One place for what a handler, an HTTP request and a producer (:mod:`tidings.bus`) all do
with a unit of work: open a store transaction, hand out a :class:`~tidings.service.Context`,
and, before the commit, encode what the context published in the transport's content mode,
refuse a record the broker could never take (now, not in the relay forever), and queue
the records in the outbox; after the commit, wake whoever relays it. Inline projections
(:func:`tidings.projection.apply_inline`) are applied there too, before the commit.

With a registry (``schemas``), each envelope is encoded with the schema registered for its
type at start (:mod:`tidings.formats`): Avro in Confluent's framing or JSON, its
``dataschema`` the registry's URL of it. That is a lookup in memory, never a registry call,
so the outbox takes events whether or not the registry is up.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable

from tidings import codec
from tidings.envelope import Envelope
from tidings.formats import SchemaSource
from tidings.messages import Message, new_envelope, published_topic
from tidings.projection import Position, Projection, apply_inline
from tidings.records import OutgoingRecord
from tidings.service import Context
from tidings.store.base import Store, UnitOfWork
from tidings.transport.base import Transport


class OutboxUnits:
    """Units of work of one service (or producer) named ``name``."""

    def __init__(
        self,
        name: str,
        store: Store,
        transport: Transport,
        content_mode: codec.ContentMode,
        *,
        on_outbox: Callable[[], None],
        stamp: Callable[[str, Envelope], Envelope] | None = None,
        publishes: tuple[type[Message], ...] = (),
        schemas: SchemaSource | None = None,
        inline: tuple[Projection, ...] = (),
    ) -> None:
        self.name = name
        self.store = store
        self.transport = transport
        self.content_mode = content_mode
        self.on_outbox = on_outbox  # called after a commit that queued outbox rows
        self.stamp = stamp  # gives a published envelope its producer span, say
        self.publishes = publishes  # the service's declared types (empty: any)
        self.schemas = schemas  # the registered schemas to write with (None: plain JSON)
        self.inline = inline  # projections applied before each commit
        # Without history no projector reads the log: nothing to mark for it.
        self.from_log = transport.capabilities.history

    @contextlib.asynccontextmanager
    async def open(
        self, cause: Envelope | None = None, position: Position | None = None
    ) -> AsyncIterator[tuple[UnitOfWork, Context]]:
        """A unit of work with a context: what the context published goes to the outbox.
        ``position``: where ``cause`` is in the log, if it was read from one."""
        async with self.store.unit_of_work(self.name) as uow:
            ctx = self.context(uow, cause)
            yield uow, ctx
            await self.project(uow, ctx, position)
            if ctx.outgoing:
                await uow.add_outbox(self.encoded(ctx))
        if ctx.outgoing:
            self.on_outbox()

    def context(self, uow: UnitOfWork, cause: Envelope | None) -> Context:
        return Context(self.name, uow, cause, stamp=self.stamp, publishes=self.publishes)

    async def project(
        self, uow: UnitOfWork, ctx: Context, position: Position | None = None
    ) -> None:
        """Apply the inline projections to what ``ctx`` published and to the event it
        consumed (its cause, from ``position`` in the log), in ``uow``."""
        consumed = None if ctx.cause is None else (ctx.cause, position)
        for projection in self.inline:
            if position is not None and position[0] not in projection.topics():
                at = None  # a replayed dead letter: not a position the projector reads
            else:
                at = position
            cause = None if consumed is None else (consumed[0], at)
            envelopes = [o.envelope for o in ctx.outgoing]
            await apply_inline(uow, projection, envelopes, cause, mark=self.from_log)

    def encoded(self, ctx: Context) -> list[OutgoingRecord]:
        """What ``ctx`` published, as records; RecordTooLarge if the broker would refuse one."""
        records = [
            encode(o.envelope, o.topic, self.content_mode, self.schemas) for o in ctx.outgoing
        ]
        self.transport.check_size(records)
        return records


def encode(
    envelope: Envelope, topic: str, mode: codec.ContentMode, schemas: SchemaSource | None
) -> OutgoingRecord:
    """``envelope`` as a record, with its type's registered schema if ``schemas`` has one."""
    schema = schemas.writer(envelope.type) if schemas is not None else None
    return codec.encode(envelope, topic, mode, schema)


def direct_record(
    message: Message,
    transport: Transport,
    *,
    source: str,
    cause: Envelope | None = None,
    key: str | None = None,
    schemas: SchemaSource | None = None,
) -> tuple[Envelope, OutgoingRecord]:
    """``message`` as published straight to the broker, without an outbox: the envelope a
    service would give it, encoded in the transport's content mode (with its registered
    schema if ``schemas`` has one)."""
    topic = published_topic(type(message))
    envelope = new_envelope(message, source=source, cause=cause, key=key)
    return envelope, encode(envelope, topic, transport.content_mode, schemas)
