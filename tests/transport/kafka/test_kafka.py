"""Kafka-specific behaviour of the Kafka transport, checked from outside it.

The shared suite (tests/conformance/test_transport.py, id ``kafka``) checks the contract;
these check what only Kafka has: records as other Kafka clients see them (read with
aiokafka, a client independent of the transport's librdkafka), the idempotent producer as
the broker stored it, offsets as Kafka's own admin API reports them, the Java partitioner, rebalances,
and a broker restart in the middle of publishing and consuming.

They run on the broker ``scripts/services up kafka`` starts (``TIDINGS_TEST_KAFKA_URL``
picks another; the restart and on-disk checks then skip). Without a broker, or without
aiokafka, they are skipped, except under CI=true, where they fail (all of them, those two
checks too): CI must never go green without them.
"""

from __future__ import annotations

import asyncio
import os
import socket
import struct
import subprocess
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import pytest_asyncio

from tidings import codec
from tidings.envelope import Envelope
from tidings.testing.servers import require, require_module, skip_or_fail
from tidings.transport import BrokerUnavailable, TransportError, open_transport
from tidings.transport.base import (
    Delivery,
    NotAssigned,
    OutgoingRecord,
    Subscription,
    Transport,
)
from tidings.transport.kafka import KafkaTransport
from tidings.transport.kafka.config import decode_headers

_WHY = "aiokafka reads back what the transport wrote"
aiokafka = require_module("aiokafka", _WHY)
aiokafka_admin = require_module("aiokafka.admin", _WHY)
aiokafka_partitioner = require_module("aiokafka.partitioner", _WHY)

DEFAULT_URL = "kafka://127.0.0.1:9092"
KAFKA_URL = os.environ.get("TIDINGS_TEST_KAFKA_URL", DEFAULT_URL)
BOOTSTRAP = urlsplit(KAFKA_URL).netloc
REPO = Path(__file__).resolve().parents[3]
LOCAL_BROKER = KAFKA_URL == DEFAULT_URL and (REPO / ".services" / "kafka").is_dir()


def require_local_broker(why: str) -> None:
    """Skip (fail under CI=true) unless the broker is the one scripts/services runs here."""
    if not LOCAL_BROKER:
        skip_or_fail(f"{why}: needs the Kafka of `scripts/services up kafka` at {DEFAULT_URL}")


@pytest_asyncio.fixture
async def transport() -> AsyncIterator[KafkaTransport]:
    require(KAFKA_URL)  # skips naming the backend and how to start it; fails under CI=true
    opened = await open_transport(KAFKA_URL)
    assert isinstance(opened, KafkaTransport)
    try:
        yield opened
    finally:
        await opened.close()


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


async def raw_read(topic: str) -> list[aiokafka.ConsumerRecord]:  # type: ignore[name-defined]
    """Every record of ``topic``, read by aiokafka without a group."""
    consumer = aiokafka.AIOKafkaConsumer(bootstrap_servers=BOOTSTRAP, enable_auto_commit=False)
    await consumer.start()
    try:
        metadata = await consumer._client.fetch_all_metadata()  # with the new topic
        partitions = [
            aiokafka.TopicPartition(topic, p) for p in metadata.partitions_for_topic(topic) or ()
        ]
        assert partitions, f"aiokafka does not see topic {topic!r}"
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)
        out = []
        deadline = time.monotonic() + 30
        while any([await consumer.position(tp) < end for tp, end in ends.items()]):
            assert time.monotonic() < deadline, "aiokafka could not read the topic to its end"
            for records in (await consumer.getmany(timeout_ms=500)).values():
                out.extend(records)
        return out
    finally:
        await consumer.stop()


async def consume_all(
    sub: Subscription, count: int, *, within: float, ack: bool = True
) -> list[Delivery]:
    got: list[Delivery] = []
    deadline = time.monotonic() + within
    while len(got) < count and time.monotonic() < deadline:
        for delivery in await sub.fetch(max_records=500, timeout=0.2):
            got.append(delivery)
            if ack:
                await delivery.ack()
    return got


