"""The runtime's decoding step around the pure codec (tidings.runtime.decoding): a schema
id not at hand is fetched once; an unknown id, an outage and an unreadable schema each end
as their own error; a type the service does not handle never makes it ask. The schema
source is a stand-in here (pure logic); tests/registry/test_wire.py runs the real one."""

from __future__ import annotations

from collections.abc import Mapping

import pytest

from shop.events import OrderLine, OrderPlaced
from tidings import codec
from tidings.formats import RegisteredSchema, SchemaUnavailable
from tidings.messages import new_envelope
from tidings.records import Record
from tidings.runtime.decoding import decode
from tidings.schemas import schema_text


class Source:
    """Schemas by id as a registry would hand them out, counting what is asked."""

    url = "http://registry.test"

    def __init__(self, registry: dict[int, RegisteredSchema], down: bool = False) -> None:
        self.registry = registry
        self.down = down
        self._known: dict[int, RegisteredSchema] = {}
        self.asked: list[int] = []

    @property
    def known(self) -> Mapping[int, RegisteredSchema]:
        return self._known

    def writer(self, event_type: str) -> RegisteredSchema | None:
        return None

    async def reader(self, schema_id: int) -> RegisteredSchema | None:
        self.asked.append(schema_id)
        if self.down:
            raise SchemaUnavailable("registry down")
        found = self.registry.get(schema_id)
        if found is not None:
            if found.text == "not json":
                raise ValueError(f"schema id {schema_id} cannot be read")
            self._known[schema_id] = found
        return found


def avro_record(schema_id: int = 5) -> tuple[Record, RegisteredSchema]:
    schema = RegisteredSchema(
        schema_id, "AVRO", schema_text(OrderPlaced, "AVRO"), f"http://r/schemas/ids/{schema_id}"
    )
    placed = OrderPlaced(
        order_id="o", customer_id="c", lines=[OrderLine(sku="a", quantity=1)], amount_cents=1
    )
    out = codec.encode(new_envelope(placed, source="u"), "shop.orders", "binary", schema)
    return Record(out.topic, 0, 0, out.key, out.value, dict(out.headers), 0.0), schema


async def test_an_id_not_at_hand_is_fetched_once_then_read_from_what_is_known() -> None:
    record, schema = avro_record()
    source = Source({5: schema})
    for _ in range(3):
        envelope = await decode(record, source, {"OrderPlaced"})
        assert envelope.data["order_id"] == "o"
    assert source.asked == [5]


async def test_a_type_not_handled_is_read_without_its_schema_even_in_an_outage() -> None:
    record, schema = avro_record()
    source = Source({5: schema}, down=True)
    envelope = await decode(record, source, {"OrderCompleted"})
    assert envelope.type == "OrderPlaced" and envelope.data == {} and source.asked == []


async def test_unknown_unreachable_and_unreadable_schemas_each_raise_their_error() -> None:
    record, schema = avro_record()
    with pytest.raises(codec.UnknownSchema):
        await decode(record, Source({}), {"OrderPlaced"})
    with pytest.raises(SchemaUnavailable):
        await decode(record, Source({5: schema}, down=True), {"OrderPlaced"})
    unreadable = RegisteredSchema(5, "AVRO", "not json", schema.url)
    with pytest.raises(codec.DecodeError, match="schema id 5 cannot be read"):
        await decode(record, Source({5: unreadable}), {"OrderPlaced"})
