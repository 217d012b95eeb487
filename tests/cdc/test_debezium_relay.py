"""The outbox through Debezium (``--relay debezium``) on the real thing: the shop on Kafka
and PostgreSQL, its order service's outbox published by Debezium's outbox router on
Kafka Connect, inventory and billing on the polling relay. A schema, connector and slot
of its own, dropped at the end."""

from __future__ import annotations

import asyncio
from pathlib import Path
from urllib.parse import unquote

import httpx
import psycopg
import pytest

from shop.demo import Shop, order_mix, place_orders, wait_settled
from shop.events import ORDERS
from shop.invariants import payments_in_log, read_stock, report
from tidings import codec
from tidings.cdc import connect
from tidings.cdc.outbox import connector_config, connector_name
from tidings.demo import relays
from tidings.records import OutgoingRecord, Record
from tidings.reliability.debezium import DebeziumRelay
from tidings.store import StoreError, make_store
from tidings.store.postgres.captured import insert_params
from tidings.testing import free_port, records
from tidings.testing.commands import tidings
from tidings.testing.postgres import fresh_schema
from tidings.testing.servers import require
from tidings.transport import make_transport, open_transport

KAFKA = "kafka://127.0.0.1:9092"
POSTGRES = "postgresql://postgres@127.0.0.1:5432/tidings"
CONNECT = connect.DEFAULT_URL


async def order_records(ids: set[str]) -> list[Record]:
    transport = await open_transport(KAFKA)
    try:
        found = await records(transport, ORDERS)
    finally:
        await transport.close()
    return [r for r in found if r.key in ids]


def test_the_config_routes_rows_as_the_codec_writes_records() -> None:
    config = connector_config("outbox_x", "postgresql://u@h:5433/db", "s.outbox_captured")
    assert config["table.include.list"] == r"s\.outbox_captured"
    assert config["transforms"] == "outbox,dropid"
    placement = config["transforms.outbox.table.fields.additional.placement"].split(",")
    assert "ce_id:header:ce_id" in placement and "content_type:header:content-type" in placement
    assert not any(k.startswith("transforms.route.") for k in config)
    long = connector_name("tidings", "tidings_test_" + "a" * 40)
    assert len(long) <= 41 and long.startswith("outbox_tidings_tidings_test_")
    record = OutgoingRecord("t", b"{}", "k", {"ce_id": "1", "content-type": "application/json"})
    params = insert_params("order", [record])
    assert params[:4] == ("order", ["t"], ["k"], [b"{}"]) and ["1"] in params
    with pytest.raises(ValueError, match="x-tenant cannot be published through Debezium"):
        insert_params("order", [OutgoingRecord("t", b"{}", "k", {"x-tenant": "a"})])


def test_an_order_service_on_debezium_settles_orders_with_services_on_polling(
    tmp_path: Path,
) -> None:
    require(KAFKA, POSTGRES, "kafka-connect://127.0.0.1:8083")
    with fresh_schema(POSTGRES) as store:
        schema = unquote(store).rsplit("search_path=", 1)[1]
        name = connector_name("tidings", schema)
        shop = Shop(tmp_path, KAFKA, store, free_port(), f"relay-{schema}")
        shop.args["order"] = ["--relay", "debezium"]
        try:
            shop.start()
            shop.wait_ready(timeout=300)  # registering waits for open transactions to end
            before = asyncio.run(read_stock(store))
            ids = asyncio.run(place_orders(shop.base, order_mix(12, f"{schema}-1"), 6))
            # A Connect task restart mid-stream: it resumes from its offsets.
            httpx.post(f"{CONNECT}/connectors/{name}/tasks/0/restart", timeout=30)
            ids += asyncio.run(place_orders(shop.base, order_mix(12, f"{schema}-2"), 6))
            final = asyncio.run(wait_settled(shop.base, ids, 120))
            after = asyncio.run(read_stock(store))
            payments = asyncio.run(payments_in_log(KAFKA))
            assert len(final) == 24
            assert report(final, before, after, payments, 0.0), "an invariant failed (see output)"

            published = asyncio.run(order_records(set(ids)))
            # Every order's events, each as the codec itself writes it (topic, key,
            # headers, value), so consumers on either relay read them alike.
            assert {r.key for r in published} == set(ids)
            for record in published:
                again = codec.encode(codec.decode(record), record.topic)
                assert (record.key, record.value, record.headers) == (
                    again.key, again.value, dict(again.headers)
                )  # fmt: skip
            running = {"connector": "RUNNING", "tasks": ["RUNNING"], "trace": None}
            assert connect.states(CONNECT, name) == running  # the order service's start made it
            with psycopg.connect(store) as conn:  # the outbox does not grow
                assert conn.execute("SELECT count(*) FROM outbox_captured").fetchone() == (0,)
                polled = "SELECT count(*) FROM outbox WHERE service = 'order'"
                assert conn.execute(polled).fetchone() == (0,)
        finally:
            shop.stop()
            connect.drop(CONNECT, name, POSTGRES)


async def test_a_broker_or_store_debezium_cannot_serve_is_refused_with_the_reason(
    tmp_path: Path,
) -> None:
    sqlite_log = make_transport(f"sqlite:///{tmp_path}/log.db")
    sqlite = make_store(f"sqlite:///{tmp_path}/order.db")
    with pytest.raises(ValueError, match="sqlite:// is not Kafka: use --relay polling"):
        await DebeziumRelay(sqlite, sqlite_log, "order").prepare()
    with pytest.raises(StoreError, match="Debezium reads PostgreSQL's write-ahead log"):
        await DebeziumRelay(sqlite, make_transport(KAFKA), "order").prepare()
    assert relays("order=debezium", ["order", "billing"]) == {
        "order": "debezium", "billing": "polling"
    }  # fmt: skip
    with pytest.raises(ValueError, match="SERVICE one of order, billing and RELAY polling or"):
        relays("order=kafka", ["order", "billing"])


def test_tidings_run_says_in_one_line_that_connect_is_unreachable() -> None:
    require(KAFKA, POSTGRES)
    with fresh_schema(POSTGRES) as store:
        run = tidings(
            "run", "shop.order:service", "-b", KAFKA, "-s", store,
            "--relay", "debezium", "--connect", "http://127.0.0.1:9",
        )  # fmt: skip
    assert run.returncode == 2 and "Kafka Connect at http://127.0.0.1:9/" in run.stderr
    assert "is unreachable" in run.stderr and "Traceback" not in run.stderr