# -- what other Kafka clients see -------------------------------------------------------


async def test_events_travel_in_cloudevents_binary_mode(transport: KafkaTransport) -> None:
    assert transport.content_mode == "binary"
    topic = unique("kafka.binary")
    envelope = Envelope(
        id="evt-1", source="order", type="OrderPlaced", subject="order-42",
        time=datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC), data={"order_id": "order-42", "qty": 2},
        correlationid="corr-9", traceparent="00-" + "1" * 32 + "-" + "2" * 16 + "-01",
    )  # fmt: skip
    await transport.publish([codec.encode(envelope, topic, transport.content_mode)])
    (raw,) = await raw_read(topic)
    headers = {name: value.decode() for name, value in raw.headers}
    assert headers["ce_id"] == "evt-1"
    assert headers["ce_type"] == "OrderPlaced"
    assert headers["ce_source"] == "order"
    assert headers["ce_specversion"] == "1.0"
    assert headers["ce_subject"] == "order-42"
    assert headers["ce_correlationid"] == "corr-9"
    assert headers["content-type"] == "application/json"
    assert raw.key == b"order-42"  # the subject is the key
    assert raw.value == b'{"order_id":"order-42","qty":2}'  # the payload alone, no envelope
    (record,) = await transport.read(topic, raw.partition, raw.offset, 1)
    assert codec.decode(record) == envelope


async def test_keys_land_where_the_java_partitioner_puts_them(transport: KafkaTransport) -> None:
    topic = unique("kafka.partitioner")
    await transport.create_topic(topic, 6)
    keys = [f"order-{i}" for i in range(60)]
    await transport.publish([OutgoingRecord(topic, k.encode(), k) for k in keys])
    java = aiokafka_partitioner.DefaultPartitioner()
    placed = {r.key.decode(): r.partition for r in await raw_read(topic)}
    assert placed == {k: java(k.encode(), list(range(6)), list(range(6))) for k in keys}
    assert len(set(placed.values())) == 6


# -- the producer -----------------------------------------------------------------------


def test_a_header_without_a_value_is_absent() -> None:
    # Debezium's outbox router writes an absent CloudEvents attribute that way.
    raw = [("ce_id", b"e1"), ("ce_traceparent", None), ("other", "\u00e9".encode("latin-1"))]
    assert decode_headers(raw) == {"ce_id": "e1", "other": "\ufffd"}


def test_producer_is_idempotent_and_waits_for_all_replicas() -> None:
    config = KafkaTransport(KAFKA_URL).settings.producer(lambda error: None, 1 << 20)
    assert config["enable.idempotence"] is True
    assert config["acks"] == "all"


async def test_broker_stored_the_batches_with_a_producer_id(transport: KafkaTransport) -> None:
    require_local_broker("reads the broker's log files")
    topic = unique("kafka.idempotent")
    await transport.create_topic(topic, 1)
    await transport.publish([OutgoingRecord(topic, f"v{i}".encode(), "k") for i in range(5)])
    await transport.publish([OutgoingRecord(topic, b"v5", "k")])
    segment = REPO / ".services" / "kafka" / "data" / f"{topic}-0" / f"{0:020d}.log"
    data = segment.read_bytes()
    # Record batch v2 header: base offset, length, leader epoch, magic, crc, attributes,
    # last offset delta, first and max timestamp, producer id, epoch, base sequence, count.
    header = struct.Struct(">qiibIhiqqqhii")
    batches, at = [], 0
    while at + header.size <= len(data):
        fields = header.unpack_from(data, at)
        batches.append(fields)
        at += 12 + fields[1]
    assert [b[0] for b in batches] == [0, 5]  # two batches, at offsets 0 and 5
    assert all(b[3] == 2 for b in batches)  # magic v2
    producer_ids = {b[9] for b in batches}
    assert len(producer_ids) == 1 and producer_ids.pop() >= 0, "not an idempotent producer"
    assert [b[11] for b in batches] == [0, 5]  # sequence numbers the broker dedupes by


