"""Causal chains of events, and records that are not ours, written straight to a broker.

For tests and benchmarks of the tools that read the log (``tidings trace``, the dashboard,
``tidings dlq``): :func:`causal_chain` makes the records that services handling one
request would publish, without running them, and :func:`foreign_records` what other
systems might put on the same topics.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta

from tidings import codec
from tidings.envelope import Envelope
from tidings.records import OutgoingRecord

Step = tuple[str, str, str]  # (event type, the service that publishes it, topic)

# The shop's happy path: each event caused by the one before, one correlation.
SHOP_ORDER: tuple[Step, ...] = (
    ("OrderPlaced", "order", "shop.orders"),
    ("InventoryReserved", "inventory", "shop.inventory"),
    ("PaymentProcessed", "billing", "shop.billing"),
    ("OrderCompleted", "order", "shop.orders"),
)


def causal_chain(
    steps: Sequence[Step],
    subject: str,
    start: datetime,
    *,
    topic_prefix: str = "",
    gap: timedelta = timedelta(milliseconds=3),
) -> list[OutgoingRecord]:
    """The events of one request as services publish them (binary mode): the first is
    the root (its id is the correlation), each next one caused by the one before, all
    keyed by ``subject`` and ``gap`` apart in time."""
    records: list[OutgoingRecord] = []
    cause: Envelope | None = None
    for step, (kind, source, topic) in enumerate(steps):
        event_id = str(uuid.uuid4())
        envelope = Envelope(
            id=event_id,
            source=source,
            type=kind,
            subject=subject,
            data={"order_id": subject, "step": step},
            time=start + gap * step,
            correlationid=cause.correlationid if cause is not None else event_id,
            causationid=cause.id if cause is not None else None,
        )
        records.append(codec.encode(envelope, topic_prefix + topic))
        cause = envelope
    return records


def foreign_records(topic: str, key: str) -> list[OutgoingRecord]:
    """Records another system might write to ``topic``, keyed and naming ``key``: raw
    bytes, JSON without CloudEvents attributes, JSON that is not an object, a ``ce_id``
    header on a value that is not JSON, and a structured event missing its type."""
    missing_type = {"specversion": "1.0", "id": f"x-{key}", "source": "elsewhere", "subject": key}
    return [
        OutgoingRecord(topic, b"\x00\x01 raw bytes \xff\xfe", key, {}),
        OutgoingRecord(topic, json.dumps({"order_id": key}).encode(), key, {}),
        OutgoingRecord(topic, b"[1, 2, 3]", key, {"content-type": "application/json"}),
        OutgoingRecord(topic, b"not json", key, {"ce_id": f"y-{key}", "ce_subject": key}),
        OutgoingRecord(topic, json.dumps(missing_type).encode(), key, {}),
    ]
