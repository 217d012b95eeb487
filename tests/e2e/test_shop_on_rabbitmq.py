"""The shop on RabbitMQ with PostgreSQL: the demo command, and a run with services SIGKILLed
mid-stream. RabbitMQ keeps no history, so the payments are read from a witness group made
before the orders (``tidings.testing.topics.witness``)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from pathlib import Path

from shop.demo import Shop, order_mix, place_orders, wait_settled
from shop.events import PaymentProcessed
from shop.invariants import payments_in_log, read_stock, report
from tidings.testing.postgres import fresh_schema
from tidings.testing.servers import require
from tidings.testing.topics import witness

POSTGRES = "postgresql://127.0.0.1:5432/tidings"
RABBITMQ = "amqp://guest:guest@127.0.0.1:5672/"


def test_demo_on_rabbitmq_and_postgres_exits_0_with_every_invariant(tmp_path: Path) -> None:
    require(RABBITMQ, POSTGRES)
    with fresh_schema(POSTGRES) as store:
        result = subprocess.run(
            [sys.executable, "-m", "tidings", "demo", "--orders", "30", "--broker", RABBITMQ,
             "--store", store, "--timeout", "120"],
            capture_output=True, text=True, timeout=240, cwd=tmp_path,
        )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    for check in (
        "every order ended Completed or Cancelled",
        "stock conserved",
        "no order charged twice",
        "every completed order was paid",
    ):
        assert f"✓ {check}" in result.stdout, result.stdout


def test_shop_on_rabbitmq_survives_sigkill_of_inventory_and_billing(shop_factory) -> None:
    require(RABBITMQ, POSTGRES)
    with fresh_schema(POSTGRES) as store:
        shop: Shop = shop_factory(RABBITMQ, store, seed="rabbit-kill")
        shop.start()
        shop.wait_ready()
        topic = PaymentProcessed.message_info.topic
        assert topic is not None
        kept = asyncio.run(witness(RABBITMQ, topic))
        assert kept is not None, "RabbitMQ has no history: a witness group is needed"
        base = f"http://127.0.0.1:{shop.port}"
        before = asyncio.run(read_stock(store))
        ids = asyncio.run(place_orders(base, order_mix(20, "rk-1"), 8))
        shop.kill("inventory")  # SIGKILL mid-stream: records handed out, not acked
        shop.kill("billing")
        ids += asyncio.run(place_orders(base, order_mix(20, "rk-2"), 8))
        time.sleep(0.5)
        shop.start("inventory", "billing")
        shop.wait_ready()
        ids += asyncio.run(place_orders(base, order_mix(20, "rk-3"), 8))
        final = asyncio.run(wait_settled(base, ids, 90))
        after = asyncio.run(read_stock(store))
        payments = asyncio.run(payments_in_log(RABBITMQ, kept))
    assert len(final) == 60
    assert report(final, before, after, payments, 0.0), "an invariant failed (see output)"
    assert {o["status"] for o in final.values()} == {"COMPLETED", "CANCELLED"}
