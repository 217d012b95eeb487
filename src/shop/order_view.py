"""The order view: one row per order with its status and the events that concern it.

An inline projection of the order service (:mod:`tidings.projection`), so that:

* ``POST /orders`` then ``GET /orders/{id}`` finds the order: the request's own
  OrderPlaced is applied in the request's unit of work, and so is every end the service
  publishes (choreography), which its handlers read to decide (an order ends once);
* on a broker with history the projector folds the other services' events
  (InventoryReserved, PaymentProcessed, the orchestrator's ends, ...) from their topics,
  and ``tidings projection rebuild shop.order:service orders`` replays them all;
* on a broker without history (RabbitMQ, SQS, EventBridge) the service's subscriptions
  feed it: each event the service consumes is applied in its handler's unit of work.

The rules of the fold, which make it the same whatever order events arrive in (topics are
read by offset each, in no order between them) and idempotent per event id:

* an event already in the row's history changes nothing;
* status only moves forward (:data:`RANK`) and never leaves an end; only the order's own
  events end it (OrderCompleted, OrderCancelled), so a choreography or an orchestration
  run folds the same way;
* an event that comes before its order's OrderPlaced is kept in a row that is not placed
  yet (``placed_at`` None), which reads as no order; OrderPlaced of another source than
  the order service is not an order this service took, and is not applied.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from shop.events import (
    InventoryRejected,
    InventoryReleased,
    InventoryReserved,
    OrderCancelled,
    OrderCompleted,
    OrderLine,
    OrderPlaced,
    PaymentFailed,
    PaymentProcessed,
)
from tidings import Envelope
from tidings.projection import Projection, ProjectionContext, ProjectionView

SERVICE = "order"
FINAL = ("COMPLETED", "CANCELLED")
RANK = {"PLACED": 0, "RESERVED": 1, "PAYMENT_FAILED": 2, "COMPLETED": 3, "CANCELLED": 3}


class HistoryEntry(BaseModel):
    id: str
    type: str
    source: str
    time: str
    causation_id: str | None
    data: dict[str, Any]


class Order(BaseModel):
    order_id: str
    customer_id: str = ""
    lines: list[OrderLine] = []
    amount_cents: int = 0
    status: str = "PLACED"
    reason: str | None = None
    correlation_id: str | None = None
    placed_at: str | None = None  # None: its OrderPlaced is not applied yet
    updated_at: str | None = None
    history: list[HistoryEntry] = []

    def summary(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude={"history"})


view = Projection("orders", SERVICE, inline=True)
orders = view.collection("orders", Order)


def _entry(envelope: Envelope) -> HistoryEntry:
    return HistoryEntry(
        id=envelope.id,
        type=envelope.type,
        source=envelope.source,
        time=envelope.time.isoformat(),
        causation_id=envelope.causationid,
        data=envelope.data,
    )


async def _fold(
    view: ProjectionContext,
    order_id: str,
    status: str | None = None,
    reason: str | None = None,
    placed: dict[str, Any] | None = None,
) -> None:
    """Note the event in hand in the order's row, moving its status forward to ``status``."""
    envelope = view.envelope
    row = await view.get(orders, order_id) or Order(order_id=order_id)
    if any(entry.id == envelope.id for entry in row.history):
        return  # applied already
    changes: dict[str, Any] = dict(placed or {})
    if status is not None and row.status not in FINAL and RANK[status] > RANK[row.status]:
        changes.update(status=status, updated_at=envelope.time.isoformat())
        if reason is not None:
            changes["reason"] = reason
    history = sorted([*row.history, _entry(envelope)], key=lambda entry: entry.id)  # UUIDv7
    await view.put(orders, order_id, row.model_copy(update={**changes, "history": history}))


def placed_row(event: OrderPlaced, envelope: Envelope) -> Order:
    """The row of an order that only its OrderPlaced was applied to."""
    return Order(
        order_id=event.order_id,
        customer_id=event.customer_id,
        lines=event.lines,
        amount_cents=event.amount_cents,
        correlation_id=envelope.correlationid,
        placed_at=envelope.time.isoformat(),
        history=[_entry(envelope)],
    )


@view.on
async def placed(event: OrderPlaced, view: ProjectionContext) -> None:
    if view.envelope.source != SERVICE:
        return  # not an order this service took
    row = placed_row(event, view.envelope)
    fields = ("customer_id", "lines", "amount_cents", "correlation_id", "placed_at")
    await _fold(view, event.order_id, placed={f: getattr(row, f) for f in fields})


@view.on
async def reserved(event: InventoryReserved, view: ProjectionContext) -> None:
    await _fold(view, event.order_id, "RESERVED")


@view.on
async def payment_failed(event: PaymentFailed, view: ProjectionContext) -> None:
    await _fold(view, event.order_id, "PAYMENT_FAILED", event.reason)


@view.on(PaymentProcessed, InventoryRejected, InventoryReleased)
async def noted(
    event: PaymentProcessed | InventoryRejected | InventoryReleased, view: ProjectionContext
) -> None:
    await _fold(view, event.order_id)


@view.on
async def completed(event: OrderCompleted, view: ProjectionContext) -> None:
    await _fold(view, event.order_id, "COMPLETED")


@view.on
async def cancelled(event: OrderCancelled, view: ProjectionContext) -> None:
    await _fold(view, event.order_id, "CANCELLED", event.reason)


# -- reads ---------------------------------------------------------------------------------
async def find(view: ProjectionView, order_id: str) -> Order | None:
    """The order ``order_id``, or None if this service did not take it (or not yet)."""
    order = await view.get(orders, order_id)
    return order if order is not None and order.placed_at is not None else None


async def page(
    view: ProjectionView, limit: int, after: str | None
) -> tuple[list[Order], str | None]:
    """Up to ``limit`` orders after the key ``after``, and the key to go on from (None: the
    end). Rows not placed yet are passed over, so a page may hold fewer than ``limit``."""
    rows = await view.list(orders, limit, after)
    following = rows[-1].order_id if len(rows) == limit else None
    return [r for r in rows if r.placed_at is not None], following
