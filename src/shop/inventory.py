"""Inventory: reserves stock for placed orders and releases it when payment fails.

Stock is conserved: every unit is either on the shelf (``stock``) or held by exactly one
reservation (``reservations``), and a reservation is released at most once.
"""

from __future__ import annotations

from shop import settings
from shop.events import (
    InventoryRejected,
    InventoryReleased,
    InventoryReserved,
    OrderPlaced,
    PaymentFailed,
)
from tidings import Context, Service

service = Service("inventory")


@service.on_startup
async def seed_stock(ctx: Context) -> None:
    """Give a fresh inventory its initial stock (a restart keeps what is there)."""
    for sku, quantity in settings.initial_stock().items():
        if await ctx.state.get("stock", sku) is None:
            await ctx.state.put("stock", sku, {"sku": sku, "available": quantity})


@service.on(OrderPlaced)
async def reserve(event: OrderPlaced, ctx: Context) -> None:
    stock = {line.sku: await ctx.state.get("stock", line.sku) for line in event.lines}
    wanted: dict[str, int] = {}
    for line in event.lines:
        wanted[line.sku] = wanted.get(line.sku, 0) + line.quantity
    short = [
        f"{sku} (wanted {qty}, have {stock[sku]['available'] if stock[sku] else 0})"
        for sku, qty in wanted.items()
        if stock[sku] is None or stock[sku]["available"] < qty  # type: ignore[index]
    ]
    if short:
        ctx.publish(
            InventoryRejected(order_id=event.order_id, reason="out of stock: " + ", ".join(short))
        )
        return
    for sku, qty in wanted.items():
        item = stock[sku]
        assert item is not None
        item["available"] -= qty
        await ctx.state.put("stock", sku, item)
    await ctx.state.put(
        "reservations",
        event.order_id,
        {
            "order_id": event.order_id,
            "lines": [line.model_dump() for line in event.lines],
            "released": False,
        },
    )
    ctx.publish(
        InventoryReserved(
            order_id=event.order_id,
            customer_id=event.customer_id,
            lines=event.lines,
            amount_cents=event.amount_cents,
        )
    )


@service.on(PaymentFailed)
async def release(event: PaymentFailed, ctx: Context) -> None:
    """Compensation: put the reserved units back on the shelf."""
    reservation = await ctx.state.get("reservations", event.order_id)
    if reservation is None or reservation["released"]:
        return
    for line in reservation["lines"]:
        item = await ctx.state.get("stock", line["sku"])
        assert item is not None, f"reserved sku {line['sku']} has no stock record"
        item["available"] += line["quantity"]
        await ctx.state.put("stock", line["sku"], item)
    reservation["released"] = True
    await ctx.state.put("reservations", event.order_id, reservation)
    ctx.publish(
        InventoryReleased(
            order_id=event.order_id,
            lines=reservation["lines"],
            reason=f"payment failed: {event.reason}",
        )
    )
