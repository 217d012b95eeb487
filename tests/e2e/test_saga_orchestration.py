"""The shop with its order saga orchestrated (``--saga orchestration``), as processes: the
demo on every engine, billing that never answers, and the orchestrator SIGKILLed."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from shop_runs import POSTGRES, run_demo, run_with_kills

from shop import orchestrator
from shop.demo import Shop, order_mix, place_orders, wait_settled
from shop.invariants import payments_in_log, read_stock, report
from tidings.testing import documents, free_port
from tidings.testing.postgres import fresh_schema
from tidings.testing.processes import start_dashboard, stop_process
from tidings.testing.servers import require


def test_orchestrated_demo_on_the_embedded_log(tmp_path: Path) -> None:
    out = run_demo(
        f"sqlite:///{tmp_path}/log.db",
        f"sqlite:///{tmp_path}/{{service}}.db",
        tmp_path,
        saga="orchestration",
    )
    assert "saga by orchestration" in out
    assert "completed" in out and "cancelled: out of stock" in out


@pytest.mark.parametrize(
    "broker", ["kafka://127.0.0.1:9092", "nats://127.0.0.1:4222"], ids=["kafka", "nats"]
)
def test_orchestrated_demo_on_a_real_broker_and_postgres(broker: str, tmp_path: Path) -> None:
    require(broker, POSTGRES)
    with fresh_schema(POSTGRES) as store:
        run_demo(broker, store, tmp_path, saga="orchestration")


async def sagas(store: str) -> dict[str, Any]:
    return await documents(store, orchestrator.service, orchestrator.saga.collection)


def test_billing_that_never_answers_times_orders_out(shop_factory: Any, tmp_path: Path) -> None:
    shop: Shop = shop_factory(seed="timeout", saga="orchestration")
    shop.env["SHOP_STEP_TIMEOUT"] = "2"
    shop.start("order", "inventory", "orchestrator")  # billing never runs
    shop.wait_ready()
    before = asyncio.run(read_stock(shop.store))
    ids = asyncio.run(place_orders(shop.base, order_mix(12, "timeout"), 6))
    final = asyncio.run(wait_settled(shop.base, ids, 60))
    after = asyncio.run(read_stock(shop.store))
    assert {o["status"] for o in final.values()} == {"CANCELLED"}
    reasons = {o["reason"] for o in final.values()}
    assert "timed out" in reasons
    assert reasons <= {"timed out"} | {r for r in reasons if r.startswith("out of stock")}
    assert after == before  # every reservation released
    assert asyncio.run(payments_in_log(shop.broker)) == {}
    assert report(final, before, after, {}, 0.0)
    states = asyncio.run(sagas(shop.store))
    assert set(states) == set(ids) and all(s.finished for s in states.values())  # none pending
    timed_out = next(i for i in ids if final[i]["reason"] == "timed out")
    shown = subprocess.run(
        [sys.executable, "-m", "tidings", "saga", "show", timed_out, "--store", shop.store],
        capture_output=True, text=True, timeout=60, cwd=tmp_path,
    )  # fmt: skip
    assert shown.returncode == 0, shown.stderr
    assert f"saga order {timed_out}: finished: cancelled" in shown.stdout
    assert "timeout" in shown.stdout and "charging -> releasing" in shown.stdout
    # The dashboard's timeline of that order shows its saga's state.
    port = free_port()
    board = start_dashboard(
        tmp_path, shop.broker, port, services=["shop.orchestrator:service"], store=shop.store
    )
    try:
        trace = httpx.get(f"http://127.0.0.1:{port}/api/trace/{timed_out}", timeout=30).json()
    finally:
        stop_process(board)
    [shown_saga] = trace["sagas"]
    assert (shown_saga["saga"], shown_saga["id"]) == ("order", timed_out)
    assert (shown_saga["finished"], shown_saga["outcome"]) == (True, "cancelled")


def test_orchestrator_sigkilled_mid_saga_finishes_every_saga(shop_factory: Any) -> None:
    shop: Shop = shop_factory(seed="kill-orchestrator", saga="orchestration")
    final = run_with_kills(
        shop, shop.broker, shop.store, "kill-orch", 90, victims=("orchestrator",)
    )
    states = asyncio.run(sagas(shop.store))
    assert set(states) == set(final)
    for order_id, order in final.items():
        state = states[order_id]
        assert state.finished, f"saga {order_id} is still in {state.step}"
        assert state.outcome == order["status"].lower(), (order_id, state.history)
