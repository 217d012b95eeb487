"""The SQS side both AWS transports share: the URL, the clients, a group's FIFO queues.

SNS+SQS (:mod:`.transport`) and EventBridge (:mod:`.eventbridge`) differ only in how a
record reaches a group's queue (an SNS subscription; a bus rule per partition). What a
group reads is the same on both, so it is written once here:

* **The clients** (:meth:`AwsQueues.connect`): one aiobotocore client per service the
  transport names in ``services`` (always ``sqs`` and ``sts``, whose
  ``GetCallerIdentity`` proves the endpoint and the credentials and gives the account of
  the ARNs). The URL's host and port are the endpoint of every service (moto's server);
  no host is AWS itself. Credentials come from the AWS chain, never from the URL.
* **A group's queue of a topic** (:meth:`AwsQueues._group_queue`): a FIFO queue named by
  :func:`.wire.queue_name`, tagged with the group, the topic and what fills it (which is
  how :meth:`groups` and :meth:`queued` find a transport's own), with a redrive queue behind it (SQS moves a
  message there after ``max_receives`` receives: a safety net behind the framework's dead
  letters) and a policy that lets the transport's sender (``sns.amazonaws.com`` or
  ``events.amazonaws.com``) send to it from the ARNs that ``source_arn`` matches. A queue
  made earlier with other options gets this URL's.
* **Members** read with :class:`.subscription.SQSSubscription`, whose rules hold for both
  (every member reads every partition; FIFO message groups keep order and one member
  per group at a time); the transport gives it the function that turns a message back
  into a record.

URL options: ``region`` (default ``AWS_REGION``/``AWS_DEFAULT_REGION``, else us-east-1),
``partitions`` (of topics created here), ``prefetch`` (messages a member holds per
queue), ``wait`` (long poll seconds, 0-20; 0, the default, short-polls: see
:mod:`.subscription`), ``poll_max`` (the longest nap between short polls),
``visibility_timeout`` (seconds before a dead member's messages come back),
``max_receives`` (before SQS moves a message to the redrive queue), ``connect_timeout``;
a transport may add its own (``extra_options``).
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar
from urllib.parse import urlsplit

import aiobotocore.session
import botocore.config

from tidings.records import Record
from tidings.transport.aws.subscription import AWS_ERRORS, SQSSubscription
from tidings.transport.aws.wire import (
    GROUP_TAG,
    HOW_TO_START,
    TOPIC_TAG,
    VIA_TAG,
    queue_name,
    queue_prefix,
    redrive_name,
)
from tidings.transport.contract import DEFAULT_PARTITIONS, Transport
from tidings.transport.errors import BrokerUnavailable, InvalidBrokerURL, TransportError
from tidings.transport.options import url_options
from tidings.transport.queues import WithoutOffsets

__all__ = ["RETENTION", "AwsQueues", "error_code"]

_OPTIONS: dict[str, Callable[[str], Any]] = {
    "region": str, "partitions": int, "prefetch": int, "wait": int, "poll_max": float,
    "visibility_timeout": int, "max_receives": int, "connect_timeout": float,
}  # fmt: skip
RETENTION = str(14 * 24 * 3600)  # SQS's longest
REDRIVE_TAG = "tidings:redrive"


def error_code(exc: Exception) -> str:
    """The AWS error code of a botocore error ('' for a connection error)."""
    return str(getattr(exc, "response", {}).get("Error", {}).get("Code", ""))


class AwsQueues(WithoutOffsets, Transport):
    """What both AWS transports share (see the module); a subclass routes records to the
    queues made by :meth:`_group_queue` and says how a message becomes a record."""

    #: The AWS services this transport calls besides SQS and STS.
    services: ClassVar[tuple[str, ...]] = ()
    #: The service principal that sends to a group's queue.
    sender: ClassVar[str] = ""
    #: Options of this transport beyond the module's.
    extra_options: ClassVar[Mapping[str, Callable[[str], Any]]] = {}

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self.options = options = url_options(url, {**_OPTIONS, **self.extra_options})
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
        #: What fills this transport's queues (:data:`.wire.VIA_TAG`; "" for SNS).
        self.via = ""
        self._stack: contextlib.AsyncExitStack | None = None
        self._clients: dict[str, Any] = {}
        self._account = ""
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
            for service in (*self.services, "sqs", "sts"):
                self._clients[service] = await stack.enter_async_context(
                    session.create_client(service, endpoint_url=self.endpoint, config=config)
                )
            self._account = (await self._clients["sts"].get_caller_identity())["Account"]
            await self._connected()
        except AWS_ERRORS as exc:
            await stack.aclose()
            self._clients.clear()
            raise BrokerUnavailable(
                f"{self.url}: cannot reach {self.platform} at {self.endpoint or 'AWS'}"
                f" ({exc!r}); {HOW_TO_START} (credentials come from the AWS chain: for the"
                " emulator any AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY do)"
            ) from None
        self._stack = stack

    async def _connected(self) -> None:
        """What a transport sets up once its clients are open (nothing by default)."""

    def client(self, service: str) -> Any:
        found = self._clients.get(service)
        if found is None:
            raise TransportError(f"{self.url}: not connected (call connect())")
        return found

    async def close(self) -> None:
        for sub in list(self._subscriptions):
            await sub.close()
        self._subscriptions.clear()
        stack, self._stack = self._stack, None
        self._clients.clear()
        if stack is not None:
            await stack.aclose()

    def arn(self, service: str, name: str) -> str:
        return f"arn:aws:{service}:{self.region}:{self._account}:{name}"

    @staticmethod
    async def pages(client: Any, method: str, field: str, **kwargs: Any) -> Any:
        """Every item of ``field`` over the pages of a list call."""
        try:
            async for page in client.get_paginator(method).paginate(**kwargs):
                for item in page.get(field, ()):
                    yield item
        except AWS_ERRORS as exc:
            raise BrokerUnavailable(f"{method} failed: {exc!r}") from None

    # -- a group's queue ----------------------------------------------------------------

    async def _group_queue(
        self, group: str, topic: str, source_arn: str, extra: Mapping[str, str] | None = None
    ) -> tuple[str, str]:
        """The URL and ARN of ``group``'s queue of ``topic``, made if needed (see the
        module); ``extra`` are more queue attributes. Raises :class:`BrokerUnavailable`."""
        sqs = self.client("sqs")
        name = queue_name(group, topic, self.via)
        arn = self.arn("sqs", name)
        tags = {GROUP_TAG: group, TOPIC_TAG: topic, **({VIA_TAG: self.via} if self.via else {})}
        try:
            await sqs.create_queue(
                QueueName=redrive_name(name),
                Attributes={"FifoQueue": "true", "MessageRetentionPeriod": RETENTION},
                tags={**tags, REDRIVE_TAG: "true"},
            )
            policy = {
                "Version": "2012-10-17",
                "Statement": [{
                    "Effect": "Allow", "Principal": {"Service": self.sender},
                    "Action": "sqs:SendMessage", "Resource": arn,
                    "Condition": {"ArnLike": {"aws:SourceArn": source_arn}},
                }],
            }  # fmt: skip
            attributes = {
                "MessageRetentionPeriod": RETENTION, "VisibilityTimeout": str(self.visibility),
                "Policy": json.dumps(policy),
                "RedrivePolicy": json.dumps({
                    "deadLetterTargetArn": self.arn("sqs", redrive_name(name)),
                    "maxReceiveCount": str(self.max_receives),
                }),
                **(extra or {}),
            }  # fmt: skip
            try:
                queue = await sqs.create_queue(
                    QueueName=name, Attributes={"FifoQueue": "true", **attributes},
                    tags=tags,
                )  # fmt: skip
            except AWS_ERRORS as exc:
                if "QueueAlreadyExists" not in error_code(exc) + repr(exc):
                    raise
                # Made with other options (an earlier run's URL): this URL's options win.
                queue = await sqs.get_queue_url(QueueName=name)
                await sqs.set_queue_attributes(QueueUrl=queue["QueueUrl"], Attributes=attributes)
        except AWS_ERRORS as exc:
            raise BrokerUnavailable(
                f"{self.url}: cannot set up the queue of group {group!r} on {topic!r}: {exc!r}"
            ) from None
        return str(queue["QueueUrl"]), arn

    # -- groups -----------------------------------------------------------------------

    async def _route(self, group: str, topic: str) -> tuple[str, int]:
        """The URL of ``group``'s queue of ``topic``, routed to from the topic, and the
        topic's partition count (the topic is created if needed)."""
        raise NotImplementedError

    def _decode(self, topic: str, message: dict[str, Any]) -> Record:
        """The record a received SQS message of ``topic`` carries (offset 0)."""
        raise NotImplementedError

    async def subscribe(
        self, group: str, topics: Sequence[str], *, from_beginning: bool = True
    ) -> SQSSubscription:
        if self._stack is None:
            raise TransportError(f"{self.url}: not connected (call connect())")
        queues, partitions = {}, {}
        for topic in topics:
            queues[topic], partitions[topic] = await self._route(group, topic)
        sub = SQSSubscription(
            url=self.url, group=group, sqs=self.client("sqs"), queues=queues,
            partitions=partitions, prefetch=self.prefetch, wait=self.wait,
            poll_max=self.poll_max, visibility=self.visibility, decode=self._decode,
        )  # fmt: skip
        self._subscriptions.append(sub)
        sub.start()
        return sub

    async def _group_queues(self, group: str | None = None) -> list[tuple[str, str, str]]:
        """(group, topic, queue URL) of every queue a group (``group``, if given) reads
        through this transport. With a group, only queues named like its are listed:
        an account may hold thousands of queues, each asked for its tags."""
        sqs = self.client("sqs")
        out = []
        prefix = {} if group is None else {"QueueNamePrefix": queue_prefix(group)}
        async for queue in self.pages(sqs, "list_queues", "QueueUrls", **prefix):
            try:
                tags = (await sqs.list_queue_tags(QueueUrl=queue)).get("Tags", {})
            except AWS_ERRORS:
                continue  # deleted meanwhile
            if (
                GROUP_TAG in tags and TOPIC_TAG in tags and REDRIVE_TAG not in tags
                and tags.get(VIA_TAG, "") == self.via
            ):  # fmt: skip
                out.append((tags[GROUP_TAG], tags[TOPIC_TAG], queue))
        return out

    async def groups(self) -> list[str]:
        return sorted({group for group, _, _ in await self._group_queues() if group})

    async def queued(self, group: str) -> dict[tuple[str, int], int]:
        """Messages in the group's queue of each topic (waiting and in flight), under
        partition 0: SQS counts a queue, not the partitions its messages carry."""
        out = {}
        for name, topic, queue in await self._group_queues(group):
            if name != group:
                continue
            try:
                answer = await self.client("sqs").get_queue_attributes(
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
