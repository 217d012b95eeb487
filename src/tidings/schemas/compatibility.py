"""Compatibility modes, with Confluent Schema Registry's meaning, and the one check.

A mode says which readers must be able to read which writers' data, where *new* is the
schema being registered and *previous* the subject's earlier versions, oldest first:

* ``BACKWARD``: new can read data written with the latest previous version (consumers
  upgrade first). ``FORWARD``: the latest previous can read data written with new
  (producers upgrade first). ``FULL``: both.
* ``*_TRANSITIVE``: the same against *every* previous version, not just the latest:
  a topic keeps old events, so a consumer may meet any of them. ``BACKWARD_TRANSITIVE``
  is the project's default (:data:`DEFAULT_MODE`).
* ``NONE``: no check.

"Can read" is Avro's own reader/writer resolution for Avro (the Apache ``avro``
package's ``ReaderWriterCompatibilityChecker``, the port of the Java checker Confluent's
registry uses), and :func:`tidings.schemas.json_rules.json_reads` for JSON Schema.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Sequence
from typing import Any

import avro.compatibility
import avro.errors
import avro.schema

from tidings.schemas.breaks import Break
from tidings.schemas.json_rules import json_reads
from tidings.schemas.subjects import SchemaType


class Mode(enum.StrEnum):
    BACKWARD = "BACKWARD"
    BACKWARD_TRANSITIVE = "BACKWARD_TRANSITIVE"
    FORWARD = "FORWARD"
    FORWARD_TRANSITIVE = "FORWARD_TRANSITIVE"
    FULL = "FULL"
    FULL_TRANSITIVE = "FULL_TRANSITIVE"
    NONE = "NONE"

    @classmethod
    def parse(cls, value: str) -> Mode:
        try:
            return cls(value.upper())
        except ValueError:
            choices = ", ".join(m.value for m in cls)
            raise ValueError(f"compatibility {value!r}: expected one of {choices}") from None

    @property
    def transitive(self) -> bool:
        return self.value.endswith("_TRANSITIVE")

    @property
    def backward(self) -> bool:
        """Must the new schema read the previous versions' data?"""
        return self.value.startswith(("BACKWARD", "FULL"))

    @property
    def forward(self) -> bool:
        """Must the previous versions read the new schema's data?"""
        return self.value.startswith(("FORWARD", "FULL"))


DEFAULT_MODE = Mode.BACKWARD_TRANSITIVE


class InvalidSchema(ValueError):
    """A schema text that is not a schema of its type; the message says why."""


def parse(schema_type: SchemaType, schema: str | dict[str, Any]) -> Any:
    """Parse (and so check) a schema: an ``avro.schema.Schema`` or a JSON Schema dict."""
    if isinstance(schema, str):
        try:
            schema = json.loads(schema)
        except json.JSONDecodeError as exc:
            raise InvalidSchema(f"the {schema_type} schema is not JSON: {exc}") from None
    if schema_type is SchemaType.AVRO:
        try:
            return avro.schema.make_avsc_object(schema)
        except (avro.errors.AvroException, TypeError, ValueError) as exc:
            raise InvalidSchema(f"invalid Avro schema: {exc}") from None
    import jsonschema

    if not isinstance(schema, dict | bool):
        raise InvalidSchema(f"invalid JSON Schema: a schema is an object, not {schema!r}")
    validator = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    try:
        validator.check_schema(schema)
    except jsonschema.SchemaError as exc:
        where = "/".join(str(p) for p in exc.path) or "the root"
        raise InvalidSchema(f"invalid JSON Schema at {where}: {exc.message}") from None
    return schema if isinstance(schema, dict) else {}


