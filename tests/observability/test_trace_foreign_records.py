"""On Kafka, among unrelated topics and records that are not ours, the tools that read the
log stay right: ``tidings trace`` gives exactly the order's tree, and the dashboard and
``tidings dlq list`` read past the foreign records instead of failing on them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest
import pytest_asyncio
from fastapi.testclient import TestClient

from tidings.dashboard.app import create_app
from tidings.dashboard.feed import LogFeed
from tidings.observability.reading import read_trace
from tidings.records import OutgoingRecord, Record
from tidings.reliability.deadletter import DeadLetterKind, DeadLetterReason, dead_letter
from tidings.testing.chains import SHOP_ORDER, causal_chain, foreign_records
from tidings.testing.servers import require
from tidings.transport import Transport, open_transport

KAFKA = "kafka://127.0.0.1:9092"
HOUR = 3600.0


class Log:
    """What the fixture wrote: a prefix for the shop's topics, the order, a group."""

    def __init__(self) -> None:
        uid = uuid.uuid4().hex[:8]
        self.prefix = f"trace-foreign-{uid}."
        self.noise = f"trace-foreign-{uid}-noise"
        self.group = f"trace-foreign-{uid}-billing"
        self.order = f"order-{uid}"
        self.other_order = f"order-{uid}-other"
        self.records: list[OutgoingRecord] = []

    @property
    def topics(self) -> list[str]:
        shop = sorted({self.prefix + topic for _, _, topic in SHOP_ORDER})
        return [*shop, self.noise, f"{self.group}.dlq"]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def kafka_log() -> AsyncIterator[tuple[Transport, Log]]:
    require(KAFKA)
    transport = await open_transport(KAFKA)
    log = Log()
    now = datetime.now(UTC)
    ours = causal_chain(SHOP_ORDER, log.order, now, topic_prefix=log.prefix)
    other = causal_chain(SHOP_ORDER, log.other_order, now, topic_prefix=log.prefix)
    noise = [OutgoingRecord(log.noise, b"\x00" * 40, str(i), {}) for i in range(300)]
    noise += foreign_records(log.noise, log.order)
    for topic in {r.topic for r in ours}:  # foreign records among our own, naming the order
        noise += foreign_records(topic, log.order)
    # The billing group gave up on the order's InventoryReserved once; someone else put a
    # record with unreadable dead-letter headers on the same dead-letter topic.
    reserved = ours[1]
    stored = Record(reserved.topic, 0, 0, reserved.key, reserved.value, reserved.headers, 0.0)
    reason = DeadLetterReason(DeadLetterKind.RETRIES_EXHAUSTED, "card declined 3 times")
    letter = dead_letter(stored, log.group, reason, RuntimeError("declined"), attempts=3)
    broken = OutgoingRecord(
        f"{log.group}.dlq", b"\xff", None, {"dlq-reason": "?", "dlq-attempts": "many"}
    )
    for batch in (noise[:150], ours[:2], other, noise[150:], ours[2:], [letter, broken]):
        await transport.publish(batch)
    try:
        yield transport, log
    finally:
        await transport.close()
        from confluent_kafka.admin import AdminClient

        admin = AdminClient({"bootstrap.servers": "127.0.0.1:9092"})
        for future in admin.delete_topics(log.topics, operation_timeout=30).values():
            future.result()


def tree_of(trace: dict[str, Any]) -> list[tuple[str, str, str | None]]:
    """(type, service, the type of its cause) of every node, depth first."""
    out: list[tuple[str, str, str | None]] = []

    def visit(node: dict[str, Any], parent: str | None) -> None:
        out.append((node["type"], node["source"], parent))
        for child in node["children"]:
            visit(child, node["type"])

    for root in trace["tree"]:
        visit(root, None)
    return out


EXPECTED = [
    ("OrderPlaced", "order", None),
    ("InventoryReserved", "inventory", "OrderPlaced"),
    ("PaymentProcessed", "billing", "InventoryReserved"),
    ("OrderCompleted", "order", "PaymentProcessed"),
]


