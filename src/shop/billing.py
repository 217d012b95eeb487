"""Billing: takes payment for reserved orders, with a simulator that can be told to fail.

A payment is taken at most once per order: the inbox already makes a redelivered event a
no-op, and the ``payments`` record per order is a second guard for the same event
published twice (say, by a relay that crashed after publishing and before deleting).

Fraud review holds: the risk team keeps a watch list (``SHOP_FRAUD_HOLD_FILE``). Billing
will not charge a customer on it, and will not decline the order either: that is the
reviewer's call. It raises :class:`PaymentHeldForReview`, a non-recoverable error, so the
InventoryReserved event goes to the dead letters at once (``billing.dlq``), which serve as
the review queue. The reviewer clears the customer (removes them from the file) and
replays the dead letter (``tidings dlq replay billing ...`` or the dashboard's button):
billing then charges as usual and the order completes. Left on the list, a replay is
dead-lettered again.
"""

from __future__ import annotations

import logging
import random

from pydantic import BaseModel

from shop import settings
from shop.events import InventoryReserved, PaymentFailed, PaymentProcessed
from tidings import Context, NonRecoverable, Service, new_event_id

service = Service("billing", publishes=[PaymentProcessed, PaymentFailed])
log = logging.getLogger("shop.billing")


class Account(BaseModel):
    customer_id: str
    spent_cents: int = 0


class Payment(BaseModel):
    payment_id: str
    order_id: str
    customer_id: str
    amount_cents: int


accounts = service.collection("customers", Account)
payments = service.collection("payments", Payment)


class PaymentHeldForReview(NonRecoverable):
    """The customer is on the fraud watch list: a person must clear them before we charge."""


def _declined_by_bank(order_id: str) -> bool:
    # Seeded per order, so a redelivery or a rerun with the same seed decides the same way.
    rate = settings.payment_failure_rate()
    return rate > 0 and random.Random(f"{settings.seed()}:{order_id}").random() < rate


@service.on
async def charge(event: InventoryReserved, ctx: Context) -> None:
    if await ctx.get(payments, event.order_id) is not None:
        return
    if event.customer_id in settings.fraud_hold_customers():
        log.warning("payment of order %s held for fraud review", event.order_id)
        raise PaymentHeldForReview(
            f"customer {event.customer_id} is on the fraud watch list; "
            "clear them, then replay this dead letter"
        )
    account = await ctx.get(accounts, event.customer_id) or Account(customer_id=event.customer_id)
    limit = settings.credit_limits().get(event.customer_id, settings.default_credit_cents())
    reason = None
    if account.spent_cents + event.amount_cents > limit:
        reason = f"credit limit of {limit} cents exceeded"
    elif _declined_by_bank(event.order_id):
        reason = "declined by the card issuer"
    if reason is not None:
        ctx.publish(
            PaymentFailed(order_id=event.order_id, customer_id=event.customer_id, reason=reason)
        )
        return
    payment = Payment(
        payment_id=new_event_id(),
        order_id=event.order_id,
        customer_id=event.customer_id,
        amount_cents=event.amount_cents,
    )
    spent = account.spent_cents + event.amount_cents
    await ctx.put(accounts, event.customer_id, account.model_copy(update={"spent_cents": spent}))
    await ctx.put(payments, event.order_id, payment)
    ctx.publish(
        PaymentProcessed(
            order_id=event.order_id,
            payment_id=payment.payment_id,
            customer_id=event.customer_id,
            amount_cents=event.amount_cents,
        )
    )
