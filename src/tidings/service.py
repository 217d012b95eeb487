"""The framework API that business code uses: services, handlers and their context.

    from tidings import Context, Service

    inventory = Service("inventory")

    @inventory.on(OrderPlaced)
    async def reserve(event: OrderPlaced, ctx: Context) -> None:
        stock = await ctx.state.get("stock", event.sku)
        ...
        ctx.publish(InventoryReserved(order_id=event.order_id, ...))

A service's name is its consumer group. A handler runs inside a unit of work: what it
writes to ``ctx.state``, the id of the event it consumed (the inbox) and what it passes
to ``ctx.publish`` (the outbox) commit together, or not at all. Nothing here knows which
broker or database is used; :mod:`tidings.runtime` wires that from URLs.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Protocol, TypeVar

from tidings.envelope import Envelope, new_event_id, utc_now
from tidings.messages import Message
from tidings.reliability.retry import RetryPolicy
from tidings.store.base import Document, UnitOfWork

M = TypeVar("M", bound=Message)
Handler = Callable[[Any, "Context"], Awaitable[None]]
StartupHook = Callable[["Context"], Awaitable[None]]


class State:
    """A service's own state: JSON documents in named collections, in the unit of work."""

    def __init__(self, uow: UnitOfWork) -> None:
        self._uow = uow

    async def get(self, collection: str, key: str) -> dict[str, Any] | None:
        doc = await self._uow.get(collection, key)
        return None if doc is None else doc.data

    async def get_versioned(self, collection: str, key: str) -> Document | None:
        """The document with its version, for :meth:`put` with ``expected_version``."""
        return await self._uow.get(collection, key)

    async def put(
        self,
        collection: str,
        key: str,
        data: dict[str, Any],
        expected_version: int | None = None,
    ) -> int:
        return await self._uow.put(collection, key, data, expected_version)

    async def delete(self, collection: str, key: str) -> None:
        await self._uow.delete(collection, key)

    async def list(
        self, collection: str, limit: int = 100, after: str | None = None
    ) -> list[dict[str, Any]]:
        return [doc.data for doc in await self._uow.list(collection, limit, after)]


@dataclasses.dataclass(frozen=True, slots=True)
class Outgoing:
    """A message published in a unit of work, waiting for the commit."""

    topic: str
    envelope: Envelope


class Context:
    """What a handler gets besides its event: state, publish, and where it came from."""

    def __init__(
        self,
        service: str,
        uow: UnitOfWork,
        cause: Envelope | None = None,
        stamp: Callable[[str, Envelope], Envelope] | None = None,
    ) -> None:
        self.service = service
        self.state = State(uow)
        self.cause = cause
        self.outgoing: list[Outgoing] = []
        # Set by the runtime: lets tracing give the envelope its producer span's traceparent.
        self._stamp = stamp

    @property
    def correlation_id(self) -> str | None:
        if self.cause is None:
            return None
        return self.cause.correlationid or self.cause.id

    def publish(self, message: Message, *, subject: str | None = None) -> Envelope:
        """Publish ``message`` when this unit of work commits (through the outbox).

        The new event inherits the correlation id of the event being handled and takes
        its id as causation id; outside a handler it starts a new correlation.
        """
        if not message.__topic__:
            raise TypeError(f"{type(message).__name__} declares no __topic__")
        event_id = new_event_id()
        cause = self.cause
        envelope = Envelope(
            id=event_id,
            source=self.service,
            type=message.type_name(),
            subject=subject if subject is not None else message.subject(),
            data=message.model_dump(mode="json"),
            time=utc_now(),
            dataschema=message.schema_uri(),
            correlationid=(cause.correlationid or cause.id) if cause else event_id,
            causationid=cause.id if cause else None,
            traceparent=cause.traceparent if cause else None,
        )
        if self._stamp is not None:
            envelope = self._stamp(message.__topic__, envelope)
        self.outgoing.append(Outgoing(message.__topic__, envelope))
        return envelope


@dataclasses.dataclass(frozen=True, slots=True)
class HandlerSpec:
    message_type: type[Message]
    fn: Handler
    retry: RetryPolicy

    @property
    def name(self) -> str:
        return getattr(self.fn, "__qualname__", repr(self.fn))


class Binding(Protocol):
    """What a running service is bound to (implemented by :mod:`tidings.runtime`)."""

    def unit_of_work(self) -> contextlib.AbstractAsyncContextManager[Context]: ...


class Service:
    """A named service: its handlers, its startup hooks and, optionally, an HTTP app."""

    def __init__(self, name: str, *, retry: RetryPolicy | None = None) -> None:
        if not name or any(c in name for c in " ./*>"):
            raise ValueError(f"service name {name!r} must be non-empty, without spaces, dots or /")
        self.name = name
        self.retry = retry or RetryPolicy()
        self.handlers: dict[str, HandlerSpec] = {}
        self.startup_hooks: list[StartupHook] = []
        self.http_app: Any = None
        self._binding: Binding | None = None

    @property
    def group(self) -> str:
        """The consumer group: the service's name, shared by all its processes."""
        return self.name

    def on(
        self, *message_types: type[M], retry: RetryPolicy | None = None
    ) -> Callable[
        [Callable[[M, Context], Awaitable[None]]], Callable[[M, Context], Awaitable[None]]
    ]:
        """Register the decorated coroutine as the handler of these message types."""
        if not message_types:
            raise TypeError("on() needs at least one message type")

        def register(
            fn: Callable[[M, Context], Awaitable[None]],
        ) -> Callable[[M, Context], Awaitable[None]]:
            for message_type in message_types:
                name = message_type.type_name()
                if name in self.handlers:
                    raise ValueError(f"{self.name} already handles {name}")
                if not message_type.__topic__:
                    raise TypeError(f"{message_type.__name__} declares no __topic__")
                self.handlers[name] = HandlerSpec(message_type, fn, retry or self.retry)
            return fn

        return register

    def on_startup(self, fn: StartupHook) -> StartupHook:
        """Run ``fn(ctx)`` in a unit of work when the service starts (e.g. to seed state)."""
        self.startup_hooks.append(fn)
        return fn

    def topics(self) -> list[str]:
        return sorted({spec.message_type.__topic__ for spec in self.handlers.values()})

    def bind(self, binding: Binding | None) -> None:
        self._binding = binding

    @contextlib.asynccontextmanager
    async def unit_of_work(self) -> AsyncIterator[Context]:
        """A unit of work outside any handler, e.g. in an HTTP endpoint.

        State changes and published messages commit together when the block exits.
        """
        if self._binding is None:
            raise RuntimeError(f"service {self.name!r} is not running (see tidings.runtime)")
        async with self._binding.unit_of_work() as ctx:
            yield ctx
