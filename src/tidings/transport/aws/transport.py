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

**Where it runs**, the clients, a group's queue and the URL options: :mod:`.groups`,
shared with EventBridge (:mod:`.eventbridge`). ``sqs+sns://?region=eu-west-1`` (no
host) is AWS itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tidings.records import OutgoingRecord, Record
from tidings.transport.aws.groups import AwsQueues, error_code
from tidings.transport.aws.subscription import AWS_ERRORS
from tidings.transport.aws.wire import PARTITIONS_TAG, TOPIC_TAG, entry, kept, topic_name
from tidings.transport.aws.wire import record as to_record
from tidings.transport.contract import Capabilities, TopicInfo
from tidings.transport.errors import BrokerUnavailable
from tidings.transport.placement import partition_for

__all__ = ["SnsSqsTransport"]

_NOT_FOUND = {"NotFound", "NotFoundException", "ResourceNotFound", "ResourceNotFoundException"}


class SnsSqsTransport(AwsQueues):
    """SNS FIFO topics fanning out to SQS FIFO queues (aiobotocore); see the module."""

    capabilities = Capabilities(history=False, offsets=False, assignment=False, prefetch=False)
    platform = "AWS SNS+SQS"
    max_record_bytes = 180 * 1024
    services = ("sns",)
    sender = "sns.amazonaws.com"

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self._topics: dict[str, tuple[str, int]] = {}  # topic -> (ARN, partitions)

    @property
    def sns(self) -> Any:
        return self.client("sns")

    # -- topics -----------------------------------------------------------------------

    async def _tags(self, arn: str) -> dict[str, str] | None:
        """A topic's tags (None: no such topic)."""
        try:
            answer = await self.sns.list_tags_for_resource(ResourceArn=arn)
        except AWS_ERRORS as exc:
            if error_code(exc) in _NOT_FOUND:
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
        arn = self.arn("sns", topic_name(name))
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
                if error_code(exc) not in {"InvalidParameter", "TagPolicy"}:
                    raise BrokerUnavailable(
                        f"{self.url}: cannot create topic {name!r}: {exc!r}"
                    ) from None
            tags = await self._tags(arn) or {}
            if kept(name):
                await self._subscribed("", name, arn)
        count = int(tags.get(PARTITIONS_TAG, self.default_partitions))
        self._topics[name] = (arn, count)
        return arn, count

    async def _subscribed(self, group: str, topic: str, topic_arn: str) -> str:
        """The URL of ``group``'s queue of ``topic``, subscribed to the SNS topic."""
        url, arn = await self._group_queue(group, topic, topic_arn)
        try:
            await self.sns.subscribe(
                TopicArn=topic_arn, Protocol="sqs", Endpoint=arn,
                Attributes={"RawMessageDelivery": "true"},
            )  # fmt: skip
        except AWS_ERRORS as exc:
            raise BrokerUnavailable(
                f"{self.url}: cannot subscribe the queue of group {group!r} to {topic!r}: {exc!r}"
            ) from None
        return url

    async def _route(self, group: str, topic: str) -> tuple[str, int]:
        arn, count = await self._topic(topic)
        return await self._subscribed(group, topic, arn), count

    def _decode(self, topic: str, message: dict[str, Any]) -> Record:
        return to_record(topic, 0, message)

    async def topics(self) -> list[TopicInfo]:
        found = []
        async for item in self.pages(self.sns, "list_topics", "Topics"):
            arn = item["TopicArn"]
            if not arn.endswith(".fifo"):
                continue
            tags = await self._tags(arn) or {}
            if TOPIC_TAG in tags:
                count = int(tags.get(PARTITIONS_TAG, self.default_partitions))
                found.append(TopicInfo(tags[TOPIC_TAG], count, {}))
        return sorted(found, key=lambda i: i.name)

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