async def test_a_record_as_large_as_max_record_bytes_is_accepted(
    transport: KafkaTransport,
) -> None:
    # max_record_bytes comes from the broker's message.max.bytes: right at the limit, the
    # broker must take it (the refusal above it is in the shared suite).
    topic = unique("kafka.large")
    await transport.create_topic(topic, 1)
    await transport.publish([OutgoingRecord(topic, b"x" * transport.max_record_bytes, "k")])
    (record,) = await transport.read(topic, 0, 0, 1)
    assert len(record.value) == transport.max_record_bytes


# -- consumer groups --------------------------------------------------------------------


async def test_topics_are_created_with_the_partitions_the_url_configures() -> None:
    require(KAFKA_URL)
    opened = await open_transport(f"{KAFKA_URL}?partitions=5")
    try:
        subscribed, published, explicit = unique("sub"), unique("pub"), unique("two")
        await opened.create_topic(subscribed)  # what a runtime does for what it consumes
        await opened.publish([OutgoingRecord(published, b"v", key="k")])
        await opened.create_topic(explicit, 2)
        counts = {t.name: t.partitions for t in await opened.topics()}
        assert (counts[subscribed], counts[published], counts[explicit]) == (5, 5, 2)
    finally:
        await opened.close()


async def test_committed_offsets_are_kafkas_own(transport: KafkaTransport) -> None:
    topic, group = unique("kafka.commits"), unique("kafka-group")
    await transport.create_topic(topic, 1)
    await transport.publish([OutgoingRecord(topic, f"v{i}".encode(), "k") for i in range(10)])
    sub = await transport.subscribe(group, [topic])
    got: list[Delivery] = []
    got = await consume_all(sub, 10, within=15, ack=False)
    assert len(got) == 10
    for delivery in got[:4]:
        await delivery.ack()
    await sub.fetch(timeout=0)  # sends the acks, in one request (not waiting for it)
    admin = aiokafka_admin.AIOKafkaAdminClient(bootstrap_servers=BOOTSTRAP)
    await admin.start()
    try:
        deadline = time.monotonic() + 5
        while True:
            offsets = await admin.list_consumer_group_offsets(group)
            seen = {(tp.topic, tp.partition): o.offset for tp, o in offsets.items()}
            if seen or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.05)
        assert seen == {(topic, 0): 4}
        for delivery in got[4:]:
            await delivery.ack()
        await sub.close()  # close commits what was acked
        offsets = await admin.list_consumer_group_offsets(group)
        assert offsets[aiokafka.TopicPartition(topic, 0)].offset == 10
        assert group in {g[0] for g in await admin.list_consumer_groups()}
    finally:
        await admin.close()


@pytest.mark.parametrize(
    "strategy", ["", "?rdkafka.partition.assignment.strategy=cooperative-sticky"]
)
async def test_assignment_moves_only_inside_fetch_and_keeps_acks(strategy: str) -> None:
    """A member handling records keeps its partitions until its next fetch, its acks then
    go with the partitions it gives up, and the new member starts right after them; with
    the default eager rebalances and with incremental ones (cooperative-sticky)."""
    require(KAFKA_URL)
    transport = await open_transport(KAFKA_URL + strategy)
    try:
        await _moves_only_inside_fetch(transport)
    finally:
        await transport.close()


