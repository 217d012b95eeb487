"""Typed messages: events (facts, past tense) and commands (requests, imperative).

A message is a pydantic v2 model. Its class says three things the framework needs:

* ``__topic__``: the topic it is published to (a stream of one kind of aggregate);
* ``__subject__``: the field holding the aggregate id, which becomes the envelope's
  ``subject`` and so the partition key (order is kept per subject);
* ``__version__``: the schema version, written to the envelope's ``dataschema``.

The CloudEvents ``type`` is the class name (or ``__type_name__``); a service's handlers map
each type they handle to its class.
"""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict


class Message(BaseModel):
    """Base of events and commands. Immutable."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    __topic__: ClassVar[str] = ""
    __subject__: ClassVar[str | None] = None
    __version__: ClassVar[int] = 1
    __type_name__: ClassVar[str] = ""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if not cls.__dict__.get("__type_name__"):
            cls.__type_name__ = cls.__name__

    @classmethod
    def type_name(cls) -> str:
        return cls.__type_name__ or cls.__name__

    @classmethod
    def schema_uri(cls) -> str:
        return f"urn:tidings:schema:{cls.type_name()}:{cls.__version__}"

    def subject(self) -> str | None:
        """The aggregate id this message is about (the partition key)."""
        if self.__subject__ is None:
            return None
        return str(getattr(self, self.__subject__))


class Event(Message):
    """Something that happened. Name it in the past tense: ``OrderPlaced``.

    Consumers read events as tolerant readers: fields they do not know are ignored, so a
    producer can add an optional field without breaking consumers that are not upgraded.
    """

    model_config = ConfigDict(frozen=True, extra="ignore")


class Command(Message):
    """A request for something to happen. Name it in the imperative: ``ReserveInventory``.

    Commands are strict (unknown fields are an error): a request should be understood
    whole or refused with a reason.
    """
