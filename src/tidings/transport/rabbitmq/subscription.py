"""One member of a consumer group on RabbitMQ: a channel per queue, a single active consumer.

The rules (the contract's, in RabbitMQ's terms):

* The member consumes **every** queue of its group (one per topic and partition, see
  :mod:`.wire`), each on its own channel with ``prefetch`` unacked messages at most.
  RabbitMQ makes one consumer of a queue the active one and keeps the others waiting;
  when the active one's channel closes (its process died, it left, it gave the queue
  up), the oldest waiting one takes over and gets the unacked messages again, first.
* A queue is in :meth:`~RabbitMQSubscription.assignment` once this member is known to
  be its active consumer: a message came, or the management API lists the member's
  consumer tag as ``single_active``. It stays so until the member gives it up.
* **Sharing**: every ``sync_interval`` seconds, inside ``fetch`` (assignment changes only
  there), the member counts the members of each topic (distinct member ids among the
  consumer tags) and gives up the queues it holds beyond ``ceil(partitions / members)``,
  choosing ones with nothing handed out: it closes that channel (the unacked messages
  return to the queue, in order) and consumes again, now waiting behind the others.
* **Ack** is cumulative: the ledger settles the delivery and all before it, and one
  ``basic.ack(multiple=True)`` on the queue's channel acks them at the broker.
* **Nack** never goes to the broker: the ledger rewinds, the records go back to the
  front of the member's buffer (still unacked at the broker, so a crash loses nothing)
  and the partition waits out the delay. A broker-side requeue would let the records
  after the nacked one overtake it, and RabbitMQ 3.10 has no delayed requeue.
* **A lost connection** voids what the member held (:meth:`connection_lost`); the
  transport's robust connection consumes again once RabbitMQ is back.
* ``Record.offset`` numbers the messages this member received from a queue (there are no
  log positions on a queue); a message received again after a takeover gets a new one.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import itertools
import math
import time
from collections.abc import Awaitable, Callable, Sequence

import aio_pika
import aio_pika.abc

from tidings.records import Record
from tidings.transport.contract import Delivery, Subscription
from tidings.transport.ledger import TP, DeliveryLedger, check_held
from tidings.transport.loop import fetch_loop
from tidings.transport.rabbitmq.management import Consumers
from tidings.transport.rabbitmq.wire import record as to_record

__all__ = ["RabbitMQSubscription"]


@dataclasses.dataclass(eq=False)
class _Queue:
    """This member's view of one queue of its group."""

    tp: TP
    name: str
    channel: aio_pika.abc.AbstractChannel | None = None
    tag: str = ""
    active: bool = False
    next_offset: int = 0
    buffer: collections.deque[Record] = dataclasses.field(default_factory=collections.deque)
    messages: dict[int, aio_pika.abc.AbstractIncomingMessage] = dataclasses.field(
        default_factory=dict
    )
    handed: set[int] = dataclasses.field(default_factory=set)  # handed out, not acked


