"""How the NATS transport lays Tidings out on JetStream: names, headers, raw API calls.

Kept apart from :mod:`tidings.transport.nats` (the transport) and
:mod:`tidings.transport.nats.groups` (consumer groups) so that both read the same
mapping, and so that a tool reading the streams directly has one page to look at.

* topic ``shop.orders``, partition 2  ->  stream ``shop_orders-2`` capturing the single
  subject ``tidings.shop.orders.2``. Stream names may not contain dots, hence the ``_``;
  the subject (and the stream description, JSON) keep the real topic name, so two topics
  that map to one stream name (``a.b`` and ``a_b``) are refused rather than mixed.
* consumer group ``billing`` reading that partition  ->  durable consumer
  ``billing_<epoch>`` on that stream, description ``{"tidings_group": "billing"}``.
* A record's key and headers travel as NATS headers. NATS headers cannot carry every
  string (names are HTTP tokens, values lose CR/LF and outer whitespace), so whatever
  would not survive goes, JSON-encoded, in one ``Tidings-Escaped`` header instead.
"""

from __future__ import annotations

import json
import re
from datetime import datetime
from typing import Any

import nats.errors
from nats.aio.client import Client

from tidings.records import OutgoingRecord
from tidings.transport.errors import TransportError

SUBJECT_PREFIX = "tidings"
MEMBERS_BUCKET = "tidings_members"
LEASES_BUCKET = "tidings_leases"
NOTIFY_PREFIX = "tidings-groups"  # not under "tidings.", which topics' streams capture
HOW_TO_START = "start it with `scripts/services up nats`"

MSG_ID = "Nats-Msg-Id"
KEY = "Tidings-Key"
ESCAPED = "Tidings-Escaped"
_RESERVED = ("nats-", "tidings-")  # user headers with these prefixes are escaped
_STATUS = ("status", "description")  # what nats-py makes of a server status line
_HEADER_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")  # what nats-py accepts
# Kafka's legal topic characters, minus what a NATS subject token cannot hold (empty
# tokens): dots only between other characters.
_NAME = re.compile(r"[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)*")


class JetStreamError(TransportError):
    """An error answer from the JetStream API (``code`` is HTTP-like, 503: unavailable)."""

    def __init__(self, code: int, err_code: int, description: str) -> None:
        super().__init__(f"JetStream error {code}/{err_code}: {description}")
        self.code = code
        self.err_code = err_code
        self.description = description


# -- names ------------------------------------------------------------------------------


def check_name(kind: str, name: str) -> str:
    if len(name) > 200 or not _NAME.fullmatch(name):
        raise TransportError(
            f"{kind} name {name!r} cannot be used with NATS: use letters, digits, '-', '_'"
            " and single dots between them (at most 200 characters)"
        )
    return name


def stream_name(topic: str, partition: int) -> str:
    return f"{topic.replace('.', '_')}-{partition}"


def subject(topic: str, partition: int) -> str:
    return f"{SUBJECT_PREFIX}.{topic}.{partition}"


def consumer_name(group: str, epoch: int) -> str:
    return f"{group.replace('.', '_')}_{epoch}"


def consumer_epoch(name: str) -> int:
    _, _, epoch = name.rpartition("_")
    return int(epoch) if epoch.isdigit() else 0


def stream_description(topic: str, partition: int, partitions: int) -> str:
    return json.dumps({"tidings_topic": topic, "partition": partition, "partitions": partitions})


def parse_stream_description(description: str | None) -> tuple[str, int, int] | None:
    """(topic, partition, partitions) of one of our streams, None for anyone else's."""
    if not description or not description.startswith('{"tidings_topic"'):
        return None
    try:
        data = json.loads(description)
        return str(data["tidings_topic"]), int(data["partition"]), int(data["partitions"])
    except (ValueError, KeyError, TypeError):
        return None


def group_description(group: str) -> str:
    return json.dumps({"tidings_group": group})


def parse_group_description(description: str | None) -> str | None:
    if not description or not description.startswith('{"tidings_group"'):
        return None
    try:
        return str(json.loads(description)["tidings_group"])
    except (ValueError, KeyError, TypeError):
        return None


def group_subject(group: str) -> str:
    """Where a group's joins and releases are announced."""
    return f"{NOTIFY_PREFIX}.{group}"


def lease_key(group: str, topic: str, partition: int) -> str:
    return f"{group}.{topic}.{partition}"


def member_key(group: str, member: str) -> str:
    return f"{group}.{member}"


# -- records as NATS messages -----------------------------------------------------------


