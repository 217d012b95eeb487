"""The per-event metrics, counted in plain numbers, read as Prometheus counters and a
histogram with the names, labels and bucket rules prometheus-client's own would have."""

from __future__ import annotations

import time

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from tidings.envelope import Envelope
from tidings.observability.metrics import Metrics
from tidings.records import OutgoingRecord, Record
from tidings.store.base import OutboxEntry


def test_counts_and_durations_read_as_prometheus_series() -> None:
    metrics = Metrics()
    placed = Envelope("e1", "shop.order", "OrderPlaced", "o-1", {})
    record = Record("shop.orders", 0, 1, "o-1", b"{}", {}, time.time())
    for seconds in (0.0001, 0.0005, 0.003, 0.2, 50.0):
        metrics.handled("inventory", placed, record, "handled", seconds)
    metrics.handled("inventory", placed, record, "duplicate", 0.0004)
    metrics.handled("inventory", placed, record, "skipped", 0.0004)
    metrics.handled("inventory", None, record, "dead_lettered", 0.001)
    outgoing = OutgoingRecord("shop.inventory", "o-1", b"{}", {"ce_type": "InventoryReserved"})
    metrics.published_entries("inventory", [OutboxEntry(1, outgoing), OutboxEntry(2, outgoing)])

    text = generate_latest(metrics.registry).decode()
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }

    def value(name: str, **labels: str) -> float:
        return samples[name, tuple(sorted(labels.items()))]

    where = {"consumer_group": "inventory", "topic": "shop.orders"}
    assert (
        value("tidings_events_consumed_total", **where, event_type="OrderPlaced", outcome="handled")
        == 5
    )
    assert (
        value("tidings_events_consumed_total", **where, event_type="OrderPlaced", outcome="skipped")
        == 1
    )
    assert (
        value(
            "tidings_events_consumed_total",
            **where,
            event_type="undecodable",
            outcome="dead_lettered",
        )
        == 1
    )
    assert (
        value(
            "tidings_events_published_total",
            service="inventory",
            topic="shop.inventory",
            event_type="InventoryReserved",
        )
        == 2
    )
    # Handled and duplicate are timed, skipped is not; buckets are cumulative, le = "<=".
    timed = {"consumer_group": "inventory", "event_type": "OrderPlaced"}
    assert value("tidings_handler_duration_seconds_count", **timed) == 6
    assert abs(value("tidings_handler_duration_seconds_sum", **timed) - 50.2040) < 1e-9
    assert value("tidings_handler_duration_seconds_bucket", **timed, le="0.0005") == 3
    assert value("tidings_handler_duration_seconds_bucket", **timed, le="0.005") == 4
    assert value("tidings_handler_duration_seconds_bucket", **timed, le="0.25") == 5
    assert value("tidings_handler_duration_seconds_bucket", **timed, le="30.0") == 5
    assert value("tidings_handler_duration_seconds_bucket", **timed, le="+Inf") == 6
    assert "# TYPE tidings_handler_duration_seconds histogram" in text
    assert "# TYPE tidings_events_consumed_total counter" in text
