"""Publishing from outside a handler: a script, a job, a web app that is not a service.

    import tidings

    async with tidings.connect("kafka://127.0.0.1:9092", source="checkout") as bus:
        await bus.publish(OrderPlaced(order_id="o-1", ...))

Without a store, :meth:`Bus.publish` sends the envelope straight to the broker and returns
once the broker has it. With a store (``store_url=``), publishing goes through the outbox
like a handler's does: the record is committed to the store first and a relay moves it
to the broker, so a broker that is briefly away loses nothing. :meth:`Bus.unit_of_work`
then publishes several messages (and writes documents) atomically. Leaving the ``async
with`` block flushes the outbox; what the broker does not take in time stays in the store
and is relayed by the next bus (or service) on the same store and source.

The envelope is the one a service would publish: :func:`tidings.messages.new_envelope`
(a new correlation, or the cause's with ``cause=``), encoded in the broker's content mode,
and with ``schemas=`` (a :class:`~tidings.formats.SchemaSource`, such as
``tidings.registry.wire.RegistrySchemas.start(Service(source, publishes=[...]), client)``)
written with its registered schema, as a service run with ``--registry`` does.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from types import TracebackType

from tidings import codec
from tidings.credentials import for_service
from tidings.envelope import Envelope
from tidings.formats import SchemaSource
from tidings.messages import Message
from tidings.reliability.outbox import OutboxRelay
from tidings.service import Context
from tidings.store import Store, make_store
from tidings.transport import Transport, make_transport
from tidings.units import OutboxUnits, direct_record

log = logging.getLogger("tidings.bus")


class Bus:
    """A producer connection to a broker (and optionally a store); use as ``async with``.

    ``source`` is the CloudEvents ``source`` of what it publishes; with a store it also
    names the outbox (and the documents a unit of work reads and writes), as a service's
    name does.
    """

    def __init__(
        self,
        broker_url: str,
        store_url: str | None = None,
        *,
        source: str,
        flush_seconds: float = 10.0,
        schemas: SchemaSource | None = None,
    ) -> None:
        if not source or not source.strip():
            raise ValueError("source must name the producer, e.g. source='checkout'")
        self.source = source
        self.flush_seconds = flush_seconds
        self.schemas = schemas  # registered schemas to write with (None: plain JSON)
        self.transport: Transport = make_transport(for_service(broker_url, source))
        self.store: Store | None = None if store_url is None else make_store(store_url, source)
        self.relay: OutboxRelay | None = None
        self.units: OutboxUnits | None = None  # with a store, once open
        self._open = False

    @property
    def content_mode(self) -> codec.ContentMode:
        return self.transport.content_mode

    # -- lifecycle -----------------------------------------------------------------------
    async def open(self) -> Bus:
        """Connect to the broker (and the store), start relaying the outbox."""
        await self.transport.connect()
        try:
            if self.store is not None:
                await self.store.connect()
                self.relay = OutboxRelay(self.store, self.transport, self.source)
                self.relay.start()
                self.units = OutboxUnits(
                    self.source,
                    self.store,
                    self.transport,
                    self.content_mode,
                    on_outbox=self.relay.wake,
                    schemas=self.schemas,
                )
        except BaseException:
            await self.transport.close()
            raise
        self._open = True
        return self

    async def close(self) -> None:
        """Flush the outbox (up to ``flush_seconds``), then disconnect."""
        if not self._open:
            return
        self._open = False
        try:
            if self.relay is not None:
                await self.relay.stop(self.flush_seconds)
            if self.store is not None:
                await self.store.close()
        finally:
            await self.transport.close()

    async def __aenter__(self) -> Bus:
        return await self.open()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # -- publishing ----------------------------------------------------------------------
    async def publish(
        self, message: Message, *, key: str | None = None, cause: Envelope | None = None
    ) -> Envelope:
        """Publish ``message`` to its topic; returns its envelope.

        Without a store it is on the broker when this returns; with one it is committed
        to the outbox and relayed right after (at the latest when the bus closes).
        ``cause`` continues that event's correlation; ``key`` overrides the declared key.
        """
        self._check_open()
        if self.store is not None:
            async with self.unit_of_work(cause) as ctx:
                return ctx.publish(message, key=key)
        envelope, record = direct_record(
            message, self.transport, source=self.source, cause=cause, key=key, schemas=self.schemas
        )
        await self.transport.publish([record])
        return envelope

    @contextlib.asynccontextmanager
    async def unit_of_work(self, cause: Envelope | None = None) -> AsyncIterator[Context]:
        """A transaction on the store: what is passed to ``ctx.publish`` (and written
        with ``ctx.put``) commits together when the block exits, or not at all."""
        self._check_open()
        if self.units is None:
            raise RuntimeError(
                "unit_of_work needs a store to commit to: "
                "tidings.connect(broker_url, store_url=..., source=...)"
            )
        async with self.units.open(cause) as (_, ctx):
            yield ctx

    def _check_open(self) -> None:
        if not self._open:
            raise RuntimeError("the bus is not open: use `async with tidings.connect(...) as bus`")


def connect(
    broker_url: str,
    store_url: str | None = None,
    *,
    source: str,
    flush_seconds: float = 10.0,
    schemas: SchemaSource | None = None,
) -> Bus:
    """A :class:`Bus` on ``broker_url`` (and ``store_url``); ``async with`` opens it."""
    return Bus(broker_url, store_url, source=source, flush_seconds=flush_seconds, schemas=schemas)
