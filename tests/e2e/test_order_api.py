"""The order service's HTTP API, over real HTTP, against a running service process."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from shop.demo import Shop


@pytest.fixture
def api(shop_factory) -> Iterator[httpx.Client]:
    shop: Shop = shop_factory()
    shop.start("order")
    shop.wait_ready()
    with httpx.Client(base_url=f"http://127.0.0.1:{shop.port}", timeout=10) as client:
        yield client


def test_place_then_read_an_order(api: httpx.Client) -> None:
    response = api.post(
        "/orders", json={"customer_id": "c1", "lines": [{"sku": "widget", "quantity": 2}]}
    )
    assert response.status_code == 202
    placed = response.json()
    assert placed["status"] == "PLACED"
    assert placed["amount_cents"] == 2 * 1250
    order = api.get(f"/orders/{placed['order_id']}").json()
    assert [e["type"] for e in order["history"]] == ["OrderPlaced"]
    assert order["history"][0]["id"] == order["correlation_id"]
    listed = api.get("/orders").json()["orders"]
    assert [o["order_id"] for o in listed] == [placed["order_id"]]


def test_orders_are_listed_in_pages(api: httpx.Client) -> None:
    ids = sorted(
        api.post(
            "/orders", json={"customer_id": "c1", "lines": [{"sku": "gizmo", "quantity": 1}]}
        ).json()["order_id"]
        for _ in range(5)
    )
    first = api.get("/orders", params={"limit": 3}).json()
    second = api.get("/orders", params={"limit": 3, "after": first["next"]}).json()
    assert [o["order_id"] for o in first["orders"] + second["orders"]] == ids
    assert second["next"] is None


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"customer_id": "c1", "lines": []}, "lines: List should have at least 1 item"),
        (
            {"customer_id": "c1", "lines": [{"sku": "widget", "quantity": 0}]},
            "lines.0.quantity: Input should be greater than 0",
        ),
        ({"lines": [{"sku": "widget", "quantity": 1}]}, "customer_id: Field required"),
        (
            {"customer_id": "c1", "lines": [{"sku": "widget", "quantity": 1}], "coupon": "x"},
            "coupon: Extra inputs are not permitted",
        ),
        (
            {"customer_id": "c1", "lines": [{"sku": "unobtainium", "quantity": 1}]},
            "unknown sku(s): unobtainium",
        ),
    ],
)
def test_bad_orders_get_422_with_a_readable_message(
    api: httpx.Client, body: dict, message: str
) -> None:
    response = api.post("/orders", json=body)
    assert response.status_code == 422
    assert message in response.json()["error"]
    assert api.get("/orders").json()["orders"] == []  # nothing was placed


def test_malformed_json_gets_422(api: httpx.Client) -> None:
    response = api.post(
        "/orders", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert response.status_code == 422
    assert "JSON" in response.json()["error"]


def test_oversized_body_gets_413(api: httpx.Client) -> None:
    body = {"customer_id": "c" * 70_000, "lines": [{"sku": "widget", "quantity": 1}]}
    response = api.post("/orders", json=body)
    assert response.status_code == 413
    assert "larger than 65536 bytes" in response.json()["error"]


def test_oversized_chunked_body_gets_413(api: httpx.Client) -> None:
    def chunks() -> Iterator[bytes]:
        for _ in range(100):
            yield b" " * 1024

    response = api.post("/orders", content=chunks(), headers={"content-type": "application/json"})
    assert response.status_code == 413


def test_unknown_order_gets_404(api: httpx.Client) -> None:
    response = api.get("/orders/nope")
    assert response.status_code == 404
    assert "no order 'nope'" in response.json()["detail"]
