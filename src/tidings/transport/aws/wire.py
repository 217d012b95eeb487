"""Names and messages on SNS and SQS: how a topic and a group become a FIFO topic and
FIFO queues, and how a record becomes an SNS message and comes back from SQS.

* Topic ``T`` is the SNS FIFO topic :func:`topic_name` (SNS allows letters, digits,
  ``-`` and ``_``: other characters become ``-``, and a hash of ``T`` keeps two names
  apart that sanitize alike). ``T`` itself and its partition count are the topic's tags
  :data:`TOPIC_TAG` and :data:`PARTITIONS_TAG`, read back by ``topics()``.
* Group ``G`` reads ``T`` from the SQS FIFO queue :func:`queue_name` (80 characters at
  most, so the readable parts are cut short; the hash keeps the name unique), subscribed
  to the topic with raw message delivery; :data:`GROUP_TAG` and :data:`TOPIC_TAG` name
  them on the queue. Its redrive (dead-letter) queue is the same name with ``-redrive``.
* A topic ending in ``.dlq`` (the framework's dead letters) also gets the queue of group
  ``""`` when declared, so its letters are kept with no group reading them: SNS drops
  what no queue is subscribed to.
* **Messages**: the value is the message body, as text when it is text SQS accepts,
  else base64 (:data:`ENCODING_ATTR` says which). The key, the partition and the record's
  headers (the CloudEvents attributes, in binary content mode) are three message
  attributes; the headers travel as one JSON map because SNS and SQS allow at most 10
  message attributes, and an envelope has more than that (``ce_id``, ``ce_source``,
  ``ce_type``, ``ce_specversion``, ``ce_time``, ``content-type``, ``ce_subject``,
  ``ce_dataschema``, ``traceparent``, ...). The time is SQS's ``SentTimestamp``.
* ``MessageGroupId`` is the key (order per key: SQS FIFO hands out a group's messages
  in order and never two of them to two consumers at once), ``MessageDeduplicationId``
  the event id (``ce_id``), so SNS drops a record the outbox publishes twice within its
  5-minute window; a record without an event id gets a random one.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
import time
import uuid
from collections.abc import Mapping
from typing import Any

from tidings.records import OutgoingRecord, Record
from tidings.transport.errors import TransportError

__all__ = [
    "ENCODING_ATTR",
    "GROUP_TAG",
    "HOW_TO_START",
    "PARTITIONS_TAG",
    "TOPIC_TAG",
    "VIA_TAG",
    "body",
    "entry",
    "kept",
    "queue_name",
    "queue_prefix",
    "record",
    "redrive_name",
    "sent_at",
    "topic_name",
    "value",
]

HOW_TO_START = "start the emulator with `scripts/services up aws`, or point the URL at AWS"
TOPIC_TAG = "tidings:topic"
PARTITIONS_TAG = "tidings:partitions"
GROUP_TAG = "tidings:group"
VIA_TAG = "tidings:via"  # on a queue filled by an EventBridge bus: "eventbridge:<bus>"
KEY_ATTR = "tidings.key"
PARTITION_ATTR = "tidings.partition"
HEADERS_ATTR = "tidings.headers"
ENCODING_ATTR = "tidings.encoding"

_NOT_NAME = re.compile(r"[^A-Za-z0-9_-]")
# What an SQS body may hold (XML 1.0 characters), and a message id's characters.
_NOT_BODY = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
_ID = re.compile(r"[!-~]{1,128}")


def _digest(*parts: str) -> str:
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:8]


def topic_name(topic: str) -> str:
    """The SNS FIFO topic of ``topic`` (see the module rules)."""
    return f"{_NOT_NAME.sub('-', topic)[:200]}-{_digest(topic)}.fifo"


def queue_name(group: str, topic: str, via: str = "") -> str:
    """The SQS FIFO queue ``group`` reads ``topic`` from (redrive name fits in 80 too);
    ``via`` (:data:`VIA_TAG`) keeps apart the queues of the same group and topic that
    another route fills (an EventBridge bus), so two transports never share a queue."""
    stem = f"{queue_prefix(group)}{_NOT_NAME.sub('-', topic)[:26]}"
    return f"{stem}-{_digest(group, topic, *([via] if via else []))}.fifo"


def queue_prefix(group: str) -> str:
    """How the names of ``group``'s queues begin (to list only those)."""
    return f"{_NOT_NAME.sub('-', group)[:26]}--"


