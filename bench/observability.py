"""The per-event cost of observability: shop throughput with tracing + metrics on vs off.

The three shop services run as runtimes in this process, on the embedded SQLite log and
SQLite stores (the default deployment, minus HTTP), and work through a backlog of
``--orders`` orders each round (see :func:`one_round`); every order is five events
(OrderPlaced, InventoryReserved, PaymentProcessed, billing's ledger AccountCharged,
OrderCompleted), five handlings that do something and the rest skipped, and five
publishes, plus a CreditLimitSet for each of the round's 50 customers' first order. Each round runs the
modes back to back, in rotating order, so that drift (page cache, CPU frequency, a noisy
neighbour) hits them alike.

* off: the runtime's default observer (no spans, no metrics, no log context);
* on:  what ``tidings run --traces otlp:URL --metrics-port 0`` builds: a consumer span per
  handling and a producer span per publish (always sampled, sent over OTLP/HTTP to a
  stand-in collector in another process, which counts them), Prometheus counters,
  histogram and lag sampling, and the log context on every handling;
* sampled: the same with ``OTEL_TRACES_SAMPLER=parentbased_traceidratio`` at 10%, as one
  would run a busy production service.

    python -m bench.observability [--orders 400] [--rounds 5]

Prints the ratio (throughput on / throughput off; 1.0 = free: the median of the rounds'
ratios) and writes it with the raw numbers to ``bench/results/observability.json`` under
``overhead_ratio``; ``cpu_ratio`` is the same from CPU time per order (all threads), which
other load on the machine disturbs less.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from tidings.observability import TelemetryConfig, configure
from tidings.runtime import Observer, Runtime
from tidings.store import make_store
from tidings.transport import make_transport

RESULTS = Path(__file__).with_name("results") / "observability.json"
CUSTOMERS = 50  # distinct customers the orders of a round cycle through

# A stand-in OTLP/HTTP collector, in its own process (as a real one would be): it counts
# the spans it receives and answers GET with the count.
SINK = r"""
import json, sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
count = 0
class H(BaseHTTPRequestHandler):
    def do_POST(self):
        global count
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        count += sum(len(ss["spans"]) for rs in body["resourceSpans"] for ss in rs["scopeSpans"])
        self.send_response(200); self.end_headers(); self.wfile.write(b"{}")
    def do_GET(self):
        self.send_response(200); self.end_headers(); self.wfile.write(str(count).encode())
    def log_message(self, *a): pass
