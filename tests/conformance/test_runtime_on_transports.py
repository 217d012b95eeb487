"""The runtime's promises on every transport: dead-letter routing and replay, redelivery.

These run the framework (not just the transport) against each real engine, with the
broker URLs of conftest.BROKERS, so `pytest -k kafka` selects Kafka's.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

from tidings import Context, Event, NonRecoverable, RetryPolicy, Service, codec, upcaster
from tidings.reliability.deadletter import DeadLetter, dlq_topic
from tidings.runtime import Runtime
from tidings.store.sqlite import SQLiteStore
from tidings.testing import records
from tidings.transport import make_transport
from tidings.transport.base import OutgoingRecord, Record, Subscription, Transport


def payment_requested(topic: str) -> type[Event]:
    """The event type, on a topic of its own: the real brokers are shared by every run."""

    class PaymentRequested(Event, topic=topic, key="payment_id"):
        payment_id: str
        cents: int

    return PaymentRequested


@contextlib.asynccontextmanager
async def running(
    svc: Service, transport_url: str, tmp_path: Path
) -> AsyncIterator[tuple[Runtime, Transport]]:
    """``svc`` started on the transport at ``transport_url``, its state in SQLite."""
    transport = make_transport(transport_url)
    await transport.connect()
    store = SQLiteStore(str(tmp_path / "state.db"))
    await store.connect()
    rt = Runtime(svc, transport, store)
    await rt.start()
    try:
        yield rt, transport
    finally:
        await rt.stop()
        await store.close()
        await transport.close()


async def _until(check: Callable[[], Awaitable[bool]], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.1)


class Kept:
    """A topic's records as a test reads them back: the log itself on a broker with
    offsets; else what a witness group, subscribed by :meth:`start` before the records
    are published, has received so far (a broker without history keeps nothing for a
    group that did not exist yet)."""

    def __init__(self, transport: Transport, topic: str) -> None:
        self.transport, self.topic = transport, topic
        self._sub: Subscription | None = None
        self._seen: list[Record] = []

    async def start(self) -> Kept:
        if not self.transport.capabilities.offsets:
            witness = f"witness-{uuid.uuid4().hex[:8]}"
            self._sub = await self.transport.subscribe(witness, [self.topic])
        return self

    async def all(self) -> list[Record]:
        if self._sub is None:
            return await records(self.transport, self.topic)
        for delivery in await self._sub.fetch(timeout=0.2):
            self._seen.append(delivery.record)
            await delivery.ack()
        return list(self._seen)


async def _read_all(kept: Kept) -> list[DeadLetter]:
    return [DeadLetter.from_record(r) for r in await kept.all()]


async def test_poison_and_failing_events_are_dead_lettered_then_replayed(
    transport_url: str, tmp_path: Path
) -> None:
    suffix = uuid.uuid4().hex[:8]
    PaymentRequested = payment_requested(f"conformance.payments.{suffix}")
    topic = f"conformance.payments.{suffix}"
    svc = Service(f"payments-{suffix}", retry=RetryPolicy(max_attempts=2, initial_delay=0.01))
    handled: list[int] = []
    broken = {"on": True}

    @svc.on(PaymentRequested)
    async def pay(event: Any, ctx: Context) -> None:
        if event.cents < 0:
            raise NonRecoverable("negative amount")
        if broken["on"] and event.cents == 13:
            raise RuntimeError("card processor timed out")
        handled.append(event.cents)

    async with running(svc, transport_url, tmp_path) as (rt, transport):
        letters_kept = await Kept(transport, dlq_topic(svc.group)).start()
        async with rt.unit_of_work() as ctx:
            for cents in (5, -1, 13, 7):
                ctx.publish(PaymentRequested(payment_id=f"p{cents}", cents=cents))
        await transport.publish([OutgoingRecord(topic, b"garbage", "p0")])
        await _until(lambda: _dlq_count(letters_kept, 3))
        letters = {d.reason.split(":")[0]: d for d in await _read_all(letters_kept)}
        assert sorted(handled) == [5, 7]
        assert set(letters) == {
            "undecodable",
            f"{pay.__qualname__} raised a non-recoverable error",
            f"{pay.__qualname__} failed after 2 attempt(s)",
        }
        failed = letters[f"{pay.__qualname__} failed after 2 attempt(s)"]
        assert failed.error == "RuntimeError: card processor timed out" and failed.attempts == 2
        assert failed.topic == topic and failed.offset >= 0

        broken["on"] = False  # the processor is back: replay the dead letter
        await transport.publish([failed.replay_record()])
        await _until(lambda: _handled(handled, 13))
        assert sorted(handled) == [5, 7, 13]


async def _dlq_count(kept: Kept, n: int) -> bool:
    return len(await _read_all(kept)) >= n


async def _handled(handled: list[int], cents: int) -> bool:
    return cents in handled


async def test_old_versions_in_the_log_are_upcast_for_the_handler(
    transport_url: str, tmp_path: Path
) -> None:
    topic = f"conformance.upcast.{uuid.uuid4().hex[:8]}"

    class ShipmentV1(Event, topic=topic, key="shipment_id", type="Shipment"):
        shipment_id: str
        kilos: float

    class Shipment(Event, topic=topic, key="shipment_id", version=3):
        shipment_id: str
        grams: int
        carrier: str

    @upcaster(Shipment, from_version=1)
    def to_grams(data: dict[str, Any]) -> dict[str, Any]:
        return {"shipment_id": data["shipment_id"], "grams": round(data["kilos"] * 1000)}

    @upcaster(Shipment, from_version=2)
    def add_carrier(data: dict[str, Any]) -> dict[str, Any]:
        return {**data, "carrier": "unknown"}

    svc = Service(f"shipping-{topic.rsplit('.', 1)[1]}")
    got: list[Any] = []

    @svc.on(Shipment)
    async def ship(event: Any) -> None:
        got.append(event)

    async with running(svc, transport_url, tmp_path) as (rt, transport):
        kept = await Kept(transport, topic).start()
        async with rt.unit_of_work() as ctx:  # an old producer's events, still in the log
            ctx.publish(ShipmentV1(shipment_id="s1", kilos=1.25))
            ctx.publish(Shipment(shipment_id="s2", grams=7, carrier="post"))
        await _until(lambda: _count(got, 2))
        assert sorted((s.shipment_id, s.grams, s.carrier) for s in got) == [
            ("s1", 1250, "unknown"),
            ("s2", 7, "post"),
        ]
        await _until(lambda: _kept_count(kept, 2))
        stored = {e.data["shipment_id"]: e.version for e in map(codec.decode, await kept.all())}
        assert stored == {"s1": 1, "s2": 3}  # the log keeps what was written


async def _kept_count(kept: Kept, n: int) -> bool:
    return len(await kept.all()) >= n


async def _count(items: list[Any], n: int) -> bool:
    return len(items) >= n
