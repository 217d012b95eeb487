"""Metrics: Prometheus counters, a histogram and gauges, served over HTTP per process.

Every service process serves its own ``/metrics`` (``tidings run --metrics-port``, or
``TIDINGS_METRICS_PORT``; off unless asked). Names follow Prometheus conventions (base
units, ``_total`` for counters, snake_case labels)::

    tidings_events_consumed_total{consumer_group,topic,event_type,outcome}
        outcome: handled | duplicate | skipped | dead_lettered
    tidings_events_published_total{service,topic,event_type}
        counted when the broker has the event (after the outbox relay published it)
    tidings_handler_duration_seconds{consumer_group,event_type}        histogram
        one handling, all its attempts and backoff included
    tidings_handler_retries_total{consumer_group,event_type,error}
    tidings_dead_letters_total{consumer_group,topic,reason}
        reason: the dead letter's kind (DeadLetterKind): undecodable | invalid |
        non_recoverable | retries_exhausted | too_large
    tidings_consumer_lag{consumer_group,topic,partition}                gauge, records
    tidings_outbox_backlog{service}                                     gauge, records
    tidings_metrics_sampled_timestamp_seconds{consumer_group}           gauge

Lag and backlog are sampled every few seconds by a background task (end offsets minus
the group's committed offsets, and the outbox row count), never on the hot path. The
per-event series (consumed, published, handler duration) are counted by the runtime's
observer hooks in plain Python numbers, one object per label set, and read out when
``/metrics`` is scraped (:class:`EventCounts`, a custom collector, the client library's
way to expose numbers kept elsewhere): prometheus-client's own ``Counter.inc`` and
``Histogram.observe`` take a lock and walk the buckets in Python, three times the work
per event. The rarer series (retries, dead letters) use label children cached here.
"""

from __future__ import annotations

import asyncio
import bisect
import json
import logging
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from tidings.envelope import Envelope
from tidings.records import Record
from tidings.reliability.deadletter import DeadLetterReason, replay_topic
from tidings.store.base import OutboxEntry

if TYPE_CHECKING:
    from wsgiref.simple_server import WSGIServer

    from tidings.runtime import Outcome, Runtime

log = logging.getLogger("tidings.metrics")

# Handler durations run from sub-millisecond (a duplicate) to seconds (retries with backoff).
DURATION_BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
)
DEFAULT_SAMPLE_INTERVAL = 5.0
# The le labels, written as prometheus-client writes them.
_LE = [*(str(floatToGoString(b)) for b in DURATION_BUCKETS), "+Inf"]  # type: ignore[no-untyped-call]


class Handled:
    """The events of one consumer group, topic, type and outcome: their count and, unless
    skipped, the histogram of their handler durations (per bucket, not cumulative)."""

    __slots__ = ("buckets", "count", "seconds")

    def __init__(self, timed: bool) -> None:
        self.count = 0
        self.buckets: list[int] | None = [0] * len(_LE) if timed else None
        self.seconds = 0.0


class EventCounts(Collector):
    """The per-event series, counted on the event loop, read by the scraping thread.

    Written by one thread only; a scrape copies before it reads (``list`` of a dict or a
    list is one step under the GIL), and a histogram's count is the sum of its buckets,
    so what is served is always consistent, at most one event behind.
    """

    def __init__(self) -> None:
        self.handled: dict[tuple[str, str, str, str], Handled] = {}
        self.published: dict[tuple[str, str, str], int] = {}

    def collect(self) -> Iterator[Metric]:
        consumed = CounterMetricFamily(
            "tidings_events_consumed",
            "Events a consumer group received, by what became of them.",
            labels=["consumer_group", "topic", "event_type", "outcome"],
        )
        duration = HistogramMetricFamily(
            "tidings_handler_duration_seconds",
            "Time to handle one event, every attempt and backoff included.",
            labels=["consumer_group", "event_type"],
        )
        timed: dict[tuple[str, str], tuple[list[int], float]] = {}
        for (group, topic, event_type, outcome), cell in list(self.handled.items()):
            consumed.add_metric([group, topic, event_type, outcome], cell.count)
            if cell.buckets is not None:  # one histogram per group and type
                buckets, seconds = timed.get((group, event_type), ([0] * len(_LE), 0.0))
                timed[group, event_type] = (
                    [a + b for a, b in zip(buckets, list(cell.buckets), strict=True)],
                    seconds + cell.seconds,
                )
        for (group, event_type), (buckets, seconds) in timed.items():
            cumulative, total = [], 0
            for le, count in zip(_LE, buckets, strict=True):
                total += count
                cumulative.append((le, total))
            duration.add_metric([group, event_type], cumulative, seconds)
        published = CounterMetricFamily(
            "tidings_events_published",
            "Events a service published (the broker has them).",
            labels=["service", "topic", "event_type"],
        )
        for labels, count in list(self.published.items()):
            published.add_metric(list(labels), count)
        return iter([consumed, duration, published])


