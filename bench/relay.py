"""The outbox relays compared: polling (the runtime's) against Debezium's outbox router.

One producer service on Kafka + PostgreSQL (a fresh schema) and one consumer service on
Kafka (its inbox in SQLite), both runtimes in this process, so one clock times both
ends. Rounds alternate the producer's relay, polling then Debezium, ``ROUNDS`` times
each (the load of the shared machine drifts: alternating spreads it over both); each
round starts a new producer runtime with that relay on a topic of its own. Per round:

* **latency**: ``LATENCY_EVENTS`` events, one unit of work each, one committed every
  20 ms; for each, the time from the commit's return to its handler starting in the
  consumer, p50/p99 in ms;
* **throughput**: ``BURST_EVENTS`` events committed by ``WRITERS`` concurrent writers,
  one event a unit of work (one order, one event); events/s from the first commit to
  the last event handled, and the writers' own commits/s (the relay's work shares the
  machine with them: Connect's JVM, or the relay's queries in this process).

Reported: each relay's median over its rounds, every round, and Debezium ÷ polling.
Needs PostgreSQL, Kafka and Kafka Connect (``scripts/services up``); the connector and
its replication slot are dropped at the end.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from bench.stats import percentile
from tidings import Event, Service
from tidings.cdc import connect
from tidings.cdc.outbox import connector_name
from tidings.runtime import Runtime
from tidings.store.postgres import PostgresStore
from tidings.store.sqlite import SQLiteStore
from tidings.testing.postgres import fresh_schema
from tidings.transport import open_transport

KAFKA = "kafka://127.0.0.1:9092"
POSTGRES = "postgresql://postgres@127.0.0.1:5432/tidings"
ROUNDS = 3  # per relay
LATENCY_EVENTS = 200
BURST_EVENTS = 2000
WRITERS = 8


async def _round(relay: str, store_url: str, tmp: Path) -> dict[str, float]:
    """One round with the producer on ``relay``: its latency and throughput."""
    topic = f"bench.relay.{uuid.uuid4().hex[:10]}"

    class Ping(Event, topic=topic, key="key"):
        key: str
        n: int

    producer = Service("bench-relay", publishes=[Ping])
    consumer = Service(f"bench-relay-sink-{uuid.uuid4().hex[:6]}")
    arrived: dict[int, float] = {}

    @consumer.on(Ping)  # named: the annotation of a class made here cannot be resolved
    async def got(event: Ping) -> None:
        arrived.setdefault(event.n, time.time())

    transports = [await open_transport(KAFKA), await open_transport(KAFKA)]
    await transports[0].create_topic(topic)
    stores = [PostgresStore(store_url), SQLiteStore(str(tmp / f"{topic}.db"))]
    for store in stores:
        await store.connect()
    sink = Runtime(consumer, transports[1], stores[1])
    source = Runtime(producer, transports[0], stores[0], relay=relay)
    try:
        await sink.start()
        await source.start()

        async def commit(n: int) -> float:
            async with source.unit_of_work() as ctx:
                ctx.publish(Ping(key=f"k{n % 64}", n=n))
            return time.time()

        async def until(count: int, timeout: float) -> None:
            deadline = time.monotonic() + timeout
            while len(arrived) < count:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{relay}: {len(arrived)} of {count} events arrived")
                await asyncio.sleep(0.02)

        await commit(-1)  # the first event waits for the consumer's partitions: not timed
        await until(1, 120)
        arrived.clear()
        committed: dict[int, float] = {}
        for n in range(LATENCY_EVENTS):
            committed[n] = await commit(n)
            await asyncio.sleep(0.02)
        await until(LATENCY_EVENTS, 120)
        latencies = [(arrived[n] - t) * 1000 for n, t in committed.items()]

        arrived.clear()
        started = time.time()
        numbers = iter(range(BURST_EVENTS))

        async def writer() -> None:
            for n in numbers:
                await commit(n)

        await asyncio.gather(*(writer() for _ in range(WRITERS)))
        commit_seconds = time.time() - started
        await until(BURST_EVENTS, 300)
        burst_seconds = max(arrived.values()) - started
    finally:
        await source.stop()
        await sink.stop()
        for store in stores:
            await store.close()
        for transport in transports:
            await transport.close()
    return {
        "p50_ms": round(statistics.median(latencies), 1),
        "p99_ms": round(percentile(latencies, 99), 1),
        "events_per_s": round(BURST_EVENTS / burst_seconds, 1),
        "commits_per_s": round(BURST_EVENTS / commit_seconds, 1),
    }


def _median(rounds: list[dict[str, float]], key: str) -> float:
    return round(statistics.median(r[key] for r in rounds), 1)


def run() -> dict[str, Any]:
    rounds: dict[str, list[dict[str, float]]] = {"polling": [], "debezium": []}
    with fresh_schema(POSTGRES, "bench_relay") as store, tempfile.TemporaryDirectory() as tmp:
        schema = unquote(store).rsplit("search_path=", 1)[1]
        name = connector_name("tidings", schema)
        try:
            for _ in range(ROUNDS):
                for relay in rounds:
                    rounds[relay].append(asyncio.run(_round(relay, store, Path(tmp))))
                    print(f"  {relay:9s} {rounds[relay][-1]}", flush=True)
        finally:
            connect.drop(connect.DEFAULT_URL, name, POSTGRES)
    result: dict[str, Any] = {}
    load = os.getloadavg()[0]
    for relay, measured in rounds.items():
        for key in ("p50_ms", "p99_ms", "events_per_s", "commits_per_s"):
            result[f"{relay}_commit_to_consumer_{key}" if "ms" in key else f"{relay}_{key}"] = (
                _median(measured, key)
            )
    pairs = (("p50_ms", "p50"), ("p99_ms", "p99"), ("events_per_s", "throughput"))
    for key, name_ in pairs:
        result[f"debezium_over_polling_{name_}"] = round(
            _median(rounds["debezium"], key) / _median(rounds["polling"], key), 2
        )
    result.update(
        {
            "load_average_1m_at_end": round(load, 1),
            "rounds": ROUNDS,
            "latency_events": LATENCY_EVENTS,
            "burst_events": BURST_EVENTS,
            "writers": WRITERS,
            "each_round": rounds,
            "path": "PostgreSQL commit -> relay (polling, or Debezium 3.6.1 on Connect 4.3 "
            "with the outbox EventRouter) -> Kafka -> consumer's handler",
            "note": "one machine, 2 cores shared with other work while measured: ratios "
            "within this run, not capacity",
        }
    )
    return result
