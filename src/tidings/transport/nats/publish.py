"""Publishing to JetStream: placement, message ids, acknowledgements and retries.

A batch is published concurrently, each message with a reply subject of ours, and every
stream ack awaited. Each message carries ``Nats-Msg-Id`` (the CloudEvent id when the
record has one, else an id unique to this publish) so that a retry, ours or the outbox
relay's, is stored once within the stream's duplicate window (2 minutes). Keyless
records with an event id are placed by that id, so that a retried one meets its copy.

What the server did not acknowledge is sent again, in the original order, until
``publish_timeout``: after a disconnect (at once, not at a timeout), when no stream
answered (JetStream still starting), or when acks stopped coming for a second (a
restarting server accepts clients before its streams are back and drops what reaches
them meanwhile). Then :class:`BrokerUnavailable` is raised; part of the batch may be
stored, and publishing it again is safe.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import time
import uuid
from collections.abc import Sequence

import nats.errors
from nats.aio.client import Client
from nats.aio.msg import Msg

from tidings.records import OutgoingRecord
from tidings.transport.errors import (
    BrokerUnavailable,
    NotAuthorized,
    RecordTooLarge,
    TransportError,
)
from tidings.transport.nats.streams import Streams
from tidings.transport.nats.wire import (
    HOW_TO_START,
    NATS_ERRORS,
    api,
    encode_headers,
    encoded_size,
    subject,
)
from tidings.transport.placement import partition_for

Outgoing = tuple[str, str, bytes, dict[str, str]]  # topic, subject, value, headers
# The CloudEvents JSON format's media type (the codec's structured mode), spelled out
# here because transports sit below the codec.
_CLOUDEVENTS_JSON = "application/cloudevents+json"
_ACK_PROGRESS = 1.0  # seconds without any publish ack before the unacked are sent again


class Publisher:
    """Publishes on one connection, creating topics through ``streams``; see the module."""

    def __init__(self, nc: Client, streams: Streams, url: str, publish_timeout: float) -> None:
        self.nc = nc
        self._streams = streams
        self._url = url
        self._publish_timeout = publish_timeout
        self._spread: dict[str, int] = {}  # round-robin counters for keyless records
        self._acks: dict[str, asyncio.Future[Msg]] = {}
        self._sent_to: dict[str, str] = {}  # token -> subject, for a permission refusal
        self._ack_prefix = ""
        self._tokens = itertools.count()
        # Ids of records without an event id: unique to this process and publish, so
        # only the publish's own retries are deduplicated.
        self._ids = (f"{uuid.uuid4().hex[:16]}-{n}" for n in itertools.count())
        self._jetstream_up = asyncio.Event()  # cleared by a disconnect

    async def start(self) -> None:
        self._ack_prefix = f"{self.nc.new_inbox()}."
        await self.nc.subscribe(f"{self._ack_prefix}*", cb=self._on_publish_ack)
        self._jetstream_up.set()

    def connection_lost(self) -> None:
        """Publishes waiting for an ack are sent again once JetStream answers, rather
        than at the ack timeout; ``Nats-Msg-Id`` drops the copies that were stored.
        Called on reconnect too: what was buffered meanwhile may have been dropped."""
        self._jetstream_up.clear()
        for future in self._acks.values():
            if not future.done():
                future.set_exception(ConnectionError("connection lost"))

    async def publish(self, records: Sequence[OutgoingRecord]) -> None:
        """Send the records and wait until JetStream has stored every one of them."""
        messages: list[Outgoing] = []
        subjects: dict[tuple[str, int], str] = {}
        max_payload = self.nc.max_payload
        streams = self._streams
        try:
            for record in records:
                topic = record.topic
                count = streams.known_partitions(topic) or await streams.ensure_topic(topic)
                msg_id = _event_id(record)
                if record.key is not None:
                    part = partition_for(record.key, count)
                elif msg_id is not None:  # by id: a retried keyless event meets its copy
                    part = partition_for(msg_id, count)
                else:
                    part = self._spread[topic] = (self._spread.get(topic, -1) + 1) % count
                headers = encode_headers(record, msg_id or next(self._ids))
                if encoded_size(record.value, headers) > max_payload:
                    raise RecordTooLarge(
                        f"record for topic {topic!r} does not fit in one NATS message"
                        f" ({max_payload} bytes) with its key and headers"
                    )
                to = subjects.get((topic, part))
                if to is None:
                    to = subjects[(topic, part)] = subject(topic, part)
                messages.append((topic, to, record.value, headers))
        except NATS_ERRORS as exc:
            raise BrokerUnavailable(
                f"{self._url}: NATS failed while creating topics to publish to: {exc}"
            ) from None
        await self._publish_all(messages)

    async def _publish_all(self, messages: list[Outgoing]) -> None:
        deadline = time.monotonic() + self._publish_timeout
        pending = messages
        problem = ""
        recreate: set[str] = set()
        for attempt in itertools.count():
            await self._wait_connected(deadline, problem)
            for topic in recreate:  # no stream answered: it may have been deleted
                self._streams.forget_topic(topic)
                with contextlib.suppress(*NATS_ERRORS):
                    await self._streams.ensure_topic(topic)
            futures = await self._send(pending)
            waiting: set[asyncio.Future[Msg]] = {f for _, f in futures}
            while waiting:  # as long as acks keep coming: a big batch may take a while
                wait = min(_ACK_PROGRESS, deadline - time.monotonic())
                done, waiting = await asyncio.wait(waiting, timeout=max(wait, 0.0))
                if not done or time.monotonic() >= deadline:
                    break  # the rest were lost (a restarted server drops some silently)
            for token, _ in futures:  # forgotten before a refusal below is raised
                self._acks.pop(token, None)
                self._sent_to.pop(token, None)
            refusals = [
                f.exception() for _, f in futures if f.done() and not f.cancelled()
            ]  # reading each exception also keeps asyncio from warning of unread ones
            refused = next((e for e in refusals if isinstance(e, NotAuthorized)), None)
            if refused is not None:
                raise refused
            failed = []
            for i, message in enumerate(pending):
                if i < len(futures):
                    _, future = futures[i]
                    error = _ack_error(future)
                else:
                    error = "retry:not sent (connection lost)"
                if error is None:
                    continue
                if not error.startswith("retry:"):
                    raise TransportError(f"{self._url}: publish to {message[0]!r}: {error}")
                failed.append(message)
                problem = error[6:]
            if not failed:
                return
            if time.monotonic() >= deadline:
                raise BrokerUnavailable(
                    f"{self._url}: {len(failed)} of {len(messages)} records not acknowledged by"
                    f" NATS within {self._publish_timeout:g} s ({problem}); publishing the"
                    " batch again is safe (duplicates are dropped)"
                )
            recreate = {m[0] for m in failed} if "no responders" in problem else set()
            pending = failed  # in their original order, so per-key order holds
            await asyncio.sleep(min(0.05 * 2**attempt, 1.0))
        raise AssertionError("unreachable")  # for mypy: the loop above never ends

    async def _send(self, messages: list[Outgoing]) -> list[tuple[str, asyncio.Future[Msg]]]:
        futures: list[tuple[str, asyncio.Future[Msg]]] = []
        loop = asyncio.get_running_loop()
        publish, prefix, acks, tokens = self.nc.publish, self._ack_prefix, self._acks, self._tokens
        try:
            for _, to, value, headers in messages:
                token = str(next(tokens))
                future = acks[token] = loop.create_future()
                self._sent_to[token] = to
                futures.append((token, future))
                await publish(to, value, prefix + token, headers)
        except nats.errors.Error:  # buffer full, or the connection went away: retried
            pass
        return futures

    async def _wait_connected(self, deadline: float, problem: str) -> None:
        """Until connected and JetStream answers: a server restarting accepts clients
        before its streams are back, and drops what is published to them meanwhile."""
        nc = self.nc
        while not self._jetstream_up.is_set():
            if nc.is_closed or time.monotonic() >= deadline:
                raise BrokerUnavailable(
                    f"{self._url}: no JetStream to publish to ({problem or 'connection lost'});"
                    f" {HOW_TO_START}"
                )
            if nc.is_connected:
                with contextlib.suppress(*NATS_ERRORS):  # a starting server may say nothing
                    await api(nc, "INFO", wait=0.25)
                    self._jetstream_up.set()
                    return
            await asyncio.sleep(0.05)

    def refuse(self, to: str, error: NotAuthorized) -> None:
        """The server refused publishing to subject ``to`` (no permission): the publishes
        waiting for its acks fail now with ``error``, not at the publish timeout."""
        for token, sent_to in list(self._sent_to.items()):
            future = self._acks.get(token)
            if sent_to == to and future is not None and not future.done():
                future.set_exception(error)

    async def _on_publish_ack(self, msg: Msg) -> None:
        future = self._acks.get(msg.subject[len(self._ack_prefix) :])
        if future is not None and not future.done():
            future.set_result(msg)


def _event_id(record: OutgoingRecord) -> str | None:
    """The CloudEvent id of a record, binary (``ce_id``) or structured, if it has one."""
    headers = record.headers
    if not headers:
        return None
    event_id = headers.get("ce_id")
    if event_id is None and headers.get("content-type") == _CLOUDEVENTS_JSON:
        try:
            event_id = json.loads(record.value).get("id")
        except (ValueError, AttributeError):
            return None
    return str(event_id) if event_id else None


def _ack_error(future: asyncio.Future[Msg]) -> str | None:
    """None if the publish ack says stored; "retry:<why>" if worth sending again."""
    if not future.done():
        future.cancel()
        return "retry:no acknowledgement in time"
    if future.cancelled() or future.exception() is not None:
        return "retry:connection lost"
    msg = future.result()
    if msg.headers and msg.headers.get("Status") == "503":
        return "retry:no responders (JetStream starting, or no stream for the subject)"
    if b'"error"' not in msg.data:  # {"stream":...,"seq":...}: no need to parse it
        return None
    try:
        resp = json.loads(msg.data)
    except ValueError:
        return f"unreadable acknowledgement {msg.data[:100]!r}"
    error = resp.get("error")
    if error is None:
        return None
    description = f"{error.get('description')} (code {error.get('code')})"
    return f"retry:{description}" if error.get("code") == 503 else description
