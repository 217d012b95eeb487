"""Typed messages: events (facts, past tense) and commands (requests, imperative).

A message is a pydantic v2 model. What the framework needs to know about it is declared
with class keywords and checked when the class is created, so a typo fails at import:

    class OrderPlaced(Event, topic="shop.orders", key="order_id", version=2):
        order_id: str
        amount_cents: int

* ``topic``: the topic it is published to (a stream of one kind of aggregate). Every
  concrete event has one; a base class that only shares fields or a key says
  ``abstract=True``. A command may have none (the body of an HTTP request, say).
* ``key``: the field holding the aggregate id. Its value becomes the envelope's
  ``subject`` and so the partition key: order is kept per key.
* ``version``: the schema version (default 1), written to the envelope's ``dataschema``
  (``urn:tidings:schema:<type>:<version>``) and read back as :attr:`Envelope.version`.
* ``type``: the CloudEvents ``type`` (default: the class name).

``topic`` and ``key`` are inherited by subclasses; ``version`` and ``type`` belong to one
class. The declaration is read back as ``OrderPlaced.message_info`` (a
:class:`MessageInfo`). ``message_info`` and ``message_key`` are the only names the
framework adds to a model, and a field may not shadow them (nor pydantic's ``model_*``).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Callable
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict

from tidings.envelope import SCHEMA_PREFIX, Envelope, new_event_id, utc_now

# Names Message adds to every model; a field with one of these names would hide it.
RESERVED_NAMES = frozenset({"message_info", "message_key"})
_OPTIONS = frozenset({"topic", "key", "version", "type", "abstract"})


@dataclasses.dataclass(frozen=True, slots=True)
class MessageInfo:
    """What a message class declared (see the module docstring)."""

    type: str
    topic: str | None = None
    key: str | None = None
    version: int = 1
    abstract: bool = False

    @property
    def schema(self) -> str:
        """The envelope's ``dataschema``: names the type and its version."""
        return f"{SCHEMA_PREFIX}{self.type}:{self.version}"


class Message(BaseModel):
    """Base of events and commands. Immutable."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    message_info: ClassVar[MessageInfo] = MessageInfo(type="Message", abstract=True)
    # Declared options waiting for __pydantic_init_subclass__ (fields are known only then).
    _declared: ClassVar[dict[str, Any]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        # Keep our keywords from object.__init_subclass__, which takes none.
        cls._declared = {k: kwargs.pop(k) for k in list(kwargs) if k in _OPTIONS}
        super().__init_subclass__(**kwargs)

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        cls.message_info = _declare(cls, cls._declared)

    def message_key(self) -> str | None:
        """The aggregate id this message is about (the partition key), if it declares one."""
        key = self.message_info.key
        return None if key is None else str(getattr(self, key))


def _declare(cls: type[Message], declared: dict[str, Any]) -> MessageInfo:
    """Check a class's keywords against its fields; the :class:`MessageInfo` they make."""
    name = cls.__name__
    parent = next(
        (b.message_info for b in cls.__mro__[1:] if isinstance(b, type) and issubclass(b, Message)),
        Message.message_info,
    )
    for field in cls.model_fields:
        if field in RESERVED_NAMES:
            raise TypeError(
                f"{name}.{field}: a field may not be named {field!r}, which tidings.Message "
                "uses; rename the field (an alias keeps the JSON name: Field(alias=...))"
            )
    topic = declared.get("topic", parent.topic)
    key = declared.get("key", parent.key)
    version = declared.get("version", 1)
    type_name = declared.get("type", cls.__name__)
    abstract = bool(declared.get("abstract", False))
    if topic is not None and (not isinstance(topic, str) or not topic.strip()):
        raise TypeError(f"{name}: topic must be a non-empty string, not {topic!r}")
    if key is not None and key not in cls.model_fields:
        fields = ", ".join(cls.model_fields) or "none"
        raise TypeError(f"{name}: key={key!r} is not a field of {name} (its fields: {fields})")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise TypeError(f"{name}: version must be a whole number from 1, not {version!r}")
    if not isinstance(type_name, str) or not type_name:
        raise TypeError(f"{name}: type must be a non-empty string, not {type_name!r}")
    event_base = globals().get("Event")  # None while Event itself is being created
    if event_base is not None and issubclass(cls, event_base) and topic is None and not abstract:
        raise TypeError(
            f'{name}: an event needs a topic: class {cls.__name__}(..., topic="..."); '
            "a base class of other events says abstract=True"
        )
    return MessageInfo(type=type_name, topic=topic, key=key, version=version, abstract=abstract)


def published_topic(message_type: type[Message]) -> str:
    """The topic a message type is published to, or TypeError naming the class."""
    topic = message_type.message_info.topic
    if topic is None:
        raise TypeError(
            f"{message_type.__name__} declares no topic: class {message_type.__name__}"
            '(..., topic="...")'
        )
    return topic


def new_envelope(
    message: Message,
    *,
    source: str,
    cause: Envelope | None = None,
    key: str | None = None,
) -> Envelope:
    """The envelope ``message`` is published in (see :func:`raw_envelope`).

    ``key`` overrides the declared key (the partition key).
    """
    info = message.message_info
    return raw_envelope(
        info.type,
        message.model_dump(mode="json"),
        source=source,
        subject=key if key is not None else message.message_key(),
        dataschema=info.schema,
        cause=cause,
    )


def raw_envelope(
    type_: str,
    data: dict[str, Any],
    *,
    source: str,
    subject: str | None = None,
    dataschema: str | None = None,
    cause: Envelope | None = None,
) -> Envelope:
    """An envelope for ``data`` of CloudEvents type ``type_`` (no message class needed).

    Published while handling ``cause``, it inherits that event's correlation id (and
    trace) and takes its id as causation id; without a cause it starts a new correlation.
    """
    event_id = new_event_id()
    return Envelope(
        id=event_id,
        source=source,
        type=type_,
        subject=subject,
        data=data,
        time=utc_now(),
        dataschema=dataschema,
        correlationid=(cause.correlationid or cause.id) if cause else event_id,
        causationid=cause.id if cause else None,
        traceparent=cause.traceparent if cause else None,
    )


class Event(Message, abstract=True):
    """Something that happened. Name it in the past tense: ``OrderPlaced``.

    Consumers read events as tolerant readers: fields they do not know are ignored, so a
    producer can add an optional field without breaking consumers that are not upgraded.
    """

    model_config = ConfigDict(frozen=True, extra="ignore")


class Command(Message, abstract=True):
    """A request for something to happen. Name it in the imperative: ``ReserveInventory``.

    Commands are strict (unknown fields are an error): a request should be understood
    whole or refused with a reason.
    """


def annotated_types(fn: Callable[..., Any], param: str, where: str) -> tuple[type[Message], ...]:
    """The message types a handler takes, from its ``param`` annotation (``A | B``: both)."""
    try:
        hints = typing.get_type_hints(fn)
    except NameError as exc:
        raise TypeError(f"{where}: cannot resolve the message annotation ({exc})") from None
    hint = hints.get(param)
    if hint is None:
        raise TypeError(
            f"{where}: annotate the message parameter ({param}: OrderPlaced) "
            "or name the types: @service.on(OrderPlaced)"
        )
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return tuple(typing.get_args(hint))
    return (hint,)