async def _moves_only_inside_fetch(transport: Transport) -> None:
    topic, group = unique("kafka.rebalance"), unique("kafka-group")
    await transport.create_topic(topic, 4)
    first = [OutgoingRecord(topic, f"old-{i}".encode(), f"k{i}") for i in range(40)]
    await transport.publish(first)
    a = await transport.subscribe(group, [topic])
    in_hand = await consume_all(a, 40, within=15, ack=False)
    assert len(in_hand) == 40
    held = a.assignment()
    assert held == {(topic, p) for p in range(4)}
    b = await transport.subscribe(group, [topic])
    for _ in range(10):  # b joins; the group waits for a to give partitions up
        assert await b.fetch(timeout=0.3) == []
        assert a.assignment() == held, "a's partitions moved while it handled records"
    for delivery in in_hand:
        await delivery.ack()
    deadline = time.monotonic() + 30
    while not (a.assignment() and b.assignment()):
        assert time.monotonic() < deadline, (a.assignment(), b.assignment())
        assert await a.fetch(timeout=0.1) == []
        assert await b.fetch(timeout=0.1) == []  # nothing acked comes again
    assert a.assignment() | b.assignment() == held and not a.assignment() & b.assignment()
    second = [OutgoingRecord(topic, f"new-{i}".encode(), f"k{i}") for i in range(40)]
    await transport.publish(second)
    got: dict[str, list[bytes]] = {"a": [], "b": []}
    deadline = time.monotonic() + 30
    while len(got["a"]) + len(got["b"]) < 40 and time.monotonic() < deadline:
        for name, sub in (("a", a), ("b", b)):
            for delivery in await sub.fetch(timeout=0.1):
                got[name].append(delivery.record.value)
                await delivery.ack()
    assert sorted(got["a"] + got["b"]) == sorted(r.value for r in second)
    assert got["a"] and got["b"]
    await a.close()
    with pytest.raises(NotAssigned):
        await in_hand[0].ack()
    await b.close()


async def test_a_member_that_joins_later_gets_a_share_of_every_topic(
    transport: KafkaTransport,
) -> None:
    """A service reads several topics; a process added to its group must take part of each
    topic's partitions, not whole topics (cooperative-sticky, which balances only the
    count, gave the joiner the last topics entire: all of a busy topic stayed on one)."""
    topics, group = [unique("kafka.spread-a"), unique("kafka.spread-b")], unique("kafka-group")
    for topic in topics:
        await transport.create_topic(topic, 4)
    a = await transport.subscribe(group, topics)
    deadline = time.monotonic() + 30
    while len(a.assignment()) < 8:  # alone, it holds everything
        assert time.monotonic() < deadline, a.assignment()
        await a.fetch(timeout=0.2)
    b = await transport.subscribe(group, topics)
    deadline = time.monotonic() + 45
    while not (len(a.assignment()) == len(b.assignment()) == 4):
        assert time.monotonic() < deadline, (a.assignment(), b.assignment())
        await a.fetch(timeout=0.1)
        await b.fetch(timeout=0.1)
    for member in (a, b):
        per_topic = {t: sum(1 for topic, _ in member.assignment() if topic == t) for t in topics}
        assert per_topic == dict.fromkeys(topics, 2), (a.assignment(), b.assignment())
    await a.close()
    await b.close()


async def test_nack_in_a_prefetched_batch_rewinds_and_ignores_stale_acks(
    transport: KafkaTransport,
) -> None:
    """librdkafka prefetches; a nack must drop what it holds after the record, and acks of
    deliveries the nack made stale must not commit past it."""
    topic, group = unique("kafka.nack"), unique("kafka-group")
    await transport.create_topic(topic, 1)
    await transport.publish([OutgoingRecord(topic, f"v{i}".encode(), "k") for i in range(6)])
    sub = await transport.subscribe(group, [topic])
    first = await consume_all(sub, 6, within=15, ack=False)
    assert [d.record.offset for d in first] == list(range(6))
    await first[0].ack()
    await first[2].nack(0.5)
    await first[5].ack()  # stale: the nack rewound past it
    assert await transport.committed(group) == {(topic, 0): 1}
    started = time.monotonic()
    again = await consume_all(sub, 4, within=15, ack=False)
    assert time.monotonic() - started >= 0.4
    assert [(d.record.offset, d.attempt) for d in again] == [(2, 2), (3, 2), (4, 2), (5, 2)]
    await again[-1].ack()
    assert await transport.committed(group) == {(topic, 0): 6}
    await sub.close()


# -- a broker that goes away and comes back ---------------------------------------------


