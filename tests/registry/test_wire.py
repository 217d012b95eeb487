"""The wire format with a registry, on Kafka with the embedded registry over HTTP.

A service run with a registry publishes Avro in Confluent's framing (read back here by
confluent-kafka's own ``AvroDeserializer``) or JSON naming its schema id; a consumer
validates what it reads against the schema the record names (a raw confluent-kafka
producer's bad payload is dead-lettered with its field path; an unknown id with that
reason), upcasts old versions across the registry, makes no registry call in a steady
state (counted at the server), and rides out a registry outage without losing or
dead-lettering an event.
"""

from __future__ import annotations

import asyncio
import json
import struct
import threading
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
import uvicorn
from pydantic import Field

from shop.events import OrderLine
from tidings import Context, Event, Service, upcaster
from tidings.envelope import new_event_id
from tidings.formats import RegisteredSchema
from tidings.registry.client import RegistryClient
from tidings.registry.server import make_app
from tidings.registry.storage import RegistryStorage
from tidings.registry.wire import RegistrySchemas, schema_url
from tidings.reliability.deadletter import DeadLetter, DeadLetterKind, dlq_topic
from tidings.runtime import Runtime
from tidings.schemas import SchemaType, schema_text, subject_for
from tidings.store.sqlite import SQLiteStore
from tidings.testing import free_port, records
from tidings.testing.servers import require, require_module
from tidings.transport import make_transport
from tidings.transport.base import Transport

KAFKA = "kafka://127.0.0.1:9092"
BOOTSTRAP = urlsplit(KAFKA).netloc
_WHY = "confluent-kafka's own clients read and write what Tidings does"
confluent_kafka = require_module("confluent_kafka", _WHY)
schema_registry = require_module("confluent_kafka.schema_registry", _WHY)
avro_serde = require_module("confluent_kafka.schema_registry.avro", _WHY)
serialization = require_module("confluent_kafka.serialization", _WHY)

RUN = uuid.uuid4().hex[:8]  # the broker is shared: topics (so subjects) of this run only


class Placed(Event, topic=f"wire.{RUN}.placed", key="order_id", type="wire.Placed"):
    order_id: str
    amount: Decimal = Field(max_digits=10, decimal_places=2)
    at: datetime
    lines: list[OrderLine]


class Checked(Placed, topic=f"wire.{RUN}.checked", type="wire.Checked"):
    """Placed on a topic of its own: each test has its own registry (so its own ids)."""


class Renamed1(Event, topic=f"wire.{RUN}.renamed", key="order_id", type="wire.Renamed"):
    order_id: str
    name: str


class Renamed3(Event, topic=f"wire.{RUN}.renamed", key="order_id", type="wire.Renamed", version=3):
    order_id: str
    first_name: str
    last_name: str
    currency: str


@upcaster(Renamed3, from_version=1)
def split_name(data: dict[str, Any]) -> dict[str, Any]:
    first, _, last = data.pop("name").partition(" ")
    return {**data, "first_name": first, "last_name": last}


@upcaster(Renamed3, from_version=2)
def add_currency(data: dict[str, Any]) -> dict[str, Any]:
    return {**data, "currency": "EUR"}


