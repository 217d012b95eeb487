"""Order: accepts orders over HTTP, follows each through its events, ends it.

The ``orders`` collection is this service's read model: one document per order with its
status and the events that concern it (CQRS: the HTTP API reads only this).

    POST /orders        {"customer_id": "c1", "lines": [{"sku": "widget", "quantity": 2}]}
                        -> 202 {"order_id": ..., "status": "PLACED", ...}
    GET  /orders/{id}   -> the order, its status and its events in order
    GET  /orders        -> orders, paged with ?limit=&after=
    GET  /catalog/{sku} -> the price an order of it gets now
    GET  /reports/sales -> completed orders' units and revenue by sku and by customer
    GET  /health        -> 200 when the service is running

Prices come from the catalog the back office publishes (``ProductPriced`` on
``shop.catalog``, kept in the ``catalog`` collection); a sku the back office never priced
falls back to :data:`shop.catalog.PRICES_CENTS`, so the shop runs without the legacy
system (and without Kafka Connect) too. A withdrawn product cannot be ordered.

The sales report is a projection (``sales``): folded from ``shop.orders`` by offset, so
``tidings projection rebuild shop.order:service sales`` replays it from the beginning.

Bad input gets a 4xx with a readable message: 422 with what is wrong and where (or an
unknown sku), 413 for a body over 64 KiB, 404 for an unknown order.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, HTTPException, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from shop import settings
from shop.catalog import PRICES_CENTS
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
    PlaceOrder,
    ProductPriced,
    ProductWithdrawn,
)
from shop.settings import CHOREOGRAPHY
from tidings import Context, Envelope, Event, Service, new_event_id
from tidings.http import BodyLimit, UnitOfWork, readable_validation_errors
from tidings.projection import ProjectionContext, ProjectionView

service = Service("order", publishes=[OrderPlaced, OrderCompleted, OrderCancelled])

FINAL = ("COMPLETED", "CANCELLED")
# Status only moves forward: events from different topics may arrive in either order.
RANK = {"PLACED": 0, "RESERVED": 1, "PAYMENT_FAILED": 2, "COMPLETED": 3, "CANCELLED": 3}
MAX_BODY_BYTES = 64 * 1024


class HistoryEntry(BaseModel):
    id: str
    type: str
    source: str
    time: str
    causation_id: str | None
    data: dict[str, Any]


class Order(BaseModel):
    order_id: str
    customer_id: str
    lines: list[OrderLine]
    amount_cents: int
    status: str
    reason: str | None = None
    correlation_id: str | None = None
    placed_at: str
    updated_at: str | None = None
    history: list[HistoryEntry]

    def summary(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude={"history"})


orders = service.collection("orders", Order)


class CatalogEntry(BaseModel):
    """A product as the back office last told it: priced, or withdrawn (not for sale)."""

    name: str = ""
    price_cents: int | None = None
    withdrawn: bool = False


catalog = service.collection("catalog", CatalogEntry)


@service.on
async def on_priced(event: ProductPriced, ctx: Context) -> None:
    entry = CatalogEntry(name=event.name, price_cents=event.price_cents)
    await ctx.put(catalog, event.sku, entry)


@service.on
async def on_withdrawn(event: ProductWithdrawn, ctx: Context) -> None:
    await ctx.put(catalog, event.sku, CatalogEntry(withdrawn=True))


async def price_of(sku: str, ctx: Context) -> int | None:
    """The price in force: the back office's, else the static catalog's; None if not sold."""
    entry = await ctx.get(catalog, sku)
    if entry is not None:
        return None if entry.withdrawn else entry.price_cents
    return PRICES_CENTS.get(sku)


class UnknownProduct(ValueError):
    pass


def _history_entry(envelope: Envelope) -> HistoryEntry:
    return HistoryEntry(
        id=envelope.id,
        type=envelope.type,
        source=envelope.source,
        time=envelope.time.isoformat(),
        causation_id=envelope.causationid,
        data=envelope.data,
    )


async def place_order(command: PlaceOrder, ctx: Context) -> Order:
    """Record a new order and publish OrderPlaced, in one unit of work."""
    prices = {line.sku: await price_of(line.sku, ctx) for line in command.lines}
    unknown = sorted(sku for sku, price in prices.items() if price is None)
    if unknown:
        raise UnknownProduct(
            f"unknown sku(s): {', '.join(unknown)}; we sell {', '.join(PRICES_CENTS)} "
            "and what the back office prices"
        )
    order_id = new_event_id()
    amount = sum((prices[line.sku] or 0) * line.quantity for line in command.lines)
    envelope = ctx.publish(
        OrderPlaced(
            order_id=order_id,
            customer_id=command.customer_id,
            lines=command.lines,
            amount_cents=amount,
            saga=settings.saga_mode(),
        )
    )
    order = Order(
        order_id=order_id,
        customer_id=command.customer_id,
        lines=command.lines,
        amount_cents=amount,
        status="PLACED",
        correlation_id=envelope.correlationid,
        placed_at=envelope.time.isoformat(),
        history=[_history_entry(envelope)],
    )
    await ctx.put(orders, order_id, order)
    return order


async def _advance(
    ctx: Context,
    order_id: str,
    status: str | None,
    reason: str | None = None,
    effect: Event | None = None,
) -> None:
    """Note the event in hand in the order's history and move its status forward to
    ``status`` (None: history only), publishing ``effect`` if it moved."""
    order = await ctx.get(orders, order_id)
    if order is None:  # not ours (an order placed before this store existed): ignore
        return
    assert ctx.cause is not None
    entries = [ctx.cause]
    changes: dict[str, Any] = {}
    if status is not None and order.status not in FINAL and RANK[status] > RANK[order.status]:
        changes = {"status": status, "updated_at": ctx.cause.time.isoformat()}
        if reason is not None:
            changes["reason"] = reason
        if effect is not None:
            entries.append(ctx.publish(effect))
    known = {entry.id for entry in order.history}
    history = [*order.history, *(_history_entry(e) for e in entries if e.id not in known)]
    history.sort(key=lambda entry: entry.id)  # UUIDv7: time order
    await ctx.put(orders, order_id, order.model_copy(update={**changes, "history": history}))


# In choreography this service ends each order on its last event (and publishes the end);
# in orchestration the order saga (shop.orchestrator) ends it and this service follows.
# Which one is the order's mode (``saga`` on its events), not this process's SHOP_SAGA.
@service.on
async def on_reserved(event: InventoryReserved, ctx: Context) -> None:
    await _advance(ctx, event.order_id, "RESERVED")


@service.on
async def on_payment_failed(event: PaymentFailed, ctx: Context) -> None:
    await _advance(ctx, event.order_id, "PAYMENT_FAILED", event.reason)


@service.on
async def on_paid(event: PaymentProcessed, ctx: Context) -> None:
    if event.saga != CHOREOGRAPHY:
        await _advance(ctx, event.order_id, None)
        return
    await _advance(
        ctx,
        event.order_id,
        "COMPLETED",
        effect=OrderCompleted(order_id=event.order_id, payment_id=event.payment_id),
    )


@service.on
async def on_cancelled(event: InventoryRejected | InventoryReleased, ctx: Context) -> None:
    if event.saga != CHOREOGRAPHY:
        await _advance(ctx, event.order_id, None)
        return
    await _advance(
        ctx,
        event.order_id,
        "CANCELLED",
        event.reason,
        effect=OrderCancelled(order_id=event.order_id, reason=event.reason),
    )


@service.on
async def on_ended(event: OrderCompleted | OrderCancelled, ctx: Context) -> None:
    """The order's end as the order saga decided it."""
    if ctx.cause is not None and ctx.cause.source == service.name:
        return  # its own end (choreography), read back: the order has it already
    if isinstance(event, OrderCompleted):
        await _advance(ctx, event.order_id, "COMPLETED")
    else:
        await _advance(ctx, event.order_id, "CANCELLED", event.reason)


