"""Projections: read models declared as handlers that fold events into collections.

    sales = service.projection("sales")
    totals = sales.collection("totals", SkuTotal)

    @sales.on
    async def count(event: OrderCompleted, view: ProjectionContext) -> None:
        row = await view.get(totals, event.sku) or SkuTotal()
        await view.put(totals, event.sku, row.model_copy(update={"sold": row.sold + 1}))

The rules (the engine that feeds them is :mod:`tidings.runtime.projector`):

* A projection reads the **topics** of the events it handles, by offset, from 0, with the
  transport's ``read``, not through the service's consumer group: so it can be replayed
  from the beginning at any time (a rebuild), on any broker that keeps history.
* Its rows live in **generations**: the collection ``totals`` of generation 3 is stored as
  ``sales.totals@3``. One **pointer** document (``_projections/sales``) names the
  generation that serves reads; a rebuild fills a new generation beside it and moves the
  pointer in one commit, then removes the old one.
* Each generation has a **checkpoint** (``_projections/sales@3``: the next offset per topic
  and partition), written in the same unit of work as the rows it accounts for, with an
  expected version: a batch either commits with its checkpoint or not at all, and two
  processes applying the same batch cannot both commit it.
* Several processes of a service each run its projections, but one at a time applies a
  generation: the checkpoint names the process that wrote it last (its **runner**) and
  until when (a lease of a few seconds, renewed by each step it commits); the others
  only look until the lease has lapsed, then the first to commit a step takes over. The
  expected version still decides: a lease is a courtesy that saves the others from
  applying batches only to see them rolled back, never what keeps a batch from
  counting twice.
* Handlers are deterministic folds: they read and write the projection's collections
  only, publish nothing, and must give the same rows when replayed.
* Readers go through :func:`read_current` (``ctx.read(projection, fn)``): it reads the
  pointer, runs ``fn`` on that generation, and runs it again if the pointer moved
  meanwhile (the old generation may have been removed under it).

An **inline** projection (``service.projection("orders", inline=True)``) is also applied
in the unit of work that records an event, so a request reads its own writes
(:func:`apply_inline`, called by the runtime before each commit):

* every event the service **publishes** of a handled type, and every event it
  **consumes** (its handler's unit of work, behind the inbox mark), is applied to the
  serving generation, and to the one a rebuild is filling. So the view is as fresh as
  the service's own handling, whatever a cold replay of the log is doing.
* On a broker with history the projector reads the same events from the log, so each
  application leaves a **mark** per generation (``orders~inline@3``, keyed by event id):
  the projector, meeting the event, deletes the mark and skips it; and a consumed event
  the projector applied first (its checkpoint is past the record's offset) is not
  applied again. A crash before the commit leaves neither rows nor mark nor outbox row.
* On a broker without history (RabbitMQ, SQS, EventBridge) the projector cannot run: the
  service's units of work are all that feed it, and no marks are kept. Every handled
  type must then be published or consumed by the service (:func:`inline_gaps` names the
  others; the runtime refuses to start).
* The handlers should still be idempotent per event id (the order view keeps each
  event's id in its history): a dead letter replayed later is another delivery.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, overload

import pydantic

from tidings.envelope import Envelope
from tidings.messages import Message, annotated_types, published_topic
from tidings.state import Collection
from tidings.store.base import ConcurrencyConflict, UnitOfWork
from tidings.upcasting import upcast

T = TypeVar("T", bound=pydantic.BaseModel)
R = TypeVar("R")
F = TypeVar("F", bound=Callable[..., Awaitable[None]])

POINTERS = "_projections"  # the collection of pointers and checkpoints
READ_ATTEMPTS = 10
MARKS = "~inline"  # the marks of events applied inline, per generation


class ProjectionView:
    """One generation of a projection's collections, read and written in one unit of work."""

    def __init__(self, projection: Projection, uow: UnitOfWork, generation: int) -> None:
        self.projection = projection
        self.generation = generation
        self._uow = uow

    def _name(self, collection: Collection[Any]) -> str:
        known = self.projection.collections.get(collection.name)
        if known is not collection:
            raise LookupError(
                f"projection {self.projection.name!r} has no collection {collection.name!r} "
                f"(declare it with {self.projection.name}.collection(...))"
            )
        return self.projection.stored_name(collection.name, self.generation)

    async def get(self, collection: Collection[T], key: str) -> T | None:
        doc = await self._uow.get(self._name(collection), key)
        return None if doc is None else collection.model.model_validate(doc.data)

    async def put(self, collection: Collection[T], key: str, value: T) -> None:
        if not isinstance(value, collection.model):
            raise TypeError(
                f"collection {collection.name!r} holds {collection.model.__name__}, "
                f"not {type(value).__name__}"
            )
        await self._uow.put(self._name(collection), key, value.model_dump(mode="json"))

    async def delete(self, collection: Collection[Any], key: str) -> None:
        await self._uow.delete(self._name(collection), key)

    async def list(
        self, collection: Collection[T], limit: int = 1000, after: str | None = None
    ) -> list[T]:
        """Up to ``limit`` rows in key order after ``after`` (one statement: one snapshot)."""
        docs = await self._uow.list(self._name(collection), limit, after)
        return [collection.model.model_validate(doc.data) for doc in docs]


