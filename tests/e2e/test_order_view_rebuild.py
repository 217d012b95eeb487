"""The order view (an inline projection) of 10,000 shop events, with the order service
running (``tidings run``): while a cold replay fills it, a placed order is read back at
once and requests stay quick; then ``tidings projection rebuild ... orders`` gives the
same rows while ``GET /orders/{id}`` keeps answering."""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from shop import order_view
from shop.events import (
    InventoryRejected,
    InventoryReserved,
    OrderCancelled,
    OrderCompleted,
    OrderLine,
    OrderPlaced,
    PaymentProcessed,
)
from tidings.messages import Message
from tidings.store import open_store
from tidings.testing import free_port
from tidings.testing.postgres import fresh_schema
from tidings.testing.servers import require
from tidings.transport import make_transport
from tidings.units import direct_record

POSTGRES = "postgresql://127.0.0.1:5432/tidings"
ORDERS = 2_800  # 4 events per completed order, 3 per cancelled (1 in 5): 10,640 events
LINE = [OrderLine(sku="widget", quantity=1)]


def _events() -> list[tuple[str, Message]]:
    """(source, event) as the order, inventory and billing services would publish them,
    for orders placed in orchestration (their ends are the saga's: the order service,
    catching up on them, must not end them again)."""
    saga = "orchestration"
    events: list[tuple[str, Message]] = []
    for n in range(ORDERS):
        order_id, customer = f"o{n:05d}", f"c{n % 40:02d}"
        events.append(
            ("order", OrderPlaced(order_id=order_id, customer_id=customer, lines=LINE, amount_cents=1250, saga=saga))
        )  # fmt: skip
        if n % 5 == 0:
            events.append(
                ("inventory", InventoryRejected(order_id=order_id, reason="out of stock", saga=saga))
            )
            events.append(("order", OrderCancelled(order_id=order_id, reason="out of stock")))
            continue
        events.append(
            ("inventory", InventoryReserved(order_id=order_id, customer_id=customer, lines=LINE, amount_cents=1250, saga=saga))
        )  # fmt: skip
        events.append(
            ("billing", PaymentProcessed(order_id=order_id, payment_id=f"p{n}", customer_id=customer, amount_cents=1250, saga=saga))
        )  # fmt: skip
        events.append(("order", OrderCompleted(order_id=order_id, payment_id=f"p{n}")))
    return events


async def _publish(broker: str, events: list[tuple[str, Message]]) -> None:
    transport = make_transport(broker)
    await transport.connect()
    try:
        for topic in order_view.view.topics():
            await transport.create_topic(topic)
        records = [direct_record(e, transport, source=source)[1] for source, e in events]
        for start in range(0, len(records), 1000):
            await transport.publish(records[start : start + 1000])
    finally:
        await transport.close()


async def _rows(store_url: str, generation: int) -> dict[str, dict[str, Any]]:
    store = await open_store(store_url, "order")
    try:
        async with store.unit_of_work("order") as uow:
            docs = await uow.list(order_view.view.stored_name("orders", generation), 100_000)
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


def test_cold_replay_and_rebuild_of_the_order_view(tmp_path: Path, store: str) -> None:
    broker = f"sqlite:///{tmp_path}/log.db"
    # Orchestration: the ends are the events' (the service publishes none of its own).
    env = {
        **os.environ,
        "TIDINGS_BROKER": broker,
        "TIDINGS_STORE": store,
        "SHOP_SAGA": "orchestration",
    }
    events = _events()
    asyncio.run(_publish(broker, events))
    port = free_port()
    with open(tmp_path / "order.log", "w") as log:
        service = subprocess.Popen(
            _cli("run", "shop.order:service", "--http", f"127.0.0.1:{port}"),
            env=env, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        asyncio.run(_check(port, len(events), store, env, tmp_path))
        status = subprocess.run(
            _cli("projection", "status", "shop.order:service", "orders", "--json"),
            env=env, cwd=tmp_path, capture_output=True, text=True, check=True,
        )  # fmt: skip
        [found] = json.loads(status.stdout)
        assert (found["generation"], found["building"], found["lag"]) == (2, None, 0)
    finally:
        service.terminate()
        service.wait(30)


async def _place_and_read(client: httpx.AsyncClient) -> float:
    """POST an order and GET it at once: it must be there; the seconds both took."""
    started = time.perf_counter()
    body = {"customer_id": "c-live", "lines": [{"sku": "widget", "quantity": 1}]}
    placed = await client.post("/orders", json=body)
    assert placed.status_code == 202, placed.text
    read = await client.get(f"/orders/{placed.json()['order_id']}")
    assert read.status_code == 200, read.text  # read your writes
    assert read.json()["status"] == "PLACED"
    return time.perf_counter() - started


async def _check(port: int, total: int, store: str, env: dict[str, str], cwd: Path) -> None:
    last = f"o{ORDERS - 1:05d}"
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                await client.get("/health")
                break
            except httpx.TransportError:  # not serving yet
                await asyncio.sleep(0.1)
        # The cold replay (projector and consumer over 10,000 events) runs: requests go on.
        during: list[float] = []
        started = time.monotonic()
        while (await client.get(f"/orders/{last}")).status_code != 200 or (
            await client.get(f"/orders/{last}")
        ).json()["status"] != "COMPLETED":
            during.append(await _place_and_read(client))
            assert time.monotonic() - started < 300, "the view never caught up"
        replay = time.monotonic() - started
        quiet = [await _place_and_read(client) for _ in range(max(10, len(during)))]
        print(
            f"cold replay of {total} events: {replay:.1f}s; POST+GET during it: "
            f"{len(during)}, median {statistics.median(during or [0]) * 1000:.0f} ms, "
            f"max {max(during or [0]) * 1000:.0f} ms; after: median "
            f"{statistics.median(quiet) * 1000:.0f} ms, max {max(quiet) * 1000:.0f} ms"
        )
        assert during, "no request was made during the replay"
        assert max(during) < 5.0, during  # never stuck behind the replay
        cancelled = (await client.get("/orders/o00005")).json()
        assert (cancelled["status"], cancelled["reason"]) == ("CANCELLED", "out of stock")
        await _settled(env, cwd)
        live = await _rows(store, 1)
        assert len(live) == ORDERS + len(during) + len(quiet)

        rebuild = await asyncio.create_subprocess_exec(
            *_cli("projection", "rebuild", "shop.order:service", "orders"),
            env=env, cwd=cwd, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        reads = 0
        while rebuild.returncode is None:  # reads keep answering, the whole order
            response = await client.get(f"/orders/o{reads * 7 % ORDERS:05d}")
            assert response.status_code == 200, response.text
            assert response.json()["status"] in ("COMPLETED", "CANCELLED")
            reads += 1
            try:
                await asyncio.wait_for(rebuild.wait(), 0.05)
            except TimeoutError:
                pass
        output = (await rebuild.communicate())[0].decode()
        assert rebuild.returncode == 0, output
        print(f"rebuild: {reads} reads answered during it; {output.strip()}")
        assert reads > 5
        assert await _rows(store, 2) == live
        assert await _rows(store, 1) == {}


async def _settled(env: dict[str, str], cwd: Path) -> None:
    """Wait until the projector has read the whole log (the posted orders included)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        status = await asyncio.create_subprocess_exec(
            *_cli("projection", "status", "shop.order:service", "orders", "--json"),
            env=env, cwd=cwd, stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        output = (await status.communicate())[0]
        if status.returncode == 0 and json.loads(output)[0]["lag"] == 0:
            return
        await asyncio.sleep(0.5)
    raise AssertionError("the order view did not catch up with the log")
