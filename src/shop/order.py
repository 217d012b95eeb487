"""Order: accepts orders over HTTP, follows each through its events, ends it.

The order view (:mod:`shop.order_view`, an inline projection) is this service's read
model: one row per order with its status and the events that concern it (CQRS: the HTTP
API reads only this); ``tidings projection rebuild shop.order:service orders`` rebuilds it.

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

from shop import order_view, settings
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
from tidings import Context, Event, Service, new_event_id
from tidings.http import BodyLimit, UnitOfWork, readable_validation_errors
from tidings.projection import ProjectionContext, ProjectionView

service = Service("order", publishes=[OrderPlaced, OrderCompleted, OrderCancelled])

MAX_BODY_BYTES = 64 * 1024
service.projection(order_view.view)  # the order view: an inline projection (shop.order_view)


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


async def place_order(command: PlaceOrder, ctx: Context) -> order_view.Order:
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
    event = OrderPlaced(
        order_id=order_id,
        customer_id=command.customer_id,
        lines=command.lines,
        amount_cents=amount,
        saga=settings.saga_mode(),
    )
    # The view applies it when this unit of work commits (inline): the row it will hold.
    return order_view.placed_row(event, ctx.publish(event))


async def _end(ctx: Context, order_id: str, effect: Event) -> None:
    """Publish the order's end, unless this service did not take the order or it has
    ended already. The view is read in this unit of work and the end is applied to it
    before the commit (inline), so two ends of one order cannot both commit."""
    order = await ctx.read(order_view.view, lambda view: order_view.find(view, order_id))
    if order is not None and order.status not in order_view.FINAL:
        ctx.publish(effect)


# In choreography this service ends each order on its last event (and publishes the end);
# in orchestration the order saga (shop.orchestrator) ends it and this service follows.
# Which one is the order's mode (``saga`` on its events), not this process's SHOP_SAGA.
# The order view takes every event below (tidings.projection: from the topics by offset on
# a broker with history, in these handlers' units of work on one without); the handlers
# only decide the order's end, which in orchestration is the saga's, not theirs.
@service.on
async def on_reserved(event: InventoryReserved, ctx: Context) -> None:
    pass


@service.on
async def on_payment_failed(event: PaymentFailed, ctx: Context) -> None:
    pass


@service.on
async def on_paid(event: PaymentProcessed, ctx: Context) -> None:
    if event.saga == CHOREOGRAPHY:
        effect = OrderCompleted(order_id=event.order_id, payment_id=event.payment_id)
        await _end(ctx, event.order_id, effect)


@service.on
async def on_cancelled(event: InventoryRejected | InventoryReleased, ctx: Context) -> None:
    if event.saga == CHOREOGRAPHY:
        effect = OrderCancelled(order_id=event.order_id, reason=event.reason)
        await _end(ctx, event.order_id, effect)


@service.on
async def on_ended(event: OrderCompleted | OrderCancelled, ctx: Context) -> None:
    """The order's end as the order saga decided it (the order view notes it). An end this
    service published itself (choreography) comes back here too: the view skips an event
    it applied already."""


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
    order = await ctx.read(order_view.view, lambda view: order_view.find(view, order_id))
    if order is None:
        raise HTTPException(404, f"no order {order_id!r}")
    return order.model_dump(mode="json")


@app.get("/orders")
async def list_orders(
    ctx: UnitOfWork, limit: int = Query(100, ge=1, le=1000), after: str | None = None
) -> dict[str, Any]:
    found, following = await ctx.read(
        order_view.view, lambda view: order_view.page(view, limit, after)
    )
    return {"orders": [o.summary() for o in found], "next": following}


@app.get("/reports/sales")
async def get_sales_report(ctx: UnitOfWork) -> dict[str, Any]:
    """Completed orders by sku and by customer, from the ``sales`` projection."""
    return await ctx.read(sales, sales_report)
