"""The envelope: CloudEvents 1.0 attributes around one event's payload.

Every message on every transport is an :class:`Envelope`. Its attributes are CloudEvents
1.0 (``id``, ``source``, ``type``, ``specversion``, ``time``, ``subject``,
``datacontenttype``, ``dataschema``) plus three extensions that make a distributed flow
traceable: ``correlationid`` (shared by everything one request caused), ``causationid``
(the id of the event whose handling produced this one) and ``traceparent`` (W3C), and one
for schemas: ``schemaversion``, the message class's version, written when ``dataschema``
names a registry id rather than ``urn:tidings:schema:<type>:<version>`` (the registry
numbers its versions itself, so the id does not say which class version wrote it).
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from typing import Any

import uuid6

SPECVERSION = "1.0"
# dataschema of a Tidings message: urn:tidings:schema:<type>:<version> (messages.py writes it).
SCHEMA_PREFIX = "urn:tidings:schema:"


def new_event_id() -> str:
    """A unique, time-ordered id (UUIDv7): sorting ids sorts by creation time."""
    return str(uuid6.uuid7())


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclasses.dataclass(frozen=True, slots=True)
class Envelope:
    """One event as it travels: CloudEvents attributes plus the payload (``data``).

    ``data`` is the payload already reduced to JSON-compatible values; the codec turns
    it into bytes and the service layer into a typed pydantic model.
    """

    id: str
    source: str
    type: str
    subject: str | None
    data: dict[str, Any]
    time: datetime = dataclasses.field(default_factory=utc_now)
    specversion: str = SPECVERSION
    datacontenttype: str = "application/json"
    dataschema: str | None = None
    correlationid: str | None = None
    causationid: str | None = None
    traceparent: str | None = None
    schemaversion: str | None = None

    @property
    def key(self) -> str | None:
        """The partition key: the subject (the aggregate id), so order holds per key."""
        return self.subject

    @property
    def version(self) -> int | None:
        """The schema version the producer declared (from ``dataschema``, else from
        ``schemaversion``), if it is ours."""
        if self.dataschema and self.dataschema.startswith(SCHEMA_PREFIX):
            _, _, version = self.dataschema.rpartition(":")
        else:
            version = self.schemaversion or ""
        return int(version) if version.isdigit() else None

    def replace(self, **changes: Any) -> Envelope:
        return dataclasses.replace(self, **changes)

    def restamped(
        self, dataschema: str | None, traceparent: str | None, schemaversion: str | None
    ) -> Envelope:
        """This envelope with the attributes that publishing stamps (the registry's schema,
        the producer span) set; :meth:`replace` for the hot path: the constructor with
        positional arguments costs a third of ``dataclasses.replace``."""
        return Envelope(
            self.id,
            self.source,
            self.type,
            self.subject,
            self.data,
            self.time,
            self.specversion,
            self.datacontenttype,
            dataschema,
            self.correlationid,
            self.causationid,
            traceparent,
            schemaversion,
        )
