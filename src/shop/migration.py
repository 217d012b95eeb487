"""The migration demo (``tidings demo shop.migration``, ``make demo-migration``): the
legacy back office strangled, its changes streamed into the shop through Debezium.

It sets up a fresh legacy site (its tables in a schema of their own, a Debezium connector
on Kafka Connect), starts the legacy app, the strangler facade in front of it, and the
shop (anti-corruption layer, order, inventory, billing) on Kafka, then:

1. prices a product and registers a customer in the legacy app, and sees the price in the
   order service's catalog (legacy commit -> Debezium -> ACL -> ProductPriced -> order);
2. places an order through the facade while the route is still the legacy app's;
3. moves the route ``place-order`` to the new order service, and places one there,
   through the same facade URL, which completes in the event-driven shop;
4. changes the price in the legacy app and sees the next order take it;
5. places an order over the customer's legacy credit limit (billing declines it), raises
   the limit in the legacy app, and sees the next one paid;
6. records a stock adjustment in the legacy app, sees ``StockAdjusted`` published and
   inventory's shelf grow by it, once.

It prints each step with a check mark and returns True only if every check held. Needs
PostgreSQL, Kafka and Kafka Connect (``scripts/services up postgres kafka connect``); the
connector, its replication slot and the schema are removed at the end.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx
import psycopg
from psycopg import sql

from legacy.app import TABLES, create_tables
from shop import billing, inventory
from shop.catalog import INITIAL_STOCK
from shop.events import STOCK
from shop.invariants import console
from tidings.cdc import connect
from tidings.demo import DemoOptions
from tidings.testing import envelopes, free_port
from tidings.testing.processes import ServiceProcesses, stop_process
from tidings.testing.state import documents

POSTGRES = "postgresql://postgres@127.0.0.1:5432/tidings"
KAFKA = "kafka://127.0.0.1:9092"
T = TypeVar("T")


@dataclasses.dataclass(frozen=True)
class LegacySite:
    """One legacy back office: its tables in ``schema``, captured by connector ``name``
    onto ``<prefix>.<table>`` topics."""

    run: str
    schema: str
    connector: str
    prefix: str
    database: str
    connect_url: str

    @classmethod
    @contextlib.contextmanager
    def fresh(
        cls, database: str = POSTGRES, connect_url: str = connect.DEFAULT_URL
    ) -> Iterator[LegacySite]:
        """A new site (names unique to this run); its connector, replication slot and
        schema are dropped on exit, whatever happened."""
        run = uuid.uuid4().hex[:8]
        site = cls(run, f"legacy_{run}", f"legacy_{run}", f"legacy_{run}", database, connect_url)
        create_tables(database, site.schema)
        try:
            connect.register(
                connect_url,
                site.connector,
                database,
                tables=[f"{site.schema}.{t}" for t in TABLES],
                topic_prefix=site.prefix,
            )
            # Creating the slot waits for the transactions open at that moment to end:
            # seconds on a quiet database, minutes on a busy shared one.
            connect.wait_running(connect_url, site.connector, timeout=300)
            yield site
        finally:
            with contextlib.suppress(connect.ConnectError):
                connect.drop(connect_url, site.connector, database)
            with psycopg.connect(database, autocommit=True) as conn:
                conn.execute(
                    sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(site.schema))
                )

    def sql(self, query: str, *args: Any) -> None:
        """Run one statement on the legacy tables and commit it (as the old app would)."""
        with psycopg.connect(self.database, autocommit=True) as conn:
            conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(self.schema)))
            conn.execute(query.encode(), args)


def wait_for(what: str, probe: Callable[[], T | None], timeout: float = 60) -> T:
    """``probe()``'s first answer that is not None, polled; TimeoutError naming ``what``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = probe()
        if found is not None:
            return found
        time.sleep(0.2)
    raise TimeoutError(f"{what}: not seen within {timeout:.0f}s")


def catalog_price(order_base: str, sku: str) -> int | None:
    """The order service's price of ``sku`` if the back office set it, else None."""
    answer = httpx.get(f"{order_base}/catalog/{sku}", timeout=10)
    if answer.status_code != 200 or not answer.json()["from_back_office"]:
        return None
    return int(answer.json()["price_cents"])


