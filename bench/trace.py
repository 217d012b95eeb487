"""Tracing one order on a crowded Kafka log: ``python -m bench trace``.

1. Fills Kafka with ``records`` (500,000) small records on ``noise_topics`` unrelated
   topics, with the raw confluent-kafka producer: most are raw bytes, one in five is JSON
   without any CloudEvents attribute (another system's events). All are new, so the time
   bound of ``tidings trace`` (``--since``, one day by default) skips none of them.
2. Publishes ``orders`` orders as the shop's services would (OrderPlaced -> InventoryReserved
   -> PaymentProcessed -> OrderCompleted, each caused by the one before, one correlation
   per order, keyed by the order id) on the shop's three topics under a fresh prefix, with
   foreign records (raw bytes, plain JSON, a ``ce_id`` header on a non-JSON value) among them.
3. Times ``tidings trace ORDER_ID`` twice: in process, through the function the command
   runs (:func:`tidings.cli.trace.trace_order`, connecting included), and as the command
   itself (a new process, Python's start-up included); checks the tree is the order's.

Every topic it made is deleted afterwards, so other suites and tests do not read them.
Other topics on the broker are read too, as ``tidings trace`` would: ``records_in_window``
says how many records the trace had to consider.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient

from tidings import codec
from tidings.cli.common import opened_transport
from tidings.cli.trace import trace_order
from tidings.envelope import Envelope
from tidings.records import OutgoingRecord

URL = "kafka://127.0.0.1:9092"
BOOTSTRAP = "127.0.0.1:9092"
CHAIN = [  # (event type, the service that publishes it, the shop's topic)
    ("OrderPlaced", "order", "shop.orders"),
    ("InventoryReserved", "inventory", "shop.inventory"),
    ("PaymentProcessed", "billing", "shop.billing"),
    ("OrderCompleted", "order", "shop.orders"),
]


def order_chain(prefix: str, order_id: str, start: datetime) -> list[OutgoingRecord]:
    """One order's events as the shop publishes them: one correlation (the first event's
    id), each caused by the one before, keyed by the order id, 3 ms apart."""
    records: list[OutgoingRecord] = []
    cause: Envelope | None = None
    for step, (kind, source, topic) in enumerate(CHAIN):
        envelope = Envelope(
            id=str(uuid.uuid4()),
            source=source,
            type=kind,
            subject=order_id,
            data={"order_id": order_id, "amount_cents": 1200},
            time=start + timedelta(milliseconds=3 * step),
            correlationid=cause.correlationid if cause else None,
            causationid=cause.id if cause else None,
        )
        if cause is None:
            envelope = envelope.replace(correlationid=envelope.id)
        records.append(codec.encode(envelope, f"{prefix}{topic}"))
        cause = envelope
    return records


def foreign_records(topic: str, order_id: str) -> list[OutgoingRecord]:
    """Records another system might write to a topic of ours, naming the same order."""
    return [
        OutgoingRecord(topic, b"\x00\x01 not json at all \xff", order_id, {}),
        OutgoingRecord(topic, json.dumps({"order_id": order_id}).encode(), order_id, {}),
        OutgoingRecord(topic, b"[1, 2]", order_id, {"content-type": "application/json"}),
        OutgoingRecord(topic, b"not json", order_id, {"ce_id": "x", "ce_subject": order_id}),
    ]


def fill(topics: list[str], records: int, partitions: int = 3) -> float:
    """``records`` small records spread over ``topics``; returns the seconds it took."""
    admin = AdminClient({"bootstrap.servers": BOOTSTRAP})
    for future in admin.create_topics(
        [_new_topic(t, partitions) for t in topics], operation_timeout=30
    ).values():
        future.result()
    producer = Producer(
        {"bootstrap.servers": BOOTSTRAP, "linger.ms": 50, "batch.size": 1_000_000,
         "compression.type": "lz4", "queue.buffering.max.messages": 1_000_000}
    )  # fmt: skip
    started = time.monotonic()
    raw = b"x" * 60
    for i in range(records):
        value = json.dumps({"n": i, "kind": "metric"}).encode() if i % 5 == 0 else raw
        topic = topics[i % len(topics)]
        while True:
            try:
                producer.produce(topic, value, key=str(i % 1000).encode())
                break
            except BufferError:
                producer.poll(0.05)
        if i % 10_000 == 0:
            producer.poll(0)
    producer.flush(120)
    return time.monotonic() - started


def _new_topic(name: str, partitions: int) -> Any:
    from confluent_kafka.admin import NewTopic

    return NewTopic(name, partitions, 1)


def delete_topics(topics: list[str]) -> None:
    admin = AdminClient({"bootstrap.servers": BOOTSTRAP})
    for future in admin.delete_topics(topics, operation_timeout=60).values():
        future.result()


async def publish_orders(prefix: str, orders: int) -> list[str]:
    ids = [f"bench-{uuid.uuid4().hex[:12]}" for _ in range(orders)]
    async with opened_transport(URL) as transport:
        for n, order_id in enumerate(ids):
            start = datetime.now(UTC)
            chain = order_chain(prefix, order_id, start)
            if n == 0:  # foreign records beside the first order's events
                chain[1:1] = foreign_records(chain[0].topic, order_id)
            await transport.publish(chain)
    return ids


async def trace_in_process(order_id: str) -> tuple[float, dict[str, Any]]:
    started = time.monotonic()
    result = await trace_order(URL, order_id)
    return time.monotonic() - started, result.to_dict()


def run(records: int = 500_000, noise_topics: int = 10, orders: int = 5) -> dict[str, Any]:
    uid = uuid.uuid4().hex[:8]
    noise = [f"bench-trace-{uid}-noise-{i}" for i in range(noise_topics)]
    prefix = f"bench-trace-{uid}."
    ours = [f"{prefix}{t}" for t in ("shop.orders", "shop.inventory", "shop.billing")]
    try:
        fill_seconds = fill(noise, records)
        ids = asyncio.run(publish_orders(prefix, orders))
        order_id = ids[len(ids) // 2]
        window = asyncio.run(_records_in_window())
        seconds, tree = asyncio.run(trace_in_process(order_id))
        chain = [(n["type"], n["source"]) for n in _walk(tree["tree"])]
        expected = [(kind, source) for kind, source, _ in CHAIN]
        if chain != expected:
            raise RuntimeError(f"trace of {order_id} is wrong: {chain}")
        started = time.monotonic()
        command = subprocess.run(
            [sys.executable, "-m", "tidings", "trace", order_id, "--broker", URL],
            capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        cli_seconds = time.monotonic() - started
        if command.returncode != 0:
            raise RuntimeError(f"tidings trace failed: {command.stderr}")
    finally:
        delete_topics(noise + [t for t in ours])
    return {
        "seconds": round(seconds, 2),
        "cli_seconds": round(cli_seconds, 2),
        "records_in_log": records + orders * len(CHAIN) + 4,
        "records_in_window": window,
        "noise_topics": noise_topics,
        "fill_seconds": round(fill_seconds, 1),
        "events_traced": len(chain),
    }


async def _records_in_window() -> int:
    """Records of every topic stored within the trace's default window (all topics)."""
    from tidings.observability.reading import DEFAULT_SINCE, partition_ranges

    async with opened_transport(URL) as transport:
        ranges = await partition_ranges(transport, time.time() - DEFAULT_SINCE, None)
    return sum(end - start for _, _, start, end in ranges)


def _walk(nodes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for node in nodes:
        out.append(node)
        out += _walk(node["children"])
    return out


if __name__ == "__main__":
    print(run())
