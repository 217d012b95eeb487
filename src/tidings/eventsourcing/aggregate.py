"""Event-sourced aggregates: state that is the fold of the events it recorded.

    class AccountOpened(Event, topic="billing.accounts", key="customer_id"):
        customer_id: str
        credit_limit_cents: int

    class Account(Aggregate, snapshot_every=100):
        limit_cents: int = 0                      # every field but ``id`` has a default:
        spent_cents: int = 0                      # the state before the first event

        def open(self, limit_cents: int) -> None:             # a command: decide, then record
            if self.version:
                raise ValueError(f"account {self.id} is already open")
            self.record(AccountOpened(customer_id=self.id, credit_limit_cents=limit_cents))

        @applies(AccountOpened)                                # a mutator: only assigns
        def _opened(self, event: AccountOpened) -> None:
            self.limit_cents = event.credit_limit_cents

The rules:

* An aggregate is a pydantic model with an ``id`` (its stream is ``"<name>:<id>"``, ``name``
  defaulting to the class name) and fields that all have defaults.
* Its state changes only through :meth:`Aggregate.record`, which applies the event (the
  mutator registered with ``@applies``, or an overridden :meth:`Aggregate.apply`) and keeps
  it as pending until the aggregate is saved. A command method checks its invariants
  *before* recording, since loading replays the same mutators without the checks.
* Events are the project's :class:`~tidings.messages.Event` classes, so a saved event is
  also published (through the outbox, in the same transaction as the append). Loading
  upcasts old versions with the ``@upcaster`` steps, as a consumer would.
* ``snapshot_every=N`` (class keyword) keeps the state every N events, so that loading
  starts from the latest snapshot. Snapshots carry ``snapshot_version`` (class keyword,
  default 1): raise it when the fields change, and old snapshots are then ignored. A
  snapshot that no longer validates is ignored too: a snapshot is an optimisation only.

Saving and loading go through the handler's context (``ctx.load``, ``ctx.save``), so
business code never sees a store; :mod:`tidings.eventsourcing.repository` does the work.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable, Iterable
from typing import Any, ClassVar, TypeVar

import pydantic

from tidings.messages import Event, published_topic

A = TypeVar("A", bound="Aggregate")
F = TypeVar("F", bound=Callable[..., None])

_OPTIONS = frozenset({"name", "snapshot_every", "snapshot_version", "events"})
_APPLIES = "__tidings_applies__"
# Names the base class uses; a field with one of them would hide it.
RESERVED_NAMES = frozenset(
    {"version", "record", "apply", "pending_events", "aggregate_info", "stream_id"}
)


class AggregateError(ValueError):
    """A stream that cannot be made into its aggregate (an event type it does not know, or
    data that does not validate)."""


@dataclasses.dataclass(frozen=True, slots=True)
class AggregateInfo:
    """What an aggregate class declared (see the module docstring)."""

    name: str
    snapshot_every: int | None
    snapshot_version: int
    events: dict[str, type[Event]]  # CloudEvents type -> class, of the events it applies
    mutators: dict[str, str]  # CloudEvents type -> name of the method that applies it

    @property
    def snapshot_schema(self) -> str:
        return f"{self.name}:{self.snapshot_version}"


def applies(*event_types: type[Event]) -> Callable[[F], F]:
    """Mark the decorated method as the mutator of ``event_types`` (it only assigns state)."""
    for event_type in event_types:
        if not (isinstance(event_type, type) and issubclass(event_type, Event)):
            raise TypeError(f"@applies({event_type!r}): not an Event class")
        published_topic(event_type)  # an event without a topic could not be published

    def mark(fn: F) -> F:
        if inspect.iscoroutinefunction(fn):
            raise TypeError(f"mutator {fn.__qualname__}: must be a plain def, not async")
        setattr(fn, _APPLIES, (*getattr(fn, _APPLIES, ()), *event_types))
        return fn

    return mark


class Aggregate(pydantic.BaseModel):
    """Base of event-sourced aggregates; see the module docstring."""

    model_config = pydantic.ConfigDict(extra="forbid")

    id: str

    aggregate_info: ClassVar[AggregateInfo] = AggregateInfo("Aggregate", None, 1, {}, {})
    _declared: ClassVar[dict[str, Any]] = {}
    _version: int = pydantic.PrivateAttr(0)
    _pending: list[Event] = pydantic.PrivateAttr(default_factory=list)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        cls._declared = {k: kwargs.pop(k) for k in list(kwargs) if k in _OPTIONS}
        super().__init_subclass__(**kwargs)

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        cls.aggregate_info = _declare(cls, cls._declared)

    # -- what it is --------------------------------------------------------------------
    @property
    def version(self) -> int:
        """How many events its stream holds, counting the pending ones (0: none yet)."""
        return self._version

    @classmethod
    def stream_id(cls, id: str) -> str:
        """The stream that holds the events of the aggregate ``id``."""
        return f"{cls.aggregate_info.name}:{id}"

    def pending_events(self) -> list[Event]:
        """Events recorded since it was loaded or saved, oldest first."""
        return list(self._pending)

    # -- changing it -------------------------------------------------------------------
    def record(self, event: Event) -> None:
        """Apply ``event`` and keep it until the aggregate is saved."""
        info = type(self).aggregate_info
        if type(event).message_info.type not in info.events:
            raise TypeError(
                f"{type(self).__name__} does not apply {type(event).__name__}: add a mutator "
                f"(@applies({type(event).__name__})) or list it in events=[...]"
            )
        self.apply(event)
        self._version += 1
        self._pending.append(event)

    def apply(self, event: Event) -> None:
        """Change the state as ``event`` says: calls the method marked ``@applies``.

        Override it to apply every event in one place (then name the classes with the
        ``events=[...]`` class keyword)."""
        name = type(self).aggregate_info.mutators.get(type(event).message_info.type)
        if name is None:
            raise TypeError(
                f"{type(self).__name__}.apply: no mutator for {type(event).__name__}"
                f" (@applies({type(event).__name__}))"
            )
        getattr(self, name)(event)

    # -- used by the repository ----------------------------------------------------------
    def _saved(self) -> None:
        self._pending.clear()

    def _at_version(self, version: int) -> None:
        self._version = version


def _declare(cls: type[Aggregate], declared: dict[str, Any]) -> AggregateInfo:
    """Check a class's keywords, fields and mutators; the :class:`AggregateInfo` they make."""
    where = cls.__name__
    for field_name, field in cls.model_fields.items():
        if field_name in RESERVED_NAMES:
            raise TypeError(f"{where}.{field_name}: the name is used by Aggregate; rename it")
        if field_name != "id" and field.is_required():
            raise TypeError(
                f"{where}.{field_name} needs a default: an aggregate starts from its defaults "
                "(the state before its first event)"
            )
    name = declared.get("name", cls.__name__)
    every = declared.get("snapshot_every")
    version = declared.get("snapshot_version", 1)
    if not isinstance(name, str) or not name or ":" in name:
        raise TypeError(f"{where}: name must be a non-empty string without ':', not {name!r}")
    if every is not None and (not isinstance(every, int) or isinstance(every, bool) or every < 1):
        raise TypeError(f"{where}: snapshot_every must be a whole number from 1, not {every!r}")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise TypeError(f"{where}: snapshot_version must be a whole number from 1, not {version!r}")
    events: dict[str, type[Event]] = {}
    mutators: dict[str, str] = {}
    for klass in reversed(cls.__mro__):  # a subclass's mutator wins over its base's
        for attr, value in vars(klass).items():
            for event_type in getattr(value, _APPLIES, ()):
                events[event_type.message_info.type] = event_type
                mutators[event_type.message_info.type] = attr
    listed: Iterable[Any] = declared.get("events", ())
    for event_type in listed:
        if not (isinstance(event_type, type) and issubclass(event_type, Event)):
            raise TypeError(f"{where}: events=[...] lists {event_type!r}, not an Event class")
        published_topic(event_type)
        events[event_type.message_info.type] = event_type
    return AggregateInfo(name, every, version, events, mutators)
