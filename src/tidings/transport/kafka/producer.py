"""Publishing to Kafka: one librdkafka Producer and one thread serving its delivery reports.

``Producer.produce`` only appends to librdkafka's queue, so it runs on the event loop;
librdkafka batches, sends, retries (through a broker restart, for ``delivery_timeout_ms``)
and reports each record's fate to a callback that ``poll`` runs, on a thread of ours.
The reports of one ``publish`` count down one asyncio future, settled by the last.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Sequence

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from tidings.records import OutgoingRecord
from tidings.transport.errors import BrokerUnavailable, RecordTooLarge
from tidings.transport.kafka.config import (
    FRAMING_BYTES,
    KafkaSettings,
    KafkaTransportError,
    describe,
    kafka_error,
    log,
    not_authorized,
)


class _Batch:
    """Delivery reports of one publish, settled once, on the loop, by the last report."""

    __slots__ = ("_lock", "error", "error_topic", "future", "loop", "remaining")

    def __init__(self, loop: asyncio.AbstractEventLoop, count: int) -> None:
        self.loop = loop
        self.future: asyncio.Future[None] = loop.create_future()
        self.remaining = count
        self.error: KafkaError | None = None
        self.error_topic = ""
        self._lock = threading.Lock()

    def report(self, error: KafkaError | None, message: Message) -> None:
        # On the poll thread (or wherever librdkafka serves callbacks): count under a lock.
        with self._lock:
            if error is not None and self.error is None:
                self.error = error
                self.error_topic = message.topic() or ""
            self.remaining -= 1
            last = self.remaining == 0
        if last:
            self.loop.call_soon_threadsafe(self._settle)

    def cancel_rest(self, unproduced: int) -> None:
        """``unproduced`` records never reached librdkafka: no report will come for them."""
        with self._lock:
            self.remaining -= unproduced
            last = self.remaining <= 0
        if last:
            self._settle()

    def _settle(self) -> None:
        if not self.future.done():
            self.future.set_result(None)


class KafkaPublisher:
    """The transport's producer; replaced by a new one after a fatal error."""

    def __init__(
        self,
        settings: KafkaSettings,
        message_max_bytes: int,
        on_error: Callable[[KafkaError], None],
    ) -> None:
        self.settings = settings
        self.message_max_bytes = message_max_bytes
        self._on_error = on_error
        self._producer: Producer | None = None
        self._poller: threading.Thread | None = None
        self._stop = threading.Event()
        self._failed: str | None = None

    def start(self) -> None:
        self._producer = Producer(self.settings.producer(self._error, self.message_max_bytes))
        self._failed = None
        self._stop = threading.Event()
        self._poller = threading.Thread(
            target=_serve_reports, args=(self._producer, self._stop),
            name="tidings-kafka-producer", daemon=True,
        )  # fmt: skip
        self._poller.start()

    async def stop(self, flush_timeout: float) -> None:
        producer, self._producer = self._producer, None
        loop = asyncio.get_running_loop()
        if producer is not None:
            left = await loop.run_in_executor(None, producer.flush, flush_timeout)
            if left:
                log.warning("%s: producer closed with %d records undelivered",
                            self.settings.url, left)  # fmt: skip
        self._stop.set()
        if self._poller is not None:
            await loop.run_in_executor(None, self._poller.join)
            self._poller = None

    def _error(self, error: KafkaError) -> None:
        if error.fatal():
            # The idempotent producer cannot go on (librdkafka bumps the epoch where it
            # can; this is what is left): the next publish starts a new producer.
            self._failed = error.str()
            log.error("%s: fatal producer error: %s", self.settings.url, error.str())
            return
        self._on_error(error)

    async def publish(self, records: Sequence[OutgoingRecord], max_record_bytes: int) -> None:
        """Produce every record; return when all are acknowledged, or raise (all-or-raise)."""
        limit = max_record_bytes + FRAMING_BYTES // 2  # room for the key and UTF-8 headers
        for record in records:
            if len(record.value) > limit - 1024 and _encoded_size(record) > limit:
                raise RecordTooLarge(f"record for topic {record.topic!r} is"
                                     f" {_encoded_size(record)} bytes with key and headers;"
                                     f" this broker accepts at most {limit}")  # fmt: skip
        if self._failed is not None and self._producer is not None:
            await self.stop(flush_timeout=0)
            self.start()
        producer = self._producer
        if producer is None:
            raise KafkaTransportError(f"{self.settings.url}: not connected (call connect())")
        batch = _Batch(asyncio.get_running_loop(), len(records))
        report = batch.report
        produced = 0
        try:
            for record in records:
                headers = record.headers
                while True:
                    try:
                        producer.produce(
                            record.topic, record.value, record.key,
                            headers=(headers if type(headers) is dict else dict(headers))
                            if headers else None,
                            on_delivery=report,
                        )  # fmt: skip
                        break
                    except BufferError:  # librdkafka's queue is full: let it drain
                        await asyncio.sleep(0.005)
                produced += 1
        except KafkaException as exc:
            batch.cancel_rest(len(records) - produced)
            await batch.future
            raise self._failure(kafka_error(exc), describe(exc)) from None
        await batch.future
        if batch.error is not None:
            raise self._failure(batch.error, batch.error.str(), batch.error_topic)

    def _failure(self, error: KafkaError | None, text: str, topic: str = "") -> Exception:
        code = error.code() if error is not None else None
        if code == KafkaError.TOPIC_AUTHORIZATION_FAILED:
            return not_authorized(
                self.settings.url, self.settings.username, "WRITE", "topic", topic
            )
        if code == KafkaError.MSG_SIZE_TOO_LARGE:
            return RecordTooLarge(f"{self.settings.url}: {text}")
        if code == KafkaError._MSG_TIMED_OUT:
            return BrokerUnavailable(
                f"{self.settings.url}: not delivered within delivery_timeout_ms="
                f"{self.settings.delivery_timeout_ms} ({text}); is the broker running?"
            )
        return KafkaTransportError(f"{self.settings.url}: publish failed: {text}")


def _serve_reports(producer: Producer, stop: threading.Event) -> None:
    while not stop.is_set():
        producer.poll(0.1)


def _encoded_size(record: OutgoingRecord) -> int:
    return (
        len(record.value)
        + len((record.key or "").encode())
        + sum(len(k.encode()) + len(v.encode()) + 2 for k, v in record.headers.items())
    )
