"""What the NATS JetStream transport promises beyond the shared suite, on a real server.

The rules every transport keeps are checked by the conformance suite
(``tests/conformance/test_transport.py``, id ``nats``); these cases look at JetStream
itself with the raw nats-py API: one stream per partition, ``Nats-Msg-Id``
deduplication, header escaping, the unreachable-server message, and a server restart in the middle of publishing.

Needs ``scripts/services up nats``. Without a server the cases are skipped, unless
``CI=true``, where a missing backend is a failure.
"""

from __future__ import annotations

import asyncio
import collections
import json
import os
import shutil
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import NoReturn

import nats
import pytest
import pytest_asyncio
from nats.js import api
from nats.js.client import JetStreamContext

from tidings import codec
from tidings.envelope import Envelope
from tidings.testing.servers import skip_or_fail
from tidings.transport import make_transport, open_transport
from tidings.transport.base import (
    BrokerUnavailable,
    Delivery,
    OutgoingRecord,
    Subscription,
    TransportError,
)
from tidings.transport.nats import NatsTransport

URL = os.environ.get("TIDINGS_NATS_URL", "nats://127.0.0.1:4222")
REPO = Path(__file__).resolve().parents[3]
SERVICES = REPO / "scripts" / "services"


def unreachable(reason: str) -> NoReturn:
    skip_or_fail(
        f"NATS backend not reachable at {URL} ({reason}); start it with `scripts/services up nats`"
    )


@pytest_asyncio.fixture
async def prefix() -> str:
    """A prefix for this test's topics and groups, whose streams are deleted afterwards."""
    return f"natstest-{uuid.uuid4().hex[:8]}"


@pytest_asyncio.fixture
async def transport(prefix: str) -> AsyncIterator[NatsTransport]:
    try:
        transport = await open_transport(URL)
    except BrokerUnavailable as exc:
        unreachable(str(exc))
    assert isinstance(transport, NatsTransport)
    try:
        yield transport
    finally:
        await transport.close()
        await _delete_streams(prefix)


@pytest_asyncio.fixture
async def js() -> AsyncIterator[JetStreamContext]:
    """The raw nats-py JetStream API, to look at what the transport made."""
    try:
        nc = await nats.connect(URL, allow_reconnect=False, connect_timeout=2)
    except Exception as exc:  # any failure to connect means: no server here
        unreachable(str(exc))
    try:
        yield nc.jetstream()
    finally:
        await nc.close()


async def _delete_streams(prefix: str) -> None:
    with_dots = prefix.replace(".", "_")
    try:
        nc = await nats.connect(URL, allow_reconnect=False, connect_timeout=2)
    except Exception:  # nothing to clean on a server that is not there
        return
    try:
        js = nc.jetstream()
        for info in await js.streams_info():
            if info.config.name and info.config.name.startswith(with_dots):
                await js.delete_stream(info.config.name)
    finally:
        await nc.close()


async def consume(sub: Subscription, count: int, within: float = 15.0) -> list[Delivery]:
    got: list[Delivery] = []
    deadline = time.monotonic() + within
    while len(got) < count and time.monotonic() < deadline:
        for delivery in await sub.fetch(max_records=500, timeout=0.2):
            got.append(delivery)
            await delivery.ack()
    return got


async def test_unreachable_server_is_reported_in_one_line_naming_the_url() -> None:
    transport = make_transport("nats://127.0.0.1:1")
    started = time.monotonic()
    with pytest.raises(BrokerUnavailable) as raised:
        await transport.connect()
    message = str(raised.value)
    assert time.monotonic() - started < 5, "connect must not retry forever"
    assert "\n" not in message
    assert "nats://127.0.0.1:1" in message
    assert "scripts/services up nats" in message


async def test_several_servers_one_of_them_down_connect_to_the_one_up() -> None:
    """A cluster URL lists its nodes; a node that is down does not stop the client."""
    try:
        transport = await open_transport(URL.replace("nats://", "nats://127.0.0.1:1,", 1))
    except BrokerUnavailable as exc:
        unreachable(str(exc))
    try:
        assert isinstance(transport, NatsTransport)
        assert len(transport.servers) == 2
        assert transport.nc.is_connected
    finally:
        await transport.close()


