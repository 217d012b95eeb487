"""Services -> one AsyncAPI 3.0.0 document (a dict; :func:`dump` writes YAML or JSON).

What the document says, and where it comes from:

* **channels**: one per topic that a service publishes to or handles, ``address`` the
  topic, ``messages`` the types on it;
* **operations**: per service, one ``send`` per topic of the types it declares in
  ``Service(publishes=[...])`` and one ``receive`` per topic of the types its handlers
  take (``x-tidings-handlers`` names the handler of each type). A service that declares
  no ``publishes`` gets no ``send`` operation: what it publishes is not known;
* **messages**: per CloudEvents type, the payload schema (:func:`.schemas.message_schema`,
  its ``$defs`` moved to ``components/schemas``) and the CloudEvents attributes as the
  codec writes them (:mod:`tidings.codec`): in binary mode (Kafka, the SQLite log) the
  ``ce_*`` record headers around a payload that is the event's data alone; in
  structured mode (NATS) one JSON object holding the attributes and ``data``. Each
  message pins its ``type`` and its ``dataschema``
  (``urn:tidings:schema:<type>:<version>``), and requires ``subject`` when the type
  declares a key. The correlation id is the message's ``correlationId``;
* **Kafka bindings**, unless servers are named and none is Kafka: the message key (the
  declared key field; the record key is the envelope's subject), the topic per channel,
  and the consumer group (the service's name) of each receive operation;
* **servers**: those named (:mod:`.servers`); their content mode is the document's.

Ids in the document (channels, messages, operations) are the topic, type and service
names with any character outside ``[A-Za-z0-9_.-]`` made ``_``; two names that would
share an id, or two classes that share a CloudEvents type, are an error naming both.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Iterable, Sequence
from typing import Any, Literal

from tidings.asyncapi.schemas import hoist_defs, message_schema, share
from tidings.asyncapi.servers import Server, content_mode_of
from tidings.codec import STRUCTURED_CONTENT_TYPE, ContentMode
from tidings.envelope import SCHEMA_PREFIX, SPECVERSION
from tidings.messages import Message, published_topic
from tidings.service import Service

ASYNCAPI_VERSION = "3.0.0"
KAFKA_BINDING = "0.5.0"
BINARY_HEADERS = "CloudEventsBinaryHeaders"
STRUCTURED_EVENT = "CloudEventsStructured"
Format = Literal["yaml", "json"]
_ID = re.compile(r"[^A-Za-z0-9_.\-]")
_TRACEPARENT = "^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$"
# The CloudEvents attributes the codec writes: (name, schema, always written).
_ATTRIBUTES: tuple[tuple[str, dict[str, Any], bool], ...] = (
    ("id", {"type": "string", "description": "Unique event id, a UUIDv7 (time-ordered)."}, True),
    ("source", {"type": "string", "description": "The service that published it."}, True),
    ("type", {"type": "string", "description": "The message type."}, True),
    ("specversion", {"type": "string", "const": SPECVERSION}, True),
    ("time", {"type": "string", "format": "date-time", "description": "When it was published."}, True),
    ("subject", {"type": "string", "description": "The message key (its aggregate id): the partition key, so order holds per key."}, False),
    ("dataschema", {"type": "string", "description": f"The payload's schema and version: {SCHEMA_PREFIX}<type>:<version>."}, False),
    ("correlationid", {"type": "string", "description": "Shared by everything one request caused (the id of the first event)."}, False),
    ("causationid", {"type": "string", "description": "The id of the event whose handling published this one."}, False),
    ("traceparent", {"type": "string", "pattern": _TRACEPARENT, "description": "W3C trace context of the producer's span."}, False),
)  # fmt: skip


@dataclasses.dataclass(slots=True)
class _Channel:
    topic: str
    id: str
    messages: dict[str, type[Message]] = dataclasses.field(default_factory=dict)
    senders: list[str] = dataclasses.field(default_factory=list)
    receivers: list[str] = dataclasses.field(default_factory=list)


def asyncapi_document(
    services: Sequence[Service],
    *,
    servers: Iterable[Server] = (),
    content_mode: ContentMode | None = None,
    title: str | None = None,
    version: str = "1.0.0",
) -> dict[str, Any]:
    """The AsyncAPI 3.0.0 document describing ``services`` (see the module docstring).

    ``content_mode`` defaults to the servers' (binary without servers); giving one that
    differs from the servers' is an error.
    """
    if not services:
        raise ValueError("name at least one service to describe")
    named = list(servers)
    _unique("server", [s.name for s in named])
    _unique("service", [s.name for s in services])
    mode = _content_mode(named, content_mode)
    kafka = not named or any(s.protocol == "kafka" for s in named)
    channels = _channels(services)
    schemas: dict[str, Any] = {}
    owners: dict[str, str] = {}
    share(schemas, owners, _envelope_name(mode), _envelope_schema(mode), "the envelope")
    messages: dict[str, Any] = {}
    for channel in channels.values():
        for message_id, message_type in channel.messages.items():
            payload = hoist_defs(message_schema(message_type), schemas, owners, message_id)
            share(schemas, owners, message_id, payload, message_id)
            messages[message_id] = _message(message_id, message_type, mode, kafka)
    names = [s.name for s in services]
    document: dict[str, Any] = {
        "asyncapi": ASYNCAPI_VERSION,
        "info": {
            "title": title or f"Tidings services: {', '.join(names)}",
            "version": version,
            "description": _description(names, mode),
        },
    }
    if named:
        document["servers"] = {s.name: s.to_asyncapi() for s in named}
    document["defaultContentType"] = _content_type(mode)
    document["channels"] = {c.id: _channel(c, kafka) for c in channels.values()}
    document["operations"] = _operations(services, channels, kafka)
    document["components"] = {"schemas": schemas, "messages": messages}
    return document


def dump(document: dict[str, Any], format: Format = "yaml") -> str:
    """The document as YAML (block style, keys in document order) or indented JSON."""
    if format == "json":
        return json.dumps(document, indent=2, ensure_ascii=False) + "\n"
    if format == "yaml":
        import yaml

        return yaml.safe_dump(document, sort_keys=False, allow_unicode=True, width=100)
    raise ValueError(f"unknown format {format!r}: yaml or json")


def document_id(name: str) -> str:
    """``name`` as an id in the document (see the module docstring)."""
    return _ID.sub("_", name)


# -- gathering -----------------------------------------------------------------------------
def _channels(services: Sequence[Service]) -> dict[str, _Channel]:
    channels: dict[str, _Channel] = {}
    classes: dict[str, type[Message]] = {}
    ids: dict[str, str] = {}

    def add(service: Service, message_type: type[Message], role: str) -> None:
        topic = published_topic(message_type)
        channel = channels.get(topic)
        if channel is None:
            channel = channels[topic] = _Channel(topic, _claim(ids, topic, "topic"))
        type_name = message_type.message_info.type
        known = classes.setdefault(type_name, message_type)
        if known is not message_type:
            raise ValueError(
                f"{_qualname(known)} and {_qualname(message_type)} are both CloudEvents "
                f'type {type_name!r}; give one another type: class ...(..., type="...")'
            )
        channel.messages.setdefault(_claim(ids, type_name, "type"), message_type)
        names = channel.senders if role == "send" else channel.receivers
        if service.name not in names:
            names.append(service.name)

    for service in services:
        for message_type in service.publishes:
            add(service, message_type, "send")
        for spec in service.handlers.values():
            add(service, spec.message_type, "receive")
    for channel in channels.values():
        channel.messages = dict(sorted(channel.messages.items()))
    return dict(sorted(channels.items()))


def _claim(ids: dict[str, str], name: str, what: str) -> str:
    """The document id of ``name``; an error if another name already maps to it."""
    key = f"{what}:{document_id(name)}"
    owner = ids.setdefault(key, name)
    if owner != name:
        raise ValueError(
            f"{what}s {owner!r} and {name!r} both become id {document_id(name)!r} in the "
            "document; rename one (ids keep only letters, digits, _ . -)"
        )
    return document_id(name)


# -- building ------------------------------------------------------------------------------
def _channel(channel: _Channel, kafka: bool) -> dict[str, Any]:
    by = "; ".join(
        part
        for part in (
            f"published by {', '.join(channel.senders)}" if channel.senders else "",
            f"consumed by {', '.join(channel.receivers)}" if channel.receivers else "",
        )
        if part
    )
    out: dict[str, Any] = {
        "address": channel.topic,
        "title": channel.topic,
        "description": f"Topic {channel.topic}: {by}.",
        "messages": {m: {"$ref": f"#/components/messages/{m}"} for m in channel.messages},
    }
    if kafka:
        out["bindings"] = {"kafka": {"topic": channel.topic, "bindingVersion": KAFKA_BINDING}}
    return out


def _operations(
    services: Sequence[Service], channels: dict[str, _Channel], kafka: bool
) -> dict[str, Any]:
    operations: dict[str, Any] = {}
    for service in services:
        handler_of = {spec.message_type: spec.name for spec in service.handlers.values()}
        for action, types in (("send", set(service.publishes)), ("receive", set(handler_of))):
            for topic in sorted({published_topic(t) for t in types}):
                channel = channels[topic]
                own = {m: t for m, t in channel.messages.items() if t in types}
                op: dict[str, Any] = {
                    "action": action,
                    "channel": {"$ref": f"#/channels/{channel.id}"},
                    "title": f"{service.name} {action}s on {topic}",
                    "messages": [{"$ref": f"#/channels/{channel.id}/messages/{m}"} for m in own],
                }
                if action == "receive":
                    op["x-tidings-handlers"] = {m: handler_of[t] for m, t in own.items()}
                    if kafka:
                        group = {"type": "string", "const": service.group}
                        op["bindings"] = {
                            "kafka": {"groupId": group, "bindingVersion": KAFKA_BINDING}
                        }
                operations[f"{document_id(service.name)}.{action}.{channel.id}"] = op
    return operations


def _message(
    message_id: str, message_type: type[Message], mode: ContentMode, kafka: bool
) -> dict[str, Any]:
    info = message_type.message_info
    pinned = {"type": {"const": info.type}, "dataschema": {"const": info.schema}}
    required = ["subject"] if info.key else []
    payload_ref = {"$ref": f"#/components/schemas/{message_id}"}
    out: dict[str, Any] = {"name": info.type, "title": message_type.__name__}
    doc = message_type.__dict__.get("__doc__")
    if doc:
        out["summary"] = doc.strip().splitlines()[0]
    out["description"] = f"Version {info.version}" + (
        f"; keyed by its {info.key} field (the subject)." if info.key else "; no key."
    )
    out["contentType"] = _content_type(mode)
    if mode == "binary":
        out["headers"] = {
            "type": "object",
            "allOf": [{"$ref": f"#/components/schemas/{BINARY_HEADERS}"}],
            "properties": {f"ce_{k}": v for k, v in pinned.items()},
            "required": [f"ce_{k}" for k in required],
        }
        out["payload"] = payload_ref
        out["correlationId"] = {"location": "$message.header#/ce_correlationid"}
    else:
        out["headers"] = {
            "type": "object",
            "properties": {"content-type": {"type": "string", "const": STRUCTURED_CONTENT_TYPE}},
        }
        out["payload"] = {
            "type": "object",
            "allOf": [{"$ref": f"#/components/schemas/{STRUCTURED_EVENT}"}],
            "properties": {**pinned, "data": payload_ref},
            "required": required,
        }
        out["correlationId"] = {"location": "$message.payload#/correlationid"}
    if kafka and info.key:
        key = {"type": "string", "description": f"The {info.key} field of the payload."}
        out["bindings"] = {"kafka": {"key": key, "bindingVersion": KAFKA_BINDING}}
    return out


def _envelope_name(mode: ContentMode) -> str:
    return BINARY_HEADERS if mode == "binary" else STRUCTURED_EVENT


def _envelope_schema(mode: ContentMode) -> dict[str, Any]:
    """The CloudEvents attributes as record headers (binary) or the JSON event (structured)."""
    prefix = "ce_" if mode == "binary" else ""
    properties = {f"{prefix}{name}": dict(schema) for name, schema, _ in _ATTRIBUTES}
    required = [f"{prefix}{name}" for name, _, always in _ATTRIBUTES if always]
    if mode == "binary":
        properties["content-type"] = {"type": "string", "const": "application/json"}
        required.append("content-type")
        title = "CloudEvents attributes as record headers (binary content mode)"
    else:
        properties["datacontenttype"] = {"type": "string", "const": "application/json"}
        properties["data"] = {"type": "object", "description": "The payload."}
        required += ["datacontenttype", "data"]
        title = "A CloudEvent in the JSON event format (structured content mode)"
    return {"title": title, "type": "object", "properties": properties, "required": required}


def _content_type(mode: ContentMode) -> str:
    return "application/json" if mode == "binary" else STRUCTURED_CONTENT_TYPE


def _content_mode(servers: list[Server], asked: ContentMode | None) -> ContentMode:
    of_servers = content_mode_of(servers)
    if asked is not None and of_servers is not None and asked != of_servers:
        raise ValueError(
            f"content mode {asked} disagrees with the servers named, whose transports "
            f"write {of_servers} mode"
        )
    return asked or of_servers or "binary"


def _description(names: list[str], mode: ContentMode) -> str:
    wire = (
        "CloudEvents 1.0 in binary content mode: the attributes travel as `ce_*` record "
        "headers and the record value is the payload"
        if mode == "binary"
        else "CloudEvents 1.0 in structured content mode: the record value is one JSON "
        "object holding the attributes and the payload (`data`)"
    )
    return (
        f"The events of {', '.join(names)}, written by `tidings asyncapi`. Every message is "
        f"{wire}. A consumer group is the consuming service's name; records of one key "
        "(the subject) keep their order."
    )


def _unique(what: str, names: list[str]) -> None:
    seen = {n for n in names if names.count(n) > 1}
    if seen:
        raise ValueError(f"{what} named more than once: {', '.join(sorted(seen))}")


def _qualname(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"
