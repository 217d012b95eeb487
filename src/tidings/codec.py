"""The codec: envelopes to transport records and back (CloudEvents 1.0 bindings).

Two content modes, both from the CloudEvents spec, so other tools can read our events:

* **binary** (the Kafka protocol binding): attributes travel as ``ce_*`` headers and the
  record value is the payload alone (``content-type`` header: ``application/json``);
* **structured** (JSON event format): the value is one JSON object holding the attributes
  and ``data``; ``content-type: application/cloudevents+json``.

Decoding reads either, whichever the record carries. Anything that is not a well-formed
CloudEvent raises :class:`DecodeError` with the reason, which the consumer puts on the
dead letter. JSON is written and parsed by pydantic-core (compact, UTF-8; several times
faster than the standard library's ``json``).

**With a schema registry** (:mod:`tidings.formats`), :func:`encode` takes the payload's
registered schema and :func:`decode` the schemas it may meet, by id:

* Avro (binary mode only): the value is Confluent's framing (magic byte, 4-byte schema
  id, Avro body), ``content-type: application/avro``; the attributes stay ``ce_*``
  headers, so confluent-kafka's ``AvroDeserializer`` and JVM consumers read the value;
* JSON: unchanged, the value is plain JSON;
* either way ``dataschema`` is the schema's URL at the registry (``.../schemas/ids/<id>``)
  and the class's version goes in the ``schemaversion`` extension.

Reading, the id comes from the Avro framing, else from a ``dataschema`` ending in
``/schemas/ids/<id>``: an id not among the schemas given raises :class:`UnknownSchema`
(the caller fetches it and decodes again); a JSON payload that breaks its registered
schema raises :class:`~tidings.formats.SchemaViolation` naming the field. Without
schemas (``schemas=None``), JSON is read as before and Avro is a DecodeError.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Literal

import pydantic_core

from tidings.envelope import SPECVERSION, Envelope
from tidings.formats import AVRO_CONTENT_TYPE, RegisteredSchema, SchemaViolation, framed_id
from tidings.records import OutgoingRecord, Record

ContentMode = Literal["binary", "structured"]
STRUCTURED_CONTENT_TYPE = "application/cloudevents+json"
_REQUIRED = ("id", "source", "type", "specversion")
_OPTIONAL = (
    "subject",
    "dataschema",
    "correlationid",
    "causationid",
    "traceparent",
    "schemaversion",
)
_REGISTRY_ID = re.compile(r"/schemas/ids/(\d+)$")


class DecodeError(ValueError):
    """A record that is not a CloudEvent we can read; the message says why."""


class UnknownSchema(LookupError):
    """A record written with a registry schema id not among those given to :func:`decode`."""

    def __init__(self, schema_id: int) -> None:
        super().__init__(f"schema id {schema_id} is not among the schemas known here")
        self.schema_id = schema_id


def with_schema(envelope: Envelope, schema: RegisteredSchema) -> Envelope:
    """``envelope`` as written with ``schema``: ``dataschema`` the registry's URL of it,
    and the class's version kept in ``schemaversion``."""
    version = envelope.version
    return envelope.restamped(
        schema.url, envelope.traceparent, None if version is None else str(version)
    )


def encode(
    envelope: Envelope,
    topic: str,
    mode: ContentMode = "binary",
    schema: RegisteredSchema | None = None,
) -> OutgoingRecord:
    """``envelope`` as a record in ``mode``; with ``schema``, written with it (see above)."""
    if schema is not None:
        envelope = with_schema(envelope, schema)
    attributes: dict[str, str] = {
        "id": envelope.id,
        "source": envelope.source,
        "type": envelope.type,
        "specversion": envelope.specversion,
        "time": envelope.time.isoformat(),
    }
    for name in _OPTIONAL:
        value = getattr(envelope, name)
        if value is not None:
            attributes[name] = value
    if mode == "binary":
        headers = {f"ce_{k}": v for k, v in attributes.items()}
        if schema is not None and schema.schema_type == "AVRO":
            headers["content-type"] = AVRO_CONTENT_TYPE
            return OutgoingRecord(topic, schema.write_avro(envelope.data), envelope.key, headers)
        headers["content-type"] = envelope.datacontenttype
        value = pydantic_core.to_json(envelope.data)
        return OutgoingRecord(topic, value, envelope.key, headers)
    if schema is not None and schema.schema_type == "AVRO":
        raise ValueError(
            f"{envelope.type}: Avro payloads need CloudEvents binary mode (ce_ headers); "
            "this transport uses structured mode, so use JSON schemas with it"
        )
    body: dict[str, Any] = dict(attributes)
    body["datacontenttype"] = envelope.datacontenttype
    body["data"] = envelope.data
    return OutgoingRecord(
        topic,
        pydantic_core.to_json(body),
        envelope.key,
        {"content-type": STRUCTURED_CONTENT_TYPE},
    )


def schema_id(dataschema: str | None) -> int | None:
    """The registry id a ``dataschema`` URL names (``.../schemas/ids/<id>``), else None."""
    found = _REGISTRY_ID.search(dataschema) if dataschema else None
    return int(found.group(1)) if found else None