# -- the sales report: a projection -------------------------------------------------------
class OpenOrder(BaseModel):
    """An order placed and not ended yet: what a completion will count."""

    customer_id: str
    lines: list[OrderLine]
    amount_cents: int


class SalesRow(BaseModel):
    """Completed orders of one sku (``sku:<sku>``) or one customer (``customer:<id>``).

    Revenue is counted per customer only: an event carries the order's amount, not the
    price of each line, and a projection folds what the events say (prices may change).
    """

    kind: str
    key: str
    orders: int = 0
    units: int = 0
    revenue_cents: int = 0


sales = service.projection("sales")
open_orders = sales.collection("open", OpenOrder)
sales_rows = sales.collection("rows", SalesRow)


@sales.on
async def sales_placed(event: OrderPlaced, view: ProjectionContext) -> None:
    await view.put(
        open_orders,
        event.order_id,
        OpenOrder(
            customer_id=event.customer_id, lines=event.lines, amount_cents=event.amount_cents
        ),
    )


@sales.on
async def sales_cancelled(event: OrderCancelled, view: ProjectionContext) -> None:
    await view.delete(open_orders, event.order_id)


@sales.on
async def sales_completed(event: OrderCompleted, view: ProjectionContext) -> None:
    order = await view.get(open_orders, event.order_id)
    if order is None:  # completed twice, or placed before the topic's first record
        return
    units: dict[str, int] = {}
    for line in order.lines:
        units[line.sku] = units.get(line.sku, 0) + line.quantity
    counts = [("customer", order.customer_id, sum(units.values()), order.amount_cents)]
    counts += [("sku", sku, quantity, 0) for sku, quantity in units.items()]
    for kind, key, quantity, cents in counts:
        row = await view.get(sales_rows, f"{kind}:{key}") or SalesRow(kind=kind, key=key)
        row = row.model_copy(
            update={
                "orders": row.orders + 1,
                "units": row.units + quantity,
                "revenue_cents": row.revenue_cents + cents,
            }
        )
        await view.put(sales_rows, f"{kind}:{key}", row)
    await view.delete(open_orders, event.order_id)