class ProjectionContext(ProjectionView):
    """What a projection handler gets: the generation being built, and the event's envelope."""

    def __init__(
        self, projection: Projection, uow: UnitOfWork, generation: int, envelope: Envelope
    ) -> None:
        super().__init__(projection, uow, generation)
        self.envelope = envelope


@dataclasses.dataclass(frozen=True, slots=True)
class ProjectionHandler:
    message_type: type[Message]
    fn: Callable[[Any, ProjectionContext], Awaitable[None]]

    @property
    def name(self) -> str:
        return getattr(self.fn, "__qualname__", repr(self.fn))


class Projection:
    """A named read model of one service: collections and the handlers that fill them."""

    def __init__(self, name: str, service: str, *, inline: bool = False) -> None:
        if not name or any(c in name for c in " ./@*>~"):
            raise ValueError(f"projection name {name!r} must be non-empty, without spaces, ./@~")
        self.name = name
        self.service = service
        self.inline = inline  # also applied in the unit of work that records an event
        self.collections: dict[str, Collection[Any]] = {}
        self.handlers: dict[str, ProjectionHandler] = {}  # by CloudEvents type

    def __repr__(self) -> str:
        return f"Projection({self.name!r}, service={self.service!r})"

    def collection(self, name: str, model: type[T]) -> Collection[T]:
        """Declare a collection of ``model`` rows in this projection."""
        if not name or "@" in name:
            raise ValueError(f"{self.name}: collection name {name!r} must be non-empty, no @")
        known = self.collections.get(name)
        if known is not None:
            raise ValueError(f"{self.name}: collection {name!r} is declared already")
        made = Collection(name, model)
        self.collections[name] = made
        return made

    @overload
    def on(self, fn: F, /) -> F: ...

    @overload
    def on(self, *message_types: type[Message]) -> Callable[[F], F]: ...

    def on(self, *args: Any) -> Any:
        """Register ``async def f(event, view: ProjectionContext)`` for the annotated event
        type(s), or for the types named: ``@projection.on(A, B)``."""
        if len(args) == 1 and inspect.isfunction(args[0]):
            return self._register(args[0], ())

        def register(fn: F) -> F:
            return self._register(fn, args)

        return register

    def _register(self, fn: F, message_types: tuple[type[Message], ...]) -> F:
        where = f"projection {self.name}: {getattr(fn, '__qualname__', repr(fn))}"
        registered = fn  # what is returned: the check below narrows the type of fn
        if not inspect.iscoroutinefunction(fn):
            raise TypeError(f"{where} must be an async def")
        params = list(inspect.signature(fn).parameters.values())
        if len(params) != 2:
            raise TypeError(f"{where} takes (event, view)")
        for message_type in message_types or annotated_types(fn, params[0].name, where):
            if not (isinstance(message_type, type) and issubclass(message_type, Message)):
                raise TypeError(f"{where} handles {message_type!r}, not a Message")
            name = message_type.message_info.type
            if name in self.handlers:
                raise ValueError(f"projection {self.name} already handles {name}")
            published_topic(message_type)  # a handled type must name its topic
            self.handlers[name] = ProjectionHandler(message_type, fn)
        return registered

    def topics(self) -> list[str]:
        """The topics it reads."""
        return sorted({published_topic(h.message_type) for h in self.handlers.values()})

    def stored_name(self, collection: str, generation: int) -> str:
        """The store's collection name of ``collection`` in ``generation``."""
        return f"{self.name}.{collection}@{generation}"

    def checkpoint_key(self, generation: int) -> str:
        return f"{self.name}@{generation}"

    def marks_name(self, generation: int) -> str:
        """The store's collection of the events applied inline to ``generation``."""
        return f"{self.name}{MARKS}@{generation}"


