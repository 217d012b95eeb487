"""Throughput of the embedded SQLite log next to raw sqlite3 inserts on the same disk.

Records/s for raw sqlite3 inserts of 1 KiB rows (WAL, synchronous=NORMAL, one transaction
per batch of 500, and one per row), SQLiteLog.publish batched (500) and one at a time, and
consume + ack (one ack per record, and one per batch, as the runtime does). The ratios
publish / raw insert are what to read: absolute numbers move with the machine's load.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import statistics
import tempfile
import time

from tidings.transport.base import OutgoingRecord
from tidings.transport.sqlite import SQLiteLog

VALUE = os.urandom(1024)


def raw_insert(path: str, n: int, batch: int) -> float:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA busy_timeout=30000")
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("CREATE TABLE raw (id INTEGER PRIMARY KEY, v BLOB NOT NULL)")
    rows = [(VALUE,)] * n
    start = time.perf_counter()
    for i in range(0, n, batch):
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany("INSERT INTO raw (v) VALUES (?)", rows[i : i + batch])
        conn.execute("COMMIT")
    elapsed = time.perf_counter() - start
    conn.close()
    return n / elapsed


async def log_publish(path: str, n: int, batch: int) -> float:
    log = SQLiteLog(path)
    await log.connect()
    await log.create_topic("bench", 3)
    records = [OutgoingRecord("bench", VALUE, key=f"key-{j % 64}") for j in range(n)]
    start = time.perf_counter()
    for i in range(0, n, batch):
        await log.publish(records[i : i + batch])
    elapsed = time.perf_counter() - start
    await log.close()
    return n / elapsed


async def log_consume(path: str, n: int, ack_each: bool) -> float:
    log = SQLiteLog(path)
    await log.connect()
    sub = await log.subscribe(f"bench-{ack_each}", ["bench"])
    start = time.perf_counter()
    seen = 0
    while seen < n:
        deliveries = await sub.fetch(max_records=500, timeout=1.0)
        if not deliveries:
            break
        if ack_each:
            for delivery in deliveries:
                await delivery.ack()
        else:  # acks are cumulative: one per batch is what a batching consumer does
            last = {}
            for delivery in deliveries:
                last[delivery.record.partition] = delivery
            for delivery in last.values():
                await delivery.ack()
        seen += len(deliveries)
    elapsed = time.perf_counter() - start
    await log.close()
    assert seen == n, (seen, n)
    return n / elapsed


def run(records: int = 20000, repeat: int = 3) -> dict[str, float]:
    """Median records/s of each measurement; raw and log runs alternate (same noise)."""
    n = records
    results: dict[str, list[float]] = {}

    def note(name: str, value: float) -> None:
        results.setdefault(name, []).append(value)

    for _ in range(repeat):
        with tempfile.TemporaryDirectory(dir=".") as tmp:  # the project's disk, like a user's
            note("raw_batch", raw_insert(f"{tmp}/raw.db", n, 500))
            note("log_batch", asyncio.run(log_publish(f"{tmp}/log.db", n, 500)))
            note("raw_single", raw_insert(f"{tmp}/raw1.db", n // 10, 1))
            note("log_single", asyncio.run(log_publish(f"{tmp}/log1.db", n // 10, 1)))
            note("consume_ack_each", asyncio.run(log_consume(f"{tmp}/log.db", n, True)))
            note("consume_ack_batch", asyncio.run(log_consume(f"{tmp}/log.db", n, False)))
    m = {name: statistics.median(values) for name, values in results.items()}
    return {
        "publish_events_per_s": round(m["log_batch"]),
        "publish_one_at_a_time_events_per_s": round(m["log_single"]),
        "raw_sqlite_inserts_per_s": round(m["raw_batch"]),
        "raw_sqlite_inserts_one_per_txn_per_s": round(m["raw_single"]),
        "publish_ratio_to_raw": round(m["log_batch"] / m["raw_batch"], 3),
        "publish_one_at_a_time_ratio_to_raw": round(m["log_single"] / m["raw_single"], 3),
        "consume_events_per_s": round(m["consume_ack_batch"]),
        "consume_ack_each_events_per_s": round(m["consume_ack_each"]),
    }


if __name__ == "__main__":
    print(run())
