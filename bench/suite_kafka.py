"""Apache Kafka: the framework's transport against raw confluent-kafka, and the shop on it.

The transport-vs-client part is :func:`bench.kafka_client_choice.framework` (publish and
consume-ack on the same broker, topic shape and payloads); the shop runs on Kafka with its
state in PostgreSQL.
"""

from __future__ import annotations

from typing import Any

from bench import kafka_client_choice, shop, tls_cost

URL = "kafka://127.0.0.1:9092"
STORE = "postgresql://127.0.0.1:5432/tidings"


def run() -> dict[str, Any]:
    result: dict[str, Any] = dict(kafka_client_choice.run(n=20_000, rounds=3))
    result.update(shop.run(URL, STORE, orders=1000))
    result.update(tls_cost.run("kafka"))  # needs scripts/services up kafka-secure
    return result
