"""The outbox that Debezium captures: rows written and deleted in the unit of work itself.

A service run with ``--relay debezium`` (:mod:`tidings.cdc.outbox`) has no polling relay:
Debezium reads its outbox rows from PostgreSQL's write-ahead log and its outbox event
router publishes them. Those rows go to ``outbox_captured`` rather than ``outbox``:

* one column per header a record may carry (the CloudEvents attributes as ``ce_*`` and
  ``content-type``), because the event router makes Kafka headers from columns only,
  never from a JSON map such as ``outbox.headers``;
* each unit of work inserts its rows and deletes them again in the same transaction, as
  Debezium's outbox pattern does: the insert is in the log (which the connector's
  replication slot keeps until Debezium has read it), the table never holds a live row,
  so it does not grow; autovacuum removes the dead ones. A rolled-back unit of work
  leaves nothing Debezium publishes (logical decoding sends committed transactions only);
* a record with another header cannot travel this way and is refused (ValueError naming
  it) before the commit, rather than published without it.

The delete needs no ids: every row committed is already deleted by its own transaction,
and rows of transactions still open are not visible here, so ``WHERE service = %s``
deletes this unit of work's rows alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, LiteralString

from tidings.records import OutgoingRecord

TABLE = "outbox_captured"
# Header -> column, in column order. The codec writes no other header (tidings.codec).
HEADER_COLUMNS: dict[str, LiteralString] = {
    "ce_id": "ce_id",
    "ce_source": "ce_source",
    "ce_type": "ce_type",
    "ce_specversion": "ce_specversion",
    "ce_time": "ce_time",
    "ce_subject": "ce_subject",
    "ce_dataschema": "ce_dataschema",
    "ce_correlationid": "ce_correlationid",
    "ce_causationid": "ce_causationid",
    "ce_traceparent": "ce_traceparent",
    "ce_schemaversion": "ce_schemaversion",
    "content-type": "content_type",
}
_COLUMNS: LiteralString = ", ".join(HEADER_COLUMNS.values())
_NAMES: LiteralString = ", ".join(f"r.{c}" for c in HEADER_COLUMNS.values())
_ARRAYS: LiteralString = ", ".join("%s::text[]" for _ in HEADER_COLUMNS)

CREATE: LiteralString = (
    f"CREATE TABLE IF NOT EXISTS {TABLE} ("
    " id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,"
    " service text NOT NULL, topic text NOT NULL, key text, value bytea NOT NULL, "
    + ", ".join(f"{c} text" for c in HEADER_COLUMNS.values())
    + ")"
)
# One statement for a batch, in the order given (as the polled outbox's INSERT_OUTBOX).
INSERT: LiteralString = (
    f"INSERT INTO {TABLE} (service, topic, key, value, {_COLUMNS})"
    f" SELECT %s, r.topic, r.key, r.value, {_NAMES}"
    f" FROM unnest(%s::text[], %s::text[], %s::bytea[], {_ARRAYS})"
    f" WITH ORDINALITY AS r (topic, key, value, {_COLUMNS}, n) ORDER BY r.n"
)
DELETE: LiteralString = f"DELETE FROM {TABLE} WHERE service = %s"


def insert_params(service: str, records: Sequence[OutgoingRecord]) -> tuple[Any, ...]:
    """The parameters of :data:`INSERT` for ``records``; ValueError naming a header that
    has no column (see the module's rules)."""
    for r in records:
        extra = sorted(set(r.headers) - HEADER_COLUMNS.keys())
        if extra:
            raise ValueError(
                f"{r.topic}: header(s) {', '.join(extra)} cannot be published through "
                "Debezium's outbox router, which carries only the CloudEvents attributes "
                "and content-type; run this service with --relay polling"
            )
    columns = [[r.headers.get(h) for r in records] for h in HEADER_COLUMNS]
    return (
        service,
        [r.topic for r in records],
        [r.key for r in records],
        [r.value for r in records],
        *columns,
    )
