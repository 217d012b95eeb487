"""The shop's AsyncAPI document: valid for the official 3.0.0 schema and @asyncapi/parser,
and true to the code (topics, who sends and receives what, payloads, what the codec writes)."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft7Validator, Draft202012Validator

from shop import billing, inventory, order
from shop.events import (
    ACCOUNTS,
    BILLING,
    BILLING_COMMANDS,
    CATALOG,
    CUSTOMERS,
    INVENTORY,
    INVENTORY_COMMANDS,
    ORDERS,
    STOCK,
    OrderLine,
    OrderPlaced,
)
from tidings import Event, Service
from tidings.asyncapi import asyncapi_document, dump, parse_server
from tidings.asyncapi.page import render_page
from tidings.asyncapi.servers import CONTENT_MODES
from tidings.codec import encode
from tidings.messages import new_envelope

SHOP = [order.service, inventory.service, billing.service]
Parse = Callable[[Path], tuple[int, dict[str, Any]]]  # the parse_with_node fixture
SERVER_SETS = {
    "none": [],
    "kafka+sqlite": ["prod=kafka://k1:9092,k2:9092", "dev=sqlite:///./.tidings/log.db"],
    "nats": ["js=nats://127.0.0.1:4222"],
}


def shop_document(*servers: str) -> dict[str, Any]:
    return asyncapi_document(SHOP, servers=[parse_server(s) for s in servers])


def resolve(document: dict[str, Any], ref: str) -> Any:
    assert ref.startswith("#/"), ref
    node: Any = document
    for part in ref[2:].split("/"):
        node = node[part.replace("~1", "/").replace("~0", "~")]
    return node


def refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        return [v for k, v in node.items() if k == "$ref"] + [
            r for k, v in node.items() if k != "$ref" for r in refs(v)
        ]
    if isinstance(node, list):
        return [r for item in node for r in refs(item)]
    return []


def message_refs(document: dict[str, Any], operation: str) -> list[str]:
    return [m["$ref"].rsplit("/", 1)[1] for m in document["operations"][operation]["messages"]]


@pytest.mark.parametrize("servers", SERVER_SETS.values(), ids=SERVER_SETS.keys())
def test_the_official_schema_accepts_the_shop(
    servers: list[str], asyncapi_schema: Draft7Validator
) -> None:
    errors = [
        f"{list(e.absolute_path)}: {e.message[:200]}"
        for e in asyncapi_schema.iter_errors(shop_document(*servers))
    ]
    assert errors == []


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (("operations", "order.send.shop.orders", "action"), "publish"),  # AsyncAPI 2's word
        (("servers", "prod", "protocol"), None),  # required
        (("components", "messages", "OrderPlaced", "bindings", "kafka", "partition"), 1),
        (("channels", "shop.orders", "address"), 7),
    ],
)
def test_the_schema_really_checks_deep_parts(
    path: tuple[str, ...], value: Any, asyncapi_schema: Draft7Validator
) -> None:
    """Each change breaks a rule several $refs deep: the bundled refs really resolve."""
    document = copy.deepcopy(shop_document(*SERVER_SETS["kafka+sqlite"]))
    node = document
    for part in path[:-1]:
        node = node[part]
    if value is None:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    assert not asyncapi_schema.is_valid(document)


def test_asyncapi_parser_accepts_json_and_yaml(tmp_path: Path, parse_with_node: Parse) -> None:
    document = shop_document(*SERVER_SETS["kafka+sqlite"])
    for name, text in (("shop.json", dump(document, "json")), ("shop.yaml", dump(document))):
        (tmp_path / name).write_text(text)
        code, result = parse_with_node(tmp_path / name)
        problems = [d for d in result["diagnostics"] if d["severity"] <= 1]  # errors, warnings
        assert (code, result["parsed"], problems) == (0, True, []), name


def test_asyncapi_parser_refuses_a_dangling_reference(
    tmp_path: Path, parse_with_node: Parse
) -> None:
    document = shop_document()
    document["components"]["schemas"].pop("OrderLine")  # still referenced by OrderPlaced
    (tmp_path / "broken.json").write_text(dump(document, "json"))
    code, result = parse_with_node(tmp_path / "broken.json")
    assert code == 1 and any("OrderLine" in json.dumps(d) for d in result["diagnostics"])


def test_every_shop_topic_is_a_channel_holding_its_types() -> None:
    document = shop_document()
    channels = document["channels"]
    assert {c["address"] for c in channels.values()} == {
        ORDERS, INVENTORY, BILLING, ACCOUNTS,
        INVENTORY_COMMANDS, BILLING_COMMANDS,  # the orchestrated saga's commands
        CATALOG, CUSTOMERS, STOCK,  # the back office's facts, read by order, billing, inventory
    }  # fmt: skip
    assert set(channels[ORDERS]["messages"]) == {"OrderPlaced", "OrderCompleted", "OrderCancelled"}
    handled = {spec.message_type.message_info.type for s in SHOP for spec in s.handlers.values()}
    published = {t.message_info.type for s in SHOP for t in s.publishes}
    assert set(document["components"]["messages"]) == handled | published


def test_operations_follow_publishes_and_handlers() -> None:
    document = shop_document()
    operations = document["operations"]
    assert operations["order.send.shop.orders"]["action"] == "send"
    assert "OrderPlaced" in message_refs(document, "order.send.shop.orders")
    billing_receives = operations["billing.receive.shop.inventory"]
    assert billing_receives["action"] == "receive"
    # billing handles InventoryReserved only, not everything on the topic
    assert message_refs(document, "billing.receive.shop.inventory") == ["InventoryReserved"]
    assert billing_receives["x-tidings-handlers"] == {"InventoryReserved": "charge"}
    assert billing_receives["bindings"]["kafka"]["groupId"]["const"] == "billing"
    assert not any(k.startswith("billing.receive.shop.orders") for k in operations)
    assert {k for k in operations if k.startswith("inventory.send")} == {
        "inventory.send.shop.inventory"
    }
    # every reference in the document points at something
    for ref in refs(document):
        assert resolve(document, ref) is not None, ref


def test_a_payload_keeps_its_required_fields_and_its_nested_model() -> None:
    document = shop_document()
    schemas = document["components"]["schemas"]
    placed = resolve(document, document["components"]["messages"]["OrderPlaced"]["payload"]["$ref"])
    assert placed["required"] == ["order_id", "customer_id", "lines", "amount_cents"]
    line = resolve(document, placed["properties"]["lines"]["items"]["$ref"])
    assert line is schemas["OrderLine"] and line["required"] == ["sku", "quantity"]
    assert "$defs" not in json.dumps(document)


def record_validator(document: dict[str, Any], pointer: str) -> Draft202012Validator:
    """A validator of one part of the document, its #/components refs resolving."""
    return Draft202012Validator({"components": document["components"], "$ref": pointer})


