"""What the EventBridge transport promises beyond the shared suite, on moto's server.

The rules every transport keeps are checked by the conformance suite (id
``eventbridge``); these cases look at the bus with the raw aiobotocore client: one rule
per partition routing to the group's FIFO queue with the partition as message group, the
body a record's detail alone, deduplication by content, order per partition, the
capabilities (no promised order on AWS itself), queues kept apart from SNS's, and the
messages for a bad URL or a record too large as an event. Names and the detail
encoding (pure functions) are checked without a server.

Needs ``scripts/services up aws``; skipped without it, failed under ``CI=true``.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from tidings.testing.servers import require
from tidings.testing.transport import consume, quiet
from tidings.transport import make_transport, open_transport
from tidings.transport.aws.bus import entry, pattern, record, route_rule, topic_rule
from tidings.transport.aws.eventbridge import EventBridgeTransport
from tidings.transport.aws.wire import queue_name
from tidings.transport.base import InvalidBrokerURL, OutgoingRecord, RecordTooLarge, Unsupported
from tidings.transport.errors import TransportError

URL = "eventbridge://127.0.0.1:4566?region=us-east-1&visibility_timeout=3"
os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")


def unique(prefix: str) -> str:
    return f"{prefix}.{uuid.uuid4().hex[:10]}"


@pytest_asyncio.fixture
async def transport() -> AsyncIterator[EventBridgeTransport]:
    require(URL)
    opened = await open_transport(URL)
    assert isinstance(opened, EventBridgeTransport)
    yield opened
    await opened.close()


# -- names and events (pure) ------------------------------------------------------------


def test_rule_names_are_valid_and_keep_similar_topics_apart() -> None:
    long = "x/" * 200
    for name in (topic_rule(long), route_rule("billing" * 10, long, 11), route_rule("", "t", 0)):
        assert len(name) <= 64 and all(c.isalnum() or c in "-_." for c in name), name
    assert topic_rule("shop.orders") != topic_rule("shop/orders")
    assert route_rule("g", "shop.orders", 0) != route_rule("g", "shop.orders", 1)
    assert json.loads(pattern("t", 2)) == {
        "source": ["tidings"], "detail": {"topic": ["t"], "partition": [2]},
    }  # fmt: skip


@pytest.mark.parametrize("value", [b'{"a": "\xc3\xa9 \\"q\\""}', bytes(range(256)), b""])
def test_a_record_survives_the_event_round_trip(value: bytes) -> None:
    out = OutgoingRecord("t", value, "k/1 é", {"ce_id": "e-1", "ce_type": "Placed", "n": "✓"})
    sent = entry(out, 2, "bus")
    assert (sent["Source"], sent["DetailType"], sent["EventBusName"]) == (
        "tidings",
        "Placed",
        "bus",
    )
    message = {"Body": sent["Detail"], "Attributes": {"SentTimestamp": "1700000000123"}}
    back = record("t", message)
    assert (back.value, back.key, back.partition) == (value, "k/1 é", 2)
    assert dict(back.headers) == dict(out.headers)
    assert back.timestamp == 1700000000.123
    with pytest.raises(TransportError, match="is of topic 't'"):
        record("other", message)
    with pytest.raises(TransportError, match="not a record an EventBridge rule"):
        record("t", {"Body": "[1]", "MessageId": "m"})


def test_bad_urls_are_refused_with_the_option_named() -> None:
    with pytest.raises(InvalidBrokerURL, match="not 'default'"):
        make_transport("eventbridge://127.0.0.1:4566?bus=default")
    with pytest.raises(InvalidBrokerURL, match="unknown option 'bogus'"):
        make_transport("eventbridge://127.0.0.1:4566?bogus=1")
    assert make_transport("eventbridge://?region=eu-west-1").capabilities.ordered is False


# -- on the emulator --------------------------------------------------------------------


async def test_a_rule_per_partition_routes_to_the_group_queue_by_message_group(
    transport: EventBridgeTransport,
) -> None:
    topic, group = unique("eb-route"), unique("g")
    await transport.create_topic(topic, 2)
    sub = await transport.subscribe(group, [topic])
    events = transport.events
    for partition in range(2):
        name = route_rule(group, topic, partition)
        rule = await events.describe_rule(Name=name, EventBusName="tidings")
        assert json.loads(rule["EventPattern"])["detail"]["partition"] == [partition]
        (target,) = (await events.list_targets_by_rule(Rule=name, EventBusName="tidings"))[
            "Targets"
        ]
        assert target["Arn"].endswith(queue_name(group, topic, "eventbridge:tidings"))
        assert target["SqsParameters"] == {"MessageGroupId": f"partition-{partition}"}
    sqs = transport.client("sqs")
    url = (await sqs.get_queue_url(QueueName=queue_name(group, topic, "eventbridge:tidings")))[
        "QueueUrl"
    ]
    attrs = (await sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"]))["Attributes"]
    assert attrs["ContentBasedDeduplication"] == "true" and attrs["FifoQueue"] == "true"
    assert {i.name: i.partitions for i in await transport.topics()}[topic] == 2
    assert group in await transport.groups()
    await sub.close()


async def test_records_arrive_in_order_per_partition_and_duplicates_are_dropped(
    transport: EventBridgeTransport,
) -> None:
    topic, group = unique("eb-order"), unique("g")
    await transport.create_topic(topic, 2)
    sub = await transport.subscribe(group, [topic])
    records = [OutgoingRecord(topic, f"{i}".encode(), f"k{i % 5}", {"ce_id": f"e{i}"})
               for i in range(40)]  # fmt: skip
    await transport.publish(records)
    await transport.publish(records[:10])  # the outbox again after a crash: same bodies
    got = await consume(sub, 40, within=20)
    got += await quiet(sub, 1.0)
    assert sorted(int(d.record.value) for d in got) == list(range(40))
    for partition in range(2):
        seen = [int(d.record.value) for d in got if d.record.partition == partition]
        assert seen == sorted(seen) and seen, partition
    assert await transport.queued(group) == {(topic, 0): 0}
    await sub.close()


async def test_the_queues_are_not_those_of_sns(transport: EventBridgeTransport) -> None:
    topic, group = unique("eb-apart"), unique("g")
    sub = await transport.subscribe(group, [topic])
    sns = await open_transport("sqs+sns://127.0.0.1:4566?region=us-east-1")
    try:
        assert group not in await sns.groups()
        assert topic not in {i.name for i in await sns.topics()}
    finally:
        await sns.close()
    await sub.close()


async def test_what_eventbridge_cannot_do_says_so(transport: EventBridgeTransport) -> None:
    topic = unique("eb-big")
    caps = transport.capabilities
    assert (caps.history, caps.offsets, caps.assignment, caps.prefetch) == (False,) * 4
    assert caps.ordered is True  # the emulator delivers in order; AWS would not promise it
    with pytest.raises(Unsupported, match="not supported on AWS EventBridge"):
        await transport.read(topic, 0, 0, 1)
    with pytest.raises(RecordTooLarge, match="at most 122880 bytes"):
        await transport.publish([OutgoingRecord(topic, b"x" * 130 * 1024, "k")])
    # Escaped as JSON text, quotes take twice their size: the event's limit is checked too.
    transport.max_record_bytes = 1024 * 1024
    quotes = b'"' * (130 * 1024)
    with pytest.raises(RecordTooLarge, match="as an EventBridge event"):
        await transport.publish(
            [OutgoingRecord(topic, b"ok", "k"), OutgoingRecord(topic, quotes, "k")]
        )
