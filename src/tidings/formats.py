"""Payloads written with a registered schema: Avro in Confluent's framing, JSON checked.

A :class:`RegisteredSchema` is one schema as a registry knows it (its id, type and text)
with what is needed to write and read payloads of it, compiled once. The codec
(:mod:`tidings.codec`) uses it; nothing here does I/O.

* **Avro** values are Confluent's wire format, so confluent-kafka's ``AvroDeserializer``,
  Kafka Connect and JVM consumers read them: magic byte ``0``, the schema id as a 4-byte
  big-endian integer, then the Avro binary body (fastavro, schemaless).
* **JSON** values are plain JSON (CloudEvents binary or structured mode, unframed); read
  with a registered schema they are validated against it, and a payload that breaks it
  raises :class:`SchemaViolation` naming the field path (``lines/0/quantity``). The
  validator is fastjsonschema (compiled to Python, some 30 times faster than jsonschema
  on an OrderPlaced), which knows drafts 4 to 7: a schema using a keyword of draft
  2020-12 that draft 7 lacks (``prefixItems``, ``unevaluatedProperties``, ...; pydantic
  writes ``prefixItems`` for a tuple) is validated by jsonschema instead, so no keyword
  is ignored. Formats are annotations, not checks, as jsonschema's default has it.

An envelope's ``data`` is JSON values (what ``model_dump(mode="json")`` gives), while
fastavro wants Python values for logical types (a ``datetime`` for timestamp-micros, a
``Decimal`` for decimal). :func:`_to_avro` converts one way, walking the schema (written
by hand: fastavro writes ISO strings for no logical type and no library maps JSON values
to an Avro schema's logical types); pydantic-core's ``to_jsonable_python`` the other way.

:class:`SchemaSource` is what the runtime asks: the writer schema of a type it publishes
(cached at start, so publishing needs no registry) and the schema of an id it reads
(fetched once). :class:`SchemaUnavailable` (the registry is down) is an infrastructure
error: it is waited out, never dead-lettered.
"""

from __future__ import annotations

import dataclasses
import datetime
import decimal
import functools
import io
import json
import struct
from collections.abc import Callable, Mapping
from typing import Any, Protocol

import pydantic_core

# fastavro, fastjsonschema and jsonschema are imported where first used: together they
# cost a command that never meets a registered schema (tidings tail, publish) 0.4 s.

MAGIC = 0
AVRO_CONTENT_TYPE = "application/avro"
_HEADER = struct.Struct(">bI")  # magic byte, schema id (4 bytes, big-endian)
Convert = Callable[[Any], Any]
# Keywords of JSON Schema 2020-12 that fastjsonschema (drafts 4-7) would ignore.
_NEWER_KEYWORDS = frozenset(
    {
        "prefixItems",
        "unevaluatedProperties",
        "unevaluatedItems",
        "dependentRequired",
        "dependentSchemas",
        "minContains",
        "maxContains",
        "$dynamicRef",
        "$dynamicAnchor",
        "$recursiveRef",
    }
)


class SchemaViolation(ValueError):
    """A payload that does not fit its registered schema; the message names the field."""


class SchemaUnavailable(Exception):
    """The registry cannot be reached now (an outage: wait and retry, never dead-letter)."""


@dataclasses.dataclass(frozen=True, eq=False)
class RegisteredSchema:
    """One registered schema: ``id``, ``schema_type`` (AVRO or JSON), its text, and
    ``url``, where the registry serves it (the CloudEvents ``dataschema``)."""

    id: int
    schema_type: str  # "AVRO" or "JSON" (the registry's schemaType)
    text: str
    url: str

    @functools.cached_property
    def parsed(self) -> Any:
        return json.loads(self.text)

    @functools.cached_property
    def _avro(self) -> Any:
        import fastavro

        return fastavro.parse_schema(self.parsed)

    @functools.cached_property
    def _to_avro(self) -> Convert:
        import fastavro.schema

        return _converter(fastavro.schema.expand_schema(self.parsed))

    @functools.cached_property
    def _validator(self) -> Callable[[Any], None]:
        """A function raising SchemaViolation "path: message" for data that breaks it."""
        if _keywords(self.parsed) & _NEWER_KEYWORDS:
            return _jsonschema_check(self.parsed)
        import fastjsonschema

        check = fastjsonschema.compile(self.parsed, use_default=False, use_formats=False)

        def fast(data: Any) -> None:
            try:
                check(data)
            except fastjsonschema.JsonSchemaValueException as exc:
                where = "/".join(str(p) for p in exc.path[1:]) or "payload"
                message = exc.message.removeprefix(str(exc.name)).strip()
                raise SchemaViolation(f"{where}: {message}") from None

        return fast

    def compile(self) -> RegisteredSchema:
        """Parse and compile now (at start or first fetch), not on the first record."""
        if self.schema_type == "AVRO":
            _ = self._avro, self._to_avro
        else:
            _ = self._validator
        return self

    # -- Avro ----------------------------------------------------------------------------
    def write_avro(self, data: dict[str, Any]) -> bytes:
        """``data`` (JSON values) as a framed Avro value; SchemaViolation if it does not fit."""
        import fastavro

        out = io.BytesIO()
        out.write(_HEADER.pack(MAGIC, self.id))
        try:
            fastavro.schemaless_writer(
                out, self._avro, self._to_avro(data), strict_allow_default=True
            )
        except (TypeError, ValueError, KeyError, AttributeError) as exc:
            raise SchemaViolation(f"does not fit Avro schema {self.id}: {exc}") from None
        return out.getvalue()

    def read_avro(self, value: bytes) -> dict[str, Any]:
        """A framed Avro value written with this schema, as JSON values (converted only
        where the schema has logical types or bytes: other Avro values are JSON's)."""
        import fastavro

        body = io.BytesIO(value)
        body.seek(_HEADER.size)
        try:
            datum = fastavro.schemaless_reader(body, self._avro, None)
        except Exception as exc:  # fastavro raises whatever the bytes lead it to
            raise SchemaViolation(
                f"Avro body does not match schema {self.id}: {type(exc).__name__}: {exc}"
            ) from None
        if body.tell() != len(value):
            raise SchemaViolation(
                f"Avro body does not match schema {self.id}: "
                f"{len(value) - body.tell()} byte(s) left over"
            )
        if not isinstance(datum, dict):
            raise SchemaViolation(f"schema {self.id} is not an Avro record")
        if self._to_avro is _identity:
            return datum
        out: dict[str, Any] = pydantic_core.to_jsonable_python(datum)
        return out

    # -- JSON ----------------------------------------------------------------------------
    def check_json(self, data: Any) -> None:
        """Raise :class:`SchemaViolation` naming the first failing field, if ``data`` breaks
        this JSON Schema."""
        self._validator(data)