async def test_a_broker_restart_loses_nothing() -> None:
    require_local_broker("restarts the broker")
    # scripts/services restarts only a broker it started from this checkout (a worktree
    # sharing another checkout's .services sees it as stopped, and must not touch it).
    status = await asyncio.to_thread(
        subprocess.run, [str(REPO / "scripts" / "services"), "status", "kafka"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    if "running" not in status.stdout:
        skip_or_fail("restarts the broker: needs the Kafka of this checkout's `scripts/services`")
    # Publishes retry for longer than the restart script may take (a 30 s stop, then up to
    # 180 s until ready): what is tested is that nothing is lost, not how fast the broker
    # comes back on a loaded machine holding thousands of partitions.
    transport = await open_transport(f"{KAFKA_URL}?delivery_timeout_ms=300000")
    assert isinstance(transport, KafkaTransport)
    try:
        await _restart_while_publishing(transport)
    finally:
        await transport.close()


async def _restart_while_publishing(transport: KafkaTransport) -> None:
    topic, group = unique("kafka.restart"), unique("kafka-group")
    await transport.create_topic(topic, 3)
    sub = await transport.subscribe(group, [topic])
    consumed: set[bytes] = set()
    published: list[bytes] = []

    async def consume_until(stop: asyncio.Event) -> None:
        while not stop.is_set() or len(consumed) < len(published):
            for delivery in await sub.fetch(max_records=200, timeout=0.2):
                consumed.add(delivery.record.value)
                await delivery.ack()

    async def publish_through(restart: asyncio.Task[subprocess.CompletedProcess[str]]) -> None:
        n = 0
        while not restart.done() or n < 400:  # some before, during and after the outage
            batch = [
                OutgoingRecord(topic, f"r{i}".encode(), f"key-{i % 17}") for i in range(n, n + 5)
            ]
            await transport.publish(batch)  # must neither fail nor lose a record
            published.extend(r.value for r in batch)
            n += 5
            await asyncio.sleep(0.02)

    stop = asyncio.Event()
    consumer = asyncio.create_task(consume_until(stop))
    try:
        await asyncio.sleep(1)
        restart = asyncio.create_task(asyncio.to_thread(
            subprocess.run, [str(REPO / "scripts" / "services"), "restart", "kafka"],
            capture_output=True, text=True, timeout=300,
        ))  # fmt: skip
        started = time.monotonic()
        try:
            await publish_through(restart)
        except TransportError as exc:
            result = await restart
            pytest.fail(f"publish failed {time.monotonic() - started:.0f} s into the restart"
                        f" ({exc}); the restart (exit {result.returncode}) said:"
                        f" {result.stdout} {result.stderr}")  # fmt: skip
        result = restart.result()
        assert result.returncode == 0, result.stderr
        assert time.monotonic() - started > 5, "the broker was not down for long"
        stop.set()
        try:
            await asyncio.wait_for(consumer, 120)  # the member resumes once the broker is back
        except TimeoutError:
            missing = sorted(set(published) - consumed)
            pytest.fail(
                f"the member did not catch up: {len(missing)} of {len(published)} records"
                f" missing (e.g. {missing[:5]}); it holds {sorted(sub.assignment())}"
            )
    finally:
        consumer.cancel()
    stored = [r.value for r in await raw_read(topic)]
    assert len(stored) == len(published), "duplicates or losses in the log"
    assert set(stored) == set(published)
    assert consumed == set(published)
    await sub.close()
    committed = await transport.committed(group)
    ends = {t.name: t for t in await transport.topics()}[topic].end_offsets
    assert committed == {(topic, p): end for p, end in ends.items() if end}


# -- connecting -------------------------------------------------------------------------


async def test_unreachable_broker_is_one_clear_line_and_quick() -> None:
    with socket.socket() as probe:  # a port nothing listens on (1 may be taken, here too)
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    started = time.monotonic()
    with pytest.raises(BrokerUnavailable) as raised:
        await open_transport(f"kafka://127.0.0.1:{port}")
    message = str(raised.value)
    assert time.monotonic() - started < 10
    assert "\n" not in message
    assert message == (
        f"kafka://127.0.0.1:{port} is not reachable (127.0.0.1:{port}: Connection refused);"
        " start it with: scripts/services up kafka"
    )
