"""``python -m bench [suite ...]``: run benchmarks, print them, write bench/results/*.json.

Suites: ``sqlite`` (the embedded log and the shop on it), ``kafka``, ``nats``, ``rabbitmq`` (each broker
against its raw client, and the shop on it), ``aws`` (SNS+SQS and EventBridge on moto's
emulator against raw aiobotocore, and the shop on each), ``observability`` (tracing and metrics on vs
off), ``faststream`` (a service against FastStream on Kafka and NATS; needs the ``bench``
extra), ``memory`` (the RSS of each shop process over 10,000 orders on SQLite), ``scaling``
(the shop on Kafka with 1, 2 and 3 processes per service), ``eventsourcing`` (appends and
aggregate loads on SQLite and PostgreSQL), ``trace`` (``tidings trace`` of one order on
Kafka among 500,000 unrelated records), ``serialization`` (an OrderPlaced encoded and
decoded as JSON and as Avro with a registry, against pydantic, and the registry calls
of a steady run), ``cdc`` (a legacy commit to the shop's event through Debezium and the
anti-corruption layer: latency and changes/s; needs Kafka Connect), ``relay`` (the outbox
published by the polling relay against Debezium's outbox router: commit -> consumer
latency and events/s, rounds alternating; needs Kafka Connect). With no
argument, all of them; the broker suites need ``scripts/services up``.
"""

from __future__ import annotations

import importlib
import json
import sys
import time
from pathlib import Path

SUITES = {  # suite -> module with run() -> dict
    "sqlite": "bench.suite_sqlite",
    "kafka": "bench.suite_kafka",
    "nats": "bench.suite_nats",
    "rabbitmq": "bench.suite_rabbitmq",
    "aws": "bench.suite_aws",
    "observability": "bench.observability",
    "faststream": "bench.faststream",
    "memory": "bench.memory",
    "scaling": "bench.scaling",
    "eventsourcing": "bench.eventsourcing",
    "trace": "bench.trace",
    "serialization": "bench.serialization",
    "cdc": "bench.cdc",
    "relay": "bench.relay",
}
RESULTS = Path(__file__).parent / "results"


def main(argv: list[str]) -> int:
    chosen = argv or list(SUITES)
    unknown = set(chosen) - set(SUITES)
    if unknown:
        print(f"unknown suite(s) {', '.join(sorted(unknown))}; choose from {', '.join(SUITES)}")
        return 2
    RESULTS.mkdir(exist_ok=True)
    for name in chosen:
        started = time.monotonic()
        print(f"== {name}", flush=True)
        result = importlib.import_module(SUITES[name]).run()
        result["measured_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        (RESULTS / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
        for key, value in result.items():
            print(f"  {key:42s} {value}")
        print(f"  ({time.monotonic() - started:.0f}s; written to bench/results/{name}.json)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