def settled(order_base: str, order_id: str) -> str | None:
    status = httpx.get(f"{order_base}/orders/{order_id}", timeout=10).json()["status"]
    return status if status in ("COMPLETED", "CANCELLED", "PAYMENT_FAILED") else None


class _Steps:
    def __init__(self) -> None:
        self.ok = True

    def check(self, what: str, holds: bool, detail: str = "") -> None:
        self.ok &= holds
        mark = "[green]✓[/]" if holds else "[red]✗[/]"
        console.print(f"{mark} {what}" + (f"  [dim]{detail}[/]" if detail else ""))


def _serve(args: list[str], env: dict[str, str], log: Path, port: int) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:
        proc = subprocess.Popen([sys.executable, "-m", "legacy", "--port", str(port), *args],
                                stdout=out, stderr=subprocess.STDOUT, env=env)  # fmt: skip
    try:
        wait_for(f"{log.stem} on port {port}", lambda: _healthy(f"http://127.0.0.1:{port}"), 30)
    except TimeoutError:  # not yet in the caller's list of servers to stop: stop it here
        stop_process(proc)
        raise
    return proc


def _healthy(base: str) -> bool | None:
    try:
        return httpx.get(f"{base}/health", timeout=2).status_code == 200 or None
    except httpx.HTTPError:
        return None


def main(options: DemoOptions) -> bool:
    """Run the migration end to end; True if every check held."""
    broker = options.broker if options.broker.startswith("kafka://") else KAFKA
    console.print(f"[bold]Migration demo[/]: legacy back office -> Debezium -> shop on {broker}")
    steps = _Steps()
    with LegacySite.fresh() as site:
        sku, customer = f"sprocket-{site.run}", f"c-{site.run}"
        shop = ServiceProcesses(
            options.workdir, broker, options.store,
            {name: f"shop.{module}:service" for name, module in
             {"legacy-acl": "acl", "order": "order", "inventory": "inventory",
              "billing": "billing"}.items()},
            http={"order": options.port or free_port()},
        )  # fmt: skip
        stock = ",".join(f"{k}={v}" for k, v in {**INITIAL_STOCK, sku: 100}.items())
        shop.env.update(
            SHOP_LEGACY_TOPICS=site.prefix, SHOP_STOCK=stock, SHOP_PAYMENT_FAILURE_RATE="0"
        )
        order_base = f"http://127.0.0.1:{shop.http['order']}"
        env = {**shop.env, "LEGACY_DATABASE_URL": site.database, "LEGACY_SCHEMA": site.schema}
        legacy_port, facade_port = free_port(), free_port()
        env.update(FACADE_LEGACY_URL=f"http://127.0.0.1:{legacy_port}", FACADE_ORDER_URL=order_base)
        shop.start()
        servers: list[subprocess.Popen[bytes]] = []
        try:
            shop.wait_ready()
            servers.append(_serve([], env, options.workdir / "legacy.log", legacy_port))
            servers.append(_serve(["--facade"], env, options.workdir / "facade.log", facade_port))
            _walk(steps, site, order_base, f"http://127.0.0.1:{legacy_port}",
                  f"http://127.0.0.1:{facade_port}", sku, customer, broker, options.store)  # fmt: skip
        except (TimeoutError, httpx.HTTPError, KeyError, RuntimeError) as exc:
            steps.check("the demo ran to its end", False, str(exc))
        finally:
            for server in servers:
                stop_process(server)
            shop.stop()
    console.print(f"logs in {options.workdir}")
    return steps.ok


