"""Billing: takes payment for reserved orders, with a simulator that can be told to fail.

Each customer's account is an event-sourced ledger (:class:`Account`): its credit limit,
the charges and the refunds are events in its stream, published on ``shop.accounts`` as
they are saved, and its state is what they add up to. ``tidings history account c01``
prints the audit trail, and the state at a past time with ``--at``.

A payment is taken at most once per order: the inbox already makes a redelivered event a
no-op, and the ``payments`` record per order is a second guard for the same event
published twice (say, by a relay that crashed after publishing and before deleting); the
account refuses to charge one order twice as well.

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
from shop.events import (
    AccountCharged,
    AccountRefunded,
    ChargeDeclined,
    CreditLimitChanged,
    CreditLimitSet,
    CustomerRegistered,
    InventoryReserved,
    PaymentFailed,
    PaymentProcessed,
)
from tidings import Aggregate, Context, NonRecoverable, Service, applies, new_event_id

service = Service(
    "billing",
    publishes=[
        PaymentProcessed,
        PaymentFailed,
        CreditLimitSet,
        AccountCharged,
        ChargeDeclined,
        AccountRefunded,
    ],
)
log = logging.getLogger("shop.billing")


class Account(Aggregate, snapshot_every=50):
    """A customer's account: what they may spend and what they have spent, per order.

    Commands check, then record; the ``@applies`` mutators only change the state, and are
    what loading replays.
    """

    limit_cents: int | None = None  # None until a limit is set: nothing may be charged
    spent_cents: int = 0
    charges: dict[str, int] = {}  # order id -> cents, for the charges not refunded
    refunded: list[str] = []  # order ids

    def set_limit(self, limit_cents: int) -> None:
        """Record the limit in force, if it is not the one the account has."""
        if limit_cents < 0:
            raise ValueError(f"a credit limit is not negative: {limit_cents}")
        if limit_cents != self.limit_cents:
            self.record(CreditLimitSet(customer_id=self.id, limit_cents=limit_cents))

    def refusal(self, order_id: str, amount_cents: int) -> str | None:
        """Why a charge of ``amount_cents`` for ``order_id`` would be refused, if it would."""
        if order_id in self.charges or order_id in self.refunded:
            return f"order {order_id} was charged already"
        limit = self.limit_cents or 0
        if self.spent_cents + amount_cents > limit:
            return f"credit limit of {limit} cents exceeded"
        return None

    def charge(self, order_id: str, payment_id: str, amount_cents: int) -> None:
        reason = self.refusal(order_id, amount_cents)
        if reason is not None:
            raise ValueError(f"account {self.id}: {reason}")
        self.record(
            AccountCharged(
                customer_id=self.id,
                order_id=order_id,
                payment_id=payment_id,
                amount_cents=amount_cents,
            )
        )

    def decline(self, order_id: str, amount_cents: int, reason: str) -> None:
        self.record(
            ChargeDeclined(
                customer_id=self.id, order_id=order_id, amount_cents=amount_cents, reason=reason
            )
        )

    def refund(self, order_id: str, reason: str) -> None:
        """Give back the whole charge of ``order_id``; ValueError if there is none."""
        if order_id not in self.charges:
            raise ValueError(f"account {self.id}: order {order_id} has no charge to refund")
        self.record(
            AccountRefunded(
                customer_id=self.id,
                order_id=order_id,
                amount_cents=self.charges[order_id],
                reason=reason,
            )
        )

    @applies(CreditLimitSet)
    def _limit_set(self, event: CreditLimitSet) -> None:
        self.limit_cents = event.limit_cents

    @applies(AccountCharged)
    def _charged(self, event: AccountCharged) -> None:
        self.spent_cents += event.amount_cents
        self.charges = {**self.charges, event.order_id: event.amount_cents}

    @applies(ChargeDeclined)
    def _declined(self, event: ChargeDeclined) -> None:
        pass  # kept for the audit trail; the balance does not change

    @applies(AccountRefunded)
    def _refunded(self, event: AccountRefunded) -> None:
        self.spent_cents -= event.amount_cents
        self.charges = {k: v for k, v in self.charges.items() if k != event.order_id}
        self.refunded = [*self.refunded, event.order_id]


class Payment(BaseModel):
    payment_id: str
    order_id: str
    customer_id: str
    amount_cents: int


payments = service.collection("payments", Payment)


class CreditLine(BaseModel):
    """A customer's limit as the back office last told it (CustomerRegistered,
    CreditLimitChanged); customers it never told of get ``shop.settings``' limits."""

    limit_cents: int


credit_lines = service.collection("credit_lines", CreditLine)


@service.on
async def on_customer(event: CustomerRegistered | CreditLimitChanged, ctx: Context) -> None:
    limit = event.credit_limit_cents if isinstance(event, CustomerRegistered) else event.limit_cents
    await ctx.put(credit_lines, event.customer_id, CreditLine(limit_cents=limit))


service.aggregate(Account)


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
    account = await ctx.load(Account, event.customer_id) or Account(id=event.customer_id)
    told = await ctx.get(credit_lines, event.customer_id)
    account.set_limit(
        told.limit_cents
        if told is not None
        else settings.credit_limits().get(event.customer_id, settings.default_credit_cents())
    )
    reason = account.refusal(event.order_id, event.amount_cents)
    if reason is None and _declined_by_bank(event.order_id):
        reason = "declined by the card issuer"
    if reason is not None:
        account.decline(event.order_id, event.amount_cents, reason)
        await ctx.save(account)
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
    account.charge(event.order_id, payment.payment_id, event.amount_cents)
    await ctx.save(account)
    await ctx.put(payments, event.order_id, payment)
    ctx.publish(
        PaymentProcessed(
            order_id=event.order_id,
            payment_id=payment.payment_id,
            customer_id=event.customer_id,
            amount_cents=event.amount_cents,
        )
    )