# -- the pointer and the checkpoints ------------------------------------------------------
@dataclasses.dataclass(frozen=True, slots=True)
class Pointer:
    """Which generation serves reads, which one a rebuild is filling (if any), and the
    document's version (0: no pointer yet)."""

    generation: int
    building: int | None
    version: int


@dataclasses.dataclass(frozen=True, slots=True)
class Checkpoint:
    """The next offset to read per (topic, partition), and the document's version (0: none);
    the process that wrote it last and until when (time.time()) it holds the lease."""

    positions: dict[tuple[str, int], int]
    version: int
    runner: str | None = None
    until: float = 0.0

    def leased_to_another(self, runner: str, now: float) -> bool:
        return self.runner is not None and self.runner != runner and now < self.until


async def read_pointer(uow: UnitOfWork, projection: Projection) -> Pointer:
    doc = await uow.get(POINTERS, projection.name)
    if doc is None:
        return Pointer(0, None, 0)
    return Pointer(doc.data["generation"], doc.data.get("building"), doc.version)


async def write_pointer(
    uow: UnitOfWork, projection: Projection, pointer: Pointer, expected: Pointer
) -> None:
    """Move the pointer; ``ConcurrencyConflict`` if it moved since ``expected`` was read."""
    data = {"generation": pointer.generation, "building": pointer.building}
    await uow.put(POINTERS, projection.name, data, expected_version=expected.version)


async def read_checkpoint(uow: UnitOfWork, projection: Projection, generation: int) -> Checkpoint:
    doc = await uow.get(POINTERS, projection.checkpoint_key(generation))
    if doc is None:
        return Checkpoint({}, 0)
    positions = {(topic, partition): offset for topic, partition, offset in doc.data["positions"]}
    return Checkpoint(positions, doc.version, doc.data.get("runner"), doc.data.get("until", 0.0))


async def write_checkpoint(
    uow: UnitOfWork,
    projection: Projection,
    generation: int,
    positions: dict[tuple[str, int], int],
    expected_version: int,
    lease: tuple[str, float] | None = None,
) -> None:
    """Write the checkpoint of ``generation`` (with ``lease``: its runner and until when);
    ``ConcurrencyConflict`` unless it is still at ``expected_version`` (so a batch applied
    twice at once commits once)."""
    data: dict[str, Any] = {"positions": [[t, p, o] for (t, p), o in sorted(positions.items())]}
    if lease is not None:
        data["runner"], data["until"] = lease
    await uow.put(
        POINTERS, projection.checkpoint_key(generation), data, expected_version=expected_version
    )


async def set_up(
    uow: UnitOfWork,
    projection: Projection,
    positions: dict[tuple[str, int], int] | None = None,
) -> Pointer:
    """The pointer; the first generation is set up (pointer and a checkpoint at
    ``positions``, by default the beginning, in this unit of work) when the projection has
    none yet."""
    pointer = await read_pointer(uow, projection)
    if pointer.version > 0:
        return pointer
    await write_pointer(uow, projection, Pointer(1, None, 0), pointer)
    await write_checkpoint(uow, projection, 1, positions or {}, 0)
    return Pointer(1, None, 1)