def _keywords(schema: Any) -> set[str]:
    """Every key of every object in ``schema`` (property names too: erring on the safe side)."""
    if isinstance(schema, dict):
        return set(schema).union(*(_keywords(v) for v in schema.values()))
    if isinstance(schema, list):
        return set().union(*(_keywords(v) for v in schema))
    return set()


def _jsonschema_check(schema: Any) -> Callable[[Any], None]:
    import jsonschema

    validator = jsonschema.validators.validator_for(schema)(schema)

    def check(data: Any) -> None:
        error = jsonschema.exceptions.best_match(validator.iter_errors(data))
        if error is not None:
            where = "/".join(str(p) for p in error.absolute_path) or "payload"
            raise SchemaViolation(f"{where}: {error.message}")

    return check


def framed_id(value: bytes) -> int:
    """The schema id of a Confluent-framed value; SchemaViolation if it is not framed."""
    if len(value) < _HEADER.size:
        raise SchemaViolation(
            f"Avro value of {len(value)} byte(s) is shorter than the 5-byte Confluent header"
        )
    magic, schema_id = _HEADER.unpack_from(value)
    if magic != MAGIC:
        raise SchemaViolation(f"Avro value starts with byte {magic}, not the magic byte 0")
    return int(schema_id)


class SchemaSource(Protocol):
    """Where the runtime gets registered schemas (``tidings.registry.wire`` has one)."""

    @property
    def url(self) -> str:
        """The registry's URL, for messages."""
        ...

    @property
    def known(self) -> Mapping[int, RegisteredSchema]:
        """The schemas at hand, by id: reading them needs no I/O."""
        ...

    def writer(self, event_type: str) -> RegisteredSchema | None:
        """The schema to publish ``event_type`` with (None: publish it as plain JSON).
        Never does I/O: publishing must not wait on the registry."""
        ...

    async def reader(self, schema_id: int) -> RegisteredSchema | None:
        """The schema of ``schema_id`` (None if the registry does not know it), added to
        :attr:`known`; raises :class:`SchemaUnavailable` if the registry cannot be asked
        and ``ValueError`` if what it holds cannot be read."""
        ...


# -- JSON values -> the Python values fastavro writes --------------------------------------
def _identity(value: Any) -> Any:
    return value


def _converter(schema: Any) -> Convert:
    """A function bringing JSON values to what fastavro writes for ``schema`` (expanded)."""
    if isinstance(schema, list):  # a union: the first branch that converts
        branches = [_converter(b) for b in schema if b != "null"]
        if all(b is _identity for b in branches):
            return _identity

        def union(value: Any) -> Any:
            if value is None:
                return None
            for branch in branches:
                try:
                    return branch(value)
                except (TypeError, ValueError, decimal.InvalidOperation):
                    continue
            return value  # fastavro says why no branch fits

        return union
    if isinstance(schema, str):
        return _encode_bytes if schema in ("bytes", "fixed") else _identity
    kind, logical = schema.get("type"), schema.get("logicalType")
    if logical in _LOGICAL:
        return _LOGICAL[logical]
    if kind == "record":
        fields = [(f["name"], _converter(f["type"])) for f in schema["fields"]]
        fields = [(name, c) for name, c in fields if c is not _identity]
        if not fields:
            return _identity

        def record(value: Any) -> Any:
            if not isinstance(value, dict):
                return value
            out = dict(value)
            for name, convert in fields:
                if name in out:
                    out[name] = convert(out[name])
            return out

        return record
    if kind == "array":
        item = _converter(schema["items"])
        return _identity if item is _identity else (lambda v: [item(i) for i in v])
    if kind == "map":
        each = _converter(schema["values"])
        return _identity if each is _identity else (lambda v: {k: each(i) for k, i in v.items()})
    return _converter(kind) if isinstance(kind, str | list) and kind != schema else _identity


def _parsing(parse: Callable[[str], Any]) -> Convert:
    return lambda value: parse(value) if isinstance(value, str) else value


def _encode_bytes(value: Any) -> Any:
    return value.encode() if isinstance(value, str) else value


def _decimal(value: Any) -> Any:
    return decimal.Decimal(str(value)) if isinstance(value, str | int | float) else value


_LOGICAL: dict[str, Convert] = {
    "timestamp-micros": _parsing(datetime.datetime.fromisoformat),
    "timestamp-millis": _parsing(datetime.datetime.fromisoformat),
    "date": _parsing(datetime.date.fromisoformat),
    "time-micros": _parsing(datetime.time.fromisoformat),
    "time-millis": _parsing(datetime.time.fromisoformat),
    "decimal": _decimal,
}
