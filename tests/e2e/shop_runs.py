"""Runs of the shop that the broker-specific e2e tests share: the demo command on a fresh
PostgreSQL schema, and a run with inventory and billing SIGKILLed mid-stream."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from shop.demo import Shop, order_mix, place_orders, wait_settled
from shop.events import PaymentProcessed
from shop.invariants import payments_in_log, read_stock, report
from tidings.testing.topics import witness

POSTGRES = "postgresql://127.0.0.1:5432/tidings"
INVARIANTS = (
    "every order ended Completed or Cancelled",
    "stock conserved",
    "no order charged twice",
    "every completed order was paid",
)


def run_demo(
    broker: str,
    store: str,
    cwd: Path,
    *,
    timeout: float = 120,
    env: Mapping[str, str] | None = None,
    saga: str = "choreography",
) -> str:
    """``tidings demo --orders 30 --saga SAGA`` on ``broker`` and ``store``: exit 0, every
    invariant; its output."""
    result = subprocess.run(
        [sys.executable, "-m", "tidings", "demo", "--orders", "30", "--broker", broker,
         "--store", store, "--timeout", str(int(timeout)), "--saga", saga],
        capture_output=True, text=True, timeout=2 * timeout, cwd=cwd,
        env={**os.environ, **(env or {})},
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    for check in INVARIANTS:
        assert f"✓ {check}" in result.stdout, result.stdout
    return result.stdout


def run_with_kills(
    shop: Shop,
    broker: str,
    store: str,
    seed: str,
    settle: float,
    victims: tuple[str, ...] = ("inventory", "billing"),
    reader: str | None = None,
) -> dict[str, Any]:
    """60 orders with ``victims`` (inventory and billing) SIGKILLed after the first 20 and
    started again after 40; every order settles and every invariant holds. For a broker
    without history (RabbitMQ, SQS): the payments are read from a witness group made
    before the orders. Returns the orders as they ended.
    ``reader``: the URL the test reads the log with, when the services' ``broker`` URL is
    theirs alone (a secured broker: one user per service)."""
    broker = reader or broker
    shop.start()
    shop.wait_ready()
    topic = PaymentProcessed.message_info.topic
    assert topic is not None
    kept = asyncio.run(witness(broker, topic))  # None: the broker keeps history
    base = f"http://127.0.0.1:{shop.port}"
    before = asyncio.run(read_stock(store))
    ids = asyncio.run(place_orders(base, order_mix(20, f"{seed}-1"), 8))
    for victim in victims:
        shop.kill(victim)  # SIGKILL mid-stream: records handed out, not acked
    ids += asyncio.run(place_orders(base, order_mix(20, f"{seed}-2"), 8))
    time.sleep(0.5)
    shop.start(*victims)
    shop.wait_ready()
    ids += asyncio.run(place_orders(base, order_mix(20, f"{seed}-3"), 8))
    final: dict[str, Any] = asyncio.run(wait_settled(base, ids, settle))
    after = asyncio.run(read_stock(store))
    payments = asyncio.run(payments_in_log(broker, kept))
    assert len(final) == 60
    assert report(final, before, after, payments, 0.0), "an invariant failed (see output)"
    assert {o["status"] for o in final.values()} == {"COMPLETED", "CANCELLED"}
    return final
