"""Consumer groups on JetStream: membership, partition leases and takeover.

**Membership.** A member is a key ``<group>.<member>`` in the KV bucket
``tidings_members``, whose TTL is the session timeout; a task on the transport renews it
every ``heartbeat_interval`` (:mod:`tidings.transport.membership`) with a compare-and-set on its revision. A member that stops
renewing vanishes from the bucket, which is how the others learn that it died. The live
members of a group are read in one request (stream info filtered by subject).

**Assignment** is the SQLite log's: round robin over the sorted (topic, partition) pairs
and the sorted live members, computed by each member alone
(:func:`tidings.transport.placement.assign`). A member reads a partition only
while it holds the partition's *lease*, key ``<group>.<topic>.<partition>`` in bucket
``tidings_leases``, taken with compare-and-set (create, or update from the revision it
read) and only when it is free or its owner is no longer a live member. Joins, leaves
and releases are announced on ``tidings-groups.<group>`` so that the others rebalance at
once; deaths are noticed by the periodic sync. Assignment changes only inside ``fetch``.

**Fencing.** A member's key lives until ``TTL`` after its last successful renewal was
*sent*; past that moment (less a margin) the member hands out nothing, because another
member may hold its leases by now. When a renewal finds the key gone, the member rejoins
and checks each lease (value and revision) before reading again.

**Takeover.** Each held partition is read through a durable pull consumer
``<group>_<epoch>`` with ``AckPolicy.all``: JetStream acks are cumulative, exactly the
contract's, and the consumer's ack floor *is* the committed offset. A member that takes
a partition starts a fresh consumer (a new epoch) at the committed offset of the newest
one and deletes the older ones: what the previous owner had fetched but not acked is
delivered again, in order, and a late ack from a presumed-dead owner lands on a deleted
consumer instead of moving the new one. Reading, ack and nack: :mod:`.reader`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import time
from collections.abc import Callable

import nats.js.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription as NatsSub
from nats.js.kv import KeyValue

from tidings.transport.contract import Delivery, Subscription
from tidings.transport.errors import TransportError
from tidings.transport.ledger import check_held
from tidings.transport.loop import fetch_loop
from tidings.transport.membership import member_id
from tidings.transport.nats.reader import Partition, Reader, TopicPartition
from tidings.transport.nats.streams import Streams
from tidings.transport.nats.wire import (
    MEMBERS_BUCKET,
    NATS_ERRORS,
    NOTIFY_PREFIX,
    api,
    committed_offset,
    consumer_epoch,
    lease_key,
    member_key,
    stream_name,
)
from tidings.transport.placement import assign

log = logging.getLogger(__name__)


class NatsSubscription(Subscription):
    """One member of a consumer group on JetStream; see the module docstring."""

    def __init__(
        self,
        nc: Client,
        streams: Streams,
        group: str,
        topics: tuple[str, ...],
        *,
        members: KeyValue,
        leases: KeyValue,
        url: str,
        session_timeout: float,
        heartbeat_interval: float,
        prefetch: int,
        on_close: Callable[[NatsSubscription], None],
    ) -> None:
        self._nc = nc
        self._streams = streams
        self.group = group
        self.topics = topics
        self._members = members
        self._leases = leases
        self.url = url
        self._session_timeout = session_timeout
        self._heartbeat_interval = heartbeat_interval
        self._on_close = on_close
        self.member = re.sub(r"[^A-Za-z0-9_-]", "_", member_id())
        self._key = member_key(group, self.member)
        self._value = json.dumps({"topics": list(topics)}).encode()
        self._reader = Reader(nc, self, url, prefetch)
        self._known: dict[str, tuple[str, ...]] = {self.member: topics}
        self._wanted: frozenset[TopicPartition] = frozenset()
        self._member_rev = 0
        self._alive_until = 0.0
        self._lost = False  # presumed dead at some point: check the leases before reading
        self._sync_due = True
        self._next_sync = 0.0
        self._next_acquire = 0.0
        self._notify_sub: NatsSub | None = None
        self._closed = False

    def assignment(self) -> frozenset[TopicPartition]:
        return frozenset(self._reader.parts)

    # -- membership -------------------------------------------------------------------

    async def join(self) -> None:
        await self._reader.start()
        self._notify_sub = await self._nc.subscribe(
            f"{NOTIFY_PREFIX}.{self.group}", cb=self._on_notify
        )
        sent = time.monotonic()
        self._member_rev = await self._members.create(self._key, self._value)
        self._alive_until = sent + self._lifetime()
        await self._notify()

    def _lifetime(self) -> float:
        ttl = self._session_timeout
        return ttl - min(1.0, ttl / 4)

    async def _notify(self) -> None:
        await self._nc.publish(f"{NOTIFY_PREFIX}.{self.group}", b"")

    async def _on_notify(self, msg: Msg) -> None:
        self._sync_due = True
        self._reader.wake.set()

    async def heartbeat(self) -> None:
        """Renew this member's key (called by the transport's heartbeat task)."""
        if self._closed or not self._nc.is_connected:
            return  # a renewal buffered now could land late and look like a rival's
        sent = time.monotonic()
        try:
            try:
                self._member_rev = await self._members.update(
                    self._key, self._value, last=self._member_rev
                )
            except nats.js.errors.KeyWrongLastSequenceError:
                log.warning(
                    "%s: member %s of %r was presumed dead (no heartbeat for %.1f s); rejoining",
                    self.url, self.member, self.group, self._session_timeout,
                )  # fmt: skip
                self._lost = self._sync_due = True
                self._member_rev = await self._members.put(self._key, self._value)
                await self._notify()
            self._alive_until = sent + self._lifetime()
        except NATS_ERRORS as exc:  # the next beat tries again
            log.debug("%s: heartbeat of %s failed: %s", self.url, self.member, exc)

    def on_reconnected(self) -> None:
        """Pull requests may be lost, and with a restarted server so may records that
        were on their way to us: check every partition before reading on."""
        self._reader.on_reconnected()
        self._sync_due = True

    async def _live_members(self) -> set[str]:
        prefix = f"$KV.{MEMBERS_BUCKET}.{self.group}."
        info = await api(
            self._nc, f"STREAM.INFO.KV_{MEMBERS_BUCKET}", {"subjects_filter": f"{prefix}*"}
        )
        return {s[len(prefix) :] for s in (info["state"].get("subjects") or {})}

    async def _topics_of(self, member: str) -> tuple[str, ...] | None:
        try:
            entry = await self._members.get(member_key(self.group, member))
        except nats.js.errors.KeyNotFoundError:
            return None
        return tuple(json.loads(entry.value or b"{}").get("topics", ()))

    async def _sync(self) -> None:
        now = time.monotonic()
        self._sync_due = False
        self._next_sync = now + self._heartbeat_interval
        self._next_acquire = now + 0.1
        live = await self._live_members() | {self.member}
        unknown = sorted(m for m in live if m not in self._known)
        found = await asyncio.gather(*(self._topics_of(m) for m in unknown))
        for member, topics in zip(unknown, found, strict=True):
            if topics is not None:
                self._known[member] = topics
        self._known = {m: t for m, t in self._known.items() if m in live}
        counts: dict[str, int] = {}
        for topic in sorted({t for topics in self._known.values() for t in topics}):
            count = await self._streams.partitions_of(topic)
            if count:
                counts[topic] = count
        self._wanted = frozenset(assign(sorted(self._known.items()), counts).get(self.member, ()))
        released = [tp for tp in self._reader.parts if tp not in self._wanted]
        for tp in released:
            await self._release(tp)
        if self._lost:
            await self._verify_leases()
        missing = [tp for tp in sorted(self._wanted) if tp not in self._reader.parts]
        # All settled before fetch goes on: the assignment changes only inside fetch.
        results = await asyncio.gather(
            *(self._acquire(tp, live) for tp in missing), return_exceptions=True
        )
        for result in results:
            if isinstance(result, BaseException):
                raise result
        if released:
            await self._notify()

    async def _lease_is_ours(self, part: Partition) -> bool:
        try:
            entry = await self._leases.get(lease_key(self.group, *part.tp))
        except nats.js.errors.KeyNotFoundError:
            return False
        return entry.revision == part.lease and entry.value == self.member.encode()

    async def _verify_leases(self) -> None:
        for tp, part in list(self._reader.parts.items()):
            if not await self._lease_is_ours(part):
                log.warning("%s: lost %s[%d] of %r while presumed dead",
                            self.url, tp[0], tp[1], self.group)  # fmt: skip
                self._reader.drop(tp)
        self._lost = False

    async def _acquire(self, tp: TopicPartition, live: set[str]) -> None:
        key = lease_key(self.group, *tp)
        me = self.member.encode()
        try:
            try:
                entry = await self._leases.get(key)
            except nats.js.errors.KeyNotFoundError:
                revision = await self._leases.create(key, me)
            else:
                owner = (entry.value or b"").decode()
                if owner in live and owner != self.member:
                    return  # it gives the partition up on its next fetch
                revision = await self._leases.update(key, me, last=entry.revision)
        except nats.js.errors.KeyWrongLastSequenceError:
            return  # another member was quicker
        await self._open(tp, revision)

    async def _open(self, tp: TopicPartition, lease: int) -> None:
        """Start reading ``tp`` from the group's committed offset, on a fresh consumer."""
        streams = self._streams
        stream = stream_name(*tp)
        old = await streams.group_consumers(stream, self.group)
        start = committed_offset(old[-1]) if old else None
        epoch = max(lease, consumer_epoch(old[-1]["name"]) + 1 if old else 1)
        name = await streams.create_group_consumer(stream, self.group, epoch, start)
        for info in old:
            await streams.delete_consumer(stream, info["name"])
        self._reader.add(Partition(tp, name, lease, start or 0))

    async def _release(self, tp: TopicPartition) -> None:
        part = self._reader.drop(tp)
        await self._reader.confirm(part)
        with contextlib.suppress(*NATS_ERRORS):
            await self._leases.delete(lease_key(self.group, *tp), last=part.lease)

    async def _repair(self, part: Partition) -> None:
        if not await self._reader.needs_reset(part):
            part.trouble = None
            return
        log.info("%s: reading %s[%d] of %r again from its committed offset (%s)",
                 self.url, part.tp[0], part.tp[1], self.group, part.trouble)  # fmt: skip
        ours = await self._lease_is_ours(part)
        self._reader.drop(part.tp)
        if ours:
            await self._reader.confirm(part)
            await self._open(part.tp, part.lease)

    # -- consuming --------------------------------------------------------------------

    async def fetch(self, max_records: int = 100, timeout: float = 0.5) -> list[Delivery]:
        if self._closed:
            raise TransportError(f"{self.url}: fetch on a closed subscription")

        async def look() -> list[Delivery]:
            await self._tend()
            # Past our session another member may own our partitions: hand out nothing.
            alive = time.monotonic() <= self._alive_until and not self._lost
            return self._reader.take(max_records) if alive else []

        return await fetch_loop(timeout, self._reader.wake, look, self._idle)

    async def _tend(self) -> None:
        """Sync the group, repair partitions and keep pull requests open, when due."""
        if not self._nc.is_connected:
            return  # while the broker is away, serve what is buffered
        reader = self._reader
        try:
            now = time.monotonic()
            acquiring = not self._wanted.issubset(reader.parts)
            if (
                self._sync_due or self._lost or now >= self._next_sync
                or (acquiring and now >= self._next_acquire)
            ):  # fmt: skip
                await self._sync()
            for part in [p for p in reader.parts.values() if p.trouble]:
                await self._repair(part)
            await reader.pull()
        except NATS_ERRORS as exc:
            log.debug("%s: group %r: %s", self.url, self.group, exc)
            self._next_sync = time.monotonic() + 0.5

    def _idle(self, now: float) -> float:
        # Until a record, a reconnect or a rebalance wakes us, or a sync, an acquisition,
        # a repair or the end of a nack's pause is due.
        nap = float("inf")
        reader = self._reader
        if self._nc.is_connected:
            nap = self._next_sync - now
            if not self._wanted.issubset(reader.parts):
                nap = min(nap, self._next_acquire - now)
            if any(p.trouble for p in reader.parts.values()):
                nap = min(nap, 0.05)
        resume = reader.next_resume()
        if resume is not None:
            nap = min(nap, resume - now)
        return max(nap, 0.001)

    async def ack(self, delivery: Delivery) -> None:
        tp = check_held(self.url, self.group, delivery, self._reader.parts, self._closed)
        await self._reader.ack(self._reader.parts[tp], delivery)

    async def nack(self, delivery: Delivery, delay: float = 0.0) -> None:
        tp = check_held(self.url, self.group, delivery, self._reader.parts, self._closed)
        self._reader.nack(self._reader.parts[tp], delivery, delay)

    async def confirm_acks(self) -> None:
        """Wait until the server applied every ack sent so far (before reading offsets)."""
        await self._reader.confirm_all()

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._on_close(self)
        try:  # without a server the key expires by itself, and its leases with it
            if not self._nc.is_connected:
                raise ConnectionError("not connected")
            async with asyncio.timeout(5):
                for tp in list(self._reader.parts):
                    await self._release(tp)
                await api(self._nc, f"STREAM.PURGE.KV_{MEMBERS_BUCKET}",
                          {"filter": f"$KV.{MEMBERS_BUCKET}.{self._key}"})  # fmt: skip
                await self._notify()
        except (*NATS_ERRORS, ConnectionError) as exc:
            log.warning("%s: left group %r without telling: %s", self.url, self.group, exc)
        await self._reader.stop()
        if self._notify_sub is not None:
            with contextlib.suppress(Exception):
                await self._notify_sub.unsubscribe()
