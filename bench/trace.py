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
from datetime import UTC, datetime
from typing import Any

from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

from tidings.cli.common import opened_transport
from tidings.cli.trace import DEFAULT_WINDOW, trace_order
from tidings.observability.reading import DEFAULT_SINCE
from tidings.testing.chains import SHOP_ORDER, causal_chain, foreign_records
from tidings.transport.tools import partition_ranges

URL = "kafka://127.0.0.1:9092"
BOOTSTRAP = "127.0.0.1:9092"


def fill(topics: list[str], records: int, partitions: int = 3) -> float:
    """``records`` small records spread over ``topics``; returns the seconds it took."""
    admin = AdminClient({"bootstrap.servers": BOOTSTRAP})
    for future in admin.create_topics(
        [NewTopic(t, partitions, 1) for t in topics], operation_timeout=30
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


def delete_topics(topics: list[str]) -> None:
    admin = AdminClient({"bootstrap.servers": BOOTSTRAP})
    for future in admin.delete_topics(topics, operation_timeout=60).values():
        future.result()


async def publish_orders(prefix: str, orders: int) -> list[str]:
    """``orders`` orders' events on the shop's topics under ``prefix``, with foreign
    records among the first order's."""
    ids = [f"bench-{uuid.uuid4().hex[:12]}" for _ in range(orders)]
    async with opened_transport(URL) as transport:
        for n, order_id in enumerate(ids):
            chain = causal_chain(SHOP_ORDER, order_id, datetime.now(UTC), topic_prefix=prefix)
            if n == 0:
                chain[1:1] = foreign_records(chain[0].topic, order_id)
            await transport.publish(chain)
    return ids


async def trace_in_process(order_id: str) -> tuple[float, list[tuple[str, str]]]:
    """Seconds to trace ``order_id`` as ``tidings trace`` does, and its (type, service)s."""
    started = time.monotonic()
    result = await trace_order(URL, order_id, DEFAULT_WINDOW)
    seconds = time.monotonic() - started
    return seconds, [(node.event.type, node.event.source) for node, _, _ in result.walk()]


async def records_in_window() -> int:
    """Records of every topic stored within the trace's default window: what it reads."""
    async with opened_transport(URL) as transport:
        ranges = await partition_ranges(transport, time.time() - DEFAULT_SINCE)
    return sum(end - start for _, _, start, end in ranges)


def run(records: int = 500_000, noise_topics: int = 10, orders: int = 5) -> dict[str, Any]:
    uid = uuid.uuid4().hex[:8]
    noise = [f"bench-trace-{uid}-noise-{i}" for i in range(noise_topics)]
    prefix = f"bench-trace-{uid}."
    ours = sorted({prefix + topic for _, _, topic in SHOP_ORDER})
    expected = [(kind, source) for kind, source, _ in SHOP_ORDER]
    try:
        fill_seconds = fill(noise, records)
        ids = asyncio.run(publish_orders(prefix, orders))
        window = asyncio.run(records_in_window())
        seconds, chain = asyncio.run(trace_in_process(ids[0]))  # the one among foreign records
        if chain != expected:
            raise RuntimeError(f"the trace of {ids[0]} is wrong: {chain}")
        started = time.monotonic()
        command = subprocess.run(
            [sys.executable, "-m", "tidings", "trace", ids[-1], "--broker", URL],
            capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        cli_seconds = time.monotonic() - started
        if command.returncode != 0 or "4 events" not in command.stdout:
            raise RuntimeError(f"tidings trace failed: {command.stdout}{command.stderr}")
    finally:
        delete_topics(noise + ours)
    return {
        "seconds": round(seconds, 2),
        "cli_seconds": round(cli_seconds, 2),
        "records_in_log": records + orders * len(SHOP_ORDER) + len(foreign_records("t", "k")),
        "records_in_window": window,
        "unrelated_records": records,
        "fill_seconds": round(fill_seconds, 1),
        "events_traced": len(chain),
    }


if __name__ == "__main__":
    print(run())
