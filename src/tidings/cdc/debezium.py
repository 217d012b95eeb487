"""Debezium's change events as envelopes: a decoder for foreign records (not CloudEvents).

Debezium writes one record per changed row on ``<prefix>.<schema>.<table>`` (or where a
router sends it), keyed by the row's primary key. With Connect's ``JsonConverter`` and
``schemas.enable=false`` (what ``scripts/services up connect`` configures) the value is::

    {"before": {...} | null, "after": {...} | null, "op": "c" | "u" | "d" | "r" | "t",
     "source": {"db": ..., "schema": ..., "table": ..., "lsn": ..., "txId": ...,
                "ts_ms": ..., "snapshot": ...}, "ts_ms": ...}

Rules of :func:`decode_change`:

* a **tombstone** (empty value: Kafka's marker that follows a delete, for compaction)
  decodes to ``None``: the runtime skips it, the delete before it carried the change;
* the envelope's **type** is the one ``types`` gives the table (unmapped tables get
  ``debezium.<schema>.<table>``, which no handler takes, so they are skipped);
* its **id** is derived from where the change sits in the database's log (connector
  name, table, LSN, operation and key), not drawn at random: Connect killed before it
  saved its offsets sends the same changes again, they get the same ids, and the
  consumer's inbox drops them;
* its **subject** (the partition key) is the row's key, so one row's changes stay in order;
* ``data`` is ``{"operation": "create|update|delete|snapshot|truncate", "before",
  "after", "schema", "table", "position", "transaction", "committed_at"}``, with the
  column values as Debezium wrote them (NUMERIC columns as strings with
  ``decimal.handling.mode=string``, which :mod:`tidings.cdc.connect` sets);
* anything else (not JSON, no ``op``/``source``, an unknown ``op``) raises
  :class:`~tidings.codec.DecodeError` saying what is missing: the runtime dead-letters
  the record as ``undecodable`` with that reason.

Pure: no I/O, no clock.
"""

from __future__ import annotations

import dataclasses
import json
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from tidings.codec import DecodeError
from tidings.envelope import Envelope
from tidings.records import Record

OPERATIONS = {"c": "create", "u": "update", "d": "delete", "r": "snapshot", "t": "truncate"}
# Namespace of the ids derived from a change's place in the log (any fixed UUID will do).
_IDS = uuid.UUID("6c1f3f5e-7c1a-4f0e-9a54-2d6d0b1e6c11")


def _object(value: Any, what: str, where: Record) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise DecodeError(
            f"{where.topic}/{where.partition}@{where.offset}: not a Debezium change event "
            f"({what} is {type(value).__name__}, expected an object)"
        )
    return value


def _subject(key: str | None) -> str | None:
    """The row's key as a partition key: the value of a one-column key, else its JSON."""
    if not key:
        return None
    try:
        parsed = json.loads(key)
    except ValueError:
        return key
    if isinstance(parsed, dict) and len(parsed) == 1:
        return str(next(iter(parsed.values())))
    return key


def decode_change(record: Record, types: Mapping[str, str]) -> Envelope | None:
    """The envelope of one Debezium change record (see the module's rules); ``types``:
    CloudEvents type per table name. ``None`` for a tombstone."""
    if not record.value:
        return None
    try:
        body = json.loads(record.value)
    except ValueError as exc:
        raise DecodeError(f"{record.topic}: a Debezium change event is JSON: {exc}") from None
    body = _object(body, "the value", record)
    if "payload" in body and "op" not in body:  # a converter with schemas.enable=true
        body = _object(body["payload"], "payload", record)
    op = body.get("op")
    if op not in OPERATIONS:
        raise DecodeError(
            f"{record.topic}/{record.partition}@{record.offset}: not a Debezium change event "
            f"(op is {op!r}, expected one of {', '.join(OPERATIONS)})"
        )
    source = _object(body.get("source"), "source", record)
    schema, table = source.get("schema"), source.get("table")
    if not isinstance(table, str):
        raise DecodeError(f"{record.topic}@{record.offset}: Debezium source names no table")
    for side in ("before", "after"):
        if body.get(side) is not None:
            _object(body[side], side, record)
    # The change's place in the database's log names it: the same change replayed by
    # Connect after a crash gets the same id (the inbox drops it), two changes never do.
    position = source.get("lsn") or source.get("change_lsn")  # PostgreSQL, SQL Server
    if position is None and "file" in source and "pos" in source:  # MySQL's binlog
        position = f"{source['file']}:{source['pos']}:{source.get('row', 0)}"
    if position is None:
        raise DecodeError(
            f"{record.topic}@{record.offset}: the Debezium source has no log position (lsn,"
            " change_lsn or file/pos), so its changes could not be told apart"
        )
    millis = source.get("ts_ms") or body.get("ts_ms") or record.timestamp * 1000
    place = f"{source.get('name')}/{source.get('db')}/{schema}.{table}/{position}/{op}/{record.key}"
    return Envelope(
        id=str(uuid.uuid5(_IDS, place)),
        source=f"debezium/{source.get('connector', 'postgresql')}/{source.get('name')}",
        type=types.get(table, f"debezium.{schema}.{table}"),
        subject=_subject(record.key),
        data={
            "operation": OPERATIONS[op],
            "before": body.get("before"),
            "after": body.get("after"),
            "schema": schema,
            "table": table,
            "position": position,
            "transaction": source.get("txId"),
            "committed_at": datetime.fromtimestamp(millis / 1000, UTC).isoformat(),
        },
        time=datetime.fromtimestamp(millis / 1000, UTC),
    )


@dataclasses.dataclass(frozen=True)
class Debezium:
    """A foreign-record decoder for ``Service.foreign``: Debezium's JSON change events,
    typed per table by ``types`` (see :func:`decode_change`)."""

    types: Mapping[str, str]

    def __call__(self, record: Record) -> Envelope | None:
        return decode_change(record, self.types)
