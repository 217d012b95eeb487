"""The anti-corruption layer: the legacy back office's table changes as the shop's events.

The legacy app (:mod:`legacy.app`) writes rows into ``cust``, ``prod`` and ``stk_adj``;
Debezium turns each committed change into a record on ``<prefix>.cust`` (...), where
``<prefix>`` is ``SHOP_LEGACY_TOPICS`` (default ``legacy``: what ``tidings cdc register``
was given as ``--topic-prefix``). This service reads them through the framework's
foreign-record decoder (:class:`tidings.cdc.debezium.Debezium`) and publishes what they
mean, in the shop's words; nothing downstream sees a legacy column name:

=====================================  ===============================================
legacy change                          published
=====================================  ===============================================
``cust`` row new (insert, snapshot)    ``CustomerRegistered(customer_id, name, credit_limit_cents)``
``cust.cr_lim`` changed                ``CreditLimitChanged(customer_id, limit_cents, previous_cents)``
``cust`` row deleted                   ``CustomerClosed(customer_id)``
``prod`` priced or repriced/renamed    ``ProductPriced(sku, name, price_cents)``
``prod`` row deleted                   ``ProductWithdrawn(sku)``
``stk_adj`` row inserted               ``StockAdjusted(sku, change, reason)``
=====================================  ===============================================

Rules:

* What was last published per customer and product is kept here (``customers``,
  ``products``), so "changed" is decided against it, whatever the table's replica
  identity puts in ``before``; a change that alters nothing the shop cares about (a
  timestamp, a column it does not read) publishes nothing.
* Unknown columns are ignored (the legacy team may add columns freely). A column the
  translation needs that is missing (renamed, dropped) or holds what cannot be read (a
  negative price, sub-cent money, an unknown reason code, an edited or deleted stock
  adjustment, a truncate) raises :class:`Untranslatable`: the change goes to this
  service's dead letters (``legacy-acl.dlq``) with the reason, and the next ones go on.
  A renamed column so stops that table's translation visibly, row by row, until the
  mapping here is updated and the dead letters replayed.
* Tombstones (Kafka's marker after a delete) are skipped by the decoder.
* Duplicates (Connect replaying after a crash) carry the same event ids (derived from
  the change's place in the log) and are dropped by the inbox.
"""

from __future__ import annotations

import os
from decimal import Decimal, InvalidOperation
from typing import Any

from pydantic import BaseModel

from shop.events import (
    CreditLimitChanged,
    CustomerClosed,
    CustomerRegistered,
    ProductPriced,
    ProductWithdrawn,
    StockAdjusted,
)
from tidings import Context, Event, NonRecoverable, Service
from tidings.cdc.debezium import Debezium

PREFIX = os.environ.get("SHOP_LEGACY_TOPICS", "legacy")
# Legacy reason codes of stock adjustments, in words.
REASONS = {"CNT": "stock count", "DMG": "damaged", "RCV": "received", "RET": "returned"}


class Untranslatable(NonRecoverable):
    """A legacy change this layer cannot express in the shop's terms; says why."""


class _RowChange(Event, abstract=True):
    """A Debezium change event of one legacy row, as :mod:`tidings.cdc.debezium` reads it."""

    operation: str
    before: dict[str, Any] | None = None
    after: dict[str, Any] | None = None
    table: str
    position: int | None = None


class CustomerRow(_RowChange, topic=f"{PREFIX}.cust", type="legacy.cust.changed"):
    pass


class ProductRow(_RowChange, topic=f"{PREFIX}.prod", type="legacy.prod.changed"):
    pass


class AdjustmentRow(_RowChange, topic=f"{PREFIX}.stk_adj", type="legacy.stk_adj.changed"):
    pass


service = Service(
    "legacy-acl",
    publishes=[
        CustomerRegistered,
        CreditLimitChanged,
        CustomerClosed,
        ProductPriced,
        ProductWithdrawn,
        StockAdjusted,
    ],
)
_decoder = Debezium({row.message_info.type.split(".")[1]: row.message_info.type
                     for row in (CustomerRow, ProductRow, AdjustmentRow)})  # fmt: skip
for _row in (CustomerRow, ProductRow, AdjustmentRow):
    service.foreign(f"{PREFIX}.{_row.message_info.type.split('.')[1]}", _decoder)


class KnownCustomer(BaseModel):
    limit_cents: int


class KnownProduct(BaseModel):
    name: str
    price_cents: int


