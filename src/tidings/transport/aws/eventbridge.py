"""AWS EventBridge as a Tidings transport: ``eventbridge://host:port?region=us-east-1``.

**The mapping** (names and messages in :mod:`.bus`). Every topic shares one custom bus
(``bus`` option; :mod:`.bus` says why one). A record is an event whose detail carries
its topic, partition (:func:`~tidings.transport.placement.partition_for` of the key, as
on every broker) and the record; a consumer group reads a topic from an SQS FIFO queue
of its own (:mod:`.groups`, the same queues and members as SNS+SQS), filled by one rule
per partition whose target sets ``MessageGroupId`` to the partition. SQS then keeps each
partition in order and with one member at a time (:mod:`.subscription`).

**Publishing**: ``PutEvents`` 10 records at a time, in order; EventBridge answers once
it has accepted them and delivers to the rules' targets after. Nothing of a batch is
sent when one record is too large: ``max_record_bytes`` is 120 KiB, because the detail
is JSON (UTF-8 kept as it is, but escaping may double a text value full of quotes;
base64 adds a third) and an entry may have 256 KiB; an entry larger than that is
refused too, before anything is sent. A
``PutEvents`` that fails for some entries raises :class:`BrokerUnavailable`: the others
were accepted, and the outbox's republish is dropped by the queue's deduplication.

**Order, on AWS and on the emulator**. A FIFO queue hands out each partition in the order
the rule delivered it. moto's EventBridge delivers inside ``PutEvents``, in order, so per-key
order holds there and the conformance suite checks it. AWS itself does not promise that
a bus delivers events in the order they were put (delivery is asynchronous, retried), so
on AWS ``Capabilities.ordered`` is False: records of a key may arrive out of order; use
``sqs+sns://`` where per-key order matters.

**What it cannot do**: as SNS+SQS (no history, no offsets, no partition assignment, no
prefetch past a receive of a partition), and see above for order on AWS.

**Where it runs**: as SNS+SQS (:mod:`.groups`): the URL's host is the emulator
(``scripts/services up aws``); ``eventbridge://?region=eu-west-1`` is AWS itself. The
identity needs ``events:DescribeEventBus``, ``CreateEventBus``, ``PutRule``,
``PutTargets``, ``PutEvents``, ``ListRules``, ``ListTagsForResource`` besides the SQS
calls.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from tidings.records import OutgoingRecord, Record
from tidings.transport.aws.bus import (
    DEFAULT_BUS,
    MAX_ENTRY_BYTES,
    TARGET_INPUT,
    TOPIC_RULE_PREFIX,
    entry,
    entry_size,
    pattern,
    route_rule,
    topic_rule,
)
from tidings.transport.aws.bus import record as to_record
from tidings.transport.aws.groups import AwsQueues, error_code
from tidings.transport.aws.subscription import AWS_ERRORS
from tidings.transport.aws.wire import GROUP_TAG, PARTITIONS_TAG, TOPIC_TAG, kept
from tidings.transport.contract import Capabilities, TopicInfo
from tidings.transport.errors import BrokerUnavailable, InvalidBrokerURL, RecordTooLarge
from tidings.transport.placement import partition_for

__all__ = ["EventBridgeTransport"]

_NOT_FOUND = {"ResourceNotFoundException", "ResourceNotFound"}
_ORDERED = Capabilities(history=False, offsets=False, assignment=False, prefetch=False)


class EventBridgeTransport(AwsQueues):
    """An EventBridge bus routing to SQS FIFO queues (aiobotocore); see the module."""

    platform = "AWS EventBridge"
    max_record_bytes = 120 * 1024
    services = ("events",)
    sender = "events.amazonaws.com"
    extra_options = {"bus": str}

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.bus = str(self.options.get("bus", DEFAULT_BUS))
        if not self.bus or self.bus == "default":
            raise InvalidBrokerURL(f"{url!r}: bus must name a custom event bus, not 'default'")
        self.via = f"eventbridge:{self.bus}"
        # The emulator delivers in order inside PutEvents; AWS does not promise it.
        self.capabilities = dataclasses.replace(_ORDERED, ordered=self.endpoint is not None)
        self._topics: dict[str, int] = {}  # topic -> partitions

    @property
    def events(self) -> Any:
        return self.client("events")

    async def _connected(self) -> None:
        try:
            await self.events.describe_event_bus(Name=self.bus)
        except AWS_ERRORS as exc:
            if error_code(exc) not in _NOT_FOUND:
                raise
            try:
                await self.events.create_event_bus(Name=self.bus)
            except AWS_ERRORS as again:
                if error_code(again) != "ResourceAlreadyExistsException":
                    raise  # another process made it meanwhile: fine

    def _rule_arn(self, name: str) -> str:
        return self.arn("events", f"rule/{self.bus}/{name}")

    # -- topics -----------------------------------------------------------------------

    async def _tags(self, arn: str) -> dict[str, str] | None:
        """A rule's tags (None: no such rule)."""
        try:
            answer = await self.events.list_tags_for_resource(ResourceARN=arn)
        except AWS_ERRORS as exc:
            if error_code(exc) in _NOT_FOUND:
                return None
            raise BrokerUnavailable(f"{self.url}: reading rule {arn}: {exc!r}") from None
        return {t["Key"]: t["Value"] for t in answer.get("Tags", ())}

    async def create_topic(self, name: str, partitions: int | None = None) -> None:
        await self._topic(name, partitions)

    async def _topic(self, name: str, partitions: int | None = None) -> int:
        """The partition count of ``name``, declaring it (its rule) if needed."""
        known = self._topics.get(name)
        if known is not None:
            return known
        tags = await self._tags(self._rule_arn(topic_rule(name)))
        if tags is None:
            wanted = partitions or self.default_partitions
            try:
                await self.events.put_rule(
                    Name=topic_rule(name), EventBusName=self.bus, EventPattern=pattern(name),
                    State="DISABLED", Description=f"tidings topic {name}"[:512],
                    Tags=[{"Key": TOPIC_TAG, "Value": name},
                          {"Key": PARTITIONS_TAG, "Value": str(wanted)}],
                )  # fmt: skip
            except AWS_ERRORS as exc:
                raise BrokerUnavailable(
                    f"{self.url}: cannot declare topic {name!r}: {exc!r}"
                ) from None
            tags = await self._tags(self._rule_arn(topic_rule(name))) or {}
            self._topics[name] = int(tags.get(PARTITIONS_TAG, wanted))
            if kept(name):
                await self._route("", name)
        else:
            self._topics[name] = int(tags.get(PARTITIONS_TAG, self.default_partitions))
        return self._topics[name]

    async def topics(self) -> list[TopicInfo]:
        found = []
        rules = self.pages(
            self.events, "list_rules", "Rules", EventBusName=self.bus, NamePrefix=TOPIC_RULE_PREFIX
        )
        async for rule in rules:
            tags = await self._tags(rule["Arn"]) or {}
            if TOPIC_TAG in tags and PARTITIONS_TAG in tags:
                found.append(TopicInfo(tags[TOPIC_TAG], int(tags[PARTITIONS_TAG]), {}))
        return sorted(found, key=lambda i: i.name)

    # -- groups -----------------------------------------------------------------------

    async def _route(self, group: str, topic: str) -> tuple[str, int]:
        count = await self._topic(topic)
        url, arn = await self._group_queue(
            group, topic, self._rule_arn("*"), {"ContentBasedDeduplication": "true"}
        )
        for partition in range(count):
            name = route_rule(group, topic, partition)
            target = {
                "Id": "queue", "Arn": arn, "InputTransformer": dict(TARGET_INPUT),
                "SqsParameters": {"MessageGroupId": f"partition-{partition}"},
            }  # fmt: skip
            try:
                await self.events.put_rule(
                    Name=name, EventBusName=self.bus, EventPattern=pattern(topic, partition),
                    State="ENABLED", Tags=[{"Key": GROUP_TAG, "Value": group},
                                           {"Key": TOPIC_TAG, "Value": topic}],
                )  # fmt: skip
                answer = await self.events.put_targets(
                    Rule=name, EventBusName=self.bus, Targets=[target]
                )
            except AWS_ERRORS as exc:
                raise BrokerUnavailable(
                    f"{self.url}: cannot route {topic!r} to group {group!r}: {exc!r}"
                ) from None
            if answer.get("FailedEntryCount"):
                raise BrokerUnavailable(
                    f"{self.url}: EventBridge refused the target of rule {name}:"
                    f" {answer.get('FailedEntries')}"
                )
        return url, count

    def _decode(self, topic: str, message: dict[str, Any]) -> Record:
        return to_record(topic, message)

    # -- publishing -------------------------------------------------------------------

    async def publish(self, records: Sequence[OutgoingRecord]) -> None:
        self.check_size(records)
        entries = []
        for n, out in enumerate(records):
            count = await self._topic(out.topic)
            entries.append(entry(out, partition_for(out.key, count, n), self.bus))
            if entry_size(entries[-1]) > MAX_ENTRY_BYTES:
                raise RecordTooLarge(
                    f"record for topic {out.topic!r} is {entry_size(entries[-1])} bytes as an"
                    f" EventBridge event; an event may have at most {MAX_ENTRY_BYTES} bytes"
                )
        for start in range(0, len(entries), 10):
            try:
                answer = await self.events.put_events(Entries=entries[start : start + 10])
            except AWS_ERRORS as exc:
                raise BrokerUnavailable(f"{self.url}: PutEvents failed: {exc!r}") from None
            if answer.get("FailedEntryCount"):
                failed = [e for e in answer.get("Entries", ()) if e.get("ErrorCode")]
                raise BrokerUnavailable(f"{self.url}: EventBridge refused records: {failed}")
