"""``tidings demo``: the shop as three processes, a stream of orders, and a verdict.

It starts order (with its HTTP API), inventory and billing as separate ``tidings run``
processes on one broker, places orders over HTTP (some made to fail payment, some to run
out of stock), waits until every order settles, prints what happened, and checks the
shop's invariants itself: every order ends Completed or Cancelled, stock is conserved,
and no order is charged twice.

With ``--dashboard`` it also serves the web dashboard, opens it, places one order that
billing holds for fraud review (a dead letter to look at and replay), and keeps the shop
running until Ctrl-C. ``--traces`` and ``--metrics`` pass tracing and metrics on to the
service processes; their logs are JSON lines in the run's directory.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
from rich.progress import Progress
from rich.table import Table

from tidings import codec
from tidings.cli.common import console, opened_store, opened_transport
from tidings.transport.base import read_topic

SERVICES = ("order", "inventory", "billing")
BROKE_CUSTOMER = "c-broke"
WATCHED_CUSTOMER = "c-watched"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


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


class Shop:
    """The three service processes of one demo run."""

    def __init__(self, workdir: Path, broker: str, store: str, port: int, seed: str) -> None:
        self.workdir = workdir
        self.broker = broker
        self.store = store
        self.port = port
        self.env = dict(os.environ)
        self.env.update(
            SHOP_CREDIT_LIMITS=f"{BROKE_CUSTOMER}=0",
            SHOP_PAYMENT_FAILURE_RATE=self.env.get("SHOP_PAYMENT_FAILURE_RATE", "0.08"),
            SHOP_SEED=seed,
        )
        self.env.setdefault("TIDINGS_LOG_FORMAT", "json")
        # Services given a port here serve Prometheus metrics on it.
        self.metrics_ports: dict[str, int] = {}
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, *names: str) -> None:
        """Start the named services (all by default) as ``tidings run`` processes."""
        for name in names or SERVICES:
            (self.workdir / f"{name}.ready").unlink(missing_ok=True)
            args = [
                sys.executable,
                "-m",
                "tidings",
                "run",
                f"shop.{name}:service",
                "--broker",
                self.broker,
                "--store",
                self.store,
                "--ready-file",
                str(self.workdir / f"{name}.ready"),
            ]
            if name == "order":
                args += ["--http", f"127.0.0.1:{self.port}"]
            env = dict(self.env)
            if name in self.metrics_ports:
                env["TIDINGS_METRICS_PORT"] = str(self.metrics_ports[name])
            with open(self.workdir / f"{name}.log", "ab") as log:
                self.procs[name] = subprocess.Popen(
                    args, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=os.getcwd()
                )

    def kill(self, name: str) -> None:
        """SIGKILL a service: no clean shutdown, as if its machine died."""
        proc = self.procs[name]
        proc.kill()
        proc.wait()

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for name, proc in self.procs.items():
                if proc.poll() is not None:
                    tail = (self.workdir / f"{name}.log").read_text(errors="replace")[-2000:]
                    raise RuntimeError(f"service {name} exited with {proc.returncode}:\n{tail}")
            if all((self.workdir / f"{n}.ready").exists() for n in self.procs):
                return
            time.sleep(0.05)
        raise RuntimeError(f"services not ready after {timeout:.0f}s; logs in {self.workdir}")

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


async def read_stock(store_url: str) -> dict[str, int]:
    async with (
        opened_store(store_url, "inventory") as store,
        store.unit_of_work("inventory") as uow,
    ):
        return {d.key: int(d.data["available"]) for d in await uow.list("stock", 1000)}


async def place_orders(base: str, orders: list[dict[str, Any]], concurrency: int) -> list[str]:
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


async def payments_in_log(broker: str) -> dict[str, set[str]]:
    """The distinct payments (PaymentProcessed ids) the billing topic holds per order.

    Distinct ids, because a relay that crashed after publishing publishes the same event
    again: that is one payment seen twice, not two payments."""
    payments: dict[str, set[str]] = {}
    async with opened_transport(broker) as transport:
        async for record in read_topic(transport, "shop.billing"):
            envelope = codec.decode(record)
            if envelope.type == "PaymentProcessed":
                payments.setdefault(str(envelope.data["order_id"]), set()).add(envelope.id)
    return payments


def _reason_kind(reason: str | None) -> str:
    reason = reason or "?"
    if reason.startswith("out of stock"):
        return "out of stock"
    return reason.split(" (")[0]


def run_demo(
    *,
    orders: int,
    broker: str,
    store: str,
    port: int,
    concurrency: int,
    timeout: float,
    seed: str,
    dashboard: bool = False,
    dashboard_port: int = 0,
    open_browser: bool = True,
    traces: str = "",
    metrics: bool = False,
) -> bool:
    workdir = Path(".tidings") / f"demo-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
    workdir.mkdir(parents=True, exist_ok=True)
    broker = broker or f"sqlite:///{workdir}/log.db"
    store = store or f"sqlite:///{workdir}/{{service}}.db"
    port = port or _free_port()
    base = f"http://127.0.0.1:{port}"
    console.print(f"[bold]Tidings demo[/]: {orders} orders, broker {broker}, store {store}")
    console.print(f"logs and data in {workdir}")
    shop = Shop(workdir, broker, store, port, seed)
    watchlist = workdir / "fraud-watchlist.txt"
    if dashboard:
        watchlist.write_text(
            f"# customers whose payments billing holds for review\n{WATCHED_CUSTOMER}\n"
        )
        shop.env["SHOP_FRAUD_HOLD_FILE"] = str(watchlist.resolve())
    if traces:
        shop.env["TIDINGS_TRACES"] = traces
    if metrics:
        shop.metrics_ports = {name: _free_port() for name in SERVICES}
        for name, metrics_port in shop.metrics_ports.items():
            console.print(
                f"{name}: metrics on http://127.0.0.1:{metrics_port}/metrics", highlight=False
            )
    shop.start()
    board: subprocess.Popen[bytes] | None = None
    try:
        if dashboard:
            board = start_dashboard(workdir, broker, dashboard_port or 8050, open_browser)
        shop.wait_ready()
        stock_before = asyncio.run(read_stock(store))
        mix = order_mix(orders, seed)
        started = time.monotonic()
        ids = asyncio.run(place_orders(base, mix, concurrency))
        final = asyncio.run(wait_settled(base, ids, timeout))
        elapsed = time.monotonic() - started
        stock_after = asyncio.run(read_stock(store))
        payments = asyncio.run(payments_in_log(broker))
        ok = report(final, stock_before, stock_after, payments, elapsed)
        _print_trace_hints(final, broker)
        if dashboard:
            _hold_one_order(base, watchlist)
            console.print("The shop keeps running for the dashboard; Ctrl-C stops it.")
            with contextlib.suppress(KeyboardInterrupt):
                while all(p.poll() is None for p in shop.procs.values()):
                    time.sleep(0.5)
    finally:
        if board is not None and board.poll() is None:
            board.send_signal(signal.SIGTERM)
            try:
                board.wait(10)
            except subprocess.TimeoutExpired:
                board.kill()
                board.wait()
        shop.stop()
    return ok


def start_dashboard(
    workdir: Path, broker: str, port: int, open_browser: bool
) -> subprocess.Popen[bytes]:
    """Run `tidings dashboard` as a process and return once it serves requests."""
    ready = workdir / "dashboard.ready"
    ready.unlink(missing_ok=True)
    with open(workdir / "dashboard.log", "ab") as log:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tidings",
                "dashboard",
                "--broker",
                broker,
                "--port",
                str(port),
                "--ready-file",
                str(ready),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + 30
    while not ready.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            tail = (workdir / "dashboard.log").read_text(errors="replace")[-1500:]
            raise RuntimeError(f"the dashboard did not start (port {port} taken?):\n{tail}")
        time.sleep(0.05)
    url = f"http://127.0.0.1:{port}/"
    console.print(f"[bold]dashboard[/]: {url}", highlight=False)
    if open_browser:
        import webbrowser

        with contextlib.suppress(Exception):
            webbrowser.open(url)
    return proc


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


def report(
    final: dict[str, dict[str, Any]],
    before: dict[str, int],
    after: dict[str, int],
    payments: dict[str, set[str]],
    elapsed: float,
) -> bool:
    statuses = Counter(o["status"] for o in final.values())
    completed = [o for o in final.values() if o["status"] == "COMPLETED"]
    sold: Counter[str] = Counter()
    for o in completed:
        for line in o["lines"]:
            sold[line["sku"]] += line["quantity"]

    outcome = Table("outcome", "orders", title=f"{len(final)} orders in {elapsed:.1f}s")
    outcome.add_row("completed", str(statuses["COMPLETED"]))
    for kind, count in sorted(
        Counter(
            _reason_kind(o.get("reason")) for o in final.values() if o["status"] == "CANCELLED"
        ).items()
    ):
        outcome.add_row(f"cancelled: {kind}", str(count))
    for status, count in statuses.items():
        if status not in ("COMPLETED", "CANCELLED"):
            outcome.add_row(f"[red]unsettled: {status}[/]", str(count))
    console.print(outcome)

    stock = Table("sku", "before", "sold", "after", title="stock")
    for sku in sorted(before):
        stock.add_row(sku, str(before[sku]), str(sold[sku]), str(after.get(sku, 0)))
    console.print(stock)
    ours = {k: v for k, v in payments.items() if k in final}
    taken = sum(o["amount_cents"] for o in completed)
    console.print(
        f"payments taken: {sum(len(v) for v in ours.values())} for {taken / 100:.2f} in total"
    )

    checks = {
        "every order ended Completed or Cancelled": all(
            o["status"] in ("COMPLETED", "CANCELLED") for o in final.values()
        ),
        "stock conserved (before - sold = after, for every sku)": all(
            before[s] - sold[s] == after.get(s, 0) for s in before
        )
        and set(sold) <= set(before),
        "no order charged twice": all(len(v) == 1 for v in ours.values()),
        "every completed order was paid, no cancelled one was": {o["order_id"] for o in completed}
        == set(ours),
    }
    for text, ok in checks.items():
        console.print(("[green]✓[/] " if ok else "[red]✗[/] ") + text)
    return all(checks.values())
