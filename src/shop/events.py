"""The shop's messages. Events are facts (past tense); commands are requests (imperative).

Every event of an order is keyed by its ``order_id`` (the envelope's subject), so all of
them share one partition key and are seen in order by every consumer.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from tidings import Command, Event
from tidings.saga import SagaCommand

ORDERS = "shop.orders"
INVENTORY = "shop.inventory"
BILLING = "shop.billing"
ACCOUNTS = "shop.accounts"  # billing's ledger: the events of each customer's account
# Facts about customers, products and stock, told by the back office (today: the legacy
# monolith, through change data capture and the anti-corruption layer in shop.acl).
CUSTOMERS = "shop.customers"
CATALOG = "shop.catalog"
STOCK = "shop.stock"
# Orchestration (shop.orchestrator): the commands the order saga sends each service.
INVENTORY_COMMANDS = "shop.inventory.commands"
BILLING_COMMANDS = "shop.billing.commands"


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


class _SagaEvent(_OrderEvent, abstract=True):
    """An event of an order's saga, saying how that order's saga runs: fixed when it is
    placed (``SHOP_SAGA`` of the order service) and carried on by each event that follows,
    so every service decides per order, never by its own setting. A process started with
    another ``SHOP_SAGA`` so cannot strand an order (say, billing waiting for a command
    that never comes while inventory reacted in choreography). Events written before the
    field existed read as "choreography", the only mode there was."""

    saga: str = "choreography"  # or "orchestration"


class OrderPlaced(_SagaEvent, topic=ORDERS):
    customer_id: str
    lines: list[OrderLine]
    amount_cents: int


class OrderCompleted(_OrderEvent, topic=ORDERS):
    payment_id: str


class OrderCancelled(_OrderEvent, topic=ORDERS):
    reason: str


class InventoryReserved(_SagaEvent, topic=INVENTORY):
    customer_id: str
    lines: list[OrderLine]
    amount_cents: int


class InventoryRejected(_SagaEvent, topic=INVENTORY):
    reason: str


class InventoryReleased(_SagaEvent, topic=INVENTORY):
    lines: list[OrderLine]
    reason: str


class PaymentProcessed(_SagaEvent, topic=BILLING):
    payment_id: str
    customer_id: str
    amount_cents: int


class PaymentFailed(_SagaEvent, topic=BILLING):
    customer_id: str
    reason: str


class PaymentRefunded(_OrderEvent, topic=BILLING):
    """A charge given back: the order was cancelled after it was paid (orchestration)."""

    payment_id: str
    customer_id: str
    amount_cents: int
    reason: str


# -- the order saga's commands (orchestration); replies are the events above --------------
class _OrderCommand(SagaCommand, key="order_id", abstract=True):
    """Every command of an order is keyed by it: one partition, handled in the order sent."""

    order_id: str


class ReserveInventory(_OrderCommand, topic=INVENTORY_COMMANDS):
    """Reply: InventoryReserved or InventoryRejected."""

    customer_id: str
    lines: list[OrderLine]
    amount_cents: int


class ReleaseInventory(_OrderCommand, topic=INVENTORY_COMMANDS):
    """Compensation. Reply: InventoryReleased (with no lines if nothing was reserved)."""

    reason: str


class ChargePayment(_OrderCommand, topic=BILLING_COMMANDS):
    """Reply: PaymentProcessed or PaymentFailed."""

    customer_id: str
    amount_cents: int


class CancelPayment(_OrderCommand, topic=BILLING_COMMANDS):
    """Compensation, with no reply: refund the order's charge if it was taken, and refuse
    a ChargePayment for it that comes later."""

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
