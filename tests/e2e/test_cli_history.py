"""`tidings history account ID [--at TIME]` on billing's real store: the ledger's audit
trail and the account's state at a past time."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from shop import billing
from shop.events import InventoryReserved, OrderLine
from tidings.runtime import Runtime
from tidings.store.sqlite import SQLiteStore
from tidings.testing.commands import tidings
from tidings.testing.harness import drain
from tidings.transport.memory import MemoryTransport
from tidings.units import direct_record


def reserved(order_id: str, cents: int) -> InventoryReserved:
    line = OrderLine(sku="widget", quantity=1)
    return InventoryReserved(order_id=order_id, customer_id="c1", lines=[line], amount_cents=cents)


@pytest.fixture
def ledger(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[str, datetime]:
    """Billing charged o1, then (after the returned time) o2, and declined o3 (over the
    limit of 3000 cents); the store URL and the time between o1 and o2."""
    monkeypatch.setenv("SHOP_CREDIT_LIMITS", "c1=3000")
    monkeypatch.setenv("SHOP_PAYMENT_FAILURE_RATE", "0")
    cut: list[datetime] = []

    async def setup() -> None:
        store = SQLiteStore(str(tmp_path / "billing.db"))
        await store.connect()
        transport = MemoryTransport()
        rt = Runtime(billing.service, transport, store)
        await rt.start(background=False)
        for n, (order_id, cents) in enumerate([("o1", 1250), ("o2", 1250), ("o3", 1250)]):
            _, record = direct_record(reserved(order_id, cents), transport, source="inventory")
            await transport.publish([record])
            await drain(rt)
            if n == 0:
                await asyncio.sleep(0.05)
                cut.append(datetime.now(UTC))
                await asyncio.sleep(0.05)
        assert rt.stats.handled == 3
        await rt.stop()
        await store.close()

    asyncio.run(setup())
    return f"sqlite:///{tmp_path}/{{service}}.db", cut[0]


def test_history_prints_the_trail_and_the_state_now(ledger: tuple[str, datetime]) -> None:
    store, _ = ledger
    shown = tidings("history", "account", "c1", "--store", store)
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert lines[0] == "Account:c1: 4 event(s)"
    assert [line.split()[2] for line in lines[1:5]] == [
        "CreditLimitSet",
        "AccountCharged",
        "AccountCharged",
        "ChargeDeclined",
    ]
    assert '"reason": "credit limit of 3000 cents exceeded"' in lines[4]
    assert '"customer_id"' not in shown.stdout.split("state at")[0], "the id is said once"
    assert "state at now (version 4):" in shown.stdout
    state = json.loads(shown.stdout.split("(version 4):")[1])
    assert state["spent_cents"] == 2500 and sorted(state["charges"]) == ["o1", "o2"]


def test_history_at_a_past_time_gives_the_state_then(ledger: tuple[str, datetime]) -> None:
    store, cut = ledger
    then = tidings("history", "account", "c1", "--store", store, "--at", cut.isoformat(), "--json")
    assert then.returncode == 0, then.stderr
    found = json.loads(then.stdout)
    assert found["stream"] == "Account:c1" and len(found["events"]) == 4
    assert found["version"] == 2
    assert found["state"]["spent_cents"] == 1250 and found["state"]["charges"] == {"o1": 1250}
    text = tidings("history", "account", "c1", "--store", store, "--at", cut.isoformat())
    marked = [line for line in text.stdout.splitlines() if line.endswith("(after --at)")]
    assert len(marked) == 2, text.stdout
    before = tidings("history", "account", "c1", "--store", store, "--at", "2000-01-01T00:00:00Z")
    assert "none yet (no event recorded by then)" in before.stdout


def test_history_refuses_what_it_cannot_show(ledger: tuple[str, datetime]) -> None:
    store, _ = ledger
    unknown = tidings("history", "wallet", "c1", "--store", store)
    assert unknown.returncode == 2
    assert "shop.billing:service keeps no aggregate named 'wallet' (it keeps: account)" in (
        unknown.stderr
    )
    nobody = tidings("history", "account", "c-nobody", "--store", store)
    assert nobody.returncode == 1 and "Account:c-nobody: 0 event(s)" in nobody.stdout
    bad_time = tidings("history", "account", "c1", "--store", store, "--at", "yesterday")
    assert bad_time.returncode == 2 and "--at 'yesterday': expected a time" in bad_time.stderr