class Registry:
    """The embedded registry on a fixed port, stopped and started at will, counting the
    requests it serves (the server's side of "no registry calls")."""

    def __init__(self, store_url: str) -> None:
        self.storage = RegistryStorage(store_url)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.requests: list[str] = []
        self._app = make_app(self.storage)
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    async def _counted(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            self.requests.append(f"{scope['method']} {scope['path']}")
        await self._app(scope, receive, send)

    def start(self) -> None:
        config = uvicorn.Config(
            self._counted,
            host="127.0.0.1",
            port=self.port,
            log_level="warning",
            interface="asgi3",
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started and time.monotonic() < deadline:
            time.sleep(0.02)
        assert self._server.started, "the registry did not start"

    def stop(self) -> None:
        assert self._server is not None and self._thread is not None
        self._server.should_exit = True
        self._thread.join(10)

    def close(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            self.stop()
        self.storage.close()


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[Registry]:
    require(KAFKA)
    found = Registry(f"sqlite:///{tmp_path}/registry.db")
    found.start()
    try:
        yield found
    finally:
        found.close()


@pytest.fixture
async def kafka() -> AsyncIterator[Transport]:
    transport = make_transport(KAFKA)
    await transport.connect()
    try:
        yield transport
    finally:
        await transport.close()


@asynccontextmanager
async def running(
    service: Service, registry: str, tmp_path: Path, schema_format: SchemaType
) -> AsyncIterator[Runtime]:
    """``service`` on Kafka with its own SQLite store, started with the registry as
    ``tidings run --registry`` does."""
    client = RegistryClient(registry)
    schemas = await RegistrySchemas.start(service, client, schema_format)
    transport = make_transport(KAFKA)
    await transport.connect()
    store = SQLiteStore(str(tmp_path / f"{service.name}.db"))
    await store.connect()
    runtime = Runtime(service, transport, store, schemas=schemas)
    await runtime.start()
    try:
        yield runtime
    finally:
        await runtime.stop()
        await store.close()
        await transport.close()
        await client.close()


async def until(check: Callable[[], Awaitable[bool] | bool], timeout: float = 60.0) -> None:
    """Wait for ``check``; a broker error while looking (a topic just made, its leader
    not elected yet) is one more look, not a failure."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            result = check()
            if await result if isinstance(result, Awaitable) else result:
                return
        except Exception:
            if time.monotonic() > deadline:
                raise
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.1)


def placed(n: int) -> Placed:
    return Placed(
        order_id=f"o{n}",
        amount=Decimal("12.50"),
        at=datetime(2026, 12, 1, 10, 30, tzinfo=UTC),
        lines=[OrderLine(sku="sku-1", quantity=n + 1)],
    )


def raw_produce(topic: str, value: bytes, headers: dict[str, str], key: str = "k") -> None:
    """A producer outside Tidings: confluent-kafka's, with CloudEvents binary headers."""
    producer = confluent_kafka.Producer({"bootstrap.servers": BOOTSTRAP})
    producer.produce(topic, value=value, key=key, headers=list(headers.items()))
    assert producer.flush(10) == 0


def ce_headers(
    event_type: str, dataschema: str, content_type: str = "application/json"
) -> dict[str, str]:
    return {
        "ce_id": new_event_id(),
        "ce_source": "raw-producer",
        "ce_type": event_type,
        "ce_specversion": "1.0",
        "ce_dataschema": dataschema,
        "content-type": content_type,
    }


def confluent_read(topic: str, count: int) -> list[Any]:
    """``count`` records of ``topic`` read by confluent-kafka's consumer, from the start."""
    consumer = confluent_kafka.Consumer(
        {"bootstrap.servers": BOOTSTRAP, "group.id": f"wire-read-{uuid.uuid4().hex[:8]}"}
    )
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        consumer.assign(
            [
                confluent_kafka.TopicPartition(topic, p, confluent_kafka.OFFSET_BEGINNING)
                for p in partitions
            ]
        )
        out: list[Any] = []
        deadline = time.monotonic() + 30
        while len(out) < count and time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is not None and message.error() is None:
                out.append(message)
        return out
    finally:
        consumer.close()


async def letters(transport: Transport, group: str) -> list[DeadLetter]:
    return [DeadLetter.from_record(r) for r in await records(transport, dlq_topic(group))]


async def test_avro_written_by_tidings_is_read_by_confluents_avro_deserializer(
    registry: Registry, tmp_path: Path, kafka: Transport
) -> None:
    producer = Service(f"wire-avro-{RUN}", publishes=[Placed])
    async with running(producer, registry.url, tmp_path, SchemaType.AVRO) as runtime:
        async with runtime.unit_of_work() as ctx:
            ctx.publish(placed(1))
        await until(lambda: _count(kafka, Placed.message_info.topic, 1))
    [message] = await asyncio.to_thread(confluent_read, str(Placed.message_info.topic), 1)
    client = schema_registry.SchemaRegistryClient({"url": registry.url})
    schema_id = client.get_latest_version(subject_for(Placed)).schema_id
    assert message.value()[:5] == b"\x00" + struct.pack(">I", schema_id)
    headers = {k: v.decode() for k, v in message.headers()}
    assert headers["content-type"] == "application/avro"
    assert headers["ce_dataschema"] == f"{registry.url}/schemas/ids/{schema_id}"
    assert headers["ce_type"] == "wire.Placed" and headers["ce_schemaversion"] == "1"
    read = avro_serde.AvroDeserializer(client)(
        message.value(),
        serialization.SerializationContext(message.topic(), serialization.MessageField.VALUE),
    )
    assert read == {
        "order_id": "o1",
        "amount": Decimal("12.50"),
        "at": datetime(2026, 12, 1, 10, 30, tzinfo=UTC),
        "lines": [{"sku": "sku-1", "quantity": 2}],
    }


async def test_a_bus_with_schemas_publishes_avro_straight_to_the_broker(
    registry: Registry, kafka: Transport
) -> None:
    import tidings

    class Sent(Event, topic=f"wire.{RUN}.sent", key="order_id", type="wire.Sent"):
        order_id: str

    async with RegistryClient(registry.url) as client:
        schemas = await RegistrySchemas.start(
            Service("checkout", publishes=[Sent]), client, SchemaType.AVRO
        )
        async with tidings.connect(KAFKA, source="checkout", schemas=schemas) as bus:
            await bus.publish(Sent(order_id="o1"))
    [record] = await records(kafka, f"wire.{RUN}.sent")
    schema_id = schemas.writers["wire.Sent"].id
    assert record.value == b"\x00" + struct.pack(">I", schema_id) + b"\x04o1"
    assert record.headers["ce_dataschema"] == f"{registry.url}/schemas/ids/{schema_id}"


async def _count(transport: Transport, topic: str | None, n: int) -> bool:
    assert topic is not None
    return len(await records(transport, topic)) >= n


async def test_a_raw_producers_bad_payload_and_unknown_ids_are_dead_lettered_with_why(
    registry: Registry, tmp_path: Path, kafka: Transport
) -> None:
    topic = str(Checked.message_info.topic)
    # The outside producer registers the schema with Confluent's client, as it would.
    client = schema_registry.SchemaRegistryClient({"url": registry.url})
    json_id = client.register_schema(
        subject_for(Checked), schema_registry.Schema(schema_text(Checked, "JSON"), "JSON")
    )
    url = f"{registry.url}/schemas/ids/{json_id}"
    reader = Service(f"wire-reader-{RUN}")
    handled: list[str] = []

    @reader.on(Checked)
    async def take(event: Checked, ctx: Context) -> None:
        handled.append(event.order_id)

    good = placed(1).model_dump(mode="json")
    # "7" passes pydantic's lax mode; the registered schema says integer.
    bad = {**good, "order_id": "o2", "lines": [{"sku": "sku-1", "quantity": "7"}]}
    async with running(reader, registry.url, tmp_path, SchemaType.JSON) as runtime:
        raw_produce(topic, json.dumps(good).encode(), ce_headers("wire.Checked", url))
        raw_produce(topic, json.dumps(bad).encode(), ce_headers("wire.Checked", url))
        nowhere = f"{registry.url}/schemas/ids/987654"
        raw_produce(topic, json.dumps(good).encode(), ce_headers("wire.Checked", nowhere))
        framed = b"\x00" + struct.pack(">I", 987655) + b"\x04o3"
        avro = ce_headers("wire.Checked", "", "application/avro")
        del avro["ce_dataschema"]
        raw_produce(topic, framed, avro)
        await until(lambda: _count(kafka, dlq_topic(runtime.service.group), 3))
        dead = await letters(kafka, runtime.service.group)
    assert handled == ["o1"]
    reasons = sorted(d.reason for d in dead)
    assert [d.kind for d in sorted(dead, key=lambda d: d.reason)] == [
        DeadLetterKind.INVALID,
        DeadLetterKind.UNDECODABLE,
        DeadLetterKind.UNDECODABLE,
    ]
    assert reasons[0] == (
        f"invalid wire.Checked (registered schema {json_id}): lines/0/quantity: must be integer"
    )
    assert f"schema id 987654 is not known to the registry {registry.url}" in reasons[1]
    assert f"schema id 987655 is not known to the registry {registry.url}" in reasons[2]


async def test_a_v3_consumer_reads_v1_avro_records_through_the_registry_and_upcasters(
    registry: Registry, tmp_path: Path, kafka: Transport
) -> None:
    subject = subject_for(Renamed3)
    v1 = Service(f"wire-v1-{RUN}", publishes=[Renamed1])
    v3 = Service(f"wire-v3-{RUN}", publishes=[Renamed3])
    reader = Service(f"wire-v3-reader-{RUN}")
    read: list[Renamed3] = []

    @reader.on(Renamed3)
    async def take(event: Renamed3, ctx: Context) -> None:
        read.append(event)

    async with running(v1, registry.url, tmp_path, SchemaType.AVRO) as old:
        # Renaming fields is no compatible change: the subject's rule allows it here.
        async with httpx.AsyncClient(base_url=registry.url) as http:
            put = await http.put(f"/config/{subject}", json={"compatibility": "NONE"})
            assert put.status_code == 200, put.text
            async with running(v3, registry.url, tmp_path, SchemaType.AVRO):
                pass
            assert (await http.get(f"/subjects/{subject}/versions")).json() == [1, 2]
        async with running(reader, registry.url, tmp_path, SchemaType.AVRO) as consumer:
            async with old.unit_of_work() as ctx:
                ctx.publish(Renamed1(order_id="o1", name="Ada Lovelace"))
            await until(lambda: len(read) == 1)
            v1_id = old.handling.schemas.writer("wire.Renamed").id  # type: ignore[union-attr]
            assert v1_id in consumer.handling.schemas.known  # type: ignore[union-attr]
    assert read == [Renamed3(order_id="o1", first_name="Ada", last_name="Lovelace", currency="EUR")]


async def test_steady_state_makes_no_registry_call_and_an_outage_loses_nothing(
    registry: Registry, tmp_path: Path, kafka: Transport
) -> None:
    topic = f"wire.{RUN}.steady"

    class Counted(Event, topic=topic, key="order_id", type="wire.Counted"):
        order_id: str
        n: int

    class Counted2(Event, topic=topic, key="order_id", type="wire.Counted", version=2):
        order_id: str
        n: int
        note: str = ""

    producer = Service(f"wire-steady-{RUN}", publishes=[Counted])
    reader = Service(f"wire-steady-reader-{RUN}")
    seen: list[int] = []

    @reader.on(Counted)
    async def take(event: Counted, ctx: Context) -> None:
        seen.append(event.n)

    async def publish(runtime: Runtime, numbers: range) -> None:
        for n in numbers:
            async with runtime.unit_of_work() as ctx:
                ctx.publish(Counted(order_id=f"o{n % 7}", n=n))

    async with (
        running(producer, registry.url, tmp_path, SchemaType.AVRO) as out,
        running(reader, registry.url, tmp_path, SchemaType.AVRO) as into,
    ):
        await publish(out, range(1))
        await until(lambda: len(seen) == 1)  # the reader fetched the writer's schema once
        calls = len(registry.requests)
        await publish(out, range(1, 200))
        await until(lambda: len(seen) == 200)
        assert registry.requests[calls:] == []  # steady state: no registry call

        # A v2 schema another producer registered, which the reader has not fetched yet.
        v2_id = schema_registry.SchemaRegistryClient({"url": registry.url}).register_schema(
            subject_for(Counted), schema_registry.Schema(schema_text(Counted2, "AVRO"), "AVRO")
        )
        registry.stop()
        # Publishing needs no registry: the outbox takes them, the relay publishes them.
        await publish(out, range(200, 250))
        await until(lambda: len(seen) == 250)
        # A record naming the schema not fetched yet waits for the registry: not dead-lettered.
        v2 = RegisteredSchema(
            v2_id, "AVRO", schema_text(Counted2, "AVRO"), schema_url(registry.url, v2_id)
        )
        value = v2.write_avro(Counted2(order_id="o", n=250, note="v2").model_dump(mode="json"))
        raw_produce(topic, value, ce_headers("wire.Counted", v2.url, "application/avro"), "o")
        await asyncio.sleep(3)
        assert len(seen) == 250 and v2_id not in into.handling.schemas.known  # type: ignore[union-attr]
        assert await records(kafka, dlq_topic(reader.group)) == []
        registry.start()
        await until(lambda: len(seen) == 251)
    assert sorted(seen) == list(range(251))
    assert await records(kafka, dlq_topic(reader.group)) == []


async def test_avro_on_a_structured_mode_broker_is_refused_before_anything_starts() -> None:
    from tidings.host import serve

    service = Service(f"wire-nats-{RUN}", publishes=[Placed])
    with pytest.raises(ValueError, match=r"--schema-format avro needs a broker .* binary mode"):
        await serve(
            service,
            "nats://127.0.0.1:4222",
            "sqlite:///:memory:",
            registry="http://x",
            schema_format="avro",
        )
