"""Debezium change records shaped as Connect's JsonConverter (schemas.enable=false)
writes them, for the unit tests of the decoder and the anti-corruption layer (the
integration tests in tests/cdc read real ones)."""

from __future__ import annotations

import itertools
import json
from typing import Any

from tidings.records import OutgoingRecord, Record

_lsn = itertools.count(1_000_000, 100)


def change_value(
    table: str,
    op: str,
    *,
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
    lsn: int | None = None,
    schema: str = "legacy",
) -> bytes:
    source = {
        "version": "3.6.1.Final", "connector": "postgresql", "name": "legacy",
        "ts_ms": 1_796_000_000_000, "snapshot": "false", "db": "tidings", "schema": schema,
        "table": table, "txId": 7, "lsn": next(_lsn) if lsn is None else lsn,
    }  # fmt: skip
    body = {"before": before, "after": after, "source": source, "op": op, "ts_ms": 1}
    return json.dumps(body).encode()


def outgoing(topic: str, key: dict[str, Any], value: bytes) -> OutgoingRecord:
    return OutgoingRecord(topic, value, json.dumps(key, separators=(",", ":")))


def record(topic: str, key: dict[str, Any] | None, value: bytes, offset: int = 0) -> Record:
    return Record(topic, 0, offset, None if key is None else json.dumps(key), value, {}, 1.0)