customers = service.collection("customers", KnownCustomer)
products = service.collection("products", KnownProduct)


# -- reading legacy columns ---------------------------------------------------------------
def column(row: dict[str, Any] | None, name: str, change: _RowChange) -> Any:
    """``row[name]``; Untranslatable naming the columns there if it is missing."""
    if row is None or name not in row:
        present = ", ".join(sorted(row or {})) or "none"
        raise Untranslatable(
            f"{change.table}: column {name!r} missing from the {change.operation} change "
            f"(columns: {present}); renamed or dropped? update shop.acl's mapping"
        )
    return row[name]


def cents(value: Any, what: str) -> int:
    """Dollars as Debezium writes NUMERIC (a string, ``decimal.handling.mode=string``)
    in whole cents; Untranslatable for a negative, inexact or unreadable amount."""
    try:
        amount = Decimal(str(value)) * 100
    except InvalidOperation:
        raise Untranslatable(f"{what}: {value!r} is not an amount") from None
    if amount < 0 or amount != amount.to_integral_value():
        raise Untranslatable(f"{what}: {value!r} is negative or finer than a cent")
    return int(amount)


def _key(change: _RowChange, name: str, ctx: Context) -> str:
    """The row's key: from ``after``, else ``before``, else the record's key."""
    row = change.after or change.before or {}
    if name in row:
        return str(row[name])
    if ctx.cause is not None and ctx.cause.subject:
        return ctx.cause.subject
    raise Untranslatable(f"{change.table}: the {change.operation} change names no {name}")


def _no_truncate(change: _RowChange) -> None:
    if change.operation == "truncate":
        raise Untranslatable(
            f"{change.table} was truncated: the shop is told of rows one by one; "
            "delete them instead, or replay the table with a new snapshot"
        )


# -- translations -------------------------------------------------------------------------
@service.on
async def on_customer(change: CustomerRow, ctx: Context) -> None:
    _no_truncate(change)
    customer_id = _key(change, "cust_no", ctx)
    known = await ctx.get(customers, customer_id)
    if change.operation == "delete":
        if known is not None:
            ctx.publish(CustomerClosed(customer_id=customer_id))
            await ctx.delete(customers, customer_id)
        return
    limit = cents(column(change.after, "cr_lim", change), f"cust {customer_id} cr_lim")
    if known is None:
        name = str(column(change.after, "cust_nm", change))
        ctx.publish(
            CustomerRegistered(customer_id=customer_id, name=name, credit_limit_cents=limit)
        )
    elif known.limit_cents != limit:
        ctx.publish(
            CreditLimitChanged(
                customer_id=customer_id, limit_cents=limit, previous_cents=known.limit_cents
            )
        )
    else:
        return
    await ctx.put(customers, customer_id, KnownCustomer(limit_cents=limit))


@service.on
async def on_product(change: ProductRow, ctx: Context) -> None:
    _no_truncate(change)
    sku = _key(change, "prod_cd", ctx)
    known = await ctx.get(products, sku)
    if change.operation == "delete":
        if known is not None:
            ctx.publish(ProductWithdrawn(sku=sku))
            await ctx.delete(products, sku)
        return
    price = column(change.after, "unit_prc", change)
    if price is None:  # on the books, not for sale yet
        return
    now = KnownProduct(
        name=str(column(change.after, "prod_desc", change)),
        price_cents=cents(price, f"prod {sku} unit_prc"),
    )
    if now != known:
        ctx.publish(ProductPriced(sku=sku, name=now.name, price_cents=now.price_cents))
        await ctx.put(products, sku, now)


@service.on
async def on_adjustment(change: AdjustmentRow, ctx: Context) -> None:
    _no_truncate(change)
    if change.operation not in ("create", "snapshot"):
        raise Untranslatable(
            f"stk_adj row {_key(change, 'adj_id', ctx)} was {change.operation}d: stock "
            "adjustments are append-only; correct stock with a new adjustment"
        )
    code = str(column(change.after, "rsn_cd", change))
    if code not in REASONS:
        raise Untranslatable(
            f"stk_adj reason code {code!r} is unknown (known: {', '.join(REASONS)}); "
            "add it to shop.acl.REASONS and replay"
        )
    ctx.publish(
        StockAdjusted(
            sku=str(column(change.after, "prod_cd", change)),
            change=int(column(change.after, "adj_qty", change)),
            reason=REASONS[code],
        )
    )
