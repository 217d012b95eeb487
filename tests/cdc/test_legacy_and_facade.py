"""The legacy back office's HTTP API on real PostgreSQL, and the strangler facade moving
its place-order route to a stand-in order service (both served in process)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import psycopg
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from psycopg import sql

from legacy import app as legacy_app
from legacy import facade
from shop.migration import POSTGRES
from tidings.testing.servers import require


@pytest.fixture
def legacy(monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:
    require(POSTGRES)
    schema = f"legacy_t{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("LEGACY_SCHEMA", schema)
    monkeypatch.setenv("LEGACY_DATABASE_URL", POSTGRES)
    legacy_app.create_tables()
    try:
        yield TestClient(legacy_app.app)
    finally:
        with psycopg.connect(POSTGRES, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))


def test_the_back_office_keeps_customers_products_and_prices_its_orders(legacy: TestClient) -> None:
    assert (
        legacy.post(
            "/customers", json={"cust_no": "c1", "cust_nm": "Ann", "cr_lim": "50.00"}
        ).status_code
        == 201
    )
    assert (
        legacy.post(
            "/customers", json={"cust_no": "c1", "cust_nm": "Ann", "cr_lim": "1"}
        ).status_code
        == 409
    )
    legacy.post("/products", json={"prod_cd": "p1", "prod_desc": "Part", "unit_prc": "2.50"})
    assert legacy.put("/products/p1/price", json={"unit_prc": "3.00"}).json()["unit_prc"] == "3.00"
    assert legacy.put("/products/nope/price", json={"unit_prc": "1.00"}).status_code == 404
    assert legacy.put("/products/p1/price", json={"unit_prc": "-1"}).status_code == 422
    assert (
        legacy.post(
            "/stock-adjustments", json={"prod_cd": "zz", "adj_qty": 1, "rsn_cd": "RCV"}
        ).status_code
        == 422
    )
    order = legacy.post("/orders", json={"cust_no": "c1", "items": [{"prod_cd": "p1", "qty": 3}]})
    assert order.status_code == 201 and order.json()["tot_amt"] == "9.00"
    assert legacy.get(f"/orders/{order.json()['ord_no']}").json()["items"] == [
        {"prod_cd": "p1", "qty": 3}
    ]
    assert "Back office" in legacy.get("/").text and "Ann" in legacy.get("/").text
    assert legacy.delete("/customers/zz").status_code == 404  # fmt: skip


def test_the_facade_moves_place_order_and_translates_both_ways(
    legacy: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    legacy.post("/customers", json={"cust_no": "c1", "cust_nm": "Ann", "cr_lim": "50.00"})
    legacy.post("/products", json={"prod_cd": "p1", "prod_desc": "Part", "unit_prc": "2.50"})
    received: list[dict[str, Any]] = []
    new_orders = FastAPI()

    @new_orders.post("/orders", status_code=202)
    def place(body: dict[str, Any]) -> dict[str, Any]:
        received.append(body)
        return {"order_id": "o-1", "amount_cents": 750, "status": "PLACED"}

    backends = {"http://legacy": legacy.app, "http://orders": new_orders}

    class Routed(httpx.AsyncClient):  # the facade's outgoing calls, served in process
        def __init__(self, *, base_url: str, timeout: float) -> None:
            super().__init__(
                transport=httpx.ASGITransport(app=backends[base_url]), base_url=base_url
            )

    monkeypatch.setattr(facade.httpx, "AsyncClient", Routed)
    monkeypatch.setenv("FACADE_LEGACY_URL", "http://legacy")
    monkeypatch.setenv("FACADE_ORDER_URL", "http://orders")
    monkeypatch.setattr(facade.app.state, "moved", set())
    client = TestClient(facade.app)
    body = {"cust_no": "c1", "items": [{"prod_cd": "p1", "qty": 3}]}
    assert client.get("/routes").json()["place-order"]["served_by"] == "legacy"
    assert client.post("/orders", json=body).json()["status"] == "BOOKED"
    assert (
        client.put("/routes/place-order", json={"to": "new"}).json()["place-order"]["served_by"]
        == "new"
    )
    moved = client.post("/orders", json=body)
    assert moved.status_code == 201
    assert moved.json() == {"ord_no": "o-1", "tot_amt": "7.50", "status": "PLACED"}
    assert received == [{"customer_id": "c1", "lines": [{"sku": "p1", "quantity": 3}]}]
    assert client.get("/customers/nope/credit").status_code == 405  # the rest: legacy's own answer
    assert client.put("/routes/nope", json={"to": "new"}).status_code == 404
    assert client.post("/orders", json={"cust_no": 1}).status_code == 422  # fmt: skip
