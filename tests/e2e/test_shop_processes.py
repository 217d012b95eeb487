"""The shop as separate processes on the embedded log, with processes killed mid-stream."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time

from shop.demo import Shop, order_mix, place_orders, wait_settled
from shop.invariants import payments_in_log, read_stock, report


def test_shop_survives_sigkill_of_inventory_and_billing(shop_factory) -> None:
    shop: Shop = shop_factory()
    shop.start()
    shop.wait_ready()
    base = f"http://127.0.0.1:{shop.port}"
    before = asyncio.run(read_stock(shop.store))
    ids = asyncio.run(place_orders(base, order_mix(20, "kill-1"), 8))
    shop.kill("inventory")
    shop.kill("billing")
    ids += asyncio.run(place_orders(base, order_mix(20, "kill-2"), 8))
    time.sleep(0.5)
    shop.start("inventory", "billing")
    shop.wait_ready()
    ids += asyncio.run(place_orders(base, order_mix(20, "kill-3"), 8))
    final = asyncio.run(wait_settled(base, ids, 60))
    after = asyncio.run(read_stock(shop.store))
    payments = asyncio.run(payments_in_log(shop.broker))
    assert len(final) == 60
    assert report(final, before, after, payments, 0.0), "an invariant failed (see output)"
    statuses = {o["status"] for o in final.values()}
    assert statuses == {"COMPLETED", "CANCELLED"}


def test_demo_command_exits_0_and_checks_invariants(tmp_path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "tidings", "demo", "--orders", "30"],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    for line in (
        "every order ended Completed or Cancelled",
        "stock conserved",
        "no order charged twice",
    ):
        assert f"✓ {line}" in result.stdout
    assert "completed" in result.stdout and "cancelled: out of stock" in result.stdout