class RabbitMQSubscription(Subscription):
    """See the module rules. Made by :meth:`RabbitMQTransport.subscribe`."""

    def __init__(
        self,
        *,
        url: str,
        group: str,
        topics: Sequence[str],
        member: str,
        connection: aio_pika.abc.AbstractConnection,
        queues: dict[TP, str],
        prefetch: int,
        sync_interval: float,
        consumers: Callable[[], Awaitable[Consumers]],
        on_close: Callable[[RabbitMQSubscription], None],
    ) -> None:
        self.url = url
        self.group = group
        self.topics = tuple(topics)
        self.member = member
        self._connection = connection
        self._queues = {tp: _Queue(tp, name) for tp, name in sorted(queues.items())}
        self._prefetch = prefetch
        self._sync_interval = sync_interval
        self._consumers = consumers
        self._on_close = on_close
        self._ledger = DeliveryLedger(self)
        self._wake = asyncio.Event()
        self._closed = False
        self._next_sync = 0.0
        self._generation = itertools.count()

    async def start(self) -> None:
        for queue in self._queues.values():
            await self._consume(queue)

    async def _consume(self, queue: _Queue) -> None:
        """Register (again) as a consumer of ``queue``, on a fresh channel."""
        channel = await self._connection.channel(publisher_confirms=False)
        await channel.set_qos(prefetch_count=self._prefetch)
        # Declared (passively) so that the robust channel consumes it again on reconnect.
        amqp_queue = await channel.declare_queue(queue.name, passive=True)
        queue.channel = channel
        queue.tag = f"{self.member}/{next(self._generation)}"

        async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            if queue.channel is not channel:  # a channel given up meanwhile
                return
            offset = queue.next_offset
            queue.next_offset += 1
            queue.messages[offset] = message
            queue.buffer.append(to_record(queue.tp[0], queue.tp[1], offset, message))
            queue.active = True
            self._wake.set()

        await amqp_queue.consume(on_message, consumer_tag=queue.tag)

    def connection_lost(self) -> None:
        """The connection dropped: what this member held is void. The broker returned its
        unacked messages to their queues; the robust connection consumes again once it
        is back, and a queue is this member's again when a message comes or the
        management API says so. Acks of what was handed out before raise NotAssigned."""
        for queue in self._queues.values():
            queue.active = False
            queue.buffer.clear()
            queue.messages.clear()
            queue.handed.clear()
        self._ledger.forget(list(self._queues))
        self._next_sync = 0.0
        self._wake.set()

    # -- fetching -----------------------------------------------------------------------

    async def fetch(self, max_records: int = 100, timeout: float = 0.5) -> list[Delivery]:
        if self._closed:
            return []
        if time.monotonic() >= self._next_sync:
            await self._sync()
        return await fetch_loop(timeout, self._wake, lambda: self._look(max_records), self._idle)

    async def _look(self, max_records: int) -> list[Delivery]:
        out: list[Delivery] = []
        now = time.monotonic()
        for queue in self._queues.values():
            if len(out) >= max_records:
                break
            if not queue.buffer or not self._ledger.ready(queue.tp, now):
                continue
            take = min(len(queue.buffer), max_records - len(out))
            records = [queue.buffer.popleft() for _ in range(take)]
            queue.handed.update(r.offset for r in records)
            out += self._ledger.issue_partition(queue.tp, records)
        return out

    def _idle(self, now: float) -> float:
        resume = self._ledger.next_resume(self._queues.keys())
        nap = self._next_sync - now
        return min(nap, resume - now) if resume is not None else nap

    async def _sync(self) -> None:
        """Learn which queues this member is active on; give up those beyond its share."""
        self._next_sync = time.monotonic() + self._sync_interval
        found = await self._consumers()
        mine = {q.name: q for q in self._queues.values()}
        for name, tag in found.active.items():
            queue = mine.get(name)
            if queue is not None and tag == queue.tag:
                queue.active = True
        for topic in self.topics:
            queues = [q for q in self._queues.values() if q.tp[0] == topic]
            members = {t.split("/")[0] for q in queues for t in found.tags.get(q.name, ())}
            members.add(self.member)
            share = math.ceil(len(queues) / len(members))
            held = [q for q in queues if q.active]
            spare = [q for q in reversed(held) if not q.handed]
            for queue in spare[: max(0, len(held) - share)]:
                await self._give_up(queue)

    async def _give_up(self, queue: _Queue) -> None:
        """Stop being ``queue``'s active consumer and wait behind the others."""
        channel, queue.channel = queue.channel, None
        queue.active = False
        queue.buffer.clear()
        queue.messages.clear()
        self._ledger.forget([queue.tp])
        if channel is not None:
            with contextlib.suppress(aio_pika.exceptions.AMQPError, OSError):
                await channel.close()  # the unacked messages go back to the queue
        await self._consume(queue)

    # -- settling -----------------------------------------------------------------------

    def _held(self, delivery: Delivery) -> _Queue:
        tp = check_held(self.url, self.group, delivery, self.assignment(), self._closed)
        return self._queues[tp]

    async def ack(self, delivery: Delivery) -> None:
        queue = self._held(delivery)
        if not self._ledger.ack(delivery):
            return
        offset = delivery.record.offset
        message = queue.messages[offset]
        for done in [o for o in queue.messages if o <= offset]:
            del queue.messages[done]
            queue.handed.discard(done)
        await message.ack(multiple=True)

    async def nack(self, delivery: Delivery, delay: float = 0.0) -> None:
        queue = self._held(delivery)
        settled = self._ledger.nack(delivery, delay)
        for again in reversed(settled):
            queue.handed.discard(again.record.offset)
            queue.buffer.appendleft(again.record)
        if settled:
            self._wake.set()

    def assignment(self) -> frozenset[TP]:
        if self._closed:
            return frozenset()
        return frozenset(tp for tp, queue in self._queues.items() if queue.active)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._on_close(self)
        for queue in self._queues.values():
            channel, queue.channel = queue.channel, None
            if channel is not None and not channel.is_closed:
                with contextlib.suppress(aio_pika.exceptions.AMQPError, OSError):
                    await channel.close()  # unacked messages go back to their queues
