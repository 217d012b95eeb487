"""Schemas from message classes: deterministic JSON Schema and Avro, Avro's mapping of
each type, a clear error for what Avro cannot express, and Avro's own checker."""

from __future__ import annotations

import datetime
import decimal
import enum
import io
import json
import subprocess
import sys
import uuid
from typing import Literal

import avro.io
import avro.schema
import pytest
from pydantic import BaseModel, Field

from shop.events import OrderPlaced
from tidings import Event
from tidings.schemas import (
    AvroSchemaError,
    Mode,
    avro_schema,
    check,
    json_schema,
    schema_text,
    subject_for,
)


class Colour(enum.StrEnum):
    RED = "red"
    BLUE = "blue"


class Address(BaseModel):
    street: str
    zip: str | None = None


class Everything(Event, topic="t.everything", key="id", type="shop.Everything"):
    id: uuid.UUID
    at: datetime.datetime
    day: datetime.date
    price: decimal.Decimal = Field(max_digits=10, decimal_places=2)
    colour: Colour = Colour.RED
    size: Literal["s", "m"] = "m"
    tags: list[str] = Field(default_factory=list)
    counts: dict[str, int] = Field(default_factory=dict)
    home: Address
    work: Address | None = None
    note: str | None = None
    ratio: float = 0.5
    ok: bool = True


def field(schema: dict[str, object], name: str) -> dict[str, object]:
    return next(f for f in schema["fields"] if f["name"] == name)  # type: ignore[attr-defined,index]


def test_avro_mapping_of_each_type() -> None:
    schema = avro_schema(Everything)
    assert (schema["type"], schema["name"]) == ("record", "shop.Everything")
    assert field(schema, "id")["type"] == {"type": "string", "logicalType": "uuid"}
    assert field(schema, "at")["type"] == {"type": "long", "logicalType": "timestamp-micros"}
    assert field(schema, "day")["type"] == {"type": "int", "logicalType": "date"}
    assert field(schema, "price")["type"] == {
        "type": "bytes", "logicalType": "decimal", "precision": 10, "scale": 2,
    }  # fmt: skip
    assert field(schema, "colour") == {
        "name": "colour", "type": {"type": "enum", "name": "Colour", "symbols": ["red", "blue"]},
        "default": "red",
    }  # fmt: skip
    assert field(schema, "size")["type"]["symbols"] == ["s", "m"]  # type: ignore[index]
    assert field(schema, "tags") == {
        "name": "tags",
        "type": {"type": "array", "items": "string"},
        "default": [],
    }
    assert field(schema, "counts")["type"] == {"type": "map", "values": "long"}
    home = field(schema, "home")["type"]
    assert home["type"] == "record" and home["name"] == "Address"  # type: ignore[index]
    assert field(home, "zip") == {"name": "zip", "type": ["null", "string"], "default": None}  # type: ignore[arg-type]
    assert field(schema, "work") == {"name": "work", "type": ["null", "Address"], "default": None}
    assert field(schema, "ratio") == {"name": "ratio", "type": "double", "default": 0.5}
    # The library parses it, and a record written with it reads back.
    parsed = avro.schema.parse(json.dumps(schema))
    datum = {
        "id": str(uuid.uuid4()), "at": datetime.datetime(2026, 1, 2, tzinfo=datetime.UTC),
        "day": datetime.date(2026, 1, 2), "price": decimal.Decimal("12.34"), "colour": "blue",
        "size": "s", "tags": ["a"], "counts": {"x": 1}, "home": {"street": "Main", "zip": None},
        "work": None, "note": "n", "ratio": 1.5, "ok": False,
    }  # fmt: skip
    buffer = io.BytesIO()
    avro.io.DatumWriter(parsed).write(datum, avro.io.BinaryEncoder(buffer))
    read = avro.io.DatumReader(parsed).read(avro.io.BinaryDecoder(io.BytesIO(buffer.getvalue())))
    assert read["price"] == decimal.Decimal("12.34") and read["home"]["street"] == "Main"


