"""Payloads in a registered schema (tidings.formats) through the codec: Avro in Confluent's
framing and JSON checked against its schema, decided by the record's headers. Pure: the
schemas are built here, no registry is asked (tests/registry/test_wire.py asks one)."""

from __future__ import annotations

import struct
from datetime import UTC, date, datetime
from decimal import Decimal
from enum import Enum
from uuid import UUID

import pytest
from pydantic import Field

from shop.events import OrderLine, OrderPlaced
from tidings import Event, codec
from tidings.formats import AVRO_CONTENT_TYPE, RegisteredSchema, SchemaViolation
from tidings.messages import new_envelope
from tidings.records import OutgoingRecord, Record
from tidings.schemas import schema_text


class Colour(Enum):
    RED = "RED"
    BLUE = "BLUE"


class Shipped(Event, topic="unit.formats", key="parcel", version=2):
    parcel: UUID
    at: datetime
    on: date
    price: Decimal = Field(max_digits=10, decimal_places=2)
    colour: Colour
    note: str | None = None
    lines: list[OrderLine] = []


def registered(message_type: type[Event], kind: str, schema_id: int = 7) -> RegisteredSchema:
    url = f"http://registry.test/schemas/ids/{schema_id}"
    return RegisteredSchema(schema_id, kind, schema_text(message_type, kind), url).compile()


def as_record(out: OutgoingRecord) -> Record:
    return Record(out.topic, 0, 0, out.key, out.value, dict(out.headers), 0.0)


def shipped() -> Shipped:
    return Shipped(
        parcel=UUID("12345678-1234-5678-1234-567812345678"),
        at=datetime(2026, 12, 1, 10, 30, 0, 123456, tzinfo=UTC),
        on=date(2026, 12, 1),
        price=Decimal("12.50"),
        colour=Colour.BLUE,
        lines=[OrderLine(sku="a", quantity=2)],
    )


def test_avro_is_confluent_framed_with_the_attributes_in_headers_and_reads_back() -> None:
    schema = registered(Shipped, "AVRO", 513)
    envelope = new_envelope(shipped(), source="unit")
    out = codec.encode(envelope, "unit.formats", "binary", schema)
    assert out.value[:5] == b"\x00" + struct.pack(">I", 513)
    assert out.headers["content-type"] == AVRO_CONTENT_TYPE
    assert out.headers["ce_dataschema"] == "http://registry.test/schemas/ids/513"
    assert out.headers["ce_schemaversion"] == "2"
    back = codec.decode(as_record(out), {513: schema})
    assert back.version == 2 and back.dataschema == schema.url
    # The JSON values read back validate into the same message: logical types survive.
    assert Shipped.model_validate(back.data) == shipped()


def test_json_keeps_plain_cloudevents_json_and_names_the_registry_id() -> None:
    schema = registered(OrderPlaced, "JSON", 3)
    placed = OrderPlaced(order_id="o", customer_id="c", lines=[], amount_cents=1)
    out = codec.encode(new_envelope(placed, source="unit"), "shop.orders", "structured", schema)
    back = codec.decode(as_record(out), {3: schema})
    assert back.dataschema == schema.url and back.version == 1
    assert back.data == placed.model_dump(mode="json")


def test_a_json_payload_breaking_its_registered_schema_names_the_field() -> None:
    schema = registered(OrderPlaced, "JSON", 3)
    placed = OrderPlaced(order_id="o", customer_id="c", lines=[], amount_cents=1)
    out = codec.encode(new_envelope(placed, source="unit"), "shop.orders", "binary", schema)
    # "5" passes pydantic's lax mode, not the registered schema's "integer".
    bad = (
        b'{"order_id":"o","customer_id":"c","lines":[{"sku":"a","quantity":"5"}],"amount_cents":1}'
    )
    record = as_record(out)
    with pytest.raises(
        SchemaViolation, match=r"OrderPlaced \(registered schema 3\): lines/0/quantity"
    ):
        codec.decode(Record(record.topic, 0, 0, None, bad, record.headers, 0.0), {3: schema})
    assert codec.decode(
        Record(record.topic, 0, 0, None, bad, record.headers, 0.0)
    ).data  # no registry


