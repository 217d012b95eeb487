"""The shop on AWS SNS+SQS (moto's emulator) with PostgreSQL: the demo command exits 0
with every invariant holding, and a run with services SIGKILLed mid-stream. SQS keeps no
history, so the payments are read from a witness group made before the orders
(``tidings.testing.topics.witness``). Dummy credentials: the emulator takes any."""

from __future__ import annotations

import asyncio
import os
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
AWS = "sqs+sns://127.0.0.1:4566?region=us-east-1"


def test_demo_on_aws_and_postgres_exits_0_with_every_invariant(tmp_path: Path) -> None:
    require(AWS, POSTGRES)
    env = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", **os.environ}
    with fresh_schema(POSTGRES) as store:
        result = subprocess.run(
            [sys.executable, "-m", "tidings", "demo", "--orders", "30", "--broker", AWS,
             "--store", store, "--timeout", "150"],
            capture_output=True, text=True, timeout=300, cwd=tmp_path, env=env,
        )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    for check in (
        "every order ended Completed or Cancelled",
        "stock conserved",
        "no order charged twice",
        "every completed order was paid",
    ):
        assert f"✓ {check}" in result.stdout, result.stdout


def test_shop_on_aws_survives_sigkill_of_inventory_and_billing(shop_factory, monkeypatch) -> None:
    # A killed member's messages come back once their visibility (5 s here) runs out.
    url = AWS + "&visibility_timeout=5"
    require(url, POSTGRES)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", os.environ.get("AWS_ACCESS_KEY_ID", "testing"))
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", os.environ.get("AWS_SECRET_ACCESS_KEY", "testing"))
    with fresh_schema(POSTGRES) as store:
        shop: Shop = shop_factory(url, store, seed="aws-kill")
        shop.start()
        shop.wait_ready()
        topic = PaymentProcessed.message_info.topic
        assert topic is not None
        kept = asyncio.run(witness(url, topic))
        assert kept is not None, "SQS has no history: a witness group is needed"
        base = f"http://127.0.0.1:{shop.port}"
        before = asyncio.run(read_stock(store))
        ids = asyncio.run(place_orders(base, order_mix(20, "ak-1"), 8))
        shop.kill("inventory")  # SIGKILL mid-stream: messages received, not deleted
        shop.kill("billing")
        ids += asyncio.run(place_orders(base, order_mix(20, "ak-2"), 8))
        time.sleep(0.5)
        shop.start("inventory", "billing")
        shop.wait_ready()
        ids += asyncio.run(place_orders(base, order_mix(20, "ak-3"), 8))
        final = asyncio.run(wait_settled(base, ids, 120))
        after = asyncio.run(read_stock(store))
        payments = asyncio.run(payments_in_log(url, kept))
    assert len(final) == 60
    assert report(final, before, after, payments, 0.0), "an invariant failed (see output)"
    assert {o["status"] for o in final.values()} == {"COMPLETED", "CANCELLED"}