async def test_several_servers_all_down_are_each_named_in_one_line() -> None:
    transport = make_transport("nats://127.0.0.1:1,127.0.0.1:2")
    with pytest.raises(BrokerUnavailable) as raised:
        await transport.connect()
    message = str(raised.value)
    assert "\n" not in message
    assert "127.0.0.1:1 (" in message and "127.0.0.1:2 (" in message


async def test_each_partition_is_a_stream_and_the_group_a_consumer_per_partition(
    transport: NatsTransport, js: JetStreamContext, prefix: str
) -> None:
    topic, group = f"{prefix}.orders", f"{prefix}-billing"
    await transport.create_topic(topic, 3)
    records = [OutgoingRecord(topic, f"v{i}".encode(), f"order-{i % 7}") for i in range(40)]
    await transport.publish(records)
    ends = {t.name: t for t in await transport.topics()}[topic].end_offsets
    sub = await transport.subscribe(group, [topic])
    assert len(await consume(sub, 40)) == 40
    committed = await transport.committed(group)
    await sub.close()
    for part in range(3):
        stream = f"{prefix}_orders-{part}"  # dots are not allowed in stream names
        info = await js.stream_info(stream)
        assert info.config.subjects == [f"tidings.{topic}.{part}"]
        assert json.loads(info.config.description or "") == {
            "tidings_topic": topic, "partition": part, "partitions": 3,
        }  # fmt: skip
        # The stream sequence is the offset plus one: offsets are dense per partition.
        assert info.state.messages == info.state.last_seq == ends[part]
        first = await js.get_msg(stream, seq=1)
        stored = (await transport.read(topic, part, 0, 1))[0]
        assert first.data == stored.value
        assert first.headers and first.headers["Tidings-Key"] == stored.key
        assert first.headers["Nats-Msg-Id"]
        consumers = [c for c in await js.consumers_info(stream)
                     if c.config.description == json.dumps({"tidings_group": group})]  # fmt: skip
        assert len(consumers) == 1, "one durable consumer per group and partition"
        consumer = consumers[0]
        assert consumer.name.startswith(f"{group}_")
        assert consumer.config.ack_policy == api.AckPolicy.ALL  # cumulative, as the contract
        if ends[part]:
            assert consumer.ack_floor is not None
            assert consumer.ack_floor.stream_seq == committed[(topic, part)] == ends[part]


async def test_the_same_event_published_twice_is_stored_once(
    transport: NatsTransport, js: JetStreamContext, prefix: str
) -> None:
    topic = f"{prefix}-dedupe"
    await transport.create_topic(topic, 3)
    envelope = Envelope(
        id=str(uuid.uuid4()), source="test", type="OrderPlaced", subject="order-1", data={"n": 1}
    )
    structured = codec.encode(envelope, topic, "structured")
    binary = codec.encode(envelope.replace(id=str(uuid.uuid4())), topic, "binary")
    keyless = OutgoingRecord(topic, b"{}", None, {"ce_id": str(uuid.uuid4())})
    for record in (structured, binary, keyless):
        await transport.publish([record])
        await transport.publish([record])  # a retry, or the outbox relay after a crash
    plain = OutgoingRecord(topic, b"no id", "k")
    await transport.publish([plain, plain])  # no event id: two records, both kept
    info = {t.name: t for t in await transport.topics()}[topic]
    assert sum(info.end_offsets.values()) == 5
    ids = []
    for part, end in info.end_offsets.items():
        for seq in range(1, end + 1):
            msg = await js.get_msg(f"{topic}-{part}", seq=seq)
            ids.append((msg.headers or {}).get("Nats-Msg-Id"))
    assert envelope.id in ids
    assert len(set(ids)) == 5


async def test_headers_and_keys_nats_cannot_carry_come_back_unchanged(
    transport: NatsTransport, prefix: str
) -> None:
    topic, group = f"{prefix}-headers", f"{prefix}-g"
    headers = {
        "dlq-traceback": "Traceback:\n  line 1\r\n  line 2",
        "padded": "  spaces around  ",
        "émoji name": "✓",
        "Nats-Msg-Id": "the user's own",
        "Tidings-Key": "not the key",
        "Status": "404",
        "empty": "",
    }
    record = OutgoingRecord(topic, b"\x00\xffbinary", "key\nwith newline ✓", headers)
    await transport.create_topic(topic, 1)
    await transport.publish([record])
    [stored] = await transport.read(topic, 0, 0, 10)
    sub = await transport.subscribe(group, [topic])
    [delivered] = await consume(sub, 1)
    await sub.close()
    for got in (stored, delivered.record):
        assert got.value == record.value
        assert got.key == record.key
        assert dict(got.headers) == headers