def redrive_name(queue: str) -> str:
    """The redrive (dead-letter) queue of ``queue``: SQS's safety net behind ours."""
    return queue.removesuffix(".fifo") + "-redrive.fifo"


def kept(topic: str) -> bool:
    """Whether a topic's records are kept with no group reading them (dead letters)."""
    return topic.endswith(".dlq")


def _message_id(text: str) -> str:
    """``text`` if SQS takes it as a group or deduplication id, else a hash of it."""
    return text if _ID.fullmatch(text) else "sha256-" + hashlib.sha256(text.encode()).hexdigest()


def _string(value: str) -> dict[str, str]:
    return {"DataType": "String", "StringValue": value}


def body(value: bytes) -> tuple[str, str]:
    """A record's value as message text and its encoding: ``text`` when it is text SQS
    accepts, else ``base64``; ``empty`` (text ``-``: SNS refuses an empty message)."""
    text = value.decode("utf-8", errors="replace")
    if value and text.encode() == value and not _NOT_BODY.search(text):
        return text, "text"
    if value:
        return base64.b64encode(value).decode(), "base64"
    return "-", "empty"


def value(text: str, encoding: str | None, message_id: object) -> bytes:
    """The value :func:`body` encoded (``message_id`` names the message in an error)."""
    try:
        if encoding == "base64":
            return base64.b64decode(text, validate=True)
        return b"" if encoding == "empty" else text.encode()
    except binascii.Error as exc:
        raise TransportError(f"SQS message {message_id}: bad base64 body: {exc}") from None


def entry(n: int, out: OutgoingRecord, partition: int) -> dict[str, Any]:
    """The ``PublishBatch`` entry ``n`` of a record published to ``partition``."""
    text, encoding = body(out.value)
    attributes = {
        PARTITION_ATTR: {"DataType": "Number", "StringValue": str(partition)},
        HEADERS_ATTR: _string(json.dumps(dict(out.headers), separators=(",", ":"))),
        ENCODING_ATTR: _string(encoding),
    }
    if out.key is not None:
        attributes[KEY_ATTR] = _string(out.key)
    event_id = out.headers.get("ce_id")
    return {
        "Id": str(n),
        "Message": text,
        "MessageAttributes": attributes,
        "MessageGroupId": _message_id(out.key if out.key else f"partition-{partition}"),
        "MessageDeduplicationId": _message_id(event_id) if event_id else uuid.uuid4().hex,
    }


def _attribute(message: Mapping[str, Any], name: str) -> str | None:
    found = (message.get("MessageAttributes") or {}).get(name)
    return None if found is None else str(found.get("StringValue"))


def sent_at(message: Mapping[str, Any]) -> float:
    """When SQS received the message (``SentTimestamp``), else now."""
    sent = (message.get("Attributes") or {}).get("SentTimestamp")
    return int(sent) / 1000 if sent else time.time()


def record(topic: str, offset: int, message: Mapping[str, Any]) -> Record:
    """The record an SQS message carries; ``offset`` is the member's own count."""
    partition = _attribute(message, PARTITION_ATTR)
    headers = _attribute(message, HEADERS_ATTR)
    if partition is None or headers is None:
        raise TransportError(
            f"SQS message {message.get('MessageId')} on topic {topic!r} was not published by"
            " tidings (no tidings.partition or tidings.headers attribute)"
        )
    encoding = _attribute(message, ENCODING_ATTR)
    data = value(str(message.get("Body", "")), encoding, message.get("MessageId"))
    return Record(
        topic=topic,
        partition=int(partition),
        offset=offset,
        key=_attribute(message, KEY_ATTR),
        value=data,
        headers=json.loads(headers),
        timestamp=sent_at(message),
    )
