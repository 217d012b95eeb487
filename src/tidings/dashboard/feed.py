"""The dashboard's view of the log: a tail of every topic, indexed for the pages it serves.

One background task polls the broker (every ``interval`` seconds): new records of every
topic are read and sorted into recent events (the live feed), correlations (for order
timelines), dead letters and replays; end and committed offsets give throughput and
consumer lag. Everything held is bounded. On start, and for a partition that appears
later, the feed reads back at most ``window`` seconds (an hour: by the broker's time
index) and at most ``initial_per_partition`` records, so a large log costs no more than a
small one. A timeline the index does not hold is read from the log itself
(:func:`tidings.observability.reading.read_trace`, over the last
:data:`~tidings.observability.reading.DEFAULT_SINCE` seconds). Records that are not
CloudEvents are counted (``undecodable``) and otherwise skipped.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import logging
import time
from typing import Any

from tidings.observability.causality import (
    CausalTrace,
    DeadLetterFact,
    EventFact,
    Facts,
    ReplayFact,
    classify,
)
from tidings.observability.reading import DEFAULT_SINCE, read_trace
from tidings.transport.base import Record, Transport

log = logging.getLogger("tidings.dashboard")


@dataclasses.dataclass
class Correlation:
    """What the index keeps of one correlation (one order, in the shop)."""

    id: str
    facts: Facts = dataclasses.field(default_factory=Facts)
    first: EventFact | None = None
    last: EventFact | None = None
    events: int = 0
    dead_letters: int = 0

    def summary(self) -> dict[str, Any]:
        first, last = self.first, self.last
        return {
            "correlation_id": self.id,
            "first_type": first.type if first else None,
            "subject": first.subject if first else None,
            "started": first.time.isoformat() if first else None,
            "last_type": last.type if last else None,
            "last_source": last.source if last else None,
            "events": self.events,
            "dead_letters": self.dead_letters,
            "duration_ms": round((last.time - first.time).total_seconds() * 1000, 3)
            if first and last
            else 0.0,
        }


def event_summary(fact: EventFact, seq: int) -> dict[str, Any]:
    out = fact.to_dict()
    out["seq"] = seq
    return out


class LogFeed:
    """A bounded, live index of the log. Call :meth:`poll` (or :meth:`run`) to refresh it."""

    def __init__(
        self,
        transport: Transport,
        *,
        interval: float = 0.5,
        recent: int = 500,
        correlations: int = 5000,
        dead_letters: int = 2000,
        initial_per_partition: int = 5000,
        window: float = 3600.0,
        history_seconds: int = 120,
    ) -> None:
        self.transport = transport
        self.interval = interval
        self.initial_per_partition = initial_per_partition
        self.window = window
        self.positions: dict[tuple[str, int], int] = {}
        self.seq = 0
        self.recent: collections.deque[dict[str, Any]] = collections.deque(maxlen=recent)
        self.correlations: collections.OrderedDict[str, Correlation] = collections.OrderedDict()
        self.max_correlations = correlations
        self.subjects: dict[str, str] = {}  # subject -> its latest correlation
        self.dead_letters: collections.deque[DeadLetterFact] = collections.deque(
            maxlen=dead_letters
        )
        self.letters_of: dict[str, list[DeadLetterFact]] = {}  # event id -> its dead letters
        self.replays: dict[str, list[ReplayFact]] = {}
        self.caused: dict[str, list[EventFact]] = {}  # event id -> events it caused (indexed ones)
        self.services: dict[str, dict[str, Any]] = {}
        self.undecodable = 0
        self.topics: list[dict[str, Any]] = []
        self.ends: dict[tuple[str, int], int] = {}
        self.committed: dict[str, dict[tuple[str, int], int]] = {}
        self.waiting: dict[str, dict[tuple[str, int], int]] = {}  # on brokers of queues
        self.history: collections.deque[tuple[float, int]] = collections.deque(
            maxlen=history_seconds * 4
        )
        self.polled_at = 0.0
        self._changed = asyncio.Event()

    # -- polling -------------------------------------------------------------------------
    async def run(self) -> None:
        """Poll until cancelled; a failed poll is logged and tried again."""
        while True:
            try:
                await self.poll()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("dashboard: reading the log failed: %s", exc)
            await asyncio.sleep(self.interval)

    async def poll(self, batch: int = 1000) -> int:
        """Read what is new in every partition; returns how many records were read."""
        infos = await self.transport.topics()
        read = 0
        new: list[EventFact] = []
        ends = {(i.name, p): end for i in infos for p, end in i.end_offsets.items()}
        unknown = [key for key in ends if key not in self.positions]
        if unknown:  # where to start: the window back, at most initial_per_partition back
            since = await self.transport.offsets_for_time(unknown, time.time() - self.window)
            for key in unknown:
                self.positions[key] = max(since[key], ends[key] - self.initial_per_partition)
        for info in infos:
            for partition, end in sorted(info.end_offsets.items()):
                key = (info.name, partition)
                while self.positions[key] < end:
                    records = await self.transport.read(
                        info.name, partition, self.positions[key], batch
                    )
                    if not records:
                        break
                    for record in records:
                        fact = self._ingest(record)
                        if fact is not None:
                            new.append(fact)
                    read += len(records)
                    self.positions[key] = records[-1].offset + 1
        # The live feed in time order across partitions (each was read in its own order).
        for fact in sorted(new, key=lambda f: (f.time, f.id)):
            self.seq += 1
            self.recent.append(event_summary(fact, self.seq))
        self.ends = ends
        self.topics = [
            {
                "name": i.name,
                "partitions": [
                    {"partition": p, "end": o} for p, o in sorted(i.end_offsets.items())
                ],
                "records": sum(i.end_offsets.values()),
            }
            for i in sorted(infos, key=lambda i: i.name)
        ]
        groups = await self.transport.groups()
        if self.transport.capabilities.offsets:
            self.committed = {g: await self.transport.committed(g) for g in groups}
        else:  # queues keep no offsets (RabbitMQ, SQS): the lag is what waits in each queue
            self.waiting = {g: await self.transport.queued(g) for g in groups}
        now = time.time()
        self.history.append((now, sum(e for (t, _), e in ends.items() if not _internal(t))))
        self.polled_at = now
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()
        return read

    async def wait(self, seconds: float) -> None:
        """Return after the next poll, or after ``seconds``."""
        changed = self._changed
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(changed.wait(), seconds)

    def _ingest(self, record: Record) -> EventFact | None:
        """Index one record; returns the event, if it is a new one (not a dead letter)."""
        fact = classify(record)
        if fact is None:
            self.undecodable += 1
            return None
        event = None
        if isinstance(fact, EventFact):
            event = fact
            service = self.services.setdefault(fact.source, {"produced": 0, "last_event_at": None})
            service["produced"] += 1
            service["last_event_at"] = fact.time.isoformat()
            if fact.causation_id:
                self.caused.setdefault(fact.causation_id, []).append(fact)
            correlation = self._correlation(fact.correlation_id)
            if correlation.first is None or fact.time < correlation.first.time:
                correlation.first = fact
            if correlation.last is None or fact.time >= correlation.last.time:
                correlation.last = fact
            correlation.events += 1
            if fact.subject:
                self.subjects[fact.subject] = fact.correlation_id
        elif isinstance(fact, DeadLetterFact):
            if len(self.dead_letters) == self.dead_letters.maxlen:
                oldest = self.dead_letters[0]
                self.letters_of.get(oldest.event.id, [oldest]).remove(oldest)
            self.dead_letters.append(fact)
            self.letters_of.setdefault(fact.event.id, []).append(fact)
            correlation = self._correlation(fact.event.correlation_id)
            correlation.dead_letters += 1
        else:
            self.replays.setdefault(fact.event_id, []).append(fact)
            correlation = self._correlation(fact.correlation_id)
        correlation.facts.add(fact)
        return event

    def _correlation(self, correlation_id: str) -> Correlation:
        correlation = self.correlations.get(correlation_id)
        if correlation is None:
            correlation = self.correlations[correlation_id] = Correlation(correlation_id)
            while len(self.correlations) > self.max_correlations:
                _, old = self.correlations.popitem(last=False)
                for event_id in old.facts.events:
                    self.caused.pop(event_id, None)
                    self.replays.pop(event_id, None)
                if old.first is not None and old.first.subject:
                    if self.subjects.get(old.first.subject) == old.id:
                        del self.subjects[old.first.subject]
        return correlation

    # -- views ---------------------------------------------------------------------------
    def events_since(self, seq: int, limit: int = 200) -> list[dict[str, Any]]:
        new = [e for e in self.recent if e["seq"] > seq]
        return new[-limit:]

    def overview(self) -> dict[str, Any]:
        groups: list[dict[str, Any]] = []
        for group, offsets in sorted(self.committed.items()):
            subscribed = {t for (t, _) in offsets}
            for (topic, partition), end in sorted(self.ends.items()):
                if topic not in subscribed:
                    continue
                committed = offsets.get((topic, partition), 0)
                groups.append(
                    {
                        "group": group,
                        "topic": topic,
                        "partition": partition,
                        "committed": committed,
                        "end": end,
                        "lag": max(0, end - committed),
                    }
                )
        for group, queues in sorted(self.waiting.items()):  # no committed or end offsets
            for (topic, partition), count in sorted(queues.items()):
                groups.append(
                    {"group": group, "topic": topic, "partition": partition,
                     "committed": None, "end": None, "lag": count}
                )  # fmt: skip
        lag_by_group: dict[str, int] = collections.Counter()
        for row in groups:
            lag_by_group[str(row["group"])] += int(row["lag"])
        dead_by_group: dict[str, int] = collections.Counter(d.group for d in self.dead_letters)
        rates = self._rates()
        services = []
        for name in sorted(set(self.services) | set(self.committed) | set(self.waiting)):
            produced = self.services.get(name, {})
            services.append(
                {
                    "name": name,
                    "produced": produced.get("produced", 0),
                    "last_event_at": produced.get("last_event_at"),
                    "consumer_group": name in self.committed or name in self.waiting,
                    "lag": lag_by_group.get(name, 0),
                    "dead_letters": dead_by_group.get(name, 0),
                }
            )
        return {
            "time": self.polled_at,
            "services": services,
            "groups": groups,
            "topics": self.topics,
            "throughput": {"series": rates, "current": rates[-1][1] if rates else 0.0},
            "totals": {
                "events": sum(e for (t, _), e in self.ends.items() if not _internal(t)),
                "lag": sum(lag_by_group.values()),
                "dead_letters": len(self.dead_letters),
                "unresolved_dead_letters": self.unresolved(),
                "undecodable": self.undecodable,
            },
        }

    def _rates(self) -> list[tuple[float, float]]:
        """Events per second between polls, about one point per second."""
        points = list(self.history)
        rates: list[tuple[float, float]] = []
        i = 0
        for j in range(1, len(points)):
            if points[j][0] - points[i][0] >= 0.95 or j == len(points) - 1:
                dt = points[j][0] - points[i][0]
                if dt > 0:
                    rates.append(
                        (round(points[j][0], 3), round((points[j][1] - points[i][1]) / dt, 2))
                    )
                i = j
        return rates[-60:]

    def orders(self, limit: int = 50) -> list[dict[str, Any]]:
        """The most recent correlations, newest first."""
        newest = list(self.correlations.values())[-limit:]
        return [c.summary() for c in reversed(newest)]

    async def trace(self, key: str) -> CausalTrace:
        """The causal tree of a correlation id, event id or subject; from the index if held."""
        correlation_id = key if key in self.correlations else self.subjects.get(key)
        if correlation_id is None:
            for correlation in reversed(self.correlations.values()):
                if key in correlation.facts.events:
                    correlation_id = correlation.id
                    break
        if correlation_id is None or correlation_id not in self.correlations:
            return await read_trace(self.transport, key, since=time.time() - DEFAULT_SINCE)
        facts = self.correlations[correlation_id].facts
        return facts.trace(key, [correlation_id], self.committed)

    def dead_letter_state(self, letter: DeadLetterFact) -> dict[str, Any]:
        """Whether a dead letter was replayed since, and whether its group handled it."""
        event_id = letter.event.id
        replays = [r for r in self.replays.get(event_id, []) if r.at >= letter.failed_at - 1]
        later = [d for d in self.letters_of.get(event_id, []) if d.failed_at > letter.failed_at]
        effects = [
            {"type": e.type, "source": e.source, "time": e.time.isoformat(), "id": e.id}
            for e in self.caused.get(event_id, [])
        ]
        status = "dead"
        if replays:
            replay = replays[-1]
            handled = (
                self.committed.get(replay.group, {}).get((replay.topic, replay.partition), 0)
                > replay.offset
            )
            if any(d.failed_at >= replay.at for d in later):
                status = "failed again"
            elif handled:
                status = "handled"
            else:
                status = "replayed"
        return {"status": status, "replays": len(replays), "effects": effects}

    def unresolved(self) -> int:
        """Events whose latest dead letter was not replayed and handled since."""
        return sum(
            1
            for letters in self.letters_of.values()
            if letters and self.dead_letter_state(letters[-1])["status"] != "handled"
        )

    def dead_letter_summaries(self) -> list[dict[str, Any]]:
        out = []
        for d in reversed(self.dead_letters):
            out.append(
                {
                    "group": d.group,
                    "partition": d.partition,
                    "offset": d.offset,
                    "failed_at": d.failed_at,
                    "event_type": d.event.type,
                    "event_id": d.event.id,
                    "subject": d.event.subject,
                    "correlation_id": d.event.correlation_id,
                    "from": f"{d.event.topic}/{d.event.partition}@{d.event.offset}",
                    "attempts": d.attempts,
                    "reason": d.reason,
                    **self.dead_letter_state(d),
                }
            )
        return out

    def find_dead_letter(self, group: str, partition: int, offset: int) -> DeadLetterFact | None:
        topic = f"{group}.dlq"
        for d in self.dead_letters:
            if d.topic == topic and d.partition == partition and d.offset == offset:
                return d
        return None


def _internal(topic: str) -> bool:
    """Dead-letter and replay topics: not new events, so not throughput."""
    return topic.endswith((".dlq", ".replay"))


__all__ = ["Correlation", "LogFeed"]
