"""A Kafka consumer group member behind :class:`~tidings.transport.contract.Subscription`.

**One thread per member.** librdkafka calls block, so each member owns a single worker
thread that makes every call on its consumer, one at a time. librdkafka heartbeats from
its own threads, so a member stays in the group while a handler runs, for up to
``max_poll_interval_ms`` between two fetches.

**Assignment changes only inside fetch().** librdkafka runs rebalance callbacks only
from ``poll``/``consume``, which only ``fetch`` calls (and ``close``). The callbacks run
on the worker thread while the event loop awaits that fetch; a lock guards the state the
loop's ``ack``/``nack`` also touch, should a caller settle deliveries during a fetch.

**Ack** records ``offset + 1`` as the partition's next commit. The acks of all partitions
go to the broker in one request at the start of the next ``fetch``, asynchronously
(its answer is read during that fetch's consume: Kafka's commitAsync-in-the-loop), and
synchronously before a partition is revoked (in the rebalance callback), on ``close``,
and when :meth:`KafkaTransport.committed` asks. A caller that fetches, handles and acks
a batch therefore commits once per batch, as a hand-written Kafka consumer would, and a
crash between ack and commit redelivers (at-least-once, as the contract allows).

**Nack** forgets the deliveries at and after the record, then, before the next consume,
pauses the partition until the delay has passed and seeks it back to the record;
librdkafka drops what it had prefetched from there.

**from_beginning=False** pins "the end" when ``subscribe`` is called, not when the group
first gets a partition: a gained partition that the group never committed starts at
the end offset read at subscribe time, and that offset is committed at once.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

from tidings.transport.contract import Delivery, Subscription
from tidings.transport.errors import TransportError
from tidings.transport.kafka.config import (
    AUTHORIZATION_ERRORS,
    describe,
    log,
    not_authorized,
    to_record,
)
from tidings.transport.ledger import TP, DeliveryLedger, check_held


class KafkaSubscription(Subscription):
    """One member of a Kafka consumer group; see the module docstring."""

    def __init__(
        self,
        url: str,
        group: str,
        topics: Sequence[str],
        config: dict[str, Any],
        pinned: Mapping[TP, int] | None,
        on_close: Callable[[KafkaSubscription], None],
    ) -> None:
        self.url = url
        self.group = group
        self.topics = tuple(topics)
        # Commit results (of the asynchronous commits fetch sends) come back through this
        # callback, which librdkafka runs inside poll/consume, on the worker thread.
        self._config = {**config, "on_commit": self._on_commit}
        # Incremental rebalances (cooperative-sticky, asked for with
        # ?rdkafka.partition.assignment.strategy=cooperative-sticky) or eager ones
        # (roundrobin, the default): which assign and unassign calls librdkafka accepts.
        strategy = str(config.get("partition.assignment.strategy", ""))
        self._cooperative = "cooperative" in strategy
        self._pinned = dict(pinned or {})
        self._on_close = on_close
        self._consumer: Consumer | None = None
        self._worker = ThreadPoolExecutor(1, thread_name_prefix=f"tidings-kafka-{group}")
        self._lock = threading.Lock()
        self._assigned: frozenset[TP] = frozenset()
        self._ledger = DeliveryLedger(self)  # what was handed out and not settled yet
        self._acked: dict[TP, int] = {}  # next offset to commit, not committed yet
        self._rewinds: dict[TP, int] = {}  # nacks to apply before the next consume
        self._paused: set[TP] = set()  # paused in librdkafka (worker thread only)
        self._commit_sent = 0.0  # monotonic time of the asynchronous commit in flight, or 0
        self._poll: asyncio.Future[list[Message]] | None = None
        self._closed = False

    # -- lifecycle (event loop) ---------------------------------------------------------

    async def start(self) -> None:
        await self._run(self._start)

    def _start(self) -> None:
        self._consumer = Consumer(self._config)
        self._consumer.subscribe(
            list(self.topics),
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
            on_lost=self._on_lost,
        )

    async def _run(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._worker, fn, *args)

    def assignment(self) -> frozenset[TP]:
        return self._assigned

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._on_close(self)
        try:
            await self._run(self._close)
        finally:
            with self._lock:
                self._forget(self._assigned)
                self._assigned = frozenset()
            self._worker.shutdown(wait=False)

    def _close(self) -> None:
        if self._consumer is None:
            return
        self._commit_acked()
        try:
            self._consumer.close()  # leaves the group; runs _on_revoke first
        except (KafkaException, RuntimeError) as exc:
            log.warning("%s: closing the member of %r: %s", self.url, self.group, describe(exc))

    async def flush(self) -> None:
        """Commit what was acked and not yet committed."""
        if not self._closed and self._acked:
            await self._run(self._commit_acked)

    # -- fetching -------------------------------------------------------------------------

    async def fetch(
        self,
        max_records: int = 100,
        timeout: float = 0.5,
    ) -> list[Delivery]:
        if self._closed:
            raise TransportError(f"{self.url}: fetch on a closed subscription of {self.group!r}")
        if self._poll is None:
            self._poll = asyncio.get_running_loop().run_in_executor(
                self._worker, self._consume, max(1, max_records), max(0.0, timeout)
            )
        poll = self._poll
        try:
            # Shielded: messages librdkafka already handed over must not be lost when the
            # caller cancels; the next fetch returns them.
            messages = await asyncio.shield(poll)
        finally:
            if poll.done():
                self._poll = None
        return self._deliver(messages)

    def _consume(self, max_records: int, timeout: float) -> list[Message]:
        consumer = self._require()
        self._commit_acked(wait=False)
        self._apply_rewinds(consumer)
        deadline = time.monotonic() + timeout
        while True:
            wait = self._resume_due(consumer, deadline)
            try:
                messages = consumer.consume(max_records, 0)
                if not messages and wait > 0:
                    # poll returns as soon as one message is there (consume would wait for
                    # max_records); then take what else is already prefetched.
                    first = consumer.poll(wait)
                    if first is not None:
                        messages = [first]
                        if max_records > 1:
                            messages += consumer.consume(max_records - 1, 0)
            except (KafkaException, RuntimeError) as exc:
                raise TransportError(f"{self.url}: consuming for {self.group!r} failed: "
                                     f"{describe(exc)}") from None  # fmt: skip
            good = [m for m in messages if m.error() is None]
            if len(good) != len(messages):
                for message in messages:
                    error = message.error()
                    if error is not None and error.code() in AUTHORIZATION_ERRORS:
                        # Waiting does not grant an ACL: one clear line, not a warning per fetch.
                        kind = AUTHORIZATION_ERRORS[error.code()]
                        name = self.group if kind == "group" else message.topic() or "?"
                        raise not_authorized(
                            self.url, self._config.get("sasl.username"), "READ", kind, name
                        )
                    if error is not None:
                        log.warning("%s: group %r: %s", self.url, self.group, error.str())
            if good or time.monotonic() >= deadline:
                return good

    def _resume_due(self, consumer: Consumer, deadline: float) -> float:
        """Resume partitions whose nack delay passed; how long the next wait may be."""
        now = time.monotonic()
        wait = deadline - now
        if not self._paused:
            return wait
        with self._lock:
            due = [tp for tp in self._paused if self._ledger.ready(tp, now)]
            later = [self._ledger.paused_until(tp) for tp in self._paused if tp not in due]
        if due:
            self._paused.difference_update(due)
            consumer.resume([TopicPartition(t, p) for t, p in due])
        return min([wait, *(t - now for t in later)])

    def _apply_rewinds(self, consumer: Consumer) -> None:
        with self._lock:
            if not self._rewinds:
                return
            rewinds, self._rewinds = self._rewinds, {}
            now = time.monotonic()
            pause = [tp for tp in rewinds if not self._ledger.ready(tp, now)]
            resume = [tp for tp in rewinds if tp in self._paused and tp not in pause]
        if pause:
            consumer.pause([TopicPartition(t, p) for t, p in pause])
            self._paused.update(pause)
        if resume:
            consumer.resume([TopicPartition(t, p) for t, p in resume])
            self._paused.difference_update(resume)
        for (topic, part), offset in rewinds.items():
            try:
                consumer.seek(TopicPartition(topic, part, offset))
            except KafkaException as exc:
                log.warning("%s: seek %s[%d] to %d: %s", self.url, topic, part, offset,
                            describe(exc))  # fmt: skip

    def _deliver(self, messages: list[Message]) -> list[Delivery]:
        with self._lock:
            return self._ledger.issue(map(to_record, messages), self._assigned)

    # -- settling (event loop) -------------------------------------------------------------

    async def ack(self, delivery: Delivery) -> None:
        with self._lock:
            tp = check_held(self.url, self.group, delivery, self._assigned, self._closed)
            if self._ledger.ack(delivery):
                self._acked[tp] = delivery.record.offset + 1

    async def nack(self, delivery: Delivery, delay: float = 0.0) -> None:
        with self._lock:
            tp = check_held(self.url, self.group, delivery, self._assigned, self._closed)
            if self._ledger.nack(delivery, delay):
                self._rewinds[tp] = delivery.record.offset

    # -- commits and rebalances (worker thread) ------------------------------------------

    def _require(self) -> Consumer:
        if self._consumer is None:
            raise TransportError(f"{self.url}: the member of {self.group!r} is not started")
        return self._consumer

    def _commit_acked(self, only: frozenset[TP] | None = None, *, wait: bool = True) -> None:
        """Commit what was acked (of the ``only`` partitions), and, if ``wait``, wait for the
        broker's answer. fetch does not wait (Kafka's commitAsync-in-the-loop pattern):
        the answer comes to :meth:`_on_commit` during the next consume."""
        with self._lock:
            offsets = {tp: o for tp, o in self._acked.items() if only is None or tp in only}
        if not offsets:
            return
        consumer = self._require()
        request = [TopicPartition(t, p, o) for (t, p), o in offsets.items()]
        if not wait:
            if self._commit_sent and time.monotonic() - self._commit_sent < 30.0:
                return  # one in flight at a time (during an outage they would pile up)
            try:
                consumer.commit(offsets=request, asynchronous=True)
                self._commit_sent = time.monotonic()
            except KafkaException as exc:
                log.warning("%s: commit for group %r not sent: %s", self.url, self.group,
                            describe(exc))  # fmt: skip
            return
        try:
            results = consumer.commit(offsets=request, asynchronous=False)
        except KafkaException as exc:
            # Kept for the next try; if the partition moves meanwhile, its records since
            # the last commit are delivered again to the new owner (at-least-once).
            log.warning("%s: commit for group %r failed: %s", self.url, self.group,
                        describe(exc))  # fmt: skip
            return
        self._committed(results)

    def _on_commit(self, error: KafkaError | None, results: list[TopicPartition]) -> None:
        self._commit_sent = 0.0
        if error is not None and error.code() != KafkaError._NO_OFFSET:
            log.warning("%s: commit for group %r failed: %s", self.url, self.group, error.str())
            return
        self._committed(results)

    def _committed(self, results: list[TopicPartition]) -> None:
        """Forget the acks the broker now holds (unless acked further meanwhile)."""
        with self._lock:
            for result in results:
                tp = (result.topic, result.partition)
                if result.error is not None:
                    log.warning("%s: commit %s[%d] for group %r failed: %s", self.url,
                                result.topic, result.partition, self.group,
                                result.error)  # fmt: skip
                elif self._acked.get(tp) == result.offset:
                    del self._acked[tp]

    def _forget(self, tps: frozenset[TP] | set[TP]) -> None:
        """Drop the local state of partitions; the caller holds the lock."""
        self._ledger.forget(tps)
        for tp in tps:
            for state in (self._acked, self._rewinds):
                state.pop(tp, None)
            self._paused.discard(tp)

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        try:
            pin = self._pin(consumer, partitions)
        except KafkaException as exc:  # the group starts there by auto.offset.reset instead
            log.warning("%s: group %r: could not pin the end offsets: %s", self.url,
                        self.group, describe(exc))  # fmt: skip
            pin = []
        if self._cooperative:
            consumer.incremental_assign(partitions)
        else:  # eager: what is given is the whole assignment
            consumer.assign(partitions)
        with self._lock:
            gained = {(tp.topic, tp.partition) for tp in partitions}
            self._forget(gained)
            self._assigned = self._assigned | gained
        if pin:
            try:
                consumer.commit(offsets=pin, asynchronous=False)
            except KafkaException as exc:
                log.warning("%s: group %r: could not commit the pinned end offsets: %s",
                            self.url, self.group, describe(exc))  # fmt: skip

    def _pin(self, consumer: Consumer, partitions: list[TopicPartition]) -> list[TopicPartition]:
        """Point never-committed partitions at the end pinned by subscribe (in place)."""
        wanted = [tp for tp in partitions if (tp.topic, tp.partition) in self._pinned]
        if not wanted:
            return []
        committed = consumer.committed(
            [TopicPartition(tp.topic, tp.partition) for tp in wanted], timeout=10
        )
        fresh = {(c.topic, c.partition) for c in committed if c.offset < 0}
        pin = []
        for tp in wanted:
            key = (tp.topic, tp.partition)
            if key in fresh:
                tp.offset = self._pinned[key]
                pin.append(TopicPartition(tp.topic, tp.partition, tp.offset))
            self._pinned.pop(key, None)  # pinned once: later the group's commits rule
        return pin

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        revoked = frozenset((tp.topic, tp.partition) for tp in partitions)
        self._commit_acked(revoked)  # what was acked goes with the partition
        self._drop(consumer, partitions, revoked)

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # Already someone else's: a commit would be refused (the records are redelivered).
        revoked = frozenset((tp.topic, tp.partition) for tp in partitions)
        log.warning("%s: group %r: lost %s (missed the session timeout)", self.url,
                    self.group, sorted(revoked))  # fmt: skip
        self._drop(consumer, partitions, revoked)

    def _drop(
        self, consumer: Consumer, partitions: list[TopicPartition], tps: frozenset[TP]
    ) -> None:
        with self._lock:
            self._forget(tps)
            self._assigned = self._assigned - tps
        try:
            if self._cooperative:
                consumer.incremental_unassign(partitions)
            else:  # eager: every partition is given up at once
                consumer.unassign()
        except KafkaException as exc:
            if (error := exc.args[0] if exc.args else None) and isinstance(error, KafkaError):
                log.debug("%s: unassign: %s", self.url, error.str())

