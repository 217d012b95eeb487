"""What adding a process buys: the shop on Kafka + PostgreSQL with 1, 2 and 3 processes per
service, on topics of 6 partitions.

Each count runs the throughput phase of :func:`bench.shop.run` (orders posted round-robin
to every order process, by 32 clients, as fast as the shop takes them) and records, next
to orders/s, the CPU each service process used per order and how busy the machine's CPUs
were. On a machine with few cores the curve flattens as soon as the CPUs are busy: the
services, Kafka, PostgreSQL and the load generator share them, so a process added then
only adds its own overhead (group membership, connections, one more poll loop).

The shop's topics are raised to 6 partitions before the first count (Kafka can add
partitions, never remove them; the shop does not care, as each run's orders are new keys).
"""

from __future__ import annotations

from typing import Any

from bench import shop
from bench.suite_kafka import STORE, URL
from shop.events import (
    InventoryRejected,
    InventoryReleased,
    InventoryReserved,
    OrderCancelled,
    OrderCompleted,
    OrderPlaced,
    PaymentFailed,
    PaymentProcessed,
)
from tidings.messages import published_topic

PARTITIONS = 6
EVENTS = (
    OrderPlaced,
    OrderCompleted,
    OrderCancelled,
    InventoryReserved,
    InventoryRejected,
    InventoryReleased,
    PaymentProcessed,
    PaymentFailed,
)


def ensure_partitions(bootstrap: str, topics: set[str], count: int) -> None:
    """Create ``topics`` with ``count`` partitions, or raise those that have fewer."""
    from confluent_kafka.admin import AdminClient, NewPartitions, NewTopic

    admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 3})
    existing = admin.list_topics(timeout=10).topics
    missing = [NewTopic(t, num_partitions=count) for t in topics if t not in existing]
    fewer = [
        NewPartitions(t, count)
        for t in topics
        if t in existing and len(existing[t].partitions) < count
    ]
    for futures in (
        admin.create_topics(missing) if missing else {},
        admin.create_partitions(fewer) if fewer else {},
    ):
        for future in futures.values():
            future.result(30)


def run(counts: tuple[int, ...] = (1, 2, 3), orders: int = 1000) -> dict[str, Any]:
    ensure_partitions(
        URL.removeprefix("kafka://"), {published_topic(e) for e in EVENTS}, PARTITIONS
    )
    per_count: dict[str, Any] = {}
    for count in counts:
        result = shop.run(
            f"{URL}?partitions={PARTITIONS}", STORE, orders=orders, replicas=count, latency=False
        )
        per_count[str(count)] = result
        print(
            f"  {count} process(es) per service: {result['orders_per_s']} orders/s, "
            f"CPUs {result['machine_cpu_busy']}",
            flush=True,
        )
    return {
        "partitions": PARTITIONS,
        "orders_per_s": {c: r["orders_per_s"] for c, r in per_count.items()},
        "service_cpu_ms_per_order": {
            c: round(sum(r["service_cpu_ms_per_order"].values()), 2) for c, r in per_count.items()
        },
        "machine_cpu_busy": {c: r["machine_cpu_busy"] for c, r in per_count.items()},
        "runs": per_count,
    }


if __name__ == "__main__":
    print(run())