server = ThreadingHTTPServer(("127.0.0.1", 0), H)
print(server.server_port, flush=True)
server.serve_forever()
"""


class Sink:
    def __init__(self) -> None:
        self.proc = subprocess.Popen([sys.executable, "-c", SINK], stdout=subprocess.PIPE)
        assert self.proc.stdout is not None
        self.url = f"http://127.0.0.1:{int(self.proc.stdout.readline())}"

    def spans(self) -> int:
        with urllib.request.urlopen(self.url) as response:
            return int(response.read())

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait()


async def one_round(
    orders: int, observed: bool, workdir: Path, traces: str = "off", sample: float | None = None
) -> tuple[float, float]:
    """Orders per second through inventory, billing and order, from a backlog.

    The orders are placed first (the order service's unit of work and outbox), with
    inventory and billing joined but not yet consuming; the clock runs from when they
    start consuming until the order service has published every OrderCompleted. So the
    services work flat out on full batches, and what is measured is CPU per event, not
    polling latency (which would hide any overhead).
    """
    from shop import billing, inventory, order
    from shop.events import OrderLine, PlaceOrder

    runtimes: list[Runtime] = []
    observers: list[Observer] = []
    for module in (order, inventory, billing):
        service = module.service
        transport = make_transport(f"sqlite:///{workdir}/log.db")
        store = make_store(f"sqlite:///{workdir}/{{service}}.db", service.name)
        await transport.connect()
        await store.connect()
        observer: Observer = Observer()
        if observed:
            config = TelemetryConfig(traces=traces, metrics_port=0)
            sampler = (
                {
                    "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
                    "OTEL_TRACES_SAMPLER_ARG": str(sample),
                }
                if sample is not None
                else {}
            )
            os.environ.update(sampler)  # the SDK reads its sampler from the environment
            try:
                observer = configure(service.name, config, broker_url="sqlite:///")
            finally:
                for name in sampler:
                    del os.environ[name]
        observers.append(observer)
        runtimes.append(Runtime(service, transport, store, observer=observer))
    order_rt, consumers = runtimes[0], runtimes[1:]
    for runtime in consumers:
        await runtime.start(background=False)
    await order_rt.start()
    watchers = [asyncio.create_task(o.run(r)) for o, r in zip(observers, runtimes, strict=True)]
    line = OrderLine(sku="widget", quantity=1)
    for i in range(orders):
        async with order_rt.unit_of_work() as ctx:
            await order.place_order(PlaceOrder(customer_id=f"c{i % CUSTOMERS}", lines=[line]), ctx)
    while order_rt.stats.published < orders:  # noqa: ASYNC110 - polling a counter
        await asyncio.sleep(0.002)

    stopping = asyncio.Event()

    async def consume(runtime: Runtime) -> None:
        while not stopping.is_set():
            await runtime.poll(timeout=0.05)
            await asyncio.sleep(0)  # let the relays and the other consumer run between batches

    started, cpu_started = time.perf_counter(), time.process_time()
    tasks = [asyncio.create_task(consume(r)) for r in consumers]
    tasks += [asyncio.create_task(r.relay.run()) for r in consumers]
    # Each order ends with the order service publishing OrderCompleted (its 2nd event).
    while order_rt.stats.published < 2 * orders:  # noqa: ASYNC110 - polling a counter
        await asyncio.sleep(0.002)
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu_started

    stopping.set()
    await asyncio.gather(*tasks[:2])
    for task in [*tasks[2:], *watchers]:
        task.cancel()
    await asyncio.gather(*tasks[2:], *watchers, return_exceptions=True)
    for runtime in runtimes:
        await runtime.stop()
        await runtime.store.close()
        await runtime.transport.close()
    for observer in observers:
        observer.close()
    return orders / elapsed, cpu / orders


MODES = ("off", "on", "sampled")


def run(orders: int = 400, rounds: int = 5) -> dict[str, Any]:
    os.environ.update(
        SHOP_STOCK="widget=100000000", SHOP_PAYMENT_FAILURE_RATE="0", SHOP_CREDIT_LIMITS=""
    )
    rates: dict[str, list[float]] = {m: [] for m in MODES}
    cpus: dict[str, list[float]] = {m: [] for m in MODES}
    sink = Sink()
    traces = f"otlp:{sink.url}"
    spans = 0
    try:
        with tempfile.TemporaryDirectory(prefix="tidings-bench-obs-") as tmp:
            asyncio.run(one_round(50, False, Path(tmp, "warmup")))  # imports, files, caches
            asyncio.run(one_round(50, True, Path(tmp, "warmup-on"), traces))
            for r in range(rounds):
                for mode in MODES[r % 3 :] + MODES[: r % 3]:  # rotate who goes first
                    workdir = Path(tmp, f"{mode}-{r}")
                    workdir.mkdir()
                    before = sink.spans()
                    rate, cpu = asyncio.run(
                        one_round(
                            orders,
                            mode != "off",
                            workdir,
                            traces,
                            0.1 if mode == "sampled" else None,
                        )
                    )
                    if mode == "on":
                        spans += sink.spans() - before
                    rates[mode].append(rate)
                    cpus[mode].append(cpu)
    finally:
        sink.stop()

    # The modes of a round ran back to back, so a round's ratio is fair even when the
    # machine's load drifts between rounds; the median round is the result.
    def ratio(mode: str, values: dict[str, list[float]], inverse: bool = False) -> float:
        pairs = zip(values[mode], values["off"], strict=True)
        return round(statistics.median((off / x) if inverse else (x / off) for x, off in pairs), 3)

    return {
        "overhead_ratio": ratio("on", rates),
        "cpu_ratio": ratio("on", cpus, inverse=True),
        "overhead_ratio_sampled_10pct": ratio("sampled", rates),
        "orders_per_s": {m: round(statistics.median(v), 1) for m, v in rates.items()},
        "cpu_us_per_order": {m: round(statistics.median(v) * 1e6, 1) for m, v in cpus.items()},
        "round_ratios": [
            round(on / off, 3) for on, off in zip(rates["on"], rates["off"], strict=True)
        ],
        "events_per_order": 5,
        "orders_per_round": orders,
        "spans_exported": spans,
        # 5 producer spans (one per event) + 5 consumer spans (inventory: OrderPlaced;
        # billing: InventoryReserved; order: InventoryReserved, PaymentProcessed and its own
        # OrderCompleted), and a producer span for each customer's CreditLimitSet; records
        # a service only skips (no handler for its type) get no span.
        "spans_expected": rounds * (orders * (5 + 5) + min(orders, CUSTOMERS)),
        "setup": "shop services in one process, sqlite log + sqlite stores, no HTTP, from a "
        "backlog; on = spans (always sampled, OTLP/HTTP JSON to a collector process) "
        "+ Prometheus metrics + log context; sampled = the same with "
        "parentbased_traceidratio 0.1",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--orders", type=int, default=400)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    result = run(args.orders, args.rounds)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    print(
        f"overhead_ratio {result['overhead_ratio']:.3f} (throughput with tracing + metrics "
        f"/ without; target >= 0.85); with 10% sampling "
        f"{result['overhead_ratio_sampled_10pct']:.3f}"
    )


if __name__ == "__main__":
    main()
