"""The shop's messages. Events are facts (past tense); commands are requests (imperative).

Every event of an order is keyed by its ``order_id`` (the envelope's subject), so all of
them share one partition key and are seen in order by every consumer.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from tidings import Command, Event

ORDERS = "shop.orders"
INVENTORY = "shop.inventory"
BILLING = "shop.billing"


class OrderLine(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    sku: str = Field(min_length=1, max_length=64)
    quantity: int = Field(gt=0, le=1000)


class PlaceOrder(Command):
    """What a client asks for (the body of POST /orders)."""

    customer_id: str = Field(min_length=1, max_length=64)
    lines: list[OrderLine] = Field(min_length=1, max_length=20)


class _OrderEvent(Event, key="order_id", abstract=True):
    """Every event of an order is keyed by its order id (one partition, in order)."""

    order_id: str


class OrderPlaced(_OrderEvent, topic=ORDERS):
    customer_id: str
    lines: list[OrderLine]
    amount_cents: int


class OrderCompleted(_OrderEvent, topic=ORDERS):
    payment_id: str


class OrderCancelled(_OrderEvent, topic=ORDERS):
    reason: str


class InventoryReserved(_OrderEvent, topic=INVENTORY):
    customer_id: str
    lines: list[OrderLine]
    amount_cents: int


class InventoryRejected(_OrderEvent, topic=INVENTORY):
    reason: str


class InventoryReleased(_OrderEvent, topic=INVENTORY):
    lines: list[OrderLine]
    reason: str


class PaymentProcessed(_OrderEvent, topic=BILLING):
    payment_id: str
    customer_id: str
    amount_cents: int


class PaymentFailed(_OrderEvent, topic=BILLING):
    customer_id: str
    reason: str
