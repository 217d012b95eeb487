"""``tidings contracts verify`` as a user runs it: a consumer and producers in modules of
their own, a broken contract failing the command with the field named."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

from tidings.testing.commands import tidings

REPO = Path(__file__).resolve().parents[2]
SHOP = [
    "shop.order:service", "shop.inventory:service", "shop.billing:service",
    "shop.orchestrator:service", "shop.acl:service",
]  # fmt: skip

CONSUMER = '''
from tidings import Event, Service, upcaster


class ParcelSent(Event, topic="contracts.parcels", key="parcel_id", version=2):
    parcel_id: str
    grams: int
    note: str = ""  # it can do without


service = Service("depot")


@service.on
async def receive(event: ParcelSent) -> None: ...
'''

PRODUCER = '''
from tidings import Event, Service


class ParcelSent(Event, topic="contracts.parcels", key="parcel_id", version={version}):
    parcel_id: str
{fields}

service = Service("{name}", publishes=[ParcelSent])
'''


def _module(directory: Path, name: str, text: str) -> None:
    (directory / f"{name}.py").write_text(textwrap.dedent(text))


def test_the_shops_contracts_hold_in_code_and_against_its_lock() -> None:
    in_code = tidings("contracts", "verify", *SHOP, "--json", cwd=REPO)
    assert in_code.returncode == 0, in_code.stdout + in_code.stderr
    verdicts = json.loads(in_code.stdout)
    assert all(v["ok"] for v in verdicts)
    # Every event has its producer among the shop's services, but for the back office's
    # row changes: Debezium produces those, outside Tidings.
    unproduced = {v["subject"] for v in verdicts if not v["producer"]}
    assert unproduced == {
        "legacy.cust-legacy.cust.changed", "legacy.prod-legacy.prod.changed",
        "legacy.stk_adj-legacy.stk_adj.changed",
    }  # fmt: skip
    pairs = {(v["type"], v["producer"], v["consumer"]) for v in verdicts}
    assert ("InventoryReserved", "inventory", "billing.charge") in pairs
    assert ("OrderPlaced", "order", "inventory.reserve") in pairs
    locked = tidings("contracts", "verify", *SHOP, "--against", "schemas", cwd=REPO)
    assert locked.returncode == 0, locked.stdout + locked.stderr
    assert "lock shop.orders-OrderPlaced.json" in locked.stdout


def test_a_producer_that_drops_a_field_the_consumer_reads_breaks_the_contract(
    tmp_path: Path,
) -> None:
    _module(tmp_path, "depot", CONSUMER)
    _module(tmp_path, "good", PRODUCER.format(name="good", version=2, fields="    grams: int"))
    _module(tmp_path, "lean", PRODUCER.format(name="lean", version=2, fields="    weight: int"))
    result = tidings(
        "contracts", "verify", "depot:service", "good:service", "lean:service", "--json",
        cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 1, result.stdout + result.stderr
    verdicts = {v["producer"]: v for v in json.loads(result.stdout)}
    assert verdicts["good"]["ok"] is True
    assert verdicts["lean"]["ok"] is False
    assert [b["path"] for b in verdicts["lean"]["breaks"]] == ["grams"]
    table = tidings("contracts", "verify", "depot:service", "lean:service", cwd=tmp_path)
    assert table.returncode == 1 and "broken" in table.stdout and "grams" in table.stdout


def test_an_older_producer_needs_the_consumers_upcasters(tmp_path: Path) -> None:
    _module(tmp_path, "depot", CONSUMER)
    _module(tmp_path, "old", PRODUCER.format(name="old", version=1, fields="    kilos: float"))
    missing = tidings("contracts", "verify", "depot:service", "old:service", "--json", cwd=tmp_path)
    assert missing.returncode == 1
    (verdict,) = json.loads(missing.stdout)
    assert verdict["breaks"][0]["reason"] == "writes v1, reads v2: no upcaster from v1"
    with (tmp_path / "depot.py").open("a") as module:
        module.write(
            "\n\n@upcaster(ParcelSent, from_version=1)\n"
            "def to_grams(data: dict) -> dict:\n"
            "    return {**data, 'grams': round(data.pop('kilos') * 1000)}\n"
        )
    upcast = tidings("contracts", "verify", "depot:service", "old:service", "--json", cwd=tmp_path)
    assert upcast.returncode == 0, upcast.stdout + upcast.stderr
    assert json.loads(upcast.stdout)[0]["note"] == "v1 read through upcasters to v2"


def test_a_consumer_without_a_producer_is_reported_not_failed(tmp_path: Path) -> None:
    _module(tmp_path, "depot", CONSUMER)
    result = tidings("contracts", "verify", "depot:service", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "unchecked" in result.stdout and "no producer of it in this check" in result.stdout
