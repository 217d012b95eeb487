"""Billing: takes payment for reserved orders, with a simulator that can be told to fail.

Each customer's account is an event-sourced ledger (:class:`Account`): its credit limit,
the charges and the refunds are events in its stream, published on ``shop.accounts`` as
they are saved, and its state is what they add up to. ``tidings history account c01``
prints the audit trail, and the state at a past time with ``--at``.

A payment is taken at most once per order: the inbox already makes a redelivered event a
no-op, and the ``payments`` record per order is a second guard for the same event
published twice (say, by a relay that crashed after publishing and before deleting); the
account refuses to charge one order twice as well.

An order placed in choreography (``saga`` on its events, from ``SHOP_SAGA`` where it was
placed) is charged on InventoryReserved; for one placed in orchestration billing answers
the order saga's ChargePayment and CancelPayment commands instead, each command id once
(:mod:`tidings.saga.commands`). CancelPayment is the saga's compensation when a
charge got no reply in time: a charge taken is refunded on the account (PaymentRefunded),
and an order not charged yet is voided, so a ChargePayment arriving after it is declined.

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
    CancelPayment,
    ChargeDeclined,
    ChargePayment,
    CreditLimitChanged,
    CreditLimitSet,
    CustomerRegistered,
    InventoryReserved,
    PaymentFailed,
    PaymentProcessed,
    PaymentRefunded,
)
from shop.settings import CHOREOGRAPHY, ORCHESTRATION
from tidings import Aggregate, Context, Event, NonRecoverable, Service, applies, new_event_id
from tidings.saga import answer, answered

service = Service(
    "billing",
    publishes=[
        PaymentProcessed,
        PaymentFailed,
        PaymentRefunded,
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
    refunded: bool = False


class Void(BaseModel):
    """An order whose payment was cancelled before any charge: it is never charged."""

    order_id: str
    reason: str


payments = service.collection("payments", Payment)
voids = service.collection("voids", Void)


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


async def _charge(
    ctx: Context, order_id: str, customer_id: str, amount_cents: int, saga: str
) -> Event:
    """Charge ``customer_id``'s account for ``order_id`` unless refused; the event saying so
    (carrying on how the order's saga runs)."""
    paid = await ctx.get(payments, order_id)
    if paid is not None:  # asked again: the same answer
        return PaymentProcessed(
            order_id=order_id,
            payment_id=paid.payment_id,
            customer_id=paid.customer_id,
            amount_cents=paid.amount_cents,
            saga=saga,
        )
    void = await ctx.get(voids, order_id)
    if void is not None:
        return PaymentFailed(
            order_id=order_id,
            customer_id=customer_id,
            reason=f"cancelled: {void.reason}",
            saga=saga,
        )
    if customer_id in settings.fraud_hold_customers():
        log.warning("payment of order %s held for fraud review", order_id)
        raise PaymentHeldForReview(
            f"customer {customer_id} is on the fraud watch list; "
            "clear them, then replay this dead letter"
        )
    account = await ctx.load(Account, customer_id) or Account(id=customer_id)
    told = await ctx.get(credit_lines, customer_id)
    account.set_limit(
        told.limit_cents
        if told is not None
        else settings.credit_limits().get(customer_id, settings.default_credit_cents())
    )
    reason = account.refusal(order_id, amount_cents)
    if reason is None and _declined_by_bank(order_id):
        reason = "declined by the card issuer"
    if reason is not None:
        account.decline(order_id, amount_cents, reason)
        await ctx.save(account)
        return PaymentFailed(order_id=order_id, customer_id=customer_id, reason=reason, saga=saga)
    payment = Payment(
        payment_id=new_event_id(),
        order_id=order_id,
        customer_id=customer_id,
        amount_cents=amount_cents,
    )
    account.charge(order_id, payment.payment_id, amount_cents)
    await ctx.save(account)
    await ctx.put(payments, order_id, payment)
    return PaymentProcessed(
        order_id=order_id,
        payment_id=payment.payment_id,
        customer_id=customer_id,
        amount_cents=amount_cents,
        saga=saga,
    )


@service.on
async def charge(event: InventoryReserved, ctx: Context) -> None:
    if event.saga != CHOREOGRAPHY:
        return  # the order saga sends ChargePayment
    if await ctx.get(payments, event.order_id) is not None:
        return
    ctx.publish(
        await _charge(ctx, event.order_id, event.customer_id, event.amount_cents, event.saga)
    )


@service.on
async def charge_command(command: ChargePayment, ctx: Context) -> None:
    if await answered(ctx, command):
        return
    reply = await _charge(
        ctx, command.order_id, command.customer_id, command.amount_cents, ORCHESTRATION
    )
    await answer(ctx, command, reply)


@service.on
async def cancel_command(command: CancelPayment, ctx: Context) -> None:
    """Refund the order's charge if it was taken; else void the order, so a charge that
    comes later is declined."""
    if await answered(ctx, command):
        return
    paid = await ctx.get(payments, command.order_id)
    if paid is None:
        await ctx.put(
            voids, command.order_id, Void(order_id=command.order_id, reason=command.reason)
        )
    elif not paid.refunded:
        account = await ctx.load(Account, paid.customer_id)
        assert account is not None, f"payment of order {paid.order_id} has no account"
        account.refund(paid.order_id, command.reason)
        await ctx.save(account)
        await ctx.put(payments, paid.order_id, paid.model_copy(update={"refunded": True}))
        ctx.publish(
            PaymentRefunded(
                order_id=paid.order_id,
                payment_id=paid.payment_id,
                customer_id=paid.customer_id,
                amount_cents=paid.amount_cents,
                reason=command.reason,
            )
        )
    await answer(ctx, command, None)
