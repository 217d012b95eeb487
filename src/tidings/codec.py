"""The codec: envelopes to transport records and back (CloudEvents 1.0 bindings).

Two content modes, both from the CloudEvents spec, so other tools can read our events:

* **binary** (the Kafka protocol binding): attributes travel as ``ce_*`` headers and the
  record value is the payload alone (``content-type`` header: ``application/json``);
* **structured** (JSON event format): the value is one JSON object holding the attributes
  and ``data``; ``content-type: application/cloudevents+json``.

Decoding reads either, whichever the record carries. Anything that is not a well-formed
CloudEvent raises :class:`DecodeError` with the reason, which the consumer puts on the
dead letter.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any, Literal

from tidings.envelope import SPECVERSION, Envelope
from tidings.records import OutgoingRecord, Record

ContentMode = Literal["binary", "structured"]
STRUCTURED_CONTENT_TYPE = "application/cloudevents+json"
_REQUIRED = ("id", "source", "type", "specversion")
_OPTIONAL = ("subject", "dataschema", "correlationid", "causationid", "traceparent")


class DecodeError(ValueError):
    """A record that is not a CloudEvent we can read; the message says why."""


def encode(envelope: Envelope, topic: str, mode: ContentMode = "binary") -> OutgoingRecord:
    attributes: dict[str, str] = {
        "id": envelope.id,
        "source": envelope.source,
        "type": envelope.type,
        "specversion": envelope.specversion,
        "time": envelope.time.isoformat(),
    }
    for name in _OPTIONAL:
        value = getattr(envelope, name)
        if value is not None:
            attributes[name] = value
    if mode == "binary":
        headers = {f"ce_{k}": v for k, v in attributes.items()}
        headers["content-type"] = envelope.datacontenttype
        value = json.dumps(envelope.data, separators=(",", ":")).encode()
        return OutgoingRecord(topic, value, envelope.key, headers)
    body: dict[str, Any] = dict(attributes)
    body["datacontenttype"] = envelope.datacontenttype
    body["data"] = envelope.data
    return OutgoingRecord(
        topic,
        json.dumps(body, separators=(",", ":")).encode(),
        envelope.key,
        {"content-type": STRUCTURED_CONTENT_TYPE},
    )


def decode(record: Record) -> Envelope:
    """The envelope in a record; raises :class:`DecodeError` saying what is wrong."""
    headers = record.headers
    if "ce_id" in headers:
        attributes: dict[str, Any] = {k[3:]: v for k, v in headers.items() if k.startswith("ce_")}
        content_type = headers.get("content-type", "application/json")
        attributes["data"] = _json(record.value, "payload")
        attributes["datacontenttype"] = content_type
    else:
        body = _json(record.value, "structured CloudEvent")
        if not isinstance(body, dict):
            raise DecodeError("record is neither binary-mode (ce_ headers) nor a JSON object")
        attributes = body
    missing = [name for name in _REQUIRED if not attributes.get(name)]
    if missing:
        raise DecodeError(f"not a CloudEvent: missing attribute(s) {', '.join(missing)}")
    if attributes["specversion"] != SPECVERSION:
        raise DecodeError(f"unsupported CloudEvents specversion {attributes['specversion']!r}")
    data = attributes.get("data")
    if not isinstance(data, dict):
        raise DecodeError(f"event data must be a JSON object, got {type(data).__name__}")
    try:
        time = datetime.fromisoformat(attributes["time"]) if attributes.get("time") else None
    except (TypeError, ValueError):
        raise DecodeError(f"bad CloudEvents time {attributes.get('time')!r}") from None
    extra: dict[str, Any] = {"time": time} if time else {}
    return Envelope(
        id=str(attributes["id"]),
        source=str(attributes["source"]),
        type=str(attributes["type"]),
        subject=_opt(attributes.get("subject")),
        data=data,
        datacontenttype=str(attributes.get("datacontenttype") or "application/json"),
        dataschema=_opt(attributes.get("dataschema")),
        correlationid=_opt(attributes.get("correlationid")),
        causationid=_opt(attributes.get("causationid")),
        traceparent=_opt(attributes.get("traceparent")),
        **extra,
    )


def _json(value: bytes, what: str) -> Any:
    try:
        return json.loads(value)
    except (UnicodeDecodeError, ValueError) as exc:
        raise DecodeError(f"{what} is not valid JSON: {exc}") from None
    except RecursionError:  # found by the fuzzer: it escaped the consume loop
        raise DecodeError(f"{what} is nested too deeply to decode") from None


def _opt(value: Any) -> str | None:
    return None if value is None else str(value)
