"""Names and messages on an EventBridge bus: how a topic becomes rules, and how a record
becomes an event and comes back from the group's SQS queue.

* **One bus** for every topic (``bus`` option, default :data:`DEFAULT_BUS`): a record is
  an event with source :data:`SOURCE`, its topic and partition in the detail, so rules
  route by them. One bus and not one per topic because AWS allows 100 buses per account
  and region but 300 rules per bus (both raisable), and a topic costs no bus of its own;
  permissions, archives and a user's own rules (by ``detail-type``, the event's type)
  then see every topic in one place.
* Topic ``T`` is declared by the rule :func:`topic_rule` (disabled, no target), tagged
  with ``T`` and its partition count (:data:`.wire.TOPIC_TAG`, :data:`.wire.PARTITIONS_TAG`),
  read back by ``topics()``.
* Group ``G`` reads ``T`` from its FIFO queue (:mod:`.groups`), filled by one rule per
  partition, :func:`route_rule`, matching :func:`pattern` (``T`` and partition ``p``),
  whose one target is the queue with ``SqsParameters.MessageGroupId`` ``partition-p``.
  A rule target's message group id is a fixed string (no per-event value), so the
  message group is the partition, not the key: order holds per partition (hence per
  key), and a group's members share a partition's records one receive at a time.
* **Messages**: the detail is a JSON object :func:`detail` (topic, partition, key,
  headers, the value as text or base64 (:func:`.wire.body`), and an id: the event id, or
  a random one). The target's input transformer (:data:`TARGET_INPUT`) makes the detail
  alone the SQS message body, so the body is the same each time a record is published:
  the queue's content-based deduplication (which EventBridge needs on a FIFO queue)
  then drops a record the outbox publishes twice within SQS's 5 minutes, as the event
  id does on SNS. The time is SQS's ``SentTimestamp``.
* Rule names allow ``[.-_A-Za-z0-9]``, 64 characters: other characters become ``-``,
  readable parts are cut short and a hash of the whole keeps names unique.
"""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from collections.abc import Mapping
from typing import Any

from tidings.records import OutgoingRecord, Record
from tidings.transport.aws.wire import body, sent_at, value
from tidings.transport.errors import TransportError

__all__ = [
    "DEFAULT_BUS",
    "MAX_ENTRY_BYTES",
    "SOURCE",
    "TARGET_INPUT",
    "TOPIC_RULE_PREFIX",
    "detail",
    "entry",
    "entry_size",
    "pattern",
    "record",
    "route_rule",
    "topic_rule",
]

DEFAULT_BUS = "tidings"
SOURCE = "tidings"
TOPIC_RULE_PREFIX = "tidings-topic-"
MAX_ENTRY_BYTES = 256 * 1024  # PutEvents: one entry, all its fields
# The SQS message body is the event's detail alone (see the module).
TARGET_INPUT: Mapping[str, Any] = {
    "InputPathsMap": {"detail": "$.detail"},
    "InputTemplate": "<detail>",
}

_NOT_NAME = re.compile(r"[^A-Za-z0-9_.-]")


def _digest(*parts: str) -> str:
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:8]


def _short(text: str, size: int) -> str:
    return _NOT_NAME.sub("-", text)[:size]


def topic_rule(topic: str) -> str:
    """The rule that declares ``topic`` (its tags hold the name and partition count)."""
    return f"{TOPIC_RULE_PREFIX}{_short(topic, 36)}-{_digest(topic)}"


def route_rule(group: str, topic: str, partition: int) -> str:
    """The rule that routes partition ``partition`` of ``topic`` to ``group``'s queue."""
    return f"{_short(group, 16)}--{_short(topic, 20)}-{partition}-{_digest(group, topic)}"


def pattern(topic: str, partition: int | None = None) -> str:
    """The event pattern of ``topic``'s records (of one partition, if given)."""
    match: dict[str, Any] = {"topic": [topic]}
    if partition is not None:
        match["partition"] = [partition]
    return json.dumps({"source": [SOURCE], "detail": match})


def detail(out: OutgoingRecord, partition: int) -> dict[str, Any]:
    """The event detail of a record published to ``partition``."""
    text, encoding = body(out.value)
    return {
        "id": out.headers.get("ce_id") or uuid.uuid4().hex,
        "topic": out.topic,
        "partition": partition,
        "key": out.key,
        "headers": dict(out.headers),
        "encoding": encoding,
        "value": text,
    }


def entry(out: OutgoingRecord, partition: int, bus: str) -> dict[str, str]:
    """The ``PutEvents`` entry of a record: detail-type is its event type (``ce_type``),
    which a user's own rules may match, else the topic."""
    return {
        "Source": SOURCE,
        "DetailType": (out.headers.get("ce_type") or out.topic)[:128],
        "Detail": json.dumps(detail(out, partition), separators=(",", ":"), ensure_ascii=False),
        "EventBusName": bus,
    }


def entry_size(entry: Mapping[str, str]) -> int:
    """What an entry counts against :data:`MAX_ENTRY_BYTES`."""
    return sum(len(entry[k].encode()) for k in ("Source", "DetailType", "Detail"))


def record(topic: str, message: Mapping[str, Any]) -> Record:
    """The record an SQS message filled by a route rule carries (offset 0)."""
    try:
        found = json.loads(str(message.get("Body", "")))
        if found.get("topic") != topic:
            raise ValueError(f"it is of topic {found.get('topic')!r}")
        data = value(str(found["value"]), found["encoding"], message.get("MessageId"))
        headers = {str(k): str(v) for k, v in found["headers"].items()}
        return Record(topic, int(found["partition"]), 0, found["key"], data, headers,
                      sent_at(message))  # fmt: skip
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise TransportError(
            f"SQS message {message.get('MessageId')} on topic {topic!r} is not a record an"
            f" EventBridge rule of tidings delivered ({exc!r})"
        ) from None
