"""The shared test helpers of :mod:`tidings.testing`: ports, topics, state, servers."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import BaseModel

from tidings import Service, codec
from tidings.messages import Event, new_envelope
from tidings.store import open_store
from tidings.testing import documents, envelopes, free_port, records, state
from tidings.testing.processes import ServiceProcesses
from tidings.testing.servers import skip_or_fail
from tidings.transport import OutgoingRecord, open_transport
from tidings.transport.memory import MemoryTransport


class Parcel(BaseModel):
    weight: int


class ParcelSent(Event, topic="unit.parcels", key="parcel_id"):
    parcel_id: str


def test_free_port_can_be_bound() -> None:
    port = free_port()
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))


async def test_records_reads_every_partition_of_one_topic() -> None:
    transport = MemoryTransport("memory://unit-testing-records")
    await transport.connect()
    try:
        await transport.create_topic("a", partitions=3)
        await transport.create_topic("b")
        await transport.publish([OutgoingRecord("a", f"{i}".encode(), f"k{i}") for i in range(10)])
        await transport.publish([OutgoingRecord("b", b"other")])
        found = await records(transport, "a")
        assert sorted(int(r.value) for r in found) == list(range(10))
        assert {r.topic for r in found} == {"a"} and len({r.partition for r in found}) > 1
        assert await records(transport, "missing") == []
    finally:
        await transport.close()


async def test_envelopes_reads_a_topic_by_broker_url(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/log.db"
    sent = [new_envelope(ParcelSent(parcel_id=f"p{i}"), source="unit") for i in range(3)]
    transport = await open_transport(url)
    try:
        await transport.create_topic("unit.parcels")
        await transport.publish([codec.encode(e, "unit.parcels") for e in sent])
    finally:
        await transport.close()
    found = await envelopes(url, "unit.parcels")
    assert sorted(e.id for e in found) == sorted(e.id for e in sent)
    assert {e.type for e in found} == {"ParcelSent"}


async def test_documents_reads_a_collection_typed_and_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(state, "_PAGE", 2)  # several pages
    service = Service("depot")
    parcels = service.collection("parcels", Parcel)
    url = f"sqlite:///{tmp_path}/{{service}}.db"
    store = await open_store(url, service.name)
    try:
        async with store.unit_of_work(service.name) as uow:
            for i in range(5):
                await uow.put("parcels", f"p{i}", Parcel(weight=i).model_dump(mode="json"))
    finally:
        await store.close()
    assert (tmp_path / "depot.db").exists()
    found = await documents(url, service, parcels)
    assert found == {f"p{i}": Parcel(weight=i) for i in range(5)}
    with pytest.raises(LookupError, match="depot declares no collection 'other'"):
        await documents(url, service, Service("elsewhere").collection("other", Parcel))


def test_skip_or_fail_skips_locally_and_fails_under_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="no server"):
        skip_or_fail("no server")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="no server"):
        skip_or_fail("no server")


def test_rss_reports_resident_memory_of_running_processes_only(tmp_path: Path) -> None:
    procs = ServiceProcesses(
        tmp_path, "memory://x", "sqlite:///x.db", {"big": "x:y", "gone": "x:y"}
    )
    # 64 MiB written page by page, so that it is resident, not just reserved.
    hold = "import sys, time; b = bytearray(64 << 20); b[::4096] = b'x' * (16 << 10); "
    hold += "print(flush=True); time.sleep(30)"
    big = subprocess.Popen([sys.executable, "-c", hold], stdout=subprocess.PIPE)
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    procs.procs = {"big": big, "gone": gone}
    try:
        assert big.stdout is not None and big.stdout.readline()  # the memory is written
        gone.wait()
        sizes = procs.rss()
    finally:
        big.kill()
        big.wait()
    assert set(sizes) == {"big"}
    assert 64 * 1024 <= sizes["big"] < 200 * 1024, sizes  # KiB


def test_cpu_seconds_counts_the_cpu_a_process_used(tmp_path: Path) -> None:
    procs = ServiceProcesses(tmp_path, "memory://x", "sqlite:///x.db", {"busy": "x:y", "idle": "x:y"})
    spin = "import time; t = time.process_time(); exec('while time.process_time() - t < 0.5: pass')"
    spin += "; print(flush=True); time.sleep(30)"
    busy = subprocess.Popen([sys.executable, "-c", spin], stdout=subprocess.PIPE)
    rest = "import time; print(flush=True); time.sleep(30)"
    idle = subprocess.Popen([sys.executable, "-c", rest], stdout=subprocess.PIPE)
    procs.procs = {"busy": busy, "idle": idle}
    try:
        assert busy.stdout is not None and busy.stdout.readline()
        assert idle.stdout is not None and idle.stdout.readline()
        used = procs.cpu_seconds()
    finally:
        for proc in (busy, idle):
            proc.kill()
            proc.wait()
    assert 0.5 <= used["busy"] < 5.0, used
    assert used["idle"] < 0.4, used