def inline_gaps(projection: Projection, published: set[str], consumed: set[str]) -> list[str]:
    """The event types an inline projection handles that the service neither publishes
    nor consumes: on a broker without history nothing would ever apply them."""
    return sorted(set(projection.handlers) - published - consumed)


Position = tuple[str, int, int]  # topic, partition, offset of a record in the log


async def apply_inline(
    uow: UnitOfWork,
    projection: Projection,
    published: list[Envelope],
    consumed: tuple[Envelope, Position | None] | None = None,
    *,
    mark: bool,
) -> int:
    """Apply what a unit of work ``published`` and the event it ``consumed`` (with the
    record's position in the log, if it came from one of the projection's topics) to the
    serving generation and to the one being rebuilt, in ``uow``; how many applications.
    Types the projection does not handle are passed over.

    With ``mark`` (the broker keeps history, so the projector reads these events too),
    each application leaves a mark the projector skips the event for; a consumed event
    whose position a generation's checkpoint has passed was applied from the log already,
    and is not applied to it again. Where both race (PostgreSQL, two transactions at
    once), a handler that writes the row of the event's key makes them conflict, and the
    one retried finds the mark or the checkpoint. The pointer is only read, so inline
    writers do not conflict with each other on it; a rebuild that claims or switches
    between this read and the commit leaves the event to the log, where the projector of
    the new generation meets it.
    """
    todo: list[tuple[Envelope, Position | None]] = [
        (e, None) for e in published if e.type in projection.handlers
    ]
    if consumed is not None and consumed[0].type in projection.handlers:
        # Without marks, an event of this service's own was applied when it was published.
        if mark or consumed[0].source != projection.service:
            todo.insert(0, consumed)
    if not todo:
        return 0
    pointer = await set_up(uow, projection)
    generations = [pointer.generation]
    if pointer.building is not None:
        generations.append(pointer.building)
    applied = 0
    new_marks: dict[str, dict[str, dict[str, Any]]] = {}  # marks collection -> id -> mark
    for envelope, position in todo:
        handler = projection.handlers[envelope.type]
        data = upcast(handler.message_type, envelope.data, envelope.version)
        message = handler.message_type.model_validate(data)
        for generation in generations:
            marks = projection.marks_name(generation)
            if mark and position is not None:
                # Only this service's own events can carry their publisher's mark (events
                # of others are marked by their consumer, here, after the inbox said new).
                own = envelope.source == projection.service
                if own and await uow.get(marks, envelope.id) is not None:
                    continue  # its publisher applied it already (a service consuming its own)
                topic, partition, offset = position
                checkpoint = await read_checkpoint(uow, projection, generation)
                if checkpoint.positions.get((topic, partition), 0) > offset:
                    continue  # the projector applied it from the log already
            await handler.fn(message, ProjectionContext(projection, uow, generation, envelope))
            if mark:
                new_marks.setdefault(marks, {})[envelope.id] = {"type": envelope.type}
            applied += 1
    for marks, written in new_marks.items():
        await uow.put_many(marks, written)  # nobody waits for them: sent with what follows
    return applied


async def read_current(
    projection: Projection, uow: UnitOfWork, fn: Callable[[ProjectionView], Awaitable[R]]
) -> R:
    """``fn`` on the generation that serves reads, run again if the pointer moved meanwhile.

    Reading the pointer again after ``fn`` is what makes it safe: the old generation is
    removed only after the pointer moved, so rows read while the pointer stayed put are
    complete. No generation yet (nothing projected) reads generation 0, which is empty.
    """
    for _ in range(READ_ATTEMPTS):
        before = await read_pointer(uow, projection)
        result = await fn(ProjectionView(projection, uow, before.generation))
        after = await read_pointer(uow, projection)
        if after.generation == before.generation:
            return result
    raise ConcurrencyConflict(
        f"projection {projection.name}: the serving generation moved {READ_ATTEMPTS} times "
        "during one read"
    )
