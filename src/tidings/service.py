"""The framework API that business code uses: services, handlers, typed state, context.

    from tidings import Context, Service

    inventory = Service("inventory")
    stock = inventory.collection("stock", StockItem)      # a pydantic model per document

    @inventory.on                                         # the type comes from the annotation
    async def reserve(event: OrderPlaced, ctx: Context) -> None:
        item = await ctx.get(stock, event.sku)            # StockItem | None
        ...
        await ctx.put(stock, event.sku, item.model_copy(update={"available": left}))
        ctx.publish(InventoryReserved(order_id=event.order_id, ...))

A service's name is its consumer group. A handler runs inside a unit of work: what it
writes with ``ctx.put``, the id of the event it consumed (the inbox) and what it passes
to ``ctx.publish`` (the outbox) commit together, or not at all. A ``Service`` is only a
declaration: nothing here knows which broker or database is used, and nothing is bound
to it when it runs. Whatever runs it (:mod:`tidings.runtime`) hands each handler its
``Context``, and an HTTP app gets one per request from :mod:`tidings.http`.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Awaitable, Callable, Iterable
from datetime import datetime
from typing import Any, TypeVar, overload

import pydantic

from tidings.envelope import Envelope
from tidings.eventsourcing import repository
from tidings.eventsourcing.aggregate import Aggregate
from tidings.messages import Message, annotated_types, new_envelope, published_topic
from tidings.projection import Projection, ProjectionView, read_current
from tidings.records import Record
from tidings.reliability.retry import RetryPolicy
from tidings.state import Collection as Collection
from tidings.state import Versioned as Versioned
from tidings.store.base import UnitOfWork
from tidings.timers import TIMERS, Timer, new_timer

M = TypeVar("M", bound=Message)
T = TypeVar("T", bound=pydantic.BaseModel)
A = TypeVar("A", bound=Aggregate)
R = TypeVar("R")
F = TypeVar("F", bound=Callable[..., Awaitable[None]])
StartupHook = Callable[["Context"], Awaitable[None]]
# Turns a record that is not a CloudEvent (a foreign system's) into an envelope, or None
# to skip it; raises codec.DecodeError with the reason for one it cannot read.
ForeignDecoder = Callable[[Record], Envelope | None]
TimerHandler = Callable[[Timer, "Context"], Awaitable[None]]


@dataclasses.dataclass(frozen=True, slots=True)
class Outgoing:
    """A message published in a unit of work, waiting for the commit."""

    topic: str
    envelope: Envelope


class Context:
    """What a handler gets besides its message: typed state, publish, and the cause.

    One context belongs to one unit of work; it is made by whatever runs the service.
    """

    def __init__(
        self,
        service: str,
        uow: UnitOfWork,
        cause: Envelope | None = None,
        stamp: Callable[[str, Envelope], Envelope] | None = None,
        publishes: tuple[type[Message], ...] = (),
    ) -> None:
        self.service = service
        self.cause = cause
        self.publishes = publishes  # declared by the service; empty: anything
        self.outgoing: list[Outgoing] = []
        self._uow = uow
        # Set by the runtime: lets tracing give the envelope its producer span's traceparent.
        self._stamp = stamp

    @property
    def correlation_id(self) -> str | None:
        if self.cause is None:
            return None
        return self.cause.correlationid or self.cause.id

    # -- state ------------------------------------------------------------------------
    async def get(self, collection: Collection[T], key: str) -> T | None:
        found = await self.get_versioned(collection, key)
        return None if found is None else found.value

    async def get_versioned(self, collection: Collection[T], key: str) -> Versioned[T] | None:
        """The document with its version, for :meth:`put` with ``expected_version``."""
        doc = await self._uow.get(collection.name, key)
        if doc is None:
            return None
        return Versioned(collection.model.model_validate(doc.data), doc.version)

    async def put(
        self,
        collection: Collection[T],
        key: str,
        value: T,
        expected_version: int | None = None,
    ) -> int:
        """Write ``value`` under ``key``; returns the new version.

        With ``expected_version`` the write fails with ``ConcurrencyConflict`` unless the
        stored document is still at that version (0: it must not exist yet).
        """
        if not isinstance(value, collection.model):
            raise TypeError(
                f"collection {collection.name!r} holds {collection.model.__name__}, "
                f"not {type(value).__name__}"
            )
        return await self._uow.put(
            collection.name, key, value.model_dump(mode="json"), expected_version
        )

    async def delete(self, collection: Collection[Any], key: str) -> None:
        await self._uow.delete(collection.name, key)

    async def list(
        self, collection: Collection[T], limit: int = 100, after: str | None = None
    ) -> list[T]:
        """Up to ``limit`` documents in key order, starting after the key ``after``."""
        docs = await self._uow.list(collection.name, limit, after)
        return [collection.model.model_validate(doc.data) for doc in docs]

    async def read(self, projection: Projection, fn: Callable[[ProjectionView], Awaitable[R]]) -> R:
        """``fn`` on the projection's generation that serves reads (run again if a rebuild
        switched generations meanwhile): ``await ctx.read(sales, report)``."""
        return await read_current(projection, self._uow, fn)

    # -- publishing -------------------------------------------------------------------
    def publish(self, message: Message, *, key: str | None = None) -> Envelope:
        """Publish ``message`` when this unit of work commits (through the outbox).

        The new event inherits the correlation id of the event being handled and takes
        its id as causation id; outside a handler it starts a new correlation. ``key``
        overrides the message's declared key.
        """
        outgoing = self._outgoing(message, key)
        self.outgoing.append(outgoing)
        return outgoing.envelope

    def _outgoing(self, message: Message, key: str | None = None) -> Outgoing:
        check_publishable(self.service, self.publishes, type(message))
        topic = published_topic(type(message))
        envelope = new_envelope(message, source=self.service, cause=self.cause, key=key)
        if self._stamp is not None:
            envelope = self._stamp(topic, envelope)
        return Outgoing(topic, envelope)

    # -- durable timers (see tidings.timers) ---------------------------------------------
    async def schedule(
        self,
        kind: str,
        name: str,
        *,
        at: datetime | None = None,
        after: float | None = None,
        data: dict[str, Any] | None = None,
    ) -> Timer:
        """Arm a timer when this unit of work commits: ``service.on_timer(kind)``'s handler
        runs at ``at`` (or ``after`` seconds), in a unit of work of its own; cancel it with
        :meth:`cancel_timer` and its ``key``. It survives restarts (it is state)."""
        timer = new_timer(kind, name, at=at, after=after, data=data, cause=self.cause)
        await self.put(TIMERS, timer.key, timer)
        return timer

    async def cancel_timer(self, key: str) -> None:
        """Disarm the timer ``key`` (nothing happens if it fired or was cancelled)."""
        await self._uow.delete(TIMERS.name, key)

    # -- event-sourced aggregates -------------------------------------------------------
    async def load(
        self,
        aggregate_type: type[A],
        id: str,
        *,
        version: int | None = None,
        at: datetime | None = None,
    ) -> A | None:
        """The aggregate ``id`` rebuilt from its events (from its latest snapshot on), or
        None if it has none yet. ``version`` or ``at`` (an aware datetime) give its state
        at that version or time. See :mod:`tidings.eventsourcing`."""
        return await repository.load(self._uow, aggregate_type, id, version=version, at=at)

    async def save(self, *aggregates: Aggregate) -> None:
        """Append what each aggregate recorded to its stream and publish those events when
        this unit of work commits (the same transaction).

        ``ConcurrencyConflict`` if another unit of work appended to a stream since it was
        loaded: the runtime then runs the handler again, on the new state.
        """
        for aggregate in aggregates:
            outgoing = [self._outgoing(event) for event in aggregate.pending_events()]
            await repository.append(self._uow, aggregate, [o.envelope for o in outgoing])
            self.outgoing.extend(outgoing)  # only once the append went through


@dataclasses.dataclass(frozen=True, slots=True)
class HandlerSpec:
    message_type: type[Message]
    fn: Callable[..., Awaitable[None]]
    retry: RetryPolicy
    takes_context: bool = True

    @property
    def name(self) -> str:
        return getattr(self.fn, "__qualname__", repr(self.fn))

    def __call__(self, message: Message, ctx: Context) -> Awaitable[None]:
        return self.fn(message, ctx) if self.takes_context else self.fn(message)


class Service:
    """A named service: its handlers, collections, startup hooks and, optionally, an HTTP app."""

    def __init__(
        self,
        name: str,
        *,
        publishes: Iterable[type[Message]] = (),
        retry: RetryPolicy | None = None,
    ) -> None:
        if not name or any(c in name for c in " ./*>"):
            raise ValueError(f"service name {name!r} must be non-empty, without spaces, dots or /")
        self.name = name
        self.retry = retry or RetryPolicy()
        # What it may publish: schemas, contracts and ACLs are derived from it. Empty:
        # undeclared, anything goes (a declared service refuses to publish other types).
        self.publishes: tuple[type[Message], ...] = tuple(publishes)
        for message_type in self.publishes:
            published_topic(message_type)  # an abstract class or one without a topic fails here
        self.handlers: dict[str, HandlerSpec] = {}
        self.collections: dict[str, Collection[Any]] = {}
        self.aggregates: dict[str, type[Aggregate]] = {}  # by name, lower case
        self.projections: dict[str, Projection] = {}
        self.timer_handlers: dict[str, TimerHandler] = {}  # by kind
        self.sagas: dict[str, Any] = {}  # tidings.saga.Saga by name (declared there)
        self.startup_hooks: list[StartupHook] = []
        self.http_app: Any = None
        self.foreign_decoders: dict[str, ForeignDecoder] = {}

    def __repr__(self) -> str:
        return f"Service({self.name!r})"

    @property
    def group(self) -> str:
        """The consumer group: the service's name, shared by all its processes."""
        return self.name

    def collection(self, name: str, model: type[T]) -> Collection[T]:
        """Declare a collection of ``model`` documents in this service's state."""
        known = self.collections.get(name)
        if known is not None and known.model is not model:
            raise ValueError(
                f"{self.name}: collection {name!r} already holds {known.model.__name__}"
            )
        made = Collection(name, model)
        self.collections[name] = made
        return made

    def aggregate(self, aggregate_type: type[A]) -> type[A]:
        """Declare an event-sourced aggregate this service keeps (also as a class
        decorator), so that tools find it by name: ``tidings history account c01``."""
        if not (isinstance(aggregate_type, type) and issubclass(aggregate_type, Aggregate)):
            raise TypeError(f"{self.name}: {aggregate_type!r} is not an Aggregate class")
        name = aggregate_type.aggregate_info.name.lower()
        known = self.aggregates.get(name)
        if known is not None and known is not aggregate_type:
            raise ValueError(f"{self.name}: an aggregate named {name!r} is declared already")
        self.aggregates[name] = aggregate_type
        return aggregate_type

    def projection(self, name: str | Projection, *, inline: bool = False) -> Projection:
        """Declare a read model fed from the topics of the events its handlers take
        (``@projection.on``), rebuildable from offset 0; ``inline`` also applies it in the
        unit of work that publishes (or, without history, consumes) an event, so a request
        reads its own writes. See :mod:`tidings.projection`. A ``Projection`` made apart
        (a read model in a module of its own) is declared as it is."""
        made = name if isinstance(name, Projection) else Projection(name, self.name, inline=inline)
        if made.service != self.name:
            raise ValueError(f"{self.name}: {made!r} belongs to another service")
        if made.name in self.projections:
            raise ValueError(f"{self.name}: a projection named {made.name!r} is declared already")
        self.projections[made.name] = made
        return made

    @overload
    def on(self, fn: F, /) -> F: ...

    @overload
    def on(
        self, *message_types: type[Message], retry: RetryPolicy | None = None
    ) -> Callable[[F], F]: ...

    def on(self, *args: Any, retry: RetryPolicy | None = None) -> Any:
        """Register the decorated coroutine as a handler.

        ``@service.on`` takes the message type from the first parameter's annotation
        (``A | B`` registers both); ``@service.on(A, B, retry=...)`` names them. The
        handler is ``async def f(message)`` or ``async def f(message, ctx)``.
        """
        if len(args) == 1 and inspect.isfunction(args[0]):
            return self._register(args[0], (), retry)

        def register(fn: F) -> F:
            return self._register(fn, args, retry)

        return register

    def _register(
        self, fn: F, message_types: tuple[type[Message], ...], retry: RetryPolicy | None
    ) -> F:
        where = getattr(fn, "__qualname__", repr(fn))
        handler = fn  # what is returned: the check below narrows the type of fn
        if not inspect.iscoroutinefunction(fn):
            raise TypeError(f"{self.name}: handler {where} must be an async def")
        params = list(inspect.signature(fn).parameters.values())
        if not 1 <= len(params) <= 2:
            raise TypeError(f"{self.name}: handler {where} takes (message) or (message, ctx)")
        types_ = message_types or annotated_types(fn, params[0].name, where)
        for message_type in types_:
            if not (isinstance(message_type, type) and issubclass(message_type, Message)):
                raise TypeError(f"{self.name}: {where} handles {message_type!r}, not a Message")
            name = message_type.message_info.type
            if name in self.handlers:
                raise ValueError(f"{self.name} already handles {name}")
            published_topic(message_type)  # a handled type must name its topic
            self.handlers[name] = HandlerSpec(
                message_type, fn, retry or self.retry, takes_context=len(params) == 2
            )
        return handler

    def foreign(self, topic: str, decoder: ForeignDecoder) -> None:
        """Read ``topic``'s records with ``decoder`` instead of as CloudEvents: the records
        of a system that knows nothing of Tidings (e.g. Debezium's change events, with
        :class:`tidings.cdc.debezium.Debezium`). The envelopes it makes are dispatched by
        type like any other; a handled type's message class names ``topic`` as its own."""
        if topic in self.foreign_decoders:
            raise ValueError(f"{self.name}: topic {topic!r} has a foreign decoder already")
        self.foreign_decoders[topic] = decoder

    def on_startup(self, fn: StartupHook) -> StartupHook:
        """Run ``fn(ctx)`` in a unit of work when the service starts (e.g. to seed state)."""
        self.startup_hooks.append(fn)
        return fn

    def on_timer(self, kind: str) -> Callable[[TimerHandler], TimerHandler]:
        """Register ``async def f(timer, ctx)`` for the timers of ``kind`` this service
        arms with ``ctx.schedule(kind, ...)``; see :mod:`tidings.timers`."""

        def register(fn: TimerHandler) -> TimerHandler:
            if not inspect.iscoroutinefunction(fn):
                raise TypeError(f"{self.name}: timer handler {fn!r} must be an async def")
            if kind in self.timer_handlers:
                raise ValueError(f"{self.name} already handles timers of kind {kind!r}")
            self.timer_handlers[kind] = fn
            return fn

        return register

    def http(self, app: Any) -> Any:
        """Serve ``app`` (an ASGI app, e.g. FastAPI) with this service; returns it.

        Its endpoints get a unit of work per request from :mod:`tidings.http`.
        """
        self.http_app = app
        return app

    def topics(self) -> list[str]:
        """The topics it consumes."""
        return sorted({published_topic(s.message_type) for s in self.handlers.values()})


def check_publishable(
    service: str, publishes: tuple[type[Message], ...], message_type: type[Message]
) -> None:
    """Raise ``TypeError`` if ``service`` declared what it publishes and not this type."""
    if publishes and message_type not in publishes:
        declared = ", ".join(t.__name__ for t in publishes)
        raise TypeError(
            f"{service} publishes {message_type.__name__}, which it does not declare "
            f"(Service({service!r}, publishes=[{declared}]))"
        )
