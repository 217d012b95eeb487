"""Schemas from the code, and the rules by which they may change.

* :func:`json_schema` / :func:`avro_schema`: a message class's schema, deterministic
  (:func:`schema_text` gives the canonical text the registry stores);
* :func:`subject_for`: ``<topic>-<type>``, the subject it is registered under;
* :func:`check`: the breaks of a new schema against a subject's earlier ones under a
  :class:`Mode` (BACKWARD, FORWARD, FULL, their transitive forms, NONE).

The registry client and server live in :mod:`tidings.registry`.
"""

from __future__ import annotations

from typing import Any

from tidings.messages import Message
from tidings.schemas.avro_schema import AvroSchemaError, avro_schema
from tidings.schemas.breaks import Break
from tidings.schemas.compatibility import DEFAULT_MODE, InvalidSchema, Mode, check, parse
from tidings.schemas.json_schema import json_schema
from tidings.schemas.subjects import SchemaType, canonical_text, pretty_text, subject_for

__all__ = [
    "DEFAULT_MODE",
    "AvroSchemaError",
    "Break",
    "InvalidSchema",
    "Mode",
    "SchemaType",
    "avro_schema",
    "canonical_text",
    "check",
    "json_schema",
    "parse",
    "pretty_text",
    "schema_of",
    "schema_text",
    "subject_for",
]


def schema_of(message_type: type[Message], schema_type: SchemaType | str) -> dict[str, Any]:
    """The schema of ``message_type`` in ``schema_type`` (AVRO or JSON)."""
    kind = SchemaType.parse(schema_type) if isinstance(schema_type, str) else schema_type
    return avro_schema(message_type) if kind is SchemaType.AVRO else json_schema(message_type)


def schema_text(message_type: type[Message], schema_type: SchemaType | str) -> str:
    """:func:`schema_of` as canonical text (sorted keys): the same class, the same text."""
    return canonical_text(schema_of(message_type, schema_type))
