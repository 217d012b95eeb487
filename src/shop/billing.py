"""Billing: takes payment for reserved orders, with a simulator that can be told to fail.

A payment is taken at most once per order: the inbox already makes a redelivered event a
no-op, and the ``payments`` record per order is a second guard for the same event
published twice (say, by a relay that crashed after publishing and before deleting).
"""

from __future__ import annotations

import random

from shop import settings
from shop.events import InventoryReserved, PaymentFailed, PaymentProcessed
from tidings import Context, Service, new_event_id

service = Service("billing")


def _declined_by_bank(order_id: str) -> bool:
    # Seeded per order, so a redelivery or a rerun with the same seed decides the same way.
    rate = settings.payment_failure_rate()
    return rate > 0 and random.Random(f"{settings.seed()}:{order_id}").random() < rate


@service.on(InventoryReserved)
async def charge(event: InventoryReserved, ctx: Context) -> None:
    if await ctx.state.get("payments", event.order_id) is not None:
        return
    customer = await ctx.state.get("customers", event.customer_id) or {
        "customer_id": event.customer_id,
        "spent_cents": 0,
    }
    limit = settings.credit_limits().get(event.customer_id, settings.default_credit_cents())
    reason = None
    if customer["spent_cents"] + event.amount_cents > limit:
        reason = f"credit limit of {limit} cents exceeded"
    elif _declined_by_bank(event.order_id):
        reason = "declined by the card issuer"
    if reason is not None:
        ctx.publish(PaymentFailed(order_id=event.order_id, customer_id=event.customer_id, reason=reason))
        return
    payment_id = new_event_id()
    customer["spent_cents"] += event.amount_cents
    await ctx.state.put("customers", event.customer_id, customer)
    await ctx.state.put(
        "payments",
        event.order_id,
        {"payment_id": payment_id, "order_id": event.order_id, "customer_id": event.customer_id,
         "amount_cents": event.amount_cents},
    )
    ctx.publish(
        PaymentProcessed(
            order_id=event.order_id,
            payment_id=payment_id,
            customer_id=event.customer_id,
            amount_cents=event.amount_cents,
        )
    )
