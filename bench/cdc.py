"""Change data capture: a legacy commit to the shop's event, through Debezium and the ACL.

A fresh legacy site (schema, Debezium connector, topics of its own) and the
anti-corruption layer (``shop.acl``) as a ``tidings run`` process on Kafka, with a SQLite
store. Two measures:

* **latency**: 200 price changes, one committed every 20 ms; for each, the time from the
  legacy commit (taken right after it) to the broker's timestamp of the ``ProductPriced``
  the layer published for it (both clocks are this machine's), p50/p99 in ms;
* **throughput**: 2,000 new priced products committed as fast as one connection can, 100
  rows a transaction (one change event each); changes/s from the first commit to the
  last ``ProductPriced``.

Needs PostgreSQL, Kafka and Kafka Connect (``scripts/services up``).
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from bench.stats import percentile
from shop.events import CATALOG
from shop.migration import KAFKA, LegacySite, wait_for
from tidings import codec
from tidings.testing import records
from tidings.testing.processes import ServiceProcesses
from tidings.transport import open_transport

LATENCY_CHANGES = 200
BURST_CHANGES = 2000


def _published(skus: set[str]) -> dict[tuple[str, int], float]:
    """(sku, price) -> broker timestamp of its ProductPriced, for the skus given."""

    async def read() -> dict[tuple[str, int], float]:
        transport = await open_transport(KAFKA)
        try:
            found = {}
            for record in await records(transport, CATALOG):
                data = codec.decode(record).data
                if data.get("sku") in skus:
                    found[(data["sku"], data["price_cents"])] = record.timestamp
            return found
        finally:
            await transport.close()

    return asyncio.run(read())


def _all(wanted: dict[tuple[str, int], float]) -> dict[tuple[str, int], float] | None:
    """The events of every (sku, price) wanted, once all were published; else None."""
    found = _published({sku for sku, _ in wanted})
    return found if found.keys() >= wanted.keys() else None


def run() -> dict[str, Any]:
    with LegacySite.fresh() as site, tempfile.TemporaryDirectory() as tmp:
        acl = ServiceProcesses(
            Path(tmp), KAFKA, f"sqlite:///{tmp}/{{service}}.db", {"legacy-acl": "shop.acl:service"}
        )
        acl.env["SHOP_LEGACY_TOPICS"] = site.prefix
        acl.start()
        try:
            acl.wait_ready()
            with psycopg.connect(site.database, autocommit=True) as conn:
                conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(site.schema)))
                sku = f"lat-{site.run}"
                conn.execute(b"INSERT INTO prod VALUES (%s, 'Bench', 1.00)", (sku,))
                committed: dict[tuple[str, int], float] = {}
                for n in range(LATENCY_CHANGES):
                    price = 200 + n
                    conn.execute(
                        b"UPDATE prod SET unit_prc = %s WHERE prod_cd = %s", (price / 100, sku)
                    )
                    committed[(sku, price)] = time.time()
                    time.sleep(0.02)
                seen = wait_for("the latency run's events", lambda: _all(committed), 180)
                latencies = [(seen[k] - t) * 1000 for k, t in committed.items()]

                burst = [f"b{n}-{site.run}" for n in range(BURST_CHANGES)]
                started = time.time()
                for first in range(0, BURST_CHANGES, 100):  # 100 rows a transaction
                    with conn.transaction(), conn.cursor() as cur:
                        cur.executemany(
                            b"INSERT INTO prod VALUES (%s, 'Bench', 1.23)",
                            [(name,) for name in burst[first : first + 100]],
                        )
                committed_for = time.time() - started
                got = wait_for(
                    "the burst's events", lambda: _all({(b, 123): 0.0 for b in burst}), 600
                )
                last = max(got.values())
        finally:
            acl.stop()
    return {
        "latency_changes": LATENCY_CHANGES,
        "commit_to_event_p50_ms": round(statistics.median(latencies), 1),
        "commit_to_event_p99_ms": round(percentile(latencies, 99), 1),
        "burst_changes": BURST_CHANGES,
        "burst_commit_seconds": round(committed_for, 2),
        "burst_changes_per_s": round(BURST_CHANGES / (last - started), 1),
        "path": "legacy commit -> Debezium 3.6.1 (Connect 4.3) -> Kafka -> shop.acl -> ProductPriced",
        "note": "one machine, 2 cores shared with other work while measured: ratios, not capacity",
    }