def placed_envelope() -> Any:
    message = OrderPlaced(
        order_id="o-1", customer_id="c-1", lines=[OrderLine(sku="w", quantity=2)], amount_cents=9
    )
    return new_envelope(message, source="order")


def test_binary_mode_describes_the_headers_and_value_the_codec_writes() -> None:
    document = shop_document("prod=kafka://127.0.0.1:9092")
    record = encode(placed_envelope(), ORDERS, "binary")
    headers = record_validator(document, "#/components/messages/OrderPlaced/headers")
    payload = record_validator(document, "#/components/messages/OrderPlaced/payload")
    headers.validate(record.headers)
    payload.validate(json.loads(record.value))
    message = document["components"]["messages"]["OrderPlaced"]
    assert message["bindings"]["kafka"]["key"]["type"] == "string"
    assert message["correlationId"]["location"] == "$message.header#/ce_correlationid"
    # another version, a missing subject or a missing field are refused
    assert not headers.is_valid(
        {**record.headers, "ce_dataschema": "urn:tidings:schema:OrderPlaced:2"}
    )
    assert not headers.is_valid({k: v for k, v in record.headers.items() if k != "ce_subject"})
    assert not payload.is_valid({k: v for k, v in json.loads(record.value).items() if k != "lines"})


def test_structured_mode_describes_the_json_event_the_codec_writes() -> None:
    document = shop_document(*SERVER_SETS["nats"])
    assert document["defaultContentType"] == "application/cloudevents+json"
    record = encode(placed_envelope(), ORDERS, "structured")
    payload = record_validator(document, "#/components/messages/OrderPlaced/payload")
    event = json.loads(record.value)
    payload.validate(event)
    assert not payload.is_valid({**event, "type": "OrderCompleted"})
    assert not payload.is_valid({**event, "data": {"order_id": "o-1"}})
    # NATS only: no Kafka bindings
    assert "bindings" not in document["components"]["messages"]["OrderPlaced"]
    assert "bindings" not in document["channels"][ORDERS]


