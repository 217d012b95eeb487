"""Avro schema of a message class, built from its pydantic fields.

Hand-written, because no library maps plain pydantic models the way a message needs:
pydantic-avro and dataclasses-avroschema want the model to inherit their base class
(business code would import them), and py-avro-schema takes decimal precision only from
its own annotation, not pydantic's ``Field(max_digits=, decimal_places=)``, and its errors
do not name the field. The mapping is small and stated here:

=====================================  =============================================
Python (pydantic field)                Avro
=====================================  =============================================
``str`` / ``bool`` / ``bytes``         ``string`` / ``boolean`` / ``bytes``
``int`` / ``float``                    ``long`` / ``double``
``datetime`` / ``date`` / ``time``     ``long`` timestamp-micros / ``int`` date /
                                       ``long`` time-micros
``Decimal`` (``max_digits`` and        ``bytes`` decimal (precision, scale)
``decimal_places`` required)
``UUID``                               ``string`` uuid
``enum.Enum`` of strings, ``Literal``  ``enum`` (symbols: the values)
of strings
``list[T]`` / ``tuple[T, ...]`` /      ``array`` of T
``set[T]`` / ``frozenset[T]``
``dict[str, T]``                       ``map`` of T
a pydantic model                       a named ``record`` (defined once, then
                                       referred to by name)
``T | None``                           ``["null", T]``, default null when the field's
                                       default is None
``A | B``                              ``[A, B]``
=====================================  =============================================

A field with a default gets an Avro ``default`` (what a reader fills in when the writer's
schema lacks the field, so adding a field with a default is a compatible change). The
top-level record is named after the message's CloudEvents type (a dotted type,
``shop.OrderPlaced``, is an Avro full name: namespace ``shop``). Anything else (``Any``,
a dict with non-string keys, a union inside a union, a default Avro cannot hold) is a
:class:`AvroSchemaError` naming the class and the field.
"""

from __future__ import annotations

import datetime
import decimal
import enum
import re
import types
import typing
import uuid
from typing import Any

import pydantic
from pydantic.fields import FieldInfo

from tidings.messages import Message
from tidings.schemas.subjects import canonical_text

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_PRIMITIVES: dict[type, Any] = {
    str: "string",
    bool: "boolean",
    bytes: "bytes",
    int: "long",
    float: "double",
    datetime.datetime: {"type": "long", "logicalType": "timestamp-micros"},
    datetime.date: {"type": "int", "logicalType": "date"},
    datetime.time: {"type": "long", "logicalType": "time-micros"},
    uuid.UUID: {"type": "string", "logicalType": "uuid"},
}
_ARRAYS = (list, tuple, set, frozenset)


class AvroSchemaError(TypeError):
    """A message class with a field Avro cannot express; the message names both."""


def avro_schema(message_type: type[Message]) -> dict[str, Any]:
    """The Avro record schema of ``message_type``'s payload."""
    record: dict[str, Any] = _Builder(message_type.__name__).record(
        message_type, message_type.message_info.type
    )
    return record


def avro_schema_text(message_type: type[Message]) -> str:
    """:func:`avro_schema` as canonical text: the same class gives the same string."""
    return canonical_text(avro_schema(message_type))


