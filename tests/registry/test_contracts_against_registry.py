"""``tidings contracts verify --against REGISTRY``: every registered version of a subject
is a producer's promise the consumer must be able to read."""

from __future__ import annotations

import json
from pathlib import Path

import httpx

from tidings.testing.commands import tidings

CONSUMER = """
from tidings import Event, Service


class ParcelSent(Event, topic="contracts.parcels", key="parcel_id"):
    parcel_id: str
    grams: int


service = Service("depot")


@service.on
async def receive(event: ParcelSent) -> None: ...
"""


def _schema(**properties: str) -> str:
    return json.dumps(
        {
            "type": "object",
            "properties": {name: {"type": kind} for name, kind in properties.items()},
            "required": sorted(properties),
        }
    )


def test_each_registered_version_is_checked(registry: str, tmp_path: Path) -> None:
    (tmp_path / "depot.py").write_text(CONSUMER)
    subject = f"{registry}/subjects/contracts.parcels-ParcelSent"
    httpx.put(f"{registry}/config/contracts.parcels-ParcelSent", json={"compatibility": "NONE"})
    for schema in (_schema(parcel_id="string", grams="integer"), _schema(parcel_id="string")):
        assert httpx.post(f"{subject}/versions", json={"schema": schema, "schemaType": "JSON"})
    result = tidings("contracts", "verify", "depot:service", "--against", registry, "--json", cwd=tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    verdicts = {v["producer"]: v for v in json.loads(result.stdout)}
    assert verdicts["registry v1"]["ok"] is True
    assert verdicts["registry v2"]["ok"] is False
    assert [b["path"] for b in verdicts["registry v2"]["breaks"]] == ["grams"]
