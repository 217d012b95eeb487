"""The shop's demo (``tidings demo``): three processes, a stream of orders, and a verdict.

It starts order (with its HTTP API), inventory and billing as separate ``tidings run``
processes on one broker, places orders over HTTP (some made to fail payment, some to run
out of stock), waits until every order settles, prints what happened, and checks the
shop's invariants itself (:mod:`shop.invariants`).

With ``--dashboard`` it also serves the web dashboard, opens it, places one order that
billing holds for fraud review (a dead letter to look at and replay), and keeps the shop
running until Ctrl-C. ``--traces`` and ``--metrics`` pass tracing and metrics on to the
service processes; their logs are JSON lines in the run's directory.

:func:`main` is the entry point ``tidings demo`` calls (see :mod:`tidings.demo`);
:class:`Shop` and the order helpers serve the end-to-end tests and benchmarks too.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
from rich.progress import Progress

from shop.events import PaymentProcessed
from shop.invariants import console, payments_in_log, read_stock, report
from tidings.demo import DemoOptions, relays
from tidings.testing import free_port
from tidings.testing.processes import ServiceProcesses, start_dashboard, stop_process
from tidings.testing.topics import witness

SERVICES = ("order", "inventory", "billing")
SAGA_MODES = ("choreography", "orchestration")
BROKE_CUSTOMER = "c-broke"
WATCHED_CUSTOMER = "c-watched"


class Shop(ServiceProcesses):
    """The service processes of one run; the order service's HTTP API on ``port``.

    With ``replicas`` above 1 each service runs that many processes in its consumer
    group (named ``order``, ``order-2``, ...), and each order process serves the API on
    its own port: ``bases`` lists them, ``base`` is the first.

    ``BROKE_CUSTOMER`` has no credit, and the payment simulator (seeded with ``seed``)
    declines 8% of payments unless ``SHOP_PAYMENT_FAILURE_RATE`` says otherwise; change
    ``env`` before :meth:`start` to steer the services further (:mod:`shop.settings`).

    ``saga="orchestration"`` runs the order saga as a process manager: a fourth process,
    ``orchestrator`` (:mod:`shop.orchestrator`), and every service with
    ``SHOP_SAGA=orchestration``.
    """

    def __init__(
        self,
        workdir: Path,
        broker: str,
        store: str,
        port: int,
        seed: str,
        replicas: int = 1,
        saga: str = "choreography",
    ) -> None:
        if saga not in SAGA_MODES:
            raise ValueError(f"--saga {saga!r}: expected one of {', '.join(SAGA_MODES)}")
        services = SERVICES + (("orchestrator",) if saga == "orchestration" else ())
        names = {
            (name if i == 1 else f"{name}-{i}"): name
            for name in services
            for i in range(1, replicas + 1)
        }
        http = {n: port if n == "order" else free_port() for n, s in names.items() if s == "order"}
        super().__init__(
            workdir, broker, store, {n: f"shop.{s}:service" for n, s in names.items()}, http=http
        )
        self.port = port
        self.saga = saga
        self.bases = [f"http://127.0.0.1:{p}" for p in http.values()]
        self.base = self.bases[0]
        self.env.update(
            SHOP_CREDIT_LIMITS=f"{BROKE_CUSTOMER}=0",
            SHOP_PAYMENT_FAILURE_RATE=self.env.get("SHOP_PAYMENT_FAILURE_RATE", "0.08"),
            SHOP_SEED=seed,
            SHOP_SAGA=saga,
        )


def order_mix(n: int, seed: str) -> list[dict[str, Any]]:
    """N orders: mostly fine, every 10th from a customer with no credit (payment fails),
    and enough doohickeys wanted that the 5 in stock run out (inventory rejects)."""
    rng = random.Random(seed)
    orders = []
    for i in range(n):
        customer = BROKE_CUSTOMER if i % 10 == 3 else f"c{rng.randint(1, 8):02d}"
        lines = [{"sku": rng.choice(["widget", "gadget", "gizmo"]), "quantity": rng.randint(1, 3)}]
        if i % 6 == 1:
            lines.append({"sku": "doohickey", "quantity": 2})
        orders.append({"customer_id": customer, "lines": lines})
    return orders


async def place_orders(base: str, orders: list[dict[str, Any]], concurrency: int) -> list[str]:
    """POST each order to the order service at ``base``; their ids."""
    ids: list[str] = []
    limit = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(base_url=base, timeout=30) as client:
        with Progress(console=console, transient=True) as progress:
            task = progress.add_task("placing orders", total=len(orders))

            async def place(body: dict[str, Any]) -> None:
                async with limit:
                    response = await client.post("/orders", json=body)
                    response.raise_for_status()
                    ids.append(response.json()["order_id"])
                    progress.advance(task)

            await asyncio.gather(*(place(o) for o in orders))
    return ids


async def wait_settled(base: str, ids: list[str], timeout: float) -> dict[str, dict[str, Any]]:
    """Each order as the order service returns it, once it is Completed or Cancelled (or
    as it is after ``timeout`` seconds)."""
    final: dict[str, dict[str, Any]] = {}
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient(base_url=base, timeout=30) as client:
        with Progress(console=console, transient=True) as progress:
            task = progress.add_task("waiting for orders to settle", total=len(ids))
            while len(final) < len(ids) and time.monotonic() < deadline:
                for order_id in [i for i in ids if i not in final]:
                    order = (await client.get(f"/orders/{order_id}")).json()
                    if order["status"] in ("COMPLETED", "CANCELLED"):
                        final[order_id] = order
                        progress.advance(task)
                if len(final) < len(ids):
                    await asyncio.sleep(0.2)
            for order_id in ids:
                if order_id not in final:
                    final[order_id] = (await client.get(f"/orders/{order_id}")).json()
    return final


def main(options: DemoOptions) -> bool:
    """Run the shop, place ``options.orders`` orders, report; True if every invariant held."""
    workdir, broker, store = options.workdir, options.broker, options.store
    console.print(
        f"[bold]Tidings demo[/]: {options.orders} orders, saga by {options.saga}, "
        f"broker {broker}, store {store}"
    )
    console.print(f"logs and data in {workdir}")
    shop = Shop(
        workdir, broker, store, options.port or free_port(), options.seed, saga=options.saga
    )
    try:
        chosen = relays(options.relay, shop.targets)
    except ValueError as exc:
        console.print(f"[red]error:[/] {exc}", highlight=False)
        return False
    for name, relay in chosen.items():
        if relay != "polling":
            shop.args[name] = ["--relay", relay]
            console.print(
                f"{name}: outbox published by {relay} (its connector stays registered: "
                "`tidings cdc status`, `tidings cdc drop NAME`)",
                highlight=False,
            )
    watchlist = workdir / "fraud-watchlist.txt"
    if options.dashboard:
        watchlist.write_text(
            f"# customers whose payments billing holds for review\n{WATCHED_CUSTOMER}\n"
        )
        shop.env["SHOP_FRAUD_HOLD_FILE"] = str(watchlist.resolve())
    if options.traces:
        shop.env["TIDINGS_TRACES"] = options.traces
    if options.metrics:
        shop.metrics_ports = {name: free_port() for name in shop.targets}
        for name, metrics_port in shop.metrics_ports.items():
            console.print(
                f"{name}: metrics on http://127.0.0.1:{metrics_port}/metrics", highlight=False
            )
    shop.start()
    board: subprocess.Popen[bytes] | None = None
    try:
        if options.dashboard:
            board = _open_dashboard(shop, options.dashboard_port, options.open_browser)
        shop.wait_ready()
        # A broker without history (RabbitMQ) keeps the payments for a group made now.
        paid = PaymentProcessed.message_info.topic
        kept = asyncio.run(witness(broker, paid)) if paid else None
        stock_before = asyncio.run(read_stock(store))
        started = time.monotonic()
        ids = asyncio.run(
            place_orders(shop.base, order_mix(options.orders, options.seed), options.concurrency)
        )
        final = asyncio.run(wait_settled(shop.base, ids, options.timeout))
        elapsed = time.monotonic() - started
        stock_after = asyncio.run(read_stock(store))
        payments = asyncio.run(payments_in_log(broker, kept))
        ok = report(final, stock_before, stock_after, payments, elapsed)
        _print_trace_hints(final, broker)
        if options.dashboard:
            _hold_one_order(shop.base, watchlist)
            console.print("The shop keeps running for the dashboard; Ctrl-C stops it.")
            with contextlib.suppress(KeyboardInterrupt):
                while shop.running():
                    time.sleep(0.5)
    finally:
        if board is not None:
            stop_process(board)
        shop.stop()
    return ok


def _open_dashboard(shop: Shop, port: int, open_browser: bool) -> subprocess.Popen[bytes]:
    board = start_dashboard(
        shop.workdir,
        shop.broker,
        port,
        services=sorted(set(shop.targets.values())),
        store=shop.store,
    )
    url = f"http://127.0.0.1:{port}/"
    console.print(f"[bold]dashboard[/]: {url}", highlight=False)
    if open_browser:
        import webbrowser

        with contextlib.suppress(Exception):
            webbrowser.open(url)
    return board


def _print_trace_hints(final: dict[str, dict[str, Any]], broker: str) -> None:
    """Point at `tidings trace` for one completed and one cancelled order of this run."""
    by_status = sorted(final.values(), key=lambda o: not str(o.get("reason")).startswith("payment"))
    for status in ("COMPLETED", "CANCELLED"):  # a cancelled order with compensation, if any
        order = next((o for o in by_status if o["status"] == status), None)
        if order is not None:
            console.print(
                f"trace a {status.lower()} order: tidings trace {order['order_id']} "
                f"--broker {broker}",
                highlight=False,
                soft_wrap=True,
            )


def _hold_one_order(base: str, watchlist: Path) -> None:
    body = {"customer_id": WATCHED_CUSTOMER, "lines": [{"sku": "widget", "quantity": 1}]}
    order_id = httpx.post(f"{base}/orders", json=body, timeout=30).json()["order_id"]
    console.print(
        f"order {order_id} of {WATCHED_CUSTOMER} is held for fraud review: billing "
        "dead-letters it. "
        f"To clear the customer, remove them from {watchlist}, then press Replay on the dead "
        "letter in the dashboard.",
        highlight=False,
        soft_wrap=True,
    )
