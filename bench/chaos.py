"""Proof under faults: the shop on a three-node cluster while a seeded schedule of faults
runs, then a verdict from the broker and the database (``make chaos``).

    python -m bench.chaos --engine nats --orders 10000 --rate 25 --seed 7

1. A fresh cluster (``scripts/services``' ``nats-cluster`` or ``kafka-cluster``: data
   wiped, three nodes, 3 replicas), a PostgreSQL of the run's own
   (:class:`tidings.testing.clusters.ScratchPostgres`), and Toxiproxy proxies: one per
   service to PostgreSQL and, on NATS, one per service and node (:mod:`bench.chaos_faults`
   says why Kafka's links are not proxied).
2. The shop, two processes per service, each reaching its links through its proxies.
3. Orders posted at a steady ``--rate`` (open loop, round-robin over both order
   processes; an order process that refuses the connection is skipped for the other),
   while the faults of :func:`bench.chaos_faults.schedule` run; the schedule and seed are
   printed first.
4. Once every accepted order settled (or ``--settle`` seconds passed), the checks of
   :mod:`bench.chaos_checks`; the results go to ``bench/results/chaos.json`` under the
   engine's name (accepted, settled, lost, double_charged, faults by kind, longest
   stall, p99 during faults against without), and the exit status says whether the
   run held.

An order is *accepted* when POST /orders answered 202 with its id: the client knows of it,
so it must settle. One the order service took but whose answer was lost (its process
killed mid-request) is not counted as accepted, but it is in the state and is checked
with the rest (stock, payments).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp

from bench.chaos_checks import fault_effects, longest_stall, timings, verify, wait_settled
from bench.chaos_faults import KINDS, SERVICES, Fault, Rig, run_schedule, schedule
from bench.scaling import EVENTS
from shop.demo import Shop, order_mix
from shop.invariants import read_stock
from tidings.cli.common import opened_transport
from tidings.messages import published_topic
from tidings.testing import free_port
from tidings.testing.clusters import NODES, Cluster, ScratchPostgres
from tidings.testing.toxiproxy import Toxiproxy
from tidings.transport.contract import DEFAULT_PARTITIONS
from tidings.transport.tools import create_topic_settling

RESULTS = Path(__file__).parent / "results" / "chaos.json"
STOCK = "widget=1000000,gadget=1000000,gizmo=1000000,doohickey=40"


async def post_orders(
    bases: list[str], bodies: list[dict[str, Any]], rate: float
) -> tuple[list[str], Counter[str]]:
    """POST each body at ``rate`` per second; the ids accepted and why the others were not."""
    accepted: list[str] = []
    refused: Counter[str] = Counter()
    limit = asyncio.Semaphore(256)
    # As many connections as requests in flight: a request waiting for a pooled connection
    # would spend its timeout queued in the client, not in the shop.
    timeout = aiohttp.ClientTimeout(total=60)
    connector = aiohttp.TCPConnector(limit=256)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as client:
        start = time.monotonic()

        async def post(i: int, body: dict[str, Any]) -> None:
            await asyncio.sleep(max(0.0, start + i / rate - time.monotonic()))
            async with limit:
                for attempt in range(len(bases) * 3):
                    base = bases[(i + attempt) % len(bases)]
                    try:
                        async with client.post(f"{base}/orders", json=body) as response:
                            if response.status < 300:
                                accepted.append((await response.json())["order_id"])
                            else:
                                refused[f"HTTP {response.status}"] += 1
                            return
                    except aiohttp.ClientConnectorError:
                        await asyncio.sleep(0.2)  # not taken: safe to send to the other one
                    except (aiohttp.ClientError, TimeoutError) as exc:
                        refused[type(exc).__name__] += 1  # maybe taken: never sent twice
                        return
                refused["no order process reachable"] += 1

        await asyncio.gather(*(post(i, b) for i, b in enumerate(bodies)))
    return accepted, refused


def run(
    engine: str = "nats",
    orders: int = 10_000,
    rate: float = 25.0,
    seed: int = 7,
    repeat: int = 2,
    settle: float = 600.0,
    results: Path | None = RESULTS,
    name: str | None = None,
) -> dict[str, Any]:
    """One chaos run; its result (also written to ``results`` under ``name``, by default
    the engine's)."""
    cluster = Cluster(f"{engine}-cluster")
    span = orders / rate
    faults = schedule(seed, span, repeat)
    print(f"chaos: {engine}, {orders} orders at {rate}/s ({span:.0f}s), seed {seed}", flush=True)
    print("schedule:\n" + "\n".join(f.line() for f in faults), flush=True)
    workdir = Path(tempfile.mkdtemp(prefix="tidings-chaos-"))
    cluster.fresh()
    asyncio.run(create_topics(cluster.url))
    with contextlib.ExitStack() as stack:
        postgres = ScratchPostgres()
        stack.callback(postgres.close)
        proxies = Toxiproxy()
        stack.callback(proxies.close)
        shop = Shop(workdir, cluster.url, postgres.url, free_port(), str(seed), replicas=2)
        pg_proxies, broker_proxies = _wire(shop, cluster, postgres, proxies, seed)
        shop.env.update(SHOP_STOCK=STOCK, SHOP_PAYMENT_FAILURE_RATE="0.02")
        stack.callback(shop.stop)
        shop.start()
        shop.wait_ready(120)
        rig = Rig(shop, cluster, proxies, postgres, pg_proxies, broker_proxies)
        before = asyncio.run(read_stock(postgres.url))
        t0 = time.time()
        stop = threading.Event()
        chaos = threading.Thread(
            target=run_schedule, args=(rig, faults, lambda: time.time() - t0, stop), daemon=True
        )
        chaos.start()
        loads: list[float] = []
        sampler = threading.Thread(target=_sample_load, args=(loads, stop), daemon=True)
        sampler.start()
        accepted, refused = asyncio.run(post_orders(shop.bases, order_mix(orders, str(seed)), rate))
        placed_for = time.time() - t0
        chaos.join()  # faults scheduled late in the span still run, while orders settle
        print(f"chaos: {len(accepted)} accepted in {placed_for:.0f}s; settling", flush=True)
        final = asyncio.run(wait_settled(postgres.url, accepted, settle))
        after = asyncio.run(read_stock(postgres.url))
        verdict = verify(cluster.url, postgres.url, accepted, before, after, final)
        times = asyncio.run(timings(cluster.url))
        stop.set()
    done = [f.__dict__ | {} for f in faults]
    result = {
        "engine": engine, "cluster_nodes": len(NODES), "replicas": 3,
        "seed": seed, "orders": orders, "rate_per_s": rate, "processes_per_service": 2,
        **{k: verdict[k] for k in ("accepted", "settled", "lost", "double_charged")},
        "refused": dict(refused),
        "taken_unanswered": verdict["orders_in_state"] - verdict["accepted"],
        "faults_by_kind": dict(Counter(f.kind for f in faults if f.started is not None)),
        "longest_stall_s": round(longest_stall(list(times.values()), t0, float("inf")), 1),
        **fault_effects(done, times, t0),
        "faults": done,
        **{k: v for k, v in verdict.items() if k not in ("accepted", "settled", "lost",
                                                          "double_charged")},
        "t0": t0,
        "workdir": str(workdir),
        "load_average_1m": _load_summary(loads),
        "cpus": os.cpu_count(),
    }  # fmt: skip
    result["ok"] = held(result)
    if results is not None:
        _write(results, name or engine, result)
    return result


async def create_topics(broker: str, within: float = 120) -> None:
    """Create the shop's topics on a fresh cluster before the services start, so that the
    run's clock starts on a settled cluster (the services would wait too, for
    ``TOPIC_SETTLE_SECONDS``; this waits longer)."""
    async with opened_transport(broker) as transport:
        for topic in sorted({published_topic(event) for event in EVENTS}):
            await create_topic_settling(transport, topic, DEFAULT_PARTITIONS, within=within)


def refigure(name: str, results: Path = RESULTS) -> dict[str, Any]:
    """Work out the timings of the stored run ``name`` again from its cluster's
    ``shop.orders`` (the cluster must still hold that run's data: the next run wipes it),
    e.g. after a change to :func:`bench.chaos_checks.fault_effects`.

    A run stored without its start (``t0``, recorded since the own stalls were added) gets
    the start with which its stored recoveries and stalls come out again (the first order
    is placed seconds after the start on a loaded machine, and the fault windows are
    relative to the start); ``RuntimeError`` if no start in the 20 s before the first
    order does."""
    stored = json.loads(results.read_text())
    result = stored[name]
    times = asyncio.run(timings(Cluster(f"{result['engine']}-cluster").url))
    if not times:
        raise SystemExit(
            f"chaos: no orders in the {result['engine']} cluster's shop.orders: "
            "its data is not that of the run (start it, do not make it fresh)"
        )
    t0 = result.get("t0") or _start_matching(result["faults"], times)
    result["t0"] = t0
    result.update(fault_effects(result["faults"], times, t0))
    result["longest_stall_s"] = round(longest_stall(list(times.values()), t0, float("inf")), 1)
    _write(results, name, result)
    return result


def _start_matching(faults: list[dict[str, Any]], times: dict[str, tuple[float, float]]) -> float:
    first = min(placed for placed, _ in times.values())
    best = (float("inf"), first)
    for step in range(401):  # 0 to 20 s before the first order, by 50 ms
        probe = [dict(f) for f in faults]
        fault_effects(probe, times, first - step * 0.05)
        error = sum(
            abs(p["recovery_s"] - f["recovery_s"]) + abs(p["stall_s"] - f["stall_s"])
            for p, f in zip(probe, faults, strict=True)
            if f.get("recovery_s") is not None
        )
        best = min(best, (error, first - step * 0.05))
    if best[0] > 0.1 * len(faults):
        raise RuntimeError(
            f"no start within 20 s before the first order gives the stored timings again "
            f"(closest differs by {best[0]:.1f} s in all): is this the run's cluster data?"
        )
    return best[1]


def _sample_load(loads: list[float], stop: threading.Event, every: float = 10.0) -> None:
    """The machine's 1-minute load average every ``every`` seconds until ``stop``: a run's
    times mean little without how busy the cores were."""
    while not stop.wait(every):
        loads.append(os.getloadavg()[0])


def _load_summary(loads: list[float]) -> dict[str, float]:
    if not loads:
        return {}
    return {"min": min(loads), "mean": round(sum(loads) / len(loads), 1), "max": max(loads)}


def held(result: dict[str, Any]) -> bool:
    """Whether the run proved what it must: nothing lost or charged twice, every kind of
    fault injected (and healed), invariants true, no lag, no dead letter."""
    return (
        result["lost"] == 0
        and result["double_charged"] == 0
        and result["settled"] == result["accepted"] > 0
        and set(result["faults_by_kind"]) == set(KINDS)
        and not any("FAILED" in f["target"] for f in result["faults"])
        and result["invariants_hold"]
        and not any(result["lag"].values())
        and not result["dead_letters"]
    )


def _wire(
    shop: Shop, cluster: Cluster, postgres: ScratchPostgres, proxies: Toxiproxy, seed: int
) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """Proxies for each service's links; every process of the service gets their URLs."""
    pg_proxies: dict[str, list[str]] = {}
    broker_proxies: dict[str, list[str]] = {}
    run = f"chaos-{seed}-{uuid.uuid4().hex[:6]}"  # names of this run's alone
    for service in SERVICES:
        name = f"{run}-{service}-pg"
        port = proxies.create(name, f"127.0.0.1:{postgres.port}")
        pg_proxies[service] = [name]
        store = postgres.url.replace(f":{postgres.port}/", f":{port}/")
        broker = cluster.url
        if cluster.engine == "nats":
            hosts = []
            for node in NODES:
                name = f"{run}-{service}-nats{node}"
                hosts.append(f"127.0.0.1:{proxies.create(name, cluster.address(node))}")
                broker_proxies.setdefault(service, []).append(name)
            broker = f"nats://{','.join(hosts)}?replicas=3"
        for process in shop.targets:
            if process.split("-")[0] == service:
                shop.urls[process] = (broker, store)
    return pg_proxies, broker_proxies


def _write(path: Path, engine: str, result: dict[str, Any]) -> None:
    existing: dict[str, Any] = {}
    with contextlib.suppress(OSError, ValueError):
        existing = json.loads(path.read_text())
    existing[engine] = result
    path.write_text(json.dumps(existing, indent=2, default=str) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.chaos", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--engine", choices=("nats", "kafka"), default="nats")
    parser.add_argument("--orders", type=int, default=10_000)
    parser.add_argument("--rate", type=float, default=25.0, help="orders per second")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--repeat", type=int, default=2, help="times each kind of fault is injected"
    )
    parser.add_argument(
        "--settle", type=float, default=600.0, help="seconds to wait for the orders"
    )
    parser.add_argument("--name", help="key of the result in chaos.json (default: the engine)")
    parser.add_argument(
        "--refigure", metavar="NAME",
        help="work out the timings of stored run NAME again from its cluster; no new run",
    )  # fmt: skip
    args = parser.parse_args(argv)
    if args.refigure:
        result = refigure(args.refigure)
        for fault in result["faults"]:
            print(f"  {fault['kind']:<16} own stall {fault['own_stall_s']}s  {fault['target']}")
        return 0
    result = run(
        args.engine, args.orders, args.rate, args.seed, args.repeat, args.settle, name=args.name
    )
    summary = {k: result[k] for k in ("accepted", "settled", "lost", "double_charged",
                                      "faults_by_kind", "longest_stall_s", "ok")}  # fmt: skip
    print(json.dumps(summary, indent=2))
    for fault in result["faults"]:
        print(f"  {fault['kind']:<16} stall {fault.get('stall_s')}s recovery "
              f"{fault.get('recovery_s')}s  {fault['target']}")  # fmt: skip
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())


__all__ = ["Fault", "main", "run"]
