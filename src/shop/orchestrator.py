"""The order saga, orchestrated: one process manager per order sends each step's command
and awaits its reply (run with ``SHOP_SAGA=orchestration``; see :mod:`shop.settings`).

    placed ──ReserveInventory──> reserving ──InventoryReserved──> charging ──PaymentProcessed──> completed
                                   │ InventoryRejected               │ PaymentFailed
                                   v                                 v
                               cancelled        releasing <──ReleaseInventory── (payment failed)
                                                   │ InventoryReleased
                                                   v
                                               cancelled

Deadlines: each step awaits its reply for ``SHOP_STEP_TIMEOUT`` seconds. A forward step
(reserving, charging) that times out is compensated: ReleaseInventory (which releases
whatever was reserved, or leaves a tombstone if nothing was) and, if the charge may have
been taken, CancelPayment (refund, or void a charge still to come; no reply awaited, so
a billing that is down cannot block the cancellation), then the order is cancelled with
the reason "timed out". A compensation that times out is sent again with the same
command id (inventory answers it once) until it is answered: a saga does not give up
half-compensated.

The transitions are plain functions of (message, state); :class:`tidings.saga.Saga`
persists the state, sends, arms and disarms the deadlines, and ignores what does not
apply (a late reply, a reply for a finished saga, a timer that fired twice).
"""

from __future__ import annotations

from shop import settings
from shop.events import (
    CancelPayment,
    ChargePayment,
    InventoryRejected,
    InventoryReleased,
    InventoryReserved,
    OrderCancelled,
    OrderCompleted,
    OrderLine,
    OrderPlaced,
    PaymentFailed,
    PaymentProcessed,
    ReleaseInventory,
    ReserveInventory,
)
from shop.settings import ORCHESTRATION
from tidings import Service
from tidings.saga import Saga, SagaState

service = Service(
    "orchestrator",
    publishes=[
        ReserveInventory,
        ReleaseInventory,
        ChargePayment,
        CancelPayment,
        OrderCompleted,
        OrderCancelled,
    ],
)

TIMED_OUT = "timed out"


class OrderSaga(SagaState):
    """What the saga knows of its order, beside the machine's own fields."""

    customer_id: str = ""
    lines: list[OrderLine] = []
    amount_cents: int = 0
    reason: str | None = None  # why it is being cancelled, once it is


saga = Saga(service, "order", OrderSaga)


@saga.starts
def placed(event: OrderPlaced, s: OrderSaga) -> None:
    if event.saga != ORCHESTRATION:  # placed in choreography: no saga is started
        return
    s.customer_id, s.lines, s.amount_cents = event.customer_id, event.lines, event.amount_cents
    s.send(
        ReserveInventory(
            command_id=s.command_id("reserve"),
            order_id=s.id,
            customer_id=s.customer_id,
            lines=s.lines,
            amount_cents=s.amount_cents,
        )
    )
    s.expect("reserving", InventoryReserved, InventoryRejected, within=settings.step_timeout())


@saga.on
def reserved(event: InventoryReserved, s: OrderSaga) -> None:
    s.send(
        ChargePayment(
            command_id=s.command_id("charge"),
            order_id=s.id,
            customer_id=s.customer_id,
            amount_cents=s.amount_cents,
        )
    )
    s.expect("charging", PaymentProcessed, PaymentFailed, within=settings.step_timeout())


@saga.on
def rejected(event: InventoryRejected, s: OrderSaga) -> None:
    s.reason = event.reason
    s.finish("cancelled", OrderCancelled(order_id=s.id, reason=event.reason))


@saga.on
def paid(event: PaymentProcessed, s: OrderSaga) -> None:
    s.finish("completed", OrderCompleted(order_id=s.id, payment_id=event.payment_id))


@saga.on
def payment_failed(event: PaymentFailed, s: OrderSaga) -> None:
    _compensate(s, f"payment failed: {event.reason}", cancel_payment=False)


@saga.on
def released(event: InventoryReleased, s: OrderSaga) -> None:
    reason = s.reason or event.reason
    s.finish("cancelled", OrderCancelled(order_id=s.id, reason=reason))


@saga.on_timeout
def timed_out(s: OrderSaga) -> None:
    if s.step == "releasing":  # a compensation is sent again until it is answered
        _compensate(s, s.reason or TIMED_OUT, cancel_payment=False)
    else:  # reserving or charging: give up the order and undo what may have been done
        _compensate(s, TIMED_OUT, cancel_payment=s.step == "charging")


def _compensate(s: OrderSaga, reason: str, *, cancel_payment: bool) -> None:
    s.reason = reason
    s.send(ReleaseInventory(command_id=s.command_id("release"), order_id=s.id, reason=reason))
    if cancel_payment:
        s.send(
            CancelPayment(command_id=s.command_id("cancel-payment"), order_id=s.id, reason=reason)
        )
    s.expect("releasing", InventoryReleased, within=settings.step_timeout())
