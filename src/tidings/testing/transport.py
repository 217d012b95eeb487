"""The transport conformance suite: every rule of :mod:`tidings.transport.base`, on a broker.

Subclass :class:`TransportConformance` in a test module and give it a ``transport_url``
fixture: the URL of a broker the suite may write to. Every case uses fresh topic and group
names, so one running broker can serve the whole suite (and several runs of it)::

    class TestMyTransport(TransportConformance):
        @pytest.fixture
        def transport_url(self, tmp_path):
            return f"sqlite:///{tmp_path}/log.db?session_timeout=1&heartbeat_interval=0.2"

Transports are opened by URL with :func:`tidings.transport.open_transport`. The cases
where a consumer group is shared by OS processes run members in child processes
(:mod:`tidings.testing.transport_members`); they are skipped, with the reason, for a
transport whose ``supports_processes`` is False (``memory://``). The cases a missing
capability rules out (``Transport.capabilities``: history, offsets, assignment) are skipped by
:func:`requires`, naming the flag; a broker without history has its groups join (by
:func:`join_early`) before the records are published. Timings that depend on
the engine (how long a dead member's partitions take to move) are class attributes.
The cases of reading for tools (end offsets, by time, ranges) are in
:mod:`tidings.testing.transport_reading`.

Engine teams: a case that needs the broker stopped and started again should take a
``restart_broker`` fixture (an async callable) that the engine's test module provides.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Callable, Iterable
from pathlib import Path
from typing import ClassVar

import pytest
import pytest_asyncio

from tidings.testing.transport_members import MemberLog, start_member, stop_member
from tidings.testing.transport_reading import ReadingCases, keyed, requires, unique
from tidings.transport import open_transport
from tidings.transport.base import (
    Delivery,
    NotAssigned,
    OutgoingRecord,
    RecordTooLarge,
    Subscription,
    Transport,
)


async def consume(
    sub: Subscription,
    count: int,
    *,
    within: float,
    ack: bool = True,
    max_records: int = 100,
) -> list[Delivery]:
    """Fetch until ``count`` deliveries arrived (or ``within`` seconds passed), acking each."""
    got: list[Delivery] = []
    deadline = time.monotonic() + within
    while len(got) < count and time.monotonic() < deadline:
        for delivery in await sub.fetch(max_records=max_records, timeout=0.2):
            got.append(delivery)
            if ack:
                await delivery.ack()
    return got


async def quiet(sub: Subscription, seconds: float) -> list[Delivery]:
    """What still arrives within ``seconds`` (acked): a case expecting nothing asserts []."""
    extra = await consume(sub, 10**9, within=seconds)
    return extra


def values(deliveries: Iterable[Delivery]) -> list[bytes]:
    return [d.record.value for d in deliveries]


async def join_early(transport: Transport, group: str, topics: list[str]) -> Subscription | None:
    """Subscribe now where the broker keeps no history (a group sees only what is published
    once it exists); None where the case may subscribe after publishing, as written."""
    if transport.capabilities.history:
        return None
    return await transport.subscribe(group, topics)


def identity(transport: Transport, delivery: Delivery) -> tuple[int, int | bytes]:
    """What names a record across members: its coordinates, or its value where offsets
    count one member's deliveries only."""
    record = delivery.record
    return (record.partition, record.offset if transport.capabilities.offsets else record.value)


async def eventually(condition: Callable[[], bool], within: float, what: str) -> None:
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {within} s: {what}")
        await asyncio.sleep(0.05)


# -- the suite --------------------------------------------------------------------------