def decode(
    record: Record,
    schemas: Mapping[int, RegisteredSchema] | None = None,
    *,
    with_data: bool = True,
) -> Envelope:
    """The envelope in a record; raises :class:`DecodeError` saying what is wrong.

    ``schemas``: the registered schemas known so far, by id (see the module docstring).
    Without ``with_data``, only the attributes are read (``data`` is empty in binary mode,
    unchecked in structured mode): enough to see that a record is of a type one skips,
    without its schema.
    """
    headers = record.headers
    avro = False
    if "ce_id" in headers:
        attributes: dict[str, Any] = {k[3:]: v for k, v in headers.items() if k.startswith("ce_")}
        content_type = headers.get("content-type", "application/json")
        avro = content_type == AVRO_CONTENT_TYPE
        if not with_data:
            attributes["data"] = {}
        elif avro:
            attributes["data"] = _avro(record.value, attributes.get("dataschema"), schemas)
        else:
            attributes["data"] = _json(record.value, "payload")
        attributes["datacontenttype"] = content_type
    else:
        body = _json(record.value, "structured CloudEvent")
        if not isinstance(body, dict):
            raise DecodeError("record is neither binary-mode (ce_ headers) nor a JSON object")
        attributes = body
    missing = [name for name in _REQUIRED if not attributes.get(name)]
    if missing:
        raise DecodeError(f"not a CloudEvent: missing attribute(s) {', '.join(missing)}")
    if attributes["specversion"] != SPECVERSION:
        raise DecodeError(f"unsupported CloudEvents specversion {attributes['specversion']!r}")
    data = attributes.get("data")
    if not isinstance(data, dict):
        raise DecodeError(f"event data must be a JSON object, got {type(data).__name__}")
    try:
        time = datetime.fromisoformat(attributes["time"]) if attributes.get("time") else None
    except (TypeError, ValueError):
        raise DecodeError(f"bad CloudEvents time {attributes.get('time')!r}") from None
    if time is not None and time.tzinfo is None:
        # RFC 3339 requires an offset; another producer's time without one is read as UTC,
        # so that it can be compared with ours (a naive datetime cannot be).
        time = time.replace(tzinfo=UTC)
    if with_data and not avro and schemas is not None:
        _check_json(data, attributes, schemas)
    extra: dict[str, Any] = {"time": time} if time else {}
    return Envelope(
        id=str(attributes["id"]),
        source=str(attributes["source"]),
        type=str(attributes["type"]),
        subject=_opt(attributes.get("subject")),
        data=data,
        datacontenttype=str(attributes.get("datacontenttype") or "application/json"),
        dataschema=_opt(attributes.get("dataschema")),
        correlationid=_opt(attributes.get("correlationid")),
        causationid=_opt(attributes.get("causationid")),
        traceparent=_opt(attributes.get("traceparent")),
        schemaversion=_opt(attributes.get("schemaversion")),
        **extra,
    )


def _writer(schema_id: int, schemas: Mapping[int, RegisteredSchema]) -> RegisteredSchema:
    writer = schemas.get(schema_id)
    if writer is None:
        raise UnknownSchema(schema_id)
    return writer


def _avro(
    value: bytes, dataschema: str | None, schemas: Mapping[int, RegisteredSchema] | None
) -> dict[str, Any]:
    try:
        framed = framed_id(value)
    except SchemaViolation as exc:
        raise DecodeError(str(exc)) from None
    named = schema_id(dataschema)
    if named is not None and named != framed:
        raise DecodeError(
            f"Avro value framed with schema id {framed}, but dataschema names {named}"
        )
    if schemas is None:
        raise DecodeError(
            f"Avro payload (schema id {framed}) and no schema registry to read it with"
        )
    writer = _writer(framed, schemas)
    if writer.schema_type != "AVRO":
        raise DecodeError(f"Avro payload framed with schema id {framed}, a JSON schema")
    try:
        return writer.read_avro(value)
    except SchemaViolation as exc:
        raise DecodeError(str(exc)) from None


def _check_json(
    data: dict[str, Any], attributes: Mapping[str, Any], schemas: Mapping[int, RegisteredSchema]
) -> None:
    named = schema_id(_opt(attributes.get("dataschema")))
    if named is None:
        return
    writer = _writer(named, schemas)
    if writer.schema_type != "JSON":
        raise DecodeError(f"JSON payload whose dataschema names schema id {named}, an Avro schema")
    try:
        writer.check_json(data)
    except SchemaViolation as exc:
        raise SchemaViolation(
            f"invalid {attributes['type']} (registered schema {named}): {exc}"
        ) from None


def _json(value: bytes, what: str) -> Any:
    try:
        return pydantic_core.from_json(value)
    except (UnicodeDecodeError, ValueError) as exc:
        raise DecodeError(f"{what} is not valid JSON: {exc}") from None
    except RecursionError:  # found by the fuzzer: it escaped the consume loop
        raise DecodeError(f"{what} is nested too deeply to decode") from None


def _opt(value: Any) -> str | None:
    return None if value is None else str(value)
