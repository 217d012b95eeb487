"""``tidings projection rebuild`` on the shop's sales report of 10,000 events, while the
order service (a ``tidings run`` process) keeps answering ``GET /reports/sales``."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from shop.events import OrderCancelled, OrderCompleted, OrderLine, OrderPlaced
from shop.order import sales
from tidings.store import open_store
from tidings.testing import free_port
from tidings.testing.postgres import fresh_schema
from tidings.testing.servers import require
from tidings.transport import make_transport
from tidings.units import direct_record

ORDERS = 5_000  # placed, then completed (4 in 5) or cancelled: 10,000 events
POSTGRES = "postgresql://127.0.0.1:5432/tidings"
SKUS = ["widget", "gadget", "gizmo", "doohickey"]


def _events() -> list[OrderPlaced | OrderCompleted | OrderCancelled]:
    events: list[OrderPlaced | OrderCompleted | OrderCancelled] = []
    for n in range(ORDERS):
        order_id = f"o{n:05d}"
        lines = [OrderLine(sku=SKUS[n % 4], quantity=1 + n % 3)]
        if n % 7 == 0:
            lines.append(OrderLine(sku=SKUS[(n + 1) % 4], quantity=2))
        events.append(
            OrderPlaced(
                order_id=order_id, customer_id=f"c{n % 40:02d}", lines=lines, amount_cents=100 + n
            )
        )
        if n % 5:
            events.append(OrderCompleted(order_id=order_id, payment_id=f"p{n}"))
        else:
            events.append(OrderCancelled(order_id=order_id, reason="out of stock"))
    return events


def _expected(events: list[Any]) -> dict[str, Any]:
    """The report, computed here from the events without the projection."""
    placed = {e.order_id: e for e in events if isinstance(e, OrderPlaced)}
    by_sku: dict[str, dict[str, int]] = {}
    by_customer: dict[str, dict[str, int]] = {}
    for event in events:
        if not isinstance(event, OrderCompleted):
            continue
        order = placed[event.order_id]
        units = {line.sku: 0 for line in order.lines}
        for line in order.lines:
            units[line.sku] += line.quantity
        row = by_customer.setdefault(order.customer_id, {"orders": 0, "units": 0, "revenue": 0})
        row["orders"] += 1
        row["units"] += sum(units.values())
        row["revenue"] += order.amount_cents
        for sku, quantity in units.items():
            sku_row = by_sku.setdefault(sku, {"orders": 0, "units": 0})
            sku_row["orders"] += 1
            sku_row["units"] += quantity
    return {
        "orders": sum(r["orders"] for r in by_customer.values()),
        "units": sum(r["units"] for r in by_customer.values()),
        "revenue_cents": sum(r["revenue"] for r in by_customer.values()),
        "by_sku": [{"sku": s, **r} for s, r in sorted(by_sku.items())],
        "by_customer": [
            {
                "customer_id": c,
                "orders": r["orders"],
                "units": r["units"],
                "revenue_cents": r["revenue"],
            }
            for c, r in sorted(by_customer.items())
        ],
    }


async def _publish(broker: str, events: list[Any]) -> None:
    transport = make_transport(broker)
    await transport.connect()
    try:
        await transport.create_topic("shop.orders")
        records = [direct_record(e, transport, source="test")[1] for e in events]
        for start in range(0, len(records), 1000):
            await transport.publish(records[start : start + 1000])
    finally:
        await transport.close()


async def _rows(store_url: str, generation: int) -> dict[str, dict[str, Any]]:
    store = await open_store(store_url, "order")
    try:
        async with store.unit_of_work("order") as uow:
            docs = await uow.list(sales.stored_name("rows", generation), 100_000)
            assert await uow.list(sales.stored_name("open", generation), 10) == []
        return {doc.key: doc.data for doc in docs}
    finally:
        await store.close()


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "tidings", *args]


@pytest.fixture(params=["sqlite", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/{{service}}.db"
        return
    require(POSTGRES)
    with fresh_schema(POSTGRES) as url:
        yield url


def test_rebuild_gives_the_same_rows_while_reads_keep_answering(tmp_path: Path, store: str) -> None:
    broker = f"sqlite:///{tmp_path}/log.db"
    env = {**os.environ, "TIDINGS_BROKER": broker, "TIDINGS_STORE": store}
    events = _events()
    expected = _expected(events)
    asyncio.run(_publish(broker, events))
    port = free_port()
    ready = tmp_path / "order.ready"
    with open(tmp_path / "order.log", "w") as log:
        service = subprocess.Popen(
            _cli(
                "run",
                "shop.order:service",
                "--http",
                f"127.0.0.1:{port}",
                "--ready-file",
                str(ready),
            ),
            env=env,
            cwd=tmp_path,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        asyncio.run(_check(port, expected, store, env, tmp_path))
        status = subprocess.run(
            _cli("projection", "status", "shop.order:service", "sales", "--json"),
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            check=True,
        )
        [found] = json.loads(status.stdout)
        assert (found["generation"], found["building"], found["lag"]) == (2, None, 0)
    finally:
        service.terminate()
        service.wait(30)


async def _check(
    port: int, expected: dict[str, Any], store: str, env: dict[str, str], cwd: Path
) -> None:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
        deadline = time.monotonic() + 120
        report: dict[str, Any] = {}
        while time.monotonic() < deadline:  # the live projection catches up with the log
            try:
                report = (await client.get("/reports/sales")).json()
            except httpx.TransportError:  # not serving yet
                report = {}
            if report.get("orders") == expected["orders"]:
                break
            await asyncio.sleep(0.2)
        assert report.pop("generation") == 1
        assert report == expected
        live = await _rows(store, 1)
        assert len(live) == len(expected["by_sku"]) + len(expected["by_customer"])

        started = time.monotonic()
        rebuild = await asyncio.create_subprocess_exec(
            *_cli("projection", "rebuild", "shop.order:service", "sales"),
            env=env,
            cwd=cwd,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        generations: list[int] = []
        while rebuild.returncode is None:  # reads keep answering, always the whole report
            response = await client.get("/reports/sales")
            assert response.status_code == 200, response.text
            report = response.json()
            generations.append(report.pop("generation"))
            assert report == expected
            try:
                await asyncio.wait_for(rebuild.wait(), 0.05)
            except TimeoutError:
                pass
        output = (await rebuild.communicate())[0].decode()
        print(
            f"rebuild (process included): {time.monotonic() - started:.1f}s, "
            f"{generations.count(1)} reads of generation 1, {generations.count(2)} of 2"
        )
        assert rebuild.returncode == 0, output
        assert "10000 records replayed into generation 2" in output, output
        assert generations.count(1) > 5, generations  # read the old copy during the rebuild
        report = (await client.get("/reports/sales")).json()
        assert report.pop("generation") == 2
        assert report == expected
        assert await _rows(store, 2) == live
        assert await _rows(store, 1) == {}  # the old generation is gone


def test_an_unknown_projection_is_refused_with_the_known_ones(tmp_path: Path) -> None:
    done = subprocess.run(
        _cli("projection", "rebuild", "shop.order:service", "nope"),
        env={**os.environ, "TIDINGS_BROKER": f"sqlite:///{tmp_path}/log.db"},
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 2
    assert "declares no projection 'nope' (it declares: orders, sales)" in done.stderr