def test_the_servers_content_modes_are_their_transports() -> None:
    from tidings.transport.kafka.transport import KafkaTransport
    from tidings.transport.nats.transport import NatsTransport
    from tidings.transport.sqlite.log import SQLiteLog

    classes = {"kafka": KafkaTransport, "nats": NatsTransport, "sqlite": SQLiteLog}
    assert CONTENT_MODES == {scheme: cls.content_mode for scheme, cls in classes.items()}


def test_servers_map_urls_and_refuse_bad_ones() -> None:
    kafka = parse_server("prod=kafka://user:secret@k1:9092,k2:9092?session_timeout=3")
    assert (kafka.protocol, kafka.host) == ("kafka", "k1:9092,k2:9092")  # no credentials
    sqlite = parse_server("dev=sqlite:///./.tidings/log.db").to_asyncapi()
    assert (sqlite["protocol"], sqlite["pathname"]) == ("sqlite", "./.tidings/log.db")
    assert parse_server("js=nats://n:4222").to_asyncapi()["host"] == "n:4222"
    for spec, says in [
        ("kafka://k:9092", "NAME=URL"),
        ("a b=kafka://k:9092", "letters, digits"),
        ("m=memory://", "in-process"),
        ("x=amqp://h", "unknown broker scheme 'amqp'"),
        ("k=kafka://", "give host and port"),
    ]:
        with pytest.raises(ValueError, match=says):
            parse_server(spec)
    with pytest.raises(ValueError, match="different CloudEvents content modes"):
        shop_document("a=kafka://k:9092", "b=nats://n:4222")
    with pytest.raises(ValueError, match="disagrees"):
        asyncapi_document(
            SHOP, servers=[parse_server("a=kafka://k:9092")], content_mode="structured"
        )


def test_clashing_declarations_are_refused_with_both_names() -> None:
    class Placed(Event, topic="x.orders", type="OrderPlaced"):
        order_id: str

    other = Service("other", publishes=[Placed])
    with pytest.raises(
        ValueError, match=r"OrderPlaced.*Placed.*both CloudEvents type 'OrderPlaced'"
    ):
        asyncapi_document([order.service, other])

    class OrderLine(Event, topic="x.lines"):  # its own schema, named like the shop's model
        different: int

    class Holder(Event, topic="x.lines"):
        line: OrderLine

    with pytest.raises(ValueError, match="two different schemas are named 'OrderLine'"):
        asyncapi_document([order.service, Service("lines", publishes=[Holder])])
    with pytest.raises(ValueError, match="service named more than once: order"):
        asyncapi_document([order.service, order.service])


def test_an_undeclared_publisher_gets_no_send_operation_and_output_is_stable() -> None:
    loose = Service("loose")

    @loose.on
    async def seen(event: OrderPlaced) -> None: ...

    document = asyncapi_document([loose])
    assert list(document["operations"]) == ["loose.receive.shop.orders"]
    assert dump(shop_document(), "json") == dump(shop_document(), "json")


def test_the_page_shows_the_document_and_escapes_what_code_wrote() -> None:
    class Sneaky(Event, topic="x.sneaky"):
        """<script>alert(1)</script> happened."""

        why: str

    page = render_page(asyncapi_document([Service("evil", publishes=[Sneaky])]))
    assert "<script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    shop_page = render_page(shop_document())
    for text in ("shop.inventory", "billing", "charge", "lines[].sku", "amount_cents"):
        assert text in shop_page
    structured = render_page(shop_document(*SERVER_SETS["nats"]))
    assert "In the event (? optional): <code>id</code>" in structured
    assert "<code>type</code> = <code>OrderPlaced</code>" in structured
    assert "<tr><td>lines[].sku</td><td>string</td><td>yes</td>" in structured
