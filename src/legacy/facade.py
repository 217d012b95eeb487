"""The strangler facade: the back office's URL, with its routes moved one at a time.

Clients keep calling the legacy app's address; the facade sends each request either to
the legacy app or, for a route that has moved, to the new service that replaces it,
translating the legacy request and answer (the clients do not change)::

    GET  /routes                  which routes moved: {"place-order": "new", ...}
    PUT  /routes/{route}          {"to": "new" | "legacy"}: the switch, per route
    POST /orders                  route "place-order": the legacy app's, or the order
                                  service's POST /orders (cust_no/items/prod_cd/qty in,
                                  customer_id/lines/sku/quantity there; ord_no = order_id)
    *                             everything else: the legacy app, as it is

Settings: ``FACADE_LEGACY_URL`` (the legacy app), ``FACADE_ORDER_URL`` (the new order
service) and ``FACADE_MOVED`` (routes moved at start, comma-separated). The switches are
the process's own (a restart starts from ``FACADE_MOVED``): a flag service would hold
them for a fleet. Hand-written on purpose: a reverse proxy (nginx, Envoy) does the
routing part, but the translation of the moved route's body is this code's job anyway.
"""

from __future__ import annotations

import os
from decimal import Decimal
from typing import Any, Literal

import httpx
from fastapi import FastAPI, HTTPException, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ValidationError

from legacy.app import LegacyOrder

ROUTES = {"place-order": "POST /orders"}  # the routes the facade knows how to move


class Switch(BaseModel):
    to: Literal["new", "legacy"]


def _moved_at_start() -> set[str]:
    moved = {r.strip() for r in os.environ.get("FACADE_MOVED", "").split(",") if r.strip()}
    unknown = moved - ROUTES.keys()
    if unknown:
        raise ValueError(
            f"FACADE_MOVED names unknown routes {sorted(unknown)}; known: {list(ROUTES)}"
        )
    return moved


app = FastAPI(title="Back office (strangler facade)")
app.state.moved = _moved_at_start()


def _legacy() -> str:
    return os.environ.get("FACADE_LEGACY_URL", "http://127.0.0.1:8090")


def _order_service() -> str:
    return os.environ.get("FACADE_ORDER_URL", "http://127.0.0.1:8000")


@app.get("/routes")
def routes() -> dict[str, Any]:
    return {
        name: {"request": request, "served_by": "new" if name in app.state.moved else "legacy"}
        for name, request in ROUTES.items()
    }


@app.put("/routes/{route}")
def switch(route: str, body: Switch) -> dict[str, Any]:
    if route not in ROUTES:
        raise HTTPException(404, f"no route {route!r}; known: {', '.join(ROUTES)}")
    (app.state.moved.add if body.to == "new" else app.state.moved.discard)(route)
    return routes()


async def _forward(request: Request, base: str) -> Response:
    async with httpx.AsyncClient(base_url=base, timeout=30) as client:
        answer = await client.request(
            request.method,
            request.url.path,
            params=request.query_params,
            content=await request.body(),
            headers={"content-type": request.headers.get("content-type", "application/json")},
        )
    kept = {k: v for k, v in answer.headers.items() if k.lower() == "content-type"}
    return Response(answer.content, answer.status_code, headers=kept)


@app.post("/orders")
async def place_order(request: Request) -> Response:
    if "place-order" not in app.state.moved:
        return await _forward(request, _legacy())
    try:
        legacy = LegacyOrder.model_validate_json(await request.body())
    except ValidationError as exc:
        raise HTTPException(422, f"not a legacy order: {exc.errors()[0]['msg']}") from None
    body = {
        "customer_id": legacy.cust_no,
        "lines": [{"sku": i.prod_cd, "quantity": i.qty} for i in legacy.items],
    }
    async with httpx.AsyncClient(base_url=_order_service(), timeout=30) as client:
        answer = await client.post("/orders", json=body)
    if answer.status_code >= 300:
        return Response(answer.content, answer.status_code, media_type="application/json")
    order = answer.json()
    total = Decimal(order["amount_cents"]) / 100
    answer_as_legacy = {"ord_no": order["order_id"], "tot_amt": f"{total:.2f}"}
    return JSONResponse({**answer_as_legacy, "status": order["status"]}, 201)


@app.api_route("/{path:path}", methods=["GET", "POST", "PUT", "DELETE"])
async def everything_else(request: Request, path: str) -> Response:
    return await _forward(request, _legacy())
