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
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from bench.stats import percentile
from shop.demo import SERVICES, Shop
from tidings import codec
from tidings.cli.common import opened_store, opened_transport
from tidings.host import load_service
from tidings.runtime.projector import Projector
from tidings.testing import free_port
from tidings.testing.postgres import fresh_schema
from tidings.testing.topics import witness
from tidings.transport import Record, Transport

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


async def _ends(broker: str) -> dict[int, int]:
    """The end offset of each partition of ``shop.orders`` ({} where the log is not
    readable by offset): where to start reading the orders a phase is about to post."""
    async with opened_transport(broker) as transport:
        if not transport.capabilities.offsets:
            return {}
        ends = await transport.end_offsets(["shop.orders"])
        return {partition: end for (_, partition), end in ends.items()}


async def _completions(
    broker: str,
    ids: set[str],
    timeout: float,
    kept: str | None = None,
    start: dict[int, int] | None = None,
) -> dict[str, tuple[float, float]]:
    """order id -> (placed time, completed time), waiting until all are completed.

    The benchmark measures the happy path (stock aplenty, no payment declined), so a
    cancelled order means the shop did not run as the benchmark set it up: an error.
    ``shop.orders`` is read from ``start`` (:func:`_ends` before the orders were posted;
    by default from the beginning, which on a long-lived broker is a replay of every
    earlier run that competes with the shop for the CPU). On a broker without history
    the events come from ``kept``, a witness group made before the orders
    (:func:`tidings.testing.topics.witness`).
    """
    deadline = time.monotonic() + timeout
    placed: dict[str, float] = {}
    done: dict[str, float] = {}
    cancelled: dict[str, str] = {}
    positions: dict[int, int] = dict(start or {})

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
    asyncio.run(_projections_from_now(broker, store))
    shop.start()
    result: dict[str, Any] = {}
    try:
        shop.wait_ready()
        kept = asyncio.run(witness(broker, "shop.orders"))  # None where the log is readable
        asyncio.run(_post_all(shop.bases, 50, 8, None))  # warm up connections, caches, files
        asyncio.run(_settle(broker, store, 120))
        start = asyncio.run(_ends(broker))
        cpu_before, machine_before = shop.cpu_seconds(), machine_cpu()
        servers_before = server_cpu_seconds()
        started = time.time()
        ids = asyncio.run(_post_all(shop.bases, orders, concurrency, None))
        times = asyncio.run(_completions(broker, set(ids), 300, kept, start))
        completed = max(done for _, done in times.values())
        # Every order completed; the services may still be behind on the events that do
        # not end an order (the order view's, the sales report's): the throughput counts
        # until they have caught up too, and the latency phase starts from a settled shop.
        settled = asyncio.run(_settle(broker, store, 300))
        cpu, servers = shop.cpu_seconds(), server_cpu_seconds()
        busy, cores = machine_busy(machine_before, machine_cpu())
        result.update(
            orders_per_s=round(len(ids) / (settled - started), 1),
            orders_per_s_to_last_completion=round(len(ids) / (completed - started), 1),
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
            start = asyncio.run(_ends(broker))
            paced = asyncio.run(_post_all(shop.bases, int(rate * seconds), concurrency * 4, rate))
            lat = [
                (done - placed) * 1000
                for placed, done in asyncio.run(
                    _completions(broker, set(paced), 300, kept, start)
                ).values()
            ]
            result.update(
                order_latency_rate_per_s=rate,
                order_latency_ms_p50=round(percentile(lat, 50), 1),
                order_latency_ms_p99=round(percentile(lat, 99), 1),
                orders_measured=len(ids) + len(paced),
            )
    finally:
        shop.stop()
    return result


async def _settle(broker: str, store: str, timeout: float) -> float:
    """Wait until the shop's services have handled every record: their groups' lag (queue
    depths on a broker of queues) and their projections' lag are 0; the time they were."""
    deadline = time.monotonic() + timeout
    services = [load_service(f"shop.{name}:service") for name in SERVICES]
    async with opened_transport(broker) as transport, contextlib.AsyncExitStack() as stack:
        projectors = await _projectors(transport, store, stack)

        async def backlog() -> int:
            behind = 0
            for service in services:  # its group is named after it
                if not transport.capabilities.offsets:
                    behind += sum((await transport.queued(service.name)).values())
                    continue
                # Only the topics it reads now (a group may hold offsets of others it read
                # in an earlier version, whose lag nothing will ever work off).
                committed = await transport.committed(service.name)
                ends = await transport.end_offsets(service.topics())
                behind += sum(max(0, end - committed.get(tp, end)) for tp, end in ends.items())
            return behind + sum([(await p.status()).lag for p in projectors])

        while True:  # polled: the shop's progress is in the brokers and stores
            behind = await backlog()
            if not behind or time.monotonic() >= deadline:
                break
            await asyncio.sleep(0.2)
    if behind:
        raise RuntimeError(f"the shop is still {behind} record(s) behind after {timeout:.0f}s")
    return time.time()


async def _projections_from_now(broker: str, store: str) -> None:
    """Start the shop's projections at the log's current end. Each run has a fresh store,
    and on a broker that keeps earlier runs' events (every one but a fresh SQLite log) a
    projection would otherwise replay them all while the run is measured: 400,000 events
    on a long-lived test broker, and in ``make bench`` each run more than the last."""
    async with opened_transport(broker) as transport, contextlib.AsyncExitStack() as stack:
        for projector in await _projectors(transport, store, stack):
            await projector.start_at_end()


async def _projectors(
    transport: Transport, store: str, stack: contextlib.AsyncExitStack
) -> list[Projector]:
    """A projector for each projection of the shop's services, on stores ``stack`` closes;
    none on a broker without history (projections do not run on queues)."""
    if not transport.capabilities.history:
        return []
    projectors = []
    for name in SERVICES:
        service = load_service(f"shop.{name}:service")
        if service.projections:
            opened = await stack.enter_async_context(opened_store(store, service.name))
            projectors += [Projector(p, transport, opened) for p in service.projections.values()]
    return projectors


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