async def test_nack_with_delay_redelivers_after_the_delay_before_what_follows(
    transport: NatsTransport, prefix: str
) -> None:
    topic, group = f"{prefix}-nack", f"{prefix}-g"
    await transport.create_topic(topic, 1)
    await transport.publish([OutgoingRecord(topic, f"r{i}".encode(), "k") for i in range(3)])
    sub = await transport.subscribe(group, [topic])
    first = await sub.fetch(max_records=1, timeout=10)
    assert [d.record.value for d in first] == [b"r0"]
    nacked_at = time.monotonic()
    await first[0].nack(delay=0.5)
    again: list[tuple[float, Delivery]] = []
    while len(again) < 3 and time.monotonic() - nacked_at < 10:
        for delivery in await sub.fetch(max_records=10, timeout=0.1):
            again.append((time.monotonic() - nacked_at, delivery))
            await delivery.ack()
    assert [d.record.value for _, d in again] == [b"r0", b"r1", b"r2"]
    assert again[0][0] >= 0.45 and again[0][1].attempt == 2
    assert (await transport.committed(group))[(topic, 0)] == 3
    await sub.close()


async def test_topics_whose_stream_names_collide_are_refused(
    transport: NatsTransport, prefix: str
) -> None:
    await transport.create_topic(f"{prefix}.a", 1)
    with pytest.raises(TransportError, match="already exists for something else"):
        await transport.create_topic(f"{prefix}_a", 1)


async def test_server_restart_while_publishing_and_consuming_loses_nothing(
    transport: NatsTransport, prefix: str
) -> None:
    status = await asyncio.create_subprocess_exec(
        str(SERVICES), "status", "nats", stdout=asyncio.subprocess.PIPE
    )
    out, _ = await status.communicate()
    if not shutil.which("bash") or b"running" not in out:
        skip_or_fail("needs the nats-server of `scripts/services up nats`, to restart it")
    topic, group = f"{prefix}-restart", f"{prefix}-g"
    await transport.create_topic(topic, 3)
    consumer = await open_transport(URL)
    try:
        sub = await consumer.subscribe(group, [topic])
        sent: list[int] = []
        got: list[int] = []
        publishing = True

        async def publish() -> None:
            while publishing:
                batch = [OutgoingRecord(topic, str(n).encode(), f"k{n % 10}")
                         for n in range(len(sent), len(sent) + 10)]  # fmt: skip
                await transport.publish(batch)  # must ride out the restart, not raise
                sent.extend(int(r.value) for r in batch)
                await asyncio.sleep(0.005)

        async def drain(until: float) -> None:
            while time.monotonic() < until and not (publisher.done() and set(got) >= set(sent)):
                for delivery in await sub.fetch(max_records=200, timeout=0.2):
                    got.append(int(delivery.record.value))
                    await delivery.ack()

        publisher = asyncio.create_task(publish())
        draining = asyncio.create_task(drain(time.monotonic() + 60))
        await asyncio.sleep(1.0)
        restart = await asyncio.create_subprocess_exec(
            str(SERVICES), "restart", "nats", stderr=asyncio.subprocess.DEVNULL
        )
        assert await restart.wait() == 0, "scripts/services restart nats failed"
        await asyncio.sleep(1.5)
        publishing = False
        await publisher
        await draining
        assert len(sent) > 100
        assert set(got) == set(sent), f"{len(set(sent) - set(got))} records never consumed"
        info = {t.name: t for t in await transport.topics()}[topic]
        assert sum(info.end_offsets.values()) == len(sent), "retries stored duplicates"
        per_key: dict[int, list[int]] = collections.defaultdict(list)
        for value in dict.fromkeys(got):  # first deliveries, in delivery order
            per_key[value % 10].append(value)
        assert all(values == sorted(values) for values in per_key.values())
        await sub.close()
    finally:
        await consumer.close()