class _Builder:
    """One schema's walk: the named types defined so far (Avro defines a name once)."""

    def __init__(self, root: str) -> None:
        self.root = root
        self.defined: set[str] = set()
        self.where = root

    def fail(self, why: str) -> AvroSchemaError:
        return AvroSchemaError(f"{self.where}: {why}")

    def name(self, name: str, dotted: bool = False) -> str:
        """``name`` if Avro takes it (a full name ``a.b.C`` where ``dotted``)."""
        parts = name.split(".") if dotted else [name]
        if not all(_NAME.match(p) for p in parts):
            raise self.fail(f"{name!r} is not a valid Avro name ([A-Za-z_][A-Za-z0-9_]*)")
        return name

    def record(self, model: type[pydantic.BaseModel], name: str) -> Any:
        name = self.name(name, dotted=True)
        if name in self.defined:
            return name
        self.defined.add(name)
        fields = []
        outer = self.where
        for field_name, info in model.model_fields.items():
            self.where = f"{outer}.{field_name}"
            wire = info.serialization_alias or info.alias or field_name
            fields.append(self.field(self.name(wire), info))
        self.where = outer
        return {"type": "record", "name": name, "fields": fields}

    def field(self, name: str, info: FieldInfo) -> dict[str, Any]:
        schema = self.of(info.annotation, info)
        out: dict[str, Any] = {"name": name}
        if info.description:
            out["doc"] = info.description
        if info.is_required():
            out["type"] = schema
            return out
        default = info.get_default(call_default_factory=True)
        if isinstance(schema, list):
            # A union's default must match its first branch: put that branch first.
            first = next((b for b in schema if _matches(b, default)), None)
            if first is None:
                raise self.fail(f"default {default!r} fits no branch of {schema}")
            schema = [first, *(b for b in schema if b is not first)]
        out["type"] = schema
        out["default"] = self.default(default, schema[0] if isinstance(schema, list) else schema)
        return out

    def default(self, value: Any, schema: Any) -> Any:
        logical = schema.get("logicalType") if isinstance(schema, dict) else None
        if value is None or isinstance(value, bool | int | float | str):
            return value
        if isinstance(value, enum.Enum):
            return value.value
        if isinstance(value, list | tuple | set | frozenset):
            return [self.default(v, None) for v in value]
        if isinstance(value, dict):
            return {str(k): self.default(v, None) for k, v in value.items()}
        if isinstance(value, uuid.UUID):
            return str(value)
        if isinstance(value, pydantic.BaseModel):
            return value.model_dump(mode="json", by_alias=True)
        if logical == "timestamp-micros" and isinstance(value, datetime.datetime):
            epoch = datetime.datetime(1970, 1, 1, tzinfo=value.tzinfo or datetime.UTC)
            return (value - epoch) // datetime.timedelta(microseconds=1)
        if logical == "date" and isinstance(value, datetime.date):
            return (value - datetime.date(1970, 1, 1)).days
        raise self.fail(f"default {value!r} cannot be written in an Avro schema")

    def of(self, annotation: Any, info: FieldInfo | None = None) -> Any:
        origin = typing.get_origin(annotation)
        args = typing.get_args(annotation)
        if origin is typing.Annotated:
            return self.of(args[0], info)
        if origin in (typing.Union, types.UnionType):
            branches = [self.of(a) for a in args]
            if any(isinstance(b, list) for b in branches):
                raise self.fail("a union inside a union cannot be written in Avro")
            if "null" in branches:  # Optional: null first, so that its default is null
                branches = ["null", *(b for b in branches if b != "null")]
            return branches
        if annotation is type(None):
            return "null"
        if origin is typing.Literal:
            if not all(isinstance(a, str) for a in args):
                raise self.fail(f"{annotation}: only a Literal of strings maps to an Avro enum")
            name = self.where.replace(".", "_")
            return {
                "type": "enum",
                "name": self.name(name),
                "symbols": [self.name(a) for a in args],
            }
        if origin in _ARRAYS:
            item = args[0] if args else Any
            if origin is tuple and not (len(args) == 2 and args[1] is Ellipsis):
                raise self.fail(f"{annotation}: only tuple[T, ...] maps to an Avro array")
            return {"type": "array", "items": self.of(item)}
        if origin is dict:
            if not args or args[0] is not str:
                raise self.fail(f"{annotation}: Avro maps have string keys only")
            return {"type": "map", "values": self.of(args[1])}
        if isinstance(annotation, type):
            if annotation in _PRIMITIVES:
                schema = _PRIMITIVES[annotation]
                return dict(schema) if isinstance(schema, dict) else schema
            if issubclass(annotation, enum.Enum):
                return self.enum(annotation)
            if issubclass(annotation, pydantic.BaseModel):
                return self.record(annotation, annotation.__name__)
            if issubclass(annotation, decimal.Decimal):
                return self.decimal(info)
        raise self.fail(f"{annotation!r} has no Avro type (see tidings.schemas.avro_schema)")

    def enum(self, enum_type: type[enum.Enum]) -> Any:
        name = self.name(enum_type.__name__)
        if name in self.defined:
            return name
        values = [m.value for m in enum_type]
        if not all(isinstance(v, str) for v in values):
            raise self.fail(f"{enum_type.__name__}: only an enum of strings maps to an Avro enum")
        self.defined.add(name)
        return {"type": "enum", "name": name, "symbols": [self.name(v) for v in values]}

    def decimal(self, info: FieldInfo | None) -> Any:
        digits = places = None
        for meta in info.metadata if info is not None else ():
            digits = getattr(meta, "max_digits", digits)
            places = getattr(meta, "decimal_places", places)
        if digits is None or places is None:
            raise self.fail(
                "a Decimal needs its precision for Avro: Field(max_digits=..., decimal_places=...)"
            )
        return {"type": "bytes", "logicalType": "decimal", "precision": digits, "scale": places}


def _matches(branch: Any, value: Any) -> bool:
    """Could ``value`` be the default of union branch ``branch``?"""
    return bool((branch == "null") == (value is None))
