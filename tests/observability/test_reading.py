"""Reading a trace from a window of the log (memory broker): what the one pass keeps,
how it tells CloudEvents from other records, and the window by time and topic."""

from __future__ import annotations

import json
import time
import uuid
from datetime import UTC, datetime

from tidings import codec
from tidings.observability.reading import (
    CorrelationIndex,
    chosen_topics,
    may_be_cloudevent,
    quick_attributes,
    read_trace,
)
from tidings.records import OutgoingRecord, Record
from tidings.testing.chains import SHOP_ORDER, causal_chain, foreign_records
from tidings.transport.memory import MemoryTransport


def stored(record: OutgoingRecord, offset: int = 0) -> Record:
    return Record(record.topic, 0, offset, record.key, record.value, record.headers, 0.0)


def test_quick_attributes_read_both_content_modes_and_refuse_foreign_records() -> None:
    (binary,) = causal_chain(SHOP_ORDER[:1], "o-1", datetime.now(UTC))
    envelope = codec.decode(stored(binary))
    structured = codec.encode(envelope, "t", "structured")
    expected = (envelope.id, envelope.id, "o-1")  # a root's correlation is its own id
    assert quick_attributes(stored(binary)) == expected
    assert quick_attributes(stored(structured)) == expected
    assert may_be_cloudevent(binary.headers, binary.value)
    assert may_be_cloudevent(structured.headers, structured.value)
    attributes = [quick_attributes(stored(r)) for r in foreign_records("t", "o-1")]
    # Only the record with a ce_id header passes (and fails later, when decoded).
    assert attributes == [None, None, None, ("y-o-1", "y-o-1", "o-1"), ("x-o-1", "x-o-1", "o-1")]
    assert not may_be_cloudevent({}, b"\x00\x01 raw")
    assert not may_be_cloudevent({}, json.dumps({"order_id": "o-1"}).encode())


def test_a_time_without_an_offset_is_read_as_utc() -> None:
    body = {"specversion": "1.0", "id": "e", "source": "s", "type": "T", "data": {},
            "time": "2026-01-02T03:04:05"}  # fmt: skip
    envelope = codec.decode(stored(OutgoingRecord("t", json.dumps(body).encode())))
    assert envelope.time == datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def test_the_index_finds_the_records_of_a_correlation() -> None:
    index = CorrelationIndex()
    for offset, correlation in enumerate(["a", "b", "a", "c", "a"]):
        index.add(Record("t", 1, offset + 10, None, b"", {}, 0.0), correlation)
    index.add(Record("u", 0, 7, None, b"", {}, 0.0), "c")
    assert index.find(["a"]) == {("t", 1): [10, 12, 14]}
    assert index.find(["c", "zz"]) == {("t", 1): [13], ("u", 0): [7]}
    assert index.find([]) == {}


def test_chosen_topics_always_include_dead_letters_and_replays() -> None:
    assert chosen_topics(None) is None and chosen_topics([]) is None
    chosen = chosen_topics(["shop.orders"])
    assert chosen is not None
    assert [chosen(t) for t in ("shop.orders", "shop.billing", "g.dlq", "g.replay")] == [
        True, False, True, True,
    ]  # fmt: skip


async def test_one_pass_finds_a_tree_named_by_its_last_event_across_topics() -> None:
    transport = MemoryTransport(f"memory://reading-{uuid.uuid4().hex}")
    start = datetime.now(UTC)
    ours = causal_chain(SHOP_ORDER, "o-9", start, topic_prefix="p.")
    other = causal_chain(SHOP_ORDER, "o-8", start, topic_prefix="p.")
    # In structured mode, with foreign records of every kind around them.
    await transport.publish(foreign_records("p.shop.billing", "o-9") + other)
    await transport.publish(
        [codec.encode(codec.decode(stored(r)), r.topic, "structured") for r in ours]
    )
    last_id = codec.decode(stored(ours[-1])).id
    for key in ("o-9", last_id):  # the subject, or the id of the last event of the chain
        trace = await read_trace(transport, key, since=time.time() - 60)
        chain = [
            (n.event.type, parent.event.type if parent else None) for n, parent, _ in trace.walk()
        ]
        assert chain == [
            ("OrderPlaced", None),
            ("InventoryReserved", "OrderPlaced"),
            ("PaymentProcessed", "InventoryReserved"),
            ("OrderCompleted", "PaymentProcessed"),
        ]
        assert {n.event.subject for n, _, _ in trace.walk()} == {"o-9"}
    # Outside the window, and on topics that hold none of it: nothing.
    assert (await read_trace(transport, "o-9", since=time.time() + 60)).roots == []
    assert (await read_trace(transport, "o-9", topics=["p.elsewhere"])).roots == []
