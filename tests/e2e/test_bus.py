"""``tidings.connect``: publishing from outside a handler, on the SQLite log, Kafka and NATS.

Each test publishes through a bus and reads the records back with a consumer group on a
second connection, as a service would. With a store, publishing goes through the outbox:
a producer process killed right after its commit loses nothing.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import pytest

import tidings
from tidings import Event, codec
from tidings.records import Record
from tidings.store import make_store
from tidings.testing.servers import require
from tidings.transport import make_transport


def fresh_topic() -> str:
    return f"bus-{uuid.uuid4().hex[:10]}"


def signed_up(topic: str) -> type[Event]:
    """An event type on a topic of its own (the servers are shared between test runs)."""

    class SignedUp(Event, topic=topic, key="user", version=2):
        user: str
        plan: str

    return SignedUp


async def consume(url: str, topic: str, until: int, timeout: float = 30.0) -> list[Record]:
    """Records of ``topic`` read by a new consumer group, until ``until`` have come."""
    transport = make_transport(url)
    await transport.connect()
    got: list[Record] = []
    try:
        sub = await transport.subscribe(f"reader-{uuid.uuid4().hex[:8]}", [topic])
        deadline = time.monotonic() + timeout
        while len(got) < until and time.monotonic() < deadline:
            for delivery in await sub.fetch(100, timeout=0.5):
                got.append(delivery.record)
                await delivery.ack()
        await sub.close()
    finally:
        await transport.close()
    return got


async def records_on(url: str, topic: str) -> int:
    """How many records ``topic`` holds (0 if it does not exist)."""
    transport = make_transport(url)
    await transport.connect()
    try:
        infos = [t for t in await transport.topics() if t.name == topic]
    finally:
        await transport.close()
    return sum(sum(t.end_offsets.values()) for t in infos)


async def test_publish_without_a_store_puts_the_envelope_on_the_broker(broker: str) -> None:
    topic = fresh_topic()
    SignedUp = signed_up(topic)
    async with tidings.connect(broker, source="signup-form") as bus:
        sent = [
            await bus.publish(SignedUp(user="ada", plan="pro")),
            await bus.publish(SignedUp(user="grace", plan="free")),
        ]
    records = await consume(broker, topic, until=2)
    received = sorted((codec.decode(r) for r in records), key=lambda e: e.subject or "")
    assert received == sent  # every attribute, time and data included
    for envelope, user in zip(received, ["ada", "grace"], strict=True):
        assert envelope.type == "SignedUp"
        assert envelope.subject == user
        assert envelope.version == 2
        assert envelope.source == "signup-form"
        assert envelope.correlationid == envelope.id  # each starts a correlation
        assert envelope.causationid is None
    assert {r.key for r in records} == {"ada", "grace"}
    expected_mode = make_transport(broker).content_mode
    structured = {r.headers.get("content-type") == codec.STRUCTURED_CONTENT_TYPE for r in records}
    assert structured == {expected_mode == "structured"}


@pytest.mark.parametrize(
    "store_template",
    [
        pytest.param("sqlite:///{tmp}/producer.db", id="sqlite-store"),
        pytest.param("postgresql://postgres@127.0.0.1:5432/tidings", id="postgres-store"),
    ],
)
async def test_a_unit_of_work_publishes_through_the_outbox_atomically(
    broker: str, store_template: str, tmp_path: Path
) -> None:
    require(store_template)
    topic = fresh_topic()
    SignedUp = signed_up(topic)
    store_url = store_template.format(tmp=tmp_path)
    source = f"importer-{uuid.uuid4().hex[:8]}"  # its own outbox in a shared database
    async with tidings.connect(broker, store_url, source=source) as bus:
        with pytest.raises(RuntimeError, match="boom"):
            async with bus.unit_of_work() as ctx:
                ctx.publish(SignedUp(user="rolled-back", plan="pro"))
                raise RuntimeError("boom")
        async with bus.unit_of_work() as ctx:
            first = ctx.publish(SignedUp(user="ada", plan="pro"))
            ctx.publish(SignedUp(user="grace", plan="free"), key="grace-2")
        single = await bus.publish(SignedUp(user="alan", plan="free"), cause=first)
    records = await consume(broker, topic, until=3)
    received = {codec.decode(r).subject: codec.decode(r) for r in records}
    assert sorted(received) == ["ada", "alan", "grace-2"]  # nothing of the rolled-back one
    assert received["ada"] == first
    assert received["alan"] == single
    assert single.correlationid == first.id and single.causationid == first.id
    assert {e.source for e in received.values()} == {source}
    assert {e.version for e in received.values()} == {2}
    store = make_store(store_url)
    await store.connect()
    try:
        assert await store.outbox_backlog(source) == 0  # the close flushed everything
    finally:
        await store.close()


PRODUCER = textwrap.dedent(
    """
    import asyncio, os, sys

    import tidings
    from tidings import Event

    broker, store, topic = sys.argv[1:4]


    class SignedUp(Event, topic=topic, key="user", version=2):
        user: str
        plan: str


    async def main() -> None:
        bus = await tidings.connect(broker, store, source="crashy").open()
        async with bus.unit_of_work() as ctx:
            envelope = ctx.publish(SignedUp(user="ada", plan="pro"))
        # Committed to the outbox; die before the relay gets a turn to publish it.
        print(envelope.id, flush=True)
        os._exit(0)


    asyncio.run(main())
    """
)


async def test_a_record_committed_by_a_killed_producer_is_published_by_the_next_bus(
    broker: str, tmp_path: Path
) -> None:
    topic = fresh_topic()
    store_url = f"sqlite:///{tmp_path}/producer.db"
    script = tmp_path / "producer.py"
    script.write_text(PRODUCER)
    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, str(script), broker, store_url, topic],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    assert done.returncode == 0, done.stderr
    event_id = done.stdout.strip()
    store = make_store(store_url)
    await store.connect()
    try:
        assert await store.outbox_backlog("crashy") == 1  # in the store, not yet relayed
    finally:
        await store.close()
    assert await records_on(broker, topic) == 0
    async with tidings.connect(broker, store_url, source="crashy"):
        pass  # opening relays what waits in the outbox; closing flushes it
    [record] = await consume(broker, topic, until=1)
    assert codec.decode(record).id == event_id


async def test_a_bus_refuses_what_it_cannot_do(tmp_path: Path) -> None:
    bus = tidings.connect(f"sqlite:///{tmp_path}/log.db", source="script")
    with pytest.raises(RuntimeError, match="not open"):
        await bus.publish(signed_up("t")(user="u", plan="p"))
    async with bus:
        with pytest.raises(RuntimeError, match="needs a store"):
            async with bus.unit_of_work():
                pass
    with pytest.raises(ValueError, match="source"):
        tidings.connect(f"sqlite:///{tmp_path}/log.db", source=" ")


def test_importing_tidings_loads_no_broker_or_bus_code() -> None:
    probe = (
        "import sys, tidings; "
        "print(sorted(m for m in sys.modules if m == 'tidings.bus' "
        "or m.startswith(('tidings.transport.', 'confluent_kafka', 'nats', 'psycopg'))))"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]", done.stdout