def _walk(
    steps: _Steps, site: LegacySite, order_base: str, legacy: str, facade: str,
    sku: str, customer: str, broker: str, store: str,
) -> None:  # fmt: skip
    def order(quantity: int) -> dict[str, Any]:
        body = {"cust_no": customer, "items": [{"prod_cd": sku, "qty": quantity}]}
        return httpx.post(f"{facade}/orders", json=body, timeout=30).raise_for_status().json()

    # 1. The back office prices a product and registers a customer.
    committed = time.monotonic()
    httpx.post(
        f"{legacy}/customers", json={"cust_no": customer, "cust_nm": "Ada", "cr_lim": "30.00"}
    ).raise_for_status()
    httpx.post(f"{legacy}/products", json={"prod_cd": sku, "prod_desc": "Sprocket", "unit_prc": "3.25"}).raise_for_status()  # fmt: skip
    price = wait_for("the legacy price in the catalog", lambda: catalog_price(order_base, sku), 180)
    took = time.monotonic() - committed
    steps.check(f"legacy price of {sku} reached the order service's catalog", price == 325,
                f"{price} cents, {took:.1f}s after the legacy commit")  # fmt: skip

    # 2. The route is still the legacy app's.
    booked = order(1)
    steps.check("facade: place-order served by the legacy app", booked.get("status") == "BOOKED",
                f"legacy order {booked.get('ord_no')}, {booked.get('tot_amt')} dollars")  # fmt: skip

    # 3. Move the route; the same call now goes through the event-driven shop.
    moved = httpx.put(f"{facade}/routes/place-order", json={"to": "new"}).json()
    steps.check("route place-order moved to the new order service",
                moved["place-order"]["served_by"] == "new", str(moved))  # fmt: skip
    first = order(2)
    status = wait_for("the order to settle", lambda: settled(order_base, first["ord_no"]), 180)
    steps.check("order through the facade completed in the shop",
                (first["tot_amt"], status) == ("6.50", "COMPLETED"),
                f"order {first['ord_no']}: {first['tot_amt']} dollars, {status}")  # fmt: skip

    # 4. A new price in the legacy app is the next order's price.
    httpx.put(f"{legacy}/products/{sku}/price", json={"unit_prc": "4.10"}).raise_for_status()
    wait_for("the new price", lambda: catalog_price(order_base, sku) == 410 or None, 180)
    second = order(2)
    status = wait_for("the order to settle", lambda: settled(order_base, second["ord_no"]), 180)
    steps.check("the next order took the new legacy price",
                (second["tot_amt"], status) == ("8.20", "COMPLETED"),
                f"{second['tot_amt']} dollars, {status}")  # fmt: skip

    # 5. Billing holds the customer to the legacy credit limit (30.00; 14.70 spent).
    over = order(5)
    status = wait_for("the order to settle", lambda: settled(order_base, over["ord_no"]), 180)
    steps.check("an order over the legacy credit limit was declined by billing",
                status in ("PAYMENT_FAILED", "CANCELLED"), f"{over['tot_amt']} dollars, {status}")  # fmt: skip
    httpx.put(f"{legacy}/customers/{customer}/credit", json={"cr_lim": "100.00"}).raise_for_status()

    def limit() -> int | None:
        lines = asyncio.run(documents(store, billing.service, billing.credit_lines))
        line = lines.get(customer)
        return line.limit_cents if line is not None and line.limit_cents == 10_000 else None

    wait_for("the new credit limit in billing", limit, 180)
    again = order(5)
    status = wait_for("the order to settle", lambda: settled(order_base, again["ord_no"]), 180)
    steps.check("after the limit was raised in the legacy app, the same order was paid",
                status == "COMPLETED", f"{again['tot_amt']} dollars, {status}")  # fmt: skip

    # 6. A stock adjustment in the legacy app becomes StockAdjusted, and inventory's shelf.
    def shelf() -> int:
        item = asyncio.run(documents(store, inventory.service, inventory.stock)).get(sku)
        return item.available if item is not None else 0

    before = shelf()
    httpx.post(f"{legacy}/stock-adjustments", json={"prod_cd": sku, "adj_qty": 12, "rsn_cd": "RCV"}).raise_for_status()  # fmt: skip

    def adjusted() -> list[dict[str, Any]] | None:
        found = [e.data for e in asyncio.run(envelopes(broker, STOCK)) if e.data.get("sku") == sku]
        return found or None

    events = wait_for("StockAdjusted", adjusted, 180)
    steps.check("the legacy stock adjustment was published as StockAdjusted",
                events == [{"sku": sku, "change": 12, "reason": "received"}], str(events))  # fmt: skip
    after = wait_for("the adjustment on inventory's shelf", lambda: shelf() - before or None, 60)
    steps.check("inventory's shelf took the adjustment once", after == 12,
                f"{sku}: {before} -> {before + after}")  # fmt: skip
