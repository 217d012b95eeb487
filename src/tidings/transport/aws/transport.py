"""AWS SNS + SQS as a Tidings transport: ``sqs+sns://host:port?region=us-east-1``.

**The mapping** (names in :mod:`.wire`). A topic is an SNS FIFO topic; a consumer group
reads it from an SQS FIFO queue of its own subscribed to the topic (raw message
delivery), so SNS fans every record out to every group. ``MessageGroupId`` is the
record's key and ``MessageDeduplicationId`` its event id. A topic has partitions as
on every broker (:func:`~tidings.transport.placement.partition_for` of the key, carried
in a message attribute, the count a tag of the topic), but SQS does not assign them:
every member of a group reads the whole queue, and FIFO message groups keep each key in
order and with one member at a time (:mod:`.subscription`). Redelivery is SQS's
visibility timeout; each queue has a redrive policy to ``<queue>-redrive`` after
``max_receives`` receives, a second safety net behind the framework's dead letters
(our retries happen inside a member and never return a message to SQS, so only
members dying again and again on one message reach it).

**Publishing**: ``PublishBatch`` 10 records at a time, in order; SNS answers once the
messages are stored, and fans out to the queues (FIFO topic to FIFO queues keeps the
order per message group). Nothing of a batch is sent when one record is too large.
SNS accepts 256 KiB per message, with attributes, and a binary value goes as base64,
so ``max_record_bytes`` is 180 KiB.

**What SQS cannot do** (:class:`~tidings.transport.contract.Capabilities`): no history
(a group sees what is published once its queue is subscribed), no offsets (``read``,
``seek``, ``committed`` raise :class:`Unsupported`; ``tidings lag`` shows the messages
in each queue from :meth:`queued`), and no partition assignment (see above).

**Where it runs**: the URL's host and port are the endpoint of both services (moto's
server, started by ``scripts/services up aws``); ``sqs+sns://?region=eu-west-1`` (no
host) is AWS itself. Credentials come from the usual AWS chain (environment,
``~/.aws``, an instance or task role), never from the URL. URL options: ``region``
(default ``AWS_REGION``/``AWS_DEFAULT_REGION``, else us-east-1), ``partitions`` (of
topics created here), ``prefetch`` (messages a member holds per queue), ``wait`` (long
poll seconds, 0-20; 0, the default, short-polls: see :mod:`.subscription` for why, and
give ``wait=20`` on AWS for fewer empty receives), ``poll_max`` (the longest nap between
short polls), ``visibility_timeout`` (seconds before a dead member's messages come
back), ``max_receives`` (before SQS moves a message to the redrive queue),
``connect_timeout``.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

import aiobotocore.session
import botocore.config

from tidings.records import OutgoingRecord
from tidings.transport.aws.subscription import AWS_ERRORS, SQSSubscription
from tidings.transport.aws.wire import (
    GROUP_TAG,
    HOW_TO_START,
    PARTITIONS_TAG,
    TOPIC_TAG,
    entry,
    kept,
    queue_name,
    redrive_name,
    topic_name,
)
from tidings.transport.contract import DEFAULT_PARTITIONS, Capabilities, TopicInfo, Transport
from tidings.transport.errors import (
    BrokerUnavailable,
    InvalidBrokerURL,
    TransportError,
)
from tidings.transport.options import url_options
from tidings.transport.placement import partition_for
from tidings.transport.queues import WithoutOffsets

__all__ = ["SnsSqsTransport"]

_OPTIONS = {
    "region": str, "partitions": int, "prefetch": int, "wait": int, "poll_max": float,
    "visibility_timeout": int, "max_receives": int, "connect_timeout": float,
}  # fmt: skip
_NOT_FOUND = {"NotFound", "NotFoundException", "ResourceNotFound", "ResourceNotFoundException"}
RETENTION = str(14 * 24 * 3600)  # SQS's longest


def _code(exc: Exception) -> str:
    return str(getattr(exc, "response", {}).get("Error", {}).get("Code", ""))


class SnsSqsTransport(WithoutOffsets, Transport):
    """SNS FIFO topics fanning out to SQS FIFO queues (aiobotocore); see the module."""

    capabilities = Capabilities(history=False, offsets=False, assignment=False, prefetch=False)
    platform = "AWS SNS+SQS"
    max_record_bytes = 180 * 1024

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        options = url_options(url, _OPTIONS)
        self.url = url
        self.endpoint = f"http://{parts.netloc}" if parts.hostname else None
        self.region = str(
            options.get("region")
            or os.environ.get("AWS_REGION")
            or os.environ.get("AWS_DEFAULT_REGION")
            or "us-east-1"
        )
        self.default_partitions = int(options.get("partitions", DEFAULT_PARTITIONS))
        self.prefetch = max(1, int(options.get("prefetch", 100)))
        self.wait = int(options.get("wait", 0))
        self.poll_max = float(options.get("poll_max", 0.5))
        self.visibility = int(options.get("visibility_timeout", 30))
        self.max_receives = int(options.get("max_receives", 10))
        self.connect_timeout = float(options.get("connect_timeout", 5.0))
        if not 0 <= self.wait <= 20:
            raise InvalidBrokerURL(f"{url!r}: wait must be 0 to 20 seconds (SQS long polling)")
        if self.poll_max <= 0:
            raise InvalidBrokerURL(f"{url!r}: poll_max must be above 0 seconds")
        if self.visibility < 3:
            raise InvalidBrokerURL(f"{url!r}: visibility_timeout must be at least 3 seconds")
        self._stack: contextlib.AsyncExitStack | None = None
        self._sns: Any = None
        self._sqs: Any = None
        self._account = ""
        self._topics: dict[str, tuple[str, int]] = {}  # topic -> (ARN, partitions)
        self._subscriptions: list[SQSSubscription] = []

    # -- connection -------------------------------------------------------------------

    async def connect(self) -> None:
        if self._stack is not None:
            return
        session = aiobotocore.session.get_session()
        config = botocore.config.Config(
            region_name=self.region, connect_timeout=self.connect_timeout,
            read_timeout=self.wait + 30, max_pool_connections=64,
            retries={"max_attempts": 3, "mode": "standard"},
        )  # fmt: skip
        stack = contextlib.AsyncExitStack()
        try:
            clients = []
            for service in ("sns", "sqs", "sts"):
                clients.append(await stack.enter_async_context(
                    session.create_client(service, endpoint_url=self.endpoint, config=config)
                ))  # fmt: skip
            self._sns, self._sqs, sts = clients
            self._account = (await sts.get_caller_identity())["Account"]
        except AWS_ERRORS as exc:
            await stack.aclose()
            raise BrokerUnavailable(
                f"{self.url}: cannot reach SNS/SQS at {self.endpoint or 'AWS'} ({exc!r});"
                f" {HOW_TO_START} (credentials come from the AWS chain: for the emulator any"
                " AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY do)"
            ) from None
        self._stack = stack

    @property
    def sns(self) -> Any:
        if self._sns is None:
            raise TransportError(f"{self.url}: not connected (call connect())")
        return self._sns

    async def close(self) -> None:
        for sub in list(self._subscriptions):
            await sub.close()
        self._subscriptions.clear()
        stack, self._stack = self._stack, None
        self._sns = self._sqs = None
        if stack is not None:
            await stack.aclose()

    # -- topics -----------------------------------------------------------------------

    def _arn(self, service: str, name: str) -> str:
        return f"arn:aws:{service}:{self.region}:{self._account}:{name}"

    async def _tags(self, arn: str) -> dict[str, str] | None:
        """A topic's tags (None: no such topic)."""
        try:
            answer = await self.sns.list_tags_for_resource(ResourceArn=arn)
        except AWS_ERRORS as exc:
            if _code(exc) in _NOT_FOUND:
                return None
            raise BrokerUnavailable(f"{self.url}: reading topic {arn}: {exc!r}") from None
        return {t["Key"]: t["Value"] for t in answer.get("Tags", ())}

    async def create_topic(self, name: str, partitions: int | None = None) -> None:
        await self._topic(name, partitions)

    async def _topic(self, name: str, partitions: int | None = None) -> tuple[str, int]:
        """The ARN and partition count of ``name``, creating its SNS topic if needed."""
        known = self._topics.get(name)
        if known is not None:
            return known
        arn = self._arn("sns", topic_name(name))
        tags = await self._tags(arn)
        if tags is None:
            wanted = partitions or self.default_partitions
            try:
                await self.sns.create_topic(
                    Name=topic_name(name),
                    Attributes={"FifoTopic": "true", "ContentBasedDeduplication": "false"},
                    Tags=[{"Key": TOPIC_TAG, "Value": name},
                          {"Key": PARTITIONS_TAG, "Value": str(wanted)}],
                )  # fmt: skip
            except AWS_ERRORS as exc:
                # Another process created it with other tags: read theirs below.
                if _code(exc) not in {"InvalidParameter", "TagPolicy"}:
                    raise BrokerUnavailable(
                        f"{self.url}: cannot create topic {name!r}: {exc!r}"
                    ) from None
            tags = await self._tags(arn) or {}
            if kept(name):
                await self._queue("", name, arn)
        count = int(tags.get(PARTITIONS_TAG, self.default_partitions))
        self._topics[name] = (arn, count)
        return arn, count

    async def _queue(self, group: str, topic: str, topic_arn: str) -> str:
        """The URL of ``group``'s queue of ``topic``, created and subscribed if needed."""
        name = queue_name(group, topic)
        arn = self._arn("sqs", name)
        try:
            await self._sqs.create_queue(
                QueueName=redrive_name(name),
                Attributes={"FifoQueue": "true", "MessageRetentionPeriod": RETENTION},
                tags={GROUP_TAG: group, TOPIC_TAG: topic, "tidings:redrive": "true"},
            )
            redrive_arn = self._arn("sqs", redrive_name(name))
            policy = {
                "Version": "2012-10-17",
                "Statement": [{
                    "Effect": "Allow", "Principal": {"Service": "sns.amazonaws.com"},
                    "Action": "sqs:SendMessage", "Resource": arn,
                    "Condition": {"ArnEquals": {"aws:SourceArn": topic_arn}},
                }],
            }  # fmt: skip
            attributes = {
                "MessageRetentionPeriod": RETENTION, "VisibilityTimeout": str(self.visibility),
                "Policy": json.dumps(policy),
                "RedrivePolicy": json.dumps({
                    "deadLetterTargetArn": redrive_arn,
                    "maxReceiveCount": str(self.max_receives),
                }),
            }  # fmt: skip
            try:
                queue = await self._sqs.create_queue(
                    QueueName=name, Attributes={"FifoQueue": "true", **attributes},
                    tags={GROUP_TAG: group, TOPIC_TAG: topic},
                )  # fmt: skip
            except AWS_ERRORS as exc:
                if "QueueAlreadyExists" not in _code(exc) + repr(exc):
                    raise
                # Made with other options (an earlier run's URL): this URL's options win.
                queue = await self._sqs.get_queue_url(QueueName=name)
                await self._sqs.set_queue_attributes(
                    QueueUrl=queue["QueueUrl"], Attributes=attributes
                )
            await self.sns.subscribe(
                TopicArn=topic_arn, Protocol="sqs", Endpoint=arn,
                Attributes={"RawMessageDelivery": "true"},
            )  # fmt: skip
        except AWS_ERRORS as exc:
            raise BrokerUnavailable(
                f"{self.url}: cannot set up the queue of group {group!r} on {topic!r}: {exc!r}"
            ) from None
        return str(queue["QueueUrl"])

    async def topics(self) -> list[TopicInfo]:
        found = []
        async for arn in self._pages(self.sns, "list_topics", "Topics", "TopicArn"):
            if not arn.endswith(".fifo"):
                continue
            tags = await self._tags(arn) or {}
            if TOPIC_TAG in tags:
                count = int(tags.get(PARTITIONS_TAG, self.default_partitions))
                found.append(TopicInfo(tags[TOPIC_TAG], count, {}))
        return sorted(found, key=lambda i: i.name)

    @staticmethod
    async def _pages(client: Any, method: str, field: str, key: str | None = None) -> Any:
        try:
            async for page in client.get_paginator(method).paginate():
                for item in page.get(field, ()):
                    yield item[key] if key else item
        except AWS_ERRORS as exc:
            raise BrokerUnavailable(f"{method} failed: {exc!r}") from None

    # -- publishing -------------------------------------------------------------------

    async def publish(self, records: Sequence[OutgoingRecord]) -> None:
        self.check_size(records)
        by_topic: dict[str, list[tuple[int, OutgoingRecord]]] = {}
        for n, record in enumerate(records):
            by_topic.setdefault(record.topic, []).append((n, record))
        for topic, numbered in by_topic.items():
            arn, count = await self._topic(topic)
            for start in range(0, len(numbered), 10):
                entries = [
                    entry(i, r, partition_for(r.key, count, n))
                    for i, (n, r) in enumerate(numbered[start : start + 10])
                ]
                try:
                    answer = await self.sns.publish_batch(
                        TopicArn=arn, PublishBatchRequestEntries=entries
                    )
                except AWS_ERRORS as exc:
                    raise BrokerUnavailable(f"{self.url}: publish to {topic!r}: {exc!r}") from None
                if answer.get("Failed"):
                    raise BrokerUnavailable(
                        f"{self.url}: SNS refused records of {topic!r}: {answer['Failed']}"
                    )

    # -- groups -----------------------------------------------------------------------

    async def subscribe(
        self, group: str, topics: Sequence[str], *, from_beginning: bool = True
    ) -> SQSSubscription:
        if self._stack is None:
            raise TransportError(f"{self.url}: not connected (call connect())")
        queues, partitions = {}, {}
        for topic in topics:
            arn, partitions[topic] = await self._topic(topic)
            queues[topic] = await self._queue(group, topic, arn)
        sub = SQSSubscription(
            url=self.url, group=group, sqs=self._sqs, queues=queues, partitions=partitions,
            prefetch=self.prefetch, wait=self.wait, poll_max=self.poll_max,
            visibility=self.visibility,
        )  # fmt: skip
        self._subscriptions.append(sub)
        sub.start()
        return sub

    async def _group_queues(self) -> list[tuple[str, str, str]]:
        """(group, topic, queue URL) of every queue a group reads."""
        out = []
        async for queue in self._pages(self._sqs, "list_queues", "QueueUrls"):
            try:
                tags = (await self._sqs.list_queue_tags(QueueUrl=queue)).get("Tags", {})
            except AWS_ERRORS:
                continue  # deleted meanwhile
            if GROUP_TAG in tags and TOPIC_TAG in tags and "tidings:redrive" not in tags:
                out.append((tags[GROUP_TAG], tags[TOPIC_TAG], queue))
        return out

    async def groups(self) -> list[str]:
        return sorted({group for group, _, _ in await self._group_queues() if group})

    async def queued(self, group: str) -> dict[tuple[str, int], int]:
        """Messages in the group's queue of each topic (waiting and in flight), under
        partition 0: SQS counts a queue, not the partitions its messages carry."""
        out = {}
        for name, topic, queue in await self._group_queues():
            if name != group:
                continue
            try:
                answer = await self._sqs.get_queue_attributes(
                    QueueUrl=queue,
                    AttributeNames=[
                        "ApproximateNumberOfMessages",
                        "ApproximateNumberOfMessagesNotVisible",
                    ],
                )
            except AWS_ERRORS as exc:
                raise BrokerUnavailable(f"{self.url}: reading queue {queue}: {exc!r}") from None
            attrs = answer.get("Attributes", {})
            out[(topic, 0)] = sum(int(v) for v in attrs.values())
        return out
