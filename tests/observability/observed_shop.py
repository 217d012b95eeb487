"""One observed run of the shop, shared by the tests of this folder that only read from it.

(Helpers and the fixture live here, imported by ``conftest.py``, so tests can import the
helpers by this module's name.)

Three service processes with tracing to JSON-lines files, metrics endpoints, JSON logs
and a fraud watch list; a handful of orders placed over HTTP, one per path through the
shop (completed, cancelled by payment with compensation, cancelled for stock, held for
fraud review and so dead-lettered), plus a few more for the counters.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from shop.demo import BROKE_CUSTOMER, SERVICES, WATCHED_CUSTOMER, Shop
from tidings.cli.common import opened_transport
from tidings.envelope import Envelope
from tidings.testing import free_port, records

ROOT = Path(__file__).resolve().parents[2]


@dataclasses.dataclass
class ObservedRun:
    shop: Shop
    workdir: Path
    base: str
    orders: dict[str, str]  # role -> order id
    placed: list[str]

    @property
    def spans_dir(self) -> Path:
        return self.workdir / "spans"

    def metrics_url(self, service: str) -> str:
        return f"http://127.0.0.1:{self.shop.metrics_ports[service]}/metrics"


def post_order(client: httpx.Client, customer: str, *lines: tuple[str, int]) -> str:
    body = {"customer_id": customer, "lines": [{"sku": s, "quantity": q} for s, q in lines]}
    response = client.post("/orders", json=body)
    assert response.status_code == 202, response.text
    return str(response.json()["order_id"])


def wait_for(predicate: Any, timeout: float, what: str, interval: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


def read_log(broker: str) -> list[tuple[str, Envelope]]:
    """Every (topic, envelope) in the log, dead letters included."""
    from tidings import codec

    async def main() -> list[tuple[str, Envelope]]:
        out: list[tuple[str, Envelope]] = []
        async with opened_transport(broker) as transport:
            for info in await transport.topics():
                out += [(info.name, codec.decode(r)) for r in await records(transport, info.name)]
        return out

    return asyncio.run(main())


def json_lines(path: Path) -> list[dict[str, Any]]:
    lines = []
    for line in path.read_text(errors="replace").splitlines():
        if line.startswith("{"):
            lines.append(json.loads(line))
    return lines


@pytest.fixture(scope="module")
def observed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ObservedRun]:
    workdir = tmp_path_factory.mktemp("observed")
    watchlist = workdir / "watchlist.txt"
    watchlist.write_text(f"{WATCHED_CUSTOMER}\n")
    shop = Shop(
        workdir,
        f"sqlite:///{workdir}/log.db",
        f"sqlite:///{workdir}/{{service}}.db",
        free_port(),
        "observed",
    )
    shop.env.update(
        TIDINGS_TRACES=f"file:{workdir}/spans/{{service}}.jsonl",
        OTEL_BSP_SCHEDULE_DELAY="100",
        TIDINGS_METRICS_INTERVAL="0.3",
        TIDINGS_LOG_FORMAT="json",
        TIDINGS_LOG_LEVEL="INFO",
        SHOP_FRAUD_HOLD_FILE=str(watchlist),
        SHOP_PAYMENT_FAILURE_RATE="0",
    )
    shop.metrics_ports = {name: free_port() for name in SERVICES}
    shop.start()
    try:
        shop.wait_ready()
        base = f"http://127.0.0.1:{shop.port}"
        with httpx.Client(base_url=base, timeout=10) as client:
            orders = {
                "completed": post_order(client, "c01", ("widget", 2)),
                "payment_failed": post_order(client, BROKE_CUSTOMER, ("gizmo", 1)),
                "out_of_stock": post_order(client, "c02", ("doohickey", 50)),
                "held": post_order(client, WATCHED_CUSTOMER, ("widget", 1)),
            }
            placed = list(orders.values())
            placed += [post_order(client, f"c{i:02d}", ("gizmo", 1)) for i in range(3, 9)]

            def settled() -> bool:
                for order_id in placed:
                    status = client.get(f"/orders/{order_id}").json()["status"]
                    if order_id == orders["held"]:
                        if status != "RESERVED":
                            return False
                    elif status not in ("COMPLETED", "CANCELLED"):
                        return False
                return True

            wait_for(settled, 30, "the orders to settle")
            statuses = {k: client.get(f"/orders/{v}").json()["status"] for k, v in orders.items()}
            assert statuses == {
                "completed": "COMPLETED",
                "payment_failed": "CANCELLED",
                "out_of_stock": "CANCELLED",
                "held": "RESERVED",
            }
        wait_for(
            lambda: any(t == "billing.dlq" for t, _ in read_log(shop.broker)),
            10,
            "the held order's dead letter",
        )
        yield ObservedRun(shop, workdir, base, orders, placed)
    finally:
        shop.stop()
