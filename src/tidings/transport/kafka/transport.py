"""Apache Kafka: ``kafka://host:port`` (see :mod:`.config` for the URL options).

Client: confluent-kafka 2.16 (librdkafka), not aiokafka 0.14. Measured by
``bench/kafka_client_choice.py --part clients`` on the single-node Kafka 4 broker of
``scripts/services`` (a 2-CPU VM that the broker shares), one topic of 3 partitions,
50 000 records of 1 KiB with CloudEvents headers, acks=all + idempotence, linger 5 ms,
sending all and then awaiting every delivery; consuming the whole topic in a new group;
medians of 3 rounds, in records/s:

                                              quiet machine      other suites running
    produce  aiokafka send() + gather          45 600 - 48 800         33 400
    produce  confluent Producer + poll thread  47 400 - 48 100         56 000  (x1.7)
    consume  aiokafka getmany(500)            129 400 - 144 100         81 800
    consume  confluent consume(500), thread   166 400 - 166 700        250 500  (x3.1)

Publishing is level (the broker is the limit); consuming is 15-30 % faster on librdkafka,
and far faster when CPUs are contended, because its protocol work runs in C threads
without the GIL instead of on the event loop, which in a service also runs handlers.
Fit with asyncio and the contract, which decided as much as the numbers:

* confluent's own asyncio producer (``confluent_kafka.aio.AIOProducer``) refuses headers
  in its batch mode, and CloudEvents binary mode is all headers; so the producer is the
  plain ``Producer``, whose ``produce`` only queues (it never blocks the loop), with one
  thread serving delivery reports that settles one asyncio future per published batch;
* librdkafka runs rebalance callbacks only inside ``poll``/``consume``, which only
  ``fetch`` calls: exactly the contract's "assignment changes only inside fetch()"
  (aiokafka rebalances in a background task, between fetches, so a member would have to
  hold revocations back itself); each member runs its librdkafka calls on one worker
  thread (:mod:`.subscription`) and heartbeats from librdkafka's own threads;
* librdkafka retries a publish through a broker restart for ``delivery_timeout_ms`` by
  itself, and has the Java partitioner (murmur2), so keys land where Kafka Connect and
  Java services put them;
* groups assign round robin over every (topic, partition), so each topic is spread over
  a service's processes (:mod:`.config`); ``?rdkafka.partition.assignment.strategy=
  cooperative-sticky`` trades that for incremental rebalances, and both work.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
import time
from collections.abc import AsyncIterator, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException

from tidings.records import OutgoingRecord, Record
from tidings.transport.contract import (
    PartitionRange,
    RecordFilter,
    TopicInfo,
    Transport,
)
from tidings.transport.errors import AuthenticationFailed, BrokerUnavailable
from tidings.transport.kafka.admin import KafkaAdmin
from tidings.transport.kafka.config import (
    FRAMING_BYTES,
    KafkaSettings,
    KafkaTransportError,
    describe,
    log,
    to_record,
)
from tidings.transport.kafka.producer import KafkaPublisher
from tidings.transport.kafka.reader import RangeReader, read_partition
from tidings.transport.kafka.subscription import KafkaSubscription

_REFUSED_MARK = "refused:"
_UNREACHABLE = (KafkaError._ALL_BROKERS_DOWN, KafkaError._TRANSPORT, KafkaError._RESOLVE)
# Refusals that waiting does not cure: reported at once (a wrong password otherwise shows
# only as librdkafka retrying until connect_timeout_ms, then as "no answer").
_REFUSED = (KafkaError._AUTHENTICATION, KafkaError._SSL, KafkaError.SASL_AUTHENTICATION_FAILED)


class KafkaTransport(Transport):
    """Kafka through librdkafka; see the module docstring and :mod:`.config`."""

    content_mode = "binary"

    def __init__(self, url: str) -> None:
        self.settings = KafkaSettings.from_url(url)
        self.url = url
        if self.settings.max_record_bytes is not None:
            self.max_record_bytes = self.settings.max_record_bytes
        self._admin: KafkaAdmin | None = None
        self._publisher: KafkaPublisher | None = None
        self._unreachable: asyncio.Future[str] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._error_lock = threading.Lock()
        self._last_error: tuple[str, float] = ("", 0.0)
        self._subscriptions: list[KafkaSubscription] = []
        # What read() uses, made on first use: a consumer without a group, and its thread.
        self._reader: tuple[Consumer, ThreadPoolExecutor] | None = None

    # -- connection -------------------------------------------------------------------

    async def connect(self) -> None:
        if self._publisher is not None:
            return
        timeout = self.settings.connect_timeout_ms / 1000
        await self._check_reachable(timeout)
        loop = self._loop = asyncio.get_running_loop()
        self._unreachable = loop.create_future()
        admin = KafkaAdmin(self.settings, self._on_error)
        probe = asyncio.ensure_future(admin.message_max_bytes(timeout))
        connecting = threading.Event()
        connecting.set()

        def serve_errors() -> None:  # the admin client's error callback runs in its poll()
            while connecting.is_set():
                admin.client.poll(0.05)

        poller = loop.run_in_executor(None, serve_errors)
        try:
            # The broker's first answer, or librdkafka giving up on it (the port is open,
            # but it does not speak Kafka, or TLS/SASL fail), within connect_timeout_ms.
            waiting: list[asyncio.Future[Any]] = [probe, self._unreachable]
            done, _ = await asyncio.wait(waiting, timeout=timeout,
                                         return_when=asyncio.FIRST_COMPLETED)  # fmt: skip
            if probe not in done or probe.exception() is not None:
                if self._unreachable.done():
                    reason = self._unreachable.result()
                    if reason.startswith(_REFUSED_MARK):
                        raise AuthenticationFailed(reason.removeprefix(_REFUSED_MARK))
                elif probe.done():
                    reason = describe(probe.exception() or Exception("?"))
                else:
                    reason = f"no answer within {timeout:g} s"
                raise BrokerUnavailable(self._unreachable_message(reason))
            message_max = probe.result()
        finally:
            probe.cancel()
            connecting.clear()
            await poller
            self._unreachable = None
        if self.settings.max_record_bytes is None:
            self.max_record_bytes = message_max - FRAMING_BYTES
        self._admin = admin
        self._publisher = KafkaPublisher(self.settings, message_max, self._on_error)
        self._publisher.start()

    def _unreachable_message(self, reason: str) -> str:
        return (
            f"{self.settings.url} is not reachable ({reason}); "
            "start it with: scripts/services up kafka"
        )

    async def _check_reachable(self, timeout: float) -> None:
        """Fail fast, with the reason, when no bootstrap broker accepts a TCP connection."""
        reasons = []
        for server in self.settings.bootstrap.split(","):
            host, _, port = server.strip().rpartition(":")
            host = host.strip("[]")
            try:
                async with asyncio.timeout(timeout):
                    _, writer = await asyncio.open_connection(host, int(port))
                writer.close()
                with contextlib.suppress(OSError):
                    await writer.wait_closed()
                return
            except TimeoutError:
                reasons.append(f"{server}: no answer within {timeout:g} s")
            except (OSError, ValueError) as exc:
                errno = getattr(exc, "errno", None)
                text = os.strerror(errno) if errno and errno > 0 else str(exc)
                reasons.append(f"{server}: {text}")
        raise BrokerUnavailable(self._unreachable_message("; ".join(reasons)))

    def _on_error(self, error: KafkaError) -> None:
        # librdkafka's error callback, on a client thread. While connecting, "all brokers
        # down" means unreachable; afterwards it is a state librdkafka rides out (it
        # reconnects, and publish retries for delivery_timeout_ms), so it is only logged.
        code = error.code()
        future, loop = self._unreachable, self._loop
        if future is not None and loop is not None:
            if code in _REFUSED:
                who = self.settings.username or "(no user)"
                text = f"{_REFUSED_MARK}{self.settings.url}: user {who} was refused: {error.str()}"
                if code != KafkaError._SSL:
                    text += " (check the password in password_env / password_file)"
                loop.call_soon_threadsafe(_resolve, future, text)
            elif code in _UNREACHABLE:
                reason = error.str()
                if code == KafkaError._TRANSPORT:  # "host:port/bootstrap: Connect to ..."
                    reason = reason.split(": ", 1)[-1].split(" (after ", 1)[0]
                loop.call_soon_threadsafe(_resolve, future, reason)
            return
        text, now = error.str(), time.monotonic()
        with self._error_lock:
            if self._last_error[0] == text and now - self._last_error[1] < 30.0:
                return  # the same error every 100 ms during an outage: once per 30 s
            self._last_error = (text, now)
        log.warning("%s: %s", self.settings.url, text)

    async def close(self) -> None:
        for sub in list(self._subscriptions):
            await sub.close()
        publisher, self._publisher = self._publisher, None
        if publisher is not None:
            await publisher.stop(flush_timeout=10.0)
        reader, self._reader = self._reader, None
        if reader is not None:
            consumer, thread = reader
            with contextlib.suppress(KafkaException, RuntimeError):
                await asyncio.get_running_loop().run_in_executor(thread, consumer.close)
            thread.shutdown(wait=False)
        self._admin = None

    @property
    def admin(self) -> KafkaAdmin:
        if self._admin is None:
            raise KafkaTransportError(f"{self.settings.url}: not connected (call connect())")
        return self._admin

    # -- topics and publishing --------------------------------------------------------

    async def create_topic(self, name: str, partitions: int | None = None) -> None:
        await self.admin.create_topics([name], partitions or self.settings.partitions)
        await self.admin.wait_visible([name])

    async def publish(self, records: Sequence[OutgoingRecord]) -> None:
        if not records:
            return
        self.check_size(records)
        if self._publisher is None:
            raise KafkaTransportError(f"{self.settings.url}: not connected (call connect())")
        # Topics are created on first use with the configured partitions (rather than by
        # the broker's auto.create.topics, with its own default).
        await self.admin.create_topics({r.topic for r in records}, self.settings.partitions)
        await self._publisher.publish(records, self.max_record_bytes)

    # -- consumer groups --------------------------------------------------------------

    async def subscribe(
        self, group: str, topics: Sequence[str], *, from_beginning: bool = True
    ) -> KafkaSubscription:
        await self.admin.create_topics(topics, self.settings.partitions)
        await self.admin.wait_visible(topics)
        pinned = None
        if not from_beginning:
            pinned = await self.admin.end_offsets(await self.admin.partition_counts(topics))
        sub = KafkaSubscription(
            self.settings.url, group, topics,
            self.settings.consumer(group, from_beginning, self._on_error),
            pinned, self._forget,
        )  # fmt: skip
        await sub.start()
        self._subscriptions.append(sub)
        return sub

    def _forget(self, sub: KafkaSubscription) -> None:
        if sub in self._subscriptions:
            self._subscriptions.remove(sub)

    # -- inspection and replay --------------------------------------------------------

    async def topics(self) -> list[TopicInfo]:
        counts = await self.admin.partition_counts()
        ends = await self.admin.end_offsets(counts)
        return [
            TopicInfo(name, count, {p: ends[(name, p)] for p in range(count)})
            for name, count in sorted(counts.items())
        ]

    async def end_offsets(self, topics: Iterable[str]) -> dict[tuple[str, int], int]:
        return await self.admin.end_offsets(await self.admin.partition_counts(topics))

    async def committed(self, group: str) -> dict[tuple[str, int], int]:
        for sub in list(self._subscriptions):
            if sub.group == group:
                await sub.flush()  # this process's members commit acks lazily
        return await self.admin.committed(group)

    async def groups(self) -> list[str]:
        return await self.admin.groups()

    async def read(self, topic: str, partition: int, offset: int, limit: int) -> list[Record]:
        if limit <= 0:
            return []
        if self._reader is None:
            thread = ThreadPoolExecutor(1, thread_name_prefix="tidings-kafka-read")
            self._reader = (Consumer(self.settings.reader(self._on_error)), thread)
        consumer, thread = self._reader
        messages = await asyncio.get_running_loop().run_in_executor(
            thread, read_partition, consumer, topic, partition, offset, limit,
            self.settings.connect_timeout_ms / 1000,
        )  # fmt: skip
        return [to_record(m) for m in messages]

    async def read_ranges(
        self, ranges: Sequence[PartitionRange], batch: int = 5000, keep: RecordFilter | None = None
    ) -> AsyncIterator[list[Record]]:
        # On a consumer of its own (read() between two batches must not unassign these),
        # taking the next batch on its thread while the caller handles this one.
        loop = asyncio.get_running_loop()
        thread = ThreadPoolExecutor(1, thread_name_prefix="tidings-kafka-ranges")
        consumer = Consumer(self.settings.reader(self._on_error))
        pending: asyncio.Future[list[Record]] | None = None
        try:
            reader = await loop.run_in_executor(
                thread, RangeReader, consumer, ranges, self.settings.connect_timeout_ms / 1000
            )
            if not reader.done:
                pending = loop.run_in_executor(thread, reader.take, batch, keep)
            while pending is not None:
                records = await pending
                pending = (
                    None if reader.done else loop.run_in_executor(thread, reader.take, batch, keep)
                )
                if records:
                    yield records
        finally:
            if pending is not None:
                with contextlib.suppress(Exception):
                    await pending
            with contextlib.suppress(KafkaException, RuntimeError):
                await loop.run_in_executor(thread, consumer.close)
            thread.shutdown(wait=False)

    async def offset_for_time(self, topic: str, partition: int, timestamp: float) -> int:
        return (await self.offsets_for_time([(topic, partition)], timestamp))[(topic, partition)]

    async def offsets_for_time(
        self, partitions: Iterable[tuple[str, int]], timestamp: float
    ) -> dict[tuple[str, int], int]:
        return await self.admin.offsets_for_time(list(partitions), timestamp)

    async def seek(self, group: str, topic: str, partition: int, offset: int) -> None:
        await self.admin.set_offset(group, topic, partition, offset)


def _resolve(future: asyncio.Future[str], text: str) -> None:
    if not future.done():
        future.set_result(text)
