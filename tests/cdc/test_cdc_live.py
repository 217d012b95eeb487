"""Change data capture on the real thing: legacy rows in PostgreSQL, Debezium on Kafka
Connect, the anti-corruption layer and the order service as ``tidings run`` processes on
Kafka. Each module run has its own legacy schema, connector, slot and topics."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from shop.events import CUSTOMERS
from shop.migration import KAFKA, POSTGRES, LegacySite, catalog_price, wait_for
from tidings.testing import envelopes, free_port
from tidings.testing.postgres import fresh_schema
from tidings.testing.processes import ServiceProcesses

REPO = Path(__file__).resolve().parents[2]
CONNECT_PID = REPO / ".services" / "connect" / "pid"


@pytest.fixture(scope="module")
def shop(site: LegacySite, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcesses]:
    """The anti-corruption layer and the order service, reading this site's topics (one
    pair for the module: the tests use keys of their own)."""
    with fresh_schema(POSTGRES) as store:
        procs = ServiceProcesses(
            tmp_path_factory.mktemp("shop"), KAFKA, store,
            {"legacy-acl": "shop.acl:service", "order": "shop.order:service"},
            http={"order": free_port()},
        )  # fmt: skip
        procs.env["SHOP_LEGACY_TOPICS"] = site.prefix
        procs.start()
        try:
            procs.wait_ready()
            yield procs
        finally:
            procs.stop()


def customer_events(*customers: str) -> dict[str, list[tuple[str, Any]]]:
    """Per customer, in log order: (type, the limit it states) of each event."""
    found: dict[str, list[tuple[str, Any]]] = {c: [] for c in customers}
    for e in asyncio.run(envelopes(KAFKA, CUSTOMERS)):
        if e.data.get("customer_id") in found:
            limit = e.data.get("limit_cents", e.data.get("credit_limit_cents"))
            found[e.data["customer_id"]].append((e.type, limit))
    return found


def events_become(expected: dict[str, list[tuple[str, Any]]], timeout: float = 90) -> None:
    """Wait until the customers' events are ``expected``; assert they are, exactly."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = customer_events(*expected)
        if all(len(got[c]) >= len(expected[c]) for c in expected):
            break
        time.sleep(0.5)
    assert got == expected


def test_inserts_updates_and_deletes_become_the_shops_events_in_order(
    site: LegacySite, shop: ServiceProcesses
) -> None:
    ann, bob = f"ann-{site.run}", f"bob-{site.run}"
    site.sql("INSERT INTO cust (cust_no, cust_nm, cr_lim) VALUES (%s, 'Ann', 10), (%s, 'Bob', 5)", ann, bob)  # fmt: skip
    for limit in (20, 30):
        site.sql("UPDATE cust SET cr_lim = %s WHERE cust_no = %s", limit, ann)
    site.sql("UPDATE cust SET upd_ts = now() WHERE cust_no = %s", ann)  # nothing the shop reads
    site.sql("UPDATE cust SET cr_lim = 7.25 WHERE cust_no = %s", bob)
    site.sql("DELETE FROM cust WHERE cust_no = %s", ann)
    events_become({
        ann: [("CustomerRegistered", 1000), ("CreditLimitChanged", 2000),
              ("CreditLimitChanged", 3000), ("CustomerClosed", None)],
        bob: [("CustomerRegistered", 500), ("CreditLimitChanged", 725)],
    })  # fmt: skip


def test_a_legacy_price_change_reaches_the_catalog_and_the_next_order(
    site: LegacySite, shop: ServiceProcesses
) -> None:
    sku = f"part-{site.run}"
    base = f"http://127.0.0.1:{shop.http['order']}"
    body = {"customer_id": f"c-{site.run}", "lines": [{"sku": sku, "quantity": 2}]}
    site.sql("INSERT INTO prod (prod_cd, prod_desc, unit_prc) VALUES (%s, 'Part', 3.25)", sku)
    assert wait_for("the price", lambda: catalog_price(base, sku), 90) == 325
    first = httpx.post(f"{base}/orders", json=body).json()
    site.sql("UPDATE prod SET unit_prc = 4.10 WHERE prod_cd = %s", sku)
    wait_for("the new price", lambda: catalog_price(base, sku) == 410 or None, 90)
    second = httpx.post(f"{base}/orders", json=body).json()
    assert (first["amount_cents"], second["amount_cents"]) == (650, 820)


def _connect_pid() -> int:
    pid = int(CONNECT_PID.read_text().split()[0])
    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    assert b"ConnectDistributed" in cmdline, f"pid {pid} is not the Connect worker"
    return pid


def test_connect_sigkilled_mid_stream_and_restarted_loses_nothing(
    site: LegacySite, shop: ServiceProcesses
) -> None:
    if os.geteuid() != 0:
        pytest.skip("restarting Connect needs scripts/services, which runs as root")
    who = f"kim-{site.run}"
    site.sql("INSERT INTO cust (cust_no, cust_nm, cr_lim) VALUES (%s, 'Kim', 1)", who)
    limits = list(range(2, 41))

    def updates() -> None:  # one committed change every ~50ms, through the kill
        for limit in limits:
            site.sql("UPDATE cust SET cr_lim = %s WHERE cust_no = %s", limit, who)
            time.sleep(0.05)

    writer = threading.Thread(target=updates)
    writer.start()
    time.sleep(0.5)
    os.kill(_connect_pid(), signal.SIGKILL)  # no offset flush: it replays from the last one
    writer.join()
    subprocess.run([REPO / "scripts" / "services", "up", "connect"], check=True, timeout=180)
    events_become(
        {who: [("CustomerRegistered", 100)]
              + [("CreditLimitChanged", limit * 100) for limit in limits]},
        timeout=120,
    )  # fmt: skip


def test_a_connector_connect_refuses_is_reported_with_connects_reason(site: LegacySite) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "tidings", "cdc", "register", f"bad_{site.run}",
         "--database", "postgresql://postgres@127.0.0.1:5432/no_such_database",
         "--tables", f"{site.schema}.cust", "--topic-prefix", f"bad_{site.run}"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 2
    assert "no_such_database" in result.stderr and "cannot connect" in result.stderr
    missing = subprocess.run(
        [sys.executable, "-m", "tidings", "cdc", "register", f"bad_{site.run}",
         "--tables", f"{site.schema}.no_such_table", "--topic-prefix", f"bad_{site.run}"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert missing.returncode == 2
    assert f"no table {site.schema}.no_such_table" in missing.stderr
    status = subprocess.run(
        [sys.executable, "-m", "tidings", "cdc", "status"], capture_output=True, text=True
    )
    assert f"{site.connector}: RUNNING, tasks: RUNNING" in status.stdout
    assert f"bad_{site.run}" not in status.stdout  # refused at registration: nothing left


def test_lag_lists_the_connectors_with_the_groups(site: LegacySite) -> None:
    lag = subprocess.run(
        [sys.executable, "-m", "tidings", "lag", "--broker", "kafka://127.0.0.1:9092",
         "--connect", "http://127.0.0.1:8083"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert lag.returncode == 0, lag.stderr
    assert "committed" in lag.stdout  # the groups' table, then the connectors
    assert f"{site.connector}: RUNNING, tasks: RUNNING" in lag.stdout
