"""The payload schema of a message class, and moving its ``$defs`` into the document.

:func:`message_schema` is the one place the AsyncAPI document gets a message's JSON
Schema from; today pydantic's ``model_json_schema()``. It is meant to be swapped for the
schema registry's deterministic schema once that exists, so nothing else here calls
pydantic.

Pydantic puts nested models under the schema's own ``$defs`` and points at them with
``#/$defs/Name``. An AsyncAPI document shares schemas in ``components/schemas``
instead, so :func:`hoist_defs` moves every definition there and rewrites the
references. Rules:

* a definition keeps its name; the same name with the same schema (one nested model
  used by several messages) is stored once;
* the same name with a different schema is an error naming both owners, since silently
  renaming one would make the document disagree with the code's names;
* only local ``#/$defs/...`` references are rewritten; any other ``$ref`` is left alone.
"""

from __future__ import annotations

import copy
from typing import Any

from tidings.messages import Message

DEFS_REF = "#/$defs/"
COMPONENTS_REF = "#/components/schemas/"


def message_schema(message_type: type[Message]) -> dict[str, Any]:
    """The JSON Schema of a message's payload (the envelope's ``data``).

    Validation mode, pydantic's default: what a consumer of the type accepts.
    """
    return message_type.model_json_schema()


def hoist_defs(
    schema: dict[str, Any], components: dict[str, Any], owners: dict[str, str], owner: str
) -> dict[str, Any]:
    """``schema`` without its ``$defs``, which are added to ``components`` (by name).

    ``owners`` records which message first brought each definition, for the error when
    two disagree; ``owner`` names the message ``schema`` belongs to. Returns a copy with
    every ``#/$defs/X`` reference rewritten to ``#/components/schemas/X``.
    """
    schema = copy.deepcopy(schema)
    defs = schema.pop("$defs", {})
    for name, definition in defs.items():
        share(components, owners, name, _rewrite(definition), owner)
    return _rewrite(schema)  # type: ignore[no-any-return]


def share(
    components: dict[str, Any], owners: dict[str, str], name: str, schema: Any, owner: str
) -> None:
    """Add ``schema`` to ``components`` as ``name``, unless the same one is there already."""
    known = components.get(name)
    if known is not None and known != schema:
        raise ValueError(
            f"two different schemas are named {name!r} (in {owners.get(name, '?')} and "
            f"{owner}); rename one of the models, the document shares schemas by name"
        )
    components[name] = schema
    owners.setdefault(name, owner)


def _rewrite(node: Any) -> Any:
    if isinstance(node, dict):
        out = {}
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str) and value.startswith(DEFS_REF):
                out[key] = COMPONENTS_REF + value[len(DEFS_REF) :]
            else:
                out[key] = _rewrite(value)
        return out
    if isinstance(node, list):
        return [_rewrite(item) for item in node]
    return node
