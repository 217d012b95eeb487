"""Order: accepts orders over HTTP, follows each through its events, ends it.

The ``orders`` collection is this service's read model: one document per order with its
status and the events that concern it (CQRS: the HTTP API reads only this).
"""

from __future__ import annotations

from typing import Any

from shop.catalog import PRICES_CENTS
from shop.events import (
    InventoryRejected,
    InventoryReleased,
    InventoryReserved,
    OrderCancelled,
    OrderCompleted,
    OrderPlaced,
    PaymentFailed,
    PaymentProcessed,
    PlaceOrder,
)
from tidings import Context, Envelope, Event, Service, new_event_id

service = Service("order")
service.http_app = "shop.order_api:app"

FINAL = ("COMPLETED", "CANCELLED")
# Status only moves forward: events from different topics may arrive in either order.
RANK = {"PLACED": 0, "RESERVED": 1, "PAYMENT_FAILED": 2, "COMPLETED": 3, "CANCELLED": 3}


class UnknownProduct(ValueError):
    pass


def _history_entry(envelope: Envelope) -> dict[str, Any]:
    return {
        "id": envelope.id,
        "type": envelope.type,
        "source": envelope.source,
        "time": envelope.time.isoformat(),
        "causation_id": envelope.causationid,
        "data": envelope.data,
    }


async def place_order(command: PlaceOrder, ctx: Context) -> dict[str, Any]:
    """Record a new order and publish OrderPlaced, in one unit of work."""
    unknown = sorted({line.sku for line in command.lines} - PRICES_CENTS.keys())
    if unknown:
        raise UnknownProduct(
            f"unknown sku(s): {', '.join(unknown)}; we sell {', '.join(PRICES_CENTS)}"
        )
    order_id = new_event_id()
    amount = sum(PRICES_CENTS[line.sku] * line.quantity for line in command.lines)
    envelope = ctx.publish(
        OrderPlaced(
            order_id=order_id,
            customer_id=command.customer_id,
            lines=command.lines,
            amount_cents=amount,
        )
    )
    order = {
        "order_id": order_id,
        "customer_id": command.customer_id,
        "lines": [line.model_dump() for line in command.lines],
        "amount_cents": amount,
        "status": "PLACED",
        "reason": None,
        "correlation_id": envelope.correlationid,
        "placed_at": envelope.time.isoformat(),
        "history": [_history_entry(envelope)],
    }
    await ctx.state.put("orders", order_id, order)
    return order


async def _advance(
    ctx: Context, order_id: str, status: str, reason: str | None = None, effect: Event | None = None
) -> None:
    order = await ctx.state.get("orders", order_id)
    if order is None:  # not ours (an order placed before this store existed): ignore
        return
    assert ctx.cause is not None
    entries = [ctx.cause]
    if order["status"] not in FINAL and RANK[status] > RANK[order["status"]]:
        order["status"] = status
        if reason is not None:
            order["reason"] = reason
        if effect is not None:
            entries.append(ctx.publish(effect))
        order["updated_at"] = ctx.cause.time.isoformat()
    order["history"].extend(_history_entry(e) for e in entries)
    order["history"].sort(key=lambda entry: entry["id"])  # UUIDv7: time order
    await ctx.state.put("orders", order_id, order)


@service.on(InventoryReserved)
async def on_reserved(event: InventoryReserved, ctx: Context) -> None:
    await _advance(ctx, event.order_id, "RESERVED")


@service.on(PaymentFailed)
async def on_payment_failed(event: PaymentFailed, ctx: Context) -> None:
    await _advance(ctx, event.order_id, "PAYMENT_FAILED", event.reason)


@service.on(PaymentProcessed)
async def on_paid(event: PaymentProcessed, ctx: Context) -> None:
    await _advance(
        ctx,
        event.order_id,
        "COMPLETED",
        effect=OrderCompleted(order_id=event.order_id, payment_id=event.payment_id),
    )


@service.on(InventoryRejected, InventoryReleased)
async def on_cancelled(event: InventoryRejected | InventoryReleased, ctx: Context) -> None:
    await _advance(
        ctx,
        event.order_id,
        "CANCELLED",
        event.reason,
        effect=OrderCancelled(order_id=event.order_id, reason=event.reason),
    )