class Metrics:
    """The metrics of one process, in their own registry (so tests can make several)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.events = EventCounts()
        r.register(self.events)
        self.retries = Counter(
            "tidings_handler_retries",
            "Failed handler attempts that were retried.",
            ["consumer_group", "event_type", "error"],
            registry=r,
        )
        self.dead_letters = Counter(
            "tidings_dead_letters",
            "Events sent to a dead-letter topic.",
            ["consumer_group", "topic", "reason"],
            registry=r,
        )
        self.lag = Gauge(
            "tidings_consumer_lag",
            "Records in a partition the consumer group has not committed yet.",
            ["consumer_group", "topic", "partition"],
            registry=r,
        )
        self.backlog = Gauge(
            "tidings_outbox_backlog",
            "Records in the outbox waiting to be published.",
            ["service"],
            registry=r,
        )
        self.sampled = Gauge(
            "tidings_metrics_sampled_timestamp_seconds",
            "When consumer lag and outbox backlog were last sampled (Unix time).",
            ["consumer_group"],
            registry=r,
        )
        self._children: dict[tuple[Any, ...], Any] = {}
        self._server: WSGIServer | None = None
        self.port: int | None = None

    def _child(self, metric: Any, *labels: str) -> Any:
        key = (id(metric), *labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    # -- the HTTP endpoint ---------------------------------------------------------------
    def serve(self, port: int, host: str = "127.0.0.1") -> int:
        """Serve ``/metrics`` on ``host:port`` (0: a free port) in a thread; returns the port."""
        server, _ = start_http_server(port, addr=host, registry=self.registry)
        self._server = server
        self.port = int(server.server_port)
        return self.port

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    # -- observer hooks (hot path) -------------------------------------------------------
    def handled(
        self,
        group: str,
        envelope: Envelope | None,
        record: Record,
        outcome: Outcome,
        seconds: float,
    ) -> None:
        event_type = envelope.type if envelope is not None else "undecodable"
        key = (group, record.topic, event_type, outcome)
        cell = self.events.handled.get(key)
        if cell is None:
            cell = self.events.handled[key] = Handled(timed=outcome != "skipped")
        cell.count += 1
        if cell.buckets is not None:
            cell.buckets[bisect.bisect_left(DURATION_BUCKETS, seconds)] += 1  # le: <= bound
            cell.seconds += seconds

    def retried(self, group: str, envelope: Envelope, error: BaseException) -> None:
        self._child(self.retries, group, envelope.type, type(error).__name__).inc()

    def dead_lettered(self, group: str, record: Record, reason: DeadLetterReason) -> None:
        self._child(self.dead_letters, group, record.topic, reason.kind.value).inc()

    def published_entries(self, service: str, entries: list[OutboxEntry]) -> None:
        for entry in entries:
            record = entry.record
            event_type = record.headers.get("ce_type")
            if event_type is None:  # structured mode: the type is inside the JSON body
                try:
                    event_type = str(json.loads(record.value).get("type", "unknown"))
                except (ValueError, AttributeError):
                    event_type = "unknown"
            key = (service, record.topic, event_type)
            published = self.events.published
            published[key] = published.get(key, 0) + 1

    # -- sampling (background) -----------------------------------------------------------
    async def sample(self, runtime: Runtime) -> None:
        """Set the lag gauges of this process's group and its outbox backlog once."""
        group = runtime.service.group
        subscribed = {*runtime.service.topics(), replay_topic(group)}
        committed = await runtime.transport.committed(group)
        for info in await runtime.transport.topics():
            if info.name not in subscribed:
                continue
            for partition, end in info.end_offsets.items():
                lag = max(0, end - committed.get((info.name, partition), 0))
                self._child(self.lag, group, info.name, str(partition)).set(lag)
        backlog = await runtime.store.outbox_backlog(runtime.service.name)
        self._child(self.backlog, runtime.service.name).set(backlog)
        self._child(self.sampled, group).set(time.time())

    async def run(self, runtime: Runtime, interval: float = DEFAULT_SAMPLE_INTERVAL) -> None:
        """Sample every ``interval`` seconds until cancelled; a failed sample is logged."""
        while True:
            try:
                await self.sample(runtime)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("sampling consumer lag failed: %s", exc)
            await asyncio.sleep(interval)
