"""Inventory: reserves stock for placed orders and releases it when payment fails.

Stock is conserved: every unit is either on the shelf (``stock``) or held by exactly one
reservation (``reservations``), and a reservation is released at most once.

An order placed in choreography (``OrderPlaced.saga``, from the order service's
``SHOP_SAGA``; :mod:`shop.settings`) is reserved on OrderPlaced and released on
PaymentFailed; for one placed in orchestration it answers the order saga's
ReserveInventory and ReleaseInventory commands instead, each command id once
(:mod:`tidings.saga.commands`). The decision is per order, carried on each event, never
this process's own setting.
A release for an order it never reserved (the reservation timed out before it came, say)
leaves a released tombstone, so a ReserveInventory for that order arriving later is
refused rather than holding stock for a cancelled order.

Stock counted or moved by hand in the back office reaches the shelf as StockAdjusted
(:mod:`shop.acl`): the shelf changes by the adjustment, once per event (the inbox drops
a redelivered one), and never below zero: units held by reservations are off the shelf,
so a count that finds fewer than that leaves none to sell.
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
    ReleaseInventory,
    ReserveInventory,
    StockAdjusted,
)
from shop.settings import CHOREOGRAPHY, ORCHESTRATION
from tidings import Context, Event, Service
from tidings.saga import answer, answered

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


async def _reserve(
    ctx: Context,
    order_id: str,
    customer_id: str,
    lines: list[OrderLine],
    amount_cents: int,
    saga: str,
) -> Event:
    """Take the lines off the shelf for ``order_id`` if all are there; the event saying so
    (carrying on how the order's saga runs)."""
    held = await ctx.get(reservations, order_id)
    if held is not None:  # released before it came, or reserved by an earlier request
        if held.released:
            return InventoryRejected(
                order_id=order_id, reason="order released before reserving", saga=saga
            )
        return InventoryReserved(
            order_id=order_id,
            customer_id=customer_id,
            lines=held.lines,
            amount_cents=amount_cents,
            saga=saga,
        )
    wanted: dict[str, int] = {}
    for line in lines:
        wanted[line.sku] = wanted.get(line.sku, 0) + line.quantity
    shelf = {sku: await ctx.get(stock, sku) for sku in wanted}
    short = [
        f"{sku} (wanted {qty}, have {item.available if item else 0})"
        for sku, qty in wanted.items()
        if (item := shelf[sku]) is None or item.available < qty
    ]
    if short:
        reason = "out of stock: " + ", ".join(short)
        return InventoryRejected(order_id=order_id, reason=reason, saga=saga)
    for sku, qty in wanted.items():
        item = shelf[sku]
        assert item is not None
        await ctx.put(stock, sku, StockItem(sku=sku, available=item.available - qty))
    await ctx.put(reservations, order_id, Reservation(order_id=order_id, lines=lines))
    return InventoryReserved(
        order_id=order_id,
        customer_id=customer_id,
        lines=lines,
        amount_cents=amount_cents,
        saga=saga,
    )


async def _release(ctx: Context, order_id: str, reason: str, saga: str) -> InventoryReleased | None:
    """Compensation: put the reserved units back on the shelf; None if released already.
    An order never reserved gets a released tombstone and a release of no lines."""
    reservation = await ctx.get(reservations, order_id)
    if reservation is None:
        await ctx.put(
            reservations, order_id, Reservation(order_id=order_id, lines=[], released=True)
        )
        return InventoryReleased(order_id=order_id, lines=[], reason=reason, saga=saga)
    if reservation.released:
        return None
    for line in reservation.lines:
        item = await ctx.get(stock, line.sku)
        assert item is not None, f"reserved sku {line.sku} has no stock record"
        await ctx.put(
            stock, line.sku, StockItem(sku=line.sku, available=item.available + line.quantity)
        )
    await ctx.put(reservations, order_id, reservation.model_copy(update={"released": True}))
    return InventoryReleased(order_id=order_id, lines=reservation.lines, reason=reason, saga=saga)


# -- choreography: react to the other services' events (orders placed so) ---------------
@service.on
async def reserve(event: OrderPlaced, ctx: Context) -> None:
    if event.saga != CHOREOGRAPHY:
        return  # the order saga sends ReserveInventory
    ctx.publish(
        await _reserve(
            ctx, event.order_id, event.customer_id, event.lines, event.amount_cents, event.saga
        )
    )


@service.on
async def release(event: PaymentFailed, ctx: Context) -> None:
    """Compensation: put the reserved units back on the shelf."""
    if event.saga != CHOREOGRAPHY:
        return  # the order saga sends ReleaseInventory
    reservation = await ctx.get(reservations, event.order_id)
    if reservation is None:  # not reserved here: nothing to give back
        return
    released = await _release(ctx, event.order_id, f"payment failed: {event.reason}", event.saga)
    if released is not None:
        ctx.publish(released)


@service.on
async def adjust(event: StockAdjusted, ctx: Context) -> None:
    """The back office counted or moved stock: the shelf changes by as much (see above)."""
    item = await ctx.get(stock, event.sku)
    available = (item.available if item else 0) + event.change
    await ctx.put(stock, event.sku, StockItem(sku=event.sku, available=max(available, 0)))


# -- orchestration: answer the order saga's commands -----------------------------------
@service.on
async def reserve_command(command: ReserveInventory, ctx: Context) -> None:
    if await answered(ctx, command):
        return
    reply = await _reserve(
        ctx,
        command.order_id,
        command.customer_id,
        command.lines,
        command.amount_cents,
        ORCHESTRATION,
    )
    await answer(ctx, command, reply)


@service.on
async def release_command(command: ReleaseInventory, ctx: Context) -> None:
    if await answered(ctx, command):
        return
    released = await _release(ctx, command.order_id, command.reason, ORCHESTRATION)
    # Released before (by another command id): say so with no lines, so the saga moves on.
    reply = released or InventoryReleased(
        order_id=command.order_id, lines=[], reason=command.reason, saga=ORCHESTRATION
    )
    await answer(ctx, command, reply)
