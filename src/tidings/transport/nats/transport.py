"""NATS JetStream as a Tidings transport: partitioned topics, offsets and consumer groups.

**Topics and offsets.** Each partition of a topic is its own stream (``shop.orders``
partition 2 is stream ``shop_orders-2`` on subject ``tidings.shop.orders.2``; naming in
:mod:`.wire`). One stream per partition, rather than one per topic with a subject
per partition, because JetStream numbers messages per stream: the stream sequence minus
one *is* the partition offset, dense and gap-free like Kafka's, so ``read``, ``seek``,
``committed`` and the end offsets of ``topics()`` mean exactly what they mean on the
other transports. The partition count lives in each stream's description; creating
partition 0 decides it atomically when two processes create a topic at once.

**Publishing** (:mod:`.publish`). A batch is published concurrently and every
stream ack awaited. Each message carries ``Nats-Msg-Id`` (the CloudEvent id when the
record has one) so that a retry, ours or the outbox relay's, is stored once within the
stream's duplicate window (2 minutes). What the server did not acknowledge (a
disconnect, a restart, JetStream still starting) is sent again, in order, until
``publish_timeout``; then :class:`BrokerUnavailable` is raised, and publishing the batch
again is safe.

**Consumer groups** (:mod:`.groups`, :mod:`.reader`). Members are keys with a
TTL in the KV bucket ``tidings_members``; each computes the SQLite log's round-robin
assignment alone and reads a partition only while holding its compare-and-set lease in
``tidings_leases``. A partition is read through a durable pull consumer per group with
``AckPolicy.all``, so acks are cumulative as in the contract and the consumer's ack
floor is the committed offset; whoever takes a partition over starts a fresh consumer
at that offset, which fences the late acks of a presumed-dead owner. Nack rewinds the
member's local buffer (a server-side ``nak`` would let later records overtake).

**Envelopes** use CloudEvents *structured* mode (``content_mode``): the NATS protocol
binding of CloudEvents defines structured mode (its binary mode, added later, names
headers ``ce-``, not Kafka's ``ce_`` that our codec writes), so any CloudEvents SDK
reading the stream understands the event, and the whole event stays in the payload.

Streams, group consumers and reading by offset are in :mod:`.streams`; names and
headers in :mod:`.wire`.

URL options: ``session_timeout`` and ``heartbeat_interval`` (seconds; the session
timeout is the TTL of the ``tidings_members`` bucket, fixed by whoever creates it),
``partitions`` (of auto-created topics), ``publish_timeout``, ``connect_timeout``,
``replicas`` (of new streams), ``prefetch`` (records buffered per partition),
``retention_ms`` and ``retention_bytes`` (per partition, of new streams), e.g.
``nats://127.0.0.1:4222?session_timeout=3&heartbeat_interval=0.5``.

TLS and users (:mod:`tidings.credentials`): ``nats://USER@host:4322?tls_ca=ca.pem&
password_file=PATH``. A refused user or password is :class:`AuthenticationFailed` at
once; a subject the user may not publish to is :class:`NotAuthorized` naming it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator, Iterable, Sequence
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.js.kv import KeyValue

from tidings.credentials import split_credentials
from tidings.records import OutgoingRecord, Record
from tidings.transport.contract import DEFAULT_PARTITIONS, TopicInfo, Transport
from tidings.transport.errors import (
    AuthenticationFailed,
    BrokerUnavailable,
    NotAuthorized,
    TransportError,
)
from tidings.transport.membership import Heartbeat
from tidings.transport.nats.groups import NatsSubscription
from tidings.transport.nats.publish import Publisher
from tidings.transport.nats.security import DENIED, PUBLISH_DENIED, connect_options, refused
from tidings.transport.nats.streams import Streams
from tidings.transport.nats.wire import (
    HOW_TO_START,
    LEASES_BUCKET,
    MEMBERS_BUCKET,
    NATS_ERRORS,
    NS,
    api,
    check_name,
    group_subject,
)
from tidings.transport.options import check_heartbeat, url_options

log = logging.getLogger(__name__)


_OPTIONS = {
    "session_timeout": float, "heartbeat_interval": float, "partitions": int,
    "publish_timeout": float, "connect_timeout": float, "replicas": int, "prefetch": int,
    "retention_ms": int, "retention_bytes": int,
}  # fmt: skip


class NatsTransport(Transport):
    """NATS JetStream; see the module docstring. ``nats://host:port[?options]``."""

    content_mode = "structured"

    def __init__(self, url: str) -> None:
        self.credentials, bare = split_credentials(url)
        parts = urlsplit(bare)
        options = url_options(bare, _OPTIONS)
        self.url = url
        # Several servers (a cluster): ``nats://host1:4222,host2:4222``; the client fails
        # over among them and, unless the cluster advertises more, only them.
        self.servers = [
            urlunsplit((parts.scheme, netloc, "", "", "")) for netloc in parts.netloc.split(",")
        ]
        self.session_timeout = float(options.get("session_timeout", 6.0))
        self.heartbeat_interval = float(options.get("heartbeat_interval", 1.0))
        self.default_partitions = int(options.get("partitions", DEFAULT_PARTITIONS))
        self.publish_timeout = float(options.get("publish_timeout", 30.0))
        self.connect_timeout = float(options.get("connect_timeout", 5.0))
        self.replicas = int(options.get("replicas", 1))
        self.prefetch = max(1, int(options.get("prefetch", 256)))
        self.retention_ms: int | None = options.get("retention_ms")
        self.retention_bytes: int | None = options.get("retention_bytes")
        check_heartbeat(url, self.heartbeat_interval, self.session_timeout)
        self.members: KeyValue | None = None
        self._refusal: asyncio.Future[BaseException] | None = None
        self._denied: list[str] = []  # the server's recent permission refusals
        self.leases: KeyValue | None = None
        # Made by connect(), on its connection: the client, what lays topics out on
        # JetStream, and what publishes (nats-py keeps one client through reconnects).
        self._nc: Client | None = None
        self._streams: Streams | None = None
        self._publisher: Publisher | None = None
        self._heartbeat: Heartbeat[NatsSubscription] = Heartbeat(
            self.heartbeat_interval, self._beat
        )

    # -- connection -------------------------------------------------------------------

    @property
    def nc(self) -> Client:
        if self._nc is None:
            raise TransportError(f"{self.url}: not connected (call connect())")
        return self._nc

    @property
    def streams(self) -> Streams:
        if self._streams is None:
            raise TransportError(f"{self.url}: not connected (call connect())")
        return self._streams

    async def connect(self) -> None:
        if self._nc is not None:
            return
        await self._probe()
        # nats-py reports a refused user only to error_cb, and retries: watched here, so
        # a wrong password is one line at once rather than connect_timeout of retries.
        refusal: asyncio.Future[BaseException] = asyncio.get_running_loop().create_future()
        self._refusal = refusal
        try:
            # Reconnect forever once connected: publishers and consumers ride out a restart.
            connecting = asyncio.ensure_future(
                nats.connect(
                    self.servers,
                    name="tidings",
                    allow_reconnect=True,
                    max_reconnect_attempts=-1,
                    reconnect_time_wait=0.2,
                    connect_timeout=max(1, int(self.connect_timeout)),
                    pending_size=16 << 20,
                    error_cb=self._on_error,
                    disconnected_cb=self._on_disconnected,
                    reconnected_cb=self._on_reconnected,
                    **connect_options(self.credentials),
                )
            )
            waiting: list[asyncio.Future[Any]] = [connecting, refusal]
            done, _ = await asyncio.wait(
                waiting, timeout=self.connect_timeout,
                return_when=asyncio.FIRST_COMPLETED,
            )  # fmt: skip
            if connecting not in done:
                connecting.cancel()
                with contextlib.suppress(BaseException):
                    client = await connecting
                    await client.close()
                raise refusal.result() if refusal.done() else TimeoutError()
            self._nc = connecting.result()
            info = await api(self.nc, "INFO")
            self._streams = Streams(
                self.nc, self.url, partitions=self.default_partitions, replicas=self.replicas,
                retention_ms=self.retention_ms, retention_bytes=self.retention_bytes,
            )  # fmt: skip
            publisher = Publisher(self.nc, self._streams, self.url, self.publish_timeout)
            await publisher.start()
            self._publisher = publisher
            self.members = await self._bucket(MEMBERS_BUCKET, ttl=self.session_timeout)
            self.leases = await self._bucket(LEASES_BUCKET, ttl=None)
        except (*NATS_ERRORS, OSError) as exc:
            await self._drop_connection()
            if refused(exc):
                who = self.credentials.username or "(no user)"
                raise AuthenticationFailed(
                    f"{self.url}: user {who} was refused: {exc} (check the user and the"
                    " password in password_env / password_file, and tls_ca)"
                ) from None
            raise BrokerUnavailable(
                f"{self.url}: no NATS with JetStream there ({_reason(exc, self.connect_timeout)});"
                f" {HOW_TO_START}"
            ) from None
        limit = int((info.get("limits") or {}).get("max_payload") or 0) or self.nc.max_payload
        self.max_record_bytes = min(self.nc.max_payload, limit) - 1024  # room for our headers

    async def _probe(self) -> None:
        """A plain TCP probe of the servers first: one clear line rather than the client's
        retry loop when none of them answers."""
        failures = []
        for server in self.servers:
            parts = urlsplit(server)
            host, port = parts.hostname or "127.0.0.1", parts.port or 4222
            try:
                _, writer = await asyncio.wait_for(
                    asyncio.open_connection(host, port), self.connect_timeout
                )
                writer.close()
                return
            except (OSError, TimeoutError) as exc:
                failures.append(f"{host}:{port} ({_reason(exc, self.connect_timeout)})")
        raise BrokerUnavailable(
            f"{self.url}: cannot reach NATS at {', '.join(failures)}; {HOW_TO_START}"
        ) from None

    async def _bucket(self, name: str, ttl: float | None) -> KeyValue:
        js = self.nc.jetstream()
        try:
            kv = await js.create_key_value(bucket=name, history=1, ttl=ttl, replicas=self.replicas)
        except nats.js.errors.BadRequestError:  # exists with another configuration
            kv = await js.key_value(name)
        if ttl is not None:
            info = await api(self.nc, f"STREAM.INFO.KV_{name}")
            actual = int(info["config"].get("max_age") or 0) / NS
            if actual and abs(actual - ttl) > 0.001:
                log.warning(
                    "%s: bucket %s keeps members for %.1f s, not the %.1f s asked for;"
                    " using %.1f s as the session timeout", self.url, name, actual, ttl, actual,
                )  # fmt: skip
                self.session_timeout = actual
        return kv

    async def _drop_connection(self) -> None:
        self._streams = self._publisher = None
        if self._nc is not None:
            with contextlib.suppress(Exception):
                await self._nc.close()
            self._nc = None

    async def _on_error(self, exc: Exception) -> None:
        refusal = self._refusal
        if refusal is not None and not refusal.done() and self._nc is None and refused(exc):
            refusal.set_result(exc)
            return
        if DENIED.search(str(exc)):
            self._denied.append(str(exc))
            del self._denied[:-20]
        denied = PUBLISH_DENIED.search(str(exc))
        if denied is not None and self._publisher is not None:
            # One clear error for the publish waiting on it (a refused publish gets no
            # ack, so it would otherwise wait for publish_timeout and say "no ack").
            to = denied["subject"]
            topic = to.removeprefix("tidings.").rpartition(".")[0] or to
            self._publisher.refuse(to, NotAuthorized(
                f"{self.url}: user {self.credentials.username or '(none)'} is refused publish"
                f" to subject {to!r} (topic {topic!r}): the NATS permission 'publish allow"
                f" tidings.{topic}.*' is missing (the service's code does not declare it: see"
                " tidings acl plan / tidings acl check)"
            ))  # fmt: skip
            return
        # Connection errors repeat at every reconnect attempt and the disconnect is
        # logged once elsewhere; anything else (slow consumer, permissions) must be seen.
        log.log(
            logging.DEBUG if isinstance(exc, OSError) else logging.WARNING, "%s: %s", self.url, exc
        )

    async def _on_disconnected(self) -> None:
        if self._nc is not None and not self._nc.is_closed:
            log.warning("%s: disconnected from NATS, reconnecting", self.url)
        if self._publisher is not None:
            self._publisher.connection_lost()

    async def _on_reconnected(self) -> None:
        log.warning("%s: reconnected to NATS", self.url)
        if self._publisher is not None:
            self._publisher.connection_lost()
        for sub in self._heartbeat.members:
            sub.on_reconnected()

    async def close(self) -> None:
        for sub in list(self._heartbeat.members):
            with contextlib.suppress(*NATS_ERRORS):
                await sub.close()
        await self._heartbeat.stop()
        await self._drop_connection()

    @contextlib.asynccontextmanager
    async def _unavailable(self, doing: str) -> AsyncIterator[None]:
        try:
            yield
        except NATS_ERRORS as exc:
            raise BrokerUnavailable(f"{self.url}: NATS failed while {doing}: {exc}") from None

    # -- topics -----------------------------------------------------------------------

    async def create_topic(self, name: str, partitions: int | None = None) -> None:
        async with self._unavailable(f"creating topic {name!r}"):
            await self.streams.ensure_topic(name, partitions)

    async def topics(self) -> list[TopicInfo]:
        async with self._unavailable("listing topics"):
            streams = await self.streams.streams()
        counts: dict[str, int] = {}
        ends: dict[str, dict[int, int]] = {}
        for topic, partition, partitions, info in streams:
            counts[topic] = partitions
            ends.setdefault(topic, {p: 0 for p in range(partitions)})
            ends[topic][partition] = int(info["state"].get("last_seq", 0))  # seq = offset + 1
        return [TopicInfo(name, counts[name], ends[name]) for name in sorted(counts)]

    async def end_offsets(self, topics: Iterable[str]) -> dict[tuple[str, int], int]:
        async with self._unavailable("reading end offsets"):
            return await self.streams.end_offsets(topics)

    # -- publishing -------------------------------------------------------------------

    async def publish(self, records: Sequence[OutgoingRecord]) -> None:
        if records:
            self.check_size(records)
            if self._publisher is None:
                raise TransportError(f"{self.url}: not connected (call connect())")
            await self._publisher.publish(records)

    # -- consumer groups --------------------------------------------------------------

    async def subscribe(
        self, group: str, topics: Sequence[str], *, from_beginning: bool = True
    ) -> NatsSubscription:
        check_name("group", group)
        async with self._unavailable(f"joining group {group!r}"):
            for topic in topics:
                count = await self.streams.ensure_topic(topic)
                if not from_beginning:
                    # Pin "the end" now: a member that dies before its first ack must not
                    # let the group skip what was published in between.
                    for part in range(count):
                        await self.streams.pin_end(group, topic, part)
            assert self.members is not None and self.leases is not None  # connected
            sub = NatsSubscription(
                self.nc, self.streams, group, tuple(topics), members=self.members,
                leases=self.leases, url=self.url, session_timeout=self.session_timeout,
                heartbeat_interval=self.heartbeat_interval, prefetch=self.prefetch,
                on_close=self._heartbeat.leave,
            )  # fmt: skip
            try:
                await sub.join()
            except NATS_ERRORS:
                if any(group_subject(group) in d or f".{group}." in d for d in self._denied):
                    raise self._grouprefused(group) from None
                raise
        self._heartbeat.join(sub)
        return sub

    def _grouprefused(self, group: str) -> NotAuthorized:
        user = self.credentials.username or "(none)"
        return NotAuthorized(
            f"{self.url}: user {user} is refused joining group {group!r}: the NATS permissions"
            f" 'publish allow $KV.tidings_members.{group}.>' and 'subscribe allow"
            f" {group_subject(group)}' are missing (the service's code does not declare it:"
            " see tidings acl plan / tidings acl check)"
        )

    async def _beat(self, members: Sequence[NatsSubscription]) -> None:
        # Renews membership while a handler awaits something slow between two fetches.
        for sub in members:
            await sub.heartbeat()

    # -- inspection and replay --------------------------------------------------------

    async def _group_offsets(self) -> dict[str, dict[tuple[str, int], int]]:
        for sub in self._heartbeat.members:  # acks travel without an answer: settle them first
            await sub.confirm_acks()
        return await self.streams.group_offsets()

    async def committed(self, group: str) -> dict[tuple[str, int], int]:
        async with self._unavailable("reading committed offsets"):
            return (await self._group_offsets()).get(group, {})

    async def groups(self) -> list[str]:
        async with self._unavailable("listing consumer groups"):
            return sorted(await self._group_offsets())

    async def seek(self, group: str, topic: str, partition: int, offset: int) -> None:
        check_name("group", group)
        async with self._unavailable(f"seeking group {group!r}"):
            await self.streams.ensure_topic(topic)
            await self.streams.seek(group, topic, partition, offset)

    async def read(self, topic: str, partition: int, offset: int, limit: int) -> list[Record]:
        async with self._unavailable(f"reading {topic!r}"):
            return await self.streams.read(topic, partition, offset, limit)

    async def offset_for_time(self, topic: str, partition: int, timestamp: float) -> int:
        async with self._unavailable(f"finding an offset by time in {topic!r}"):
            return await self.streams.offset_for_time(topic, partition, timestamp)


def _reason(exc: BaseException, timeout: float) -> str:
    if isinstance(exc, TimeoutError):
        return f"no answer within {timeout:g} s"
    if isinstance(exc, OSError) and exc.errno:
        return os.strerror(exc.errno)
    return str(exc) or type(exc).__name__
