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
import contextlib
import os
import statistics
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from shop.demo import Shop
from tidings import codec
from tidings.cli.common import opened_transport
from tidings.testing import free_port
from tidings.testing.postgres import fresh_schema
from tidings.testing.topics import witness
from tidings.transport import Record

LINE = {"sku": "widget", "quantity": 1}


async def _post_all(
    base: str | Sequence[str], n: int, concurrency: int, rate: float | None
) -> list[str]:
    """POST ``n`` orders, spread round-robin over the order processes at ``base``."""
    # aiohttp, not httpx: httpx's connection pool costs more CPU than the shop itself at 32
    # connections, and on 2 cores the load generator's CPU is taken from the shop.
    bases = [base] if isinstance(base, str) else list(base)
    ids: list[str] = []
    limit = asyncio.Semaphore(concurrency)
    async with contextlib.AsyncExitStack() as stack:
        clients = [
            await stack.enter_async_context(
                aiohttp.ClientSession(b, connector=aiohttp.TCPConnector(limit=concurrency))
            )
            for b in bases
        ]

        async def post(i: int) -> None:
            if rate:
                await asyncio.sleep(i / rate)
            async with limit:
                body = {"customer_id": f"c{i % 50}", "lines": [LINE]}
                async with clients[i % len(clients)].post("/orders", json=body) as r:
                    r.raise_for_status()
                    ids.append((await r.json())["order_id"])

        await asyncio.gather(*(post(i) for i in range(n)))
    return ids


async def _completions(
    broker: str, ids: set[str], timeout: float, kept: str | None = None
) -> dict[str, tuple[float, float]]:
    """order id -> (placed time, completed time), waiting until all are completed.

    The benchmark measures the happy path (stock aplenty, no payment declined), so a
    cancelled order means the shop did not run as the benchmark set it up: an error.
    On a broker without history the events come from ``kept``, a witness group made
    before the orders (:func:`tidings.testing.topics.witness`).
    """
    deadline = time.monotonic() + timeout
    placed: dict[str, float] = {}
    done: dict[str, float] = {}
    cancelled: dict[str, str] = {}
    positions: dict[int, int] = {}

    def note(record: Record) -> None:
        try:
            env = codec.decode(record)
        except codec.DecodeError:
            return  # not a CloudEvent: another system's record
        order_id = str(env.data.get("order_id"))
        if order_id in ids:
            if env.type == "OrderPlaced":
                placed[order_id] = env.time.timestamp()
            elif env.type in ("OrderCompleted", "OrderCancelled"):
                done[order_id] = env.time.timestamp()
            if env.type == "OrderCancelled":
                cancelled[order_id] = str(env.data.get("reason"))

    async with opened_transport(broker) as transport:
        if kept is not None:
            sub = await transport.subscribe(kept, ["shop.orders"])
            while len(done) < len(ids) and time.monotonic() < deadline:
                for delivery in await sub.fetch(2000, 0.5):
                    note(delivery.record)
                    await delivery.ack()
            await sub.close()
        while kept is None and time.monotonic() < deadline:
            info = {t.name: t for t in await transport.topics()}["shop.orders"]
            for partition, end in info.end_offsets.items():
                while positions.get(partition, 0) < end:
                    batch = await transport.read(
                        "shop.orders", partition, positions.get(partition, 0), 2000
                    )
                    if not batch:
                        break
                    for record in batch:
                        note(record)
                    positions[partition] = batch[-1].offset + 1
            if len(done) >= len(ids):
                break
            await asyncio.sleep(0.2)
    if cancelled:
        reason = next(iter(cancelled.values()))
        raise RuntimeError(f"{len(cancelled)} of {len(ids)} orders were cancelled ({reason})")
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
    replicas: int = 1,
    latency: bool = True,
) -> dict[str, Any]:
    """Throughput, then latency at ``rate`` orders/s (default: 200, or half the measured
    throughput if that is lower, so that latency is not just the length of a queue).

    ``replicas`` processes run each service (orders are posted to every order process in
    turn); without ``latency`` only throughput is measured. The CPU the service processes
    used during the throughput phase, and how busy the machine's CPUs were, come with it.
    """
    workdir = Path(tempfile.mkdtemp(prefix="tidings-bench-shop-"))
    broker = broker or f"sqlite:///{workdir}/log.db"
    with contextlib.ExitStack() as stack:
        if store is not None and store.startswith("postgresql"):
            # A schema of its own: state left by earlier runs (the stock) must not steer it.
            store = stack.enter_context(fresh_schema(store, "tidings_bench"))
        store = store or f"sqlite:///{workdir}/{{service}}.db"
        shop = Shop(workdir, broker, store, free_port(), "bench", replicas=replicas)
        return _measure(shop, orders, concurrency, rate, seconds, latency)


