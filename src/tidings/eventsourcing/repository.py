"""Loading aggregates from their streams and saving what they recorded.

Used by :class:`tidings.service.Context` (``ctx.load`` and ``ctx.save``) inside a unit of
work; business code does not call it. The rules:

* **Load** starts from the latest snapshot written with the class's snapshot schema (at
  most the version asked for) and replays the events after it, each upcast to the version
  its class reads; with no snapshot, or one that no longer validates, from version 0. The
  state is the same either way (the store conformance suite checks it). ``at=TIME`` replays
  the events recorded at or before ``TIME``.
* **Save** appends the pending events at the version the aggregate was loaded at: if
  another unit of work appended first, :class:`~tidings.store.base.ConcurrencyConflict`
  is raised and the runtime runs the handler again on the new state (backed off, never
  counted as an attempt). The events are stored under the ids and times of the envelopes
  they are published in, so the stream and the broker name the same events.
* When a save crosses a multiple of ``snapshot_every``, the state it reaches is kept as a
  snapshot in the same unit of work.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime
from typing import TypeVar

import pydantic

from tidings.envelope import Envelope
from tidings.eventsourcing.aggregate import Aggregate, AggregateError
from tidings.messages import Event
from tidings.store.base import NewEvent, Snapshot, StoredEvent, UnitOfWork
from tidings.upcasting import NoUpcastPath, upcast

log = logging.getLogger("tidings.eventsourcing")

A = TypeVar("A", bound=Aggregate)


def event_of(aggregate_type: type[Aggregate], stored: StoredEvent) -> Event:
    """The typed event ``stored`` holds, upcast to the version its class reads."""
    event_type = aggregate_type.aggregate_info.events.get(stored.type)
    where = f"{stored.stream} v{stored.version}"
    if event_type is None:
        raise AggregateError(
            f"{where}: {aggregate_type.__name__} does not apply events of type {stored.type}"
        )
    try:
        data = upcast(event_type, stored.data, stored.schema_version)
        return event_type.model_validate(data)
    except (NoUpcastPath, pydantic.ValidationError) as exc:
        first = str(exc).strip().splitlines()[0]
        raise AggregateError(f"{where}: cannot read {stored.type}: {first}") from exc


def replay(
    aggregate_type: type[A], id: str, events: Sequence[StoredEvent], start: A | None = None
) -> A:
    """``start`` (or a blank ``aggregate_type``) with ``events`` applied, in order."""
    aggregate = start if start is not None else aggregate_type(id=id)
    version = aggregate.version  # counted here: a pydantic private attribute is slow to read
    apply = aggregate.apply
    for stored in events:
        if stored.version != version + 1:
            raise AggregateError(
                f"{stored.stream}: event at version {stored.version} follows version {version}"
            )
        apply(event_of(aggregate_type, stored))
        version += 1
    aggregate._at_version(version)
    return aggregate


async def load(
    uow: UnitOfWork,
    aggregate_type: type[A],
    id: str,
    *,
    version: int | None = None,
    at: datetime | None = None,
) -> A | None:
    """The aggregate ``id`` (at ``version``, or as it was at ``at``), or None if its stream
    has no event (at that point)."""
    stream = aggregate_type.stream_id(id)
    if at is not None and at.tzinfo is None:
        raise ValueError(f"at={at.isoformat()}: give a time zone (datetime.now(UTC), say)")
    if at is not None:
        events = [e for e in await uow.read_stream(stream, 0, version) if e.time <= at]
        return replay(aggregate_type, id, events) if events else None
    info = aggregate_type.aggregate_info
    if info.snapshot_every is None:
        events = await uow.read_stream(stream, 0, version)
        return replay(aggregate_type, id, events) if events else None
    snapshot, events = await uow.read_aggregate(stream, info.snapshot_schema, version)
    start = None if snapshot is None else _from_snapshot(aggregate_type, snapshot)
    if snapshot is not None and start is None:  # unreadable: replay from version 0
        events = await uow.read_stream(stream, 0, version)
    if start is None and not events:
        return None
    return replay(aggregate_type, id, events, start)


def _from_snapshot(aggregate_type: type[A], snapshot: Snapshot) -> A | None:
    stream = snapshot.stream
    try:
        aggregate = aggregate_type.model_validate(snapshot.state)
    except pydantic.ValidationError as exc:
        log.warning(
            "%s: ignoring the snapshot at version %d, which %s no longer reads (%s);"
            " raise snapshot_version when the fields change",
            stream,
            snapshot.version,
            aggregate_type.__name__,
            str(exc).splitlines()[0],
        )
        return None
    aggregate._at_version(snapshot.version)
    return aggregate


async def append(uow: UnitOfWork, aggregate: Aggregate, envelopes: Sequence[Envelope]) -> None:
    """Append the pending events of ``aggregate``, published in ``envelopes`` (one each, in
    order), and take a snapshot if one is due; the aggregate then has nothing pending."""
    pending = aggregate.pending_events()
    if len(envelopes) != len(pending):
        raise ValueError(f"{len(pending)} pending events, {len(envelopes)} envelopes")
    if not pending:
        return
    info = type(aggregate).aggregate_info
    stream = aggregate.stream_id(aggregate.id)
    loaded_at = aggregate.version - len(pending)
    await uow.append(
        stream,
        loaded_at,
        [
            NewEvent(
                event_id=envelope.id,
                type=event.message_info.type,
                schema_version=event.message_info.version,
                time=envelope.time,
                data=envelope.data,
            )
            for event, envelope in zip(pending, envelopes, strict=True)
        ],
    )
    every = info.snapshot_every
    if every is not None and loaded_at // every != aggregate.version // every:
        state = aggregate.model_dump(mode="json")
        await uow.save_snapshot(Snapshot(stream, aggregate.version, info.snapshot_schema, state))
    aggregate._saved()
