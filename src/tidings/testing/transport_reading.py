"""The transport conformance suite's cases for tools: end offsets, reading by offset and
by time, reading many ranges. :class:`tidings.testing.transport.TransportConformance`
inherits them; the helpers here (fresh names, keyed records) serve the whole suite."""

from __future__ import annotations

import asyncio
import uuid
from collections import defaultdict

import pytest

from tidings.transport.base import OutgoingRecord, Transport


def requires(transport: Transport, capability: str) -> None:
    """Skip the calling case unless the transport has ``capability`` (a Capabilities flag)."""
    if not getattr(transport.capabilities, capability):
        pytest.skip(f"{transport.platform} lacks the capability {capability!r}")


def unique(prefix: str) -> str:
    """A name no other test (or earlier run on the same broker) uses."""
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def keyed(topic: str, count: int, keys: int, prefix: str = "v") -> list[OutgoingRecord]:
    """``count`` records over ``keys`` keys, interleaved; value ``{prefix}-{key}-{seq}``."""
    out = []
    for i in range(count):
        key, seq = f"key-{i % keys}", i // keys
        out.append(OutgoingRecord(topic, f"{prefix}-{key}-{seq}".encode(), key))
    return out


class ReadingCases:
    """Needs the ``transport`` and ``topic`` fixtures of the suite."""

    async def test_end_offsets_and_read_match_what_was_published(
        self, transport: Transport, topic: str
    ) -> None:
        requires(transport, "offsets")
        await transport.create_topic(topic, 3)
        records = keyed(topic, 25, keys=5)
        await transport.publish(records)
        info = {t.name: t for t in await transport.topics()}[topic]
        assert info.partitions == 3
        assert set(info.end_offsets) == {0, 1, 2}
        assert sum(info.end_offsets.values()) == 25
        read: list[bytes] = []
        for part, end in info.end_offsets.items():
            stored = await transport.read(topic, part, 0, 1000)
            assert [r.offset for r in stored] == list(range(end))  # no gaps, no duplicates
            assert all(r.partition == part and r.topic == topic for r in stored)
            read += [r.value for r in stored]
            assert [r.offset for r in await transport.read(topic, part, 1, 2)] == list(
                range(1, min(end, 3))
            )
        assert sorted(read) == sorted(r.value for r in records)

    async def test_end_offsets_of_some_topics_agree_with_topics(
        self, transport: Transport, topic: str
    ) -> None:
        requires(transport, "offsets")
        await transport.create_topic(topic, 3)
        await transport.publish(keyed(topic, 12, keys=4))
        ends = await transport.end_offsets([topic, unique("absent")])
        info = {t.name: t for t in await transport.topics()}[topic]
        assert ends == {(topic, p): end for p, end in info.end_offsets.items()}
        assert sum(ends.values()) == 12

    async def test_offset_for_time_is_the_first_record_stored_at_or_after_it(
        self, transport: Transport, topic: str
    ) -> None:
        requires(transport, "offsets")
        await transport.create_topic(topic, 2)
        for batch in range(3):  # apart in time: each batch stored after a pause
            await transport.publish(
                [OutgoingRecord(topic, f"b{batch}-{i}".encode(), "one-key") for i in range(4)]
            )
            await asyncio.sleep(0.1)
        ends = {t.name: t for t in await transport.topics()}[topic].end_offsets
        part = max(ends, key=lambda p: ends[p])
        stored = await transport.read(topic, part, 0, 100)
        assert len(stored) == 12
        stamps = [r.timestamp for r in stored]  # the broker's clock, not ours
        cases = {
            0.0: 0,
            (stamps[3] + stamps[4]) / 2: 4,
            stamps[8]: 8,
            stamps[11]: min(o for o in range(12) if stamps[o] >= stamps[11]),
            stamps[11] + 60: 12,  # later than every record: the end
        }
        for when, expected in cases.items():
            assert await transport.offset_for_time(topic, part, when) == expected, when
        empty = 1 - part
        assert await transport.offset_for_time(topic, empty, 0.0) == ends[empty] == 0
        assert await transport.offset_for_time(unique("absent"), 0, 0.0) == 0
        many = await transport.offsets_for_time([(topic, 0), (topic, 1), (topic, 2)], stamps[8])
        assert many == {(topic, part): 8, (topic, empty): 0, (topic, 2): 0}

    async def test_read_ranges_reads_each_range_in_order(
        self, transport: Transport, topic: str
    ) -> None:
        requires(transport, "offsets")
        await transport.create_topic(topic, 3)
        await transport.publish(keyed(topic, 90, keys=9))
        ends = {t.name: t for t in await transport.topics()}[topic].end_offsets
        ranges = [(topic, p, min(2, end), end - 1) for p, end in ends.items()]
        ranges.append((topic, 0, 0, 0))  # empty: nothing
        got: dict[int, list[int]] = defaultdict(list)
        async for batch in transport.read_ranges(ranges, batch=7):
            assert 0 < len(batch) <= 7
            for record in batch:
                got[record.partition].append(record.offset)
        expected = {p: list(range(min(2, end), end - 1)) for p, end in ends.items()}
        assert {p: o for p, o in got.items() if o} == {p: o for p, o in expected.items() if o}
