"""The embedded SQLite log beyond the shared suite: several processes on one file,
retention, replay from a time, fencing, restarts, URL options."""

from __future__ import annotations

import asyncio
import signal
import sqlite3
import statistics
import sys
import textwrap
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from tidings.testing.transport import consume
from tidings.testing.transport_members import child_env
from tidings.transport import (
    BrokerUnavailable,
    InvalidBrokerURL,
    NotAssigned,
    OutgoingRecord,
    make_transport,
    open_transport,
)
from tidings.transport.base import assign
from tidings.transport.sqlite import SQLiteLog

FAST = "session_timeout=1&heartbeat_interval=0.2"


@pytest.fixture
def url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path}/log.db?{FAST}"


@pytest_asyncio.fixture
async def log(url: str) -> AsyncIterator[SQLiteLog]:
    transport = make_transport(url)
    assert isinstance(transport, SQLiteLog)
    await transport.connect()
    try:
        yield transport
    finally:
        await transport.close()


async def run_python(code: str, *args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-c", textwrap.dedent(code), *args, env=child_env(),
        stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip


PUBLISHER = """
    import asyncio, random, sys
    from tidings.transport import open_transport, OutgoingRecord

    async def main(url, name, count):
        log = await open_transport(url)
        rng, sent = random.Random(name), 0
        while sent < count:
            n = min(rng.randint(1, 20), count - sent)
            await log.publish([OutgoingRecord("shared", f"{name}-{sent + i}".encode(),
                                              f"k{rng.randint(0, 50)}") for i in range(n)])
            sent += n
        await log.close()

    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
"""


async def test_two_processes_publish_to_one_file_without_gaps_or_duplicates(
    log: SQLiteLog, url: str
) -> None:
    await log.create_topic("shared", 3)
    procs = [await run_python(PUBLISHER, url, name, "1500") for name in ("p1", "p2")]
    assert [await p.wait() for p in procs] == [0, 0]
    ends = {t.name: t for t in await log.topics()}["shared"].end_offsets
    seen: list[bytes] = []
    for part, end in ends.items():
        records = await log.read("shared", part, 0, 10_000)
        assert [r.offset for r in records] == list(range(end))
        stamps = [r.timestamp for r in records]
        assert stamps == sorted(stamps), "a partition's timestamps never go back"
        seen += [r.value for r in records]
    assert len(seen) == 3000
    assert set(seen) == {f"{n}-{i}".encode() for n in ("p1", "p2") for i in range(1500)}


async def test_retention_by_size_keeps_the_newest_bytes(tmp_path: Path) -> None:
    log = SQLiteLog(str(tmp_path / "log.db"), retention_bytes=10_000, retention_check_interval=0)
    await log.connect()
    try:
        await log.create_topic("sized", 1)
        for i in range(100):
            await log.publish([OutgoingRecord("sized", bytes([i]) * 1000, "k")])
        kept = await log.read("sized", 0, 0, 1000)
        assert [r.offset for r in kept] == list(range(90, 100))
        assert sum(len(r.value) for r in kept) <= 10_000
        assert {t.name: t for t in await log.topics()}["sized"].end_offsets == {0: 100}
        sub = await log.subscribe("late-reader", ["sized"])  # starts inside the deleted range
        got = await consume(sub, 10, within=5)
        assert [d.record.offset for d in got] == list(range(90, 100))
        # A topic can keep more than the log-wide default.
        await log.set_retention("roomy", retention_bytes=50_000)
        await log.publish([OutgoingRecord("roomy", b"x" * 1000, "k") for _ in range(100)])
        assert len(await log.read("roomy", 0, 0, 1000) + await log.read("roomy", 1, 0, 1000)
                   + await log.read("roomy", 2, 0, 1000)) == 50  # fmt: skip
    finally:
        await log.close()


async def test_retention_by_age_deletes_old_records_even_if_unread(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/log.db?retention_ms=300&retention_check_interval=0"
    log = await open_transport(url)
    try:
        sub = await log.subscribe("never-acks", ["aged"])
        await log.publish([OutgoingRecord("aged", f"old{i}".encode(), "k") for i in range(5)])
        await asyncio.sleep(0.4)
        await log.publish([OutgoingRecord("aged", f"new{i}".encode(), "k") for i in range(5)])
        stored = [r for p in range(3) for r in await log.read("aged", p, 0, 100)]
        assert sorted(r.value for r in stored) == [f"new{i}".encode() for i in range(5)]
        got = await consume(sub, 5, within=5)
        got += await consume(sub, 1, within=0.3)
        assert sorted(d.record.value for d in got) == [f"new{i}".encode() for i in range(5)]
    finally:
        await log.close()


async def test_replay_from_a_time(log: SQLiteLog) -> None:
    await log.publish([OutgoingRecord("timed", f"before{i}".encode(), f"k{i}") for i in range(9)])
    await asyncio.sleep(0.05)
    cut = time.time()
    await asyncio.sleep(0.05)
    await log.publish([OutgoingRecord("timed", f"after{i}".encode(), f"k{i}") for i in range(9)])
    ends = {t.name: t for t in await log.topics()}["timed"].end_offsets
    for part, end in ends.items():
        assert await log.offset_for_time("timed", part, 0) == 0
        assert await log.offset_for_time("timed", part, time.time() + 60) == end
    done = await log.subscribe("replayer", ["timed"])
    assert len(await consume(done, 18, within=5)) == 18
    await done.close()
    await log.seek_to_time("replayer", "timed", cut)
    again = await log.subscribe("replayer", ["timed"])
    got = await consume(again, 9, within=5)
    got += await consume(again, 1, within=0.3)
    assert sorted(d.record.value for d in got) == sorted(f"after{i}".encode() for i in range(9))


async def test_unusable_location_is_broker_unavailable_naming_the_url(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    url = f"sqlite:///{blocker}/sub/log.db"
    with pytest.raises(BrokerUnavailable) as caught:
        await open_transport(url)
    message = str(caught.value)
    assert url in message and "\n" not in message
    directory = tmp_path / "is-a-directory.db"
    directory.mkdir()
    with pytest.raises(BrokerUnavailable, match="is-a-directory"):
        await open_transport(f"sqlite:///{directory}")


CONSUMER = """
    import asyncio, sys
    from tidings.transport import open_transport

    async def main(url, count):
        log = await open_transport(url)
        sub = await log.subscribe("durable", ["restart"])
        acked = 0
        while acked < count:
            for d in await sub.fetch(max_records=1):
                await d.ack()
                acked += 1
        print("acked", flush=True)
        await asyncio.sleep(3600)  # killed here: no leave, no close

    asyncio.run(main(sys.argv[1], int(sys.argv[2])))
"""


async def test_committed_offsets_survive_a_killed_process(log: SQLiteLog, url: str) -> None:
    await log.create_topic("restart", 1)
    await log.publish([OutgoingRecord("restart", f"v{i}".encode(), "k") for i in range(20)])
    proc = await run_python(CONSUMER, url, "7")
    assert proc.stdout is not None
    assert await asyncio.wait_for(proc.stdout.readline(), 30) == b"acked\n"
    proc.send_signal(signal.SIGKILL)
    await proc.wait()
    assert await log.committed("durable") == {("restart", 0): 7}
    sub = await log.subscribe("durable", ["restart"])
    started = time.monotonic()
    got = await consume(sub, 13, within=10)
    assert [d.record.offset for d in got] == list(range(7, 20))
    # The dead member's lease had to expire first: about one session timeout.
    assert 0.5 < time.monotonic() - started < 5


async def test_ack_of_a_member_presumed_dead_is_fenced(url: str) -> None:
    a_log, b_log = await open_transport(url), await open_transport(url)
    try:
        await a_log.publish([OutgoingRecord("fenced", f"v{i}".encode(), f"k{i}") for i in range(6)])
        a = await a_log.subscribe("g", ["fenced"])
        got = await consume(a, 6, within=5, ack=False)
        assert len(got) == 6 and len(a.assignment()) == 3
        b = await b_log.subscribe("g", ["fenced"])
        time.sleep(1.3)  # noqa: ASYNC251 - a blocked event loop: no heartbeat, session lost
        redelivered = await b.fetch(timeout=0.2)
        assert len(b.assignment()) == 3
        with pytest.raises(NotAssigned):
            await got[0].ack()
        assert await a_log.committed("g") == {}
        for delivery in redelivered:
            await delivery.ack()
        redelivered += await consume(b, 6 - len(redelivered), within=5)
        assert sorted(d.record.value for d in redelivered) == sorted(d.record.value for d in got)
        # Until its next fetch the presumed-dead member still believes it holds them (its
        # acks are fenced); on that fetch it rejoins and gets its share back.
        assert len(a.assignment()) == 3
        deadline = time.monotonic() + 5
        await a.fetch(timeout=0.05)
        while not (a.assignment() and b.assignment()):
            assert time.monotonic() < deadline
            await b.fetch(timeout=0.05)
            await a.fetch(timeout=0.05)
        assert not a.assignment() & b.assignment()
    finally:
        await a_log.close()
        await b_log.close()


async def test_slow_async_handler_keeps_its_partitions(url: str) -> None:
    a_log, b_log = await open_transport(url), await open_transport(url)
    try:
        await a_log.publish([OutgoingRecord("slow", f"v{i}".encode(), f"k{i}") for i in range(6)])
        a = await a_log.subscribe("g", ["slow"])
        got = await consume(a, 6, within=5, ack=False)
        assert len(a.assignment()) == 3
        b = await b_log.subscribe("g", ["slow"])
        stolen: list[str] = []

        async def other_member() -> None:
            while True:
                stolen.extend(d.record.value.decode() for d in await b.fetch(timeout=0.1))

        poller = asyncio.create_task(other_member())
        await asyncio.sleep(2.5)  # a handler awaiting something slow: 2.5 session timeouts
        for delivery in got:
            await delivery.ack()  # still ours: the heartbeat task kept the leases
        assert stolen == [] and b.assignment() == frozenset()
        await a.fetch(timeout=0.2)  # only now does a hand over what is b's share
        await asyncio.sleep(0.3)
        poller.cancel()
        assert len(a.assignment()) + len(b.assignment()) == 3 and b.assignment()
    finally:
        await a_log.close()
        await b_log.close()


async def test_acks_after_a_nack_do_not_skip_the_nacked_record(log: SQLiteLog) -> None:
    await log.publish([OutgoingRecord("nacks", f"v{i}".encode(), "same") for i in range(3)])
    sub = await log.subscribe("g", ["nacks"])
    first = await consume(sub, 3, within=5, ack=False)
    assert [d.record.value for d in first] == [b"v0", b"v1", b"v2"]
    await first[0].nack()
    for delivery in first[1:]:
        await delivery.ack()  # rewound by the nack: committing them would lose v0
    assert await log.committed("g") == {}
    again = await consume(sub, 3, within=5)
    assert [(d.record.value, d.attempt) for d in again] == [(b"v0", 2), (b"v1", 2), (b"v2", 2)]


async def test_a_record_published_by_another_connection_arrives_within_a_poll(
    log: SQLiteLog, url: str
) -> None:
    other = await open_transport(url)  # no in-process wake-up: this measures polling
    try:
        sub = await log.subscribe("g", ["latency"])
        await sub.fetch(timeout=0.1)
        latencies = []
        for i in range(30):
            await asyncio.sleep(0.01 * (i % 4))
            sent = time.monotonic()
            await other.publish([OutgoingRecord("latency", b"x", f"k{i}")])
            got = await consume(sub, 1, within=2)
            assert len(got) == 1
            latencies.append(time.monotonic() - sent)
        assert statistics.median(latencies) < 0.05, latencies
    finally:
        await other.close()


def test_url_options_and_path(tmp_path: Path) -> None:
    log = make_transport(f"sqlite:///{tmp_path}/x.db?session_timeout=2&retention_ms=5")
    assert isinstance(log, SQLiteLog)
    assert log.path == f"{tmp_path}/x.db"
    assert (log.session_timeout, log.retention_ms, log.retention_bytes) == (2.0, 5, None)
    with pytest.raises(InvalidBrokerURL, match="sesion_timeout"):
        make_transport(f"sqlite:///{tmp_path}/x.db?sesion_timeout=2")
    with pytest.raises(InvalidBrokerURL, match="heartbeat_interval"):
        make_transport(f"sqlite:///{tmp_path}/x.db?session_timeout=1&heartbeat_interval=1")


def test_assignment_is_balanced_and_the_same_for_every_member() -> None:
    members = [("m2", {"a", "b"}), ("m1", {"a", "b"}), ("m3", {"b"})]
    result = assign(members, {"a": 4, "b": 2})
    assert result == assign(list(reversed(members)), {"a": 4, "b": 2})
    every = [tp for tps in result.values() for tp in tps]
    assert sorted(every) == sorted([("a", p) for p in range(4)] + [("b", 0), ("b", 1)])
    assert all(topic == "b" for topic, _ in result["m3"])
    assert sorted(len(tps) for tps in result.values()) == [2, 2, 2]
    two = assign([("x", {"a", "b"}), ("y", {"a", "b"})], {"a": 3, "b": 3})
    assert len(two["x"]) == len(two["y"]) == 3


async def test_durability_across_reopen(tmp_path: Path) -> None:
    path = tmp_path / "log.db"
    first = SQLiteLog(str(path))
    await first.connect()
    await first.publish([OutgoingRecord("kept", b"v", "k")])
    sub = await first.subscribe("g", ["kept"])
    [delivery] = await consume(sub, 1, within=5)
    await first.close()
    raw = sqlite3.connect(path)
    assert raw.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    raw.close()
    second = SQLiteLog(str(path))
    await second.connect()
    try:
        assert await second.committed("g") == {("kept", delivery.record.partition): 1}
        assert await second.groups() == ["g"]
    finally:
        await second.close()
