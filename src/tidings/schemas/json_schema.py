"""JSON Schema of a message class, from pydantic, the same text every time.

pydantic writes the schema (``model_json_schema``, draft 2020-12, nested models under
``$defs``); this module only pins what would otherwise vary or be missing:

* the ``$schema`` dialect, so a registry or validator knows the draft;
* the title is the message's CloudEvents type (a class renamed with ``type=`` kept is
  the same schema);
* the validation view (what a reader accepts), so a field with a default is optional;
* the text: keys sorted, by :func:`tidings.schemas.subjects.canonical_text`.

The version is not part of the schema: the registry numbers versions itself.
"""

from __future__ import annotations

from typing import Any

from tidings.messages import Message
from tidings.schemas.subjects import canonical_text

DIALECT = "https://json-schema.org/draft/2020-12/schema"


def json_schema(message_type: type[Message]) -> dict[str, Any]:
    """The JSON Schema of ``message_type``'s payload (the envelope's ``data``)."""
    schema = message_type.model_json_schema(mode="validation")
    schema["title"] = message_type.message_info.type
    schema["$schema"] = DIALECT
    return schema


def json_schema_text(message_type: type[Message]) -> str:
    """:func:`json_schema` as canonical text: the same class gives the same string."""
    return canonical_text(json_schema(message_type))
