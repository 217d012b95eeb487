"""What a schema is registered under: its type (Avro or JSON Schema) and its subject.

A subject is ``<topic>-<type>``, Confluent's *TopicRecordNameStrategy*: one topic may
carry several event types (``shop.orders`` carries OrderPlaced, OrderCompleted, ...), and
each type evolves on its own, so each pair is a subject of its own. The type is the
CloudEvents ``type`` a message class declares (``message_info.type``), which is also the
Avro record's name, so a JVM consumer using the same strategy finds the same subject.
"""

from __future__ import annotations

import enum
import json
from typing import Any

from tidings.messages import Message, published_topic


class SchemaType(enum.StrEnum):
    """The schema languages Tidings writes and checks (the registry's ``schemaType``)."""

    AVRO = "AVRO"
    JSON = "JSON"

    @classmethod
    def parse(cls, value: str) -> SchemaType:
        """``avro``/``AVRO``/``json``/``JSON`` -> the member; ValueError naming the choices."""
        try:
            return cls(value.upper())
        except ValueError:
            choices = ", ".join(m.value for m in cls)
            raise ValueError(f"schema type {value!r}: expected one of {choices}") from None


def subject_for(message_type: type[Message]) -> str:
    """``<topic>-<type>``: the subject ``message_type``'s schemas are registered under."""
    return f"{published_topic(message_type)}-{message_type.message_info.type}"


def canonical_text(schema: Any) -> str:
    """The one compact text of a parsed schema: sorted keys, no spaces.

    Two schemas that differ only in key order or whitespace get the same text, which is
    what the registry compares and what gives one schema one id. Order inside lists (Avro
    fields, enum symbols) is kept: it means something there.
    """
    return json.dumps(schema, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def pretty_text(schema: Any) -> str:
    """Sorted keys, indented, ending in a newline: the text written to ``schemas/`` files."""
    return json.dumps(schema, sort_keys=True, indent=2, ensure_ascii=False) + "\n"
