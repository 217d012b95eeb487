"""One member of a consumer group on SQS (both AWS transports): a receiver per queue,
visibility kept up.

The rules (the contract's, in SQS's terms):

* The member reads **every** partition of its topics: SQS assigns no partitions, it
  hands message groups (keys) to whichever member receives, and a FIFO queue never
  hands out a message of a group while an earlier one of that group is in flight (with
  a member, not deleted). So per-key order holds across members without an exclusive
  assignment; ``Capabilities.assignment`` is False and :meth:`assignment` names every
  partition. A partition is a number a record carries (see :mod:`.wire`): the runtime's
  per-partition batches, acks and nacks work on it as on any broker.
* A **receiver** task per queue calls ``ReceiveMessage`` (10 at a time) while the
  member holds fewer than ``prefetch`` messages of the queue, and buffers them per
  partition, in order. With ``wait`` > 0 it long-polls that many seconds; with
  ``wait=0`` it short-polls and naps after an empty answer, from 1 ms doubling up to
  ``poll_max`` seconds (:class:`~tidings.transport.loop.Backoff`), or until an ack
  deletes messages (which may free keys in flight). Short polling is the
  default because moto's long poll spins (holding its interpreter) while a FIFO queue's
  visible messages all belong to message groups in flight, which is the normal state of
  a busy group here, and starves every other request to the emulator.
* Held messages stay **invisible**: every third of the queue's visibility timeout, a
  keeper task extends the visibility of all of them (``ChangeMessageVisibilityBatch``).
  A member that dies stops extending, and its messages come back to the group once the
  visibility timeout ends: that is the takeover.
* **Ack** is cumulative: the ledger settles the delivery and all before it in its
  partition, and those messages are deleted (``DeleteMessageBatch``).
* **Nack** never goes to SQS: the ledger rewinds, the records go back to the front of
  the partition's buffer (still invisible, kept so by the keeper; a crash loses
  nothing) and the partition waits out the delay. Making the message visible again
  would let SQS hand it to another member after others of its partition.
* **Close** waits for the receivers' polls to end, then makes every held message
  visible again at once (visibility 0), so another member gets them without waiting.
* A message becomes a record through the transport's ``decode`` (SNS's attributes, or
  EventBridge's JSON body); one that does not decode is dropped with an error logged.
* ``Record.offset`` numbers the messages this member received in a partition (SQS has
  no positions); a message received again later gets a new one.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

import botocore.exceptions

from tidings.records import Record
from tidings.transport.contract import Delivery, Subscription
from tidings.transport.errors import BrokerUnavailable, TransportError
from tidings.transport.ledger import TP, DeliveryLedger, check_held
from tidings.transport.loop import Backoff, fetch_loop

__all__ = ["SQSSubscription"]

log = logging.getLogger(__name__)
AWS_ERRORS = (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError)


def _chunks(items: Sequence[Any], size: int = 10) -> list[Sequence[Any]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


class SQSSubscription(Subscription):
    """See the module rules. Made by :meth:`SnsSqsTransport.subscribe`."""

    def __init__(
        self,
        *,
        url: str,
        group: str,
        sqs: Any,
        queues: dict[str, str],
        partitions: dict[str, int],
        prefetch: int,
        wait: int,
        poll_max: float,
        visibility: int,
        decode: Callable[[str, dict[str, Any]], Record],
    ) -> None:
        self.url = url
        self.group = group
        self.topics = tuple(queues)
        self._sqs = sqs
        self._queues = queues  # topic -> queue URL
        self._partitions = partitions
        self._prefetch = prefetch
        self._wait = wait
        self._poll_max = poll_max
        self._visibility = visibility
        self._decode = decode
        self._ledger = DeliveryLedger(self)
        self._wake = asyncio.Event()
        self._room = asyncio.Event()
        self._deleted = asyncio.Event()
        self._closed = False
        self._buffers: dict[TP, collections.deque[Record]] = collections.defaultdict(
            collections.deque
        )
        self._receipts: dict[TP, dict[int, str]] = collections.defaultdict(dict)
        self._next_offset: dict[TP, int] = collections.defaultdict(int)
        self._error: Exception | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._keeper: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._receive(t)) for t in self._queues]
        self._keeper = asyncio.create_task(self._keep_invisible())

    def _held(self, topic: str) -> int:
        return sum(len(r) for (t, _), r in self._receipts.items() if t == topic)

    async def _receive(self, topic: str) -> None:
        queue = self._queues[topic]
        naps = Backoff(self._poll_max)
        while not self._closed:
            if self._held(topic) >= self._prefetch:
                self._room.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(1.0):
                        await self._room.wait()
                continue
            try:
                answer = await self._sqs.receive_message(
                    QueueUrl=queue, MaxNumberOfMessages=10, WaitTimeSeconds=self._wait,
                    MessageAttributeNames=["All"], MessageSystemAttributeNames=["SentTimestamp"],
                )  # fmt: skip
            except AWS_ERRORS as exc:
                self._error = exc
                log.warning("%s: receiving from %s failed: %r", self.url, queue, exc)
                await asyncio.sleep(1.0)
                continue
            messages = answer.get("Messages", ())
            for message in messages:
                self._take(topic, message)
            if messages:
                naps.reset()
            elif not self._wait:
                # Nothing visible, or every visible message is of a key in flight here:
                # poll again after a nap, or as soon as an ack frees a key.
                self._deleted.clear()
                try:
                    async with asyncio.timeout(naps.next()):
                        await self._deleted.wait()
                    naps.reset()
                except TimeoutError:
                    pass

    def _take(self, topic: str, message: dict[str, Any]) -> None:
        """Buffer one received message (a foreign one is dropped: no partition to put it)."""
        try:
            found = self._decode(topic, message)
        except (TransportError, ValueError, TypeError, KeyError) as exc:
            log.error("%s: dropping a message of %s: %s", self.url, topic, exc)
            return
        tp = (topic, found.partition)
        offset = self._next_offset[tp]
        self._next_offset[tp] = offset + 1
        self._receipts[tp][offset] = message["ReceiptHandle"]
        self._buffers[tp].append(
            Record(topic, found.partition, offset, found.key, found.value, found.headers,
                   found.timestamp)
        )  # fmt: skip
        self._wake.set()

    async def _keep_invisible(self) -> None:
        while not self._closed:
            await asyncio.sleep(self._visibility / 3)
            await self._set_visibility(self._visibility)

    async def _set_visibility(self, seconds: int) -> None:
        """Every held message invisible for ``seconds`` more (0: visible now)."""
        for topic, queue in self._queues.items():
            handles = [h for (t, _), held in self._receipts.items() if t == topic
                       for h in held.values()]  # fmt: skip
            for chunk in _chunks(handles):
                entries = [
                    {"Id": str(n), "ReceiptHandle": h, "VisibilityTimeout": seconds}
                    for n, h in enumerate(chunk)
                ]
                try:
                    await self._sqs.change_message_visibility_batch(QueueUrl=queue, Entries=entries)
                except AWS_ERRORS as exc:
                    log.warning("%s: keeping messages of %s invisible: %r", self.url, queue, exc)

    # -- fetching -----------------------------------------------------------------------

    async def fetch(self, max_records: int = 100, timeout: float = 0.5) -> list[Delivery]:
        if self._closed:
            return []
        error, self._error = self._error, None
        if error is not None:
            raise BrokerUnavailable(f"{self.url}: receiving for group {self.group!r}: {error!r}")
        return await fetch_loop(timeout, self._wake, lambda: self._look(max_records), self._idle)

    async def _look(self, max_records: int) -> list[Delivery]:
        out: list[Delivery] = []
        now = time.monotonic()
        for tp, buffer in self._buffers.items():
            if len(out) >= max_records:
                break
            if not buffer or not self._ledger.ready(tp, now):
                continue
            take = min(len(buffer), max_records - len(out))
            out += self._ledger.issue_partition(tp, [buffer.popleft() for _ in range(take)])
        return out

    def _idle(self, now: float) -> float:
        resume = self._ledger.next_resume(self._buffers.keys())
        return resume - now if resume is not None else 1.0

    # -- settling -----------------------------------------------------------------------

    async def ack(self, delivery: Delivery) -> None:
        tp = check_held(self.url, self.group, delivery, self.assignment(), self._closed)
        if not self._ledger.ack(delivery):
            return
        receipts = self._receipts[tp]
        done = [o for o in receipts if o <= delivery.record.offset]
        handles = [receipts.pop(o) for o in done]
        self._room.set()
        for chunk in _chunks(handles):
            entries = [{"Id": str(n), "ReceiptHandle": h} for n, h in enumerate(chunk)]
            try:
                answer = await self._sqs.delete_message_batch(
                    QueueUrl=self._queues[tp[0]], Entries=entries
                )
            except AWS_ERRORS as exc:
                raise BrokerUnavailable(f"{self.url}: deleting acked messages: {exc!r}") from None
            if answer.get("Failed"):
                # The message came back to the queue (its visibility ran out): it will be
                # delivered again, which at-least-once allows; say so.
                log.warning("%s: acked but not deleted: %s", self.url, answer["Failed"])
        self._deleted.set()

    async def nack(self, delivery: Delivery, delay: float = 0.0) -> None:
        tp = check_held(self.url, self.group, delivery, self.assignment(), self._closed)
        settled = self._ledger.nack(delivery, delay)
        for again in reversed(settled):
            self._buffers[tp].appendleft(again.record)
        if settled:
            self._wake.set()

    def assignment(self) -> frozenset[TP]:
        if self._closed:
            return frozenset()
        return frozenset((t, p) for t in self.topics for p in range(self._partitions[t]))

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._room.set()
        if self._keeper is not None:
            self._keeper.cancel()
        # Let the polls under way end (they may bring messages), then hand everything back.
        if self._tasks:
            _, pending = await asyncio.wait(self._tasks, timeout=self._wait + 5)
            for task in pending:
                task.cancel()
        await self._set_visibility(0)
        self._receipts.clear()
        self._buffers.clear()
