"""What the AWS SNS+SQS transport promises beyond the shared suite, on moto's server.

The rules every transport keeps are checked by the conformance suite
(``tests/conformance/test_transport.py``, id ``aws``); these cases look at SNS and SQS
with the raw aiobotocore client: the FIFO topic and the group's FIFO queue with its
redrive queue, records as another SQS client sees them, deduplication by event id, the
capabilities, and the messages for what SQS cannot do or an unreachable endpoint. The
names and the message encoding (pure functions) are checked without a server.

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
from tidings.transport.aws.transport import SnsSqsTransport
from tidings.transport.aws.wire import entry, queue_name, record, redrive_name, topic_name
from tidings.transport.base import (
    BrokerUnavailable,
    InvalidBrokerURL,
    OutgoingRecord,
    Transport,
    Unsupported,
)

URL = "sqs+sns://127.0.0.1:4566?region=us-east-1&visibility_timeout=3"
os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")


def unique(prefix: str) -> str:
    return f"{prefix}.{uuid.uuid4().hex[:10]}"


@pytest_asyncio.fixture
async def transport() -> AsyncIterator[SnsSqsTransport]:
    require(URL)
    opened = await open_transport(URL)
    assert isinstance(opened, SnsSqsTransport)
    yield opened
    await opened.close()


# -- names and messages (pure) ----------------------------------------------------------


def test_names_are_valid_fifo_names_and_keep_similar_topics_apart() -> None:
    long = "x" * 300
    for topic in ("shop.orders", "shop-orders", "a b/c", long):
        name = topic_name(topic)
        assert name.endswith(".fifo") and len(name) <= 256
        assert all(c.isalnum() or c in "-_" for c in name.removesuffix(".fifo")), name
    assert topic_name("shop.orders") != topic_name("shop-orders")
    queue = queue_name("billing" * 20, long)
    assert len(queue) <= 80 and len(redrive_name(queue)) <= 80
    assert redrive_name(queue).endswith("-redrive.fifo")
    assert queue_name("g", "shop.orders") != queue_name("g", "shop-orders")


@pytest.mark.parametrize(
    ("value", "encoding"),
    [(b'{"a": "\xc3\xa9"}', "text"), (bytes(range(256)), "base64"), (b"", "empty")],
)
def test_a_record_survives_the_message_round_trip(value: bytes, encoding: str) -> None:
    out = OutgoingRecord("t", value, "k/1 é", {"ce_id": "e-1", "n": "✓"})
    sent = entry(0, out, 2)
    assert sent["MessageAttributes"]["tidings.encoding"]["StringValue"] == encoding
    assert sent["MessageDeduplicationId"] == "e-1"
    assert sent["MessageGroupId"].startswith("sha256-")  # a space and é are not id chars
    message = {
        "Body": sent["Message"],
        "MessageAttributes": sent["MessageAttributes"],
        "Attributes": {"SentTimestamp": "1700000000123"},
        "ReceiptHandle": "r",
    }
    back = record("t", 7, message)
    assert (back.value, back.key, back.partition, back.offset) == (value, "k/1 é", 2, 7)
    assert dict(back.headers) == {"ce_id": "e-1", "n": "✓"}
    assert back.timestamp == 1700000000.123


def test_bad_urls_are_refused_with_the_option_named() -> None:
    with pytest.raises(InvalidBrokerURL, match="wait must be 0 to 20"):
        make_transport("sqs+sns://127.0.0.1:4566?wait=30")
    with pytest.raises(InvalidBrokerURL, match="unknown option 'bogus'"):
        make_transport("sqs+sns://127.0.0.1:4566?bogus=1")
    with pytest.raises(InvalidBrokerURL, match="visibility_timeout"):
        make_transport("sqs+sns://127.0.0.1:4566?visibility_timeout=1")


# -- on the emulator --------------------------------------------------------------------


async def test_the_topic_fans_out_to_a_fifo_queue_per_group_with_a_redrive_queue(
    transport: SnsSqsTransport,
) -> None:
    topic, group = unique("aws-fanout"), unique("g")
    sub = await transport.subscribe(group, [topic])
    sqs = transport.client("sqs")
    url = (await sqs.get_queue_url(QueueName=queue_name(group, topic)))["QueueUrl"]
    attrs = (await sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"]))["Attributes"]
    assert attrs["FifoQueue"] == "true" and attrs["VisibilityTimeout"] == "3"
    redrive = json.loads(attrs["RedrivePolicy"])
    assert redrive["deadLetterTargetArn"].endswith(redrive_name(queue_name(group, topic)))
    assert int(redrive["maxReceiveCount"]) == 10
    subs = await transport.sns.list_subscriptions_by_topic(
        TopicArn=(await transport._topic(topic))[0]
    )
    assert [s["Endpoint"].rsplit(":", 1)[1] for s in subs["Subscriptions"]] == [
        queue_name(group, topic)
    ]
    assert {i.name: i.partitions for i in await transport.topics()}[topic] == 3
    assert group in await transport.groups()
    await sub.close()


async def test_a_record_published_twice_with_one_event_id_is_delivered_once(
    transport: SnsSqsTransport,
) -> None:
    topic, group = unique("aws-dedup"), unique("g")
    sub = await transport.subscribe(group, [topic])
    once = OutgoingRecord(topic, b"payload", "k", {"ce_id": "event-1"})
    await transport.publish([once])
    await transport.publish([once])  # the outbox after a crash between publish and mark
    await transport.publish([OutgoingRecord(topic, b"other", "k", {"ce_id": "event-2"})])
    got = await consume(sub, 2, within=15)
    got += await quiet(sub, 1.0)
    assert [d.record.value for d in got] == [b"payload", b"other"]
    assert await transport.queued(group) == {(topic, 0): 0}
    await sub.close()


async def test_what_sqs_cannot_do_says_so(transport: Transport) -> None:
    assert (transport.capabilities.history, transport.capabilities.offsets) == (False, False)
    assert transport.capabilities.assignment is False
    for call in (
        transport.committed("g"),
        transport.read("t", 0, 0, 1),
        transport.seek("g", "t", 0, 0),
    ):
        with pytest.raises(Unsupported, match="not supported on AWS SNS\\+SQS"):
            await call


async def test_an_unreachable_endpoint_says_how_to_start_it() -> None:
    with pytest.raises(BrokerUnavailable, match="scripts/services up aws"):
        await open_transport("sqs+sns://127.0.0.1:1?region=us-east-1&connect_timeout=1")