async def sales_report(view: ProjectionView) -> dict[str, Any]:
    """The report of one generation, from one listing (one statement: one snapshot)."""
    rows = await view.list(sales_rows, limit=100_000)
    customers = [r for r in rows if r.kind == "customer"]
    return {
        "generation": view.generation,
        "orders": sum(r.orders for r in customers),
        "units": sum(r.units for r in customers),
        "revenue_cents": sum(r.revenue_cents for r in customers),
        "by_sku": [
            {"sku": r.key, "orders": r.orders, "units": r.units} for r in rows if r.kind == "sku"
        ],
        "by_customer": [
            {
                "customer_id": r.key,
                "orders": r.orders,
                "units": r.units,
                "revenue_cents": r.revenue_cents,
            }
            for r in customers
        ],
    }


# -- the HTTP API --------------------------------------------------------------------------
app = service.http(FastAPI(title="Tidings shop: order service", version="0.1.0"))
app.add_middleware(BodyLimit, limit=MAX_BODY_BYTES)
readable_validation_errors(app)


@app.exception_handler(UnknownProduct)
async def unknown_product(request: Request, exc: UnknownProduct) -> JSONResponse:
    return JSONResponse({"error": str(exc)}, status_code=422)


def _openapi_with_catalog() -> dict[str, Any]:
    """The OpenAPI document, saying which skus exist (schemathesis found it did not: an
    order for any other sku is refused with 422, so the document must list them)."""
    if app.openapi_schema is None:
        document = FastAPI.openapi(app)
        line = document["components"]["schemas"]["OrderLine"]["properties"]["sku"]
        line["enum"] = list(PRICES_CENTS)
        app.openapi_schema = document
    return app.openapi_schema


app.openapi = _openapi_with_catalog  # type: ignore[method-assign]


@app.get("/health")
async def health() -> dict[str, str]:
    return {"status": "ok", "service": service.name}


_ERROR: dict[str, Any] = {"content": {"application/json": {"schema": {"type": "object"}}}}


@app.post(
    "/orders",
    status_code=202,
    responses={413: {"description": "Body over 64 KiB", **_ERROR}},
)
async def create_order(command: PlaceOrder, ctx: UnitOfWork) -> dict[str, Any]:
    return (await place_order(command, ctx)).summary()


@app.get("/catalog/{sku}", responses={404: {"description": "Not sold", **_ERROR}})
async def get_price(sku: str, ctx: UnitOfWork) -> dict[str, Any]:
    """The price an order of ``sku`` gets now, and whether the back office set it."""
    entry = await ctx.get(catalog, sku)
    price = await price_of(sku, ctx)
    if price is None:
        raise HTTPException(404, f"{sku!r} is not sold (unknown or withdrawn)")
    return {"sku": sku, "price_cents": price, "from_back_office": entry is not None}


@app.get("/orders/{order_id}", responses={404: {"description": "No such order", **_ERROR}})
async def get_order(order_id: str, ctx: UnitOfWork) -> dict[str, Any]:
    order = await ctx.get(orders, order_id)
    if order is None:
        raise HTTPException(404, f"no order {order_id!r}")
    return order.model_dump(mode="json")


@app.get("/orders")
async def list_orders(
    ctx: UnitOfWork, limit: int = Query(100, ge=1, le=1000), after: str | None = None
) -> dict[str, Any]:
    page = await ctx.list(orders, limit, after)
    return {
        "orders": [o.summary() for o in page],
        "next": page[-1].order_id if len(page) == limit else None,
    }


@app.get("/reports/sales")
async def get_sales_report(ctx: UnitOfWork) -> dict[str, Any]:
    """Completed orders by sku and by customer, from the ``sales`` projection."""
    return await ctx.read(sales, sales_report)
