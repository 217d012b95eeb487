"""Reading causality back from the log, in one bounded pass (``tidings trace``).

A trace reads a window of the log, never all of it: the records stored since ``since``
(:data:`DEFAULT_SINCE`, a day, unless told), of the topics named (every topic unless
told; dead-letter and replay topics always, since they attach to events), fetched with
``read_ranges`` (on Kafka, all partitions at once).

One pass finds the correlations the key names and where every correlation's records are:
the id, correlation and subject come from the ``ce_`` headers in binary mode, so no
payload is parsed, and a record that is not a CloudEvent (raw bytes, other JSON, a broken
header) is skipped. The index keeps 16 bytes per record (offset and a hash of the
correlation id, per partition): a hash that matches only by chance is sorted out when the
few records of the wanted correlations are read again, decoded, and hung in the tree.
"""

from __future__ import annotations

import json
from array import array
from collections.abc import Callable, Collection, Iterable, Mapping

from tidings.observability.causality import CausalTrace, Facts, ReplayFact, classify
from tidings.records import Record
from tidings.transport.contract import PartitionRange, Transport
from tidings.transport.tools import partition_ranges

DEFAULT_SINCE = 24 * 3600.0  # seconds: what a trace reads unless told (--since)
INTERNAL_SUFFIXES = (".dlq", ".replay")  # dead letters and replays, read with any topic


def chosen_topics(topics: Collection[str] | None) -> Callable[[str], bool] | None:
    """The topics a tool reads: those named, with every dead-letter and replay topic
    (None, every topic, when none is named)."""
    if not topics:
        return None
    named = frozenset(topics)
    return lambda name: name in named or name.endswith(INTERNAL_SUFFIXES)


def quick_attributes(record: Record) -> tuple[str, str, str | None] | None:
    """(id, correlation id, subject) of a CloudEvent, or None for a record that is not one.

    Binary mode: from the headers alone. Structured mode: only a value that holds the
    key ``"specversion"`` is parsed (raw bytes and other JSON are refused without parsing;
    a producer that escapes letters of that key is not read)."""
    headers = record.headers
    event_id = headers.get("ce_id")
    if event_id is not None:
        return event_id, headers.get("ce_correlationid") or event_id, headers.get("ce_subject")
    value = record.value
    if b'"specversion"' not in value:  # cheap: another system's JSON is refused unparsed
        return None
    try:
        body = json.loads(value)
    except ValueError:  # not JSON, or not UTF-8
        return None
    if not isinstance(body, dict) or not body.get("id") or not body.get("specversion"):
        return None
    event_id = str(body["id"])
    subject = body.get("subject")
    return (
        event_id,
        str(body.get("correlationid") or event_id),
        None if subject is None else str(subject),
    )


def may_be_cloudevent(headers: Mapping[str, str], value: bytes) -> bool:
    """False for a record that cannot be a CloudEvent (no ``ce_id`` header, and no
    ``"specversion"`` in its value): a tool need not even make a Record of it."""
    return "ce_id" in headers or b'"specversion"' in value


class CorrelationIndex:
    """Where the records of each correlation are: per partition, each record's offset
    and a hash of its correlation id (two machine words: a few million records fit in a
    few tens of MiB). Hashes are Python's, so an index lives in one process."""

    def __init__(self) -> None:
        self._partitions: dict[tuple[str, int], tuple[array[int], array[int]]] = {}

    def add(self, record: Record, correlation_id: str) -> None:
        where = (record.topic, record.partition)
        arrays = self._partitions.get(where)
        if arrays is None:
            arrays = self._partitions[where] = (array("q"), array("q"))
        arrays[0].append(record.offset)
        arrays[1].append(hash(correlation_id))

    def find(self, correlation_ids: Iterable[str]) -> dict[tuple[str, int], list[int]]:
        """(topic, partition) -> offsets of records that may belong to these correlations."""
        wanted = {hash(c) for c in correlation_ids}
        found: dict[tuple[str, int], list[int]] = {}
        for where, (offsets, hashes) in self._partitions.items():
            mine = [o for o, h in zip(offsets, hashes, strict=True) if h in wanted]
            if mine:
                found[where] = mine
        return found


async def read_trace(
    transport: Transport,
    key: str,
    *,
    since: float | None = None,
    topics: Collection[str] | None = None,
    batch: int = 5000,
) -> CausalTrace:
    """The causal tree of ``key``: a correlation id, or any event id or subject in one,
    from the records stored since ``since`` (None: every record kept) in ``topics``
    (None: all; see :func:`chosen_topics`). A subject (such as an order id) may span
    several correlations; the tree then has several roots."""
    ranges = await partition_ranges(transport, since, chosen_topics(topics))
    index = CorrelationIndex()
    correlations: set[str] = set()
    async for records in transport.read_ranges(ranges, batch, may_be_cloudevent):
        for record in records:
            attributes = quick_attributes(record)
            if attributes is None:
                continue  # not a CloudEvent: not ours to trace
            event_id, correlation_id, subject = attributes
            if key == correlation_id or key == event_id or key == subject:
                correlations.add(correlation_id)
            index.add(record, correlation_id)
    facts = Facts()
    groups: set[str] = set()
    if correlations:
        for record in await _read_again(transport, index.find(correlations), batch):
            attributes = quick_attributes(record)
            fact = classify(record) if attributes and attributes[1] in correlations else None
            if fact is not None:
                facts.add(fact)
                if isinstance(fact, ReplayFact):
                    groups.add(fact.group)
    committed = {g: await transport.committed(g) for g in groups}
    return facts.trace(key, correlations, committed)


async def _read_again(
    transport: Transport, found: dict[tuple[str, int], list[int]], batch: int, gap: int = 200
) -> list[Record]:
    """The records at these offsets: offsets less than ``gap`` apart are read as one
    range, and each round reads at most one range per partition."""
    spans: dict[tuple[str, int], list[PartitionRange]] = {}
    for (topic, partition), offsets in found.items():
        offsets.sort()
        runs = spans.setdefault((topic, partition), [])
        for offset in offsets:
            if runs and offset - runs[-1][3] < gap:
                runs[-1] = (topic, partition, runs[-1][2], offset + 1)
            else:
                runs.append((topic, partition, offset, offset + 1))
    wanted = {(t, p): set(o) for (t, p), o in found.items()}
    out: list[Record] = []
    for round_ in range(max((len(r) for r in spans.values()), default=0)):
        ranges = [runs[round_] for runs in spans.values() if round_ < len(runs)]
        async for records in transport.read_ranges(ranges, batch):
            out += [r for r in records if r.offset in wanted[(r.topic, r.partition)]]
    return out