def reads(schema_type: SchemaType, reader: Any, writer: Any) -> list[Break]:
    """Why data written with ``writer`` cannot be read with ``reader`` (parsed schemas)."""
    if schema_type is SchemaType.JSON:
        return json_reads(reader, writer)
    result = _avro_check(reader, writer)
    if result.compatibility is not avro.compatibility.SchemaCompatibilityType.incompatible:
        return []
    # The checker merges its findings into a set of locations and a set of messages, which
    # no longer pair up; each location is looked at again on its own to name the reason.
    breaks = []
    # "/" is the checker's starting location, left in the set once merged with others.
    for location in sorted(set(result.locations) - {"/", ""}) or ["/"]:
        names, reader_part = _avro_walk(reader, location)
        writer_part = _avro_follow(writer, names)
        if writer_part is None:
            why = "required by the reader (no default), but the writer does not have it"
        else:
            messages = _avro_check(reader_part, writer_part).messages or result.messages
            why = "; ".join(sorted(messages))
        breaks.append(Break(_path(names), why))
    return breaks


def _avro_check(reader: Any, writer: Any) -> Any:
    checker = avro.compatibility.ReaderWriterCompatibilityChecker()  # type: ignore[no-untyped-call]
    return checker.get_compatibility(reader, writer)


def check(
    mode: Mode | str,
    schema_type: SchemaType | str,
    new: str | dict[str, Any],
    previous: Sequence[str | dict[str, Any]],
    versions: Sequence[int] | None = None,
) -> list[Break]:
    """The breaks of registering ``new`` after ``previous`` (oldest first) under ``mode``.

    ``versions`` numbers the previous schemas in the breaks (default 1, 2, ...). Raises
    :class:`InvalidSchema` if a schema does not parse.
    """
    mode = Mode.parse(mode) if isinstance(mode, str) else mode
    kind = SchemaType.parse(schema_type) if isinstance(schema_type, str) else schema_type
    numbers = list(versions) if versions is not None else list(range(1, len(previous) + 1))
    if mode is Mode.NONE or not previous:
        return []
    parsed_new = parse(kind, new)
    pairs = list(zip(numbers, previous, strict=True))
    breaks: list[Break] = []
    for number, old in pairs if mode.transitive else pairs[-1:]:
        parsed_old = parse(kind, old)
        if mode.backward:
            for found in reads(kind, parsed_new, parsed_old):
                why = f"{found.reason} (the new schema reading version {number}'s data)"
                breaks.append(Break(found.path, why, number))
        if mode.forward:
            for found in reads(kind, parsed_old, parsed_new):
                why = f"{found.reason} (version {number} reading the new schema's data)"
                breaks.append(Break(found.path, why, number))
    return breaks


def _avro_walk(schema: Any, location: str) -> tuple[list[str], Any]:
    """Follow Avro's location (``fields/1/type/items``) in ``schema``: the steps taken
    (field names, ``[]`` for items, ``{}`` for map values) and the schema found there."""
    steps: list[str] = []
    node = schema
    parts = [p for p in location.split("/") if p]
    i = 0
    while i < len(parts):
        part = parts[i]
        if part == "fields" and isinstance(node, avro.schema.RecordSchema) and i + 1 < len(parts):
            field = node.fields[int(parts[i + 1])]
            steps.append(field.name)
            node = field.type
            i += 1
        elif part == "items" and isinstance(node, avro.schema.ArraySchema):
            steps.append("[]")
            node = node.items
        elif part == "values" and isinstance(node, avro.schema.MapSchema):
            steps.append("{}")
            node = node.values
        i += 1
    return steps, node


def _avro_follow(schema: Any, steps: list[str]) -> Any:
    """The part of ``schema`` at the same steps, by field name; None if a field is missing."""
    node = schema
    for step in steps:
        if step == "[]" and isinstance(node, avro.schema.ArraySchema):
            node = node.items
        elif step == "{}" and isinstance(node, avro.schema.MapSchema):
            node = node.values
        elif isinstance(node, avro.schema.RecordSchema):
            node = node.fields_dict.get(step)
            if node is None:
                return None
            node = node.type
        else:
            return node
    return node


def _path(steps: list[str]) -> str:
    path = ""
    for step in steps:
        path = path + step if step in ("[]", "{}") else (f"{path}.{step}" if path else step)
    return path
