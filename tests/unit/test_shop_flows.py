"""The shop's choreography in one process (TestApp on the memory transport): every path ends."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from shop import billing, inventory, order, order_view
from shop.events import OrderCancelled, OrderCompleted, OrderLine, OrderPlaced, PlaceOrder
from tidings.testing import TestApp


@pytest.fixture
async def shop(monkeypatch) -> AsyncIterator[TestApp]:
    monkeypatch.setenv("SHOP_STOCK", "widget=10,doohickey=1")
    monkeypatch.setenv("SHOP_CREDIT_LIMITS", "c-broke=0")
    async with TestApp(order.service, inventory.service, billing.service) as app:
        yield app


async def place(app: TestApp, customer: str, *lines: tuple[str, int]) -> str:
    command = PlaceOrder(
        customer_id=customer, lines=[OrderLine(sku=s, quantity=q) for s, q in lines]
    )
    async with app.unit_of_work(order.service) as ctx:
        placed = await order.place_order(command, ctx)
    return placed.order_id


async def an_order(app: TestApp, order_id: str) -> order_view.Order:
    found = await app.read(order_view.view, lambda view: order_view.find(view, order_id))
    assert found is not None
    return found


async def available(app: TestApp, sku: str) -> int:
    return (await app.get(inventory.stock, sku)).available


async def test_order_completes_and_takes_stock_and_payment(shop) -> None:
    order_id = await place(shop, "c1", ("widget", 3))
    await shop.drain()
    placed = await an_order(shop, order_id)
    assert placed.status == "COMPLETED"
    assert [e.type for e in placed.history] == [
        "OrderPlaced",
        "InventoryReserved",
        "PaymentProcessed",
        "OrderCompleted",
    ]
    assert await available(shop, "widget") == 7
    payment = await shop.get(billing.payments, order_id)
    assert payment.amount_cents == 3 * 1250
    [completed] = await shop.published(OrderCompleted)
    assert completed.order_id == order_id and completed.payment_id == payment.payment_id


async def test_out_of_stock_cancels_without_payment(shop) -> None:
    order_id = await place(shop, "c1", ("widget", 1), ("doohickey", 2))
    await shop.drain()
    placed = await an_order(shop, order_id)
    assert placed.status == "CANCELLED"
    assert placed.reason == "out of stock: doohickey (wanted 2, have 1)"
    assert await available(shop, "widget") == 10  # nothing held
    assert shop.runtime(billing.service).stats.handled == 0


async def test_failed_payment_releases_stock_compensation(shop) -> None:
    order_id = await place(shop, "c-broke", ("widget", 4))
    await shop.drain()
    placed = await an_order(shop, order_id)
    assert placed.status == "CANCELLED"
    assert placed.reason is not None
    assert placed.reason.startswith("payment failed: credit limit of 0 cents exceeded")
    assert [e.type for e in placed.history] == [
        "OrderPlaced",
        "InventoryReserved",
        "PaymentFailed",
        "InventoryReleased",
        "OrderCancelled",
    ]
    assert await available(shop, "widget") == 10
    assert (await shop.get(inventory.reservations, order_id)).released is True
    assert [c.order_id for c in await shop.published(OrderCancelled)] == [order_id]


async def test_redelivery_everywhere_changes_nothing(shop) -> None:
    shop.transport.faults.duplicate = True
    ids = [await place(shop, "c1", ("widget", 2)) for _ in range(3)]
    await shop.drain()
    assert sum(rt.stats.duplicates for rt in shop.runtimes.values()) >= 6
    for order_id in ids:
        assert (await an_order(shop, order_id)).status == "COMPLETED"
    assert await available(shop, "widget") == 4
    account = await shop.load(billing.Account, "c1")
    assert account is not None and account.spent_cents == 3 * 2 * 1250
    assert sorted(account.charges) == sorted(ids), "each order charged once"


async def test_an_event_published_from_outside_is_handled(shop) -> None:
    """TestApp.publish feeds a service as another producer would (no order record)."""
    line = OrderLine(sku="widget", quantity=2)
    await shop.publish(
        OrderPlaced(order_id="o-ext", customer_id="c1", lines=[line], amount_cents=2500)
    )
    await shop.drain()
    assert await available(shop, "widget") == 8
    assert (await shop.get(billing.payments, "o-ext")).amount_cents == 2500
    # order ignores orders it never took
    assert await shop.read(order_view.view, lambda view: order_view.find(view, "o-ext")) is None


async def test_order_api_in_process(shop) -> None:
    async with shop.http(order.service) as client:
        created = await client.post(
            "/orders", json={"customer_id": "c1", "lines": [{"sku": "widget", "quantity": 1}]}
        )
        assert created.status_code == 202, created.text
        order_id = created.json()["order_id"]
        assert (await client.get(f"/orders/{order_id}")).json()["status"] == "PLACED"
        await shop.drain()
        assert (await client.get(f"/orders/{order_id}")).json()["status"] == "COMPLETED"
        unknown = await client.post(
            "/orders", json={"customer_id": "c1", "lines": [{"sku": "nope", "quantity": 1}]}
        )
        assert unknown.status_code == 422 and "unknown sku(s): nope" in unknown.json()["error"]
        assert (await client.get("/orders/missing")).status_code == 404
    assert len(await shop.published(OrderPlaced)) == 1  # the refused order published nothing