def _measure(
    shop: Shop, orders: int, concurrency: int, rate: float | None, seconds: float, latency: bool
) -> dict[str, Any]:
    broker, store = shop.broker, shop.store
    shop.env.update(
        SHOP_STOCK="widget=1000000", SHOP_PAYMENT_FAILURE_RATE="0", SHOP_CREDIT_LIMITS=""
    )
    shop.start()
    result: dict[str, Any] = {}
    try:
        shop.wait_ready()
        kept = asyncio.run(witness(broker, "shop.orders"))  # None where the log is readable
        asyncio.run(_post_all(shop.bases, 50, 8, None))  # warm up connections, caches, files
        cpu_before, machine_before = shop.cpu_seconds(), machine_cpu()
        servers_before = server_cpu_seconds()
        started = time.time()
        ids = asyncio.run(_post_all(shop.bases, orders, concurrency, None))
        times = asyncio.run(_completions(broker, set(ids), 300, kept))
        elapsed = max(done for _, done in times.values()) - started
        cpu, servers = shop.cpu_seconds(), server_cpu_seconds()
        busy, cores = machine_busy(machine_before, machine_cpu())
        result.update(
            orders_per_s=round(len(ids) / elapsed, 1),
            orders_measured=len(ids),
            service_cpu_ms_per_order={
                name: round((cpu[name] - cpu_before.get(name, 0.0)) * 1000 / len(ids), 2)
                for name in cpu
            },
            server_cpu_ms_per_order={
                name: round((used - servers_before.get(name, 0.0)) * 1000 / len(ids), 2)
                for name, used in servers.items()
                if name in (urlsplit(store).scheme[:8], urlsplit(broker).scheme)
            },
            machine_cpu_busy=f"{busy:.0%} of {cores} cores",
            rss_mib_after_throughput=rss_mib(shop),
        )
        if latency:
            rate = rate or min(200.0, round(result["orders_per_s"] / 2))
            paced = asyncio.run(_post_all(shop.bases, int(rate * seconds), concurrency * 4, rate))
            lat = [
                (done - placed) * 1000
                for placed, done in asyncio.run(
                    _completions(broker, set(paced), 300, kept)
                ).values()
            ]
            result.update(
                order_latency_rate_per_s=rate,
                order_latency_ms_p50=round(_percentile(lat, 50), 1),
                order_latency_ms_p99=round(_percentile(lat, 99), 1),
                orders_measured=len(ids) + len(paced),
            )
    finally:
        shop.stop()
    return result


SERVICES_DIR = Path(__file__).resolve().parents[1] / ".services"


def server_cpu_seconds() -> dict[str, float]:
    """CPU seconds used so far by the servers ``scripts/services`` runs here: Kafka and
    NATS (one process each) and PostgreSQL (the postmaster and its backends)."""
    tick = os.sysconf("SC_CLK_TCK")
    stats: dict[int, list[str]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                stats[int(entry.name)] = (entry / "stat").read_text().rsplit(")", 1)[1].split()
    roots = {name: _pid(SERVICES_DIR / name / "pid") for name in ("kafka", "nats")} | {
        "postgres": _pid(SERVICES_DIR / "postgres" / "data" / "postmaster.pid")
    }
    used: dict[str, float] = {}
    for name, root in roots.items():
        if root in stats:
            family = [root, *(pid for pid, f in stats.items() if int(f[1]) == root)]  # f[1]: ppid
            # utime + stime of the live ones, and cutime + cstime of the root: the CPU of
            # children it has reaped (PostgreSQL's backends that ended between two
            # readings), without which the sum could fall and a difference go negative.
            live = sum(int(stats[p][11]) + int(stats[p][12]) for p in family)
            used[name] = (live + int(stats[root][13]) + int(stats[root][14])) / tick
    return used


def _pid(path: Path) -> int | None:
    with contextlib.suppress(OSError, ValueError, IndexError):
        return int(path.read_text().split()[0])
    return None


def machine_cpu() -> tuple[int, int, int]:
    """Busy and total jiffies of all CPUs, and the number of CPUs, from /proc/stat."""
    lines = Path("/proc/stat").read_text().splitlines()
    values = [int(v) for v in lines[0].split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    return (
        sum(values) - idle,
        sum(values),
        sum(1 for x in lines if x[:3] == "cpu" and x[3:4].isdigit()),
    )


def machine_busy(before: tuple[int, int, int], after: tuple[int, int, int]) -> tuple[float, int]:
    """The share of all CPUs' time spent busy between two :func:`machine_cpu` readings."""
    return (after[0] - before[0]) / max(1, after[1] - before[1]), after[2]


if __name__ == "__main__":
    print(run())
