"""The anti-corruption layer on Debezium-shaped records: the shop's events out, legacy
names nowhere, the untranslatable dead-lettered with the reason (memory broker)."""

from __future__ import annotations

from typing import Any

from tests.unit.debezium_records import change_value, outgoing

from shop import acl, billing, inventory, order
from shop.catalog import INITIAL_STOCK
from shop.events import (
    STOCK,
    CreditLimitChanged,
    CustomerClosed,
    CustomerRegistered,
    ProductPriced,
    ProductWithdrawn,
    StockAdjusted,
)
from tidings import codec
from tidings.testing import TestApp


async def feed(app: TestApp, table: str, key: dict[str, Any], *values: bytes) -> None:
    topic = f"{acl.PREFIX}.{table}"
    await app.transport.create_topic(topic)
    await app.transport.publish([outgoing(topic, key, value) for value in values])
    await app.drain()


async def test_customer_rows_become_registered_limit_changed_and_closed() -> None:
    key = {"cust_no": "c1"}
    row = {"cust_no": "c1", "cust_nm": "Ann", "cr_lim": "100.50", "upd_ts": 1, "fax_no": "x"}
    async with TestApp(acl.service, billing.service) as app:
        await feed(
            app, "cust", key,
            change_value("cust", "r", after=row),
            change_value("cust", "u", after={**row, "upd_ts": 2}),  # nothing the shop reads
            change_value("cust", "u", after={**row, "cr_lim": "250.00"}),
        )  # fmt: skip
        assert await app.published(CustomerRegistered) == [
            CustomerRegistered(customer_id="c1", name="Ann", credit_limit_cents=10_050)
        ]
        assert await app.published(CreditLimitChanged) == [
            CreditLimitChanged(customer_id="c1", limit_cents=25_000, previous_cents=10_050)
        ]
        assert (await app.get(billing.credit_lines, "c1")).limit_cents == 25_000
        # A delete (default replica identity: only the key is real), then its tombstone.
        gone = {"cust_no": "c1", "cust_nm": "", "cr_lim": "0.00", "upd_ts": 0}
        await feed(app, "cust", key, change_value("cust", "d", before=gone), b"")
        assert await app.published(CustomerClosed) == [CustomerClosed(customer_id="c1")]
        assert await app.dead_letters(acl.service) == []


async def test_a_price_change_reprices_the_next_order() -> None:
    key = {"prod_cd": "sprocket"}
    row = {"prod_cd": "sprocket", "prod_desc": "Sprocket", "unit_prc": None}
    async with TestApp(acl.service, order.service) as app:
        await feed(app, "prod", key, change_value("prod", "c", after=row))
        assert await app.published(ProductPriced) == []  # on the books, no price yet
        await feed(app, "prod", key, change_value("prod", "u", after={**row, "unit_prc": "3.25"}))
        body = {"customer_id": "c1", "lines": [{"sku": "sprocket", "quantity": 2}]}
        async with app.http(order.service) as http:
            first = await http.post("/orders", json=body)
            await feed(
                app, "prod", key, change_value("prod", "u", after={**row, "unit_prc": "4.00"})
            )
            second = await http.post("/orders", json=body)
            await feed(app, "prod", key, change_value("prod", "d", before=row), b"")
            third = await http.post("/orders", json=body)
        assert (first.status_code, first.json()["amount_cents"]) == (202, 650)
        assert (second.status_code, second.json()["amount_cents"]) == (202, 800)
        assert third.status_code == 422 and "sprocket" in third.text
        assert [p.price_cents for p in await app.published(ProductPriced)] == [325, 400]
        assert await app.published(ProductWithdrawn) == [ProductWithdrawn(sku="sprocket")]


async def test_untranslatable_changes_go_to_the_dead_letters_with_the_reason() -> None:
    row = {"adj_id": 1, "prod_cd": "widget", "adj_qty": -2, "rsn_cd": "DMG"}
    async with TestApp(acl.service) as app:
        await feed(
            app, "stk_adj", {"adj_id": 1},
            change_value("stk_adj", "c", after=row),
            change_value("stk_adj", "u", after={**row, "adj_qty": -3}),
            change_value("stk_adj", "c", after={**row, "adj_id": 2, "rsn_cd": "ZZZ"}),
        )  # fmt: skip
        renamed = {"cust_no": "c9", "cust_nm": "Bo", "credit_limit_amt": "5.00"}
        await feed(app, "cust", {"cust_no": "c9"}, change_value("cust", "c", after=renamed))
        await feed(app, "prod", {"prod_cd": "p"}, b"{not json")
        assert await app.published(StockAdjusted) == [
            StockAdjusted(sku="widget", change=-2, reason="damaged")
        ]
        letters = await app.dead_letters(acl.service)
        reasons = [f"{letter.reason}: {letter.error}" for letter in letters]
        assert len(reasons) == 4, reasons
        assert "append-only" in reasons[0]
        assert "'ZZZ' is unknown" in reasons[1]
        assert "column 'cr_lim' missing" in reasons[2] and "credit_limit_amt" in reasons[2]
        assert "is JSON" in reasons[3]


async def test_a_dead_lettered_change_replayed_after_the_fix_is_translated() -> None:
    row = {"adj_id": 5, "prod_cd": "gizmo", "adj_qty": 4, "rsn_cd": "XFR"}
    async with TestApp(acl.service) as app:
        await feed(app, "stk_adj", {"adj_id": 5}, change_value("stk_adj", "c", after=row))
        [letter] = await app.dead_letters(acl.service)
        acl.REASONS["XFR"] = "transfer"  # the mapping is fixed...
        try:
            await app.transport.publish([letter.replay_record()])  # ...and the letter replayed
            await app.drain()
        finally:
            del acl.REASONS["XFR"]
        assert await app.published(StockAdjusted) == [
            StockAdjusted(sku="gizmo", change=4, reason="transfer")
        ]


async def test_inventory_takes_stock_adjustments_once_each_and_never_below_zero() -> None:
    rows = [
        {"adj_id": 7, "prod_cd": "widget", "adj_qty": -2, "rsn_cd": "DMG"},
        {"adj_id": 8, "prod_cd": "doohickey", "adj_qty": -9, "rsn_cd": "DMG"},
        {"adj_id": 9, "prod_cd": "sprocket", "adj_qty": 3, "rsn_cd": "CNT"},
    ]
    async with TestApp(acl.service, inventory.service) as app:
        for row in rows:
            change = change_value("stk_adj", "c", after=row)
            # Connect replaying a change after a crash: the same record twice.
            await feed(app, "stk_adj", {"adj_id": row["adj_id"]}, change, change)
        [widget] = [e for e in await app.envelopes(STOCK) if e.data["sku"] == "widget"]
        # The event itself delivered again (a relay's retry): the inbox drops it.
        await app.transport.publish([codec.encode(widget, STOCK)])
        await app.drain()
        assert (await app.get(inventory.stock, "widget")).available == INITIAL_STOCK["widget"] - 2
        assert (await app.get(inventory.stock, "doohickey")).available == 0  # 5 - 9: none left
        assert (await app.get(inventory.stock, "sprocket")).available == 3  # a new product
        assert await app.dead_letters(inventory.service) == []
