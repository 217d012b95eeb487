"""Message declaration: class keywords checked when the class is created."""

from __future__ import annotations

import pytest
from pydantic import BaseModel

from tidings import Collection, Command, Context, Event, Service
from tidings.messages import new_envelope
from tidings.reliability.policy import RetryPolicy
from tidings.testing import TestApp


class Shipped(Event, topic="unit.shipments", key="shipment_id", version=3):
    shipment_id: str
    weight: int


class _Keyed(Event, key="order_id", abstract=True):
    order_id: str


class Packed(_Keyed, topic="unit.packing"):
    box: str


class Renamed(Event, topic="unit.renamed", type="com.example.renamed"):
    x: int


def test_declared_options_are_read_back() -> None:
    info = Shipped.message_info
    assert (info.type, info.topic, info.key, info.version) == (
        "Shipped",
        "unit.shipments",
        "shipment_id",
        3,
    )
    assert Packed.message_info.key == "order_id"  # inherited from the abstract base
    assert Packed.message_info.version == 1  # version belongs to one class
    assert Renamed.message_info.type == "com.example.renamed"
    assert Shipped(shipment_id="s1", weight=2).message_key() == "s1"


def test_version_and_key_reach_the_envelope() -> None:
    envelope = new_envelope(Shipped(shipment_id="s9", weight=1), source="unit")
    assert envelope.subject == "s9"
    assert envelope.type == "Shipped"
    assert envelope.dataschema == "urn:tidings:schema:Shipped:3"
    assert envelope.version == 3
    assert envelope.correlationid == envelope.id and envelope.causationid is None


def test_unknown_key_field_fails_at_class_creation() -> None:
    with pytest.raises(
        TypeError, match=r"Bad: key='order' is not a field of Bad \(its fields: order_id\)"
    ):

        class Bad(Event, topic="t", key="order"):
            order_id: str


def test_event_without_topic_fails_unless_abstract() -> None:
    with pytest.raises(TypeError, match=r"Lost: an event needs a topic"):

        class Lost(Event):
            x: int

    class Base(Event, abstract=True):
        x: int

    class Request(Command):  # a command may have no topic (an HTTP body)
        x: int

    assert Base.message_info.topic is None and Request.message_info.topic is None


@pytest.mark.filterwarnings("ignore:Field name:UserWarning")
@pytest.mark.parametrize("field", ["message_info", "message_key"])
def test_field_shadowing_a_framework_name_fails(field: str) -> None:
    with pytest.raises(TypeError, match=rf"Shadow\.{field}: a field may not be named"):
        type("Shadow", (Event,), {"__annotations__": {field: "str"}}, topic="t")


def test_a_field_named_subject_or_topic_is_an_ordinary_field() -> None:
    class Mail(Event, topic="unit.mail", key="subject"):
        subject: str
        topic: str

    mail = Mail(subject="hello", topic="greetings")
    envelope = new_envelope(mail, source="unit")
    assert envelope.subject == "hello" and envelope.data == {
        "subject": "hello",
        "topic": "greetings",
    }


def test_bad_version_fails() -> None:
    with pytest.raises(TypeError, match="version must be a whole number from 1"):

        class V(Event, topic="t", version=0):
            x: int


class Note(BaseModel):
    text: str


def test_handler_type_from_annotation_and_optional_context() -> None:
    svc = Service("unit-handlers")

    @svc.on
    async def with_ctx(event: Shipped, ctx: Context) -> None: ...

    @svc.on
    async def without_ctx(event: Packed | Renamed) -> None: ...

    assert svc.handlers["Shipped"].takes_context
    assert not svc.handlers["Packed"].takes_context
    assert svc.handlers["com.example.renamed"].fn is without_ctx
    assert svc.topics() == ["unit.packing", "unit.renamed", "unit.shipments"]


def test_handler_errors_name_the_problem() -> None:
    svc = Service("unit-errors")
    with pytest.raises(TypeError, match="annotate the message parameter"):

        @svc.on
        async def bare(event) -> None: ...  # type: ignore[no-untyped-def]

    with pytest.raises(TypeError, match="must be an async def"):

        @svc.on
        def sync(event: Shipped) -> None: ...  # type: ignore[arg-type]

    @svc.on(Shipped)
    async def first(event: Shipped) -> None: ...

    with pytest.raises(ValueError, match="already handles Shipped"):

        @svc.on
        async def second(event: Shipped) -> None: ...


def test_collections_are_typed() -> None:
    svc = Service("unit-state")
    notes = svc.collection("notes", Note)
    assert notes == Collection("notes", Note)
    assert svc.collection("notes", Note) == notes
    with pytest.raises(ValueError, match="collection 'notes' already holds Note"):
        svc.collection("notes", Shipped)


class Placed(Event, topic="unit.placed", key="order_id"):
    order_id: str
    amount_cents: int


class Undeclared(Event, topic="unit.undeclared", key="order_id"):
    order_id: str


async def test_a_service_refuses_to_publish_a_type_it_did_not_declare() -> None:
    svc = Service("unit-declared", publishes=[Placed], retry=RetryPolicy(max_attempts=1))

    @svc.on
    async def echo(event: Placed, ctx: Context) -> None:
        ctx.publish(Placed(order_id=event.order_id + "-again", amount_cents=1))
        ctx.publish(Undeclared(order_id=event.order_id))

    async with TestApp(svc) as app:
        await app.publish(Placed(order_id="o1", amount_cents=5))
        await app.drain()
        letters = await app.dead_letters(svc)
        assert await app.published(Placed) == [Placed(order_id="o1", amount_cents=5)]
    assert len(letters) == 1
    assert "publishes Undeclared, which it does not declare" in letters[0].error
    assert "publishes=[Placed]" in letters[0].error
    with pytest.raises(TypeError, match="Event"):
        Service("unit-bad", publishes=[Event])
