"""Upcasters: old versions of an event brought to the version a handler reads."""

from __future__ import annotations

from typing import Any

import pytest

from tidings import Event, RetryPolicy, Service, upcaster
from tidings.testing import TestApp
from tidings.upcasting import NoUpcastPath, upcast


# Three versions of one event type, as three producers would have declared it over time.
class ParcelV1(Event, topic="unit.parcels", key="parcel_id", type="ParcelSent"):
    parcel_id: str
    name: str  # "first last"


class ParcelV2(Event, topic="unit.parcels", key="parcel_id", type="ParcelSent", version=2):
    parcel_id: str
    first_name: str
    last_name: str


class ParcelSent(Event, topic="unit.parcels", key="parcel_id", version=3):
    parcel_id: str
    first_name: str
    last_name: str
    grams: int  # no default: an old event must be upcast, it cannot just validate


@upcaster(ParcelSent, from_version=1)
def split_name(data: dict[str, Any]) -> dict[str, Any]:
    first, _, last = data.pop("name").partition(" ")
    return {**data, "first_name": first, "last_name": last}


@upcaster(ParcelSent, from_version=2)
def add_weight(data: dict[str, Any]) -> dict[str, Any]:
    return {**data, "grams": 0}


class Gap(Event, topic="unit.gaps", version=3):
    x: int


@upcaster(Gap, from_version=2)
def gap_two(data: dict[str, Any]) -> dict[str, Any]:
    return data


def test_steps_chain_from_the_written_version_to_the_read_one() -> None:
    old = {"parcel_id": "p1", "name": "Ada Lovelace"}
    assert upcast(ParcelSent, old, 1) == {
        "parcel_id": "p1", "first_name": "Ada", "last_name": "Lovelace", "grams": 0
    }  # fmt: skip
    assert old == {"parcel_id": "p1", "name": "Ada Lovelace"}  # the input is left alone
    assert upcast(ParcelSent, {"parcel_id": "p", "first_name": "A", "last_name": "B"}, 2)[
        "grams"
    ] == 0
    same = {"parcel_id": "p"}
    assert upcast(ParcelSent, same, 3) is same and upcast(ParcelSent, same, None) is same
    assert upcast(ParcelSent, same, 4) is same  # newer: read as it is (tolerant reader)


def test_a_missing_step_names_the_upcaster_to_write() -> None:
    with pytest.raises(NoUpcastPath, match=r"Gap v1 cannot be read as v3: no upcaster from v1"):
        upcast(Gap, {"x": 1}, 1)
    assert upcast(Gap, {"x": 1}, 2) == {"x": 1}


def test_registration_mistakes_fail_at_import() -> None:
    with pytest.raises(ValueError, match=r"Gap is at version 3, so a step starts at a version from 1 to 2"):
        upcaster(Gap, from_version=3)
    with pytest.raises(ValueError, match="already has an upcaster from version 2: gap_two"):

        @upcaster(Gap, from_version=2)
        def again(data: dict[str, Any]) -> dict[str, Any]:
            return data

    with pytest.raises(TypeError, match="must be a plain def"):

        @upcaster(Gap, from_version=1)
        async def remote(data: dict[str, Any]) -> dict[str, Any]:
            return data


async def test_a_handler_of_v3_gets_v1_and_v2_events_upcast_and_a_gap_dead_lettered() -> None:
    svc = Service("unit-upcast", retry=RetryPolicy(max_attempts=1))
    got: list[ParcelSent] = []

    @svc.on
    async def receive(event: ParcelSent) -> None:
        got.append(event)

    @svc.on
    async def gap(event: Gap) -> None:
        raise AssertionError("a v1 Gap has no way to v3 and must never reach the handler")

    class GapV1(Event, topic="unit.gaps", type="Gap"):
        x: int

    async with TestApp(svc) as app:
        await app.publish(ParcelV1(parcel_id="p1", name="Ada Lovelace"))
        await app.publish(ParcelV2(parcel_id="p2", first_name="Alan", last_name="Turing"))
        await app.publish(ParcelSent(parcel_id="p3", first_name="G", last_name="H", grams=5))
        await app.publish(GapV1(x=1))
        await app.drain()
        letters = await app.dead_letters(svc)
    assert sorted((p.parcel_id, p.first_name, p.last_name, p.grams) for p in got) == [
        ("p1", "Ada", "Lovelace", 0),
        ("p2", "Alan", "Turing", 0),
        ("p3", "G", "H", 5),
    ]
    assert [(d.kind, d.reason) for d in letters] == [
        (
            "invalid",
            "Gap v1 cannot be read as v3: no upcaster from v1 "
            "(write one: @upcaster(Gap, from_version=1))",
        )
    ]


async def test_a_failing_step_or_data_it_cannot_fix_is_dead_lettered_with_the_versions() -> None:
    class Tag(Event, topic="unit.tags", version=2):
        label: str

    class TagV1(Event, topic="unit.tags", type="Tag"):
        text: str | None = None

    @upcaster(Tag, from_version=1)
    def rename(data: dict[str, Any]) -> dict[str, Any]:
        return {"label": data.pop("text").upper()}  # fails on None

    class TagV3(Event, topic="unit.tags", type="Tag", version=3):
        other: str

    svc = Service("unit-upcast-bad", retry=RetryPolicy(max_attempts=1))

    @svc.on(Tag)  # a local class: the annotation cannot be resolved, so it is named
    async def tag(event: Tag) -> None: ...

    async with TestApp(svc) as app:
        await app.publish(TagV1(text=None))
        await app.publish(TagV3(other="x"))
        await app.drain()
        reasons = sorted(d.reason for d in await app.dead_letters(svc))
    assert reasons[0].startswith("Tag: the upcaster from v1 failed: AttributeError(")
    assert reasons[1] == "invalid Tag (written as v3, read as v2): label: Field required"