@pytest.mark.asyncio(loop_scope="module")
@pytest.mark.parametrize("narrowed", [False, True], ids=["all-topics", "named-topics"])
async def test_the_trace_is_exactly_the_orders_tree(
    kafka_log: tuple[Transport, Log], narrowed: bool
) -> None:
    transport, log = kafka_log
    topics = [log.prefix + "shop.orders"] if narrowed else None  # the rest: not read
    since = time.time() - HOUR
    trace = (await read_trace(transport, log.order, since=since, topics=topics)).to_dict()
    if narrowed:  # the dead letter (its topic is always read) brings InventoryReserved
        assert tree_of(trace) == [
            ("OrderPlaced", "order", None),
            ("InventoryReserved", "inventory", "OrderPlaced"),
            ("OrderCompleted", "order", None),  # its cause is on a topic not read
        ]
        return
    assert tree_of(trace) == EXPECTED
    assert trace["events"] == 4 and len(trace["correlation_ids"]) == 1
    nodes = {n["type"]: n for n in _walk(trace["tree"])}
    assert all(n["data"]["order_id"] == log.order for n in nodes.values())
    (letter,) = nodes["InventoryReserved"]["dead_letters"]
    assert letter["group"] == log.group and letter["attempts"] == 3
    # By the correlation id, the same tree; a window that ends before the order: nothing.
    by_correlation = await read_trace(transport, trace["correlation_ids"][0], since=since)
    assert tree_of(by_correlation.to_dict()) == EXPECTED
    assert (await read_trace(transport, log.order, since=time.time() + 60)).roots == []


def test_the_trace_command_prints_the_tree(kafka_log: tuple[Transport, Log]) -> None:
    _, log = kafka_log
    result = subprocess.run(
        [sys.executable, "-m", "tidings", "trace", log.order, "--broker", KAFKA, "--json"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert tree_of(json.loads(result.stdout)) == EXPECTED
    missing = subprocess.run(
        [sys.executable, "-m", "tidings", "trace", "no-such-order", "--broker", KAFKA,
         "--since", "10m", "--topic", log.prefix + "shop.orders"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert missing.returncode == 1
    assert "no event stored in the last 10m" in missing.stderr, missing.stderr


def test_dlq_list_reads_past_a_foreign_record(kafka_log: tuple[Transport, Log]) -> None:
    _, log = kafka_log
    result = subprocess.run(
        [sys.executable, "-m", "tidings", "dlq", "list", log.group, "--broker", KAFKA],
        capture_output=True, text=True, timeout=120, env={**os.environ, "COLUMNS": "300"},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "InventoryReserved" in result.stdout and "card declined 3 times" in result.stdout
    assert "2 dead letter(s)" in result.stdout, result.stdout
    bad = subprocess.run(
        [sys.executable, "-m", "tidings", "dlq", "list", log.group, "--broker", KAFKA,
         "--since", "yesterday"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert bad.returncode == 2 and "--since 'yesterday'" in bad.stderr


@pytest.mark.asyncio(loop_scope="module")
async def test_the_dashboard_feed_reads_past_foreign_records(
    kafka_log: tuple[Transport, Log],
) -> None:
    transport, log = kafka_log
    feed = LogFeed(transport, window=HOUR)
    await feed.poll()
    assert feed.undecodable >= 300  # the noise and the foreign records, counted, skipped
    assert tree_of((await feed.trace(log.order)).to_dict()) == EXPECTED
    (summary,) = [d for d in feed.dead_letter_summaries() if d["group"] == log.group]
    assert summary["event_type"] == "InventoryReserved"


def test_the_dashboard_api_answers(kafka_log: tuple[Transport, Log]) -> None:
    _, log = kafka_log
    app = create_app(KAFKA, allowed_hosts=frozenset({"testserver"}))
    with TestClient(app) as client:
        trace = client.get(f"/api/trace/{log.order}")
        assert trace.status_code == 200 and tree_of(trace.json()) == EXPECTED
        assert client.get("/api/orders").status_code == 200
        (letter,) = [d for d in client.get("/api/dlq").json()["dead_letters"]
                     if d["group"] == log.group]  # fmt: skip
        shown = client.get(f"/api/dlq/{log.group}/{letter['partition']}/{letter['offset']}")
        assert shown.status_code == 200 and shown.json()["attempts"] == 3
        # Every record of the dead-letter topic, the foreign one too, shows or is absent.
        for partition in range(3):
            for offset in range(2):
                answer = client.get(f"/api/dlq/{log.group}/{partition}/{offset}")
                assert answer.status_code in (200, 404), answer.text


def _walk(nodes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for node in nodes:
        out += [node, *_walk(node["children"])]
    return out
