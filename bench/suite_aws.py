"""AWS on moto's emulator: the framework's SNS+SQS and EventBridge transports against raw
aiobotocore doing the same work, and the shop on each.

Publish: batches of 500 1 KiB records (framework ``publish``) vs raw calls of 10 in
order, each awaited: ``PublishBatch`` to an SNS FIFO topic (group id the key,
deduplication id a fresh one) and ``PutEvents`` to a bus (the detail the payload), each
routed to one SQS FIFO queue. Consume: take and delete every record (framework
``fetch`` + ``ack`` of each delivery, :mod:`bench.framework_rates`, vs raw
``ReceiveMessage`` of 10 and ``DeleteMessageBatch`` of what came). One partition on both
sides; rounds alternate which publisher goes first; medians.

The emulator is one Python process (moto's server) on the same two cores as the
clients, so these are rates of moto, not of AWS: the ratios say what the framework adds
on top of the same calls.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import time
import uuid
from typing import Any

import aiobotocore.session

from bench import shop
from bench.framework_rates import PAYLOAD, framework_consume, framework_publish
from tidings.transport import open_transport

ENDPOINT = "http://127.0.0.1:4566"
SNS_URL = "sqs+sns://127.0.0.1:4566?region=us-east-1"
EVENTBRIDGE_URL = "eventbridge://127.0.0.1:4566?region=us-east-1"
STORE = "postgresql://127.0.0.1:5432/tidings"
ACCOUNT = "123456789012"  # moto's
TEXT = PAYLOAD.decode()


async def _raw_publish_sns(sns: Any, topic_arn: str, n: int) -> float:
    started = time.perf_counter()
    for start in range(0, n, 10):
        entries = [
            {"Id": str(i), "Message": TEXT, "MessageGroupId": f"key-{(start + i) % 100}",
             "MessageDeduplicationId": uuid.uuid4().hex}
            for i in range(10)
        ]  # fmt: skip
        await sns.publish_batch(TopicArn=topic_arn, PublishBatchRequestEntries=entries)
    return n / (time.perf_counter() - started)


async def _raw_publish_events(events: Any, bus: str, n: int) -> float:
    started = time.perf_counter()
    for start in range(0, n, 10):
        entries = [
            {"Source": "bench", "DetailType": "bench", "EventBusName": bus,
             "Detail": json.dumps({"n": start + i, "value": TEXT})}
            for i in range(10)
        ]  # fmt: skip
        await events.put_events(Entries=entries)
    return n / (time.perf_counter() - started)


async def _raw_consume(sqs: Any, queue: str, n: int) -> float:
    started, seen = time.perf_counter(), 0
    while seen < n:
        answer = await sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10)
        messages = answer.get("Messages", ())
        if messages:
            entries = [{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]}
                       for i, m in enumerate(messages)]  # fmt: skip
            await sqs.delete_message_batch(QueueUrl=queue, Entries=entries)
            seen += len(messages)
    return n / (time.perf_counter() - started)


async def _raw_sns_route(sns: Any, sqs: Any, name: str) -> tuple[str, str]:
    arn = (await sns.create_topic(Name=f"{name}.fifo", Attributes={"FifoTopic": "true"}))[
        "TopicArn"
    ]
    queue = await sqs.create_queue(QueueName=f"{name}.fifo", Attributes={"FifoQueue": "true"})
    await sns.subscribe(
        TopicArn=arn, Protocol="sqs", Endpoint=f"arn:aws:sqs:us-east-1:{ACCOUNT}:{name}.fifo",
        Attributes={"RawMessageDelivery": "true"},
    )  # fmt: skip
    return arn, queue["QueueUrl"]


async def _raw_bus_route(events: Any, sqs: Any, name: str) -> tuple[str, str]:
    await events.create_event_bus(Name=name)
    queue = await sqs.create_queue(
        QueueName=f"{name}.fifo",
        Attributes={"FifoQueue": "true", "ContentBasedDeduplication": "true"},
    )
    await events.put_rule(Name=name, EventBusName=name, EventPattern='{"source": ["bench"]}')
    await events.put_targets(
        Rule=name, EventBusName=name,
        Targets=[{"Id": "q", "Arn": f"arn:aws:sqs:us-east-1:{ACCOUNT}:{name}.fifo",
                  "SqsParameters": {"MessageGroupId": "0"}}],
    )  # fmt: skip
    return name, queue["QueueUrl"]


async def _clients(url: str, n: int, rounds: int) -> dict[str, float]:
    session = aiobotocore.session.get_session()
    rows: dict[str, list[float]] = {"raw_pub": [], "fw_pub": [], "raw_con": [], "fw_con": []}
    kw = {"endpoint_url": ENDPOINT, "region_name": "us-east-1"}
    async with (
        session.create_client("sns", **kw) as sns,
        session.create_client("sqs", **kw) as sqs,
        session.create_client("events", **kw) as events,
    ):
        transport = await open_transport(url)
        try:
            for round_ in range(rounds):
                name = f"benchraw-{uuid.uuid4().hex[:8]}"
                if url.startswith("sqs+sns"):
                    target, queue = await _raw_sns_route(sns, sqs, name)
                    raw = _raw_publish_sns(sns, target, n)
                else:
                    target, queue = await _raw_bus_route(events, sqs, name)
                    raw = _raw_publish_events(events, target, n)
                topic, group = f"bench-{uuid.uuid4().hex[:8]}", f"bench{uuid.uuid4().hex[:8]}"
                await transport.create_topic(topic, 1)
                await (await transport.subscribe(group, [topic])).close()  # its queue first
                pair = [("raw_pub", raw), ("fw_pub", framework_publish(transport, topic, n))]
                for key, job in pair if round_ % 2 == 0 else reversed(pair):
                    rows[key].append(await job)
                rows["raw_con"].append(await _raw_consume(sqs, queue, n))
                rows["fw_con"].append(await framework_consume(transport, group, topic, n))
        finally:
            await transport.close()
    return {k: statistics.median(v) for k, v in rows.items()}


def _rates(url: str, n: int, rounds: int) -> dict[str, Any]:
    m = asyncio.run(_clients(url, n, rounds))
    return {
        "publish_events_per_s": round(m["fw_pub"]),
        "raw_publish_events_per_s": round(m["raw_pub"]),
        "publish_ratio_to_raw": round(m["fw_pub"] / m["raw_pub"], 3),
        "consume_events_per_s": round(m["fw_con"]),
        "raw_consume_events_per_s": round(m["raw_con"]),
        "consume_ratio_to_raw": round(m["fw_con"] / m["raw_con"], 3),
    }


def run(n: int = 1_000, rounds: int = 3, orders: int = 150) -> dict[str, Any]:
    """Fewer records and orders than the other suites: moto serves a few hundred calls a
    second here, and a FIFO queue hands out a message group one receive at a time."""
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")  # the emulator takes any
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
    result: dict[str, Any] = {"emulator": "moto 5.2.5 server (scripts/services up aws)"}
    result["sns_sqs"] = _rates(SNS_URL, n, rounds)
    result["sns_sqs"].update(shop.run(SNS_URL, STORE, orders=orders))
    result["eventbridge"] = _rates(EVENTBRIDGE_URL, n, rounds)
    result["eventbridge"].update(shop.run(EVENTBRIDGE_URL, STORE, orders=orders))
    return result
