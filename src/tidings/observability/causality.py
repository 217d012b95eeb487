"""Causality: the tree of events one request caused, read back from the log.

Every envelope names its ``correlationid`` (shared by everything one request caused) and
its ``causationid`` (the event whose handling published it). Reading the events of one
correlation and hanging each under its cause gives the causal tree: which event caused
which, in which service (the effect's ``source`` is the service that handled the cause),
when, and how long from cause to effect. Dead letters (``<group>.dlq``) and replays
(``<group>.replay``) of an event are attached to it, and a replay is marked handled once
its group has committed past it.

This module only builds trees from records it is given (pure functions);
:func:`tidings.observability.reading.read_trace` reads them from a window of the log, and
the dashboard feeds :class:`Facts` from its own tail of the log.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator
from datetime import datetime, timedelta
from typing import Any

from tidings import codec
from tidings.records import Record
from tidings.reliability.deadletter import DeadLetter, is_dead_letter

REPLAY_SUFFIX = ".replay"


@dataclasses.dataclass(frozen=True, slots=True)
class EventFact:
    """One event as the log holds it, with where it is."""

    id: str
    type: str
    source: str
    subject: str | None
    time: datetime
    correlation_id: str
    causation_id: str | None
    topic: str
    partition: int
    offset: int
    data: dict[str, Any]

    @classmethod
    def from_record(
        cls,
        record: Record,
        *,
        topic: str | None = None,
        partition: int | None = None,
        offset: int | None = None,
    ) -> EventFact | None:
        """The event in a record, or None if the record is not a readable CloudEvent."""
        try:
            env = codec.decode(record)
        except codec.DecodeError:
            return None
        return cls(
            env.id,
            env.type,
            env.source,
            env.subject,
            env.time,
            env.correlationid or env.id,
            env.causationid,
            record.topic if topic is None else topic,
            record.partition if partition is None else partition,
            record.offset if offset is None else offset,
            env.data,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "type": self.type,
            "source": self.source,
            "subject": self.subject,
            "time": self.time.isoformat(),
            "correlation_id": self.correlation_id,
            "causation_id": self.causation_id,
            "topic": self.topic,
            "partition": self.partition,
            "offset": self.offset,
            "data": self.data,
        }


@dataclasses.dataclass(frozen=True, slots=True)
class DeadLetterFact:
    """An event a consumer group gave up on: the original event and why."""

    event: EventFact  # at its original coordinates
    group: str
    reason: str
    error: str
    attempts: int
    failed_at: float
    topic: str  # the dead-letter topic and position
    partition: int
    offset: int

    @classmethod
    def from_record(cls, record: Record) -> DeadLetterFact | None:
        letter = DeadLetter.from_record(record)
        event = EventFact.from_record(
            record, topic=letter.topic, partition=letter.partition, offset=letter.offset
        )
        if event is None:
            return None
        return cls(
            event,
            letter.group,
            letter.reason,
            letter.error,
            letter.attempts,
            letter.failed_at,
            record.topic,
            record.partition,
            record.offset,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "group": self.group,
            "reason": self.reason,
            "error": self.error,
            "attempts": self.attempts,
            "failed_at": self.failed_at,
            "topic": self.topic,
            "partition": self.partition,
            "offset": self.offset,
        }


@dataclasses.dataclass(frozen=True, slots=True)
class ReplayFact:
    """A dead letter sent back to its group (a copy of the event on ``<group>.replay``)."""

    event_id: str
    correlation_id: str
    group: str
    topic: str
    partition: int
    offset: int
    at: float  # when the log stored it

    def to_dict(self, handled: bool | None) -> dict[str, Any]:
        return {
            "group": self.group,
            "topic": self.topic,
            "partition": self.partition,
            "offset": self.offset,
            "at": self.at,
            "handled": handled,
        }


Fact = EventFact | DeadLetterFact | ReplayFact


def classify(record: Record) -> Fact | None:
    """What a record of any topic says about causality (None: unreadable)."""
    if is_dead_letter(record.headers):
        return DeadLetterFact.from_record(record)
    if record.topic.endswith(REPLAY_SUFFIX):
        event = EventFact.from_record(record)
        if event is None:
            return None
        group = record.topic[: -len(REPLAY_SUFFIX)]
        return ReplayFact(
            event.id,
            event.correlation_id,
            group,
            record.topic,
            record.partition,
            record.offset,
            record.timestamp,
        )
    return EventFact.from_record(record)


@dataclasses.dataclass
class TraceNode:
    """An event in the tree, with what became of it."""

    event: EventFact
    children: list[TraceNode] = dataclasses.field(default_factory=list)
    dead_letters: list[DeadLetterFact] = dataclasses.field(default_factory=list)
    replays: list[tuple[ReplayFact, bool | None]] = dataclasses.field(default_factory=list)
    copies: int = 1  # >1: published more than once (a relay crashed between publish and delete)


@dataclasses.dataclass
class CausalTrace:
    """The causal forest of one correlation (usually one tree, rooted at the request)."""

    key: str
    roots: list[TraceNode]

    def walk(self) -> Iterator[tuple[TraceNode, TraceNode | None, int]]:
        """(node, its cause's node, depth), depth first, children in time order."""
        stack: list[tuple[TraceNode, TraceNode | None, int]] = [
            (r, None, 0) for r in reversed(self.roots)
        ]
        while stack:
            node, parent, depth = stack.pop()
            yield node, parent, depth
            stack.extend((c, node, depth + 1) for c in reversed(node.children))

    @property
    def correlation_ids(self) -> list[str]:
        return sorted({r.event.correlation_id for r in self.roots})

    @property
    def start(self) -> datetime | None:
        return min((n.event.time for n, _, _ in self.walk()), default=None)

    @property
    def end(self) -> datetime | None:
        return max((n.event.time for n, _, _ in self.walk()), default=None)

    def to_dict(self) -> dict[str, Any]:
        start = self.start

        def node_dict(node: TraceNode, parent: TraceNode | None) -> dict[str, Any]:
            out = node.event.to_dict()
            out["since_cause_ms"] = (
                None if parent is None else _ms(node.event.time - parent.event.time)
            )
            out["since_start_ms"] = _ms(node.event.time - start) if start else 0.0
            out["dead_letters"] = [d.to_dict() for d in node.dead_letters]
            out["replays"] = [r.to_dict(handled) for r, handled in node.replays]
            out["copies"] = node.copies
            out["children"] = [node_dict(c, node) for c in node.children]
            return out

        end = self.end
        return {
            "key": self.key,
            "correlation_ids": self.correlation_ids,
            "events": sum(1 for _ in self.walk()),
            "services": sorted({n.event.source for n, _, _ in self.walk()}),
            "start": start.isoformat() if start else None,
            "duration_ms": _ms(end - start) if start and end else 0.0,
            "tree": [node_dict(r, None) for r in self.roots],
        }

    def render(self) -> list[str]:
        """The tree as text lines (box-drawing characters, no colour)."""
        if not self.roots:
            return [f"no events found for {self.key}"]
        data = self.to_dict()
        lines = [
            f"correlation {', '.join(data['correlation_ids'])}: {data['events']} events, "
            f"services {', '.join(data['services'])}, {data['duration_ms']:.1f} ms first to last"
        ]

        def visit(node: TraceNode, parent: TraceNode | None, prefix: str, last: bool) -> None:
            e = node.event
            local = e.time.astimezone()
            when = local.strftime("%H:%M:%S.") + f"{local.microsecond // 1000:03d}"
            delta = "" if parent is None else f"  +{_ms(e.time - parent.event.time):.1f} ms"
            copies = f"  (published {node.copies} times)" if node.copies > 1 else ""
            connector = "" if parent is None else ("└─ " if last else "├─ ")
            lines.append(
                f"{prefix}{connector}{e.type}  by {e.source}  at {when}{delta}  "
                f"{e.topic}/{e.partition}@{e.offset}{copies}"
            )
            inner = prefix if parent is None else prefix + ("   " if last else "│  ")
            note = inner + ("│  " if node.children else "   ")
            for d in node.dead_letters:
                lines.append(
                    f"{note}✗ dead-lettered by {d.group} after {d.attempts} attempt(s): "
                    f"{d.reason} ({d.error}) [{d.topic}/{d.partition}@{d.offset}]"
                )
            for r, handled in node.replays:
                state = {True: "handled", False: "not handled yet", None: "?"}[handled]
                lines.append(
                    f"{note}↻ replayed to {r.group} ({state}) [{r.topic}/{r.partition}@{r.offset}]"
                )
            for i, child in enumerate(node.children):
                visit(child, node, inner, i == len(node.children) - 1)

        for root in self.roots:
            visit(root, None, "", True)
        return lines


def _ms(delta: timedelta) -> float:
    return round(delta.total_seconds() * 1000, 3)


class Facts:
    """Facts about events, gathered from records; builds the tree of a correlation."""

    def __init__(self) -> None:
        self.events: dict[str, EventFact] = {}
        self.copies: dict[str, int] = {}
        self.dead_letters: dict[str, list[DeadLetterFact]] = {}
        self.replays: dict[str, list[ReplayFact]] = {}

    def add(self, fact: Fact) -> None:
        if isinstance(fact, EventFact):
            if fact.id in self.events:
                self.copies[fact.id] = self.copies.get(fact.id, 1) + 1
            else:
                self.events[fact.id] = fact
        elif isinstance(fact, DeadLetterFact):
            self.dead_letters.setdefault(fact.event.id, []).append(fact)
        else:
            self.replays.setdefault(fact.event_id, []).append(fact)

    def trace(
        self,
        key: str,
        correlation_ids: Iterable[str],
        committed: dict[str, dict[tuple[str, int], int]] | None = None,
    ) -> CausalTrace:
        """The tree of these correlations; ``committed`` (group -> offsets) marks replays."""
        wanted = set(correlation_ids)
        events = {i: e for i, e in self.events.items() if e.correlation_id in wanted}
        for event_id, letters in self.dead_letters.items():  # dead letters whose original is gone
            if event_id not in events and letters[0].event.correlation_id in wanted:
                events[event_id] = letters[0].event
        nodes = {i: TraceNode(e, copies=self.copies.get(i, 1)) for i, e in events.items()}
        roots: list[TraceNode] = []
        for node in nodes.values():
            event_id = node.event.id
            node.dead_letters = sorted(
                self.dead_letters.get(event_id, []), key=lambda d: d.failed_at
            )
            for replay in sorted(self.replays.get(event_id, []), key=lambda r: r.at):
                handled = None
                if committed is not None and replay.group in committed:
                    handled = (
                        committed[replay.group].get((replay.topic, replay.partition), 0)
                        > replay.offset
                    )
                node.replays.append((replay, handled))
            cause = nodes.get(node.event.causation_id or "")
            (cause.children if cause is not None else roots).append(node)
        order = lambda n: (n.event.time, n.event.id)  # noqa: E731
        for node in nodes.values():
            node.children.sort(key=order)
        return CausalTrace(key, sorted(roots, key=order))
