"""Inventory: reserves stock for placed orders and releases it when payment fails.

Stock is conserved: every unit is either on the shelf (``stock``) or held by exactly one
reservation (``reservations``), and a reservation is released at most once.
"""

from __future__ import annotations

from pydantic import BaseModel

from shop import settings
from shop.events import (
    InventoryRejected,
    InventoryReleased,
    InventoryReserved,
    OrderLine,
    OrderPlaced,
    PaymentFailed,
)
from tidings import Context, Service

service = Service("inventory", publishes=[InventoryReserved, InventoryRejected, InventoryReleased])


class StockItem(BaseModel):
    sku: str
    available: int


class Reservation(BaseModel):
    order_id: str
    lines: list[OrderLine]
    released: bool = False


stock = service.collection("stock", StockItem)
reservations = service.collection("reservations", Reservation)


@service.on_startup
async def seed_stock(ctx: Context) -> None:
    """Give a fresh inventory its initial stock (a restart keeps what is there)."""
    for sku, quantity in settings.initial_stock().items():
        if await ctx.get(stock, sku) is None:
            await ctx.put(stock, sku, StockItem(sku=sku, available=quantity))


@service.on
async def reserve(event: OrderPlaced, ctx: Context) -> None:
    wanted: dict[str, int] = {}
    for line in event.lines:
        wanted[line.sku] = wanted.get(line.sku, 0) + line.quantity
    shelf = {sku: await ctx.get(stock, sku) for sku in wanted}
    short = [
        f"{sku} (wanted {qty}, have {item.available if item else 0})"
        for sku, qty in wanted.items()
        if (item := shelf[sku]) is None or item.available < qty
    ]
    if short:
        ctx.publish(
            InventoryRejected(order_id=event.order_id, reason="out of stock: " + ", ".join(short))
        )
        return
    for sku, qty in wanted.items():
        item = shelf[sku]
        assert item is not None
        await ctx.put(stock, sku, StockItem(sku=sku, available=item.available - qty))
    await ctx.put(
        reservations, event.order_id, Reservation(order_id=event.order_id, lines=event.lines)
    )
    ctx.publish(
        InventoryReserved(
            order_id=event.order_id,
            customer_id=event.customer_id,
            lines=event.lines,
            amount_cents=event.amount_cents,
        )
    )


@service.on
async def release(event: PaymentFailed, ctx: Context) -> None:
    """Compensation: put the reserved units back on the shelf."""
    reservation = await ctx.get(reservations, event.order_id)
    if reservation is None or reservation.released:
        return
    for line in reservation.lines:
        item = await ctx.get(stock, line.sku)
        assert item is not None, f"reserved sku {line.sku} has no stock record"
        await ctx.put(
            stock, line.sku, StockItem(sku=line.sku, available=item.available + line.quantity)
        )
    await ctx.put(reservations, event.order_id, reservation.model_copy(update={"released": True}))
    ctx.publish(
        InventoryReleased(
            order_id=event.order_id,
            lines=reservation.lines,
            reason=f"payment failed: {event.reason}",
        )
    )