def test_the_record_is_named_after_the_type_and_the_subject_is_topic_type() -> None:
    assert avro_schema(OrderPlaced)["name"] == "OrderPlaced"
    assert subject_for(OrderPlaced) == "shop.orders-OrderPlaced"
    assert subject_for(Everything) == "t.everything-shop.Everything"

    class Odd(Event, topic="t", type="order-placed"):
        x: int

    with pytest.raises(AvroSchemaError, match="Odd: 'order-placed' is not a valid Avro name"):
        avro_schema(Odd)


def test_what_avro_cannot_express_names_class_and_field() -> None:
    class NoPrecision(Event, topic="t"):
        price: decimal.Decimal

    class IntKeys(Event, topic="t"):
        counts: dict[int, str]

    class Nested(Event, topic="t"):
        home: Address
        anything: object

    with pytest.raises(AvroSchemaError, match=r"NoPrecision\.price: a Decimal needs its precision"):
        avro_schema(NoPrecision)
    with pytest.raises(
        AvroSchemaError, match=r"IntKeys\.counts: .* Avro maps have string keys only"
    ):
        avro_schema(IntKeys)
    with pytest.raises(AvroSchemaError, match=r"Nested\.anything: .* has no Avro type"):
        avro_schema(Nested)


def test_schemas_are_the_same_text_in_every_process() -> None:
    code = (
        "from shop.events import OrderPlaced; from tidings.schemas import schema_text;"
        "print(schema_text(OrderPlaced, 'JSON')); print(schema_text(OrderPlaced, 'AVRO'))"
    )
    runs = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                           env={"PYTHONHASHSEED": seed}).stdout for seed in ("1", "2")}  # fmt: skip
    assert runs == {
        schema_text(OrderPlaced, "JSON") + "\n" + schema_text(OrderPlaced, "AVRO") + "\n"
    }
    text = schema_text(OrderPlaced, "JSON")
    assert text == json.dumps(json.loads(text), sort_keys=True, separators=(",", ":"))
    assert json_schema(OrderPlaced)["title"] == "OrderPlaced"
    assert json_schema(OrderPlaced)["required"] == [
        "order_id",
        "customer_id",
        "lines",
        "amount_cents",
    ]


class V1(Event, topic="t.v", type="V"):
    order_id: str
    note: str = ""


class V2Added(Event, topic="t.v", type="V"):  # a field with a default: BACKWARD
    order_id: str
    note: str = ""
    amount: int = 0


class V2Required(Event, topic="t.v", type="V"):  # a field without one
    order_id: str
    note: str = ""
    amount: int


class V2Removed(Event, topic="t.v", type="V"):  # order_id dropped
    note: str = ""


@pytest.mark.parametrize(
    ("mode", "accepted", "refused", "path"),
    [
        (Mode.BACKWARD, V2Added, V2Required, "amount"),
        (Mode.BACKWARD_TRANSITIVE, V2Added, V2Required, "amount"),
        (Mode.FORWARD, V2Required, V2Removed, "order_id"),
        (Mode.FORWARD_TRANSITIVE, V2Required, V2Removed, "order_id"),
        (Mode.FULL, V2Added, V2Removed, "order_id"),
        (Mode.FULL_TRANSITIVE, V2Added, V2Required, "amount"),
        (Mode.NONE, V2Removed, None, ""),
    ],
)
@pytest.mark.parametrize("schema_type", ["AVRO", "JSON"])
def test_each_mode_on_message_classes(
    schema_type: str, mode: Mode, accepted: type[Event], refused: type[Event] | None, path: str
) -> None:
    old = schema_text(V1, schema_type)
    assert check(mode, schema_type, schema_text(accepted, schema_type), [old]) == []
    if refused is not None:
        breaks = check(mode, schema_type, schema_text(refused, schema_type), [old])
        assert [b.path for b in breaks] == [path], breaks