class TransportConformance(ReadingCases):
    """The rules of :mod:`tidings.transport.base`; needs a ``transport_url`` fixture."""

    #: How long consuming what a case published may take.
    settle_timeout: ClassVar[float] = 15.0
    #: How long a group may take to move a dead (SIGKILLed) member's partitions and finish.
    takeover_timeout: ClassVar[float] = 45.0
    #: How long a case waits to be sure that nothing more is delivered.
    quiet_seconds: ClassVar[float] = 0.5

    @pytest_asyncio.fixture
    async def transport(self, transport_url: str) -> AsyncIterator[Transport]:
        transport = await open_transport(transport_url)
        try:
            yield transport
        finally:
            await transport.close()

    @pytest.fixture
    def topic(self) -> str:
        return unique("conformance")

    @pytest.fixture
    def group(self) -> str:
        return unique("group")

    # -- publishing and reading ---------------------------------------------------------

    async def test_publish_then_consume_everything_in_a_new_group(
        self, transport: Transport, topic: str, group: str
    ) -> None:
        before = time.time()
        records = [
            OutgoingRecord(topic, f"v{i}".encode() + bytes(range(256)), f"key-{i % 7}",
                           {"n": str(i), "émoji": "✓"} if i % 2 else {})
            for i in range(60)
        ]  # fmt: skip
        early = await join_early(transport, group, [topic])
        for start in range(0, 60, 20):
            await transport.publish(records[start : start + 20])
        sub = early or await transport.subscribe(group, [topic])
        got = await consume(sub, 60, within=self.settle_timeout)
        assert sorted(values(got)) == sorted(r.value for r in records)
        sent = {r.value: r for r in records}
        for delivery in got:
            record = delivery.record
            assert record.topic == topic
            assert record.key == sent[record.value].key
            assert dict(record.headers) == dict(sent[record.value].headers)
            assert delivery.attempt == 1
            assert before - 5 <= record.timestamp <= time.time() + 5
        assert await quiet(sub, self.quiet_seconds) == []

    async def test_records_of_one_key_are_consumed_in_publish_order(
        self, transport: Transport, topic: str, group: str
    ) -> None:
        requires(transport, "ordered")
        records = keyed(topic, 300, keys=20)
        early = await join_early(transport, group, [topic])
        for start in range(0, 300, 7):  # batches that cut across keys
            await transport.publish(records[start : start + 7])
        sub = early or await transport.subscribe(group, [topic])
        got = await consume(sub, 300, within=self.settle_timeout)
        per_key: dict[str, list[int]] = defaultdict(list)
        for delivery in got:
            _, key, number, seq = delivery.record.value.decode().split("-")
            per_key[f"{key}-{number}"].append(int(seq))
        assert len(per_key) == 20
        assert all(seqs == list(range(15)) for seqs in per_key.values()), per_key

    async def test_same_key_goes_to_the_same_partition(
        self, transport: Transport, topic: str, group: str
    ) -> None:
        await transport.create_topic(topic, 3)
        early = await join_early(transport, group, [topic])
        for record in keyed(topic, 100, keys=20):  # one publish per record
            await transport.publish([record])
        sub = early or await transport.subscribe(group, [topic])
        got = await consume(sub, 100, within=self.settle_timeout)
        partitions: dict[str | None, set[int]] = defaultdict(set)
        for delivery in got:
            partitions[delivery.record.key].add(delivery.record.partition)
        assert len(got) == 100
        assert all(len(parts) == 1 for parts in partitions.values()), partitions
        assert len(set().union(*partitions.values())) > 1, "20 keys all hashed to 1 partition"

    async def test_oversized_record_refuses_the_whole_batch(
        self, transport: Transport, topic: str, group: str
    ) -> None:
        await transport.create_topic(topic, 1)
        early = await join_early(transport, group, [topic])
        await transport.publish([OutgoingRecord(topic, b"first", "k")])
        batch = [
            OutgoingRecord(topic, b"small-before", "k"),
            OutgoingRecord(topic, b"x" * (transport.max_record_bytes + 1), "k"),
            OutgoingRecord(topic, b"small-after", "k"),
        ]
        with pytest.raises(RecordTooLarge):
            await transport.publish(batch)
        if transport.capabilities.offsets:
            info = {t.name: t for t in await transport.topics()}[topic]
            assert sum(info.end_offsets.values()) == 1
        sub = early or await transport.subscribe(group, [topic])
        assert values(await consume(sub, 1, within=self.settle_timeout)) == [b"first"]
        assert await quiet(sub, self.quiet_seconds) == []

    # -- consumer groups ----------------------------------------------------------------

    async def test_two_groups_each_see_every_record(self, transport: Transport, topic: str) -> None:
        records = keyed(topic, 50, keys=10)
        names = unique("group-a"), unique("group-b")
        early = [await join_early(transport, name, [topic]) for name in names]
        await transport.publish(records)
        first = early[0] or await transport.subscribe(names[0], [topic])
        second = early[1] or await transport.subscribe(names[1], [topic])
        got_first = await consume(first, 50, within=self.settle_timeout)
        got_second = await consume(second, 50, within=self.settle_timeout)
        expected = sorted(r.value for r in records)
        assert sorted(values(got_first)) == expected
        assert sorted(values(got_second)) == expected

    async def test_members_of_a_group_split_the_partitions(
        self, transport: Transport, topic: str, group: str
    ) -> None:
        requires(transport, "assignment")
        await transport.create_topic(topic, 4)
        a = await transport.subscribe(group, [topic])
        b = await transport.subscribe(group, [topic])
        everything = {(topic, p) for p in range(4)}
        got: dict[str, list[Delivery]] = {"a": [], "b": []}

        async def poll_both() -> None:
            for name, sub in (("a", a), ("b", b)):
                for delivery in await sub.fetch(max_records=50, timeout=0.05):
                    got[name].append(delivery)
                    await delivery.ack()

        deadline = time.monotonic() + self.takeover_timeout
        while not (
            a.assignment() and b.assignment() and not a.assignment() & b.assignment()
            and a.assignment() | b.assignment() == everything
        ):  # fmt: skip
            assert time.monotonic() < deadline, (a.assignment(), b.assignment())
            await poll_both()
        records = keyed(topic, 80, keys=16)
        await transport.publish(records)
        deadline = time.monotonic() + self.settle_timeout
        while len(got["a"]) + len(got["b"]) < 80 and time.monotonic() < deadline:
            await poll_both()
        assert sorted(values(got["a"] + got["b"])) == sorted(r.value for r in records)
        for name, sub in (("a", a), ("b", b)):
            assert {(d.record.topic, d.record.partition) for d in got[name]} <= sub.assignment()
        await b.close()
        deadline = time.monotonic() + self.takeover_timeout
        while a.assignment() != everything:
            assert time.monotonic() < deadline, a.assignment()
            await a.fetch(timeout=0.05)

    async def test_new_member_resumes_after_the_last_ack(
        self, transport: Transport, topic: str, group: str
    ) -> None:
        requires(transport, "prefetch")  # it fetches a key's records without acking them
        await transport.create_topic(topic, 3)
        early = await join_early(transport, group, [topic])
        await transport.publish(keyed(topic, 30, keys=9))
        first = early or await transport.subscribe(group, [topic])
        got = await consume(first, 30, within=self.settle_timeout, ack=False)
        assert len(got) == 30
        by_partition: dict[int, list[Delivery]] = defaultdict(list)
        for delivery in got:
            by_partition[delivery.record.partition].append(delivery)
        acked: set[tuple[int, int | bytes]] = set()
        for deliveries in by_partition.values():
            for delivery in deliveries[: len(deliveries) // 2]:
                await delivery.ack()
                acked.add(identity(transport, delivery))
        unacked = {identity(transport, d) for d in got} - acked
        assert acked and unacked
        await first.close()
        second = await transport.subscribe(group, [topic])
        again = await consume(second, len(unacked), within=self.settle_timeout)
        again += await quiet(second, self.quiet_seconds)
        assert sorted(identity(transport, d) for d in again) == sorted(unacked)

    async def test_records_handled_but_not_acked_are_delivered_again(
        self, transport: Transport, topic: str, group: str
    ) -> None:
        requires(transport, "prefetch")  # it fetches a key's records without acking them
        records = keyed(topic, 20, keys=4)
        early = await join_early(transport, group, [topic])
        await transport.publish(records)
        first = early or await transport.subscribe(group, [topic])
        handled = await consume(first, 20, within=self.settle_timeout, ack=False)
        assert len(handled) == 20
        await first.close()  # as if it crashed after handling, before acking
        second = await transport.subscribe(group, [topic])
        again = await consume(second, 20, within=self.settle_timeout)
        assert sorted(values(again)) == sorted(r.value for r in records)

    async def test_nack_with_delay_redelivers_later_and_holds_the_partition(
        self, transport: Transport, topic: str, group: str
    ) -> None:
        delay = 1.0
        await transport.create_topic(topic, 3)
        held = [OutgoingRecord(topic, f"held-{i}".encode(), "held") for i in range(3)]
        early = await join_early(transport, group, [topic])
        await transport.publish(held)
        sub = early or await transport.subscribe(group, [topic])
        first = await consume(sub, 1, within=self.settle_timeout, ack=False, max_records=1)
        assert values(first) == [b"held-0"] and first[0].attempt == 1
        nacked_at = time.monotonic()
        await first[0].nack(delay)
        held_partition = first[0].record.partition
        others = keyed(topic, 24, keys=12, prefix="other")
        await transport.publish(others)
        events: list[tuple[float, Delivery]] = []
        deadline = time.monotonic() + self.settle_timeout + delay
        while len(events) < 27 and time.monotonic() < deadline:
            for delivery in await sub.fetch(max_records=1, timeout=0.1):
                events.append((time.monotonic() - nacked_at, delivery))
                await delivery.ack()
        redelivered = [(t, d) for t, d in events if d.record.value == b"held-0"]
        assert len(redelivered) == 1, "the nacked record came back exactly once"
        at, again = redelivered[0]
        assert again.attempt == 2
        assert at >= delay * 0.9, f"redelivered after {at:.3f} s, nacked with delay {delay}"
        same = [d.record for _, d in events if d.record.partition == held_partition]
        assert same[0].value == b"held-0", "a later record of the partition overtook the nack"
        assert [r.offset for r in same] == sorted(r.offset for r in same)
        assert any(t < at and d.record.partition != held_partition for t, d in events), (
            "other partitions must not wait for the nacked one"
        )
        assert sorted(values(d for _, d in events)) == sorted([r.value for r in held + others])

    async def test_committed_reflects_acks(
        self, transport: Transport, topic: str, group: str
    ) -> None:
        requires(transport, "offsets")
        await transport.create_topic(topic, 3)
        await transport.publish([OutgoingRecord(topic, f"v{i}".encode(), "one") for i in range(10)])
        sub = await transport.subscribe(group, [topic])
        got = await consume(sub, 10, within=self.settle_timeout, ack=False)
        assert len(got) == 10
        part = got[0].record.partition
        for delivery in got[:4]:
            await delivery.ack()
        mine = {k: v for k, v in (await transport.committed(group)).items() if k[0] == topic}
        assert mine == {(topic, part): got[3].record.offset + 1}
        assert group in await transport.groups()
        for delivery in got[4:]:
            await delivery.ack()
        assert (await transport.committed(group))[(topic, part)] == got[-1].record.offset + 1

    async def test_ack_after_close_is_refused(
        self, transport: Transport, topic: str, group: str
    ) -> None:
        early = await join_early(transport, group, [topic])
        await transport.publish([OutgoingRecord(topic, b"v", "k")])
        sub = early or await transport.subscribe(group, [topic])
        got = await consume(sub, 1, within=self.settle_timeout, ack=False)
        assert len(got) == 1
        await sub.close()
        with pytest.raises(NotAssigned):
            await got[0].ack()
        if not transport.capabilities.offsets:  # then the record comes again
            again = await transport.subscribe(group, [topic])
            assert values(await consume(again, 1, within=self.settle_timeout)) == [b"v"]
            return
        committed = await transport.committed(group)
        assert committed.get((topic, got[0].record.partition), 0) == 0

    # -- replay -------------------------------------------------------------------------

    async def test_replay_from_the_beginning_into_a_new_group(
        self, transport: Transport, topic: str, group: str
    ) -> None:
        requires(transport, "history")
        old = keyed(topic, 20, keys=5, prefix="old")
        await transport.publish(old)
        done = await transport.subscribe(group, [topic])
        assert len(await consume(done, 20, within=self.settle_timeout)) == 20
        replay = await transport.subscribe(unique("replay"), [topic], from_beginning=True)
        late = await transport.subscribe(unique("late"), [topic], from_beginning=False)
        new = keyed(topic, 10, keys=5, prefix="new")
        await transport.publish(new)
        replayed = await consume(replay, 30, within=self.settle_timeout)
        assert sorted(values(replayed)) == sorted(r.value for r in old + new)
        only_new = await consume(late, 10, within=self.settle_timeout)
        only_new += await quiet(late, self.quiet_seconds)
        assert sorted(values(only_new)) == sorted(r.value for r in new)

    async def test_seek_back_an_existing_group_replays(
        self, transport: Transport, topic: str, group: str
    ) -> None:
        requires(transport, "offsets")
        await transport.create_topic(topic, 3)
        records = keyed(topic, 30, keys=6)
        await transport.publish(records)
        first = await transport.subscribe(group, [topic])
        assert len(await consume(first, 30, within=self.settle_timeout)) == 30
        await first.close()
        ends = {t.name: t for t in await transport.topics()}[topic].end_offsets
        committed = await transport.committed(group)
        assert {p: committed[(topic, p)] for p in ends if ends[p]} == {
            p: end for p, end in ends.items() if end
        }
        busiest = max(ends, key=lambda p: ends[p])
        for part in ends:
            await transport.seek(group, topic, part, 1 if part == busiest else 0)
        assert (await transport.committed(group))[(topic, busiest)] == 1
        second = await transport.subscribe(group, [topic])
        again = await consume(second, 29, within=self.settle_timeout)
        again += await quiet(second, self.quiet_seconds)
        expected = [(p, o) for p, end in ends.items() for o in range(end)]
        expected.remove((busiest, 0))
        assert sorted((d.record.partition, d.record.offset) for d in again) == sorted(expected)

    # -- several processes --------------------------------------------------------------

    async def test_group_shared_by_processes_survives_a_sigkilled_member(
        self, transport: Transport, transport_url: str, topic: str, group: str, tmp_path: Path
    ) -> None:
        if not transport.supports_processes:
            pytest.skip(
                f"{type(transport).__name__} lives inside one process (supports_processes is"
                " False): a group shared by OS processes does not apply"
            )
        await transport.create_topic(topic, 4)
        logs = [MemberLog(tmp_path / f"member-{name}.txt") for name in "ab"]
        procs = [
            await start_member(transport_url, group, topic, log.path, handle_seconds=0.002)
            for log in logs
        ]
        try:
            a, b = logs

            def split() -> bool:
                mine, theirs = a.assignment(), b.assignment()
                if not transport.capabilities.assignment:  # each reads all; keys are shared
                    return mine == theirs == {0, 1, 2, 3}
                return bool(mine and theirs and not mine & theirs and mine | theirs == {0, 1, 2, 3})

            await eventually(split, self.takeover_timeout, "the two members split 4 partitions")
            sent: list[bytes] = []

            async def publish(count: int) -> None:
                for _ in range(count // 10):
                    batch = [
                        OutgoingRecord(topic, f"r{n}".encode(), f"key-{n % 40}")
                        for n in range(len(sent), len(sent) + 10)
                    ]
                    await transport.publish(batch)
                    sent.extend(r.value for r in batch)
                    await asyncio.sleep(0.01)

            def handled() -> set[str]:
                return set(a.handled()) | set(b.handled())

            publisher = asyncio.create_task(publish(400))
            # The member killed must be mid-stream: one that has handled records. Not
            # necessarily both have: on a FIFO queue (EventBridge's SQS side) a member
            # whose batch spans every message group holds them all while it works, and
            # the other may get nothing for a while (a: 0, b: 400 in a run on moto).
            await eventually(  # a takeover's patience: on an emulated bus (EventBridge on
                # moto) 40 records through two processes took longer than settle_timeout
                lambda: max(len(a.handled()), len(b.handled())) >= 20,
                self.takeover_timeout,
                "a member handles records",
            )
            victim = 0 if len(a.handled()) >= 20 else 1
            survivor = logs[1 - victim]
            procs[victim].send_signal(signal.SIGKILL)  # mid-stream: no leave, no last ack
            await procs[victim].wait()
            await publisher
            await publish(100)
            expected = {v.decode() for v in sent}
            await eventually(
                lambda: expected <= handled(),
                self.takeover_timeout,
                "every record handled at least once after the kill",
            )
            assert handled() == expected
            await eventually(
                lambda: survivor.assignment() == {0, 1, 2, 3},
                self.takeover_timeout,
                "the survivor holds every partition",
            )
        finally:
            for proc in procs:
                await stop_member(proc)