def test_a_2020_12_keyword_is_checked_by_jsonschema_rather_than_ignored() -> None:
    class Pair(Event, topic="unit.formats.pairs"):
        pair: tuple[int, str]  # pydantic writes prefixItems, which draft 7 lacks

    schema = registered(Pair, "JSON")
    assert "prefixItems" in schema.text
    schema.check_json({"pair": [1, "a"]})
    with pytest.raises(SchemaViolation, match="pair/0: 'x' is not of type 'integer'"):
        schema.check_json({"pair": ["x", "a"]})
    # fastjsonschema's path and message, for the schemas of draft 7's keywords:
    with pytest.raises(SchemaViolation, match=r"^lines/0/quantity: must be integer$"):
        registered(OrderPlaced, "JSON").check_json(
            {
                "order_id": "o",
                "customer_id": "c",
                "amount_cents": 1,
                "lines": [{"sku": "a", "quantity": "5"}],
            }
        )


def test_an_id_not_at_hand_is_unknown_and_avro_without_schemas_says_why() -> None:
    schema = registered(Shipped, "AVRO", 9)
    out = as_record(codec.encode(new_envelope(shipped(), source="u"), "t", "binary", schema))
    with pytest.raises(codec.UnknownSchema) as unknown:
        codec.decode(out, {})
    assert unknown.value.schema_id == 9
    with pytest.raises(codec.DecodeError, match=r"schema id 9\) and no schema registry"):
        codec.decode(out)


@pytest.mark.parametrize(
    ("value", "why"),
    [
        (b"\x00\x00", "shorter than the 5-byte Confluent header"),
        (b"\x01\x00\x00\x00\x09abc", "not the magic byte 0"),
        (b"\x00\x00\x00\x00\x09\xff\xff\xff", "does not match schema 9"),
    ],
)
def test_a_bad_avro_value_is_undecodable_with_the_reason(value: bytes, why: str) -> None:
    schema = registered(Shipped, "AVRO", 9)
    out = as_record(codec.encode(new_envelope(shipped(), source="u"), "t", "binary", schema))
    with pytest.raises(codec.DecodeError, match=why):
        codec.decode(Record("t", 0, 0, None, value, out.headers, 0.0), {9: schema})


def test_framing_and_dataschema_must_agree_and_avro_needs_binary_mode() -> None:
    schema = registered(Shipped, "AVRO", 9)
    envelope = new_envelope(shipped(), source="u")
    out = as_record(codec.encode(envelope, "t", "binary", schema))
    headers = {**out.headers, "ce_dataschema": "http://registry.test/schemas/ids/10"}
    with pytest.raises(codec.DecodeError, match="framed with schema id 9, but dataschema names 10"):
        codec.decode(Record("t", 0, 0, None, out.value, headers, 0.0), {9: schema})
    with pytest.raises(ValueError, match="binary mode"):
        codec.encode(envelope, "t", "structured", schema)


def test_data_that_does_not_fit_the_avro_schema_is_refused_when_written() -> None:
    schema = registered(Shipped, "AVRO", 9)
    envelope = new_envelope(shipped(), source="u")
    with pytest.raises(SchemaViolation, match="does not fit Avro schema 9"):
        codec.encode(
            envelope.replace(data={**envelope.data, "colour": "GREEN"}), "t", "binary", schema
        )


def test_without_a_registry_the_version_still_comes_from_the_urn() -> None:
    placed = OrderPlaced(order_id="o", customer_id="c", lines=[], amount_cents=1)
    envelope = new_envelope(placed, source="u")
    assert envelope.version == 1 and envelope.schemaversion is None
    back = codec.decode(as_record(codec.encode(envelope, "t")))
    assert back == envelope
