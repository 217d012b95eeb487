"""NATS JetStream: the framework's transport against raw nats-py, and the shop on NATS.

Publish: batches of 500 1 KiB records, every ack awaited (framework ``publish`` vs raw
``publish_async`` + gather). Consume: fetch and ack every record (framework Subscription vs
a raw durable pull consumer, ``fetch(500)`` + ``ack``). Rounds alternate which goes first;
medians. One partition on both sides, so the raw side gets the same single stream.
"""

from __future__ import annotations

import asyncio
import statistics
import time
import uuid
from typing import Any

import nats
from nats.js import api

from bench import shop, tls_cost
from bench.framework_rates import BATCH, PAYLOAD, framework_consume, framework_publish
from tidings.transport import open_transport

URL = "nats://127.0.0.1:4222"
STORE = "postgresql://127.0.0.1:5432/tidings"


async def _raw_publish(js: Any, subject: str, n: int) -> float:
    started = time.perf_counter()
    for _ in range(n // BATCH):
        acks = [await js.publish_async(subject, PAYLOAD) for _ in range(BATCH)]
        await asyncio.gather(*acks)
    return n / (time.perf_counter() - started)


async def _raw_consume(js: Any, stream: str, n: int) -> float:
    config = api.ConsumerConfig(durable_name="bench", ack_policy=api.AckPolicy.EXPLICIT)
    await js.add_consumer(stream, config)
    pull = await js.pull_subscribe_bind("bench", stream)
    started, seen = time.perf_counter(), 0
    while seen < n:
        for message in await pull.fetch(BATCH, timeout=5):
            await message.ack()
            seen += 1
    return n / (time.perf_counter() - started)


async def _clients(n: int, rounds: int) -> dict[str, float]:
    nc = await nats.connect(URL)
    js = nc.jetstream()
    transport = await open_transport(URL)
    rows: dict[str, list[float]] = {"raw_pub": [], "fw_pub": [], "raw_con": [], "fw_con": []}
    streams: list[str] = []
    try:
        for round_ in range(rounds):
            stream = f"benchraw_{uuid.uuid4().hex[:8]}"
            subject = f"benchraw.{stream}"
            await js.add_stream(name=stream, subjects=[subject])
            topic = f"bench-{uuid.uuid4().hex[:8]}"
            await transport.create_topic(topic, 1)
            streams += [stream, f"{topic}-0"]
            pair = [
                ("raw_pub", _raw_publish(js, subject, n)),
                ("fw_pub", framework_publish(transport, topic, n)),
            ]
            for name, job in pair if round_ % 2 == 0 else reversed(pair):
                rows[name].append(await job)
            rows["raw_con"].append(await _raw_consume(js, stream, n))
            group = f"bench-{uuid.uuid4().hex[:8]}"
            rows["fw_con"].append(await framework_consume(transport, group, topic, n))
    finally:
        for stream in streams:  # leave the server as we found it
            try:
                await js.delete_stream(stream)
            except Exception:
                pass
        await transport.close()
        await nc.close()
    return {k: statistics.median(v) for k, v in rows.items()}


def run(n: int = 20_000, rounds: int = 3) -> dict[str, Any]:
    m = asyncio.run(_clients(n, rounds))
    result: dict[str, Any] = {
        "publish_events_per_s": round(m["fw_pub"]),
        "raw_publish_events_per_s": round(m["raw_pub"]),
        "publish_ratio_to_raw": round(m["fw_pub"] / m["raw_pub"], 3),
        "consume_events_per_s": round(m["fw_con"]),
        "raw_consume_events_per_s": round(m["raw_con"]),
        "consume_ratio_to_raw": round(m["fw_con"] / m["raw_con"], 3),
    }
    result.update(shop.run(URL, STORE, orders=1000))
    result.update(tls_cost.run("nats"))  # needs scripts/services up nats-secure
    return result
