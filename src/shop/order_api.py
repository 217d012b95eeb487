"""The order service's HTTP API (FastAPI): place orders, read them back.

    POST /orders        {"customer_id": "c1", "lines": [{"sku": "widget", "quantity": 2}]}
                        -> 202 {"order_id": ..., "status": "PLACED", ...}
    GET  /orders/{id}   -> the order, its status and its events in order
    GET  /orders        -> orders, paged with ?limit=&after=
    GET  /health        -> 200 when the service is running

Bad input gets a 4xx with a readable message: 422 with what is wrong and where, 413 for
a body over 64 KiB, 404 for an unknown order.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shop.events import PlaceOrder
from shop.order import UnknownProduct, place_order, service

MAX_BODY_BYTES = 64 * 1024


class BodyLimit:
    """Refuse bodies over ``limit`` bytes with 413, whether or not Content-Length is sent.

    Hand-written because neither Starlette nor uvicorn limits request bodies.
    """

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            await self._refuse(scope, receive, send)
            return
        # Read the whole body first (it is small by definition) so that an oversized
        # chunked body is refused here, before the app starts parsing it.
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                break
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.limit:
                await self._refuse(scope, receive, send)
                return
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        sent = False

        async def replay() -> Message:
            nonlocal sent
            if sent:
                return await receive()
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = JSONResponse(
            {"error": f"request body is larger than {self.limit} bytes"}, status_code=413
        )
        await response(scope, receive, send)


app = FastAPI(title="Tidings shop: order service", version="0.1.0")
app.add_middleware(BodyLimit, limit=MAX_BODY_BYTES)


@app.exception_handler(RequestValidationError)
async def readable_422(request: Request, exc: RequestValidationError) -> JSONResponse:
    problems = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"] if p != "body") or "body"
        problems.append(f"{where}: {err['msg']}")
    return JSONResponse({"error": "; ".join(problems), "detail": exc.errors()}, status_code=422)


@app.get("/health")
async def health() -> dict[str, str]:
    return {"status": "ok", "service": service.name}


@app.post("/orders", status_code=202)
async def create_order(command: PlaceOrder) -> dict[str, Any]:
    try:
        async with service.unit_of_work() as ctx:
            order = await place_order(command, ctx)
    except UnknownProduct as exc:
        return JSONResponse({"error": str(exc)}, status_code=422)  # type: ignore[return-value]
    return _summary(order)


@app.get("/orders/{order_id}")
async def get_order(order_id: str) -> dict[str, Any]:
    async with service.unit_of_work() as ctx:
        order = await ctx.state.get("orders", order_id)
    if order is None:
        raise HTTPException(404, f"no order {order_id!r}")
    return order


@app.get("/orders")
async def list_orders(
    limit: int = Query(100, ge=1, le=1000), after: str | None = None
) -> dict[str, Any]:
    async with service.unit_of_work() as ctx:
        orders = await ctx.state.list("orders", limit, after)
    return {
        "orders": [_summary(o) for o in orders],
        "next": orders[-1]["order_id"] if len(orders) == limit else None,
    }


def _summary(order: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in order.items() if k != "history"}
