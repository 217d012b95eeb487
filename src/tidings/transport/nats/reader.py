"""Reading the partitions one group member holds: pull requests, buffers, ack and nack.

Each held partition has a durable pull consumer with ``AckPolicy.all`` (see
:mod:`.groups` for who owns which). A pull request for up to ``prefetch`` records is
kept open per partition; the server answers it into this member's inbox, and the records
wait in the partition's buffer, so ``fetch`` is served from memory while the next
records are already on their way.

**Ack** sends a JetStream ack without waiting for an answer, as every JetStream client
does; it is cumulative on the server as in the contract. Before committed offsets are
read or a partition is handed over, :meth:`Reader.confirm` repeats the last ack as a
request, whose answer means every earlier ack of that consumer has been applied.

What was handed out and not settled is in the member's
:class:`~tidings.transport.ledger.DeliveryLedger`; each partition keeps the ack subjects of
those deliveries in the same order (``Partition.replies``), so that what the ledger
settles from either end is taken from the same end there.

**Nack** puts the record, and those handed out after it, back at the front of the
buffer and pauses the partition for ``delay``. The server never sees it: a server-side
``nak`` would redeliver that one record after the delay, overtaken by the records
behind it; the local rewind keeps the partition in order.

**Holes.** Records already sent to us can be lost with a connection (the server then
thinks they are delivered). A record whose offset jumps ahead, or a reconnect after
which the consumer says it delivered more than we got, marks the partition for repair:
the owner reads it again from the committed offset on a fresh consumer.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import time
from collections import deque

import nats.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription as NatsSub

from tidings.records import Record
from tidings.transport.contract import Delivery, Subscription
from tidings.transport.ledger import DeliveryLedger
from tidings.transport.nats.wire import (
    NATS_ERRORS,
    NS,
    JetStreamError,
    ack_reply_info,
    api,
    decode_headers,
    stream_name,
    subject,
)

log = logging.getLogger(__name__)

TopicPartition = tuple[str, int]
PULL_EXPIRES = 10.0  # seconds a pull request waits on the server for records


class Partition:
    """A held partition: its consumer and the records on their way through this member."""

    def __init__(self, tp: TopicPartition, consumer: str, lease: int, start: int) -> None:
        self.tp = tp
        self.stream = stream_name(*tp)
        self.consumer = consumer
        self.lease = lease  # revision of our lease key
        self.expected = start  # offset of the next record the consumer should send us
        self.buffer: deque[tuple[Record, str]] = deque()  # fetched, not handed out
        self.replies: deque[str] = deque()  # ack subjects of the outstanding, in order
        self.request: str | None = None  # token of the open pull request
        self.outstanding = 0  # records it may still bring
        self.request_seen = 0.0  # when it was sent or last brought a record
        self.last_ack: str | None = None  # reply subject of an ack not yet confirmed
        self.trouble: str | None = None  # "gap", "check" or "deleted": repair before reading
        self.gap_at = self.gap_to = 0  # offsets: the one expected, and what came instead


class Reader:
    """The held partitions of one member and the records in them."""

    def __init__(self, nc: Client, owner: Subscription, url: str, prefetch: int) -> None:
        self._nc = nc
        self._url = url
        self._prefetch = prefetch
        self.ledger = DeliveryLedger(owner)
        self.parts: dict[TopicPartition, Partition] = {}
        self._by_consumer: dict[tuple[str, str], Partition] = {}
        self._requests: dict[str, Partition] = {}  # open pull requests by token
        self._tokens = itertools.count()
        self._rotation = 0
        self._inbox = ""
        self._sub: NatsSub | None = None
        self.wake = asyncio.Event()

    async def start(self) -> None:
        self._inbox = self._nc.new_inbox()
        self._sub = await self._nc.subscribe(f"{self._inbox}.*", cb=self._on_message)

    async def stop(self) -> None:
        if self._sub is not None:
            with contextlib.suppress(Exception):
                await self._sub.unsubscribe()
        self.ledger.forget(self.parts)
        self.parts.clear()
        self._by_consumer.clear()
        self._requests.clear()

    def add(self, part: Partition) -> None:
        self.ledger.forget((part.tp,))  # read from its committed offset: all anew
        self.parts[part.tp] = part
        self._by_consumer[(part.stream, part.consumer)] = part

    def drop(self, tp: TopicPartition) -> Partition:
        part = self.parts.pop(tp)
        self.ledger.forget((tp,))
        self._by_consumer.pop((part.stream, part.consumer), None)
        if part.request is not None:
            self._requests.pop(part.request, None)
        return part

    def on_reconnected(self) -> None:
        self._requests.clear()
        for part in self.parts.values():
            part.request, part.outstanding = None, 0
            part.trouble = part.trouble or "check"
        self.wake.set()

    def _request_over(self, part: Partition) -> None:
        if part.request is not None:
            self._requests.pop(part.request, None)
        part.request, part.outstanding = None, 0

    # -- receiving --------------------------------------------------------------------

    async def _on_message(self, msg: Msg) -> None:
        reply = msg.reply
        info = ack_reply_info(reply) if reply else None
        if info is None:  # a status (408 expired, 409 consumer deleted...) on our inbox
            request = self._requests.get(msg.subject[len(self._inbox) + 1 :])
            if request is not None:
                self._request_over(request)
                headers = msg.headers or {}
                status = headers.get("Status")
                if status == "503" or (status == "409" and "Deleted" in headers.get(
                    "Description", ""
                )):  # fmt: skip
                    request.trouble = "deleted"
            self.wake.set()
            return
        # A record arrives with its own subject, not our inbox's: find its partition
        # by the consumer named in its ack subject.
        stream, consumer, seq, timestamp = info
        part = self._by_consumer.get((stream, consumer))
        if part is None:
            return  # for a partition we left
        part.request_seen = time.monotonic()
        part.outstanding -= 1
        if part.outstanding <= 0:
            self._request_over(part)
        offset = seq - 1
        if offset < part.expected:
            return  # a redelivery (after ack_wait) of what we already have
        if offset > part.expected and part.trouble is None:
            part.trouble, part.gap_at, part.gap_to = "gap", part.expected, offset
        part.expected = offset + 1
        key, headers = decode_headers(msg.headers)
        part.buffer.append((Record(*part.tp, offset, key, msg.data, headers, timestamp), reply))
        self.wake.set()

    async def pull(self) -> None:
        """Keep a pull request open for every partition whose buffer runs low."""
        now = time.monotonic()
        prefetch = self._prefetch
        for part in self.parts.values():
            if part.request is not None and now - part.request_seen > PULL_EXPIRES + 3:
                self._request_over(part)  # never answered: lost with a connection
            if part.trouble or part.request is not None or len(part.buffer) > prefetch // 2:
                continue
            batch = prefetch - len(part.buffer)
            token = str(next(self._tokens))
            try:
                await self._nc.publish(
                    f"$JS.API.CONSUMER.MSG.NEXT.{part.stream}.{part.consumer}",
                    json.dumps({"batch": batch, "expires": int(PULL_EXPIRES * NS)}).encode(),
                    f"{self._inbox}.{token}",
                )
            except nats.errors.Error:
                return  # not connected: the next fetch asks again
            self._requests[token] = part
            part.request, part.outstanding, part.request_seen = token, batch, now

    async def needs_reset(self, part: Partition) -> bool:
        """Whether a partition marked for repair really missed records."""
        nc = self._nc
        if part.trouble == "gap":
            msg = await nc.request(
                f"$JS.API.DIRECT.GET.{part.stream}",
                json.dumps({"seq": part.gap_at + 1, "next_by_subj": subject(*part.tp)}).encode(),
                timeout=5,
            )
            found = int((msg.headers or {}).get("Nats-Sequence", 0))
            return bool(found) and found - 1 < part.gap_to  # else deleted (retention): fine
        if part.trouble == "check":
            try:
                info = await api(nc, f"CONSUMER.INFO.{part.stream}.{part.consumer}")
            except JetStreamError as exc:
                if exc.code == 404:
                    return True
                raise
            return int(info["delivered"]["stream_seq"]) > part.expected
        return True

    # -- handing out and settling -----------------------------------------------------

    def take(self, max_records: int) -> list[Delivery]:
        if not self.parts:
            return []
        now = time.monotonic()
        ledger = self.ledger
        parts = list(self.parts.values())
        start = self._rotation % len(parts)
        self._rotation += 1  # so that one busy partition cannot starve the others
        out: list[Delivery] = []
        for part in parts[start:] + parts[:start]:
            if len(out) >= max_records:
                break
            if not part.buffer or part.trouble or not ledger.ready(part.tp, now):
                continue
            buffer = part.buffer
            batch = [buffer.popleft() for _ in range(min(len(buffer), max_records - len(out)))]
            records, replies = zip(*batch, strict=True)
            part.replies.extend(replies)
            out += ledger.issue_partition(part.tp, records)
        return out

    def next_resume(self) -> float | None:
        """When the earliest paused partition with records may be read again."""
        return self.ledger.next_resume({tp for tp, part in self.parts.items() if part.buffer})

    async def ack(self, part: Partition, delivery: Delivery) -> None:
        settled = self.ledger.ack(delivery)
        if not settled:
            return  # a nack rewound past it: it comes again
        replies = part.replies
        while settled > 1:  # cumulative: the last reply acks them all
            replies.popleft()
            settled -= 1
        part.last_ack = reply = replies.popleft()
        try:
            await self._nc.publish(reply, b"")
        except nats.errors.Error as exc:  # delivered again later: at-least-once
            log.warning("%s: ack of %s[%d]@%d not sent: %s", self._url, *part.tp,
                        delivery.record.offset, exc)  # fmt: skip

    def nack(self, part: Partition, delivery: Delivery, delay: float) -> None:
        settled = self.ledger.nack(delivery, delay)
        replies = [part.replies.pop() for _ in settled]  # newest first
        # extendleft reverses: newest first in, oldest ends up at the front.
        part.buffer.extendleft(zip((d.record for d in reversed(settled)), replies, strict=True))

    async def confirm(self, part: Partition) -> None:
        """Wait until the server has applied our last ack of ``part``."""
        reply, part.last_ack = part.last_ack, None
        if reply:
            with contextlib.suppress(*NATS_ERRORS):
                await self._nc.request(reply, b"", timeout=2)

    async def confirm_all(self) -> None:
        for part in list(self.parts.values()):
            await self.confirm(part)
