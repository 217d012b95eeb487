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
ACCOUNTS = "shop.accounts"  # billing's ledger: the events of each customer's account
# Facts about customers, products and stock, told by the back office (today: the legacy
# monolith, through change data capture and the anti-corruption layer in shop.acl).
CUSTOMERS = "shop.customers"
CATALOG = "shop.catalog"
STOCK = "shop.stock"


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


# -- billing's ledger: the events of a customer's account (an event-sourced aggregate) -----
class _AccountEvent(Event, key="customer_id", abstract=True):
    """Every event of an account is keyed by its customer (one stream, one partition)."""

    customer_id: str


class CreditLimitSet(_AccountEvent, topic=ACCOUNTS):
    limit_cents: int


class AccountCharged(_AccountEvent, topic=ACCOUNTS):
    order_id: str
    payment_id: str
    amount_cents: int


class ChargeDeclined(_AccountEvent, topic=ACCOUNTS):
    order_id: str
    amount_cents: int
    reason: str


class AccountRefunded(_AccountEvent, topic=ACCOUNTS):
    order_id: str
    amount_cents: int
    reason: str


# -- the back office's facts (published by shop.acl from the legacy system's changes) -----
class _CustomerEvent(Event, key="customer_id", abstract=True):
    customer_id: str


class CustomerRegistered(_CustomerEvent, topic=CUSTOMERS):
    name: str
    credit_limit_cents: int


class CreditLimitChanged(_CustomerEvent, topic=CUSTOMERS):
    limit_cents: int
    previous_cents: int | None = None


class CustomerClosed(_CustomerEvent, topic=CUSTOMERS):
    pass


class _ProductEvent(Event, key="sku", abstract=True):
    sku: str


class ProductPriced(_ProductEvent, topic=CATALOG):
    """A product's price in force from now on (a new product, or a price change)."""

    name: str
    price_cents: int


class ProductWithdrawn(_ProductEvent, topic=CATALOG):
    pass


class StockAdjusted(_ProductEvent, topic=STOCK):
    """Stock counted or moved by hand: ``change`` units (negative: fewer), and why."""

    change: int
    reason: str
