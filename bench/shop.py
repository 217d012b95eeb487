"""End-to-end load on the shop: orders/s, and latency from POST /orders to OrderCompleted.

Two phases on one running shop (three service processes, like ``tidings demo``):

1. throughput: ``--orders`` orders posted by ``--concurrency`` clients as fast as the shop
   takes them; orders/s = orders / (last OrderCompleted - first POST);
2. latency: orders paced at ``--rate`` per second (open loop, so a slow shop cannot slow
   the arrivals and hide its own queueing), by default 200/s or half the throughput if
   that is lower; p50/p99 of OrderCompleted.time - OrderPlaced.time,
   both stamped by the order service (one clock), read back from the log.

Between the two, the resident memory (RSS) of each service process is read.
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

from shop.demo import Shop
from tidings import codec
from tidings.cli.common import opened_transport
from tidings.testing import free_port

LINE = {"sku": "widget", "quantity": 1}


async def _post_all(base: str, n: int, concurrency: int, rate: float | None) -> list[str]:
    # aiohttp, not httpx: httpx's connection pool costs more CPU than the shop itself at 32
    # connections, and on 2 cores the load generator's CPU is taken from the shop.
    ids: list[str] = []
    limit = asyncio.Semaphore(concurrency)
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(base, connector=connector) as client:

        async def post(i: int) -> None:
            if rate:
                await asyncio.sleep(i / rate)
            async with limit:
                body = {"customer_id": f"c{i % 50}", "lines": [LINE]}
                async with client.post("/orders", json=body) as r:
                    r.raise_for_status()
                    ids.append((await r.json())["order_id"])

        await asyncio.gather(*(post(i) for i in range(n)))
    return ids


async def _completions(
    broker: str, ids: set[str], timeout: float
) -> dict[str, tuple[float, float]]:
    """order id -> (placed time, completed time), waiting until all are completed."""
    deadline = time.monotonic() + timeout
    placed: dict[str, float] = {}
    done: dict[str, float] = {}
    positions: dict[int, int] = {}
    async with opened_transport(broker) as transport:
        while time.monotonic() < deadline:
            info = {t.name: t for t in await transport.topics()}["shop.orders"]
            for partition, end in info.end_offsets.items():
                while positions.get(partition, 0) < end:
                    batch = await transport.read(
                        "shop.orders", partition, positions.get(partition, 0), 2000
                    )
                    if not batch:
                        break
                    for record in batch:
                        try:
                            env = codec.decode(record)
                        except codec.DecodeError:
                            continue  # not a CloudEvent: another system's record
                        order_id = str(env.data.get("order_id"))
                        if order_id in ids:
                            if env.type == "OrderPlaced":
                                placed[order_id] = env.time.timestamp()
                            elif env.type in ("OrderCompleted", "OrderCancelled"):
                                done[order_id] = env.time.timestamp()
                    positions[partition] = batch[-1].offset + 1
            if len(done) >= len(ids):
                break
            await asyncio.sleep(0.2)
    missing = len(ids) - len(done)
    if missing:
        raise RuntimeError(f"{missing} of {len(ids)} orders did not settle in {timeout:.0f}s")
    return {i: (placed[i], done[i]) for i in ids}


def rss_mib(shop: Shop) -> dict[str, float]:
    """The resident memory of each service process of ``shop``, in MiB."""
    return {name: round(kib / 1024, 1) for name, kib in shop.rss().items()}


def _percentile(values: list[float], q: float) -> float:
    return (
        statistics.quantiles(values, n=100, method="inclusive")[q - 1]
        if len(values) > 1
        else values[0]
    )


def run(
    broker: str | None = None,
    store: str | None = None,
    *,
    orders: int = 1500,
    concurrency: int = 32,
    rate: float | None = None,
    seconds: float = 5.0,
) -> dict[str, Any]:
    """Throughput, then latency at ``rate`` orders/s (default: 200, or half the measured
    throughput if that is lower, so that latency is not just the length of a queue)."""
    workdir = Path(tempfile.mkdtemp(prefix="tidings-bench-shop-"))
    broker = broker or f"sqlite:///{workdir}/log.db"
    store = store or f"sqlite:///{workdir}/{{service}}.db"
    shop = Shop(workdir, broker, store, free_port(), "bench")
    shop.env.update(
        SHOP_STOCK="widget=1000000", SHOP_PAYMENT_FAILURE_RATE="0", SHOP_CREDIT_LIMITS=""
    )
    shop.start()
    base = f"http://127.0.0.1:{shop.port}"
    try:
        shop.wait_ready()
        asyncio.run(_post_all(base, 50, 8, None))  # warm up connections, caches and files
        started = time.time()
        ids = asyncio.run(_post_all(base, orders, concurrency, None))
        times = asyncio.run(_completions(broker, set(ids), 300))
        orders_per_s = len(ids) / (max(done for _, done in times.values()) - started)
        rss = rss_mib(shop)

        rate = rate or min(200.0, round(orders_per_s / 2))
        paced = asyncio.run(_post_all(base, int(rate * seconds), concurrency * 4, rate))
        lat = [
            (done - placed) * 1000
            for placed, done in asyncio.run(_completions(broker, set(paced), 300)).values()
        ]
    finally:
        shop.stop()
    return {
        "orders_per_s": round(orders_per_s, 1),
        "order_latency_rate_per_s": rate,
        "order_latency_ms_p50": round(_percentile(lat, 50), 1),
        "order_latency_ms_p99": round(_percentile(lat, 99), 1),
        "orders_measured": len(ids) + len(paced),
        "rss_mib_after_throughput": rss,
    }


if __name__ == "__main__":
    print(run())
