"""Which Kafka client the Kafka transport uses, and what the transport costs on top of it.

    PYTHONPATH=src python bench/kafka_client_choice.py [--part clients|framework|all]
        [--records 50000] [--rounds 3] [--url kafka://127.0.0.1:9092]

**clients**: aiokafka against confluent-kafka.

One run, one broker, one topic (3 partitions), the same 1 KiB values with the headers a
CloudEvent in binary mode carries (``ce_*`` + ``content-type``). Every producer uses
acks=all and idempotence, linger 5 ms and 256 KiB batches, sends every record and then
waits for all deliveries (the shape of ``Transport.publish``). Every consumer then reads
the whole topic (all producers' records) in a fresh group, as fast as it can.

Producers measured:

* ``aiokafka``: ``send()`` per record, then ``gather`` of the delivery futures;
* ``confluent-thread``: ``confluent_kafka.Producer.produce`` (librdkafka, non-blocking)
  with a poll thread resolving asyncio futures: the wrapper we would have to write,
  because ``confluent_kafka.aio.AIOProducer`` refuses headers in its batch mode;
* ``confluent-aio (no headers)``: ``confluent_kafka.aio.AIOProducer`` for reference only,
  and ``aiokafka (no headers)`` next to it, so those two compare like with like.

Consumers: ``aiokafka`` ``getmany(max_records=500)``; ``confluent-aio``
``AIOConsumer.consume(500)`` (a thread pool under asyncio).

**framework**: ``KafkaTransport`` against the raw client it wraps (confluent-kafka), same
broker, same 1 KiB values and headers: ``publish`` of batches of 500 against
``Producer.produce`` x 500 + waiting for the batch's delivery reports; and a
``Subscription`` fetching 500 and acking every delivery (and, as the runtime does, only
the last of each partition) against a raw ``Consumer.consume(500)`` loop that reads each
message's value and headers and commits once per batch, waiting for the answer (and,
as variants: also decoding the headers to text; not waiting for the commit's answer,
which is what the transport's fetch does). Prints the ratios; the target is >= 0.8.

Prints records/s and MB/s of each, and writes bench/results/kafka_client_choice.json
(and kafka_framework_overhead.json).
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import os
import statistics
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

VALUE = os.urandom(1024)
HEADERS = {
    "ce_id": "0192c3a0-7d5e-7cc3-b2a1-3f7e2a9d4c11",
    "ce_source": "order",
    "ce_type": "OrderPlaced",
    "ce_specversion": "1.0",
    "ce_time": "2025-01-01T00:00:00+00:00",
    "ce_subject": "order-123",
    "content-type": "application/json",
}
HEADER_LIST = [(k, v.encode()) for k, v in HEADERS.items()]
PARTITIONS = 3
LINGER_MS = 5
BATCH_BYTES = 256 * 1024


def key_of(i: int) -> bytes:
    return f"order-{i % 512}".encode()


async def create_topic(bootstrap: str, topic: str) -> None:
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, PARTITIONS, 1)])
    finally:
        await admin.close()


# -- producers --------------------------------------------------------------------------


async def produce_aiokafka(bootstrap: str, topic: str, n: int, headers: bool) -> float:
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks="all", enable_idempotence=True,
        linger_ms=LINGER_MS, max_batch_size=BATCH_BYTES,
    )  # fmt: skip
    await producer.start()
    hdrs = HEADER_LIST if headers else None
    try:
        start = time.perf_counter()
        futures = [await producer.send(topic, VALUE, key=key_of(i), headers=hdrs) for i in range(n)]
        await asyncio.gather(*futures)
        return time.perf_counter() - start
    finally:
        await producer.stop()


def confluent_producer_conf(bootstrap: str) -> dict[str, Any]:
    return {
        "bootstrap.servers": bootstrap, "acks": "all", "enable.idempotence": True,
        "linger.ms": LINGER_MS, "batch.size": BATCH_BYTES,
        "queue.buffering.max.messages": 1_000_000,
    }  # fmt: skip


async def produce_confluent_thread(bootstrap: str, topic: str, n: int) -> float:
    from confluent_kafka import KafkaException, Producer

    loop = asyncio.get_running_loop()
    producer = Producer(confluent_producer_conf(bootstrap))
    stop = threading.Event()

    def poll() -> None:
        while not stop.is_set():
            producer.poll(0.05)

    thread = threading.Thread(target=poll, daemon=True)
    thread.start()
    # One future for the whole batch, settled from the poll thread when the last delivery
    # report arrives: a future per record costs more than librdkafka saves.
    done: asyncio.Future[None] = loop.create_future()
    pending = [n]
    errors: list[Any] = []

    def on_delivery(err: Any, _msg: Any) -> None:
        if err is not None:
            errors.append(err)
        pending[0] -= 1  # delivery callbacks all run on the poll thread
        if pending[0] == 0:
            loop.call_soon_threadsafe(
                lambda: (
                    done.set_exception(KafkaException(errors[0]))
                    if errors
                    else done.set_result(None)
                )
            )

    try:
        start = time.perf_counter()
        for i in range(n):
            while True:
                try:
                    producer.produce(
                        topic, VALUE, key_of(i), headers=HEADER_LIST, on_delivery=on_delivery
                    )
                    break
                except BufferError:  # local queue full: let the poll thread drain it
                    await asyncio.sleep(0.001)
        await done
        return time.perf_counter() - start
    finally:
        stop.set()
        thread.join()
        producer.flush(10)


async def produce_confluent_aio(bootstrap: str, topic: str, n: int) -> float:
    from confluent_kafka.aio import AIOProducer

    producer = AIOProducer(confluent_producer_conf(bootstrap), batch_size=1000)
    try:
        start = time.perf_counter()
        futures = [await producer.produce(topic, VALUE, key_of(i)) for i in range(n)]
        await producer.flush()
        await asyncio.gather(*futures)
        return time.perf_counter() - start
    finally:
        await producer.close()


# -- consumers --------------------------------------------------------------------------


async def consume_aiokafka(bootstrap: str, topic: str, n: int) -> float:
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, group_id=f"bench-{uuid.uuid4().hex[:8]}",
        enable_auto_commit=False, auto_offset_reset="earliest",
    )  # fmt: skip
    await consumer.start()
    try:
        got, start = 0, None
        while got < n:
            batches = await consumer.getmany(timeout_ms=500, max_records=500)
            for records in batches.values():
                if start is None:
                    start = time.perf_counter()
                got += len(records)
        assert start is not None
        return time.perf_counter() - start
    finally:
        await consumer.stop()


async def consume_confluent_aio(bootstrap: str, topic: str, n: int) -> float:
    from confluent_kafka.aio import AIOConsumer

    consumer = AIOConsumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"bench-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
        }
    )
    await consumer.subscribe([topic])
    try:
        got, start = 0, None
        while got < n:
            for message in await consumer.consume(num_messages=500, timeout=0.5):
                if message.error():
                    continue
                if start is None:
                    start = time.perf_counter()
                got += 1
        assert start is not None
        return time.perf_counter() - start
    finally:
        await consumer.close()


# -- main -------------------------------------------------------------------------------


async def main(url: str, n: int, rounds: int) -> dict[str, Any]:
    parts = urlsplit(url)
    bootstrap = f"{parts.hostname}:{parts.port or 9092}"
    topic = f"bench.client-choice-{uuid.uuid4().hex[:8]}"
    await create_topic(bootstrap, topic)
    producers: dict[str, Callable[[], Any]] = {
        "aiokafka": lambda: produce_aiokafka(bootstrap, topic, n, headers=True),
        "confluent-thread": lambda: produce_confluent_thread(bootstrap, topic, n),
        "aiokafka (no headers)": lambda: produce_aiokafka(bootstrap, topic, n, headers=False),
        "confluent-aio (no headers)": lambda: produce_confluent_aio(bootstrap, topic, n),
    }
    results: dict[str, Any] = {"records": n, "value_bytes": len(VALUE), "rounds": rounds}
    times: dict[str, list[float]] = {}
    for round_ in range(rounds):  # alternating the order round by round; medians
        order = list(producers.items())
        for name, case in order if round_ % 2 == 0 else reversed(order):
            times.setdefault(name, []).append(await case())
    total = n * len(producers) * rounds
    consumers: dict[str, Callable[[], Any]] = {
        "aiokafka": lambda: consume_aiokafka(bootstrap, topic, total),
        "confluent-aio": lambda: consume_confluent_aio(bootstrap, topic, total),
    }
    for round_ in range(rounds):
        order = list(consumers.items())
        for name, case in order if round_ % 2 == 0 else reversed(order):
            times.setdefault(name + " consume", []).append(await case())
    for name in producers:
        results[f"produce {name}"] = n / statistics.median(times[name])
    for name in consumers:
        results[f"consume {name}"] = total / statistics.median(times[name + " consume"])
    results["consumed_records"] = total
    return results


# -- the transport against the raw client ---------------------------------------------

FRAMEWORK_BATCH = 500


async def framework_publish(url: str, topic: str, n: int) -> float:
    from tidings.transport import open_transport
    from tidings.transport.base import OutgoingRecord

    transport = await open_transport(url)
    records = [
        OutgoingRecord(topic, VALUE, key_of(i).decode(), HEADERS) for i in range(FRAMEWORK_BATCH)
    ]
    try:
        await transport.publish(records[:10])  # connections warm, as for the raw producer
        start = time.perf_counter()
        for _ in range(n // FRAMEWORK_BATCH):
            await transport.publish(records)
        return time.perf_counter() - start
    finally:
        await transport.close()


async def raw_publish(url: str, topic: str, n: int) -> float:
    from confluent_kafka import KafkaException, Producer

    from tidings.transport.kafka.config import BROKER_DEFAULT_MESSAGE_MAX_BYTES, KafkaSettings

    config = KafkaSettings.from_url(url).producer(lambda e: None, BROKER_DEFAULT_MESSAGE_MAX_BYTES)
    producer = Producer(config)  # the very settings the transport uses
    loop = asyncio.get_running_loop()
    stop = threading.Event()

    def poll() -> None:
        while not stop.is_set():
            producer.poll(0.1)

    thread = threading.Thread(target=poll, daemon=True)
    thread.start()

    async def batch(count: int) -> None:
        done: asyncio.Future[None] = loop.create_future()
        state = {"left": count, "error": None}
        lock = threading.Lock()

        def on_delivery(err: Any, _msg: Any) -> None:
            with lock:
                state["left"] -= 1
                state["error"] = state["error"] or err
                last = state["left"] == 0
            if last:
                loop.call_soon_threadsafe(done.set_result, None)

        for i in range(count):
            producer.produce(topic, VALUE, key_of(i), headers=HEADERS, on_delivery=on_delivery)
        await done
        if state["error"]:
            raise KafkaException(state["error"])

    try:
        await batch(10)
        start = time.perf_counter()
        for _ in range(n // FRAMEWORK_BATCH):
            await batch(FRAMEWORK_BATCH)
        return time.perf_counter() - start
    finally:
        stop.set()
        thread.join()


async def framework_consume(url: str, topic: str, n: int, ack_last_only: bool) -> float:
    from tidings.transport import open_transport
    from tidings.transport.base import Delivery

    transport = await open_transport(url)
    sub = await transport.subscribe(f"bench-{uuid.uuid4().hex[:8]}", [topic])
    try:
        got, start, size = 0, None, 0
        while got < n:
            deliveries = await sub.fetch(max_records=FRAMEWORK_BATCH, timeout=0.5)
            if deliveries and start is None:
                start = time.perf_counter()
            last: dict[tuple[str, int], Delivery] = {}
            for delivery in deliveries:
                size += len(delivery.record.value) + len(delivery.record.headers)
                if ack_last_only:
                    last[(delivery.record.topic, delivery.record.partition)] = delivery
                else:
                    await delivery.ack()
            for delivery in last.values():
                await delivery.ack()
            got += len(deliveries)
        await sub.fetch(timeout=0)  # the last batch's commit
        assert start is not None
        return time.perf_counter() - start
    finally:
        await sub.close()
        await transport.close()


async def raw_consume(
    url: str, topic: str, n: int, decode: bool = False, wait_commit: bool = True
) -> float:
    from concurrent.futures import ThreadPoolExecutor

    from confluent_kafka import Consumer

    from tidings.transport.kafka.config import KafkaSettings

    group = f"bench-{uuid.uuid4().hex[:8]}"
    consumer = Consumer(KafkaSettings.from_url(url).consumer(group, True, lambda e: None))
    consumer.subscribe([topic])
    worker = ThreadPoolExecutor(1)  # librdkafka blocks: one thread, as the transport has
    loop = asyncio.get_running_loop()
    try:
        got, start, size = 0, None, 0
        while got < n:
            messages = await loop.run_in_executor(worker, consumer.consume, FRAMEWORK_BATCH, 0.5)
            if messages and start is None:
                start = time.perf_counter()
            for message in messages:
                headers = message.headers() or []
                if decode:  # as a CloudEvents consumer must: the attributes are text
                    size += len({k: v.decode() for k, v in headers if isinstance(v, bytes)})
                size += len(message.value() or b"") + len(headers)
            if messages:
                commit = functools.partial(
                    consumer.commit, asynchronous=not wait_commit, offsets=_next(messages)
                )
                await loop.run_in_executor(worker, commit)
            got += len(messages)
        assert start is not None
        return time.perf_counter() - start
    finally:
        await loop.run_in_executor(worker, consumer.close)
        worker.shutdown()


def _next(messages: list[Any]) -> list[Any]:
    from confluent_kafka import TopicPartition

    last: dict[tuple[str, int], int] = {}
    for m in messages:
        last[(m.topic(), m.partition())] = m.offset() + 1
    return [TopicPartition(t, p, o) for (t, p), o in last.items()]


async def framework(url: str, n: int, rounds: int) -> dict[str, Any]:
    parts = urlsplit(url)
    topic = f"bench.framework-{uuid.uuid4().hex[:8]}"
    await create_topic(parts.netloc, topic)
    n -= n % FRAMEWORK_BATCH
    times: dict[str, list[float]] = {}
    cases: dict[str, Callable[[], Any]] = {
        "publish raw": lambda: raw_publish(url, topic, n),
        "publish transport": lambda: framework_publish(url, topic, n),
        "consume raw": lambda: raw_consume(url, topic, n),
        "consume raw, headers decoded": lambda: raw_consume(url, topic, n, decode=True),
        "consume raw, commit not awaited": lambda: raw_consume(url, topic, n, wait_commit=False),
        "consume transport (ack each)": lambda: framework_consume(url, topic, n, False),
        "consume transport (ack last per partition)": lambda: framework_consume(
            url, topic, n, True
        ),
    }
    for round_ in range(rounds):
        # Rounds alternate the order, so a noisy moment does not always hit the same side.
        order = list(cases.items()) if round_ % 2 == 0 else list(reversed(cases.items()))
        for name, case in order:
            times.setdefault(name, []).append(await case())
    median = {name: statistics.median(elapsed) for name, elapsed in times.items()}
    results: dict[str, Any] = {"records": n, "batch": FRAMEWORK_BATCH, "rounds": rounds}
    results.update({name: n / elapsed for name, elapsed in median.items()})
    results["ratio publish"] = median["publish raw"] / median["publish transport"]
    for variant in ("ack each", "ack last per partition"):
        results[f"ratio consume+ack ({variant})"] = (
            median["consume raw"] / median[f"consume transport ({variant})"]
        )
    for raw in ("headers decoded", "commit not awaited"):
        results[f"ratio consume+ack (ack each) to raw, {raw}"] = (
            median[f"consume raw, {raw}"] / median["consume transport (ack each)"]
        )
    return results


def run(n: int = 50_000, rounds: int = 3) -> dict[str, Any]:
    """For ``python -m bench kafka`` (a bench/suite_kafka.py can re-export this)."""
    m = asyncio.run(framework("kafka://127.0.0.1:9092", n, rounds))
    return {
        "publish_events_per_s": round(m["publish transport"]),
        "raw_publish_events_per_s": round(m["publish raw"]),
        "publish_ratio_to_raw": round(m["ratio publish"], 3),
        "consume_events_per_s": round(m["consume transport (ack each)"]),
        "raw_consume_events_per_s": round(m["consume raw"]),
        "consume_ratio_to_raw": round(m["ratio consume+ack (ack each)"], 3),
        "consume_ack_last_events_per_s": round(m["consume transport (ack last per partition)"]),
        "consume_ack_last_ratio_to_raw": round(m["ratio consume+ack (ack last per partition)"], 3),
    }


def report(title: str, results: dict[str, Any], out: str) -> None:
    print(title)
    for name, value in results.items():
        if name.startswith("ratio"):
            print(f"  {name:46} {value:10.2f}")
        elif name.startswith(("produce ", "consume ", "publish ")):
            print(f"  {name:46} {value:10,.0f} records/s  {value * len(VALUE) / 1e6:7.1f} MB/s")
    path = Path(__file__).parent / "results" / out
    path.parent.mkdir(exist_ok=True)
    path.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--url", default="kafka://127.0.0.1:9092")
    parser.add_argument("--part", choices=["clients", "framework", "all"], default="all")
    parser.add_argument("--records", type=int, default=50_000)
    parser.add_argument("--rounds", type=int, default=3, help="runs of each case")
    args = parser.parse_args()
    if args.part in ("clients", "all"):
        results = asyncio.run(main(args.url, args.records, args.rounds))
        report(
            f"clients: {args.records} records of {len(VALUE)} B per producer run,"
            f" median of {args.rounds}",
            results,
            "kafka_client_choice.json",
        )
    if args.part in ("framework", "all"):
        results = asyncio.run(framework(args.url, args.records, args.rounds))
        report(
            f"transport vs raw confluent-kafka: {results['records']} records of {len(VALUE)} B,"
            f" batches of {FRAMEWORK_BATCH}, median of {args.rounds}",
            results,
            "kafka_framework_overhead.json",
        )
