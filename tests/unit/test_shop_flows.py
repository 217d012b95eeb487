"""The shop's choreography in one process, on the memory transport: every path ends."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator

import pytest

from shop import billing, inventory, order
from shop.events import OrderLine, PlaceOrder
from tidings.runtime import Runtime
from tidings.store.sqlite import SQLiteStore
from tidings.testing.harness import drain
from tidings.transport.memory import MemoryTransport

_names = itertools.count()


@pytest.fixture
async def shop(tmp_path, monkeypatch) -> AsyncIterator[dict[str, Runtime]]:
    monkeypatch.setenv("SHOP_STOCK", "widget=10,doohickey=1")
    monkeypatch.setenv("SHOP_CREDIT_LIMITS", "c-broke=0")
    transport = MemoryTransport(f"memory://shop-{next(_names)}")
    runtimes: dict[str, Runtime] = {}
    stores = []
    for module in (order, inventory, billing):
        store = SQLiteStore(str(tmp_path / f"{module.service.name}.db"))
        await store.connect()
        stores.append(store)
        rt = Runtime(module.service, transport, store)
        await rt.start(background=False)
        runtimes[module.service.name] = rt
    yield runtimes
    for rt in runtimes.values():
        rt.service.bind(None)
    for store in stores:
        await store.close()


async def place(rt: Runtime, customer: str, *lines: tuple[str, int]) -> str:
    command = PlaceOrder(
        customer_id=customer, lines=[OrderLine(sku=s, quantity=q) for s, q in lines]
    )
    async with rt.service.unit_of_work() as ctx:
        placed = await order.place_order(command, ctx)
    return str(placed["order_id"])


async def doc(rt: Runtime, collection: str, key: str) -> dict:
    async with rt.service.unit_of_work() as ctx:
        found = await ctx.state.get(collection, key)
    assert found is not None
    return found


async def test_order_completes_and_takes_stock_and_payment(shop) -> None:
    order_id = await place(shop["order"], "c1", ("widget", 3))
    await drain(*shop.values())
    placed = await doc(shop["order"], "orders", order_id)
    assert placed["status"] == "COMPLETED"
    assert [e["type"] for e in placed["history"]] == [
        "OrderPlaced",
        "InventoryReserved",
        "PaymentProcessed",
        "OrderCompleted",
    ]
    assert (await doc(shop["inventory"], "stock", "widget"))["available"] == 7
    payment = await doc(shop["billing"], "payments", order_id)
    assert payment["amount_cents"] == 3 * 1250


async def test_out_of_stock_cancels_without_payment(shop) -> None:
    order_id = await place(shop["order"], "c1", ("widget", 1), ("doohickey", 2))
    await drain(*shop.values())
    placed = await doc(shop["order"], "orders", order_id)
    assert placed["status"] == "CANCELLED"
    assert placed["reason"] == "out of stock: doohickey (wanted 2, have 1)"
    assert (await doc(shop["inventory"], "stock", "widget"))["available"] == 10  # nothing held
    assert shop["billing"].stats.handled == 0


async def test_failed_payment_releases_stock_compensation(shop) -> None:
    order_id = await place(shop["order"], "c-broke", ("widget", 4))
    await drain(*shop.values())
    placed = await doc(shop["order"], "orders", order_id)
    assert placed["status"] == "CANCELLED"
    assert placed["reason"].startswith("payment failed: credit limit of 0 cents exceeded")
    assert [e["type"] for e in placed["history"]] == [
        "OrderPlaced",
        "InventoryReserved",
        "PaymentFailed",
        "InventoryReleased",
        "OrderCancelled",
    ]
    assert (await doc(shop["inventory"], "stock", "widget"))["available"] == 10
    assert (await doc(shop["inventory"], "reservations", order_id))["released"] is True


async def test_redelivery_everywhere_changes_nothing(shop) -> None:
    transport = shop["order"].transport
    assert isinstance(transport, MemoryTransport)
    transport.faults.duplicate = True
    ids = [await place(shop["order"], "c1", ("widget", 2)) for _ in range(3)]
    await drain(*shop.values())
    assert sum(rt.stats.duplicates for rt in shop.values()) >= 6
    for order_id in ids:
        assert (await doc(shop["order"], "orders", order_id))["status"] == "COMPLETED"
    assert (await doc(shop["inventory"], "stock", "widget"))["available"] == 4
    assert (await doc(shop["billing"], "customers", "c1"))["spent_cents"] == 3 * 2 * 1250
