"""The cost of TLS and authentication: the framework's publish and consume rates on the
secured listener (Kafka SASL_SSL + SCRAM-SHA-512 on 9192, NATS TLS + user on 4322) against
the plaintext one, same transport, payloads and batches (:mod:`bench.framework_rates`).

The two listeners are two servers (``scripts/services up kafka-secure nats-secure`` runs
its own broker next to the plaintext one), with the same configuration but their data:
rounds alternate plaintext and secured, and the ratio is of the medians, so load that
comes and goes hits both alike. Run alone to add the keys to the broker's results file:
``python -m bench.tls_cost kafka nats``.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import sys
import uuid
from pathlib import Path
from typing import Any

from bench.framework_rates import framework_consume, framework_publish
from tidings.testing.secure import admin_url
from tidings.transport import open_transport

PLAINTEXT = {"kafka": "kafka://127.0.0.1:9092", "nats": "nats://127.0.0.1:4222"}
RESULTS = Path(__file__).parent / "results"


async def _rates(url: str, n: int) -> tuple[float, float]:
    transport = await open_transport(url)
    try:
        topic = f"bench-tls-{uuid.uuid4().hex[:8]}"
        await transport.create_topic(topic)
        published = await framework_publish(transport, topic, n)
        consumed = await framework_consume(transport, f"{topic}-g", topic, n)
        return published, consumed
    finally:
        await transport.close()


def run(scheme: str, n: int = 10_000, rounds: int = 3) -> dict[str, Any]:
    """The secured/plaintext ratios of ``scheme`` (``kafka`` or ``nats``)."""
    plain: list[tuple[float, float]] = []
    secured: list[tuple[float, float]] = []
    for _ in range(rounds):
        plain.append(asyncio.run(_rates(PLAINTEXT[scheme], n)))
        secured.append(asyncio.run(_rates(admin_url(scheme), n)))

    def median(runs: list[tuple[float, float]], i: int) -> float:
        return statistics.median(r[i] for r in runs)

    result: dict[str, Any] = {}
    for i, what in enumerate(("publish", "consume")):
        p, s = median(plain, i), median(secured, i)
        result[f"tls_auth_{what}_events_per_s"] = round(s)
        result[f"tls_auth_plaintext_{what}_events_per_s"] = round(p)
        result[f"tls_auth_{what}_ratio_to_plaintext"] = round(s / p, 3)
    result["tls_auth_note"] = (
        f"{rounds} alternating rounds of {n} records of 1 KiB, medians; secured = "
        + ("SASL_SSL + SCRAM-SHA-512" if scheme == "kafka" else "TLS + user/password")
    )
    return result


def main(schemes: list[str]) -> int:
    for scheme in schemes or ["kafka", "nats"]:
        result = run(scheme)
        path = RESULTS / f"{scheme}.json"
        merged = {**json.loads(path.read_text()), **result} if path.exists() else result
        path.write_text(json.dumps(merged, indent=2) + "\n")
        for key, value in result.items():
            print(f"  {scheme}: {key:42s} {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