def _plain(value: str) -> bool:
    # What nats-py writes and reads back unchanged: no CR/LF, no outer whitespace.
    return value.isprintable() and value == value.strip()


def encode_headers(record: OutgoingRecord, msg_id: str) -> dict[str, str]:
    out = {MSG_ID: msg_id}
    escaped: dict[str, Any] | None = None
    key = record.key
    if key is not None:
        if _plain(key):
            out[KEY] = key
        else:
            escaped = {"key": key}
    for name, value in record.headers.items():
        lower = name.lower()
        if (
            _HEADER_NAME.fullmatch(name)
            and not lower.startswith(_RESERVED)
            and lower not in _STATUS
            and _plain(value)
        ):
            out[name] = value
        else:
            escaped = escaped if escaped is not None else {}
            escaped.setdefault("headers", {})[name] = value
    if escaped is not None:
        out[ESCAPED] = json.dumps(escaped, ensure_ascii=True, separators=(",", ":"))
    return out


def encoded_size(value: bytes, headers: dict[str, str]) -> int:
    """Bytes the message takes against the server's ``max_payload``."""
    return len(value) + 12 + sum(len(k) + len(v.encode()) + 4 for k, v in headers.items())


def decode_headers(headers: dict[str, str] | None) -> tuple[str | None, dict[str, str]]:
    """(key, record headers) from a stored message's headers."""
    if not headers:
        return None, {}
    key: str | None = None
    out: dict[str, str] = {}
    escaped: str | None = None
    for name, value in headers.items():
        if name == KEY:
            key = value
        elif name == ESCAPED:
            escaped = value
        elif not name.lower().startswith(_RESERVED):  # else ours, or the server's
            out[name] = value
    if escaped is not None:
        data = json.loads(escaped)
        key = data.get("key", key)
        out.update(data.get("headers", {}))
    return key, out


def ack_reply_info(reply: str) -> tuple[str, str, int, float] | None:
    """(stream, consumer, stream sequence, timestamp) from a JetStream ``$JS.ACK`` reply."""
    tokens = reply.split(".")
    if len(tokens) == 9:  # $JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<dseq>.<ts>.<pending>
        stream, consumer, sseq, ts = tokens[2], tokens[3], tokens[5], tokens[7]
    elif len(tokens) >= 11:  # with domain and account hash (newer servers)
        stream, consumer, sseq, ts = tokens[4], tokens[5], tokens[7], tokens[9]
    else:
        return None
    return stream, consumer, int(sseq), int(ts) / 1e9


def parse_time(stamp: str) -> float:
    return datetime.fromisoformat(stamp).timestamp()


# -- the JetStream API, raw -------------------------------------------------------------


async def api(
    nc: Client, what: str, body: dict[str, Any] | None = None, *, wait: float = 5.0
) -> dict[str, Any]:
    """One JetStream API request (``$JS.API.<what>``); raises :class:`JetStreamError`."""
    payload = json.dumps(body).encode() if body is not None else b""
    try:
        msg = await nc.request(f"$JS.API.{what}", payload, timeout=wait)
    except nats.errors.NoRespondersError:
        raise JetStreamError(
            503, 0, "JetStream is not answering (not enabled, or starting)"
        ) from None
    resp: dict[str, Any] = json.loads(msg.data)
    error = resp.get("error")
    if error:
        raise JetStreamError(
            int(error.get("code", 0)), int(error.get("err_code", 0)), str(error.get("description"))
        )
    return resp


async def list_all(nc: Client, what: str, field: str, body: dict[str, Any]) -> list[Any]:
    """Every item of a paged JetStream list (``STREAM.LIST``, ``CONSUMER.LIST.<stream>``)."""
    items: list[Any] = []
    while True:
        resp = await api(nc, what, {**body, "offset": len(items)})
        page = resp.get(field) or []
        items.extend(page)
        if not page or len(items) >= int(resp.get("total", 0)):
            return items


NATS_ERRORS = (nats.errors.Error, TimeoutError, JetStreamError)  # the broker being away
NS = 1_000_000_000  # JetStream durations are nanoseconds


def committed_offset(info: dict[str, Any]) -> int | None:
    """The offset a group consumer resumes from; None if nothing was ever committed
    (a consumer started at the beginning whose ack floor has not moved)."""
    config = info["config"]
    floor = int((info.get("ack_floor") or {}).get("stream_seq", 0))
    explicit = config.get("deliver_policy") == "by_start_sequence"  # seek, pin, takeover
    start = int(config.get("opt_start_seq", 1)) - 1 if explicit else 0
    return max(floor, start) if explicit or floor > 0 else None
